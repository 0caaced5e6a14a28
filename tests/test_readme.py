"""The README's Python examples run as written."""

from __future__ import annotations

import os
import re

import pytest

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
