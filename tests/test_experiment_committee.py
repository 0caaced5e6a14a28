"""robustops.experiments.committee: the tiny run records every row of the Table 2
layout with sane errors and distortions, per seed; summarize's verdict on hand-made
seeds; the error-at-dist evaluation on stub models whose answers are known (the
one step per set that hits dist, clamping, white-box gradients through preprocessing,
committees and test-time noise)."""

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
    assert result.data["rows"] == names and list(result.data["seeds"]) == ["0"]
    seed = result.data["seeds"]["0"]
    rows = seed["rows"]
    assert list(rows) == names
    record = json.loads((out / "committee.json").read_text())
    assert record["results"]["seeds"]["0"]["rows"] == rows
    assert record["smoke_test"] is True and record["verdict"] is None and record["holds"] is None
    assert result.verdict is not None and len(result.verdict.parts) == 3
    assert seed["validation_images"] + seed["training_images"] == 1346 and seed["validation_images"] == 135
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
        # the epoch kept on the validation split (a committee: one per member)
        picked = row["picked_epoch"] if isinstance(row["picked_epoch"], list) else [row["picked_epoch"]]
        assert len(picked) == (stages + 1 if "committee" in name else 1) and all(e == 1 for e in picked)
    assert (out / "committee.png").stat().st_size > 0


def _seed_run(no_method, stages, committee_errors):
    """A per-seed dict as committee.run_seed returns it: errors at dist 0 / 0.1 / 0.2."""
    def row(group, errors):
        return {"group": group, "random": False, "picked_epoch": 1,
                "error": dict(zip(("0.0", "0.1", "0.2"), errors)), "dist": {"0.0": 0.0, "0.1": 0.1, "0.2": 0.2},
                "eps": {"0.0": 0.0, "0.1": 0.12, "0.2": 0.27}, "unreached": {"0.0": 0.0, "0.1": 0.0, "0.2": 0.0}}

    rows = {committee.NO_METHOD: row("baseline", no_method)}
    for k, errors in enumerate(stages, 1):
        rows[committee._stage_name(k)] = row(committee.STAGES_GROUP, errors)
    rows[committee.ADV_COMMITTEE] = row("adversarial committee", committee_errors)
    return {"rows": rows, "dae_test_mse": 0.01, "dae_sizes": [784, 500, 30], "training_images": 90,
            "validation_images": 10, "test_images": 50}


def test_summarize_verdicts_from_hand_made_seeds():
    settings = Settings(scale="quick", seeds=3, out="unused")
    # the committee below no defence at both dists and below the best stage in every seed: reproduced
    runs = [_seed_run((0.01, 0.8 + s, 0.98), [(0.05, 0.6, 0.95), (0.04, 0.5 + s, 0.93)], (0.02, 0.3 + s, 0.8 + 2 * s))
            for s in (0.0, 0.01, 0.02)]
    result = committee.summarize(settings, runs)
    assert result.verdict.value == "reproduced"
    assert [p.holds for p in result.verdict.parts] == [True, True, True]
    # part 3 compares the mean over dist 0.1 and 0.2 with the best stage of each seed: stage 2 (0.715 + s / 2)
    assert result.verdict.parts[2].differences == pytest.approx([-0.165, -0.155, -0.145])
    assert result.data["best_stage"] == ["adversarial training after 2 stages"] * 3
    assert "| no method | 0.0100 ± 0.0000 | 0.8100 ± 0.0100 | 0.9800 ± 0.0000 |" in result.table
    # a stage more robust than the committee at both dists: partly reproduced, naming part 3
    for r in runs:
        r["rows"]["adversarial training after 1 stage"]["error"].update({"0.1": 0.2, "0.2": 0.7})
    result = committee.summarize(settings, runs)
    assert result.verdict.value == "partly reproduced"
    assert [p.holds for p in result.verdict.parts] == [True, True, False]
    assert "most robust" in result.verdict.sentence.split("Does not hold:")[1]
    # no better than no defence anywhere: not reproduced
    runs = [_seed_run((0.01, 0.5, 0.9), [(0.05, 0.4, 0.8)], (0.02, 0.5 + s, 0.9 + s)) for s in (0.0, 0.01, 0.02)]
    assert committee.summarize(settings, runs).verdict.value == "not reproduced"


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
    assert eps == pytest.approx(0.1) and not unreached


def test_step_accounts_for_clamping():
    # half the pixels are 0 and cannot go lower: eps must be twice dist
    x = torch.zeros(2, 1, 4, 4)
    x[:, :, ::2] = 1.0
    y = torch.zeros(2, dtype=torch.long)
    x_adv, eps, unreached = committee._fgs_at_dist(_Threshold(), x, y, 0.1)
    assert eps == pytest.approx(0.2) and not unreached
    expected = x.clone()
    expected[:, :, ::2] = 0.8
    torch.testing.assert_close(x_adv, expected)
    torch.testing.assert_close(mean_abs_distortion(x, x_adv), torch.full((2,), 0.1, dtype=torch.float64))
    # an image with no room at all is moved as far as it goes (nowhere) and flagged
    blank = committee._error_at_dist(_Threshold(), torch.zeros(3, 1, 4, 4), torch.zeros(3, dtype=torch.long), 0.1)
    assert blank == {"error": 1.0, "dist": 0.0, "eps": 1.0, "unreached": 1.0}


def test_one_eps_for_the_set_hits_the_target():
    """The paper's eq. 2: one eps for the whole set, whose mean absolute distortion over
    the set is dist (images with more room move more than dist, those with less less)."""
    room = torch.rand(5, 300, generator=torch.Generator().manual_seed(0))
    room[0] *= 0.3  # an image with little room
    for dist in (0.05, 0.2, 0.4):
        eps = committee._eps_for_set(room, dist)
        assert float(room.double().clamp(max=eps).mean()) == pytest.approx(dist, abs=1e-12)
        per_image = room.double().clamp(max=eps).mean(1)
        assert float(per_image[0]) < dist < float(per_image[1:].max())
    assert committee._eps_for_set(room, 0.9) == 1.0  # beyond the set's full room


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
    rows = result.data["seeds"]["0"]["rows"]
    assert all(0 <= e <= 1 for row in rows.values() for e in row["error"].values())
