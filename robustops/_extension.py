"""Loading of the compiled kernels (robustops._C) and the fallback policy.

Every op in robustops.ops has compiled kernels per device and a pure-PyTorch
reference in robustops.reference. When robustops._C could not be loaded, or it was
built without kernels for the device of the input (CUDA kernels in a CPU-only build,
say), the op runs the reference instead and emits one FallbackWarning per op and
device. Set ROBUSTOPS_DISABLE_EXTENSION=1 to skip loading robustops._C altogether
(the tests use it to check that the fallback gives the same numbers).

An op module declares each op once, ``Op(name, reference=...)``, and its public
function calls ``op.dispatch(device_type, *args)`` after checking the arguments; the
module's fake kernels and autograd go in a function decorated with ``@register``,
which runs only when robustops._C is loaded. ``kernels_disabled(*ops)`` switches
kernels off for a while (the tests' one hook onto the fallback path).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Callable, Iterator, Optional

import torch

__all__ = ["FallbackWarning", "Op", "extension_info", "kernels_disabled", "register", "warn_fallback"]


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


# {op: device types with a compiled kernel} of every declared Op: what dispatch
# consults on every call (a dict lookup, cheap in eager mode and guarded on by
# torch.compile). Built at declaration; kernels_disabled() swaps entries for a while.
_COMPILED: dict = {}

_WARNED: set = set()


def warn_fallback(op: str, device_type: str, stacklevel: int = 3) -> None:
    """Warn once per (op, device type) that the reference runs instead of a kernel.

    ``stacklevel`` as warnings.warn's, counted from the caller of warn_fallback."""
    if torch.compiler.is_compiling() or (op, device_type) in _WARNED:
        return
    _WARNED.add((op, device_type))
    why = _LOAD_ERROR if _C is None else f"robustops._C was built without {device_type} kernels"
    warnings.warn(
        f"robustops.ops.{op}: no compiled kernel for device '{device_type}' ({why}); "
        "running the pure-PyTorch reference instead, which gives the same results more "
        "slowly. robustops.extension_info() says what was compiled.",
        FallbackWarning,
        stacklevel=stacklevel,
    )


class Op:
    """One op of robustops: robustops::<name>'s compiled kernels, with a pure-PyTorch
    reference to fall back on.

    Declared once at module level, ``_mrelu = Op("mrelu", reference=_ref.mrelu)``; the
    public function checks its arguments and returns ``_mrelu.dispatch(x.device.type,
    x)``.

    Args:
        name: the dispatcher op, robustops::<name>; the FallbackWarning names it.
        reference: the fallback, called with the kernel's arguments.
        kernel: what runs the compiled kernel, when it is not
            ``torch.ops.robustops.<name>.default`` called with the same arguments
            (to take one output of several, say). Called only when robustops._C is
            loaded.
    """

    __slots__ = ("name", "reference", "kernel")

    def __init__(self, name: str, *, reference: Callable, kernel: Optional[Callable] = None):
        self.name = name
        self.reference = reference
        overload = getattr(torch.ops.robustops, name, None) if _C is not None else None
        self.kernel = kernel if kernel is not None else (overload.default if overload is not None else None)
        _COMPILED[name] = _kernel_devices(name) if overload is not None else frozenset()

    def has_kernel(self, device_type: str) -> bool:
        """Whether a tensor on ``device_type`` runs the compiled kernel (now: not
        inside kernels_disabled)."""
        return device_type in _COMPILED[self.name]

    def dispatch(self, device_type: str, *args):
        """The compiled kernel on ``args`` when there is one for ``device_type``, else
        the reference, with one FallbackWarning per (op, device type) pointing at the
        caller of the public function."""
        if device_type in _COMPILED[self.name]:
            return self.kernel(*args)
        warn_fallback(self.name, device_type, stacklevel=4)
        return self.reference(*args)

    def __repr__(self) -> str:
        return f"Op({self.name!r}, kernels for {sorted(_COMPILED[self.name])})"


def register(fn: Callable[[], None]) -> Callable[[], None]:
    """Decorator: run ``fn`` (an op module's fake-kernel and autograd registrations)
    now if robustops._C is loaded; without it there are no ops to register for."""
    if _C is not None:
        fn()
    return fn


@contextlib.contextmanager
def kernels_disabled(*ops: str) -> Iterator[None]:
    """Within it the public functions of ``ops`` (every declared op when none are
    named) run their references, as without compiled kernels.

    The once-per-(op, device) FallbackWarning memo of these ops is cleared on entry,
    so that the first fallback inside warns; on exit, also after an exception, the
    kernels and the memo are as they were.

    Raises:
        ValueError: an op that no op module declared.
    """
    unknown = [op for op in ops if op not in _COMPILED]
    if unknown:
        raise ValueError(f"kernels_disabled: no op named {unknown}; the ops are {sorted(_COMPILED)}")
    names = ops or tuple(_COMPILED)
    saved = {op: _COMPILED[op] for op in names}
    warned = set(_WARNED)
    try:
        _COMPILED.update((op, frozenset()) for op in names)
        _WARNED.difference_update({key for key in warned if key[0] in saved})
        yield
    finally:
        _COMPILED.update(saved)
        _WARNED.clear()
        _WARNED.update(warned)


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
