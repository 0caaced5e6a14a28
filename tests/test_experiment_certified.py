"""robustops.experiments.certified and certified_ablation: the verified-error helpers on
a hand-built network, the eps sweep (nested balls: never falling, reaching beyond
eps_train, the same numbers as the table), the tiny run's per-seed record (checkpoints
only after the eps ramp), summarize's verdict on hand-made seeds, and the ablation's
rows training with the weight forms and N they claim."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustops import experiments
from robustops.bounds import BoundedModule, subperturbation_weights
from robustops.experiments import certified, certified_ablation
from robustops.experiments.common import Settings


def _linear():
    # two pixels, z = (p0 - p1, p1 - p0): class 0 when p0 > p1, margin 2 (p0 - p1), worst case 2 (p0 - p1) - 4 eps
    m = nn.Linear(2, 2)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        m.bias.zero_()
    return nn.Sequential(nn.Flatten(), m)


def test_verified_error_on_a_linear_model():
    x = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]]).view(3, 1, 1, 2)
    y = torch.tensor([0, 0, 0])             # the third is misclassified: never verified
    bounded = BoundedModule(_linear())
    # the gaps p0 - p1 are 0.8 and 0.2: verified while 2 eps < the gap (both bounds are exact here)
    assert certified._verified_error(bounded, x, y, 0.0) == pytest.approx(1 / 3)
    assert certified._verified_error(bounded, x, y, 0.05) == pytest.approx(1 / 3)
    assert certified._verified_error(bounded, x, y, 0.15) == pytest.approx(2 / 3)
    assert certified._verified_error(bounded, x, y, 0.5) == 1.0
    v = certified._verified(bounded, x, y, 0.05)
    assert v["either"].tolist() == [True, True, False]
    assert torch.equal(v["either"], v["ibp"] | v["crown"])
    assert v["crown"].tolist() == [True, True, False]      # CROWN-IBP alone, on every correct image
    assert certified._standard_error(bounded.eval(), x, y) == pytest.approx(1 / 3)


def test_sweep_grid_reaches_beyond_eps_train():
    for eps_train in certified.EPS_TRAINS:
        grid = certified.sweep_grid(eps_train)
        assert grid[0] == 0 and grid[-1] > eps_train and grid[-1] == pytest.approx(1.2 * eps_train)
        assert all(b - a == pytest.approx(0.01) for a, b in zip(grid, grid[1:]))
        assert eps_train in grid and all(e in grid for e in certified.EPS_EVAL[eps_train])
    assert certified.sweep_grid(0.3, 0.05) == [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35]
    assert certified.monotone_violations([0.1, 0.2, 0.2, 0.9]) == 0
    assert certified.monotone_violations([0.1, 0.3, 0.2, 0.9, 0.8]) == 2


@pytest.fixture(scope="module")
def trained():
    """A network trained a little (GM-CROWN-IBP with N = 2, eps_train 0.1, four epochs):
    many test images are verified at small eps, fewer at large."""
    settings = Settings(scale="tiny", progress=False)
    torch.set_num_threads(1)
    return certified.train_and_evaluate(settings, 0, "crown-ibp", 2, "gm", 0.1, [0.02, 0.05, 0.1],
                                        certified.sweep_grid(0.1), 4, None, "test")


def test_sweep_of_a_trained_network(trained):
    sweep, grid = trained["sweep"], trained["sweep_eps"]
    assert grid == certified.sweep_grid(0.1) and len(sweep) == len(grid) == len(trained["sweep_ibp"])
    assert sweep[0] == pytest.approx(trained["standard_error"])   # at eps 0 a bound verifies exactly the correct
    assert sweep[0] < 0.5 and sweep[-1] > sweep[0]                # it learnt something, and it is not robust to all
    # nested balls: the verified error never falls as eps grows (IBP's provably, the either-rule here)
    assert certified.monotone_violations(sweep) == 0
    assert certified.monotone_violations(trained["sweep_ibp"]) == 0
    assert all(a <= b for a, b in zip(sweep, trained["sweep_ibp"]))   # either is at least as good as IBP alone
    # the sweep (CROWN-IBP only where IBP fails) gives the table's numbers at the table's radii
    for e, ve in trained["verified_error"].items():
        assert sweep[grid.index(float(e))] == pytest.approx(ve)
        assert ve <= min(trained["verified_error_ibp"][e], trained["verified_error_crown"][e])
    assert trained["verified_at_eps_train"] == round((1 - trained["verified_error"]["0.1"]) * trained["test_images"])


def test_tiny_run_records_every_network(tmp_path):
    result = experiments.run("certified", Settings(scale="tiny", out=str(tmp_path), progress=False, limit=200,
                                                   jobs=1))
    seed = result.data["seeds"]["0"]
    assert list(seed) == certified.units(Settings()) == [f"{m} @ {t:g}" for t in certified.EPS_TRAINS
                                                          for m in certified.RUNS[t]]
    assert len(certified.EPS_TRAINS) == 2 and all(set(m) <= set(certified.METHODS) for m in certified.RUNS.values())
    for unit, m in seed.items():
        name, _, eps = unit.partition(" @ ")
        eps_train = float(eps)
        assert m["eps_train"] == eps_train and (m["method"], m["n"], m["weights"]) == certified.METHODS[name]
        assert f"| {name} (eps_train={eps}) |" in result.table
        # the checkpoint is picked only among the epochs that end after the ramp
        assert m["ramp_end"] <= m["steps"]
        assert m["first_candidate_epoch"] <= m["picked_epoch"] <= m["epochs"]
        assert len(m["validation_scores"]) == m["epochs"] - m["first_candidate_epoch"] + 1
        for e in certified.EPS_EVAL[eps_train]:
            ve = m["verified_error"][str(e)]
            assert 0 <= ve <= min(m["verified_error_ibp"][str(e)], m["verified_error_crown"][str(e)]) <= 1
            assert ve >= m["standard_error"]
        assert m["sweep_eps"] == certified.sweep_grid(eps_train) and m["sweep_eps"][-1] > eps_train
        assert certified.monotone_violations(m["sweep"]) == 0
    sweep = result.data["sweep"]
    for t in certified.EPS_TRAINS:
        assert sweep[f"{t:g}"]["eps_eval"] == certified.sweep_grid(t)
        assert all(len(sweep[f"{t:g}"][name]["mean"]) == len(certified.sweep_grid(t)) for name in certified.RUNS[t])
    assert len(result.verdict.parts) == sum(e < t for t in certified.EPS_TRAINS for e in certified.EPS_EVAL[t])
    assert "IBP or the CROWN-IBP (beta = 1)" in result.protocol and "verified at eps_train itself" in result.protocol


def _unit(errors, eps_train):
    return {"standard_error": 0.1, "verified_error": dict(zip(map(str, certified.EPS_EVAL[eps_train]), errors)),
            "picked_epoch": 3, "validation_scores": [0.5, 0.4], "epochs": 4, "steps": 40, "ramp_end": 24,
            "first_candidate_epoch": 3, "training_images": 90, "validation_images": 10, "test_images": 50,
            "verified_at_eps_train": 1 if errors[-1] < 1 else 0, "sweep": [0.1] + list(errors)}


def _seed_run(crown, gm, crown2=(0.3, 0.4, 0.6, 0.9), gm2=(0.2, 0.3, 0.5, 0.95)):
    """A per-seed dict as the runner returns it from certified.run_unit."""
    run = {}
    for t, c, g in ((0.3, crown, gm), (0.2, crown2, gm2)):
        for name in certified.RUNS[t]:
            errors = {"CROWN-IBP": c, "GM-CROWN-IBP": g}.get(name, [0.5, 0.7, 0.9, 1.0])
            run[certified.unit_name(name, t)] = _unit(errors, t)
    return run


def test_summarize_verdicts_from_hand_made_seeds():
    settings = Settings(scale="quick", seeds=3, out="unused")
    # GM lower at 0.05 and 0.1 in every seed, higher at 0.2 (eps_train 0.3); lower at the three radii of 0.2
    runs = [_seed_run([0.3 + s, 0.45, 0.7, 0.99], [0.2, 0.35 + s, 0.75 + s, 1.0], gm2=(0.2 + s, 0.3, 0.5, 0.95))
            for s in (0.0, 0.01, 0.02)]
    result = certified.summarize(settings, runs)
    assert [p.holds for p in result.verdict.parts] == [True, True, False, True, True, True]
    assert result.verdict.value == "partly reproduced"
    assert "eps_eval 0.2 (eps_train 0.3)" in result.verdict.sentence.split("Does not hold:")[1]
    assert "eps_eval 0.15 (eps_train 0.2)" in result.verdict.sentence.split("Does not hold:")[0]
    assert "| CROWN-IBP (eps_train=0.3) | 0.1000 ± 0.0000 | 0.3100 ± 0.0100 |" in result.table
    assert "| GM-CROWN-IBP (eps_train=0.2) | 0.1000 ± 0.0000 | 0.2100 ± 0.0100 |" in result.table
    assert "the IBP or the CROWN-IBP (beta = 1)" in result.criterion and "36.19" in result.paper
    assert "GM-CROWN-IBP at 0.2: 1, 1, 1" in result.protocol
    runs = [_seed_run([0.3, 0.45, 0.8 + s, 0.99], [0.2 + s, 0.35, 0.75, 1.0]) for s in (0.0, 0.01, 0.02)]
    assert certified.summarize(settings, runs).verdict.value == "reproduced"
    runs = [_seed_run([0.3, 0.45, 0.7, 0.99], [0.3 + s, 0.45 + s, 0.7 + s, 1.0], gm2=(0.3 + s, 0.4, 0.6, 0.9))
            for s in (-0.01, 0.0, 0.01)]
    assert certified.summarize(settings, runs).verdict.value == "not reproduced"


def test_ablation_rows_train_with_the_forms_they_claim(tmp_path):
    result = experiments.run("certified_ablation", Settings(scale="tiny", out=str(tmp_path), progress=False, jobs=1,
                                                            limit=200))
    seed = result.data["seeds"]["0"]
    assert list(seed) == list(certified_ablation.ROWS)
    forms = {form for form, _ in certified_ablation.ROWS.values()}
    assert forms == {"gm", "uniform", "inverse_square", "linear", "exponential"}
    assert {n for _, n in certified_ablation.ROWS.values()} >= {1, 2, 4, 8}
    for row, (form, n) in certified_ablation.ROWS.items():
        m = seed[row]
        assert (m["method"], m["weights"], m["n"], m["eps_train"]) == ("crown-ibp", form, n, 0.3)
        weights = subperturbation_weights(n, form)
        assert m["weights_used"] == pytest.approx(weights.tolist())
        # the loss the network was trained on is the claimed form's weighted sum of the per-radius losses
        last = m["last_step"]
        assert last["eps"] == pytest.approx(0.3) and len(last["per_radius"]) == n
        per_radius = torch.tensor(last["per_radius"], dtype=torch.float64)
        assert last["robust"] == pytest.approx(float((weights * per_radius).sum()), rel=1e-5)
        if n > 1 and float(per_radius.max() - per_radius.min()) > 1e-3:
            for other in forms - {form}:
                if torch.allclose(subperturbation_weights(n, other), weights):
                    continue  # linear and 1/r are the same weights at N = 2
                assert last["robust"] != pytest.approx(float((subperturbation_weights(n, other) * per_radius).sum()),
                                                       rel=1e-5)
        assert m["sweep_eps"] == certified_ablation.grid() and m["sweep_eps"][-1] > 0.3
        assert certified.monotone_violations(m["sweep"]) == 0
        assert f"| {row} |" in result.table
    for rows in certified_ablation.PANELS.values():
        assert set(rows) <= set(certified_ablation.ROWS)
    assert result.verdict is None and result.holds is None
    assert (tmp_path / "certified_ablation.png").stat().st_size > 0
