"""The checkpoint container: host arrays as ``.npy`` members of an uncompressed zip.

This is the only part of checkpointing that names NumPy; ``arrayopt/checkpoint.py``
builds the metadata and moves arrays between libraries through the backends.

Layout of a container (a zip file, every member stored uncompressed)::

    arrayopt.json       metadata (UTF-8 JSON), first member
    arrays/0.npy        one NumPy .npy file (format 1.0 or 2.0) per array
    arrays/1.npy
    ...

Reading never unpickles and never lets NumPy allocate from a size it has not
checked: each ``.npy`` header is parsed with ``ast.literal_eval`` (NumPy's own header
reader), its dtype must be a plain numeric one and match the metadata, and its byte
count must equal what the member holds, before any buffer is allocated. Uncompressed
members keep every read bounded by the file's size (no decompression bombs); a
member's sizes must agree and lie in the file, and no two members may share bytes, so
all the buffers together never exceed the file (no forged sizes, no members
overlapping into one block). The zip directory, the metadata and the number of
arrays are bounded (:data:`MAX_METADATA_BYTES`, :data:`MAX_ARRAYS`), which keeps what
reading costs beyond the arrays within tens of MB whatever a file claims. The zip's
CRC-32 of every member is checked, so a flipped bit or a truncated file is reported,
never loaded.
"""

import itertools
import struct
import zipfile
from collections.abc import Sequence
from typing import IO, Any

import numpy
import numpy.lib.format as npy_format

from arrayopt.backends.base import Backend

__all__ = [
    "MAX_ARRAYS",
    "MAX_METADATA_BYTES",
    "SAVABLE_DTYPES",
    "ArchiveReader",
    "host_array",
    "host_scalar",
    "is_host_scalar",
    "write_archive",
]

META_NAME = "arrayopt.json"

#: dtypes a checkpoint may hold, by NumPy name: numbers and booleans only (never
#: objects, strings, structured or platform-dependent types).
SAVABLE_DTYPES = frozenset(
    {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
    | {"float16", "float32", "float64", "complex64", "complex128"}
)

# A fixed timestamp makes the same content give the same bytes.
_DATE = (1980, 1, 1, 0, 0, 0)
_MAX_HEADER = 10_000
_CHUNK = 1 << 24

#: Limits that keep what reading a file costs, beyond its arrays, small whatever the
#: file says (decoded JSON takes up to ~30 times its size in Python objects, zipfile
#: ~500 bytes per directory entry); ``save`` refuses to write more.
MAX_METADATA_BYTES = 5 << 18  # 1.25 MiB
MAX_ARRAYS = 16_384
# A zip directory entry of write_archive is 46 bytes, the name, and at most 28 bytes of zip64 fields.
_MAX_DIRECTORY_BYTES = max(1 << 17, (MAX_ARRAYS + 1) * (46 + len(f"arrays/{MAX_ARRAYS}.npy") + 28))
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip member's local header (zipfile.structFileHeader)


def array_member(index: int) -> str:
    return f"arrays/{index}.npy"


def is_host_scalar(value: Any) -> bool:
    """True for a NumPy scalar (``numpy.float32(1)``), which loads back as one."""
    return isinstance(value, numpy.generic)


def host_array(value: Any, backend: Backend) -> Any:
    """``value`` (an array of ``backend``'s library, or a NumPy scalar) as a NumPy array in native byte order.

    Raises:
        TypeError: for a dtype outside :data:`SAVABLE_DTYPES`.
    """
    host = numpy.asarray(backend.to_numpy(value))
    if host.dtype.name not in SAVABLE_DTYPES:
        raise TypeError(
            f"arrays of dtype {host.dtype} cannot be saved (a checkpoint holds {', '.join(sorted(SAVABLE_DTYPES))})"
        )
    if not host.dtype.isnative:
        host = host.astype(host.dtype.newbyteorder("="))
    return host


def host_scalar(host: Any) -> Any:
    """The NumPy scalar held by a 0-d host array."""
    return host[()]


def write_archive(file: IO[bytes], meta: bytes, arrays: Sequence[Any]) -> None:
    """Write the metadata and the host ``arrays`` (``arrays/<i>.npy``) as one zip to ``file``.

    Raises:
        ValueError: before anything is written, for more than :data:`MAX_ARRAYS` arrays
            or metadata over :data:`MAX_METADATA_BYTES`, which reading refuses.
    """
    if len(arrays) > MAX_ARRAYS:
        raise ValueError(
            f"a checkpoint holds at most {MAX_ARRAYS} arrays, this one would hold {len(arrays)}: "
            "save the objects in several files"
        )
    if len(meta) > MAX_METADATA_BYTES:
        raise ValueError(
            f"the checkpoint's structure (its JSON metadata) would take {len(meta)} bytes, more than the "
            f"{MAX_METADATA_BYTES} a checkpoint may have: save long lists of numbers as arrays, "
            "or the objects in several files"
        )
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        archive.writestr(zipfile.ZipInfo(META_NAME, _DATE), meta)
        for index, host in enumerate(arrays):
            with archive.open(zipfile.ZipInfo(array_member(index), _DATE), "w", force_zip64=True) as member:
                npy_format.write_array(member, numpy.asarray(host, order="C"), version=None, allow_pickle=False)


class ArchiveReader:
    """Reads a container written by :func:`write_archive`; every problem is a ValueError.

    Before anything is read, the zip's directory must describe a plausible file: at
    most :data:`MAX_MEMBERS` entries, each name once, every member stored (its stored
    size equal to its size), inside the file, and no two members sharing bytes. So
    the bytes read, and the memory they take, never exceed what the file holds.

    Args:
        file: a binary file object open for reading, positioned anywhere.
    """

    def __init__(self, file: IO[bytes]) -> None:
        file.seek(0, 2)
        self._size = file.tell()
        file.seek(0)
        guarded = _DirectoryGuard(file, self._size)
        try:
            self._zip = zipfile.ZipFile(guarded, "r")
        except zipfile.BadZipFile as exc:
            raise ValueError(f"not a zip archive ({exc})") from None
        guarded.limit = None  # the directory is read; members are checked below, then read in bounded chunks
        spans = []
        seen: set[str] = set()
        for info in self._zip.infolist():
            name = info.filename
            if name in seen:
                raise ValueError(f"member {name!r} appears twice in the zip directory")
            seen.add(name)
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"member {name!r} is compressed; arrayopt writes every member uncompressed")
            if info.flag_bits & 0x1:
                raise ValueError(f"member {name!r} is encrypted")
            if info.compress_size != info.file_size:
                raise ValueError(
                    f"member {name!r} claims {info.file_size} bytes stored in {info.compress_size} "
                    "(a stored member holds its bytes as they are: forged sizes?)"
                )
            start = info.header_offset
            end = _data_offset(file, info) + info.compress_size
            if end > self._size:
                raise ValueError(f"member {name!r} extends past the end of the file (truncated?)")
            spans.append((start, end, name))
        spans.sort()
        for (_, end, name), (start, _, other) in itertools.pairwise(spans):
            if start < end:
                raise ValueError(f"members {name!r} and {other!r} overlap (the file is forged or damaged)")
        if META_NAME in seen and self._zip.getinfo(META_NAME).file_size > MAX_METADATA_BYTES:
            raise ValueError(
                f"member {META_NAME!r} holds {self._zip.getinfo(META_NAME).file_size} bytes, more than the "
                f"{MAX_METADATA_BYTES} a checkpoint's metadata may have"
            )

    def close(self) -> None:
        self._zip.close()

    def has_meta(self) -> bool:
        return META_NAME in self._zip.namelist()

    def meta(self) -> bytes:
        """The metadata member's bytes (CRC-checked)."""
        return self._zip.read(META_NAME)

    def array(self, index: int, dtype_name: str, shape: tuple[int, ...]) -> Any:
        """Array ``index``, a writable NumPy array, after checking it is ``dtype_name`` of ``shape``."""
        name = array_member(index)
        try:
            info = self._zip.getinfo(name)
        except KeyError:
            raise ValueError(f"member {name!r} is missing") from None
        if dtype_name not in SAVABLE_DTYPES:
            raise ValueError(f"array {index} has dtype {dtype_name!r}, which a checkpoint cannot hold")
        dtype = numpy.dtype(dtype_name)
        with self._zip.open(info) as member:
            version = npy_format.read_magic(member)
            if version == (1, 0):
                header = npy_format.read_array_header_1_0(member, max_header_size=_MAX_HEADER)
            elif version == (2, 0):
                header = npy_format.read_array_header_2_0(member, max_header_size=_MAX_HEADER)
            else:
                raise ValueError(f"{name}: unsupported .npy format version {version}")
            stored_shape, fortran_order, stored_dtype = header
            if stored_dtype != dtype or tuple(stored_shape) != shape:
                raise ValueError(
                    f"{name} holds {stored_dtype} of shape {tuple(stored_shape)}, "
                    f"but the metadata says {dtype_name} of shape {shape}"
                )
            if fortran_order:
                raise ValueError(f"{name} is in Fortran order; arrayopt writes C order")
            count = 1
            for extent in shape:
                count *= extent
            nbytes = count * dtype.itemsize
            if member.tell() + nbytes != info.file_size:
                raise ValueError(f"{name} holds {info.file_size - member.tell()} bytes of data, expected {nbytes}")
            buffer = bytearray(nbytes)
            filled = 0
            while filled < nbytes:
                chunk = member.read(min(nbytes - filled, _CHUNK))
                if not chunk:
                    raise ValueError(f"{name} ends after {filled} of {nbytes} bytes (truncated?)")
                buffer[filled : filled + len(chunk)] = chunk
                filled += len(chunk)
            if member.read(1):  # reading to the end also makes zipfile check the CRC
                raise ValueError(f"{name} holds more data than its header says")
        return numpy.frombuffer(buffer, dtype=dtype).reshape(shape)


def _data_offset(file: IO[bytes], info: zipfile.ZipInfo) -> int:
    """Where member ``info``'s bytes start: after its local header, whose name and extra fields vary in length."""
    file.seek(info.header_offset)
    raw = file.read(_LOCAL_HEADER.size)
    if len(raw) != _LOCAL_HEADER.size or raw[:4] != b"PK\x03\x04":
        raise ValueError(f"member {info.filename!r} has no local header where the zip directory says (damaged?)")
    fields = _LOCAL_HEADER.unpack(raw)
    return info.header_offset + _LOCAL_HEADER.size + int(fields[10]) + int(fields[11])


class _DirectoryGuard:
    """The file as zipfile reads it: while ``limit`` is set, no single read may take more bytes.

    zipfile reads the whole zip directory in one read and makes an object per entry;
    the limit bounds both before any of it is allocated.
    """

    def __init__(self, file: IO[bytes], size: int) -> None:
        self._file = file
        self._size = size
        self.limit: int | None = _MAX_DIRECTORY_BYTES

    def read(self, n: int | None = -1) -> bytes:
        if self.limit is not None:
            wanted = self._size - self._file.tell() if n is None or n < 0 else n
            if wanted > self.limit:
                raise ValueError(
                    f"the zip directory takes {wanted} bytes, more than a checkpoint of at most "
                    f"{MAX_ARRAYS} arrays needs ({self.limit})"
                )
        return self._file.read(-1 if n is None else n)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def seekable(self) -> bool:
        return True
