"""Data-parallel optimization over MPI (mpi4py): every rank holds the same parameters.

Each rank (process) computes the gradients of its own share of the data; the
gradients are averaged over the ranks, and every rank then takes the same step, so
the parameters stay identical, bit for bit, on every rank. Start the script with
``mpiexec -n 4 python fit.py`` (see the guide, ``docs/distributed.md``).

* :func:`broadcast_parameters` gives every rank the values of one (call it once,
  before training, unless every rank starts from the same values anyway).
* :class:`DistributedOptimizer` wraps any optimizer: before each step it averages
  (or sums) the gradients over the ranks, one collective call per flat buffer (or per
  dtype, for separate Parameters), and with a closure (L-BFGS) it averages the
  gradients *and the loss* of every closure call, so every rank takes the same
  line-search decisions.
* :class:`ZeroRedundancyOptimizer` is torch's ZeRO stage 1: each rank keeps the
  optimizer state of a balanced shard of the parameters only, steps that shard, and
  then sends the new values to the other ranks.

Needs mpi4py (``pip install "arrayopt[mpi]"``) and an MPI library: the system's, or a
wheel from PyPI (``pip install mpich``). ``import arrayopt`` never imports mpi4py;
``import arrayopt.distributed`` does (which initializes MPI).

Exactness: the averaged gradient is the sum of the ranks' gradients, computed by the
MPI library's ``Allreduce``, divided by the number of ranks. Every rank receives the
same sum (MPICH and Open MPI reduce in an order that does not depend on the receiving
rank), so the ranks hold the same bits after every step; the first step also checks
that the parameter values agree across ranks, and raises on every rank naming the
first parameter that differs. With equal shards the run equals a single process on
the whole data up to the rounding of the sum's order (tested: 1e-12 relative for the
elementwise optimizers in float64, 1e-9 for L-BFGS).

Errors never hang: the layout of the parameters (count, shapes, dtypes, group
options) is compared across ranks at construction, and which parameters have a
gradient at every step, before any gradient is sent; a mismatch raises the same error
on every rank, naming the parameter.

CuPy arrays go to MPI as device buffers when the MPI library is CUDA-aware
(``MPIX_Query_cuda_support``; override with the environment variable
``ARRAYOPT_MPI_CUDA_AWARE=1`` or ``0``), else through host buffers; the choice is
logged (logger ``arrayopt.distributed``, level INFO) when an optimizer is built.
Arrays of other array-API libraries always go through host buffers.
"""

import ctypes
import hashlib
import logging
import math
import os
import struct
from array import array
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from arrayopt._hooks import with_step_hooks
from arrayopt._validate import typename as _typename
from arrayopt.backends import Backend, get_backend
from arrayopt.flat import FlatBuffer
from arrayopt.optimizer import Optimizer, StateDict
from arrayopt.parameter import Parameter
from arrayopt.sparse import SparseGrad

try:
    from mpi4py import MPI
except (ImportError, RuntimeError) as _exc:  # no mpi4py, or no MPI library for it to load
    raise ImportError(
        f"arrayopt.distributed needs mpi4py and an MPI library (pip install 'arrayopt[mpi]' mpich): {_exc}"
    ) from _exc

__all__ = ["DistributedOptimizer", "ZeroRedundancyOptimizer", "broadcast_parameters"]

_log = logging.getLogger("arrayopt.distributed")

#: the values of ``op``
_OPS = ("mean", "sum")
# What a closure call gave, the last byte of the per-step agreement mask.
_NO_CLOSURE, _NO_LOSS, _LOSS, _BAD_LOSS = 0, 1, 2, 3
_MAX_PLANS = 16  # gradient layouts remembered per optimizer (one per set of parameters with a gradient)


# -- the communicator ------------------------------------------------------------------


def _resolve_comm(comm: Any) -> Any:
    if comm is None:
        return MPI.COMM_WORLD
    if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
        raise TypeError(f"comm must be an mpi4py intracommunicator (such as MPI.COMM_WORLD), got {_typename(comm)}")
    return comm


def _cuda_aware_mpi() -> tuple[bool, str]:
    """Whether the MPI library takes CUDA device buffers, and how that was found out."""
    forced = os.environ.get("ARRAYOPT_MPI_CUDA_AWARE", "").strip()
    if forced in ("0", "1"):
        return forced == "1", f"ARRAYOPT_MPI_CUDA_AWARE={forced}"
    query = getattr(MPI, "Query_cuda_support", None)
    if callable(query):
        return bool(query()), "MPI.Query_cuda_support()"
    # mpi4py loads the MPI library privately (RTLD_LOCAL): find the file it loaded.
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libmpi" in line and "/" in line}
    except OSError:
        paths = set()
    for path in sorted(paths):
        try:
            function = getattr(ctypes.CDLL(path), "MPIX_Query_cuda_support", None)
        except OSError:
            continue
        if function is not None:
            function.restype = ctypes.c_int
            return bool(function()), f"MPIX_Query_cuda_support() in {os.path.basename(path)}"
    return False, "this MPI library has no MPIX_Query_cuda_support"


class _Channel:
    """The collective calls on 1-D arrays of any supported library, in place.

    NumPy arrays (and CuPy arrays, with a CUDA-aware MPI) are handed to MPI as they
    are; other arrays are copied to the host and back. ``payload_bytes`` counts the
    bytes each rank handed to MPI (the benchmark compares it with the minimum).
    """

    def __init__(self, comm: Any) -> None:
        self.comm = _resolve_comm(comm)
        self.size: int = self.comm.Get_size()
        self.rank: int = self.comm.Get_rank()
        self._cuda_aware: tuple[bool, str] | None = None
        self.payload_bytes = 0
        self.collectives = 0

    def cuda_aware(self) -> tuple[bool, str]:
        if self._cuda_aware is None:
            self._cuda_aware = _cuda_aware_mpi()
        return self._cuda_aware

    def direct(self, backend: Backend) -> bool:
        """Whether ``backend``'s arrays go to MPI as they are (else through host copies)."""
        if backend.name == "numpy":
            return True
        if backend.name == "cupy":
            return self.cuda_aware()[0]
        return False

    def describe(self, backends: Iterable[Backend]) -> None:
        """Log how each library's arrays travel (once per optimizer, at construction)."""
        for backend in {b.name: b for b in backends}.values():
            if backend.name == "numpy":
                continue
            if backend.name == "cupy":
                aware, how = self.cuda_aware()
                route = "directly, as device buffers" if aware else "through host buffers"
                _log.info(
                    "arrayopt.distributed: CuPy arrays go to MPI %s (CUDA-aware MPI: %s, from %s)",
                    route,
                    "yes" if aware else "no",
                    how,
                )
            else:
                _log.info("arrayopt.distributed: %s arrays go to MPI through host buffers", backend.name)

    def _count(self, nbytes: int) -> None:
        self.payload_bytes += nbytes
        self.collectives += 1

    # -- small host messages ------------------------------------------------------------

    def allgather_ints(self, values: list[int]) -> list[list[int]]:
        """Every rank's ``values`` (int64 each, as many on every rank), by rank."""
        send = array("q", values)
        receive = array("q", bytes(8 * len(values) * self.size))
        self._count(8 * len(values))
        self.comm.Allgather(send, receive)
        n = len(values)
        return [list(receive[r * n : (r + 1) * n]) for r in range(self.size)]

    def allgather_objects(self, value: Any) -> list[Any]:
        """Every rank's picklable ``value`` (only on the way to an error message)."""
        return list(self.comm.allgather(value))

    # -- arrays -------------------------------------------------------------------------

    def allreduce(self, x: Any, backend: Backend, divide: bool) -> None:
        """``x`` (1-D) becomes the sum over the ranks, divided by their number when ``divide``."""
        self._count(_nbytes(x))
        if self.size == 1:
            return
        if self.direct(backend) and x.dtype.char in "fdFD":
            _synchronize(x)
            buf = x.view(x.real.dtype) if x.dtype.char in "FD" else x
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            if divide:
                x /= self.size
            return
        host = _host_copy(backend, x)
        work = host if host.dtype.char in "fdFD" else host.astype("float32")  # float16, bfloat16: summed in float32
        buf = work.view(work.real.dtype) if work.dtype.char in "FD" else work
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        if divide:
            work /= self.size
        if work is not host:
            work = work.astype(host.dtype)
        _write_back(backend, x, work)

    def bcast(self, x: Any, backend: Backend, root: int) -> None:
        """``x`` (1-D) takes root's values."""
        self._count(_nbytes(x))
        if self.size == 1:
            return
        if self.direct(backend):
            _synchronize(x)
            self.comm.Bcast(x.view("u1"), root=root)
            return
        host = _host_copy(backend, x)
        self.comm.Bcast(host.view("u1"), root=root)
        if self.rank != root:
            _write_back(backend, x, host)

    def allgatherv(self, x: Any, backend: Backend, counts: list[int]) -> None:
        """Rank r's part of ``x`` (1-D; ``counts[r]`` elements, in rank order) reaches every rank."""
        itemsize = _nbytes(x) // max(1, math.prod(x.shape))
        self._count(counts[self.rank] * itemsize)
        if self.size == 1:
            return
        sizes = [c * itemsize for c in counts]
        displacements = [sum(sizes[:r]) for r in range(self.size)]
        if self.direct(backend):
            _synchronize(x)
            self.comm.Allgatherv(MPI.IN_PLACE, [x.view("u1"), (sizes, displacements), MPI.BYTE])
            return
        host = _host_copy(backend, x)
        self.comm.Allgatherv(MPI.IN_PLACE, [host.view("u1"), (sizes, displacements), MPI.BYTE])
        _write_back(backend, x, host)


def _nbytes(x: Any) -> int:
    return int(math.prod(x.shape)) * int(getattr(x.dtype, "itemsize", 0) or _host_itemsize(x))


def _host_itemsize(x: Any) -> int:
    return int(get_backend(x).to_numpy(x[:0]).dtype.itemsize)


def _synchronize(x: Any) -> None:
    """Wait for the device work that writes ``x`` (CuPy: the device's streams) before MPI reads it."""
    device = getattr(x, "device", None)
    synchronize = getattr(device, "synchronize", None)
    if callable(synchronize):
        synchronize()


def _host_copy(backend: Backend, x: Any) -> Any:
    """A writable host (NumPy) copy of ``x`` that MPI may write into."""
    host = backend.to_numpy(x)
    if host is x or not host.flags.writeable or not host.flags.c_contiguous:
        host = host.copy()
    return host


def _write_back(backend: Backend, x: Any, host: Any) -> None:
    if backend.name == "numpy":
        if host is not x:
            x[...] = host
        return
    x[...] = backend.xp.asarray(host, device=backend.device(x))


# -- what the ranks must agree on ----------------------------------------------------------


def _params_of(groups: list[dict[str, Any]]) -> tuple[list[Parameter], list[str]]:
    """Each parameter once, in group order, with a label for messages."""
    seen: set[int] = set()
    params: list[Parameter] = []
    labels: list[str] = []
    for g, group in enumerate(groups):
        names = group.get("param_names")
        for i, p in enumerate(group["params"]):
            if id(p) in seen:
                continue
            seen.add(id(p))
            params.append(p)
            where = f"param_groups[{g}]['params'][{i}]"
            if names is not None:
                labels.append(f"parameter {names[i]!r} ({where})")
            elif p.name is not None:
                labels.append(f"{p._label()} ({where})")
            else:
                labels.append(f"the parameter at {where}")
    return params, labels


def _option_text(value: Any) -> str:
    """A group option as the ranks compare it (objects without a stable repr: their type)."""
    if value is None or isinstance(value, (bool, int, float, complex, str)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        inner = ", ".join(_option_text(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    return f"<{_typename(value)}>"


def _layout(groups: list[dict[str, Any]], first: int = 0) -> list[tuple[str, str]]:
    """(what, value) pairs that must be equal on every rank: group options, shapes, dtypes."""
    items: list[tuple[str, str]] = [("the number of param groups", str(len(groups)))]
    for g, group in enumerate(groups, first):
        items.append((f"the number of parameters in param group {g}", str(len(group["params"]))))
        for key in sorted(k for k in group if k not in ("params", "param_names")):
            items.append((f"option {key!r} of param group {g}", _option_text(group[key])))
        names = group.get("param_names")
        wheres = []
        for i, p in enumerate(group["params"]):
            label = f"parameter {names[i]!r}" if names is not None else p._label()
            wheres.append(f"{label} (param_groups[{g}]['params'][{i}])")
        items += _parameter_items(group["params"], wheres)
    return items


def _parameter_items(params: list[Parameter], wheres: list[str]) -> list[tuple[str, str]]:
    items = []
    for p, where in zip(params, wheres, strict=True):
        items.append((f"the shape of {where}", str(p.shape)))
        items.append((f"the dtype of {where}", f"{get_backend(p.data).name} {p.dtype}"))
    return items


def _digest(data: bytes) -> int:
    """A 63-bit hash of ``data`` (the same on every machine)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def _ranks(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))


def _agree(channel: _Channel, items: list[tuple[str, str]], who: str) -> None:
    """Raise ValueError on every rank unless ``items`` are equal on every rank (one small collective)."""
    text = repr(items).encode("utf-8")
    hashes = [row[0] for row in channel.allgather_ints([_digest(text)])]
    if len(set(hashes)) == 1:
        return
    everyone = channel.allgather_objects(items)
    raise ValueError(f"{who}: {_first_difference(everyone)}; every rank must build it from the same parameters")


def _first_difference(everyone: list[list[tuple[str, str]]]) -> str:
    for position in range(max(len(items) for items in everyone)):
        values: dict[str, list[int]] = {}
        what = ""
        for rank, items in enumerate(everyone):
            if position < len(items):
                what, value = items[position]
            else:
                value = "missing"
            values.setdefault(value, []).append(rank)
        if len(values) > 1:
            parts = [f"{value} on {_ranks(ranks)}" for value, ranks in values.items()]
            return f"{what} differs across ranks: " + ", ".join(parts)
    return "the parameters differ across ranks"


# -- gradients ----------------------------------------------------------------------------


class _Stretch:
    """Consecutive members ``lo .. hi-1`` of one flat buffer, consecutive in the optimizer's parameters too."""

    __slots__ = ("buffer", "hi", "lo", "start")

    def __init__(self, buffer: FlatBuffer, lo: int, hi: int, start: int) -> None:
        self.buffer, self.lo, self.hi, self.start = buffer, lo, hi, start  # start: position in the parameter list


class _Inventory:
    """An optimizer's parameters as flat stretches and separate Parameters, in order."""

    def __init__(self, groups: list[dict[str, Any]]) -> None:
        self.key = [group["params"] for group in groups]
        self.params, self.labels = _params_of(groups)
        self.items: list[_Stretch | Parameter] = []
        self.owned: dict[FlatBuffer, bytearray] = {}  # which members of each buffer the optimizer has
        for position, p in enumerate(self.params):
            flat = p._flat
            if flat is None:
                self.items.append(p)
                continue
            buffer, index = flat
            owned = self.owned.get(buffer)
            if owned is None:
                owned = self.owned[buffer] = bytearray(len(buffer))
            owned[index] = 1
            last = self.items[-1] if self.items else None
            if isinstance(last, _Stretch) and last.buffer is buffer and last.hi == index:
                last.hi += 1
            else:
                self.items.append(_Stretch(buffer, index, index + 1, position))
        self.backends = [get_backend(p.data) for p in self.params]
        self.stretches_only = all(isinstance(item, _Stretch) for item in self.items)

    def matches(self, groups: list[dict[str, Any]]) -> bool:
        return len(groups) == len(self.key) and all(g["params"] == k for g, k in zip(groups, self.key, strict=True))

    def mask(self) -> bytes:
        """Per parameter: 0 no gradient, 1 a dense one, 2 a sparse one."""
        if self.stretches_only:
            return b"".join([bytes(s.buffer.has_grad[s.lo : s.hi]) for s in self.items])  # type: ignore[union-attr]
        parts = []
        for item in self.items:
            if isinstance(item, _Stretch):
                parts.append(bytes(item.buffer.has_grad[item.lo : item.hi]))
            else:
                grad = item._grad
                parts.append(b"\x00" if grad is None else b"\x02" if isinstance(grad, SparseGrad) else b"\x01")
        return b"".join(parts)

    def value_digests(self) -> list[int]:
        """A hash of each parameter's values (their bits), in order."""
        return [_digest(_host_bytes(p.data)) for p in self.params]

    def value_digest(self) -> int:
        h = hashlib.blake2b(digest_size=8)
        for item in self.items:
            if isinstance(item, _Stretch):
                offsets = item.buffer.offsets
                h.update(_host_bytes(item.buffer.data[offsets[item.lo] : offsets[item.hi]]))
            else:
                h.update(_host_bytes(item.data))
        return int.from_bytes(h.digest(), "little") >> 1


def _host_bytes(x: Any) -> bytes:
    host = get_backend(x).to_numpy(x)
    return bytes(host.tobytes())


class _Bucket:
    """Gradients moved by one collective call: a slice of a flat gradient buffer, or packed."""

    __slots__ = ("backend", "buffer", "parts", "span", "staging")

    def __init__(self, backend: Backend, buffer: FlatBuffer | None, span: tuple[int, int] | None) -> None:
        self.backend = backend
        self.buffer = buffer  # a flat buffer whose gradient slice ``span`` is reduced in place
        self.span = span
        # packed: (flat buffer, start, stop) slices or separate Parameters, in staging order
        self.parts: list[tuple[FlatBuffer, int, int] | Parameter] = []
        self.staging: Any = None

    def size(self) -> int:
        total = 0
        for part in self.parts:
            total += part[2] - part[1] if isinstance(part, tuple) else math.prod(part.shape)
        return total

    def run(self, channel: _Channel, divide: bool) -> None:
        if self.buffer is not None:
            assert self.span is not None
            channel.allreduce(self.buffer.raw_grad[self.span[0] : self.span[1]], self.backend, divide)
            return
        xp = self.backend.xp
        if self.staging is None:
            first = self.parts[0]
            like = first[0].data if isinstance(first, tuple) else first.data
            self.staging = xp.empty((self.size(),), dtype=like.dtype, device=self.backend.device(like))
        staging = self.staging
        at = 0
        for part in self.parts:
            if isinstance(part, tuple):
                buffer, start, stop = part
                staging[at : at + stop - start] = buffer.raw_grad[start:stop]
                at += stop - start
            else:
                n = math.prod(part.shape)
                staging[at : at + n] = xp.reshape(part._grad, (n,))
                at += n
        channel.allreduce(staging, self.backend, divide)
        at = 0
        for part in self.parts:
            if isinstance(part, tuple):
                buffer, start, stop = part
                buffer.raw_grad[start:stop] = staging[at : at + stop - start]
                at += stop - start
            else:
                n = math.prod(part.shape)
                part._grad[...] = xp.reshape(staging[at : at + n], part.shape)
                at += n


def _gradient_plan(inventory: _Inventory, mask: bytes) -> list[_Bucket]:
    """The collective calls that reduce the gradients ``mask`` says exist."""
    buckets: list[_Bucket] = []
    with_grad: dict[FlatBuffer, list[int]] = {}
    for item in inventory.items:
        if isinstance(item, _Stretch):
            flags = mask[item.start : item.start + item.hi - item.lo]
            members = with_grad.setdefault(item.buffer, [])
            members.extend(item.lo + k for k, flag in enumerate(flags) if flag)
    for buffer, members in with_grad.items():
        if not members:
            continue
        members.sort()
        first, last = members[0], members[-1]
        owned = inventory.owned[buffer]
        offsets = buffer.offsets
        if all(owned[first : last + 1]):
            # Members in between without a gradient are the optimizer's own: their
            # (unused) slices may be reduced along, so the whole stretch is one slice.
            buckets.append(_Bucket(buffer.backend, buffer, (offsets[first], offsets[last + 1])))
            continue
        bucket = _Bucket(buffer.backend, None, None)
        run_start = previous = first
        for index in [*members[1:], None]:
            if index is not None and index == previous + 1:
                previous = index
                continue
            bucket.parts.append((buffer, offsets[run_start], offsets[previous + 1]))
            if index is not None:
                run_start = previous = index
        buckets.append(bucket)
    by_kind: dict[tuple[int, str, str], _Bucket] = {}
    for position, item in enumerate(inventory.params):
        if item._flat is not None or mask[position] != 1:
            continue
        backend = inventory.backends[position]
        key = (id(backend), str(backend.device(item.data)), str(item.dtype))
        packed = by_kind.get(key)
        if packed is None:
            packed = by_kind[key] = _Bucket(backend, None, None)
            buckets.append(packed)
        packed.parts.append(item)
    return buckets


class _Reducer:
    """Gradient (and loss) averaging over the ranks, with the per-step agreement check."""

    def __init__(self, channel: _Channel, op: str, who: str) -> None:
        if op not in _OPS:
            raise ValueError(f"op must be 'mean' or 'sum', got {op!r}")
        self.channel = channel
        self.op = op
        self.who = who
        self.check_values = True  # compare the parameter values across ranks at the next reduction
        self._inventory: _Inventory | None = None
        self._plans: dict[bytes, list[_Bucket]] = {}

    def inventory(self, groups: list[dict[str, Any]]) -> _Inventory:
        inventory = self._inventory
        if inventory is None or not inventory.matches(groups):
            inventory = self._inventory = _Inventory(groups)
            self._plans.clear()
        return inventory

    def reduce(self, groups: list[dict[str, Any]], loss: Any = None, closure: bool = False) -> Any:
        """Average (or sum) the gradients, and the loss of a closure call; return that loss."""
        channel = self.channel
        inventory = self.inventory(groups)
        mask = inventory.mask()
        code, value = _NO_CLOSURE, 0.0
        if closure:
            code, value = _loss_code(loss)
        fields = [_digest(mask + bytes([code])), struct.unpack("<q", struct.pack("<d", value))[0]]
        check_values = self.check_values
        if check_values:
            fields.append(inventory.value_digest())
        rows = channel.allgather_ints(fields)
        if len({row[0] for row in rows}) > 1:
            self._explain_mask(inventory, mask + bytes([code]))
        if check_values:
            if len({row[2] for row in rows}) > 1:
                self._explain_values(inventory)
            self.check_values = False
        if code == _BAD_LOSS:
            raise TypeError(
                f"{self.who}: the closure must return the loss as a number or a 1-element array (or None), "
                f"got {_typename(loss)}"
            )
        if 2 in mask:
            position = mask.index(2)
            raise TypeError(
                f"{self.who}: {inventory.labels[position]} has a sparse gradient; the distributed optimizers "
                "average dense gradients only (call .to_dense() on it)"
            )
        if channel.size > 1:  # alone, the sum and the mean are the gradients themselves
            plan = self._plans.get(mask)
            if plan is None:
                if len(self._plans) >= _MAX_PLANS:
                    self._plans.clear()
                plan = self._plans[mask] = _gradient_plan(inventory, mask)
            for bucket in plan:
                bucket.run(channel, self.op == "mean")
        if code != _LOSS:
            return None if closure else loss
        total = 0.0
        for row in rows:  # in rank order: the same bits on every rank
            total += struct.unpack("<d", struct.pack("<q", row[1]))[0]
        return total / channel.size if self.op == "mean" else total

    def _explain_mask(self, inventory: _Inventory, mask: bytes) -> None:
        everyone: list[bytes] = self.channel.allgather_objects(mask)
        lengths = {len(m) for m in everyone}
        if len(lengths) > 1:
            counts = ", ".join(f"{len(m) - 1} on rank {r}" for r, m in enumerate(everyone))
            raise RuntimeError(f"{self.who}: the optimizer has a different number of parameters per rank ({counts})")
        for position in range(len(mask)):
            kinds: dict[int, list[int]] = {}
            for rank, m in enumerate(everyone):
                kinds.setdefault(m[position], []).append(rank)
            if len(kinds) == 1:
                continue
            if position == len(mask) - 1:
                words = {
                    _NO_CLOSURE: "step() without a closure",
                    _NO_LOSS: "a closure that returned None",
                    _LOSS: "a closure that returned a loss",
                    _BAD_LOSS: "a closure that returned something that is not a loss",
                }
                parts = [f"{words[k]} on {_ranks(r)}" for k, r in sorted(kinds.items())]
                raise RuntimeError(f"{self.who}: the ranks called " + ", ".join(parts))
            words = {0: "no gradient", 1: "a gradient", 2: "a sparse gradient"}
            parts = [f"{words[k]} on {_ranks(r)}" for k, r in sorted(kinds.items(), reverse=True)]
            raise RuntimeError(
                f"{self.who}: {inventory.labels[position]} has " + ", ".join(parts) + "; every rank must compute "
                "the gradients of the same parameters (give a parameter that a rank's data does not reach a "
                "zero gradient)"
            )
        raise RuntimeError(f"{self.who}: the ranks' gradients differ in layout")

    def _explain_values(self, inventory: _Inventory) -> None:
        everyone: list[list[int]] = self.channel.allgather_objects(inventory.value_digests())
        for position in range(len(inventory.params)):
            groups: dict[int, list[int]] = {}
            for rank, digests in enumerate(everyone):
                groups.setdefault(digests[position], []).append(rank)
            if len(groups) > 1:
                sets = " and ".join(_ranks(r) for r in groups.values())
                raise RuntimeError(
                    f"{self.who}: the values of {inventory.labels[position]} differ between {sets} at the first "
                    "step; start every rank from the same values: call "
                    "arrayopt.distributed.broadcast_parameters(params) before training, or load the same "
                    "checkpoint on every rank"
                )
        raise RuntimeError(f"{self.who}: the parameter values differ across ranks")


def _loss_code(loss: Any) -> tuple[int, float]:
    if loss is None:
        return _NO_LOSS, 0.0
    try:
        return _LOSS, float(loss)
    except (TypeError, ValueError):
        return _BAD_LOSS, 0.0


def _averaging_closure(reducer: _Reducer, groups: Callable[[], list[dict[str, Any]]], closure: Any) -> Any:
    if not callable(closure):
        raise TypeError(f"closure must be callable, got {_typename(closure)}")

    def averaged() -> Any:
        return reducer.reduce(groups(), closure(), closure=True)

    return averaged


# -- broadcast_parameters -------------------------------------------------------------------


def _as_parameters(params: Any) -> list[Parameter]:
    if isinstance(params, Parameter):
        return [params]
    if hasattr(params, "parameters") and callable(params.parameters) and not isinstance(params, Optimizer):
        params = params.parameters()
    elif isinstance(params, Mapping):
        params = params.values()
    elif isinstance(params, Optimizer):
        raise TypeError("broadcast_parameters takes Parameters, not an optimizer: pass the optimizer's parameters")
    try:
        items = list(params)
    except TypeError:
        raise TypeError(
            f"params must be a Parameter, a ParameterList or ParameterDict, a dict of Parameters or an iterable of "
            f"Parameters, got {_typename(params)}"
        ) from None
    out = []
    for item in items:
        if isinstance(item, tuple) and len(item) == 2:
            item = item[1]
        if not isinstance(item, Parameter):
            raise TypeError(f"broadcast_parameters takes Parameters, got {_typename(item)} among them")
        out.append(item)
    return out


def broadcast_parameters(params: Any, root: int = 0, comm: Any = None) -> None:
    """Give every rank ``root``'s parameter values, in place.

    Call it on every rank, once before training (unless every rank builds the same
    values anyway), so that data-parallel steps start from the same point. Flat
    storage travels as one message per buffer; separate Parameters are packed into
    one message per array library, device and dtype. The ranks first compare the
    parameters' count, shapes and dtypes; a mismatch raises ValueError on every rank,
    naming the first parameter that differs, and nothing is sent.

    Args:
        params: a :class:`~arrayopt.Parameter`, a ParameterList or ParameterDict, a
            dict of Parameters, or an iterable of Parameters or ``(name, Parameter)``
            pairs.
        root: the rank whose values everyone gets.
        comm: an mpi4py intracommunicator; None means ``MPI.COMM_WORLD``.

    Example:
        >>> import numpy as np, arrayopt
        >>> from mpi4py import MPI
        >>> from arrayopt.distributed import broadcast_parameters
        >>> params = arrayopt.ParameterList([np.full(2, float(MPI.COMM_SELF.rank))])
        >>> broadcast_parameters(params, root=0, comm=MPI.COMM_SELF)
        >>> params[0].data
        array([0., 0.])
    """
    parameters = _as_parameters(params)
    channel = _Channel(comm)
    if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < channel.size:
        raise ValueError(f"root must be a rank of the communicator (0 to {channel.size - 1}), got {root!r}")
    items = [("the number of parameters", str(len(parameters)))]
    items += _parameter_items(parameters, [f"params[{i}]" for i in range(len(parameters))])
    _agree(channel, items, "broadcast_parameters")
    inventory = _Inventory([{"params": parameters}])
    channel.describe(inventory.backends)
    for bucket in _exchange_plan(inventory, [root] * len(inventory.params), channel.size):
        bucket.bcast(channel, root)


# -- moving parameter values --------------------------------------------------------------------


class _Values:
    """Parameter values moved by one collective (a broadcast, or an all-gather by owner rank)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        # (owner, flat buffer, start, stop) or (owner, Parameter); in message order (by owner)
        self.parts: list[tuple[int, Any, int, int]] = []
        self.direct: tuple[FlatBuffer, int, int] | None = None
        self.counts: list[int] = []
        self.staging: Any = None

    def finish(self, size: int) -> None:
        self.parts.sort(key=lambda part: part[0])  # stable: by owner, then in parameter order
        self.counts = [0] * size
        for owner, _, start, stop in self.parts:
            self.counts[owner] += stop - start
        buffers = {id(part[1]) for part in self.parts}
        if len(buffers) == 1 and isinstance(self.parts[0][1], FlatBuffer):
            contiguous = all(a[3] == b[2] for a, b in zip(self.parts, self.parts[1:], strict=False))
            if contiguous:
                self.direct = (self.parts[0][1], self.parts[0][2], self.parts[-1][3])

    def _whole(self) -> Any:
        if self.direct is not None:
            buffer, start, stop = self.direct
            return buffer.data[start:stop]
        xp = self.backend.xp
        if self.staging is None:
            like = self.parts[0][1].data
            self.staging = xp.empty((sum(self.counts),), dtype=like.dtype, device=self.backend.device(like))
        return self.staging

    def _pack(self, staging: Any, rank: int | None) -> None:
        xp = self.backend.xp
        at = 0
        for owner, item, start, stop in self.parts:
            n = stop - start
            if rank is None or owner == rank:
                if isinstance(item, FlatBuffer):
                    staging[at : at + n] = item.data[start:stop]
                else:
                    staging[at : at + n] = xp.reshape(item.data, (n,))
            at += n

    def _unpack(self, staging: Any, rank: int) -> None:
        xp = self.backend.xp
        at = 0
        for owner, item, start, stop in self.parts:
            n = stop - start
            if owner != rank:
                if isinstance(item, FlatBuffer):
                    item.data[start:stop] = staging[at : at + n]
                else:
                    item.data[...] = xp.reshape(staging[at : at + n], item.shape)
            at += n

    def bcast(self, channel: _Channel, root: int) -> None:
        whole = self._whole()
        if self.direct is None and channel.rank == root:
            self._pack(whole, None)
        channel.bcast(whole, self.backend, root)
        if self.direct is None and channel.rank != root:
            self._unpack(whole, -1)

    def allgather(self, channel: _Channel) -> None:
        whole = self._whole()
        if self.direct is None:
            self._pack(whole, channel.rank)
        channel.allgatherv(whole, self.backend, self.counts)
        if self.direct is None:
            self._unpack(whole, channel.rank)


def _exchange_plan(inventory: _Inventory, owners: list[int], size: int) -> list[_Values]:
    """The value messages for ``inventory``'s parameters, ``owners[i]`` sending parameter ``i``."""
    plans: dict[tuple[int, str, str], _Values] = {}
    for position, p in enumerate(inventory.params):
        backend = inventory.backends[position]
        key = (id(backend), str(backend.device(p.data)), str(p.dtype))
        values = plans.get(key)
        if values is None:
            values = plans[key] = _Values(backend)
        flat = p._flat
        if flat is not None:
            buffer, index = flat
            start, stop = buffer.offsets[index], buffer.offsets[index + 1]
            parts = values.parts
            if parts and parts[-1][0] == owners[position] and parts[-1][1] is buffer and parts[-1][3] == start:
                parts[-1] = (parts[-1][0], buffer, parts[-1][2], stop)
            else:
                parts.append((owners[position], buffer, start, stop))
        else:
            values.parts.append((owners[position], p, 0, math.prod(p.shape)))
    for values in plans.values():
        values.finish(size)
    return [v for v in plans.values() if sum(v.counts)]


# -- DistributedOptimizer ------------------------------------------------------------------------


def _forwarded(name: str) -> Any:
    """A property that reads and writes the wrapped optimizer's attribute ``name``."""

    def get(self: "DistributedOptimizer") -> Any:
        return getattr(self.optimizer, name)

    def put(self: "DistributedOptimizer", value: Any) -> None:
        setattr(self.optimizer, name, value)

    return property(get, put, doc=f"The wrapped optimizer's ``{name}``.")


class _OnRanks(Optimizer):
    """What the two distributed optimizers share: the communicator, ``op``, no pickling."""

    _channel: _Channel
    _reducer: _Reducer

    @property
    def comm(self) -> Any:
        """The communicator."""
        return self._channel.comm

    @property
    def op(self) -> str:
        """``"mean"`` or ``"sum"``."""
        return self._reducer.op

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError(
            f"a {type(self).__name__} holds an MPI communicator and cannot be copied or pickled; "
            "save its state_dict() instead (arrayopt.save)"
        )


class DistributedOptimizer(_OnRanks):
    """Data-parallel training with any optimizer: gradients are averaged over the ranks before each step.

    Every rank wraps an optimizer over its own copy of the same parameters (start them
    from the same values: :func:`broadcast_parameters`). ``step()`` first replaces
    every gradient by its mean over the ranks (the sum with ``op="sum"``), then runs
    the wrapped optimizer's step, so every rank takes the same step:

    .. math::

        g \\leftarrow \\frac{1}{R} \\sum_{r=0}^{R-1} g_r

    with one ``Allreduce`` per flat buffer of a :class:`~arrayopt.ParameterList` (or
    ParameterDict) and one per array library, device and dtype for separate
    Parameters (packed into one buffer), never one per array.

    With a closure (``step(closure)``, required by :class:`~arrayopt.LBFGS`), every
    closure call is followed by the averaging of its gradients *and of the loss it
    returns*; the wrapped optimizer sees the averaged loss (a Python float), so every
    rank takes the same line-search decisions (torch's LBFGS under DDP averages the
    gradients only, and ranks can decide differently and hang: pytorch#30439).
    ``step`` returns that averaged loss.

    Everything else is the wrapped optimizer's own: ``param_groups``, ``state``,
    ``defaults``, ``zero_grad``, ``state_dict`` and ``load_state_dict`` (the same
    dicts, so a checkpoint of a DistributedOptimizer loads into the plain optimizer and
    back), ``add_param_group``, the step hooks (registered on either, they run once,
    on the averaged gradients), ``skip_nonfinite``, and LR schedulers built on the
    wrapper. Attributes it does not have are looked up on the wrapped optimizer.

    Collective calls, so every rank must call ``step``, ``add_param_group`` and the
    constructor together. The ranks check that they agree, and raise the same error on
    every rank instead of hanging:

    * at construction (and in ``add_param_group``): the number of param groups and
      parameters, every shape and dtype, and the group options: ValueError naming the
      first difference;
    * at every step, before any gradient is sent: which parameters have a gradient,
      and whether the closure returned a loss: RuntimeError naming the parameter;
    * at the first step (and the first after ``load_state_dict``): the parameter
      values, bit for bit: RuntimeError naming the first parameter that differs.

    Sparse gradients are refused (TypeError naming the parameter, on every rank).
    Gradients are averaged in place: a separate Parameter's gradient array is
    overwritten with the mean.

    Args:
        optimizer: the arrayopt optimizer to wrap, built on this rank's parameters.
        comm: an mpi4py intracommunicator; None means ``MPI.COMM_WORLD``.
        op: ``"mean"`` (the default: each rank's loss is the mean over its share, and
            the shares are equal) or ``"sum"`` (each rank's loss is its share of one
            global total, e.g. divided by the total number of samples).

    Example:
        >>> import numpy as np, arrayopt
        >>> from mpi4py import MPI
        >>> from arrayopt.distributed import DistributedOptimizer
        >>> params = arrayopt.ParameterList([np.zeros(2)])
        >>> opt = DistributedOptimizer(arrayopt.Adam(params, lr=0.1), comm=MPI.COMM_SELF)
        >>> params[0].grad = np.array([1.0, -1.0])     # this rank's gradient
        >>> opt.step()                                  # averaged over the ranks, then Adam
        >>> params[0].data
        array([-0.1,  0.1])
        >>> opt.state_dict()["state"][0]["step"]
        1.0
    """

    def __init__(self, optimizer: Optimizer, comm: Any = None, op: str = "mean") -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be an arrayopt optimizer, got {_typename(optimizer)}")
        if isinstance(optimizer, (DistributedOptimizer, ZeroRedundancyOptimizer)):
            raise TypeError(f"optimizer is already a {type(optimizer).__name__}; wrap the plain optimizer")
        channel = _Channel(comm)
        reducer = _Reducer(channel, op, "DistributedOptimizer")
        _agree(channel, _layout(optimizer.param_groups), "DistributedOptimizer")
        self.__dict__["optimizer"] = optimizer
        self._channel = channel
        self._reducer = reducer
        channel.describe(get_backend(p.data) for g in optimizer.param_groups for p in g["params"])

    optimizer: Optimizer  #: the wrapped optimizer

    # -- the wrapped optimizer's attributes ------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        optimizer = self.__dict__.get("optimizer")
        if optimizer is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(optimizer, name)

    param_groups = _forwarded("param_groups")
    state = _forwarded("state")
    defaults = _forwarded("defaults")
    skip_nonfinite = _forwarded("skip_nonfinite")
    skipped_steps = _forwarded("skipped_steps")
    _optimizer_step_pre_hooks = _forwarded("_optimizer_step_pre_hooks")
    _optimizer_step_post_hooks = _forwarded("_optimizer_step_post_hooks")
    _optimizer_state_dict_pre_hooks = _forwarded("_optimizer_state_dict_pre_hooks")
    _optimizer_state_dict_post_hooks = _forwarded("_optimizer_state_dict_post_hooks")
    _optimizer_load_state_dict_pre_hooks = _forwarded("_optimizer_load_state_dict_pre_hooks")
    _optimizer_load_state_dict_post_hooks = _forwarded("_optimizer_load_state_dict_post_hooks")

    @property
    def _state_dict_class(self) -> type:
        """The class whose state dict this is (checkpoints record it), the wrapped optimizer's."""
        return type(self.optimizer)

    # -- stepping ------------------------------------------------------------------------

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Average the gradients over the ranks, then step the wrapped optimizer.

        Args:
            closure: optional; recomputes this rank's loss and gradients. Each call's
                gradients and loss are averaged over the ranks before the wrapped
                optimizer sees them.

        Returns:
            The wrapped optimizer's result: with a closure, the averaged loss of its
            first call (a float; None if the closure returns None).
        """
        if closure is None:
            self._reducer.reduce(self.optimizer.param_groups)
            return self.optimizer.step()
        return self.optimizer.step(_averaging_closure(self._reducer, lambda: self.optimizer.param_groups, closure))

    # The wrapped optimizer's step runs the step hooks (once, on the averaged gradients).
    step._arrayopt_hooked = True  # type: ignore[attr-defined]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The wrapped optimizer's ``zero_grad`` (no communication).

        Args:
            set_to_none: as :meth:`arrayopt.Optimizer.zero_grad`.
        """
        self.optimizer.zero_grad(set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group to the wrapped optimizer, after checking that every rank adds the same.

        Args:
            param_group: as :meth:`arrayopt.Optimizer.add_param_group`.
        """
        if "optimizer" not in self.__dict__:
            raise RuntimeError("DistributedOptimizer is not built yet")
        checked = self.optimizer._checked_group(param_group)
        first = len(self.optimizer.param_groups)
        _agree(self._channel, _layout([checked], first)[1:], "DistributedOptimizer.add_param_group")
        self.optimizer.add_param_group(param_group)

    def state_dict(self) -> StateDict:
        """The wrapped optimizer's state dict (the same on every rank)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: StateDict) -> None:
        """Load into the wrapped optimizer; call it on every rank with the same dict.

        The next step compares the parameter values across ranks again.

        Args:
            state_dict: as :meth:`arrayopt.Optimizer.load_state_dict`.
        """
        self.optimizer.load_state_dict(state_dict)
        self._reducer.check_values = True

    def __repr__(self) -> str:
        return f"DistributedOptimizer({self.optimizer!r}, ranks={self._channel.size}, op={self.op!r})"


# -- ZeroRedundancyOptimizer ----------------------------------------------------------------------


def _partition(sizes: list[int], loads: list[int]) -> list[int]:
    """Owners for consecutive items of ``sizes`` (bytes): contiguous in rank order, the largest load smallest.

    ``loads`` are what the ranks hold already. The smallest feasible largest load is
    found by bisection; each rank, in order, then takes items while it stays under it.
    """
    if not sizes:
        return []

    def fill(limit: int) -> list[int] | None:
        owners = []
        rank, load = 0, loads[0]
        for size in sizes:
            while load + size > limit:
                rank += 1
                if rank == len(loads):
                    return None
                load = loads[rank]
            owners.append(rank)
            load += size
        return owners

    low, high = max(loads), max(loads) + sum(sizes)  # fill(high) always succeeds
    while low < high:
        middle = (low + high) // 2
        if fill(middle) is None:
            low = middle + 1
        else:
            high = middle
    owners = fill(high)
    assert owners is not None
    return owners


def _shard_buffer(parent: FlatBuffer, lo: int, hi: int) -> FlatBuffer:
    """A FlatBuffer of members ``lo .. hi-1`` of ``parent`` that shares its values.

    Its members are new Parameters over the parent's memory, so a local optimizer given
    them lays its flat state out over this stretch only. Its gradient storage and flags
    are tied to the parent's by :func:`_sync_shard`.
    """
    shard = FlatBuffer.__new__(FlatBuffer)
    base, stop = parent.offsets[lo], parent.offsets[hi]
    shard.backend = parent.backend
    shard.shapes = parent.shapes[lo:hi]
    shard.offsets = tuple(o - base for o in parent.offsets[lo : hi + 1])
    shard._dtype = parent.dtype
    shard._device = parent._device
    shard._companions = 1
    shard.data = parent.data[base:stop]
    shard._views = shard.member_views(shard.data)
    shard._grad = None
    shard._grad_views = []
    shard.has_grad = bytearray(hi - lo)
    return shard


class _Shard:
    """One stretch of a parent flat buffer owned by this rank, and its local stand-ins."""

    __slots__ = ("buffer", "hi", "lo", "parent")

    def __init__(self, parent: FlatBuffer, lo: int, hi: int) -> None:
        self.parent, self.lo, self.hi = parent, lo, hi
        self.buffer = _shard_buffer(parent, lo, hi)

    def sync(self) -> None:
        """Point the stand-ins' gradients at the parent's (flags copied, storage shared)."""
        parent, shard = self.parent, self.buffer
        raw = parent.raw_grad
        if raw is not None and shard._grad is None:
            shard._grad = raw[parent.offsets[self.lo] : parent.offsets[self.hi]]
            shard._grad_views = shard.member_views(shard._grad)
        shard.has_grad[:] = parent.has_grad[self.lo : self.hi]


class ZeroRedundancyOptimizer(_OnRanks):
    """Each rank keeps the optimizer state of a shard of the parameters (torch's ZeRO stage 1).

    The parameters are split into ``R`` shards of whole parameters, each a run of
    consecutive parameters, in rank order, with the largest shard (in bytes) as small
    as such a split allows (it exceeds ``1/R`` of the total by less than the largest
    parameter). Consecutive shards keep flat storage in one piece: the local optimizer
    updates its shard of a ParameterList in one pass, and the values travel with no
    copy.
    Each rank's local optimizer, ``optimizer_class(shard, **defaults)`` (attribute
    ``optim``), holds the state of its shard only: for Adam, each rank keeps about
    ``1/R`` of the ``exp_avg`` and ``exp_avg_sq`` arrays. ``step()``:

    1. averages (or sums, ``op="sum"``) the gradients over the ranks, as
       :class:`DistributedOptimizer` does (torch's ZeRO leaves that to DDP);
    2. steps the local shard;
    3. sends each shard's new values to every rank (one ``Allgatherv`` per flat buffer,
       or per array library, device and dtype for separate Parameters).

    ``param_groups`` hold every parameter and every option (change the learning rate
    there, or with a scheduler); ``state`` maps the parameters of this rank's shard to
    their state. A state dict for the whole model, loadable by a single-process
    ``optimizer_class`` (and so by ``arrayopt.save``/``load_into``), is gathered on one
    rank: call ``consolidate_state_dict(to=0)`` on every rank, then ``state_dict()``
    on rank 0 (elsewhere it raises); its arrays are NumPy arrays. ``load_state_dict``
    takes a whole-model state dict on every rank (saved by any number of ranks, or by
    a single process) and keeps each rank's shard of it.

    Shards follow torch's rule for param groups added later: ``add_param_group``
    splits the new group over the ranks, favouring the least loaded, and leaves the
    existing shards where they are. L-BFGS, whose step couples every parameter, cannot
    be sharded: use ``DistributedOptimizer(LBFGS(...))``. Agreement checks and errors
    as for :class:`DistributedOptimizer`.

    Args:
        params: Parameters or param groups, as for any optimizer (the same on every rank).
        optimizer_class: the optimizer class each rank builds for its shard.
        comm: an mpi4py intracommunicator; None means ``MPI.COMM_WORLD``.
        op: ``"mean"`` or ``"sum"``, as for :class:`DistributedOptimizer`.
        defaults: the optimizer's arguments (``lr=...``, ...).

    Example:
        >>> import numpy as np, arrayopt
        >>> from mpi4py import MPI
        >>> from arrayopt.distributed import ZeroRedundancyOptimizer
        >>> params = arrayopt.ParameterList([np.zeros(2), np.zeros(3)])
        >>> opt = ZeroRedundancyOptimizer(params, arrayopt.Adam, comm=MPI.COMM_SELF, lr=0.1)
        >>> params.flat_grad = np.ones(5)
        >>> opt.step()
        >>> params.flat_data
        array([-0.1, -0.1, -0.1, -0.1, -0.1])
        >>> opt.consolidate_state_dict(to=0)
        >>> single = arrayopt.Adam(arrayopt.ParameterList([np.zeros(2), np.zeros(3)]).parameters(), lr=0.1)
        >>> single.load_state_dict(opt.state_dict())
        >>> single.state_dict()["state"][1]["exp_avg"]
        array([0.1, 0.1, 0.1])
    """

    def __init__(
        self, params: Any, optimizer_class: type[Optimizer], comm: Any = None, op: str = "mean", **defaults: Any
    ) -> None:
        from arrayopt.optimizers import LBFGS

        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
            raise TypeError(f"optimizer_class must be an arrayopt optimizer class, got {optimizer_class!r}")
        if issubclass(optimizer_class, (LBFGS, DistributedOptimizer, ZeroRedundancyOptimizer)):
            raise TypeError(
                f"ZeroRedundancyOptimizer cannot shard {optimizer_class.__name__}"
                + (
                    ": its step couples every parameter; use DistributedOptimizer(LBFGS(...))"
                    if issubclass(optimizer_class, LBFGS)
                    else ""
                )
            )
        channel = _Channel(comm)
        self._channel = channel
        self._reducer = _Reducer(channel, op, "ZeroRedundancyOptimizer")
        self._optimizer_class = optimizer_class
        self._owners: dict[Parameter, int] = {}
        self._loads = [0] * channel.size
        self._local: dict[Parameter, Parameter] = {}  # original -> the local optimizer's parameter
        self._shards: list[_Shard] = []
        self._values: list[_Values] | None = None
        self._consolidated: dict[Any, Any] | None = None
        self.__dict__["optim"] = None
        super().__init__(params, dict(defaults))
        _agree(channel, _layout(self.param_groups), "ZeroRedundancyOptimizer")
        local_groups = [self._local_group(group) for group in self.param_groups]
        optim = optimizer_class(local_groups, **defaults)
        self.__dict__["optim"] = optim
        self.defaults = optim.defaults
        for group, local in zip(self.param_groups, optim.param_groups, strict=True):
            _copy_options(local, group)
        channel.describe(get_backend(p.data) for g in self.param_groups for p in g["params"])

    optim: Optimizer  #: this rank's optimizer, over its shard

    # -- shards ----------------------------------------------------------------------------

    def _local_group(self, group: dict[str, Any]) -> dict[str, Any]:
        """The local optimizer's group for ``group``: this rank's parameters (flat ones as stand-ins)."""
        rank = self._channel.rank
        local: dict[str, Any] = {k: v for k, v in group.items() if k not in ("params", "param_names")}
        names = group.get("param_names")
        params: list[Parameter] = []
        local_names: list[str] = []
        run: list[tuple[int, Parameter]] = []

        def flush() -> None:
            if not run:
                return
            buffer = run[0][1]._flat[0]
            shard = _Shard(buffer, run[0][1]._flat[1], run[-1][1]._flat[1] + 1)
            self._shards.append(shard)
            for k, (_, p) in enumerate(run):
                stand_in = Parameter._flat_member(shard.buffer, k, p.name)
                self._local[p] = stand_in
                params.append(stand_in)
            run.clear()

        for i, p in enumerate(group["params"]):
            if self._owners[p] != rank or p in self._local:
                continue
            if names is not None:
                local_names.append(names[i])
            flat = p._flat
            if flat is None:
                flush()
                self._local[p] = p
                params.append(p)
                continue
            if run and not (run[-1][1]._flat[0] is flat[0] and run[-1][1]._flat[1] + 1 == flat[1]):
                flush()
            run.append((i, p))
        flush()
        local["params"] = params
        if names is not None:
            local["param_names"] = local_names
        return local

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group, split over the ranks (existing shards stay); call it on every rank.

        Args:
            param_group: as :meth:`arrayopt.Optimizer.add_param_group`.
        """
        group = self._checked_group(param_group)
        optim = self.__dict__.get("optim")
        if optim is not None:
            _agree(self._channel, _layout([group], len(self.param_groups))[1:], "ZeroRedundancyOptimizer")
        new = [p for p in dict.fromkeys(group["params"]) if p not in self._owners]
        sizes = [math.prod(p.shape) * _itemsize(p) for p in new]
        owners = _partition(sizes, self._loads)
        if optim is not None:
            saved = (dict(self._owners), list(self._loads), dict(self._local), list(self._shards))
            self._own(new, owners, sizes)
            try:
                local = self._local_group(group)
                optim.add_param_group(local)
            except BaseException:
                self._owners, self._loads, self._local, self._shards = saved
                raise
            _copy_options(local, group)
        else:
            self._own(new, owners, sizes)
        param_group.update(group)
        self.param_groups.append(param_group)
        self._values = None

    def _own(self, params: list[Parameter], owners: list[int], sizes: list[int]) -> None:
        for p, owner, size in zip(params, owners, sizes, strict=True):
            self._owners[p] = owner
            self._loads[owner] += size

    @property
    def _state_dict_class(self) -> type:
        """The class whose state dict :meth:`state_dict` gives (checkpoints record it)."""
        return self._optimizer_class

    @property
    def shard(self) -> list[Parameter]:
        """The parameters whose state this rank keeps, in order."""
        rank = self._channel.rank
        params, _ = _params_of(self.param_groups)
        return [p for p in params if self._owners[p] == rank]

    def owner(self, param: Parameter) -> int:
        """The rank that keeps ``param``'s state and steps it.

        Args:
            param: one of the optimizer's Parameters.
        """
        try:
            return self._owners[param]
        except (KeyError, TypeError):
            raise KeyError(f"{_typename(param)} is not a parameter of this optimizer") from None

    @property  # type: ignore[override]
    def state(self) -> dict[Parameter, Any]:
        """This rank's state, each parameter of its shard mapped to its state dict."""
        optim = self.__dict__.get("optim")
        if optim is None:
            return self.__dict__.setdefault("_early_state", {})  # type: ignore[no-any-return]
        local_state = optim.state
        return {p: local_state[q] for p, q in self._local.items() if q in local_state}

    @state.setter
    def state(self, value: Any) -> None:
        optim = self.__dict__.get("optim")
        if optim is None:
            return  # the base constructor's empty state: the local optimizer keeps it
        state = type(optim.state)(dict)
        for p, s in dict(value).items():
            state[self._local.get(p, p)] = s
        optim.state = state

    # -- stepping ------------------------------------------------------------------------

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Average the gradients, step this rank's shard, and share the new values.

        Args:
            closure: optional; recomputes this rank's loss and gradients (its gradients
                and loss are averaged over the ranks).

        Returns:
            With a closure, its averaged loss (a float); else None.
        """
        if closure is None:
            self._reducer.reduce(self.param_groups)
            return _zero_step(self)
        return _zero_step(self, _averaging_closure(self._reducer, lambda: self.param_groups, closure))

    # The step hooks and the non-finite guard run after the averaging (see _zero_step).
    step._arrayopt_hooked = True  # type: ignore[attr-defined]

    def _step_shard(self, closure: Callable[[], Any] | None) -> Any:
        optim = self.optim
        for group, local in zip(self.param_groups, optim.param_groups, strict=True):
            _copy_options(group, local)
        for shard in self._shards:
            shard.sync()
        optim.__dict__["_in_step"] = True  # its own step hooks and guard do not run: ours did
        try:
            loss = optim.step(closure) if closure is not None else optim.step()
        finally:
            optim.__dict__["_in_step"] = False
        for group, local in zip(self.param_groups, optim.param_groups, strict=True):
            _copy_options(local, group)
        if self._values is None:
            inventory = _Inventory(self.param_groups)
            owners = [self._owners[p] for p in inventory.params]
            self._values = _exchange_plan(inventory, owners, self._channel.size)
        for values in self._values:
            values.allgather(self._channel)
        return loss

    # -- state dicts ---------------------------------------------------------------------

    def consolidate_state_dict(self, to: int = 0) -> None:
        """Gather the whole state on rank ``to`` (a collective: call it on every rank).

        Afterwards ``state_dict()`` on rank ``to`` gives the state dict of the whole
        model; on the other ranks the consolidated copy is dropped.

        Args:
            to: the rank that receives the state.
        """
        channel = self._channel
        if isinstance(to, bool) or not isinstance(to, int) or not 0 <= to < channel.size:
            raise ValueError(f"to must be a rank of the communicator (0 to {channel.size - 1}), got {to!r}")
        params, _ = _params_of(self.param_groups)
        index = {id(p): i for i, p in enumerate(params)}
        local_state = self.optim.state
        mine: dict[int, Any] = {}
        for p, q in self._local.items():
            s = local_state.get(q)
            if s:
                mine[index[id(p)]] = {k: _to_host(v) for k, v in s.items()}
        gathered = channel.comm.gather(mine, root=to)
        if channel.rank != to:
            self._consolidated = None
            return
        state: dict[int, Any] = {}
        for part in gathered:
            state.update(part)
        self._consolidated = dict(sorted(state.items()))

    def state_dict(self) -> StateDict:
        """The whole model's state dict, on the rank that ``consolidate_state_dict`` gathered it on.

        Laid out as a single-process ``optimizer_class``'s (parameters numbered across
        the groups); its arrays are NumPy arrays.

        Raises:
            RuntimeError: on a rank holding no consolidated state.
        """
        if self._consolidated is None:
            raise RuntimeError(
                f"ZeroRedundancyOptimizer: the optimizer state is not consolidated on rank {self._channel.rank}; "
                f"call consolidate_state_dict(to={self._channel.rank}) on every rank first"
            )
        params, _ = _params_of(self.param_groups)
        return self._packed_state_dict({params[k]: state for k, state in self._consolidated.items()})

    def load_state_dict(self, state_dict: StateDict) -> None:
        """Load a whole-model state dict, keeping this rank's shard; call it on every rank with the same dict.

        It may come from any number of ranks or from a single-process
        ``optimizer_class``. Everything is checked (as ``optimizer_class`` checks it)
        before anything changes.

        Args:
            state_dict: as :meth:`arrayopt.Optimizer.load_state_dict`.
        """
        from arrayopt._state_check import check_state_dict

        state_dict = self._pre_load(state_dict)
        probe = object.__new__(self._optimizer_class)
        probe.__dict__.update(param_groups=self.param_groups, defaults=self.defaults)
        check_state_dict(probe, state_dict)
        saved_groups = state_dict["param_groups"]
        saved_index = {}
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            for k, p in zip(saved["params"], group["params"], strict=True):
                saved_index[id(p)] = k
        optim = self.optim
        local_index: dict[int, int] = {}
        local_groups = []
        for saved, local in zip(saved_groups, optim.param_groups, strict=True):
            packed = {k: v for k, v in saved.items() if k not in ("params", "param_names")}
            packed["params"] = [local_index.setdefault(id(q), len(local_index)) for q in local["params"]]
            if "param_names" in local:
                packed["param_names"] = local["param_names"]
            local_groups.append(packed)
        local_state = {}
        for p, q in self._local.items():
            k = saved_index[id(p)]
            if k in state_dict["state"]:
                local_state[local_index[id(q)]] = state_dict["state"][k]
        optim.load_state_dict({"state": local_state, "param_groups": local_groups})
        new_groups = []
        for group, local in zip(self.param_groups, optim.param_groups, strict=True):
            new_group = {k: v for k, v in local.items() if k not in ("params", "param_names")}
            new_group["params"] = group["params"]
            if "param_names" in group:
                new_group["param_names"] = group["param_names"]
            new_groups.append(new_group)
        self.param_groups = new_groups
        self._values = None
        self._reducer.check_values = True
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def __repr__(self) -> str:
        text = (
            super()
            .__repr__()
            .replace("ZeroRedundancyOptimizer (", f"ZeroRedundancyOptimizer[{self._optimizer_class.__name__}] (", 1)
        )
        return text


def _zero_step_body(self: ZeroRedundancyOptimizer, closure: Callable[[], Any] | None = None) -> Any:
    return self._step_shard(closure)


# The step hooks and the non-finite guard, around the shard's step: they see the averaged gradients.
_zero_step = with_step_hooks(_zero_step_body)


def _copy_options(source: dict[str, Any], target: dict[str, Any]) -> None:
    for key, value in source.items():
        if key not in ("params", "param_names"):
            target[key] = value


def _itemsize(p: Parameter) -> int:
    size = getattr(p.dtype, "itemsize", None)
    return int(size) if isinstance(size, int) else 8


def _to_host(value: Any) -> Any:
    """A state value for a consolidated state dict: arrays as NumPy copies, numbers as they are."""
    from arrayopt.backends import is_array

    if is_array(value):
        return get_backend(value).to_numpy(value).copy()
    if isinstance(value, dict):
        return {k: _to_host(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_host(v) for v in value)
    return value
