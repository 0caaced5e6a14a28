"""The checks before any timing: ``check_correctness`` (every implementation agrees
with the reference, else ``CorrectnessError``), ``no_tf32`` (float32 in full
precision on cuda, for the checks of training steps), and the saved-for-backward
memory of an implementation (``measure_saved``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor

from bench.cases import FORWARD, Case


class CorrectnessError(RuntimeError):
    """An implementation disagrees with the reference: its op is not timed."""


def _forward(case: Case, fn: Callable, ns: dict) -> Any:
    with torch.no_grad():
        return eval(case.forward_expr, {**ns, "f": fn})  # noqa: S307 (our own expression)


def _forward_backward(case: Case, fn: Callable, ns: dict) -> list[Optional[Tensor]]:
    exec(case.backward_stmt, {**ns, "f": fn})  # noqa: S102 (our own statement)
    return [ns[k].grad for k in case.differentiable]


def check_correctness(case: Case, fwd_ns: dict, bwd_ns: dict) -> None:
    """Every implementation's forward output and input gradients agree with the
    reference's (torch.testing.assert_close, with the case's tolerances). Raises
    CorrectnessError naming the op, implementation, pass, dtype and size. A
    forward-only case checks the forward only."""
    ref_fn = case.impls[case.reference]
    ref_out = _forward(case, ref_fn, fwd_ns)
    ref_grads = None
    if not case.forward_only:
        ref_grads = _forward_backward(case, ref_fn, bwd_ns)
        if any(g is None for g in ref_grads):
            raise CorrectnessError(f"{case.title}: the {case.reference} gives no input gradient")
    for name, fn in case.impls.items():
        if name == case.reference or name in case.unchecked:
            continue
        checks = [(FORWARD, lambda: _forward(case, fn, fwd_ns), ref_out)]
        if not case.forward_only:
            checks.append(("backward", lambda: _forward_backward(case, fn, bwd_ns), ref_grads))
        for what, get, expected in checks:
            try:
                actual = get()
                torch.testing.assert_close(actual, expected, **case.tolerances)
            except Exception as e:  # a wrong result or a crash: either way, no timing
                raise CorrectnessError(
                    f"{case.title}: the {what} of '{name}' disagrees with the "
                    f"{case.reference}: {type(e).__name__}: {e}"
                ) from e


def measure_saved(case: Case, fn: Callable, bwd_ns: dict, compiled: bool) -> dict:
    """Bytes of the tensors the forward saves for backward, seen through
    torch.autograd.graph.saved_tensors_hooks and deduplicated by storage (a saved
    view keeps its whole storage alive). For a compiled implementation the hooks
    see what the compiled autograd function saves; when they see nothing the
    number is reported as not measurable rather than as zero."""
    storages: dict[int, int] = {}
    count = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal count
        count += 1
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    graphs_before = _compiled_graph_count()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = eval(case.forward_expr, {**bwd_ns, "f": fn})  # noqa: S307
        del out
    except Exception as e:  # noqa: BLE001 (report, do not guess)
        return {"bytes": None, "tensors": None, "relative_to_input": None,
                "note": f"n/a: {type(e).__name__}: {e}"}
    result: dict[str, Any] = {"tensors": count}
    if compiled and count == 0:
        result.update(bytes=None, relative_to_input=None,
                      note="n/a: the hooks see no tensor saved by the compiled graph")
        return result
    nbytes = sum(storages.values())
    result.update(bytes=nbytes, relative_to_input=nbytes / case.input_bytes)
    if compiled and _compiled_graph_count() != graphs_before:
        result["note"] = "measured on a graph recompiled under the hooks"
    return result


def _compiled_graph_count() -> int:
    try:
        from torch._dynamo.utils import counters
        return int(counters["stats"]["unique_graphs"])
    except Exception:  # noqa: BLE001 (a private API: best effort)
        return -1


@contextlib.contextmanager
def no_tf32(device: torch.device) -> Iterator[None]:
    """float32 convolutions and matmuls in full precision on cuda (cuDNN allows
    TF32 by default), so that float32 tolerances apply (checks of training steps)."""
    if device.type != "cuda":
        yield
        return
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul
