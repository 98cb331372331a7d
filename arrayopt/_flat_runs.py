"""Runs of flat Parameters: their state held by the buffer, one kernel call per run.

An elementwise optimizer (``ElementwiseOptimizer`` with ``_flat_runs = True``) keeps
the state of the members of a :class:`~arrayopt.flat.FlatBuffer` in the buffer's own
layout, and updates many members with one call of its rule. The words used here, and
nowhere else for anything else:

* **held state** (:class:`HeldState`): what the optimizer keeps for one buffer: one
  array per state key (``exp_avg``, ...), laid out like the buffer, and one value per
  member for each scalar key (the ``step`` counters, SGD's ``None`` momentum buffer);
* **member state** (:class:`MemberState`): ``optimizer.state[p]`` of a member whose
  state is held: a mutable mapping whose entries are the member's views of those
  arrays and its scalars, read from and written to the held state directly;
* **block** (:class:`Block`): members of one buffer that sit next to each other in it
  and all belong to one param group (found once per group);
* **run**: members of a block, all with a gradient, whose state is held with the same
  keys and the same scalars (equal ``step``): one kernel call updates them.

A step finds its runs from the held state alone: which members have a gradient
(``FlatBuffer.has_grad``), whether ``optimizer.state`` still maps each member to its
member state (one pass in C), and which neighbours have the same keys and counters.
Nothing is cached between steps and no change is tracked: whatever a user does to
``optimizer.state[p]`` went straight into the held state, or (a value the buffer
cannot hold: an array of its own, an ``int`` step, another key) made the member keep
a dict of its own, and a member that is not mapped to its member state (its entry
replaced or deleted) is stepped alone like any Parameter. A load or an unpickle
builds new held state (:meth:`FlatRuns.hold`), so the old one stays intact for a
rollback.
"""

import copy
import enum
import operator
from collections.abc import Iterator, Mapping, MutableMapping
from itertools import groupby
from typing import Any

from arrayopt._step_checks import refuse_misfit_numbers
from arrayopt.backends import get_backend, is_array
from arrayopt.backends.base import READ_ONLY_MESSAGE
from arrayopt.flat import FlatBuffer
from arrayopt.parameter import Parameter

__all__ = ["Block", "FlatRuns", "HeldState", "Kind", "MemberState", "RunUpdate"]


class Kind(enum.Enum):
    """How a piece of a block is stepped."""

    #: no state yet: it is made once for the piece and held by the buffer (if it can be)
    FRESH = "fresh"
    #: state held by the buffer, same keys and scalars: one kernel call (a run)
    HELD = "held"
    #: the member's state is a mapping of its own: stepped alone, like any Parameter
    OWN = "own"


#: Fresh state of a run is made in pieces of at most this many bytes per state array (see FlatRuns).
FRESH_PIECE_BYTES = 1 << 20


def holds_scalar(key: str, value: Any) -> bool:
    """Whether held state keeps ``value`` as a scalar: a float ``step``, or None."""
    return value is None or (key == "step" and type(value) is float)


def fits(buffer: FlatBuffer, value: Any, shape: tuple[int, ...]) -> bool:
    """Whether ``value`` is an array of ``shape`` with the buffer's library, dtype and device."""
    if not is_array(value) or tuple(value.shape) != shape:
        return False
    backend = get_backend(value)
    return backend is buffer.backend and value.dtype == buffer.dtype and backend.device(value) == buffer._device


class Layout:
    """The keys of a member's held state, in order, and which of them are scalars.

    Layouts are interned (:func:`layout`), so members with the same keys share one
    object and a run is found by identity.
    """

    __slots__ = ("keys", "scalars")

    def __init__(self, keys: tuple[str, ...], scalars: frozenset[str]) -> None:
        self.keys = keys
        self.scalars = scalars

    def with_key(self, key: str, scalar: bool) -> "Layout":
        """This layout with ``key`` held as a scalar or an array (a new key goes last)."""
        if key in self.keys and (key in self.scalars) == scalar:
            return self
        keys = self.keys if key in self.keys else (*self.keys, key)
        return layout(keys, self.scalars | {key} if scalar else self.scalars - {key})

    def without(self, key: str) -> "Layout":
        if key not in self.keys:
            raise KeyError(key)
        return layout(tuple(k for k in self.keys if k != key), self.scalars - {key})


_LAYOUTS: dict[tuple[tuple[str, ...], frozenset[str]], Layout] = {}


def layout(keys: tuple[str, ...], scalars: frozenset[str]) -> Layout:
    """The one :class:`Layout` with these keys and scalar keys."""
    found = _LAYOUTS.get((keys, scalars))
    if found is None:
        found = _LAYOUTS[(keys, scalars)] = Layout(keys, scalars)
    return found


class HeldState:
    """The state an optimizer holds for the members of one buffer.

    Attributes:
        buffer: the :class:`~arrayopt.flat.FlatBuffer`.
        arrays: state key -> one array laid out like ``buffer.data`` (made when
            first needed).
        views: state key -> each member's view of that array.
        columns: scalar key -> each member's value (``step`` counters).
        layouts: each member's :class:`Layout`, or None when its state is not held
            here (none yet, or a dict of its own).
    """

    __slots__ = ("arrays", "buffer", "columns", "layouts", "views")

    def __init__(self, buffer: FlatBuffer) -> None:
        self.buffer = buffer
        self.arrays: dict[str, Any] = {}
        self.views: dict[str, list[Any]] = {}
        self.columns: dict[str, list[Any]] = {}
        self.layouts: list[Layout | None] = [None] * len(buffer)

    def array(self, key: str) -> Any:
        """The flat array of ``key``, made (zeroed) when first asked for."""
        flat = self.arrays.get(key)
        if flat is None:
            flat = self.arrays[key] = self.buffer.companion()
            self.views[key] = self.buffer.member_views(flat)
        return flat

    def column(self, key: str) -> list[Any]:
        """The per-member values of the scalar key ``key``."""
        values = self.columns.get(key)
        if values is None:
            values = self.columns[key] = [None] * len(self.layouts)
        return values

    def pieces(self, lo: int, hi: int) -> list[tuple[int, int, Kind]]:
        """Members ``lo .. hi-1``, all mapped to their member states, cut where a run must end."""
        layouts = self.layouts
        first = layouts[lo]
        n = hi - lo
        whole = n == len(layouts)  # the usual case: no slice to copy
        if first is not None and first.keys and (layouts if whole else layouts[lo:hi]).count(first) == n:
            columns = self.columns
            for key in first.scalars:
                values = columns[key]
                if (values if whole else values[lo:hi]).count(values[lo]) != n:
                    break
            else:
                return [(lo, hi, Kind.HELD)]
        pieces: list[tuple[int, int, Kind]] = []
        a = lo
        for same, members in groupby(layouts[lo:hi]):
            b = a + len(list(members))
            if same is None:
                pieces.append((a, b, Kind.OWN))
            elif not same.keys:
                pieces.append((a, b, Kind.FRESH))
            elif not same.scalars:
                pieces.append((a, b, Kind.HELD))
            else:
                values = [self.columns[key][a:b] for key in sorted(same.scalars)]
                c = a
                for _, equal in groupby(values[0] if len(values) == 1 else zip(*values, strict=True)):
                    d = c + len(list(equal))
                    pieces.append((c, d, Kind.HELD))
                    c = d
            a = b
        return pieces

    def hold(self, index: int, state: Mapping[str, Any]) -> bool:
        """Copy member ``index``'s ``state`` into held state; False (nothing changed) if it cannot be held."""
        shape = self.buffer.shapes[index]
        if not all(holds_scalar(key, value) or fits(self.buffer, value, shape) for key, value in state.items()):
            return False
        scalars = []
        for key, value in state.items():
            if holds_scalar(key, value):
                self.column(key)[index] = value
                scalars.append(key)
            else:
                self.array(key)
                self.views[key][index][...] = value
        self.layouts[index] = layout(tuple(state), frozenset(scalars))
        return True


class MemberState(MutableMapping[str, Any]):
    """``optimizer.state[p]`` of a flat Parameter whose state the buffer holds.

    A mutable mapping like the dict of any other Parameter, whose entries are the
    member's views of the held arrays and its scalars. Writing an entry writes the
    held state: the member's own view or a float ``step`` (or None) is held as it is;
    any other value (an array of your own, which the optimizer then updates in place;
    an ``int`` step; an entry of another kind) makes the member keep a dict of its
    own from then on, stepped alone. Copies and pickles are plain dicts.
    """

    __slots__ = ("_held", "_index", "_own")

    def __init__(self, held: HeldState, index: int) -> None:
        self._held = held
        self._index = index
        self._own: dict[str, Any] | None = None

    def __getitem__(self, key: str) -> Any:
        own = self._own
        if own is not None:
            return own[key]
        held, index = self._held, self._index
        entries = held.layouts[index]
        assert entries is not None
        if key in entries.scalars:
            return held.columns[key][index]
        if key in entries.keys:
            return held.views[key][index]
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        own = self._own
        if own is not None:
            own[key] = value
            return
        held, index = self._held, self._index
        entries = held.layouts[index]
        assert entries is not None
        views = held.views.get(key)
        if views is not None and value is views[index]:
            held.layouts[index] = entries.with_key(key, scalar=False)
        elif holds_scalar(key, value):
            held.column(key)[index] = value
            held.layouts[index] = entries.with_key(key, scalar=True)
        else:
            self._let_go()[key] = value

    def __delitem__(self, key: str) -> None:
        own = self._own
        if own is not None:
            del own[key]
            return
        entries = self._held.layouts[self._index]
        assert entries is not None
        self._held.layouts[self._index] = entries.without(key)

    def __iter__(self) -> Iterator[str]:
        own = self._own
        if own is not None:
            return iter(own)
        entries = self._held.layouts[self._index]
        assert entries is not None
        return iter(entries.keys)

    def __len__(self) -> int:
        own = self._own
        if own is not None:
            return len(own)
        entries = self._held.layouts[self._index]
        assert entries is not None
        return len(entries.keys)

    def __contains__(self, key: object) -> bool:
        own = self._own
        if own is not None:
            return key in own
        entries = self._held.layouts[self._index]
        assert entries is not None
        return key in entries.keys

    def popitem(self) -> tuple[str, Any]:
        """Remove and return the last entry, as ``dict.popitem``."""
        own = self._own
        if own is not None:
            return own.popitem()
        keys = iter(reversed(tuple(self)))
        key = next(keys, None)
        if key is None:
            raise KeyError("popitem(): dictionary is empty")
        value = self[key]
        del self[key]
        return key, value

    def _let_go(self) -> dict[str, Any]:
        """From now on keep this member's entries in a dict of its own (returned)."""
        own = self._own = dict(self.items())
        self._held.layouts[self._index] = None
        return own

    # -- as a dict -------------------------------------------------------------------------

    def copy(self) -> dict[str, Any]:
        """A plain dict of the entries (arrays not copied)."""
        return dict(self.items())

    __copy__ = copy

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(self.copy(), memo)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return (dict, (self.copy(),))

    def __repr__(self) -> str:
        return repr(self.copy())

    def __or__(self, other: Any) -> Any:
        if not isinstance(other, Mapping):
            return NotImplemented
        merged = self.copy()
        merged.update(other)
        return merged

    def __ror__(self, other: Any) -> Any:
        if not isinstance(other, Mapping):
            return NotImplemented
        merged = dict(other)
        merged.update(self.items())
        return merged

    def __ior__(self, other: Any) -> "MemberState":
        self.update(other)
        return self


#: in FlatRuns' member lists: no MemberState made yet (never what ``optimizer.state.get`` returns)
_NONE = object()


class Block:
    """Members ``lo .. hi-1`` of one FlatBuffer, next to each other in it, all in one param group."""

    __slots__ = ("buffer", "hi", "lo", "params")

    def __init__(self, buffer: FlatBuffer, lo: int, first: Parameter) -> None:
        self.buffer = buffer
        self.lo = lo
        self.hi = lo + 1
        self.params = [first]

    def ranges_with_grad(self) -> list[tuple[int, int]]:
        """The maximal index ranges ``(lo, hi)`` of members that have a gradient."""
        flags = self.buffer.has_grad
        ranges = []
        i, hi = self.lo, self.hi
        while i < hi:
            j = flags.find(1, i, hi)
            if j < 0:
                break
            k = flags.find(0, j, hi)
            if k < 0:
                k = hi
            ranges.append((j, k))
            i = k
        return ranges


class RunUpdate:
    """A prepared kernel call for members ``a .. b-1`` of a buffer (a run, or fresh members)."""

    __slots__ = ("a", "b", "before", "held", "hyper", "layout", "operands", "params", "slices", "state")

    def __init__(
        self,
        held: HeldState,
        a: int,
        b: int,
        params: list[Parameter],
        layout: Layout | None,
        state: dict[str, Any] | None,
        slices: dict[str, Any],
        operands: tuple[Any, ...],
        hyper: Any,
    ) -> None:
        self.held, self.a, self.b, self.params, self.layout = held, a, b, params, layout
        self.state, self.slices, self.operands, self.hyper = state, slices, operands, hyper
        self.before = dict(state) if state is not None else {}


class FlatRuns:
    """An optimizer's flat runs: the state it holds per buffer and its param groups' blocks.

    ``ElementwiseOptimizer`` owns one (``_flat``) and calls :meth:`plan`, :meth:`prepare`
    and :meth:`commit` from its ``step``, and :meth:`hold` after a load.
    """

    def __init__(self) -> None:
        #: buffer -> (its held state, each member's MemberState, or _NONE before it has one)
        self.buffers: dict[FlatBuffer, tuple[HeldState, list[Any]]] = {}
        # id(group) -> (group, its params when planned, the plan): the group's blocks
        self._plans: dict[int, tuple[dict[str, Any], list[Parameter], list[Any] | None]] = {}

    def of(self, buffer: FlatBuffer) -> tuple[HeldState, list[Any]]:
        entry = self.buffers.get(buffer)
        if entry is None:
            entry = self.buffers[buffer] = (HeldState(buffer), [_NONE] * len(buffer))
        return entry

    def plan(self, group: dict[str, Any]) -> list[Any] | None:
        """The group's params with each buffer's members merged into blocks; None if it has no flat ones.

        A block is a range of consecutive members of one buffer that all belong to
        the group, whatever their order in it: updates of different parameters are
        independent, so the order they run in changes nothing. A buffer's blocks take
        the place of its first member; parameters listed twice stay apart (each
        occurrence is a step, as in torch).
        """
        params = group["params"]
        known = self._plans.get(id(group))
        if known is not None and known[0] is group and known[1] == params:
            return known[2]
        counts: dict[int, int] = {}
        for p in params:
            counts[id(p)] = counts.get(id(p), 0) + 1
        order: list[Any] = []
        members: dict[FlatBuffer, list[tuple[int, Parameter]]] = {}
        for p in params:
            flat = p._flat
            if flat is None or counts[id(p)] > 1:
                order.append(p)
                continue
            entry = members.get(flat[0])
            if entry is None:
                entry = members[flat[0]] = []
                order.append(flat[0])
            entry.append((flat[1], p))
        result: list[Any] | None = None
        if members:
            result = []
            for item in order:
                if type(item) is not FlatBuffer:
                    result.append(item)
                    continue
                block: Block | None = None
                for index, p in sorted(members[item], key=operator.itemgetter(0)):
                    if block is not None and block.hi == index:
                        block.hi += 1
                        block.params.append(p)
                    else:
                        block = Block(item, index, p)
                        result.append(block)
        self._plans[id(group)] = (group, list(params), result)
        return result

    def hold(self, optimizer: Any) -> None:
        """Move the plain state dicts of flat members into held state (after a load, an unpickle, a constructor).

        A dict whose every value the buffer can hold is copied in and replaced, in
        ``optimizer.state``, by the member's :class:`MemberState`; any other stays
        the member's own.
        """
        state = optimizer.state
        for group in optimizer.param_groups:
            for p in group["params"]:
                flat = p._flat
                entry = state.get(p) if flat is not None else None
                if not entry or type(entry) is not dict:
                    continue
                held, members = self.of(flat[0])
                if held.hold(flat[1], entry):
                    member = members[flat[1]] = MemberState(held, flat[1])
                    state[p] = member

    # -- a step ------------------------------------------------------------------------------

    def prepare(
        self,
        optimizer: Any,
        block: Block,
        lo: int,
        hi: int,
        group: dict[str, Any],
        hyper: Any,
        pending: dict[Parameter, Any],
        updates: list[Any],
    ) -> None:
        """Prepare members ``lo .. hi-1`` of ``block`` (all with a gradient) in as few kernel calls as allowed."""
        held, members = self.of(block.buffer)
        if hi - lo == len(members):  # the usual case: every member, so no slices to copy
            params, ours = block.params, members
        else:
            params, ours = block.params[lo - block.lo : hi - block.lo], members[lo:hi]
        state = optimizer.state
        if all(map(operator.is_, map(state.get, params), ours)):
            pieces = held.pieces(lo, hi)
        else:
            pieces = self._pieces_of_mixed(held, lo, hi, list(map(state.get, params)), ours)
        for a, b, kind in pieces:
            part = params[a - lo : b - lo]
            fresh = kind is Kind.FRESH
            if kind is Kind.OWN or not self._prepare_run(optimizer, held, a, b, part, group, hyper, updates, fresh):
                for p in part:
                    optimizer._prepare_one(p, group, hyper, pending, updates)

    @staticmethod
    def _pieces_of_mixed(
        held: HeldState, lo: int, hi: int, states: list[Any], ours: list[Any]
    ) -> list[tuple[int, int, Kind]]:
        """As :meth:`HeldState.pieces`, where some members are not mapped to their member states.

        Such a member has no state (FRESH) or a mapping of its own (OWN).
        """
        if not any(states):
            return [(lo, hi, Kind.FRESH)]
        mapped = list(map(operator.is_, states, ours))
        pieces: list[tuple[int, int, Kind]] = []
        k, n = 0, hi - lo
        while k < n:
            j = _find(mapped, False, k, n)
            if j > k:
                pieces += held.pieces(lo + k, lo + j)
            e = _find(mapped, True, j, n)
            for i in range(j, e):
                kind = Kind.OWN if states[i] else Kind.FRESH
                pieces.append((lo + i, lo + i + 1, kind))
            k = e
        merged: list[tuple[int, int, Kind]] = []
        for a, b, kind in pieces:  # neighbouring fresh members make their state together
            if kind is Kind.FRESH and merged and merged[-1][2] is Kind.FRESH:
                merged[-1] = (merged[-1][0], b, kind)
            else:
                merged.append((a, b, kind))
        return merged

    def _prepare_run(
        self,
        optimizer: Any,
        held: HeldState,
        a: int,
        b: int,
        params: list[Parameter],
        group: dict[str, Any],
        hyper: Any,
        updates: list[Any],
        fresh: bool,
    ) -> bool:
        """Prepare one kernel call for members ``a .. b-1``: their held state, or fresh state made for them.

        False (nothing prepared) if fresh state is something the buffer cannot hold.
        """
        buffer = held.buffer
        start, stop = buffer.offsets[a], buffer.offsets[b]
        stand_in = Parameter._unchecked(buffer.data[start:stop], buffer.raw_grad[start:stop])
        entries = None if fresh else held.layouts[a]
        slices: dict[str, Any] = {}
        state: dict[str, Any] | None
        if entries is not None:
            state = {}
            for key in entries.keys:
                if key in entries.scalars:
                    state[key] = held.columns[key][a]
                else:
                    state[key] = slices[key] = held.arrays[key][start:stop]
        else:
            # Fresh state made a piece at a time straight into the held arrays: the
            # optimizer's own arrays for a piece are at most FRESH_PIECE_BYTES each, not a
            # parameter-sized temporary per key (the rule's initial values are elementwise).
            state = None
            # (a library whose arrays do not say their item size: taken as 16 bytes, the largest)
            step = max(1, FRESH_PIECE_BYTES // getattr(buffer.data, "itemsize", 16))
            lo = start
            while True:
                hi = min(lo + step, stop)
                data, grad = buffer.data[lo:hi], buffer.raw_grad[lo:hi]
                piece = optimizer._init_state(Parameter._unchecked(data, grad), group)
                if piece is None:
                    break
                if not all(holds_scalar(k, v) or fits(buffer, v, (hi - lo,)) for k, v in piece.items()):
                    return False
                if state is None:
                    state = {}
                    for key, value in piece.items():
                        state[key] = value if holds_scalar(key, value) else held.array(key)[start:stop]
                        if not holds_scalar(key, value):
                            slices[key] = state[key]
                for key, value in piece.items():
                    if not holds_scalar(key, value):
                        # a slot no held state uses: harmless if the step fails
                        state[key][lo - start : hi - start] = value
                if hi >= stop:
                    break
                lo = hi
        operands = optimizer._operands(stand_in, group, state)
        backend = buffer.backend
        try:
            backend.check_operands(operands)
            backend.check_writes(operands, state)  # never one another here: no order needed
        except ValueError as exc:
            raise ValueError(f"{params[0]._label()}: {exc}") from None
        views = buffer.data_views(a, b)
        if backend.any_read_only(views):  # a member's own view, made read-only
            p = next(p for p, view in zip(params, views, strict=True) if backend.read_only(view))
            raise ValueError(f"{p._label()}: {READ_ONLY_MESSAGE}")
        refuse_misfit_numbers(optimizer, params[0], hyper, backend, stand_in.data)
        updates.append(RunUpdate(held, a, b, params, entries, state, slices, operands, hyper))
        return True

    def commit(self, optimizer: Any, update: RunUpdate, new_states: dict[Parameter, Any]) -> None:
        """Run the kernel once, then record what the rule left in the held state."""
        held = update.held
        optimizer._update(held.buffer.backend, update.hyper, update.state, update.operands)
        state = update.state
        if state is None:  # the optimizer keeps no state for these parameters
            return
        entries = update.layout
        a, b = update.a, update.b
        if entries is not None and len(state) == len(update.before):
            # A run whose rule only gave new values to its scalars (a new step): write them.
            changed = []
            for (key, value), (old_key, old) in zip(state.items(), update.before.items(), strict=True):
                if value is old:
                    continue
                if key != old_key or key not in entries.scalars or not holds_scalar(key, value):
                    break
                changed.append((key, value))
            else:
                for key, value in changed:
                    held.columns[key][a:b] = [value] * (b - a)
                return
        self._settle(held, update, new_states)

    def _settle(self, held: HeldState, update: RunUpdate, new_states: dict[Parameter, Any]) -> None:
        """Record the state the rule left for members ``a .. b-1``: held if it can be, else a dict each."""
        state = update.state
        assert state is not None
        a, b, n = update.a, update.b, update.b - update.a
        buffer = held.buffer
        start, stop = buffer.offsets[a], buffer.offsets[b]
        slices = update.slices
        scalars, copied, odd = [], [], []
        for key, value in state.items():
            if holds_scalar(key, value):
                scalars.append(key)
            elif value is slices.get(key):
                continue
            elif fits(buffer, value, (stop - start,)) and not any(value is s for s in slices.values()):
                copied.append(key)  # an array the rule made, covering the run: copied into place
            else:
                odd.append(key)
        members = self.of(buffer)[1]
        # Something the buffer cannot hold (a 0-d array, say): each member gets a dict of
        # its own, with its own copy of such values (taken before anything is written).
        owns = [self._own_entries(buffer, state, odd, i, start, stop) for i in range(a, b)] if odd else []
        for key in copied:
            held.array(key)[start:stop] = state[key]
        if not odd:
            for key in scalars:
                held.column(key)[a:b] = [state[key]] * n
            held.layouts[a:b] = [layout(tuple(state), frozenset(scalars))] * n
            if update.layout is None:  # fresh: the members get their member states
                made = [MemberState(held, i) for i in range(a, b)]
                members[a:b] = made
                new_states.update(zip(update.params, made, strict=True))
            return
        for i, p, own in zip(range(a, b), update.params, owns, strict=True):
            for key, value in state.items():
                if key in scalars:
                    own[key] = value
                elif key not in own:
                    own[key] = held.views[key][i]
            own = {key: own[key] for key in state}  # in the rule's order
            member = members[i]
            if update.layout is None or type(member) is not MemberState:
                new_states[p] = own
            else:
                member._own = own
                held.layouts[i] = None

    @staticmethod
    def _own_entries(buffer: FlatBuffer, state: dict[str, Any], odd: list[str], i: int, start: int, stop: int) -> Any:
        """Member ``i``'s own copies of the values of ``state`` under the keys ``odd`` (the run is ``start:stop``).

        An array as long as the run gives each member its part; any other array (a 0-d
        one, say) is copied whole for every member; other values are shared.
        """
        own: dict[str, Any] = {}
        for key in odd:
            value = state[key]
            if not is_array(value):
                own[key] = value
                continue
            xp = get_backend(value).xp
            if tuple(value.shape) == (stop - start,):
                part = value[buffer.offsets[i] - start : buffer.offsets[i + 1] - start]
                own[key] = xp.reshape(xp.asarray(part, copy=True), buffer.shapes[i])
            else:
                own[key] = xp.asarray(value, copy=True)
        return own


def _find(flags: list[bool], value: bool, start: int, stop: int) -> int:
    """The first index in ``start .. stop-1`` where ``flags`` holds ``value``, else ``stop``."""
    try:
        return flags.index(value, start, stop)
    except ValueError:
        return stop
