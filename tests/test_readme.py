"""The README's Python examples run as written."""

from __future__ import annotations

import os
import re

import pytest

from robustops.experiments.common import EXPERIMENTS

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _examples():
    with open(README) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    # interactive sessions (">>>") show output; they are not scripts
    return [b for b in blocks if not b.lstrip().startswith(">>>")]


@pytest.mark.parametrize("code", _examples(), ids=lambda c: c.strip().splitlines()[0][:40])
def test_readme_example_runs(code):
    exec(compile(code, README, "exec"), {"__name__": "readme_example"})


def test_readme_tables_are_the_committed_outputs():
    import importlib.util

    path = os.path.join(os.path.dirname(README), "tools", "readme_tables.py")
    spec = importlib.util.spec_from_file_location("readme_tables", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with open(README) as f:
        text = f.read()
    kinds = {m.group(2) for m in tool.BLOCK.finditer(text)}
    assert kinds == {"experiment", "bench"}, kinds
    assert tool.render(text) == text, "run python tools/readme_tables.py"


def _prose(heading: str, block: str):
    """The README's section under ``## heading`` without its generated blocks (between
    <!-- block:NAME --> markers), code blocks, inline code and headings: the text
    written by hand."""
    with open(README) as f:
        text = f.read()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start:] if end < 0 else text[start:end]
    section = re.sub(rf"<!-- {block}:(\S+) -->\n.*?<!-- /{block}:\1 -->", "", section, flags=re.S)
    section = re.sub(r"```.*?```", "", section, flags=re.S)
    section = re.sub(r"`[^`]*`", "", section)
    return [line for line in section.splitlines() if line.strip() and not line.startswith("#")]


# names are not numbers: the papers' "Table 2" / "Figure 3", the group p4, a 2-core machine
_NAMES = re.compile(r"\b(Tables?|Figures?|Fig\.|Eq\.|eq\.) \d+\b|\bp4\b|\b2-core\b")


@pytest.mark.parametrize("heading, block", [("Experiments", "experiment"), ("Benchmarks", "bench")])
def test_result_prose_types_no_number(heading, block):
    """Every number in the README's Experiments and Benchmarks sections comes from the
    committed results (the generated blocks): the hand-written prose holds no digit."""
    lines = _prose(heading, block)
    assert lines, f"the {heading} section has no prose: the check would be empty"
    typed = [line for line in lines if re.search(r"\d", _NAMES.sub("", line))]
    assert not typed, f"numbers typed by hand in the README's {heading} section:\n" + "\n".join(typed)


# experiments whose paper states no claim with a metric (certified_ablation: the GM
# paper's Figure 4 has a caption and no values): their rows are reported, not judged
REPORTED_ONLY = {"certified_ablation"}


def test_every_paper_experiment_has_a_generated_verdict():
    import json

    root = os.path.dirname(README)
    with open(README) as f:
        text = f.read()
    for name in sorted(set(EXPERIMENTS) - {"bench"}):
        record = json.load(open(os.path.join(root, "experiments", "results", f"{name}.json")))
        assert len(record["settings"]["seed_list"]) >= 3, name
        assert record["paper"], name
        block = re.search(rf"<!-- experiment:{name} -->\n(.*?)<!-- /experiment:{name} -->", text, re.S).group(1)
        if name in REPORTED_ONLY:  # the paper states no claim with a metric: reported, not judged
            assert record["verdict"] is None and "Direction: not judged." in block, name
            continue
        assert record["verdict"]["value"] in ("reproduced", "partly reproduced", "not reproduced"), name
        assert record["verdict"]["sentence"] in block, name


def test_extension_info_example_lists_every_op():
    """The README's extension_info() session names every registered op (a CPU build's
    devices: the composite ops run on every device)."""
    import ast

    import robustops

    with open(README) as f:
        session = next(b for b in re.findall(r"```python\n(.*?)```", f.read(), re.S)
                       if b.lstrip().startswith(">>> robustops.extension_info()"))
    shown = ast.literal_eval(session.split("\n", 1)[1].strip())
    info = robustops.extension_info()
    if not info["loaded"]:
        pytest.skip("robustops._C is not loaded")
    assert sorted(shown["ops"]) == sorted(info["ops"])
    for op, devices in shown["ops"].items():
        assert "cpu" in devices and set(devices) <= {"cpu", "cuda"}, op
