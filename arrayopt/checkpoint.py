"""Checkpoints: optimizers, schedulers, averaged models and parameters in one file.

>>> import io
>>> import numpy as np
>>> import arrayopt
>>> w = arrayopt.Parameter(np.array([1.0, -2.0]), name="w")
>>> opt = arrayopt.Adam([w], lr=0.1)
>>> w.grad = 2 * w.data
>>> opt.step()
>>> buffer = io.BytesIO()                 # a path is the usual target
>>> arrayopt.save(buffer, optimizer=opt, params=[w], epoch=1)
>>> loaded = arrayopt.load(buffer)
>>> sorted(loaded), loaded["epoch"], loaded["optimizer"]["state"][0]["step"]
(['epoch', 'optimizer', 'params'], 1, 1.0)
>>> fresh = arrayopt.Adam([arrayopt.Parameter(np.zeros(2))])
>>> fresh.load_state_dict(loaded["optimizer"])

``save(path, **objects)`` stores, for each keyword, an object's ``state_dict()``
(optimizers, LR schedulers, averaged models: anything with ``state_dict``), a
Parameter's array, or a plain value (numbers, strings, None, arrays, Parameters, and
lists, tuples and dicts of them). ``load(path)`` gives the same names back with plain
values: state dicts ready for ``load_state_dict``, arrays as NumPy arrays or, with
``xp=``, arrays of another library. ``load_into(path, optimizer=opt, ...)`` checks
everything it is given and then loads it all, or nothing.

The file (format version 1) is a zip holding ``arrayopt.json`` (the structure, as
typed JSON) and one ``.npy`` file per array; see :mod:`arrayopt.backends.archive`.
Nothing in it is pickled, so loading a file never runs code from it. The JSON keeps
what plain JSON would lose: ints apart from floats, non-finite floats, tuples apart
from lists, int dict keys apart from str keys (optimizer state is keyed by int),
``collections.Counter`` (torch's MultiStepLR milestones), NumPy scalars, and every
array's dtype and shape. Functions, lambdas and other code are never saved: as in
torch, schedulers leave them out of ``state_dict()``, and a state holding one is
refused, naming where it is.

Writing goes to a temporary file in the target's folder, which is flushed, synced
and renamed over the target, so a crash leaves either the old checkpoint or the new
one, never a mix; the next save to the same path removes temporary files left by
saves that were killed (never one a live save is writing). A damaged, truncated,
forged or foreign file raises ValueError naming the file (and the member at fault)
before more memory than its contents justify is taken.
"""

import contextlib
import copy
import gc
import importlib
import json
import math
import os
import re
import secrets
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from arrayopt._validate import typename as _typename
from arrayopt.backends import Backend, get_backend, is_array
from arrayopt.backends.archive import (
    ArchiveReader,
    host_array,
    host_scalar,
    is_host_scalar,
    write_archive,
)
from arrayopt.flat import ParameterDict, ParameterList
from arrayopt.parameter import Parameter

try:
    import fcntl

    _LOCKING = True
except ImportError:  # Windows
    _LOCKING = False

__all__ = ["FORMAT", "VERSION", "load", "load_into", "save"]

#: the ``format`` field of every checkpoint's metadata
FORMAT = "arrayopt-checkpoint"
#: the newest format version this arrayopt writes and reads
VERSION = 1

_MAX_DEPTH = 100
_FRESH_SECONDS = 60.0  # Windows only: a temporary file this recent may belong to a save about to rename it
_PathOrFile = str | os.PathLike[str] | IO[bytes]


def _a(obj: Any) -> str:
    """``"a <type>"`` or ``"an <type>"`` for ``obj``'s type name."""
    name = _typename(obj)
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


# -- saving ---------------------------------------------------------------------------


def save(path: _PathOrFile, /, **objects: Any) -> None:
    """Save ``objects`` (by keyword) to one checkpoint file, atomically.

    Args:
        path: the file to write (replaced atomically), or a binary file object open
            for writing (written in place, without the atomic rename).
        objects: what to save, each under its keyword:

            * an object with a ``state_dict()`` method (optimizer, LR scheduler,
              averaged model): its state dict, and its class name;
            * anything else: saved as it is. Parameters are saved as their arrays
              (gradients are not saved); arrays of any library are saved with their
              dtype; None, bool, int, float (NaN and infinities too), complex and
              str as themselves; lists, tuples, dicts (keys: str, int, float, bool,
              None or tuples of them) and ``Counter`` recursively. A
              :class:`~arrayopt.ParameterList` is saved as the list of its arrays, a
              :class:`~arrayopt.ParameterDict` as the dict of its arrays by name.

    Raises:
        TypeError: for anything else (functions, lambdas, arbitrary objects, arrays
            of non-numeric dtypes), naming where it is. Nothing is written then.
        ValueError: for what loading would refuse: a string with a lone surrogate,
            an optimizer's state dict its ``load_state_dict`` refuses, more than
            ``MAX_ARRAYS`` arrays or metadata over ``MAX_METADATA_BYTES`` (see
            :mod:`arrayopt.backends.archive`). Nothing is written then either.

    Example:
        >>> import io, numpy as np, arrayopt
        >>> arrayopt.save(io.BytesIO(), scheduler={"last_epoch": 3, "lr_lambdas": [lambda e: 0.9]})
        Traceback (most recent call last):
        ...
        TypeError: scheduler['lr_lambdas'][0]: cannot save a function (<lambda>)...
    """
    from arrayopt import __version__

    if not objects:
        raise TypeError("save() needs something to save, e.g. arrayopt.save(path, optimizer=opt)")
    encoder = _Encoder()
    entries = [encoder.entry(name, obj) for name, obj in objects.items()]
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "written_by": f"arrayopt {__version__}",
        "arrays": [{"dtype": host.dtype.name, "shape": list(host.shape)} for host in encoder.arrays],
        "objects": entries,
    }
    payload = json.dumps(meta, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    if isinstance(path, (str, os.PathLike)):
        _write_atomically(os.fspath(path), lambda f: write_archive(f, payload, encoder.arrays))
    elif hasattr(path, "write"):
        write_archive(path, payload, encoder.arrays)
    else:
        raise TypeError(f"path must be a file path or a binary file object, but got {_typename(path)}")


def _write_atomically(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write through ``write`` to a temporary file next to ``path``, sync it, rename it over ``path``.

    The temporary file is ``.NAME.<12 hex digits>.tmp``. A writer holds a lock on it
    until it is renamed (POSIX), so once the rename is done the temporary files of
    ``path`` that nobody holds are orphans of saves that were killed, and are removed.
    An existing file's permission bits are kept (a 0600 checkpoint stays 0600).
    """
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    fd, temporary = _locked_temporary(folder, base)
    try:
        with contextlib.suppress(OSError, AttributeError):  # no fchmod on Windows; a new file keeps the umask's
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            if _LOCKING:  # rename while the lock is held; Windows cannot rename an open file
                os.replace(temporary, path)
        if not _LOCKING:
            os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    # Make the rename itself durable (POSIX); not possible, nor needed, everywhere.
    with contextlib.suppress(OSError, AttributeError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    _remove_orphans(folder, base)


def _locked_temporary(folder: str, base: str) -> tuple[int, str]:
    """A new temporary file for ``base`` in ``folder``, open for writing and (POSIX) locked."""
    while True:
        temporary = os.path.join(folder, f".{base}.{secrets.token_hex(6)}.tmp")
        # os.open with mode 0o666 gives the permissions a plain open() would (umask applies).
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        if not _LOCKING:
            return fd, temporary
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Another save's cleanup may have taken the file for an orphan between open and lock.
            if _same_file(os.stat(temporary), os.fstat(fd)):
                return fd, temporary
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        os.close(fd)


def _remove_orphans(folder: str, base: str) -> None:
    """Remove the temporary files of ``base`` in ``folder`` that no live writer holds."""
    pattern = re.compile(re.escape(f".{base}.") + r"[0-9a-f]{12}\.tmp")
    with contextlib.suppress(OSError):
        entries = [entry.name for entry in os.scandir(folder) if pattern.fullmatch(entry.name)]
        for name in entries:
            with contextlib.suppress(OSError):
                _remove_if_orphan(os.path.join(folder, name))


def _remove_if_orphan(temporary: str) -> None:
    if not _LOCKING:
        # Windows: a file being written cannot be removed; one just closed is about to be renamed.
        if time.time() - os.stat(temporary).st_mtime > _FRESH_SECONDS:
            os.unlink(temporary)
        return
    fd = os.open(temporary, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # OSError: a live writer holds it
        if _same_file(os.stat(temporary), os.fstat(fd)):
            os.unlink(temporary)
    finally:
        os.close(fd)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class _Encoder:
    """Turns values into typed JSON, collecting their arrays (as host arrays) on the way."""

    def __init__(self) -> None:
        self.arrays: list[Any] = []
        self._active: set[int] = set()

    def entry(self, name: str, obj: Any) -> dict[str, Any]:
        _check_text(name, "the name of an entry")
        state_dict = getattr(obj, "state_dict", None)
        if callable(state_dict) and not isinstance(obj, Parameter) and not is_array(obj):
            value = state_dict()
            _check_loadable(obj, value, name)
            return {
                "name": name,
                "kind": "state_dict",
                "class": _check_text(_state_dict_class(obj), f"{name}: the class name"),
                "value": self.value(value, name, 0),
            }
        return {"name": name, "kind": "value", "value": self.value(obj, name, 0)}

    def value(self, value: Any, path: str, depth: int) -> Any:
        kind = type(value)
        if kind is str:
            return _check_text(value, path)
        if value is None or kind is bool or kind is int:
            return value
        if kind is float:
            return value if math.isfinite(value) else {"float": repr(value)}
        if isinstance(value, Parameter):
            value = value.data
        if is_array(value):
            return self._array(value, path)
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return self.value(float(value), path, depth)
        if isinstance(value, str):
            return _check_text(str(value), path)
        if isinstance(value, complex):
            return {"complex": [self.value(float(value.real), path, depth), self.value(float(value.imag), path, depth)]}
        if isinstance(value, ParameterList):  # saved as the list of its arrays
            value = list(value)
        elif isinstance(value, ParameterDict):  # saved as the dict of its arrays, by name
            value = dict(value.named_parameters())
        if isinstance(value, (list, tuple, dict)):
            return self._container(value, path, depth)
        if callable(value):
            what = getattr(value, "__qualname__", None) or _typename(value)
            raise TypeError(
                f"{path}: cannot save a function ({what}): a checkpoint holds data, never code. As in torch, "
                "lambdas and functions are not saved (schedulers leave them out of state_dict()); "
                "recreate them when you rebuild the object"
            )
        raise TypeError(
            f"{path}: cannot save {_a(value)}; a checkpoint holds None, bool, int, float, complex, str, "
            "arrays, Parameters, and lists, tuples, dicts and Counters of them"
        )

    def _array(self, value: Any, path: str) -> dict[str, int]:
        try:
            host = host_array(value, get_backend(value))
        except TypeError as exc:
            raise TypeError(f"{path}: {exc}") from None
        self.arrays.append(host)
        return {"scalar" if is_host_scalar(value) else "array": len(self.arrays) - 1}

    def _container(self, value: Any, path: str, depth: int) -> dict[str, Any]:
        if id(value) in self._active:
            raise ValueError(f"{path}: the value contains itself and cannot be saved")
        if depth >= _MAX_DEPTH:
            raise ValueError(f"{path}: nested more than {_MAX_DEPTH} levels deep")
        self._active.add(id(value))
        try:
            if isinstance(value, dict):
                pairs = [[self._key(k, path), self.value(v, f"{path}[{k!r}]", depth + 1)] for k, v in value.items()]
                return {"counter" if isinstance(value, Counter) else "dict": pairs}
            items = [self.value(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
            return {"tuple" if isinstance(value, tuple) else "list": items}
        finally:
            self._active.discard(id(value))

    def _key(self, key: Any, path: str) -> Any:
        if not _savable_key(key):
            raise TypeError(
                f"{path}: the dict key {key!r} ({_typename(key)}) cannot be saved; "
                "keys must be str, int, float, bool, None or tuples of them"
            )
        return self.value(key, path, 0)


def _check_loadable(obj: Any, state_dict: Any, name: str) -> None:
    """Refuse to save an optimizer's state dict that its ``load_state_dict`` would refuse."""
    from arrayopt._state_check import check_state_dict
    from arrayopt.optimizer import Optimizer

    if isinstance(obj, Optimizer) and not obj._optimizer_load_state_dict_pre_hooks:
        try:
            check_state_dict(obj, state_dict)
        except (TypeError, ValueError, KeyError) as exc:
            message = exc.args[0] if exc.args else str(exc)
            raise type(exc)(f"{name}: this state dict would not load back, so it is not saved: {message}") from None


def _state_dict_class(obj: Any) -> str:
    """The class name a checkpoint records for ``obj``'s state dict.

    An object whose state dict is laid out as another class's (the optimizers of
    arrayopt.distributed: their wrapped or sharded optimizer's) names it in
    ``_state_dict_class``, so the checkpoint loads into either.
    """
    cls = getattr(obj, "_state_dict_class", None)
    return (cls if isinstance(cls, type) else type(obj)).__name__


def _savable_key(key: Any) -> bool:
    if key is None or type(key) in (str, int, float, bool):
        return True
    return type(key) is tuple and all(_savable_key(k) for k in key)


# -- loading --------------------------------------------------------------------------


@dataclass
class _Entry:
    name: str
    kind: str  # "state_dict" or "value"
    cls: str | None
    value: Any


def load(path: _PathOrFile, /, *, xp: Any = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`: ``{name: value}`` in the order saved.

    State dicts come back as plain dicts, ready for ``load_state_dict`` (an
    optimizer converts the arrays to its parameters' library, device and dtype).

    Args:
        path: a checkpoint file, or a binary file object open for reading.
        xp: where arrays go: None for NumPy (the default); an array namespace or
            module (``cupy``, ``array_api_strict``, ...) or its name, for that
            library's default device; or an array, for its library and device.
            NumPy scalars saved as such stay NumPy scalars.

    Raises:
        ValueError: the file is not an arrayopt checkpoint, is damaged or truncated,
            or was written by a newer format version.
        OSError: the file cannot be opened.

    Example:
        >>> import io, numpy as np, arrayopt
        >>> w = arrayopt.Parameter(np.array([1.0, 2.0]))
        >>> opt = arrayopt.SGD([w], lr=0.1, momentum=0.9)
        >>> w.grad = np.ones(2)
        >>> opt.step()
        >>> f = io.BytesIO()
        >>> arrayopt.save(f, w=w, optimizer=opt, epoch=3)
        >>> _ = f.seek(0)
        >>> checkpoint = arrayopt.load(f)
        >>> list(checkpoint), checkpoint["w"], checkpoint["epoch"]
        (['w', 'optimizer', 'epoch'], array([0.9, 1.9]), 3)
        >>> checkpoint["optimizer"]["state"]
        {0: {'momentum_buffer': array([1., 1.])}}
        >>> opt.load_state_dict(checkpoint["optimizer"])
    """
    return {name: entry.value for name, entry in _read(path, xp).items()}


def load_into(path: _PathOrFile, /, *, xp: Any = None, **objects: Any) -> dict[str, Any]:
    """Load a checkpoint into live objects, all of them or none.

    Each keyword names an entry of the checkpoint and the object to load it into:

    * an optimizer: its ``load_state_dict`` (the entry must come from the same class);
    * another object with ``load_state_dict`` (LR scheduler, averaged model): the
      same, for the same class;
    * a Parameter, a ParameterList or ParameterDict, or a list, tuple or dict of
      Parameters: the saved arrays are copied into them in place (same structure and shapes; values are converted to
      each Parameter's dtype, library and device; complex into real is refused).

    Everything that can be checked without changing an object is checked first. If
    loading one object still fails, the objects loaded before it are restored, so an
    error leaves every object as it was.

    Returns:
        Every entry of the checkpoint, as :func:`load` gives them (for example to
        read back an epoch counter saved alongside).

    Example:
        >>> import io, numpy as np, arrayopt
        >>> w = arrayopt.Parameter(np.array([1.0, 2.0]))
        >>> buffer = io.BytesIO()
        >>> arrayopt.save(buffer, params={"w": w}, epoch=7)
        >>> w.data[...] = 0.0
        >>> arrayopt.load_into(buffer, params={"w": w})["epoch"]
        7
        >>> w.data
        array([1., 2.])
    """
    entries = _read(path, xp)
    plans = []
    for name, target in objects.items():
        if name not in entries:
            raise KeyError(
                f"the checkpoint has no entry {name!r} (it holds {', '.join(map(repr, entries)) or 'nothing'})"
            )
        plan = _plan(name, target, entries[name])
        plan.name = name
        plans.append(plan)
    started: list[_Plan] = []
    try:
        for plan in plans:
            started.append(plan)  # a failing load may have changed its object half-way: restore it too
            plan.commit()
    except BaseException as exc:
        for plan in reversed(started):
            try:
                plan.rollback()
            except Exception as problem:
                exc.add_note(f"load_into could not restore {plan.name!r}: {_typename(problem)}: {problem}")
        raise
    return {name: entry.value for name, entry in entries.items()}


def _read(path: _PathOrFile, xp: Any) -> dict[str, _Entry]:
    target = _target(xp)
    with contextlib.ExitStack() as stack:
        if isinstance(path, (str, os.PathLike)):
            where = os.fspath(path)
            file: IO[bytes] = stack.enter_context(open(where, "rb"))
        elif hasattr(path, "read") and hasattr(path, "seek"):
            where, file = "checkpoint", path
        else:
            raise TypeError(f"path must be a file path or a seekable binary file object, but got {_typename(path)}")
        try:
            with _collector_paused():
                entries = _decode_file(file)
        except MemoryError:
            raise
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        except Exception as exc:  # any failure to parse untrusted bytes means the file is damaged
            raise ValueError(f"{where}: damaged or not an arrayopt checkpoint ({_typename(exc)}: {exc})") from None
    if target is not None:
        for entry in entries.values():
            entry.value = _to_library(entry.value, *target, entry.name)
    return entries


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a file is decoded.

    Decoding makes many containers and no cycles; the collections they would trigger
    walk all of them again and again (for large metadata, 4 times the parse itself).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _target(xp: Any) -> tuple[Backend, Any] | None:
    """The backend and a template array for ``xp``; None to keep the NumPy arrays as read."""
    if xp is None:
        return None
    if isinstance(xp, str):
        xp = importlib.import_module(xp)
    if is_array(xp):
        like = xp
    else:
        empty = getattr(xp, "empty", None)
        if not callable(empty):
            raise TypeError(f"xp must be None, an array namespace or its name, or an array; got {_typename(xp)}")
        like = empty((0,))
    backend = get_backend(like)
    return None if backend.name == "numpy" else (backend, like)


def _to_library(value: Any, backend: Backend, like: Any, path: str) -> Any:
    if is_array(value) and not is_host_scalar(value):
        try:
            return backend.from_numpy(value, like)
        except Exception as exc:
            raise TypeError(f"{path}: cannot make a {value.dtype} array in {backend.name}: {exc}") from None
    if isinstance(value, dict):
        items = {k: _to_library(v, backend, like, f"{path}[{k!r}]") for k, v in value.items()}
        return Counter(items) if isinstance(value, Counter) else items
    if isinstance(value, (list, tuple)):
        return type(value)(_to_library(v, backend, like, f"{path}[{i}]") for i, v in enumerate(value))
    return value


def _decode_file(file: IO[bytes]) -> dict[str, _Entry]:
    reader = ArchiveReader(file)
    try:
        if not reader.has_meta():
            raise ValueError("not an arrayopt checkpoint (it has no arrayopt.json)")
        meta = json.loads(reader.meta().decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"not an arrayopt checkpoint (format {_get(meta, 'format')!r}, expected {FORMAT!r})")
        version = meta.get("version")
        if type(version) is not int or version < 1:
            raise ValueError(f"invalid format version {version!r}")
        if version > VERSION:
            raise ValueError(
                f"written with checkpoint format version {version}, but this arrayopt reads versions up to "
                f"{VERSION}; upgrade arrayopt to read it"
            )
        decoder = _Decoder(reader, meta.get("arrays"))
        objects = meta.get("objects")
        if type(objects) is not list:
            raise ValueError("corrupted metadata: 'objects' is not a list")
        entries: dict[str, _Entry] = {}
        for item in objects:
            entry = _entry(item, decoder)
            if entry.name in entries:
                raise ValueError(f"corrupted metadata: two entries are named {entry.name!r}")
            entries[entry.name] = entry
        decoder.check_all_used()
        return entries
    finally:
        reader.close()


def _get(meta: Any, key: str) -> Any:
    return meta.get(key) if isinstance(meta, dict) else None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"corrupted metadata: the JSON holds {name}")


def _finite_float(text: str) -> float:
    # save writes non-finite floats tagged ({"float": "inf"}); a literal like 1e999 is no float save writes
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"corrupted metadata: the JSON number {text[:40]} does not fit a float")
    return value


def _check_text(text: str, path: str) -> str:
    """``text`` if UTF-8 can hold it; a lone surrogate (from an escape like ``\\ud800``) cannot."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"{path}: the string {text[:40]!r} holds a lone surrogate ({text[exc.start]!r}), which "
                "a checkpoint (UTF-8 text) cannot hold"
            ) from None
    return text


def _entry(item: Any, decoder: "_Decoder") -> _Entry:
    if type(item) is not dict or set(item) - {"name", "kind", "class", "value"} or "value" not in item:
        raise ValueError("corrupted metadata: an entry of 'objects' is malformed")
    name, kind, cls = item.get("name"), item.get("kind"), item.get("class")
    if type(name) is not str or kind not in ("state_dict", "value") or (kind == "state_dict") != (type(cls) is str):
        raise ValueError("corrupted metadata: an entry of 'objects' is malformed")
    _check_text(name, "corrupted metadata: the name of an entry")
    if cls is not None:
        _check_text(cls, f"corrupted metadata at {name}: the class name")
    return _Entry(name, kind, cls, decoder.value(item["value"], name, 0))


class _Decoder:
    """Rebuilds values from typed JSON, reading each array from the archive as it is met."""

    def __init__(self, reader: ArchiveReader, arrays: Any) -> None:
        if type(arrays) is not list:
            raise ValueError("corrupted metadata: 'arrays' is not a list")
        self._specs: list[tuple[str, tuple[int, ...]]] = []
        for spec in arrays:
            if type(spec) is not dict or set(spec) != {"dtype", "shape"} or type(spec["dtype"]) is not str:
                raise ValueError("corrupted metadata: an entry of 'arrays' is malformed")
            shape = spec["shape"]
            if type(shape) is not list or not all(type(n) is int and n >= 0 for n in shape):
                raise ValueError(f"corrupted metadata: array shape {shape!r}")
            self._specs.append((spec["dtype"], tuple(shape)))
        self._reader = reader
        self._used: set[int] = set()

    def check_all_used(self) -> None:
        if len(self._used) != len(self._specs):
            raise ValueError("corrupted metadata: some arrays belong to no entry")

    def value(self, node: Any, path: str, depth: int) -> Any:
        kind = type(node)
        if kind is str:
            return _check_text(node, f"corrupted metadata at {path}")
        if node is None or kind in (bool, int, float):
            return node
        if depth >= _MAX_DEPTH:
            raise ValueError(f"corrupted metadata: {path} is nested too deeply")
        if kind is not dict or len(node) != 1:
            raise ValueError(f"corrupted metadata at {path}")
        ((tag, body),) = node.items()
        if tag in ("list", "tuple") and type(body) is list:
            items = [self.value(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(body)]
            return items if tag == "list" else tuple(items)
        if tag in ("dict", "counter") and type(body) is list:
            out: dict[Any, Any] = {}
            for pair in body:
                if type(pair) is not list or len(pair) != 2:
                    raise ValueError(f"corrupted metadata at {path}")
                key = self.value(pair[0], path, depth + 1)
                if not _savable_key(key):
                    raise ValueError(f"corrupted metadata at {path}: a dict key is {_a(key)}")
                out[key] = self.value(pair[1], f"{path}[{key!r}]", depth + 1)
            return Counter(out) if tag == "counter" else out
        if tag == "float" and body in ("nan", "inf", "-inf"):
            return float(body)
        if tag == "complex" and type(body) is list and len(body) == 2:
            parts = [self.value(v, path, depth + 1) for v in body]
            if all(type(v) in (int, float) for v in parts):
                return complex(parts[0], parts[1])
        if tag in ("array", "scalar") and type(body) is int and 0 <= body < len(self._specs):
            if body in self._used:
                raise ValueError(f"corrupted metadata at {path}: array {body} is used twice")
            self._used.add(body)
            host = self._reader.array(body, *self._specs[body])
            if tag == "scalar":
                if host.shape != ():
                    raise ValueError(f"corrupted metadata at {path}: a scalar of shape {host.shape}")
                return host_scalar(host)
            return host
        raise ValueError(f"corrupted metadata at {path}")


# -- loading into objects -------------------------------------------------------------


class _Plan:
    """One object's part of :func:`load_into`: checked when made, then committed or rolled back."""

    name = ""

    def commit(self) -> None:
        raise NotImplementedError

    def rollback(self) -> None:
        raise NotImplementedError


class _StateDictPlan(_Plan):
    def __init__(self, target: Any, state_dict: Any) -> None:
        from arrayopt._state_check import check_state_dict
        from arrayopt.optimizer import Optimizer

        self.target = target
        self.state_dict = state_dict
        self.optimizer = isinstance(target, Optimizer)
        if self.optimizer and not target._optimizer_load_state_dict_pre_hooks:
            check_state_dict(target, state_dict)  # fail before any object is touched
        self.snapshot: Any = None

    def commit(self) -> None:
        target = self.target
        if self.optimizer:
            self.snapshot = target._snapshot()
        else:
            self.snapshot = copy.deepcopy(target.state_dict())
        target.load_state_dict(self.state_dict)

    def rollback(self) -> None:
        if self.snapshot is None:
            return
        if self.optimizer:
            self.target._restore(self.snapshot)
        else:
            self.target.load_state_dict(self.snapshot)


class _ParameterPlan(_Plan):
    def __init__(self, pairs: list[tuple[Parameter, Any]]) -> None:
        self.pairs = pairs
        self.old: list[Any] = []

    def commit(self) -> None:
        for p, new in self.pairs:
            self.old.append(get_backend(p.data).xp.asarray(p.data, copy=True))
            p.data[...] = new

    def rollback(self) -> None:
        for (p, _), old in zip(self.pairs, self.old, strict=False):  # the ones committed
            p.data[...] = old


def _plan(name: str, target: Any, entry: _Entry) -> _Plan:
    load_state_dict = getattr(target, "load_state_dict", None)
    if callable(load_state_dict) and not isinstance(target, Parameter):
        if entry.kind != "state_dict":
            raise ValueError(f"{name!r}: the checkpoint holds a plain value there, not a state dict")
        if entry.cls != _state_dict_class(target):
            raise ValueError(
                f"{name!r}: the checkpoint holds the state of a {entry.cls}, which cannot be loaded into a "
                f"{_state_dict_class(target)} (load it with arrayopt.load and call load_state_dict to force it)"
            )
        return _StateDictPlan(target, entry.value)
    if not isinstance(target, (Parameter, list, tuple, dict, ParameterList, ParameterDict)):
        raise TypeError(
            f"{name!r}: cannot load into {_a(target)}; load_into takes optimizers, objects with "
            "load_state_dict (schedulers, averaged models), Parameters, ParameterLists, ParameterDicts, and lists, "
            "tuples and dicts of Parameters"
        )
    if entry.kind != "value":
        raise ValueError(f"{name!r}: the checkpoint holds the state dict of a {entry.cls} there, not arrays")
    return _ParameterPlan(list(_parameter_pairs(target, entry.value, name)))


def _parameter_pairs(target: Any, value: Any, path: str) -> Iterator[tuple[Parameter, Any]]:
    """``(parameter, new array)`` for every Parameter in ``target``, converted and checked."""
    if isinstance(target, ParameterList):
        target = list(target)
    elif isinstance(target, ParameterDict):
        target = dict(target.named_parameters())
    if isinstance(target, Parameter):
        if not is_array(value):
            raise TypeError(f"{path}: the checkpoint holds {_a(value)}, not an array")
        if tuple(value.shape) != target.shape:
            raise ValueError(
                f"{path}: the checkpoint holds shape {tuple(value.shape)}, but the Parameter has {target.shape}"
            )
        backend, source = get_backend(target.data), get_backend(value)
        if source.is_complex(value) and not backend.is_complex(target.data):
            raise ValueError(
                f"{path}: the checkpoint holds a complex array ({value.dtype}); the Parameter is {target.dtype}"
            )
        yield target, backend.convert(value, target.data, cast=True)
    elif isinstance(target, dict):
        if not isinstance(value, dict):
            raise TypeError(f"{path}: the checkpoint holds {_a(value)}, not a dict")
        if set(target) != set(value):
            missing, extra = set(target) - set(value), set(value) - set(target)
            raise ValueError(
                f"{path}: keys differ (missing from the checkpoint: {sorted(map(repr, missing))}, "
                f"not in the target: {sorted(map(repr, extra))})"
            )
        for key, item in target.items():
            yield from _parameter_pairs(item, value[key], f"{path}[{key!r}]")
    elif isinstance(target, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{path}: the checkpoint holds {_a(value)}, not a list")
        if len(value) != len(target):
            raise ValueError(f"{path}: the checkpoint holds {len(value)} items, the target {len(target)}")
        for i, (item, saved) in enumerate(zip(target, value, strict=True)):
            yield from _parameter_pairs(item, saved, f"{path}[{i}]")
    else:
        raise TypeError(f"{path}: cannot load into {_a(target)} (expected Parameters, lists, tuples and dicts)")
