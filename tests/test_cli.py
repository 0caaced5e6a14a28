"""The command line (python -m robustops.experiments, the `robustops` script) keeps
its promises: user errors are argparse errors before any work, the output directory
is made (or refused) first, a missing matplotlib is said rather than a PNG claimed,
`all` outside a source checkout skips the benchmark suite, --version, and --tiny runs
are labelled smoke tests that judge nothing.

Most tests run a stand-in experiment (registered in EXPERIMENTS, run through the real
`run` and `write_outputs`) so that they take milliseconds; one runs a real --tiny one."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch

import robustops
from robustops import experiments
from robustops.experiments import __main__ as cli
from robustops.experiments.common import ExperimentResult, Settings

DEMO_MODULE = "robustops.experiments._cli_demo"


@pytest.fixture
def demo(monkeypatch):
    """A stand-in experiment "demo" (holds=True, a plot that writes a few bytes); the
    list it returns collects the Settings of every run."""
    calls = []

    def run(settings: Settings) -> ExperimentResult:
        # the output directory exists before any experiment runs
        calls.append((settings, Path(settings.out).is_dir()))
        return ExperimentResult("demo", "a claim", "| a |\n|---|\n| 1 |", {"x": 1}, True,
                                lambda path: path.write_bytes(b"\x89PNG demo"))

    module = types.ModuleType(DEMO_MODULE)
    module.run = run
    monkeypatch.setitem(sys.modules, DEMO_MODULE, module)
    monkeypatch.setitem(experiments.EXPERIMENTS, "demo", "_cli_demo")
    return calls


def _error(capsys, argv, option):
    """main(argv) is an argparse error (status 2) naming `option`, on one line of stderr."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("robustops: error: ") and option in last, err
    return last


# ids without the bare word "cuda", which conftest skips on machines without CUDA
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "mps", "nonsense", "meta", "cuda:x"],
                         ids=lambda device: f"device={device}")
def test_unusable_device_is_an_argparse_error(device, demo, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    out = tmp_path / "out"
    _error(capsys, ["demo", "--tiny", "--out", str(out), "--device", device], "--device")
    assert demo == [] and not out.exists()


def test_cuda_index_past_the_devices_is_an_argparse_error(demo, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    _error(capsys, ["demo", "--tiny", "--out", str(tmp_path), "--device", "cuda:1"], "--device")
    assert demo == []


@pytest.mark.parametrize("option", ["--limit", "--threads"])
@pytest.mark.parametrize("value", ["0", "-3", "two", "1.5"])
def test_counts_must_be_positive_ints(option, value, demo, tmp_path, capsys):
    out = tmp_path / "out"
    _error(capsys, ["demo", "--tiny", "--out", str(out), option, value], option)
    assert demo == [] and not out.exists()


@pytest.mark.parametrize("seed", [str(2 ** 64), str(-2 ** 63 - 1), "x"])
def test_seed_torch_rejects_is_an_argparse_error(seed, demo, tmp_path, capsys):
    _error(capsys, ["demo", "--tiny", "--out", str(tmp_path), "--seed", seed], "--seed")
    assert demo == []


def test_good_options_reach_the_run(demo, tmp_path, capsys):
    out = tmp_path / "a" / "b"
    assert cli.main(["demo", "--tiny", "--out", str(out), "--device", "cpu", "--limit", "7", "--threads", "1",
                     "--seed", "-1", "--no-progress"]) == 0
    (settings, out_was_made), = demo
    assert out_was_made
    assert (settings.device, settings.limit, settings.threads, settings.seed, settings.scale) == ("cpu", 7, 1, -1,
                                                                                                  "tiny")
    assert (out / "demo.md").is_file() and (out / "demo.json").is_file()


def test_unwritable_out_is_an_argparse_error(demo, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    for out in (afile, afile / "sub", afile / "sub" / "deeper"):
        _error(capsys, ["demo", "--tiny", "--out", str(out)], "--out")
    assert demo == [] and afile.read_text() == "not a directory"


def test_data_files_need_a_data_root(demo, tmp_path, capsys):
    _error(capsys, ["demo", "--tiny", "--out", str(tmp_path), "--data", "mnist"], "--data-root")
    _error(capsys, ["demo", "--tiny", "--out", str(tmp_path), "--data", "mnist", "--data-root",
                    str(tmp_path / "missing")], "--data-root")
    assert demo == []


def test_written_plot_is_reported(demo, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert cli.main(["demo", "--tiny", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "demo.png").read_bytes() == b"\x89PNG demo"
    assert ".png" in out and "no plot" not in out


def test_without_matplotlib_no_png_is_claimed(tmp_path, capsys, monkeypatch):
    """A real --tiny run with matplotlib unimportable: the run works, writes no PNG and
    says how to get one."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.main(["symmetry", "--tiny", "--out", str(tmp_path), "--no-progress", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "symmetry.png").exists()
    assert "no plot: install matplotlib (pip install robustops[plot])" in out
    assert ".png" not in out
    assert (tmp_path / "symmetry.md").is_file() and (tmp_path / "symmetry.json").is_file()


def _outside_a_checkout(tmp_path, monkeypatch):
    """The working directory and robustops' install location are no source checkout."""
    site = tmp_path / "site-packages" / "robustops"
    site.mkdir(parents=True)
    monkeypatch.setattr(robustops, "__file__", str(site / "__init__.py"))
    monkeypatch.chdir(tmp_path)


def test_all_outside_a_checkout_skips_the_benchmark_suite(demo, tmp_path, capsys, monkeypatch):
    for name in list(experiments.EXPERIMENTS):
        if name not in ("demo", "bench"):
            monkeypatch.delitem(experiments.EXPERIMENTS, name)
    _outside_a_checkout(tmp_path, monkeypatch)
    from robustops.experiments import bench

    assert bench._source_root() is None  # the real lookup finds no checkout
    assert cli.main(["all", "--tiny", "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert len(demo) == 1 and "## demo" in out
    assert "## bench" not in out and not (tmp_path / "out" / "bench.md").exists()
    note = [line for line in out.splitlines() if "bench" in line]
    assert note and "source checkout" in note[0] and "make bench" in note[0], out


def test_bench_outside_a_checkout_is_an_argparse_error(tmp_path, capsys, monkeypatch):
    _outside_a_checkout(tmp_path, monkeypatch)
    _error(capsys, ["bench", "--tiny", "--out", str(tmp_path / "out")], "source checkout")
    assert not (tmp_path / "out").exists()


def test_version(capsys, monkeypatch):
    import importlib.metadata

    try:
        version = importlib.metadata.version("robustops")
    except importlib.metadata.PackageNotFoundError:
        version = robustops.__version__
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code in (0, None)
    assert capsys.readouterr().out == f"robustops {version}\n"

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    monkeypatch.setattr(robustops, "__version__", "9.8.7", raising=False)
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code in (0, None)
    assert capsys.readouterr().out == "robustops 9.8.7\n"


def test_tiny_is_a_smoke_test_with_no_verdict(demo, tmp_path, capsys):
    assert cli.main(["demo", "--tiny", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "smoke test" in out and "holds" not in out and "judge" in out
    md = (tmp_path / "demo.md").read_text()
    assert "smoke test" in md and "holds" not in md
    record = json.loads((tmp_path / "demo.json").read_text())
    assert record["smoke_test"] is True and record["holds"] is None


def test_quick_run_keeps_its_verdict(demo, tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "\nholds in this run\n" in out and "smoke test" not in out
    md = (tmp_path / "demo.md").read_text()
    assert "Direction: holds in this run." in md and "smoke test" not in md
    record = json.loads((tmp_path / "demo.json").read_text())
    assert record["smoke_test"] is False and record["holds"] is True


def test_quick_run_prints_the_computed_verdict(demo, tmp_path, capsys, monkeypatch):
    """An experiment with a verdict (the papers' experiments): the command line prints
    its value and sentence, NAME.md its parts, NAME.json the whole verdict."""
    from robustops.experiments import stats

    parts = [stats.Part("FGS rate lower", "90% vs 2%", True, "lower in 3 of 3 seeds"),
             stats.Part("noise flips lower", "20% vs 3%", False, "interval includes 0")]
    module = sys.modules[DEMO_MODULE]
    plain = module.run

    def run(settings):
        result = plain(settings)
        result.holds, result.verdict = None, stats.verdict(parts)
        return result

    monkeypatch.setattr(module, "run", run)
    assert cli.main(["demo", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "partly reproduced: holds: FGS rate lower. Does not hold: noise flips lower." in out
    md = (tmp_path / "demo.md").read_text()
    assert "| noise flips lower | 20% vs 3% | interval includes 0 | no |" in md
    record = json.loads((tmp_path / "demo.json").read_text())
    assert record["verdict"]["value"] == "partly reproduced" and record["holds"] is None
