"""Separate Parameters stepped together: one ``_update`` call, one kernel call, for many of them.

An elementwise optimizer that declares ``_bundled = True`` (its ``_update`` only
advances scalar state, passes the operands to kernels and may store an operand in the
state) has neighbouring prepared updates of separate Parameters committed together
when they agree on everything but their arrays: the same backend (one that takes
:class:`~arrayopt.backends.base.Bundle` arguments), param group, dtype, state keys,
scalar state (equal ``step`` counters) and scalar operands. ``_update`` then runs once
on a stand-in state and on operands that are bundles (one member per parameter), and
what it left in the stand-in state is written back to each parameter's own: a new
scalar to every one, a bundle member by member. The kernel runs the rule on each
member in turn, in the order of the param group, so the numbers are those of the
one-by-one loop; what is saved is the Python around it (torch's fused optimizers take
all the tensors of a group in one call for the same reason).
"""

from typing import Any

from arrayopt.backends.base import Bundle

__all__ = ["commit", "extent"]

_MISSING = object()


def extent(updates: list[Any], start: int) -> int:
    """The end of the bundle of updates starting at ``updates[start]`` (``start + 1``: none).

    The members agree on the backend, param group, dtype, state keys and scalar state
    (compared by type and value); their state dicts are distinct (a parameter listed
    twice steps twice, one after the other). Their operands then have arrays at the
    same positions and the same numbers elsewhere: that is part of ``_bundled``'s
    contract (``_operands`` depends on the group, the state's keys and its scalars).
    """
    _, backend, hyper, state, operands, sparse = updates[start]
    if sparse or not backend.takes_bundles or not (state is None or type(state) is dict):
        return start + 1
    if state is None:  # an optimizer that keeps no state for them (SGD without momentum)
        return _stateless_extent(updates, start)
    array = type(operands[0])
    scalars, arrays = [], []
    for key, value in state.items():
        if type(value) is array:
            arrays.append(key)
        elif value is None or type(value) is float:
            scalars.append((key, type(value), value))
        else:
            return start + 1
    size = len(state)
    dtype = operands[0].dtype
    seen = {id(state)}
    # (local names: this loop runs once per parameter and step)
    add, ids, types, get, missing = seen.add, id, type, dict.get, _MISSING
    end = start + 1
    for update in updates[start + 1 :]:
        if types(update) is not tuple:
            break
        _, other_backend, other_hyper, other, values, other_sparse = update
        if (
            other_hyper is not hyper
            or other_backend is not backend
            or other_sparse
            or types(other) is not dict
            or len(other) != size  # (with every key below present: the same keys)
            or ids(other) in seen
            or values[0].dtype != dtype
        ):
            break
        for key, kind, value in scalars:
            found = get(other, key, missing)
            if types(found) is not kind or found != value:
                return end
        for key in arrays:
            if types(get(other, key)) is not array:
                return end
        add(ids(other))
        end += 1
    return end


def _stateless_extent(updates: list[Any], start: int) -> int:
    _, backend, hyper, _, operands, _ = updates[start]
    dtype = operands[0].dtype
    end = start + 1
    for update in updates[start + 1 :]:
        if type(update) is not tuple:
            break
        _, other_backend, other_hyper, other, values, other_sparse = update
        if other_hyper is not hyper or other_backend is not backend or other_sparse or other is not None:
            break
        if values[0].dtype is not dtype and values[0].dtype != dtype:
            break
        end += 1
    return end


def commit(optimizer: Any, bundle: list[Any], pending: dict[Any, Any], new_states: dict[Any, Any]) -> None:
    """Run ``optimizer._update`` once for the prepared updates in ``bundle`` (see :func:`extent`)."""
    _, backend, hyper, head, operands, _ = bundle[0]
    array = type(operands[0])
    params, _, _, states, values, _ = zip(*bundle, strict=True)
    stand_in = None
    if head is not None:
        stand_in = {
            key: Bundle([state[key] for state in states]) if type(value) is array else value
            for key, value in head.items()
        }
    before = dict(stand_in or {})
    columns = zip(*values, strict=True)
    bundled = tuple(
        Bundle(column) if type(value) is array else value for value, column in zip(operands, columns, strict=True)
    )
    if pending:
        for p in params:
            if p in pending:
                new_state = pending.pop(p)
                if new_state is not None:
                    new_states[p] = new_state
    optimizer._update(backend, hyper, stand_in, bundled)
    if stand_in is None:
        return
    for key, value in stand_in.items():
        if before.get(key, _MISSING) is value:
            continue
        if type(value) is Bundle:
            for state, member in zip(states, value, strict=True):
                state[key] = member
        else:
            for state in states:
                state[key] = value
    for key in before:
        if key not in stand_in:
            for state in states:
                del state[key]
