"""robustops.experiments.committee: the tiny run records every row of the Table 2
layout and both curves (FGS and Gaussian noise) at every level, per seed; the
networks are the paper's (the committee: the natural LeNet and its stage snapshots,
each stage trained on the clean images and every earlier pool, made by the earlier
snapshots); summarize's verdict on hand-made seeds; the error-at-dist evaluation on
stub models whose answers are known (the one step per set that hits dist, clamping,
white-box gradients through preprocessing, committees and test-time noise; the one
sigma per set of the Gaussian curves)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from robustops import attacks, defences, experiments
from robustops.defences import Committee, LowPassNoise, Preprocessed
from robustops.experiments import committee
from robustops.experiments.common import Settings
from robustops.metrics import mean_abs_distortion
from robustops.models.committee import TABLE1_DROPOUT, dropout_rates


class _Threshold(nn.Module):
    """Class 0 when the mean pixel value is above 0.45, class 1 below: the gradient of
    the loss of class 0 lowers every pixel."""

    def forward(self, x):
        margin = 10 * (x.flatten(1).mean(1) - 0.45)
        return torch.stack([margin, -margin], 1)


class _Invert(nn.Module):
    def forward(self, x):
        return 1 - x


STAGES = committee.SCALE["tiny"][1]
NAMES = (["no method", "dropout (Inp)", "dropout (All)", "low-pass filter 3x3", "low-pass filter 5x5",
          "low-pass filter 7x7", "DAE", "low-pass filter 5x5 + dropout (Inp)", "low-pass filter 5x5 + dropout (All)",
          "DAE + dropout (Inp)", "DAE + dropout (All)", f"standard committee ({STAGES + 1} models)",
          "adversarial training after 1 stage"]
         + [f"adversarial training after {k} stages" for k in range(2, STAGES + 1)]
         + ["committee of adversarially trained models"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("committee")
    return experiments.run("committee", Settings(scale="tiny", out=str(out), progress=False)), out


def test_tiny_run_records_every_row_and_both_curves(tiny):
    result, out = tiny
    assert result.data["stages"] == STAGES
    assert result.data["rows"] == NAMES and list(result.data["seeds"]) == ["0"]
    seed = result.data["seeds"]["0"]
    rows = seed["rows"]
    assert list(rows) == NAMES
    record = json.loads((out / "committee.json").read_text())
    assert record["results"]["seeds"]["0"]["rows"] == rows
    assert record["smoke_test"] is True and record["verdict"] is None and record["holds"] is None
    assert result.verdict is not None and len(result.verdict.parts) == 3
    assert seed["validation_images"] + seed["training_images"] == 1346 and seed["validation_images"] == 135
    levels = committee.CURVE_DISTS
    assert len(levels) >= 16 and levels[0] == 0 and levels[-1] == pytest.approx(0.3)
    assert all(d in levels for d in committee.TABLE_DISTS)
    for name, row in rows.items():
        assert f"| {name} |" in result.table
        for kind in ("fgs", "gaussian"):
            curve = row[kind]
            assert all(len(v) == len(levels) for v in curve.values())
            assert all(0 <= e <= 1 for e in curve["error"])
            # the digits leave every test set room for dist 0.3: each level is hit to rounding
            assert curve["unreached"] == [0.0] * len(levels)
            assert curve["dist"] == pytest.approx(levels, abs=1e-5)
            size = curve["eps" if kind == "fgs" else "sigma"]
            assert size[0] == 0 and all(a < b for a, b in zip(size, size[1:]))
        assert all(d <= e <= 1 for d, e in zip(levels, row["fgs"]["eps"]))  # clamping makes eps at least dist
        # the table's columns are the curve's levels
        for d in committee.TABLE_DISTS:
            i = levels.index(d)
            assert row["error"][str(d)] == row["fgs"]["error"][i]
            assert row["gaussian_error"][str(d)] == row["gaussian"]["error"][i]
            assert row["eps"][str(d)] == row["fgs"]["eps"][i]
        assert row["fgs"]["error"][0] == row["gaussian"]["error"][0] or row["random"]  # both start clean
        assert row["random"] == ("low-pass" in name)
        # the epoch kept on the validation split (a committee: one per member)
        picked = row["picked_epoch"] if isinstance(row["picked_epoch"], list) else [row["picked_epoch"]]
        assert len(picked) == (STAGES + 1 if "committee" in name else 1) and all(e == 1 for e in picked)
    assert result.data["curves"]["no method"]["fgs"]["mean"] == rows["no method"]["fgs"]["error"]
    assert len(seed["stage_validation_scores"]) == STAGES
    assert (out / "committee.png").stat().st_size > 0


def test_the_networks_and_the_committee_training(monkeypatch):
    """The rows are the paper's networks: the committee is the natural LeNet (the no
    method row) and its stage snapshots; stage k trains on the clean images joined
    with the pools of committee examples made by members 0 .. k - 1; the standard
    committee starts from the same natural LeNet; the preprocessing sits in front of
    the trained LeNets; dropout as Table 1."""
    joined = []
    real = defences._JoinedBatches

    class Recorded(real):
        def __init__(self, x, y, *args, **kw):
            super().__init__(x, y, *args, **kw)
            joined.append((x.clone(), y.clone(), kw, args))

    monkeypatch.setattr(defences, "_JoinedBatches", Recorded)
    settings = Settings(scale="tiny", progress=False)
    units = {unit: committee._train(settings, 0, unit) for unit in committee.units(settings)}
    rows = {name: model for unit in units.values() for name, (model, _, _) in unit["rows"].items()}
    assert sorted(rows, key=NAMES.index) == NAMES
    adversarial = units["committee"]["adversarial"]
    members = list(adversarial.members)
    assert len(members) == STAGES + 1 and members[0] is rows["no method"]
    assert [rows[committee._stage_name(k)] for k in range(1, STAGES + 1)] == members[1:]
    assert list(rows[committee.ADV_COMMITTEE].members) == members
    assert rows[committee.ADV_COMMITTEE].output == "log_probs"
    # every stage: the clean images, then one pool per earlier member, made from that member
    assert len(joined) == STAGES
    n = len(joined[0][0]) // 2
    clean, labels = joined[0][0][:n], joined[0][1][:n]
    assert n == 2 * committee.BATCH  # the tiny scale: two batches of the training set
    for k, (x, y, kw, args) in enumerate(joined, 1):
        assert x.shape[0] == (k + 1) * n and torch.equal(y, labels.repeat(k + 1))
        assert torch.equal(x[:n], clean)
        for j in range(k):
            pool = attacks.CommitteeExample(members[j], committee.TRAIN_EPS, committee.TRAIN_C)(clean, labels)
            torch.testing.assert_close(x[(j + 1) * n:(j + 2) * n], pool)
        assert args[-1] == 2   # batches_per_epoch: a stage epoch is as many batches as a clean one
    # the standard committee and the preprocessing rows start from the plain LeNet trained again, the same
    # weights as the committee's member 0 (train_committee's natural phase alone)
    standard = rows[f"standard committee ({STAGES + 1} models)"]
    plain = standard.members[0]
    assert plain is not members[0] and len(standard.members) == STAGES + 1
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), members[0].state_dict().values()))
    assert all(not torch.equal(m.conv1.weight, plain.conv1.weight) for m in standard.members[1:])
    for k in committee.LOW_PASS_KERNELS:
        model = rows[f"low-pass filter {k}x{k}"]
        assert model.model is plain and model.preprocess.kernel_size == k
        assert model.preprocess.noise == committee.LOW_PASS_NOISE
    assert rows["DAE"].model is plain
    # Table 1's dropout; the preprocessing wraps the trained networks themselves
    assert dropout_rates(rows["dropout (Inp)"]) == TABLE1_DROPOUT["Inp"]
    assert dropout_rates(rows["dropout (All)"]) == TABLE1_DROPOUT["All"]
    assert dropout_rates(rows["no method"]) == {}
    assert rows["DAE + dropout (All)"].model is rows["dropout (All)"]
    assert rows["low-pass filter 5x5 + dropout (Inp)"].model is rows["dropout (Inp)"]
    # the two units that train the autoencoder train the same one
    dae, again = rows["DAE"].preprocess, rows["DAE + dropout (All)"].preprocess
    assert rows["DAE + dropout (Inp)"].preprocess is again
    assert all(torch.equal(a, b) for a, b in zip(dae.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="unknown unit 'nonsense'"):
        committee._train(settings, 0, "nonsense")


def _seed_run(no_method, stages, committee_errors):
    """A per-seed dict as committee.run_seed returns it: errors at dist 0 / 0.1 / 0.2."""
    def row(group, errors, picked=1):
        return {"group": group, "random": False, "picked_epoch": picked,
                "error": dict(zip(("0.0", "0.1", "0.2"), errors)), "dist": {"0.0": 0.0, "0.1": 0.1, "0.2": 0.2},
                "eps": {"0.0": 0.0, "0.1": 0.12, "0.2": 0.27}, "unreached": {"0.0": 0.0, "0.1": 0.0, "0.2": 0.0}}

    rows = {committee.NO_METHOD: row("baseline", no_method)}
    for k, errors in enumerate(stages, 1):
        rows[committee._stage_name(k)] = row(committee.STAGES_GROUP, errors)
    rows[committee.ADV_COMMITTEE] = row("adversarial committee", committee_errors, [1] * (len(stages) + 1))
    return {"rows": rows, "dae_test_mse": 0.01, "dae_sizes": [784, 500, 30], "training_images": 90,
            "validation_images": 10, "test_images": 50, "batches_per_epoch": 2,
            "epochs": {"natural": 11, "Inp": 37, "All": 43, "stage": 5}}


def test_summarize_verdicts_from_hand_made_seeds():
    settings = Settings(scale="quick", seeds=3, out="unused")
    # the committee below no defence at both dists and below the best stage in every seed: reproduced
    runs = [_seed_run((0.01, 0.8 + s, 0.98), [(0.05, 0.6, 0.95), (0.04, 0.5 + s, 0.93)], (0.02, 0.3 + s, 0.8 + 2 * s))
            for s in (0.0, 0.01, 0.02)]
    result = committee.summarize(settings, runs)
    assert result.verdict.value == "reproduced"
    assert [p.holds for p in result.verdict.parts] == [True, True, True]
    # the parts are the per-seed differences, in points: committee - no defence at 0.1 and 0.2
    assert result.verdict.parts[0].differences == pytest.approx([-50.0, -50.0, -50.0])
    assert result.verdict.parts[1].differences == pytest.approx([-18.0, -16.0, -14.0])
    # part 3 compares the mean over dist 0.1 and 0.2 with the best stage of each seed: stage 2 (0.715 + s / 2)
    assert result.verdict.parts[2].differences == pytest.approx([-16.5, -15.5, -14.5])
    assert result.data["best_stage"] == ["adversarial training after 2 stages"] * 3
    # ours in %, beside the paper's Table 2
    assert "| no method | 1.00 ± 0.00 | 81.00 ± 1.00 | 98.00 ± 0.00 | 0.83 | 73.6 | 96.1 |" in result.table
    assert ("| committee of adversarially trained models | 2.00 ± 0.00 | 31.00 ± 1.00 | 82.00 ± 2.00 | 0.65 | 9.8 "
            "| 36.5 |")
    assert "| dropout (All) |" not in result.table  # rows the seeds lack are not made up in result.table
    assert "| adversarial training after 1 stage | 5.00 ± 0.00 | 60.00 ± 0.00 | 95.00 ± 0.00 | – | – | – |" \
        in result.table
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


def test_paper_wording():
    """The paper finds the committee the most robust: the texts say so."""
    result = committee.summarize(Settings(scale="quick", seeds=3, out="unused"),
                                 [_seed_run((0.01, 0.8, 0.98), [(0.05, 0.6, 0.95)], (0.02, 0.3, 0.8))] * 3)
    assert "most robust" in result.paper and "not the most robust" not in result.paper + result.criterion
    assert "most robust" in committee.CLAIM or "more robust" in committee.CLAIM
    for text in (committee.__doc__, result.paper):
        assert "36.5" in text and "9.8" in text


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


def test_fgs_curve_takes_one_gradient_for_every_level():
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(6, dtype=torch.long)
    model = _Threshold()
    curve = committee._fgs_curve(model, x, y, [0.0, 0.02, 0.1])
    for i, d in enumerate([0.0, 0.02, 0.1]):
        one = committee._error_at_dist(model, x, y, d)
        assert one == {k: v[i] for k, v in curve.items()}
    assert curve["dist"] == pytest.approx([0.0, 0.02, 0.1], abs=1e-6)  # float32 images


def test_gaussian_curve_one_sigma_per_set():
    """x + sigma z clamped, with one sigma for the whole set whose mean absolute
    distortion is each level; the same z for every model of a seed."""
    x = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    y = torch.zeros(5, dtype=torch.long)
    levels = [0.0, 0.05, 0.1, 0.2]
    curve = committee._gaussian_curve(_Threshold(), x, y, levels, seed=3)
    assert curve["dist"] == pytest.approx(levels, abs=1e-6) and curve["unreached"] == [0.0] * 4
    assert curve["sigma"][0] == 0 and all(a < b for a, b in zip(curve["sigma"], curve["sigma"][1:]))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    for d, sigma in zip(levels, curve["sigma"]):
        noisy = (x + sigma * z).clamp(0, 1)
        assert float(mean_abs_distortion(x, noisy).mean()) == pytest.approx(d, abs=1e-6)
    again = committee._gaussian_curve(Preprocessed(nn.Identity(), _Threshold()), x, y, levels, seed=3)
    assert again["sigma"] == curve["sigma"] and again["error"] == curve["error"]
    # the sigmas depend on the set and the seed only: computed once, the same curve
    sigmas = committee._gaussian_sigmas(x, levels, seed=3)
    assert sigmas == curve["sigma"]
    assert committee._gaussian_curve(_Threshold(), x, y, levels, seed=3, sigmas=sigmas) == curve
    # a set that cannot be moved that far is flagged
    far = committee._gaussian_curve(_Threshold(), x, y, [0.9], seed=3)
    assert far["unreached"] == [1.0] and far["sigma"] == [pytest.approx(committee.SIGMA_MAX)]
