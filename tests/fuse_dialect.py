"""A CPU stand-in for ``cupy.fuse``'s tracer, to keep update rules compilable without a GPU.

``cupy.fuse`` runs a rule on proxy objects: arithmetic and a set of ufuncs are
allowed, assignments must be ``x[...] = expr``, and anything that needs a concrete
value (``bool()``, ``float()``, ``.shape``, indexing, iteration) raises. These proxies
behave the same way but compute with NumPy, so a rule that runs through them both
stays inside the dialect and gives NumPy's numbers.
"""

from typing import Any

import numpy as np

from arrayopt.backends.base import ELEMENTWISE_FUNCTIONS


class DialectError(AssertionError):
    """A rule did something cupy.fuse cannot compile."""


def unwrap(x: Any) -> Any:
    return x.value if isinstance(x, Proxy) else x


def _binary(op: Any) -> tuple[Any, Any]:
    def forward(self: "Proxy", other: Any) -> "Proxy":
        return Proxy(op(self.value, unwrap(other)))

    def reverse(self: "Proxy", other: Any) -> "Proxy":
        return Proxy(op(unwrap(other), self.value))

    return forward, reverse


class Proxy:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        object.__setattr__(self, "value", value)

    __add__, __radd__ = _binary(lambda a, b: a + b)
    __sub__, __rsub__ = _binary(lambda a, b: a - b)
    __mul__, __rmul__ = _binary(lambda a, b: a * b)
    __truediv__, __rtruediv__ = _binary(lambda a, b: a / b)
    __pow__, _ = _binary(lambda a, b: a**b)  # cupy's proxies have no __rpow__
    __lt__, _ = _binary(lambda a, b: a < b)
    __le__, _ = _binary(lambda a, b: a <= b)
    __gt__, _ = _binary(lambda a, b: a > b)
    __ge__, _ = _binary(lambda a, b: a >= b)
    __eq__, _ = _binary(lambda a, b: a == b)  # type: ignore[assignment]
    __ne__, _ = _binary(lambda a, b: a != b)  # type: ignore[assignment]
    __hash__ = None  # type: ignore[assignment]

    def _in_place(op: Any) -> Any:  # type: ignore[misc]
        def method(self: "Proxy", other: Any) -> "Proxy":
            if not isinstance(self.value, np.ndarray):
                raise DialectError("in-place update of a scalar argument")
            self.value[...] = op(self.value, unwrap(other))
            return self

        return method

    __iadd__ = _in_place(lambda a, b: a + b)
    __isub__ = _in_place(lambda a, b: a - b)
    __imul__ = _in_place(lambda a, b: a * b)
    __itruediv__ = _in_place(lambda a, b: a / b)

    def __neg__(self) -> "Proxy":
        return Proxy(-self.value)

    def __setitem__(self, key: Any, value: Any) -> None:
        if key is not Ellipsis and key != slice(None):
            raise DialectError(f"cupy.fuse only supports x[...] = and x[:] = assignments, not x[{key!r}] =")
        if not isinstance(self.value, np.ndarray):
            raise DialectError("assignment into a scalar argument")
        self.value[...] = unwrap(value)

    def __getitem__(self, key: Any) -> Any:
        raise DialectError("indexing is not supported inside cupy.fuse")

    def __abs__(self) -> Any:
        raise DialectError("abs() is not supported on cupy.fuse proxies; use xp.abs")

    def _concrete(self, *args: Any) -> Any:
        raise DialectError("a traced value has no concrete value inside cupy.fuse (bool/float/int/len/iter)")

    __bool__ = __float__ = __int__ = __index__ = __len__ = __iter__ = __complex__ = _concrete

    def __getattr__(self, name: str) -> Any:
        raise DialectError(f"attribute {name!r} is not available on a traced value in cupy.fuse")

    def __setattr__(self, name: str, value: Any) -> None:
        raise DialectError("attribute assignment on a traced value")


ALLOWED_FUNCTIONS = ELEMENTWISE_FUNCTIONS


class Ops:
    """The namespace a rule sees: only elementwise functions cupy.fuse can compile."""

    def __getattr__(self, name: str) -> Any:
        if name not in ALLOWED_FUNCTIONS:
            raise DialectError(f"xp.{name} is not among the elementwise functions rules may use")
        function = getattr(np, name)
        return lambda *args: Proxy(function(*(unwrap(a) for a in args)))


def apply_traced(rule: Any, args: list[Any], flags: dict[str, Any]) -> None:
    """Run ``rule`` on proxies of ``args``; it must return None, like a fused kernel."""
    result = rule(Ops(), *(Proxy(a) for a in args), **flags)
    if result is not None:
        raise DialectError(f"a rule must return None, got {result!r}")


def fake_cupy_module() -> Any:
    """A stand-in ``cupy`` module for running ``backends/cupy.py`` on the CPU.

    Its ``ndarray`` is NumPy's, its ``fuse`` traces the body on :class:`Proxy` objects
    (so the dialect is enforced), and its ufuncs are the allowed NumPy ones. It lets
    the CuPy backend's own code (flattening, complex views, scalar casting, kernel
    caching) run in tests on machines without a GPU.
    """
    import types

    module = types.ModuleType("cupy")
    module.ndarray = np.ndarray  # type: ignore[attr-defined]
    module.asnumpy = np.asarray  # type: ignore[attr-defined]
    module.array = np.array  # type: ignore[attr-defined]
    ops = Ops()
    for name in ALLOWED_FUNCTIONS:
        setattr(module, name, getattr(ops, name))

    def fuse(kernel_name: str | None = None) -> Any:
        def decorate(body: Any) -> Any:
            def launch(*args: Any) -> None:
                for a in args:
                    if not isinstance(a, (np.ndarray, np.generic)):
                        raise DialectError(f"fused kernels take arrays and NumPy scalars, got {type(a).__name__}")
                if body(*(Proxy(a) for a in args)) is not None:
                    raise DialectError("a fused body must return None")

            launch.kernel_name = kernel_name  # type: ignore[attr-defined]
            return launch

        return decorate

    module.fuse = fuse  # type: ignore[attr-defined]
    return module
