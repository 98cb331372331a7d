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
members keep every read bounded by the file's size (no decompression bombs), and the
zip's CRC-32 of every member is checked, so a flipped bit or a truncated file is
reported, never loaded.
"""

import zipfile
from collections.abc import Sequence
from typing import IO, Any

import numpy
import numpy.lib.format as npy_format

from arrayopt.backends.base import Backend

__all__ = ["SAVABLE_DTYPES", "ArchiveReader", "host_array", "host_scalar", "is_host_scalar", "write_archive"]

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
    """Write the metadata and the host ``arrays`` (``arrays/<i>.npy``) as one zip to ``file``."""
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        archive.writestr(zipfile.ZipInfo(META_NAME, _DATE), meta)
        for index, host in enumerate(arrays):
            with archive.open(zipfile.ZipInfo(array_member(index), _DATE), "w", force_zip64=True) as member:
                npy_format.write_array(member, numpy.asarray(host, order="C"), version=None, allow_pickle=False)


class ArchiveReader:
    """Reads a container written by :func:`write_archive`; every problem is a ValueError.

    Args:
        file: a binary file object open for reading, positioned anywhere.
    """

    def __init__(self, file: IO[bytes]) -> None:
        file.seek(0, 2)
        self._size = file.tell()
        file.seek(0)
        try:
            self._zip = zipfile.ZipFile(file, "r")
        except zipfile.BadZipFile as exc:
            raise ValueError(f"not a zip archive ({exc})") from None
        for info in self._zip.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"member {info.filename!r} is compressed; arrayopt writes every member uncompressed")
            if info.flag_bits & 0x1:
                raise ValueError(f"member {info.filename!r} is encrypted")
            if info.header_offset + info.compress_size > self._size:
                raise ValueError(f"member {info.filename!r} extends past the end of the file (truncated?)")

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
