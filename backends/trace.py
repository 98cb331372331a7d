"""An update rule traced into a straight-line program, for compiling it into one loop.

A rule (see :mod:`arrayopt.backends`) is written once, in the cupy.fuse dialect. To
compile it for one element at a time (numba on the CPU, a CUDA elementwise kernel),
:func:`trace` runs it once on proxy objects for given flags and records what it does:
a list of :class:`Node` in evaluation order and, per array argument, the node holding
its final value. The program then says, per element,

* load every array argument that is read,
* evaluate the nodes in order, each rounded to the parameter's dtype,
* store the final value of every array argument the rule assigned.

Which arguments are arrays and which are Python scalars is fixed per program (a rule
gets ``0.0`` in place of state it does not use). The tracer follows NumPy's rules, so
a compiled program gives NumPy's bits:

* Python scalars and literals combined with an array are cast to the array's dtype
  first (NEP 50: they are "weak"); arithmetic between Python scalars alone happens
  on the host in Python (``host`` nodes), exactly as when the rule runs on NumPy.
* Only operations whose result IEEE 754 fixes to the bit are accepted: ``+ - * /``,
  negation, comparisons, ``sqrt``, ``abs``, ``square`` (and ``x ** 2``), ``sign``,
  ``maximum``, ``minimum`` (NaN-propagating) and ``where``. ``exp``, ``log`` and other
  powers round differently across libraries; a rule that uses them raises
  :class:`NotCompilable` and keeps running through NumPy.
"""

import itertools
import linecache
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from arrayopt.backends.base import ELEMENTWISE_FUNCTIONS, Rule

__all__ = [
    "ARRAY",
    "OPERATIONS",
    "SCALAR",
    "Node",
    "NotCompilable",
    "Operation",
    "Program",
    "argument_kinds",
    "element_code",
    "host_code",
    "number_literal",
    "register_source",
    "trace",
]

#: argument kinds
ARRAY = "array"
SCALAR = "scalar"

#: node kinds: a value of the array dtype per element, a boolean per element, or a
#: Python number computed once on the host
VALUE, BOOL, HOST = "value", "bool", "host"

BINARY = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}
COMPARE = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
UNARY_FUNCTIONS = {"sqrt": "sqrt", "abs": "abs", "absolute": "abs", "square": "square", "sign": "sign"}
# Their results differ in the last bit between NumPy's SIMD loops and libm.
INEXACT_FUNCTIONS = {"exp", "log"}


@dataclass(frozen=True)
class Operation:
    """How each code generator spells one operation of a traced program.

    ``ufunc``: the NumPy ufunc (``backends/plan.py``; None: planned specially);
    ``python``: an element expression for numba (``backends/jit.py``), whose module
    defines ``ZERO``, ``ONE`` and ``MINUS_ONE`` of the dtype; ``cpp``: the same for
    CUDA C++ (``backends/cuda_source.py``), with ``{f}`` the float suffix of ``sqrt``
    and ``fabs`` and ``{zero}``, ``{one}`` constants of the element type. ``{0}``,
    ``{1}``, ``{2}`` are the operands. Each spelling rounds as NumPy's ufunc does.
    """

    ufunc: str | None
    python: str
    cpp: str


def _operator(symbol: str, ufunc: str) -> Operation:
    return Operation(ufunc, f"{{0}} {symbol} {{1}}", f"{{0}} {symbol} {{1}}")


#: every operation a program may hold, for every code generator
OPERATIONS: dict[str, Operation] = {
    "add": _operator("+", "add"),
    "sub": _operator("-", "subtract"),
    "mul": _operator("*", "multiply"),
    "div": _operator("/", "divide"),
    "lt": _operator("<", "less"),
    "le": _operator("<=", "less_equal"),
    "gt": _operator(">", "greater"),
    "ge": _operator(">=", "greater_equal"),
    "eq": _operator("==", "equal"),
    "ne": _operator("!=", "not_equal"),
    "neg": Operation("negative", "-{0}", "-{0}"),
    "sqrt": Operation("sqrt", "math.sqrt({0})", "sqrt{f}({0})"),
    "abs": Operation("absolute", "abs({0})", "fabs{f}({0})"),
    "square": Operation("square", "{0} * {0}", "{0} * {0}"),
    # NumPy: sign(-0.0) is +0.0 and sign(nan) is nan
    "sign": Operation(
        "sign",
        "ONE if {0} > ZERO else (MINUS_ONE if {0} < ZERO else (ZERO if {0} == ZERO else {0}))",
        "{0} > {zero} ? {one} : ({0} < {zero} ? -{one} : ({0} == {zero} ? {zero} : {0}))",
    ),
    # NumPy: NaN propagates from either side; on a tie, the second
    "maximum": Operation(
        "maximum", "{0} if ({0} > {1}) | ({0} != {0}) else {1}", "({0} > {1} || {0} != {0}) ? {0} : {1}"
    ),
    "minimum": Operation(
        "minimum", "{0} if ({0} < {1}) | ({0} != {0}) else {1}", "({0} < {1} || {0} != {0}) ? {0} : {1}"
    ),
    "where": Operation(None, "{1} if {0} else {2}", "{0} ? {1} : {2}"),
}


class NotCompilable(Exception):
    """The rule, with these flags and argument kinds, cannot be compiled exactly."""


@dataclass(frozen=True)
class Node:
    """One value of the program.

    ``op`` is ``"array"`` (the initial value of array argument ``value``), ``"scalar"``
    (scalar argument ``value``), ``"const"`` (the literal ``value``), ``"cast"`` (a
    host number converted to the array dtype), or an operation on the nodes ``args``:
    a key of ``BINARY`` or ``COMPARE``, ``"neg"``, ``"sqrt"``, ``"abs"``, ``"square"``,
    ``"sign"``, ``"maximum"``, ``"minimum"`` or ``"where"``.
    """

    op: str
    kind: str
    args: tuple[int, ...] = ()
    value: Any = None


@dataclass
class Program:
    """A traced rule: ``nodes`` in evaluation order and ``stores[position] = node``."""

    kinds: tuple[str, ...]
    nodes: list[Node] = field(default_factory=list)
    stores: dict[int, int] = field(default_factory=dict)

    def live(self) -> list[int]:
        """The nodes the stores depend on, in evaluation order."""
        needed: set[int] = set()
        stack = list(self.stores.values())
        while stack:
            index = stack.pop()
            if index not in needed:
                needed.add(index)
                stack.extend(self.nodes[index].args)
        return sorted(needed)

    def loaded(self) -> list[int]:
        """Positions of the array arguments whose values are read."""
        return sorted({self.nodes[i].value for i in self.live() if self.nodes[i].op == "array"})

    def host_inputs(self) -> list[int]:
        """Host nodes (scalar arguments, or arithmetic on them) that device nodes use."""
        used: set[int] = set()
        for i in self.live():
            node = self.nodes[i]
            if node.kind != HOST:
                used.update(a for a in node.args if self.nodes[a].kind == HOST and self.nodes[a].op != "const")
        return sorted(used)


def host_code(program: Program) -> tuple[list[str], list[str]]:
    """Python for the host side of a launch, from the arguments ``v0, v1, ...``.

    Returns statements that compute the host values device code needs (arithmetic on
    scalar arguments, done by Python exactly as when the rule runs on NumPy), and the
    expression of each value of :meth:`Program.host_inputs`, in that order.
    """
    nodes = program.nodes

    def expression(index: int) -> str:
        node = nodes[index]
        if node.op == "scalar":
            return f"v{node.value}"
        if node.op == "const":
            return repr(node.value)
        if node.op == "neg":
            return f"(-{expression(node.args[0])})"
        a, b = (expression(i) for i in node.args)
        return f"({a} {BINARY[node.op]} {b})"

    statements, values = [], []
    for h in program.host_inputs():
        if nodes[h].op == "scalar":
            values.append(expression(h))
        else:
            statements.append(f"h{h} = {expression(h)}")
            values.append(f"h{h}")
    return statements, values


def element_code(program: Program, constant: Callable[[int, Any], str]) -> tuple[dict[int, str], list[int]]:
    """Names for the live per-element nodes of ``program``, and the ones to compute, in order.

    An array argument's value is ``x<position>``; a host number cast to the dtype is
    ``c<host node>`` (the generator casts it once), a cast literal is what
    ``constant(node, value)`` returns; every other node is ``t<node>``, computed (in
    the returned order) from its arguments as :data:`OPERATIONS` spells its ``op``.
    """
    nodes = program.nodes
    names: dict[int, str] = {}
    computed: list[int] = []
    for index in program.live():
        node = nodes[index]
        if node.kind == HOST:
            continue
        if node.op == "array":
            names[index] = f"x{node.value}"
        elif node.op == "cast":
            source = nodes[node.args[0]]
            names[index] = constant(index, source.value) if source.op == "const" else f"c{node.args[0]}"
        else:
            names[index] = f"t{index}"
            computed.append(index)
    return names, computed


def argument_kinds(types: Any, array_type: type) -> tuple[str, ...] | None:
    """The kind of each argument of a launch from its type: arrays of ``array_type``, Python numbers.

    None if one is neither (a NumPy scalar, say: it is not weak under NEP 50, so the
    rule run directly may compute in another dtype than a traced program would).
    """
    kinds = []
    for t in types:
        if issubclass(t, array_type):
            kinds.append(ARRAY)
        elif t in (float, int, bool):
            kinds.append(SCALAR)
        else:
            return None
    return tuple(kinds)


def number_literal(value: Any) -> str:
    """Python source for a literal of a traced program, exact (``inf`` and ``nan`` too)."""
    if isinstance(value, float):
        return f"float.fromhex({value.hex()!r})"
    return repr(int(value))


_sources = itertools.count()


def register_source(source: str, name: str) -> str:
    """A unique file name for generated ``source``, known to linecache (for tracebacks)."""
    filename = f"<arrayopt-{name}-{next(_sources)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return filename


def trace(rule: Rule, flags: dict[str, Any], kinds: tuple[str, ...]) -> Program:
    """Trace ``rule`` with keyword ``flags`` for positional arguments of ``kinds``.

    Raises:
        NotCompilable: the rule does something a single exact loop cannot.
    """
    program = Program(kinds)
    tracer = _Tracer(program)
    args = [
        _Traced(
            tracer,
            tracer.add(Node("array" if kind == ARRAY else "scalar", VALUE if kind == ARRAY else HOST, (), i)),
            i if kind == ARRAY else None,
        )
        for i, kind in enumerate(kinds)
    ]
    try:
        result = cast(Callable[..., Any], rule)(_Namespace(tracer), *args, **flags)
    except NotCompilable:
        raise
    except Exception as exc:  # the NumPy path will raise it, or do what tracing cannot
        raise NotCompilable(f"tracing raised {type(exc).__name__}: {exc}") from exc
    if result is not None:
        raise NotCompilable("a rule must return None")
    return program


class _Tracer:
    def __init__(self, program: Program) -> None:
        self.program = program

    def add(self, node: Node) -> int:
        self.program.nodes.append(node)
        return len(self.program.nodes) - 1

    def kind(self, index: int) -> str:
        return self.program.nodes[index].kind

    def operand(self, x: Any) -> int:
        if isinstance(x, _Traced):
            if x.tracer is not self:
                raise NotCompilable("a value from another trace")
            return x.node
        if isinstance(x, (bool, int, float)):  # Python literals are weak, as NEP 50 says
            return self.add(Node("const", HOST, (), x))
        raise NotCompilable(f"an operand of type {type(x).__name__} (only arrays and Python numbers)")

    def to_value(self, index: int) -> int:
        """``index`` as a value of the array dtype (host numbers are cast)."""
        kind = self.kind(index)
        if kind == BOOL:
            raise NotCompilable("arithmetic on booleans")
        return self.add(Node("cast", VALUE, (index,))) if kind == HOST else index

    def binary(self, op: str, a: Any, b: Any) -> "_Traced":
        x, y = self.operand(a), self.operand(b)
        if self.kind(x) == HOST and self.kind(y) == HOST:
            if op in COMPARE:
                raise NotCompilable("a comparison of scalars (Python would need its value)")
            return _Traced(self, self.add(Node(op, HOST, (x, y))))
        if op == "pow":
            exponent = self.program.nodes[y]
            if exponent.op != "const" or exponent.value != 2:
                raise NotCompilable("powers other than x ** 2 round differently across libraries")
            return _Traced(self, self.add(Node("square", VALUE, (self.to_value(x),))))
        kind = BOOL if op in COMPARE else VALUE
        return _Traced(self, self.add(Node(op, kind, (self.to_value(x), self.to_value(y)))))

    def function(self, name: str, args: tuple[Any, ...]) -> "_Traced":
        indices = [self.operand(a) for a in args]
        if all(self.kind(i) == HOST for i in indices):
            raise NotCompilable(f"xp.{name} of scalars (NumPy would return a float64 scalar)")
        if name in INEXACT_FUNCTIONS:
            raise NotCompilable(f"xp.{name} rounds differently in NumPy and libm")
        if name == "where":
            if len(indices) != 3:
                raise NotCompilable("xp.where needs three arguments")
            condition, x, y = indices
            if self.kind(condition) != BOOL:
                raise NotCompilable("xp.where on a non-boolean condition")
            if HOST == self.kind(x) == self.kind(y):
                raise NotCompilable("xp.where of two scalars")
            return _Traced(self, self.add(Node("where", VALUE, (condition, self.to_value(x), self.to_value(y)))))
        if name in ("maximum", "minimum"):
            if len(indices) != 2:
                raise NotCompilable(f"xp.{name} needs two arguments")
            return _Traced(self, self.add(Node(name, VALUE, tuple(self.to_value(i) for i in indices))))
        if name in UNARY_FUNCTIONS and len(indices) == 1:
            return _Traced(self, self.add(Node(UNARY_FUNCTIONS[name], VALUE, (self.to_value(indices[0]),))))
        raise NotCompilable(f"xp.{name} with {len(indices)} arguments")


def _binary(op: str) -> tuple[Any, Any]:
    def forward(self: "_Traced", other: Any) -> "_Traced":
        return self.tracer.binary(op, self, other)

    def reverse(self: "_Traced", other: Any) -> "_Traced":
        return self.tracer.binary(op, other, self)

    return forward, reverse


def _in_place(op: str) -> Any:
    def method(self: "_Traced", other: Any) -> "_Traced":
        if self.tracer.kind(self.node) != VALUE:
            raise NotCompilable("in-place update of a scalar or boolean")
        self.assign(self.tracer.binary(op, self, other).node)
        return self

    return method


class _Traced:
    """A value during tracing: an argument, or a temporary of the rule.

    Like a NumPy array, an argument object is updated by ``x += ...`` and ``x[...] =``,
    and every name bound to it sees the new value; for arguments the new value is also
    recorded as what the program stores.
    """

    __slots__ = ("node", "position", "tracer")

    def __init__(self, tracer: _Tracer, node: int, position: int | None = None) -> None:
        self.tracer = tracer
        self.node = node
        self.position = position

    def assign(self, node: int) -> None:
        self.node = node
        if self.position is not None:
            self.tracer.program.stores[self.position] = node

    __add__, __radd__ = _binary("add")
    __sub__, __rsub__ = _binary("sub")
    __mul__, __rmul__ = _binary("mul")
    __truediv__, __rtruediv__ = _binary("div")
    __pow__ = _binary("pow")[0]
    __lt__ = _binary("lt")[0]
    __le__ = _binary("le")[0]
    __gt__ = _binary("gt")[0]
    __ge__ = _binary("ge")[0]
    __eq__ = _binary("eq")[0]
    __ne__ = _binary("ne")[0]
    __hash__ = None  # type: ignore[assignment]
    __iadd__ = _in_place("add")
    __isub__ = _in_place("sub")
    __imul__ = _in_place("mul")
    __itruediv__ = _in_place("div")

    def __neg__(self) -> "_Traced":
        tracer = self.tracer
        kind = tracer.kind(self.node)
        if kind == BOOL:
            raise NotCompilable("negation of booleans")
        return _Traced(tracer, tracer.add(Node("neg", kind, (self.node,))))

    def __setitem__(self, key: Any, value: Any) -> None:
        if key is not Ellipsis and key != slice(None):
            raise NotCompilable(f"assignment to x[{key!r}] (only x[...] = and x[:] =)")
        if self.tracer.kind(self.node) != VALUE:
            raise NotCompilable("assignment into a scalar")
        self.assign(self.tracer.to_value(self.tracer.operand(value)))

    def _concrete(self, *args: Any) -> Any:
        raise NotCompilable("a traced value has no concrete value (bool/float/int/len/iter)")

    __bool__ = __float__ = __int__ = __index__ = __len__ = __iter__ = __complex__ = __abs__ = _concrete
    __getitem__ = _concrete

    def __getattr__(self, name: str) -> Any:
        raise NotCompilable(f"attribute {name!r} of a traced value")


class _Namespace:
    """The ``xp`` a rule sees while traced: the elementwise functions of the dialect."""

    def __init__(self, tracer: _Tracer) -> None:
        self._tracer = tracer

    def __getattr__(self, name: str) -> Any:
        if name not in ELEMENTWISE_FUNCTIONS:
            raise NotCompilable(f"xp.{name} is not an elementwise function of the dialect")
        tracer = self._tracer
        return lambda *args: tracer.function(name, args)
