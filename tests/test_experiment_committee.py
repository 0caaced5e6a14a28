"""robustops.experiments.committee: the tiny run records every row of the Table 2
layout with sane errors and distortions; the error-at-dist evaluation on stub models
whose answers are known (the per-image step that hits dist, clamping, white-box
gradients through preprocessing, committees and test-time noise)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from robustops import experiments
from robustops.defences import Committee, LowPassNoise, Preprocessed
from robustops.experiments import committee
from robustops.experiments.common import Settings
from robustops.metrics import mean_abs_distortion


class _Threshold(nn.Module):
    """Class 0 when the mean pixel value is above 0.45, class 1 below: the gradient of
    the loss of class 0 lowers every pixel."""

    def forward(self, x):
        margin = 10 * (x.flatten(1).mean(1) - 0.45)
        return torch.stack([margin, -margin], 1)


class _Invert(nn.Module):
    def forward(self, x):
        return 1 - x


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("committee")
    return experiments.run("committee", Settings(scale="tiny", out=str(out), progress=False)), out


def test_tiny_run_records_every_row(tiny):
    result, out = tiny
    stages = result.data["stages"]
    names = (["no method", "dropout", "low-pass filter", "DAE", "dropout + low-pass filter", "dropout + DAE",
              "low-pass filter + DAE", f"standard committee ({stages + 1} models)"]
             + ["adversarial training after 1 stage"]
             + [f"adversarial training after {k} stages" for k in range(2, stages + 1)]
             + ["committee of adversarially trained models"])
    rows = result.data["rows"]
    assert list(rows) == names
    record = json.loads((out / "committee.json").read_text())
    assert record["results"]["rows"] == rows and record["smoke_test"] is True and record["holds"] is None
    assert isinstance(result.holds, bool)
    for name, row in rows.items():
        assert f"| {name} |" in result.table
        assert set(row["error"]) == {str(d) for d in committee.DISTS}
        assert all(0 <= e <= 1 for e in row["error"].values())
        assert row["dist"]["0.0"] == 0 and row["eps"]["0.0"] == 0
        for d in committee.DISTS[1:]:
            # the digits leave every image room for dist 0.2: it is hit to rounding
            assert row["unreached"][str(d)] == 0
            assert row["dist"][str(d)] == pytest.approx(d, abs=1e-5)
            assert d <= row["eps"][str(d)] <= 1      # clamping makes eps at least dist
        assert row["random"] == ("low-pass" in name)
    assert (out / "committee.png").stat().st_size > 0


def test_error_at_dist_on_a_known_model():
    x = torch.full((4, 1, 4, 4), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    model = _Threshold()
    clean = committee._error_at_dist(model, x, y, 0.0)
    assert clean == {"error": 0.0, "dist": 0.0, "eps": 0.0, "unreached": 0.0}
    small = committee._error_at_dist(model, x, y, 0.02)        # mean 0.48: still class 0
    assert small["error"] == 0 and small["eps"] == pytest.approx(0.02) and small["dist"] == pytest.approx(0.02)
    large = committee._error_at_dist(model, x, y, 0.1)         # mean 0.4: class 1
    assert large["error"] == 1 and large["eps"] == pytest.approx(0.1) and large["dist"] == pytest.approx(0.1)
    x_adv, eps, unreached = committee._fgs_at_dist(model, x, y, 0.1)
    torch.testing.assert_close(x_adv, torch.full_like(x, 0.4))
    assert not unreached.any()


def test_step_accounts_for_clamping():
    # half the pixels are 0 and cannot go lower: eps must be twice dist
    x = torch.zeros(2, 1, 4, 4)
    x[:, :, ::2] = 1.0
    y = torch.zeros(2, dtype=torch.long)
    x_adv, eps, unreached = committee._fgs_at_dist(_Threshold(), x, y, 0.1)
    torch.testing.assert_close(eps, torch.full((2,), 0.2, dtype=torch.float64))
    expected = x.clone()
    expected[:, :, ::2] = 0.8
    torch.testing.assert_close(x_adv, expected)
    torch.testing.assert_close(mean_abs_distortion(x, x_adv), torch.full((2,), 0.1, dtype=torch.float64))
    assert not unreached.any()
    # an image with no room at all is moved as far as it goes (nowhere) and flagged
    blank = committee._error_at_dist(_Threshold(), torch.zeros(3, 1, 4, 4), torch.zeros(3, dtype=torch.long), 0.1)
    assert blank == {"error": 1.0, "dist": 0.0, "eps": 1.0, "unreached": 1.0}


def test_step_for_hits_the_target():
    room = torch.rand(5, 300, generator=torch.Generator().manual_seed(0))
    for dist in (0.05, 0.2, 0.4):
        eps = committee._step_for(room, dist)
        reached = torch.minimum(room.double(), eps[:, None]).mean(1)
        torch.testing.assert_close(reached, torch.full((5,), dist, dtype=torch.float64))


def test_gradient_goes_through_the_preprocessing():
    # after inversion the classifier wants the pixels higher: a white-box attack raises them
    x = torch.full((3, 1, 4, 4), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    model = Preprocessed(_Invert(), _Threshold())
    x_adv, _, _ = committee._fgs_at_dist(model, x, y, 0.1)
    torch.testing.assert_close(x_adv, torch.full_like(x, 0.6))
    assert committee._error_at_dist(model, x, y, 0.1)["error"] == 1


def test_committees_and_noise_are_attacked_as_a_whole():
    x = torch.full((3, 1, 4, 4), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    voted = Committee([_Threshold(), Preprocessed(nn.Identity(), _Threshold())], output="log_probs")
    torch.testing.assert_close(voted(x).exp().sum(1), torch.ones(3))
    x_adv, _, _ = committee._fgs_at_dist(voted, x, y, 0.1)
    torch.testing.assert_close(x_adv, torch.full_like(x, 0.4))
    noisy = Preprocessed(LowPassNoise(sigma=0.0, noise=0.01), _Threshold())
    assert committee._is_random(noisy) and not committee._is_random(voted)
    expected = committee._Expected(noisy, 4)
    torch.testing.assert_close(expected(x).exp().sum(1), torch.ones(3))
    x_adv, _, _ = committee._fgs_at_dist(noisy, x, y, 0.1, draws=4)
    torch.testing.assert_close(x_adv, torch.full_like(x, 0.4))
    assert committee._error_at_dist(noisy, x, y, 0.1, draws=4)["error"] == 1
    assert committee._error_at_dist(noisy, x, y, 0.0, draws=4)["error"] == 0


def test_three_channel_data(tmp_path):
    from tests.data.test_cifar import _cifar10

    _cifar10(tmp_path, n=4)
    result = experiments.run("committee", Settings(scale="tiny", data="cifar10", data_root=str(tmp_path),
                                                   out=str(tmp_path / "out"), progress=False))
    assert result.data["data"] == "cifar10" and result.data["dae_sizes"][0] == 3 * 32 * 32
    assert all(0 <= e <= 1 for row in result.data["rows"].values() for e in row["error"].values())
