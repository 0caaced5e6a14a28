"""Copy each experiment's committed table (experiments/results/NAME.md) into the
README, between the markers <!-- experiment:NAME --> and <!-- /experiment:NAME -->,
so that no number in the README is typed in by hand.

    python tools/readme_experiments.py           # rewrite README.md
    python tools/readme_experiments.py --check   # exit 1 if README.md is stale

tests/test_readme.py runs the check.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "experiments" / "results"
BLOCK = re.compile(r"(<!-- experiment:(\w+) -->\n)(.*?)(<!-- /experiment:\2 -->)", re.S)


def excerpt(name: str) -> str:
    """The direction line and the table of experiments/results/NAME.md."""
    text = (RESULTS / f"{name}.md").read_text()
    direction = next(line for line in text.splitlines() if line.startswith("Direction:"))
    table = "\n".join(line for line in text.splitlines() if line.startswith("|"))
    return f"{table}\n\n{direction} (`experiments/results/{name}.md`)\n"


def render(readme: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + excerpt(m.group(2)) + m.group(4), readme)


def main(argv) -> int:
    current = README.read_text()
    new = render(current)
    if "--check" in argv:
        if new != current:
            print("README.md: the experiment tables differ from experiments/results/*.md; "
                  "run python tools/readme_experiments.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
