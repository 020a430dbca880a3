"""Reader for IDX files, the format of MNIST and Fashion-MNIST (gzipped or raw).

Layout (big-endian): two zero bytes, a dtype code, the number of dimensions d, then d uint32
sizes, then the data in C order. We validate all of it so a truncated download fails with a
message naming the file instead of a reshape error deep inside a run.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from benchsuite import provenance
from benchsuite.errors import BenchsuiteError

GZIP_MAGIC = b"\x1f\x8b"
HEADER_BYTES = 4
DIMENSION_BYTES = 4

# IDX dtype code -> big-endian numpy dtype
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> torch.Tensor:
    """The array stored in an IDX file as a tensor of its own dtype (uint8 for image files).

    Gzip is detected from the file's first bytes, not its name, so renamed files still work.
    """
    path = Path(path)
    content = _read_bytes(path)
    dtype, shape, data_offset = _parse_header(content, path)
    expected = math.prod(shape) * dtype.itemsize
    available = len(content) - data_offset
    if available != expected:
        raise BenchsuiteError(
            f"{path}: malformed IDX file: header promises shape {tuple(shape)} "
            f"({expected} data bytes) but the file holds {available} data bytes"
        )
    array = np.frombuffer(content, dtype=dtype, offset=data_offset).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzipped: never more than the header declares
    (a 3 MB gzip bomb must not become gigabytes) and no more than this machine has."""
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise BenchsuiteError(f"IDX file not found: {path}") from None
    except OSError as error:
        raise BenchsuiteError(f"cannot read IDX file {path}: {error}") from None
    provenance.record(path, content)
    if not content.startswith(GZIP_MAGIC):
        return content
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(content)) as stream:
            header = stream.read(HEADER_BYTES)
            if len(header) == HEADER_BYTES:
                header += stream.read(DIMENSION_BYTES * header[3])
            dtype, shape, _ = _parse_header(header, path)
            declared = math.prod(shape) * dtype.itemsize
            _check_fits_in_memory(path, shape, declared)
            data = stream.read(declared + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise BenchsuiteError(f"{path}: corrupt gzip data in IDX file ({error})") from None
    if len(data) > declared:
        raise BenchsuiteError(
            f"{path}: malformed IDX file: holds more than the {declared:,} data bytes its header "
            f"declares for shape {tuple(shape)} (stopped decompressing there)"
        )
    return header + data


def _check_fits_in_memory(path: Path, shape: list[int], declared: int) -> None:
    from benchsuite.limits import available_memory

    available = available_memory("cpu")
    if available is not None and declared > available:
        raise BenchsuiteError(
            f"{path}: IDX header declares shape {tuple(shape)} ({declared:,} bytes), more than the "
            f"{available:,} bytes of memory available; refusing to decompress it"
        )


def _parse_header(content: bytes, path: Path) -> tuple[np.dtype, list[int], int]:
    """(dtype, shape, offset of the data) from the magic number and dimension sizes."""
    if len(content) < HEADER_BYTES:
        raise BenchsuiteError(f"{path}: not an IDX file: only {len(content)} bytes")
    zero_a, zero_b, dtype_code, dimensions = content[:HEADER_BYTES]
    if zero_a != 0 or zero_b != 0:
        raise BenchsuiteError(
            f"{path}: not an IDX file: magic number {content[:HEADER_BYTES].hex()} "
            "does not start with two zero bytes"
        )
    if dtype_code not in IDX_DTYPES:
        valid = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise BenchsuiteError(
            f"{path}: malformed IDX file: unknown dtype code 0x{dtype_code:02X} (valid: {valid})"
        )
    if dimensions == 0:
        raise BenchsuiteError(f"{path}: malformed IDX file: zero dimensions")
    data_offset = HEADER_BYTES + DIMENSION_BYTES * dimensions
    if len(content) < data_offset:
        raise BenchsuiteError(
            f"{path}: malformed IDX file: truncated header ({dimensions} dimension sizes "
            f"need {data_offset} bytes, file has {len(content)})"
        )
    sizes = np.frombuffer(content, dtype=">u4", count=dimensions, offset=HEADER_BYTES)
    return IDX_DTYPES[dtype_code], [int(size) for size in sizes], data_offset
