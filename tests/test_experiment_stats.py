"""robustops.experiments.stats: spread over seeds and the three-valued verdict,
on hand-made per-seed results."""

from __future__ import annotations

import math

import pytest

from robustops.experiments import stats


def test_t975_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4, 10, 30):
        assert stats.t975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=1e-4)
    assert stats.t975(200) == pytest.approx(1.96, abs=0.01)
    with pytest.raises(ValueError, match="'df' must be >= 1"):
        stats.t975(0)


def test_mean_sd_formats_the_spread():
    assert stats.mean_sd([0.1, 0.2, 0.3], 3) == "0.200 ± 0.100"
    assert stats.mean_sd([0.5], 2) == "0.50"
    assert stats.mean_sd([None, math.nan], 2) == "-"
    assert stats.mean_sd([0.1, None, 0.3], 1, scale=10) == "2.0 ± 1.4 (2 of 3)"


def test_paired_holds_only_when_the_interval_excludes_zero():
    # the method is lower in every seed by about 0.1: the interval excludes 0
    part = stats.paired("lower", "paper", [0.9, 0.8, 0.85], [0.8, 0.69, 0.76], "less", "rate")
    assert part.holds and part.every_seed
    lo, hi = part.interval
    diffs = [-0.1, -0.11, -0.09]
    m = sum(diffs) / 3
    half = 4.3027 * stats.sd(diffs) / math.sqrt(3)
    assert lo == pytest.approx(m - half) and hi == pytest.approx(m + half) and hi < 0
    # the same differences, asked in the other direction: fails, "on the other side"
    other = stats.paired("higher", "paper", [0.9, 0.8, 0.85], [0.8, 0.69, 0.76], "greater", "rate")
    assert not other.holds and "other side" in other.evidence
    # lower in every seed but too spread for 3 seeds: the interval includes 0
    spread = stats.paired("lower", "paper", [0.5, 0.5, 0.5], [0.49, 0.2, 0.45], "less", "rate")
    assert spread.every_seed and not spread.holds and "does not exclude 0" in spread.evidence


def test_paired_margin_missing_values_and_one_seed():
    # accuracy "not more than 1 point lower": -0.002 +- tiny holds, -0.05 does not
    ok = stats.paired("similar", "p", [0.95, 0.96, 0.97], [0.948, 0.958, 0.969], "greater", "acc", against=-0.01)
    assert ok.holds
    bad = stats.paired("similar", "p", [0.95, 0.96, 0.97], [0.90, 0.91, 0.92], "greater", "acc", against=-0.01)
    assert not bad.holds
    missing = stats.paired("x", "p", [1.0, 2.0, 3.0], [0.5, math.nan, 1.0], "less", "L-inf")
    assert not missing.holds and "undefined in 1 of 3 seeds" in missing.evidence
    single = stats.paired("x", "p", [1.0], [0.0], "less", "L-inf")
    assert not single.holds and "one seed" in single.evidence
    with pytest.raises(ValueError, match="one value per seed"):
        stats.paired("x", "p", [1.0, 2.0], [1.0], "less", "w")
    with pytest.raises(ValueError, match="'direction'"):
        stats.paired("x", "p", [1.0], [1.0], "lower", "w")


def _part(holds: bool, name: str) -> stats.Part:
    return stats.Part(name, "paper", holds, "evidence")


def test_verdict_has_three_values_and_names_the_parts():
    assert stats.verdict([_part(True, "a"), _part(True, "b")]).value == stats.REPRODUCED
    none = stats.verdict([_part(False, "a"), _part(False, "b")])
    assert none.value == stats.NOT_REPRODUCED and "a; b" in none.sentence
    some = stats.verdict([_part(True, "fgs"), _part(False, "noise")])
    assert some.value == stats.PARTLY
    assert some.sentence == "holds: fgs. Does not hold: noise."
    assert "| fgs | paper | evidence | yes |" in some.markdown()
    assert some.to_json()["parts"][1]["holds"] is False
    with pytest.raises(ValueError, match="at least one part"):
        stats.verdict([])
