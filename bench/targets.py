"""The speed targets of the families: a ``Target`` compares one value of a case's
or a step's record (``fraction_of``, ``speedup_of``, ``time_ratio_to``,
``saved_ratio_of``, ``step_ratio_of``) with a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch

from bench.cases import dtype_name, size_label


@dataclass(frozen=True)
class Target:
    """A goal for one op: ``value(record)`` compared with ``threshold``, at one
    dtype and size, on the device benchmarked. The record is a case's or, for a
    training step, a step's; it is found by op, dtype and element count, or by its
    size label when ``size`` is given (layer shapes, models)."""

    op: str
    metric: str
    value: Callable[[dict], Optional[float]]
    threshold: float
    at_least: bool = True  # value >= threshold; else value <= threshold
    dtype: torch.dtype = torch.float32
    numel: Optional[int] = 2**24
    size: Optional[str] = None  # match the record's "size" instead of its "numel"

    @property
    def goal(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.threshold:.2f}"

    def matches(self, rec: dict) -> bool:
        return (rec["op"] == self.op and rec["dtype"] == dtype_name(self.dtype)
                and rec.get("status") == "ok"
                and (rec.get("size") == self.size if self.size is not None
                     else rec.get("numel") == self.numel))

    def evaluate(self, records: Iterable[dict], device: str) -> dict:
        rec = next((r for r in records if self.matches(r)), None)
        value = None
        if rec is not None:
            try:
                value = self.value(rec)
            except (KeyError, TypeError):
                value = None
        hit = None if value is None else (value >= self.threshold if self.at_least
                                          else value <= self.threshold)
        return {
            "op": self.op, "metric": self.metric, "device": device,
            "dtype": dtype_name(self.dtype), "numel": self.numel,
            "size": self.size if self.size is not None else size_label(self.numel),
            "value": value, "target": self.goal, "threshold": self.threshold,
            "at_least": self.at_least, "hit": hit,
        }


def fraction_of(pass_: str, impl: str, limit: str) -> Callable[[dict], Optional[float]]:
    """Target value: the bandwidth of ``impl`` in ``pass_`` as a fraction of a limit's."""
    return lambda rec: rec["passes"][pass_][impl][f"fraction_of_{limit}"]


def speedup_of(pass_: str, other: str) -> Callable[[dict], Optional[float]]:
    """Target value: t_other / t_robustops in ``pass_`` (> 1: robustops is faster)."""
    return lambda rec: rec["speedups"][pass_][f"vs {other}"]


def time_ratio_to(pass_: str, other: str) -> Callable[[dict], Optional[float]]:
    """Target value: t_robustops / t_other in ``pass_`` (< 1: robustops is faster),
    the inverse of ``speedup_of``."""
    return lambda rec: 1.0 / rec["speedups"][pass_][f"vs {other}"]


def saved_ratio_of(impl: str) -> Callable[[dict], Optional[float]]:
    """Target value: bytes saved for backward by ``impl`` / bytes of the input."""
    return lambda rec: rec["saved"][impl]["relative_to_input"]


def step_ratio_of(variant: str) -> Callable[[dict], Optional[float]]:
    """Target value (a step record): t_variant / t_baseline, the interleaved ratio."""
    return lambda rec: rec["ratios"][variant]["ratio"]
