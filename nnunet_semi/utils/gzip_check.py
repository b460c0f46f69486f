"""A streamed integrity read of gzip-compressed inputs (``.nii.gz`` and the like).

ITK reads a truncated ``.nii.gz`` without an error: the voxels past the cut come back as zeros (the first 1000 bytes
of a Hippocampus image give a full-size array that is 98-99 % zeros). Python's gzip notices, because the stream
ends before its end-of-stream marker. Reading the stream in chunks to the end costs one decompression and little
memory.
"""
import gzip
import os
import zlib
from typing import Optional

GZIP_MAGIC = b"\x1f\x8b"
CHUNK_BYTES = 1 << 20


def gzip_problem(path: str) -> Optional[str]:
    """Why the gzip stream of ``path`` is damaged (e.g. ``'Compressed file ended before the end-of-stream marker
    was reached'``), or None when it decompresses to its end. Files that do not start with gzip's magic bytes are
    not checked (None), and neither are missing ones: their reader reports them."""
    path = str(path)
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic != GZIP_MAGIC:
        return None
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(CHUNK_BYTES):
                pass
    except (EOFError, OSError, zlib.error) as e:
        return str(e) or type(e).__name__
    return None
