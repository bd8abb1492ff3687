"""Read an ONNX file's ``metadata_props`` (and where its external weights live) without onnx or a session.

The backend must know a model's precision before it creates the onnxruntime
session: onnxruntime's CPU graph fusions (seen with 1.32, 2026-11) crash the process (a segfault, not an
exception) on fp16 transformer graphs at the highest level, so fp16 models get a less fused session.
Reading metadata through a throwaway session would load the weights twice,
and the ``onnx`` package is not a runtime dependency. ``metadata_props`` is
field 14 of the top-level ``ModelProto`` message, so a scan of the top-level
protobuf fields, skipping the (large) graph field by its length, finds it.
The same scan lists the files a model keeps its weights in, so a missing one
is named before onnxruntime fails on it with a shape-inference message.
"""

from __future__ import annotations

import mmap
from pathlib import Path

from clipedge.core.errors import ClipedgeError

METADATA_PROPS = 14  # ModelProto.metadata_props: repeated StringStringEntryProto {key = 1; value = 2}
GRAPH, INITIALIZER, EXTERNAL_DATA = 7, 5, 13  # ModelProto.graph, GraphProto.initializer, TensorProto.external_data
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


def _varint(buffer: bytes | mmap.mmap, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buffer: bytes | mmap.mmap, start: int, end: int):
    """Yield (field number, wire type, value) for one message; length-delimited values as (offset, length)."""
    position = start
    while position < end:
        key, position = _varint(buffer, position)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, position = _varint(buffer, position)
        elif wire == FIXED64:
            value, position = None, position + 8
        elif wire == FIXED32:
            value, position = None, position + 4
        elif wire == LENGTH_DELIMITED:
            length, position = _varint(buffer, position)
            value, position = (position, length), position + length
        else:
            raise ValueError(f"wire type {wire}")
        if position > end or number == 0:
            raise ValueError("truncated message")
        yield number, wire, value


def _submessages(buffer: bytes | mmap.mmap, start: int, end: int, number: int):
    """Yield (start, end) of every embedded message with field ``number``."""
    for field, wire, value in _fields(buffer, start, end):
        if field == number and wire == LENGTH_DELIMITED:
            yield value[0], value[0] + value[1]


def _string_entry(buffer: bytes | mmap.mmap, start: int, end: int) -> tuple[str, str]:
    """A StringStringEntryProto as (key, value)."""
    entry = {n: bytes(buffer[v[0]:v[0] + v[1]]).decode("utf-8") for n, w, v in _fields(buffer, start, end)
             if w == LENGTH_DELIMITED}
    return entry.get(1, ""), entry.get(2, "")


def read_onnx_metadata(path: Path) -> dict[str, str] | None:
    """The model's metadata_props as a dict, or None when the file is not a parseable ONNX model."""
    try:
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            return dict(_string_entry(buffer, *span) for span in _submessages(buffer, 0, len(buffer), METADATA_PROPS))
    except (ValueError, IndexError, OSError, UnicodeDecodeError):
        return None


def onnx_metadata_of(path: Path) -> dict[str, str]:
    """:func:`read_onnx_metadata`, with the one message for a file that is not an ONNX model."""
    metadata = read_onnx_metadata(path)
    if metadata is None:
        raise ClipedgeError(f"model {path}: not a valid ONNX model (truncated, or another format)")
    return metadata


def read_external_data(path: Path) -> dict[str, int]:
    """The files a model keeps its weights in (``external_data`` of the graph's initializers, as ``onnx.save``
    writes models over 2 GB), each with the bytes it must hold at least (largest offset + length; 0 if unstated).
    Empty for a self-contained model or one that does not parse (read_onnx_metadata reports that)."""
    needed: dict[str, int] = {}
    try:
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            for graph in _submessages(buffer, 0, len(buffer), GRAPH):
                for tensor in _submessages(buffer, *graph, INITIALIZER):
                    entries = dict(_string_entry(buffer, *span) for span in _submessages(buffer, *tensor, EXTERNAL_DATA))
                    if "location" in entries:
                        end = int(entries.get("offset", 0)) + int(entries.get("length", 0))
                        needed[entries["location"]] = max(needed.get(entries["location"], 0), end)
    except (ValueError, IndexError, OSError, UnicodeDecodeError):
        return {}
    return needed
