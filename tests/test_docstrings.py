"""Every public name of robustops has a docstring of its own (the API reference in
docs/ is generated from them; ``make docs``).

Public: every name in the ``__all__`` of the public modules below, and the public
methods and properties (no leading underscore) of the public classes, including
those a public class inherits from a private robustops base (``_P4Conv``, say). A
docstring must be the object's own: one inherited from torch.nn.Module or object, a
class's generated dataclass / namedtuple signature, or the class docstring that
``functools.partial`` and the like carry, does not count. So a module that
overrides nn.Module's ``forward`` must document its own ``forward``.

Data (``__version__``, ``EXPERIMENTS``) cannot carry a docstring of its own and is
not checked.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import types

import pytest

PUBLIC_MODULES = (
    "robustops",
    "robustops.nn",
    "robustops.ops",
    "robustops.bounds",
    "robustops.bang",
    "robustops.attacks",
    "robustops.defences",
    "robustops.metrics",
    "robustops.curves",
    "robustops.data",
    "robustops.models",
    "robustops.reference",
    "robustops.reference.saf",
    "robustops.reference.bang",
    "robustops.reference.interval",
    "robustops.reference.crown",
    "robustops.reference.bounds",
    "robustops.reference.p4",
    "robustops.reference.spp",
    "robustops.experiments",
)

# Public names in robustops/bounds/ibp.py, crown.py, training.py and robustops/ops/*.py
# still without a docstring: those files are being refactored in issue 17; docstrings
# follow. Listed here so the test passes meanwhile; test_pending_is_up_to_date fails
# once one of them gets its docstring (then drop it from the set).
PENDING = frozenset()


def _text(doc) -> str:
    return doc.strip() if isinstance(doc, str) else ""


def _generated(cls: type, doc: str) -> bool:
    """A docstring that dataclasses or namedtuple wrote: the class's signature."""
    return ((dataclasses.is_dataclass(cls) or issubclass(cls, tuple)) and doc.startswith(f"{cls.__name__}(")
            and "\n" not in doc)


def _class_doc(cls: type) -> str:
    doc = _text(cls.__dict__.get("__doc__"))
    return "" if _generated(cls, doc) else doc


def _callable_doc(obj) -> str:
    """The object's own docstring: not one it gets from its type (a functools.partial
    or another callable instance carries its class's)."""
    doc = obj.__doc__
    if doc is type(obj).__doc__ and not isinstance(obj, (types.FunctionType, types.BuiltinFunctionType)):
        return ""
    return _text(doc)


def _member(attr):
    """(the function or property to read the docstring of, or None for data)."""
    if isinstance(attr, (staticmethod, classmethod)):
        attr = attr.__func__
    if isinstance(attr, (property, functools.cached_property)):
        return attr
    if inspect.isfunction(attr) or inspect.ismethoddescriptor(attr) and callable(attr):
        return attr
    return None


def _own_members(cls: type):
    """(name, defining class, member) of the public methods and properties of ``cls``
    defined in robustops: its own and those of its robustops bases (the nearest
    definition of each name), none of torch's or object's."""
    seen = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("robustops"):
            continue
        for name, attr in vars(klass).items():
            if name.startswith("_") or name in seen:
                continue
            seen.add(name)
            member = _member(attr)
            if member is not None:
                yield name, klass, member


def _walk():
    """(qualified name, docstring) of every public name: the modules' own docstrings,
    every name in their __all__, the public members of the public classes."""
    done = set()
    for modname in PUBLIC_MODULES:
        module = importlib.import_module(modname)
        yield modname, _text(module.__doc__)
        for name in module.__all__:
            obj = getattr(module, name)
            qual = f"{modname}.{name}"
            if isinstance(obj, types.ModuleType):
                continue  # a public module: checked as one of PUBLIC_MODULES, or here when it is not
            if inspect.isclass(obj):
                yield qual, _class_doc(obj)
                for member, klass, attr in _own_members(obj):
                    key = (klass, member)
                    if key in done:
                        continue
                    done.add(key)
                    where = "" if klass is obj else f" (defined in {klass.__module__}.{klass.__qualname__})"
                    yield f"{qual}.{member}{where}", _text(attr.__doc__)
            elif callable(obj):
                yield qual, _callable_doc(obj)
            # else data: nothing to check


def _submodules_in_all():
    for modname in PUBLIC_MODULES:
        module = importlib.import_module(modname)
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, types.ModuleType):
                yield obj.__name__


def _missing():
    return [name for name, doc in _walk() if not doc]


def _base(name: str) -> str:
    return name.split(" (defined in ", 1)[0]


def test_every_public_name_has_a_docstring():
    missing = [name for name in _missing() if _base(name) not in PENDING]
    assert not missing, (f"{len(missing)} public names without a docstring of their own (Google style: a summary, "
                         "then Args:, Returns:, Raises:):\n  " + "\n  ".join(missing))


def test_pending_is_up_to_date():
    """PENDING holds only names that still lack a docstring (it shrinks to empty)."""
    missing = {_base(name) for name in _missing()}
    stale = sorted(PENDING - missing)
    assert not stale, "documented now, drop them from PENDING in tests/test_docstrings.py:\n  " + "\n  ".join(stale)


def test_every_public_module_is_walked():
    """A module listed in a public __all__ is one of PUBLIC_MODULES, so its names are checked."""
    unlisted = sorted(set(_submodules_in_all()) - set(PUBLIC_MODULES))
    assert not unlisted, f"add to PUBLIC_MODULES in tests/test_docstrings.py: {unlisted}"


@pytest.mark.parametrize("modname", PUBLIC_MODULES)
def test_public_module_has_all(modname):
    assert isinstance(getattr(importlib.import_module(modname), "__all__", None), (list, tuple)), modname
