"""robustops.experiments: every experiment runs in its tiny configuration (a few
batches) and writes its table, JSON and plot; the command line and bad names."""

from __future__ import annotations

import json

import pytest

from robustops import experiments
from robustops.experiments.__main__ import main
from robustops.experiments.common import Settings


@pytest.mark.parametrize("name", sorted(experiments.EXPERIMENTS))
def test_every_experiment_runs_tiny(name, tmp_path):
    result = experiments.run(name, Settings(scale="tiny", out=str(tmp_path), progress=False))
    assert (tmp_path / f"{name}.md").read_text().startswith(f"# {name}")
    assert result.table in (tmp_path / f"{name}.md").read_text()
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert record["settings"]["scale"] == "tiny" and record["settings"]["seed"] == 0
    assert record["results"] and record["claim"] == result.claim
    assert (tmp_path / f"{name}.png").stat().st_size > 0


def test_symmetry_records_invariance(tmp_path):
    result = experiments.run("symmetry", Settings(scale="tiny", out=str(tmp_path), progress=False))
    sym = result.data["seeds"]["0"]["all-p4 CNN (symmetric_cnn)"]
    # exact invariance to quarter turns: the same accuracy on the 90-degree rotated set, and
    # at 0, 90, 180 and 270 degrees
    assert sym["rotated_p4"] == sym["test"]
    by_angle = dict(zip(sym["angles"], sym["by_angle"]))
    assert by_angle[0] == by_angle[90] == by_angle[180] == by_angle[270] == sym["test"]
    assert len(sym["history"]["test"]) == result.data["epochs"]


def test_command_line(tmp_path, capsys):
    assert main(["symmetry", "--tiny", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "| model |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["nonsense"])
    with pytest.raises(ValueError, match="unknown experiment 'nonsense'"):
        experiments.run("nonsense")


def test_load_data_reads_mnist_and_cifar_files(tmp_path):
    from tests.data.test_cifar import _cifar10
    from tests.data.test_mnist import _make

    from robustops.experiments.common import load_data

    _make(tmp_path, "train", n=12)
    _make(tmp_path, "test", n=7)
    data = load_data(Settings(data="mnist", data_root=str(tmp_path), limit=5), "demo")
    assert data.name == "mnist" and data.classes == 10 and data.shape == (1, 28, 28)
    assert len(data.x_train) == 5 and len(data.x_test) == 5
    _cifar10(tmp_path, n=3)
    data = load_data(Settings(data="cifar10", data_root=str(tmp_path)), "demo")
    assert data.shape == (3, 32, 32) and len(data.x_train) == 15 and len(data.x_test) == 3
    digits = load_data(Settings(), "demo", digits_size=8)
    assert digits.shape == (1, 8, 8) and len(digits.x_train) == 1346 and len(digits.x_test) == 451


def test_load_data_bad_settings(tmp_path):
    from robustops.experiments.common import load_data

    with pytest.raises(ValueError, match="pass their directory as data_root"):
        load_data(Settings(data="mnist"), "demo")
    with pytest.raises(ValueError, match="'data' must be one of"):
        load_data(Settings(data="cifar10"), "demo", supported=("digits", "mnist"))
    with pytest.raises(ValueError, match="'limit' must be an int >= 1"):
        load_data(Settings(limit=0), "demo")
    with pytest.raises(FileNotFoundError):
        load_data(Settings(data="mnist", data_root=str(tmp_path)), "demo")
    with pytest.raises(ValueError, match="'data' must be one of"):
        experiments.run("symmetry", Settings(data="imagenet", out=str(tmp_path)))


def test_experiment_on_mnist_files(tmp_path):
    from tests.data.test_mnist import _make

    _make(tmp_path, "train", n=40)
    _make(tmp_path, "test", n=16)
    out = tmp_path / "out"
    assert main(["certified", "--tiny", "--data", "mnist", "--data-root", str(tmp_path), "--out", str(out),
                 "--no-progress"]) == 0
    record = json.loads((out / "certified.json").read_text())
    assert record["settings"]["data"] == "mnist" and record["results"]["data"] == "mnist"


def test_command_line_all_runs_every_experiment(tmp_path, capsys, monkeypatch):
    for name in list(experiments.EXPERIMENTS):
        if name not in ("symmetry", "certified"):  # two quick ones stand for the rest
            monkeypatch.delitem(experiments.EXPERIMENTS, name)
    assert main(["all", "--tiny", "--out", str(tmp_path), "--no-progress", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "## symmetry" in out and "## certified" in out
    assert (tmp_path / "symmetry.md").is_file() and (tmp_path / "certified.md").is_file()
    assert json.loads((tmp_path / "certified.json").read_text())["settings"]["threads"] == 1


def test_bad_threads(tmp_path):
    with pytest.raises(ValueError, match="'threads' must be an int >= 1"):
        experiments.run("symmetry", Settings(threads=0, out=str(tmp_path)))


def test_json_is_strict(tmp_path):
    from robustops.experiments.common import ExperimentResult, write_outputs

    result = ExperimentResult("demo", "a claim", "| a |", {"x": [1.0, float("nan")], "y": {"z": float("inf")}})
    write_outputs(result, tmp_path)
    text = (tmp_path / "demo.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["results"] == {"x": [1.0, None], "y": {"z": None}}


@pytest.mark.parametrize("data", ["mnist", "cifar10"])
@pytest.mark.parametrize("name", sorted(set(experiments.EXPERIMENTS) - {"bench"}))
def test_every_experiment_runs_on_files(name, data, tmp_path):
    """--data mnist / cifar10 with --data-root: 1- and 3-channel images of the real sizes
    (28x28, 32x32), read from small files the test writes."""
    if data == "mnist":
        from tests.data.test_mnist import _make

        _make(tmp_path, "train", n=24)
        _make(tmp_path, "test", n=16)
    else:
        from tests.data.test_cifar import _cifar10

        _cifar10(tmp_path, n=6)
    out = tmp_path / "out"
    result = experiments.run(name, Settings(scale="tiny", out=str(out), progress=False, data=data,
                                            data_root=str(tmp_path)))
    record = json.loads((out / f"{name}.json").read_text())
    assert record["settings"]["data"] == data and record["results"]["data"] == data
    assert result.table in (out / f"{name}.md").read_text()


def _results(tmp_path, name: str, **kw) -> dict:
    settings = Settings(scale="tiny", out=str(tmp_path), progress=False, **kw)
    experiments.run(name, settings)
    return json.loads((tmp_path / f"{name}.json").read_text())


def test_seeds_are_reproducible_in_process_and_in_workers(tmp_path):
    """The same seeds and threads give the same numbers, whether the seeds run one
    after another here or side by side in spawned worker processes."""
    here = _results(tmp_path / "a", "bang", seeds=2, jobs=1)
    workers = _results(tmp_path / "b", "bang", seeds=2, jobs=2)
    assert here["settings"]["seed_list"] == [0, 1] and workers["settings"]["jobs_used"] == 2
    assert set(here["results"]["seeds"]) == {"0", "1"}
    assert here["results"]["seeds"] == workers["results"]["seeds"]
    assert here["results"]["seeds"]["0"] != here["results"]["seeds"]["1"]
    assert here["settings"]["threads"] == 1  # the default is fixed, not the machine's


def test_runner_seed_options(tmp_path):
    assert Settings(scale="quick", seed=5).seed_list() == [5, 6, 7]
    assert Settings(scale="full").seed_list() == [0, 1, 2, 3, 4]
    assert Settings(scale="tiny", seeds=2, seed=-1).seed_list() == [-1, 0]
    for key in ("seeds", "jobs", "threads"):
        with pytest.raises(ValueError, match=f"'{key}' must be an int >= 1"):
            experiments.run("symmetry", Settings(out=str(tmp_path), **{key: 0}))


def test_checkpoint_and_validation_split():
    import torch

    from robustops.experiments.common import BestCheckpoint, caffe_lr, split_validation

    x, y = torch.arange(20.0).view(20, 1), torch.arange(20)
    xt, yt, xv, yv = split_validation(x, y, 0.25, seed=3)
    assert len(xv) == 5 and len(xt) == 15 and sorted(torch.cat([yt, yv]).tolist()) == list(range(20))
    assert torch.equal(split_validation(x, y, 0.25, seed=3)[3], yv)
    model = torch.nn.Linear(1, 1)
    best = BestCheckpoint("max")
    for step, score in enumerate([0.5, 0.9, 0.9, 0.1]):
        with torch.no_grad():
            model.weight.fill_(step)
        best.update(model, score, step)
    assert best.step == 1 and best.restore(model).weight.item() == 1.0
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = caffe_lr(opt, "inv", gamma=1e-4, power=0.75)
    for _ in range(10000):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * 2 ** -0.75)
    opt = torch.optim.SGD(model.parameters(), lr=0.001)
    sched = caffe_lr(opt, "multistep", milestones=[3, 5], gamma=0.1)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5])
