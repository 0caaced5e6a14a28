"""Spread over seeds and verdicts computed from it.

Every experiment runs several seeds. A table cell is the mean +- the sample standard
deviation over the seeds (``mean_sd``). A verdict compares two settings (a baseline
and the paper's method) seed by seed, on the paper's own metric: the paired
difference (method minus baseline, one per seed) and its two-sided 95% Student t
interval. A part of the paper's evidence **holds** when that interval lies wholly on
the side the paper reports (it excludes 0); with one seed there is no interval and
nothing holds. The verdict is "reproduced" when every part holds, "not reproduced"
when none does, "partly reproduced" otherwise (naming the parts).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

REPRODUCED, PARTLY, NOT_REPRODUCED = "reproduced", "partly reproduced", "not reproduced"
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED)

# the 0.975 quantile of Student's t distribution with df = 1 ... 30 degrees of freedom
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (df >= 1; the
    normal quantile 1.96 beyond the table's 30, where the two differ by under 4%)."""
    if df < 1:
        raise ValueError(f"t975: 'df' must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.959964


def _finite(values: Sequence[Optional[float]]) -> List[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def mean(values: Sequence[Optional[float]]) -> float:
    """The mean of the finite values (NaN if there is none)."""
    v = _finite(values)
    return sum(v) / len(v) if v else math.nan


def sd(values: Sequence[Optional[float]]) -> float:
    """The sample standard deviation (n - 1) of the finite values (NaN below two)."""
    v = _finite(values)
    if len(v) < 2:
        return math.nan
    m = sum(v) / len(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def mean_sd(values: Sequence[Optional[float]], digits: int = 3, scale: float = 1.0) -> str:
    """"m +- s" over the seeds (each value times ``scale``), "m" for one finite value,
    "-" for none; with "(k of n)" when only k of the n seeds have a finite value."""
    v = [x * scale for x in _finite(values)]
    if not v:
        return "-"
    text = f"{mean(v):.{digits}f}" + (f" ± {sd(v):.{digits}f}" if len(v) > 1 else "")
    return text + (f" ({len(v)} of {len(values)})" if len(v) < len(values) else "")


@dataclass
class Part:
    """One part of a paper's evidence, checked on the seeds."""

    name: str                      # what the paper shows, as a sentence
    paper: str                     # the paper's figures for it
    holds: bool
    evidence: str                  # what the seeds show
    differences: List[Optional[float]] = field(default_factory=list)  # per seed
    interval: Optional[List[float]] = None                             # the 95% interval
    every_seed: bool = False       # the direction holds in every seed


def paired(name: str, paper: str, baseline: Sequence[Optional[float]], method: Sequence[Optional[float]],
           direction: str, what: str, digits: int = 3, scale: float = 1.0, against: float = 0.0) -> Part:
    """The part "``what`` is lower (direction "less") / higher ("greater") for the
    method than for the baseline": the per-seed differences method - baseline (times
    ``scale``), their mean and 95% t interval; it holds when the interval excludes
    ``against`` (0 by default) on the paper's side. A non-zero ``against`` states a
    margin: direction "greater" with against = -0.01 reads "not more than 0.01 lower". A
    seed where either value is missing (None or NaN: for example no successful attack to
    average over) makes the part fail: the evidence says so."""
    if direction not in ("less", "greater"):
        raise ValueError(f"paired: 'direction' must be 'less' or 'greater', got {direction!r}")
    if len(baseline) != len(method) or not baseline:
        raise ValueError(f"paired: 'baseline' and 'method' need one value per seed, the same number "
                         f"(got {len(baseline)} and {len(method)})")
    diffs: List[Optional[float]] = []
    for b, m in zip(baseline, method):
        ok = b is not None and m is not None and math.isfinite(float(b)) and math.isfinite(float(m))
        diffs.append((float(m) - float(b)) * scale if ok else None)
    sign = -1.0 if direction == "less" else 1.0
    word = "lower" if direction == "less" else "higher"
    n = len(diffs)
    missing = sum(d is None for d in diffs)
    if missing:
        return Part(name, paper, False, f"{what}: undefined in {missing} of {n} seeds", diffs)
    every = all(sign * (d - against) > 0 for d in diffs)
    m = mean(diffs)
    if n < 2:
        return Part(name, paper, False, f"{what} difference {m:+.{digits}f} (one seed: no interval, "
                                        "not judged)", diffs, None, every)
    half = t975(n - 1) * sd(diffs) / math.sqrt(n)
    lo, hi = m - half, m + half
    holds = sign * (lo - against) > 0 and sign * (hi - against) > 0
    agree = sum(sign * (d - against) > 0 for d in diffs)
    if against:
        word = f"{word} than {against:+.{digits}f}"
    mark = f"{against:+.{digits}f}" if against else "0"
    evidence = (f"{what}: difference {word} in {agree} of {n} seeds; mean difference {m:+.{digits}f}, "
                f"95% interval [{lo:+.{digits}f}, {hi:+.{digits}f}]"
                + ("" if holds else f", which does not exclude {mark}" if lo <= against <= hi
                   else ", on the other side"))
    return Part(name, paper, holds, evidence, diffs, [lo, hi], every)


@dataclass
class Verdict:
    value: str                     # one of VERDICTS
    sentence: str
    parts: List[Part]

    def to_json(self) -> Dict:
        return {"value": self.value, "sentence": self.sentence, "parts": [asdict(p) for p in self.parts]}

    def markdown(self) -> str:
        rows = [f"**{self.value[0].upper() + self.value[1:]}**: {self.sentence}", "",
                "| the paper's evidence | the paper | this run (paired over seeds) | holds |",
                "|---|---|---|---|"]
        rows += [f"| {p.name} | {p.paper} | {p.evidence} | {'yes' if p.holds else 'no'} |" for p in self.parts]
        return "\n".join(rows)


def verdict(parts: Sequence[Part]) -> Verdict:
    """reproduced (every part holds), partly reproduced (some), not reproduced (none)."""
    if not parts:
        raise ValueError("verdict: needs at least one part")
    held = [p.name for p in parts if p.holds]
    failed = [p.name for p in parts if not p.holds]
    if not failed:
        return Verdict(REPRODUCED, "every part of the paper's evidence holds: " + "; ".join(held) + ".",
                       list(parts))
    if not held:
        return Verdict(NOT_REPRODUCED, "no part of the paper's evidence holds: " + "; ".join(failed) + ".",
                       list(parts))
    return Verdict(PARTLY, "holds: " + "; ".join(held) + ". Does not hold: " + "; ".join(failed) + ".",
                   list(parts))
