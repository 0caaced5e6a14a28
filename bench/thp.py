"""The huge-pages comparison: on cpu the runner re-runs itself in a subprocess with
THP_MEM_ALLOC_ENABLE=1 (read by PyTorch at process start: large allocations use
transparent huge pages) for the float32 forward cases at N = 2^24, and sets those
times and the copy_/clone limits side by side with its own.

``run_thp_comparison`` (called by the runner after its cases) starts the subprocess,
``python -m bench.run --thp-child FILE ...``, whose runner measures with
``run_thp_child`` and writes FILE.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from bench.cases import FORWARD, LIMITS, ROOT, Case, Config
from bench.report import eprint
from bench.timing import Limits, time_stmt, timing_record

# The THP comparison: float32 forward cases at this size (the largest size run
# when it is not among them).
THP_LOG2_SIZE = 24
THP_ENV = "THP_MEM_ALLOC_ENABLE"


def run_thp_child(cases: Sequence[Case], config: Config, out: Path) -> int:
    """In the THP subprocess: the forward of every non-compiled implementation and
    the two limits; written to ``out`` as JSON."""
    records: list[dict] = []
    limits = Limits(config.device, config.min_run_time, records)
    forward: dict[str, dict] = {}
    for case in cases:
        if case.numel not in config.sizes:  # sizes of its own (layer shapes): not compared
            continue
        fwd_ns, _ = case.namespaces(case.make_inputs())
        lim = limits.get(case.dtype, case.limit_numel)
        for name, fn in case.impls.items():
            if name in case.compiled:
                continue
            with torch.no_grad():
                t = time_stmt(case.forward_expr, {**fwd_ns, "f": fn}, config.min_run_time)
            forward[f"{case.op} {name}"] = timing_record(t, case.bytes_forward, lim)
        del fwd_ns
        gc.collect()
    out.write_text(json.dumps({"limits": records, "forward": forward,
                               THP_ENV: os.environ.get(THP_ENV)}))
    return 0


def run_thp_comparison(results: dict, config: Config, out_dir: Path) -> Optional[dict]:
    """Re-run the float32 forward cases at N = 2^24 in a subprocess with
    THP_MEM_ALLOC_ENABLE=1; the rows of the side-by-side table. None when no case
    of that size was run (e.g. only ops with sizes of their own, like layer shapes)."""
    numel = 2**THP_LOG2_SIZE if 2**THP_LOG2_SIZE in config.sizes else max(config.sizes)
    if not any(c["numel"] == numel for c in results["cases"]):
        return None
    default_env = os.environ.get(THP_ENV)
    thp: dict = {"dtype": "float32", "numel": numel, "default_env": default_env, "rows": {},
                 "error": None}
    if default_env not in (None, "", "0"):
        thp["error"] = f"this process already runs with {THP_ENV}={default_env}"
        return thp
    if torch.float32 not in config.dtypes:
        thp["error"] = "float32 is not among the dtypes run"
        return thp
    ok = [c for c in results["cases"] if c.get("status") == "ok" and c["dtype"] == "float32"
          and c["numel"] == numel]
    if not ok:
        thp["error"] = "no float32 case succeeded at this size"
        return thp
    ops = [c["op"] for c in ok]
    tmp = out_dir / f"{config.device.type}.thp.json.tmp"
    cmd = [sys.executable, "-m", "bench.run", "--thp-child", str(tmp), "--device", "cpu",
           "--ops", ",".join(ops), "--sizes", str(numel.bit_length() - 1), "--dtypes", "float32",
           "--min-run-time", str(config.min_run_time)]
    eprint(f"{THP_ENV}=1 re-run: {' '.join(cmd[1:])}")
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, THP_ENV: "1"},
                              capture_output=True, text=True)
        if proc.stderr:
            eprint(proc.stderr.rstrip())
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            thp["error"] = f"the subprocess exited with status {proc.returncode}: {tail}"
            return thp
        child = json.loads(tmp.read_text())
    finally:
        tmp.unlink(missing_ok=True)
    if child.get(THP_ENV) != "1":
        thp["error"] = f"the subprocess did not see {THP_ENV}=1"
        return thp
    for rec in ok:
        for name, t in rec["passes"][FORWARD].items():
            key = f"{rec['op']} {name}"
            if key in child["forward"]:
                thp["rows"][key] = {"default": t, "thp": child["forward"][key]}
    parent_lim = next(l for l in results["limits"] if l["dtype"] == "float32"
                      and l["numel"] == numel)
    child_lim = child["limits"][0]
    for lim in LIMITS:
        thp["rows"][lim] = {"default": parent_lim[lim], "thp": child_lim[lim]}
    return thp
