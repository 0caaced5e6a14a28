"""Loading of the compiled kernels (robustops._C) and the fallback policy.

Every op in robustops.ops has compiled kernels per device and a pure-PyTorch
reference in robustops.reference. When robustops._C could not be loaded, or it was
built without kernels for the device of the input (CUDA kernels in a CPU-only build,
say), the op runs the reference instead and emits one FallbackWarning per op and
device. Set ROBUSTOPS_DISABLE_EXTENSION=1 to skip loading robustops._C altogether
(the tests use it to check that the fallback gives the same numbers).
"""

from __future__ import annotations

import os
import warnings

import torch

__all__ = ["FallbackWarning", "extension_info", "kernel_table", "warn_fallback"]


class FallbackWarning(UserWarning):
    """An op ran its pure-PyTorch reference because no compiled kernel was available.

    Emitted once per op and device type (not while torch.compile traces). The results
    are the same, only slower; ``extension_info()`` says what was compiled. Silence it
    with ``warnings.simplefilter("ignore", robustops.FallbackWarning)``, or make it an
    error (as the tests do) to insist on the compiled kernels.
    """


def _load():
    if os.environ.get("ROBUSTOPS_DISABLE_EXTENSION", "0") not in ("", "0"):
        return None, "disabled by ROBUSTOPS_DISABLE_EXTENSION"
    try:
        from robustops import _C  # noqa: F401  (registers the ops with the dispatcher)
    except ImportError as e:  # not built, or built against another torch
        return None, f"{type(e).__name__}: {e}"
    return _C, None


_C, _LOAD_ERROR = _load()

# The dispatch keys robustops registers kernels for, per device type of a tensor.
_DEVICE_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


def _kernel_devices(op: str) -> frozenset:
    """The device types for which robustops::<op> has a compiled kernel."""
    if _C is None:
        return frozenset()
    qualname = f"robustops::{op}"
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    if has(qualname, "CompositeExplicitAutograd"):  # made of ATen ops: every device
        devices = set(_DEVICE_KEYS)
    else:
        devices = {dev for dev, key in _DEVICE_KEYS.items() if has(qualname, key)}
    # Fake and meta tensors go to the Python fake kernels of robustops.ops.
    devices.add("meta")
    return frozenset(devices)


def kernel_table(*ops: str) -> dict:
    """{op: frozenset of device types with a compiled kernel}, for an op family's
    Python face to consult on every call. Built once at import: a dict lookup is
    cheap in eager mode and constant-folded by torch.compile."""
    return {op: _kernel_devices(op) for op in ops}


_WARNED: set = set()


def warn_fallback(op: str, device_type: str) -> None:
    """Warn once per (op, device type) that the reference runs instead of a kernel."""
    if torch.compiler.is_compiling() or (op, device_type) in _WARNED:
        return
    _WARNED.add((op, device_type))
    why = _LOAD_ERROR if _C is None else f"robustops._C was built without {device_type} kernels"
    warnings.warn(
        f"robustops.ops.{op}: no compiled kernel for device '{device_type}' ({why}); "
        "running the pure-PyTorch reference instead, which gives the same results more "
        "slowly. robustops.extension_info() says what was compiled.",
        FallbackWarning,
        stacklevel=3,
    )


def extension_info() -> dict:
    """What robustops._C holds: whether the compiled kernels loaded, and for which
    devices and ops.

    Returns:
        A dict with the keys

        - ``loaded``: whether robustops._C was loaded;
        - ``error``: why not, when it was not (None otherwise);
        - ``cpu_kernels`` / ``cuda_kernels``: whether kernels for that device were
          compiled; ops made of ATen ops (composite) run on every device either way;
        - ``cuda_archs``: the GPU architectures the CUDA kernels were compiled for;
        - ``cuda_version``: the CUDA version they were compiled with (None without);
        - ``torch_version_built``: the torch version the extension was compiled
          against;
        - ``torch_version``: the torch version running now;
        - ``ops``: {op: sorted device types with a compiled kernel}.
    """
    ops = {}
    if _C is not None:
        for name in sorted(torch._C._dispatch_get_all_op_names()):
            if name.startswith("robustops::"):
                op = name.split("::", 1)[1]
                ops[op] = sorted(d for d in _kernel_devices(op) if d != "meta")
    return {
        "loaded": _C is not None,
        "error": _LOAD_ERROR,
        "cpu_kernels": _C is not None,
        "cuda_kernels": bool(getattr(_C, "with_cuda", 0)),
        "cuda_archs": [a for a in getattr(_C, "cuda_archs", "").split("/") if a],
        "cuda_version": getattr(_C, "cuda_version", "") or None,
        "torch_version_built": getattr(_C, "torch_version", None),
        "torch_version": torch.__version__,
        "ops": ops,
    }
