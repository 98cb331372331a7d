"""Every public object documents its math or reference, its arguments and an example.

Public means: listed in ``__all__`` of arrayopt and of its public submodules (private
modules start with an underscore; ``arrayopt.bench`` is a command-line tool). The
examples themselves run in tests/test_docs.py.
"""

import importlib
import inspect
import pkgutil

import pytest

import arrayopt
import arrayopt.optimizers
import arrayopt.optimizers.lbfgs

# Module-level constants (version strings, format numbers) are documented by a
# ``#:`` comment in their module, not by a docstring of their own.
_CONSTANT_TYPES = (str, int, float, tuple, frozenset)


def public_modules():
    names = [
        "arrayopt",
        "arrayopt.optimizer",
        "arrayopt.parameter",
        "arrayopt.sparse",
        "arrayopt.flat",
        "arrayopt.checkpoint",
        "arrayopt.line_search",
        "arrayopt.lbfgsb",
        "arrayopt.minimize",
        "arrayopt.plotting",
        "arrayopt.swa_utils",
        "arrayopt.lr_scheduler",
        "arrayopt.functional",
        "arrayopt.utils",
        "arrayopt.backends",
        "arrayopt.batch",
    ]
    names += [
        f"arrayopt.optimizers.{m.name}"
        for m in pkgutil.iter_modules(arrayopt.optimizers.__path__)
        if not m.name.startswith("_")
    ]
    modules = [importlib.import_module(n) for n in names]
    try:  # needs mpi4py and an MPI library (the 'mpi' extra)
        modules.append(importlib.import_module("arrayopt.distributed"))
    except ImportError:
        pass
    return modules


def public_objects():
    seen = {}
    for module in public_modules():
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or isinstance(obj, _CONSTANT_TYPES):
                continue
            seen.setdefault(id(obj), (f"{module.__name__}.{name}", obj))
    return sorted(seen.values(), key=lambda item: item[0])


PUBLIC = public_objects()


# Not yet documented to this standard (an example, and an Args section where it takes
# arguments): empty now; a new public object that falls short may be listed here while
# it is written (the xfail is strict, so a fixed one must leave it).
MISSING: set[str] = set()


def takes_arguments(obj):
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return False
    return any(name not in ("self", "cls") for name in signature.parameters)


def test_the_public_api_is_found():
    names = {name for name, _ in PUBLIC}
    assert "arrayopt.optimizers.adam.adam_update" in names
    assert "arrayopt.lr_scheduler.OneCycleLR" in names
    assert "arrayopt.backends.get_backend" in names
    assert len(PUBLIC) > 60


@pytest.mark.parametrize(
    ("name", "obj"),
    [
        pytest.param(name, obj, marks=pytest.mark.xfail(reason="docstring not complete yet", strict=True))
        if name in MISSING
        else (name, obj)
        for name, obj in PUBLIC
    ],
    ids=[name for name, _ in PUBLIC],
)
def test_public_object_has_a_full_docstring(name, obj):
    doc = inspect.getdoc(obj)
    assert doc, f"{name} has no docstring"
    assert ">>>" in doc, f"{name}: its docstring has no example (a doctest)"
    if callable(obj) and takes_arguments(obj):
        class_doc = doc
        if inspect.isclass(obj) and obj.__init__.__doc__:
            class_doc += inspect.getdoc(obj.__init__)
        assert "Args:" in class_doc or "Parameters" in class_doc, f"{name}: no Args section"


def test_property_docstrings_do_not_start_with_a_napoleon_type():
    """Napoleon reads a property docstring's ``text: more`` first line as ``Type: text`` (issue 19)."""
    import re

    offenders = []
    for name, obj in PUBLIC:
        if not inspect.isclass(obj):
            continue
        for klass in obj.__mro__:
            if not klass.__module__.startswith("arrayopt"):
                continue
            for attribute, value in vars(klass).items():
                if isinstance(value, property) and value.__doc__:
                    first = value.__doc__.strip().splitlines()[0]
                    if re.match(r"^[^:`]+:(\s|$)", first):
                        offenders.append(f"{name}.{attribute}: {first}")
    assert not offenders, offenders
