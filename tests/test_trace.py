"""Tracing a rule into a program (``backends/trace.py``): NumPy's semantics, without numba or CuPy."""

import pytest

from arrayopt.backends import trace
from arrayopt.optimizers.adam import adam_update
from arrayopt.optimizers.sgd import sgd_update

ARRAY, SCALAR = trace.ARRAY, trace.SCALAR


def ops(program, index):
    """The expression of node ``index`` as nested tuples, for readable assertions."""
    node = program.nodes[index]
    if node.op in ("array", "scalar", "const"):
        return (node.op, node.value)
    return (node.op, *(ops(program, a) for a in node.args))


def test_in_place_updates_are_seen_through_every_name():
    def rule(xp, a, b, s):
        alias = a
        a *= s  # alias sees it, as with NumPy arrays
        b[...] = alias + 1

    program = trace.trace(rule, {}, (ARRAY, ARRAY, SCALAR))
    scaled = ("mul", ("array", 0), ("cast", ("scalar", 2)))
    assert ops(program, program.stores[0]) == scaled
    assert ops(program, program.stores[1]) == ("add", scaled, ("cast", ("const", 1)))
    assert program.loaded() == [0]  # b is only written


def test_temporaries_updated_in_place_are_not_stored():
    def rule(xp, a, b):
        t = a * 2
        t += b
        a[...] = t

    program = trace.trace(rule, {}, (ARRAY, ARRAY))
    assert set(program.stores) == {0}
    assert ops(program, program.stores[0]) == ("add", ("mul", ("array", 0), ("cast", ("const", 2))), ("array", 1))


def test_arithmetic_of_scalars_stays_on_the_host():
    def rule(xp, a, lr, beta):
        a -= lr * (1 - beta) * a

    program = trace.trace(rule, {}, (ARRAY, SCALAR, SCALAR))
    (host,) = program.host_inputs()
    assert ops(program, host) == ("mul", ("scalar", 1), ("sub", ("const", 1), ("scalar", 2)))
    statements, values = trace.host_code(program)
    assert statements == [f"h{host} = (v1 * (1 - v2))"] and values == [f"h{host}"]


def test_adam_program_reads_and_writes_each_operand_once():
    flags = {"maximize": False, "decay": "none", "amsgrad": True, "lerp_from_end": False}
    program = trace.trace(adam_update, flags, (ARRAY,) * 5 + (SCALAR,) * 9)
    assert program.loaded() == [0, 1, 2, 3, 4]
    assert sorted(program.stores) == [0, 2, 3, 4]
    # weight_decay and decay_factor are unused without decay, one_minus_weight without
    # lerp_from_end: only 6 scalars reach the loop
    assert len(program.host_inputs()) == 6


def test_flags_select_the_formula():
    kinds = (ARRAY,) * 3 + (SCALAR,) * 4
    first = trace.trace(
        sgd_update,
        {**dict.fromkeys(("maximize", "decay", "nesterov"), False), "use_momentum": True, "first_step": True},
        kinds,
    )
    later = trace.trace(
        sgd_update,
        {**dict.fromkeys(("maximize", "decay", "nesterov"), False), "use_momentum": True, "first_step": False},
        kinds,
    )
    assert ops(first, first.stores[2]) == ("array", 1)  # the buffer starts as the gradient
    assert 2 in later.loaded() and 2 not in first.loaded()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (lambda xp, p, g, s: p.__setitem__(Ellipsis, xp.exp(g)), "exp"),
        (lambda xp, p, g, s: p.__setitem__(Ellipsis, xp.log(g)), "log"),
        (lambda xp, p, g, s: p.__setitem__(Ellipsis, p**0.5), "powers"),
        (lambda xp, p, g, s: p.__setitem__(Ellipsis, xp.sort(g)), "not an elementwise function"),
        (lambda xp, p, g, s: p.__setitem__(Ellipsis, g if float(s) else p), "concrete value"),
        (lambda xp, p, g, s: p.__setitem__(Ellipsis, g.shape[0] * p), "attribute"),
        (lambda xp, p, g, s: p.__setitem__(Ellipsis, xp.where(g, p, s)), "non-boolean condition"),
        (lambda xp, p, g, s: p.__setitem__(Ellipsis, g + 1j), "complex"),
    ],
)
def test_refusals_name_the_reason(body, reason):
    with pytest.raises(trace.NotCompilable, match=reason):
        trace.trace(body, {}, (ARRAY, ARRAY, SCALAR))


def test_a_rule_must_return_none():
    with pytest.raises(trace.NotCompilable, match="return None"):
        trace.trace(lambda xp, p: p * 2, {}, (ARRAY,))
