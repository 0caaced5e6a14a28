"""Timing and the bandwidth limits: ``time_stmt`` (one blocked_autorange
measurement), ``time_interleaved`` (several statements in alternating slices, for
ratios on a shared machine) and ``interleaved_ratio``, the copy_/clone limits
(``measure_limits``, recorded once per dtype and size by ``Limits``) and the timing
records of the JSON (``timing_record``).
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import torch
from torch.utils.benchmark import Timer

from bench.cases import CLONE, COPY, LIMITS, dtype_name, randn, size_label


@dataclass
class Timing:
    """The statistics of one ``blocked_autorange`` measurement, in seconds."""

    median_s: float
    iqr_s: float
    mean_s: float
    runs: int  # blocks measured
    number_per_run: int  # statements per block

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def time_stmt(
    stmt: str,
    globals: dict,
    min_run_time: float,
    *,
    label: str = "",
    sub_label: str = "",
    description: str = "",
) -> Timing:
    """Time ``stmt`` with torch.utils.benchmark.Timer.blocked_autorange, on all of
    torch's threads. Grad mode is the caller's (the statement runs in this thread)."""
    timer = Timer(
        stmt=stmt,
        globals=globals,
        num_threads=torch.get_num_threads(),
        label=label,
        sub_label=sub_label,
        description=description,
    )
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return Timing(
        median_s=m.median,
        iqr_s=m.iqr,
        mean_s=m.mean,
        runs=len(m.times),
        number_per_run=m.number_per_run,
    )


# time_interleaved: the length of one slice (one Timer.timeit of a statement).
INTERLEAVE_SLICE_S = 0.05


def _quantile(values: Sequence[float], q: float) -> float:
    return torch.tensor(values, dtype=torch.float64).quantile(q).item()


def time_interleaved(
    stmts: Mapping[str, tuple[str, dict]],
    min_run_time: float,
    slice_s: float = INTERLEAVE_SLICE_S,
    *,
    label: str = "",
    sub_label: str = "",
) -> dict[str, dict]:
    """Time several statements in alternation, finely enough that the load of a
    shared machine (which comes and goes over tenths of seconds to seconds) weighs
    on all of them alike. ``stmts`` maps names to (statement, globals).

    First a blocked_autorange(min_run_time=4 * slice_s) of each statement (a
    warm-up, and the calibration: how many runs make a slice of about ``slice_s``
    seconds, at least one). Then cycles: in each, every statement runs one slice
    (torch.utils.benchmark Timer.timeit of that many runs) in turn, the order
    reversed every other cycle, until each has run ``min_run_time`` seconds of
    slices; one that is done sits the remaining cycles out.

    Returns {name: {**Timing over the slices (median, IQR, mean of the per-run
    time of each slice; runs = slices), "slices_s": [the per-run time of the
    slice of every cycle, None where it sat out], "autorange": the calibration's
    Timing}}; ``interleaved_ratio`` compares two of them slice by slice."""
    names = list(stmts)
    timers = {n: Timer(stmt=stmt, globals=globals, num_threads=torch.get_num_threads(),
                       label=label, sub_label=sub_label, description=n)
              for n, (stmt, globals) in stmts.items()}
    number: dict[str, int] = {}
    autorange: dict[str, dict] = {}
    for n, timer in timers.items():
        m = timer.blocked_autorange(min_run_time=4 * slice_s)
        number[n] = max(1, round(slice_s / m.median))
        autorange[n] = Timing(median_s=m.median, iqr_s=m.iqr, mean_s=m.mean, runs=len(m.times),
                              number_per_run=m.number_per_run).to_json()
    slices: dict[str, list[Optional[float]]] = {n: [] for n in names}
    spent = {n: 0.0 for n in names}
    cycle = 0
    while any(spent[n] < min_run_time for n in names):
        for n in (names if cycle % 2 == 0 else names[::-1]):
            if spent[n] >= min_run_time:
                slices[n].append(None)
                continue
            m = timers[n].timeit(number[n])
            slices[n].append(m.median)
            spent[n] += m.median * number[n]
        cycle += 1
    out: dict[str, dict] = {}
    for n in names:
        times = [t for t in slices[n] if t is not None]
        t = Timing(median_s=_quantile(times, 0.5),
                   iqr_s=_quantile(times, 0.75) - _quantile(times, 0.25),
                   mean_s=statistics.fmean(times), runs=len(times), number_per_run=number[n])
        out[n] = {**t.to_json(), "slices_s": slices[n], "autorange": autorange[n]}
    return out


def interleaved_ratio(timed: Mapping[str, dict], name: str, baseline: str) -> dict:
    """t_name / t_baseline from ``time_interleaved``, slice by slice: the ratio of
    each cycle's two slices (run within a fraction of a second of each other),
    over the cycles both ran in. "ratio" is their median, with their quartiles;
    "ratio_of_sums" the sum of the one's slices over the other's."""
    pairs = [(a, b) for a, b in zip(timed[name]["slices_s"], timed[baseline]["slices_s"])
             if a is not None and b is not None]
    ratios = [a / b for a, b in pairs]
    return {"ratio": _quantile(ratios, 0.5), "q25": _quantile(ratios, 0.25),
            "q75": _quantile(ratios, 0.75), "pairs": len(pairs),
            "ratio_of_sums": sum(a for a, _ in pairs) / sum(b for _, b in pairs)}


def measure_limits(
    dtype: torch.dtype, numel: int, device: torch.device, min_run_time: float
) -> dict[str, Timing]:
    """The two bandwidth limits for ``numel`` elements: ``y.copy_(x)`` into a
    preallocated ``y``, and ``x.clone()`` into a fresh tensor. Each moves
    2 * numel * itemsize bytes."""
    x = randn(numel, dtype, device, seed=0)
    y = torch.empty_like(x)
    label = f"limits {dtype_name(dtype)}"
    with torch.no_grad():
        copy = time_stmt("y.copy_(x)", {"x": x, "y": y}, min_run_time,
                         label=label, sub_label=size_label(numel), description=COPY)
        clone = time_stmt("x.clone()", {"x": x}, min_run_time,
                          label=label, sub_label=size_label(numel), description=CLONE)
    return {COPY: copy, CLONE: clone}


def limit_bytes(dtype: torch.dtype, numel: int) -> int:
    return 2 * numel * torch.empty((), dtype=dtype).element_size()


def gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


class Limits:
    """The copy_/clone limits, measured once per (dtype, numel) and recorded."""

    def __init__(self, device: torch.device, min_run_time: float, records: list[dict]):
        self.device, self.min_run_time, self.records = device, min_run_time, records
        self._cache: dict[tuple[torch.dtype, int], dict] = {}

    def get(self, dtype: torch.dtype, numel: int, min_run_time: Optional[float] = None) -> dict:
        """The limits of a copy of ``numel`` elements, measured on first use (with
        ``min_run_time`` seconds, default the runner's, per measurement)."""
        key = (dtype, numel)
        if key not in self._cache:
            nbytes = limit_bytes(dtype, numel)
            run_time = self.min_run_time if min_run_time is None else min_run_time
            timings = measure_limits(dtype, numel, self.device, run_time)
            rec = {"dtype": dtype_name(dtype), "numel": numel, "bytes": nbytes,
                   "min_run_time_s": run_time}
            for name, t in timings.items():
                rec[name] = {**t.to_json(), "bandwidth_GBps": gbps(nbytes, t.median_s)}
            self.records.append(rec)
            self._cache[key] = rec
        return self._cache[key]


def timing_record(t: Timing, nbytes: int, limits: dict) -> dict:
    """A timing's JSON record: its statistics, the bytes moved, the effective
    bandwidth and its fraction of each limit's (``limits``: a ``Limits`` record)."""
    bw = gbps(nbytes, t.median_s)
    rec = {**t.to_json(), "bytes": nbytes, "bandwidth_GBps": bw}
    for lim in LIMITS:
        rec[f"fraction_of_{lim}"] = bw / limits[lim]["bandwidth_GBps"]
    return rec
