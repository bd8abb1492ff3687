"""Gst-nvinfer configuration files and classifier label files, written from a table of nvinfer's documented keys.

DeepStream cannot run here, so what we write is checked statically: every key must be a row of
``NVINFER_KEYS`` (its group, type and allowed values, as NVIDIA documents them) and every value is
validated and escaped for GLib's key-file format (which nvinfer reads with ``g_key_file_*``) before a
byte is written. Nothing is a text template: a value that cannot be expressed is refused in one line.

Sources (NVIDIA's own, read for this table; nothing here is inferred from our own assumptions). Each key
names the ones it was taken from (``NvinferKey.sources``):

- "manual": the Gst-nvinfer documentation's "[property] group, supported keys" table (Property, Meaning,
  Type and Range), in NVIDIA's DeepStream 4.0 Plugin Manual (SWE-SWDOCDPSTR-002-PGRF, 2019), §2.1.3 Table 2;
  the current page is https://docs.nvidia.com/metropolis/deepstream/dev-guide/text/DS_plugin_gst-nvinfer.html.
- "reference": NVIDIA's nvinfer configuration reference in github.com/NVIDIA/DeepStream
  (skills/deepstream-dev/references/nvinfer_config.md, commit 581889d), for keys added after that manual
  (infer-dims, network-input-order, symmetric-padding, gpu-id) and values added since (GRAY, instance
  segmentation).
- "parser": the code that reads the file, github.com/NVIDIA/DeepStream
  src/gst-plugins/gst-nvinfer/gstnvinfer_property_parser.{h,cpp} (same commit): key names, that booleans are
  read with ``g_key_file_get_boolean`` and lists are ';'-separated, and its checks (batch-size in
  [1, NVDSINFER_MAX_BATCH_SIZE = 1024], infer-dims exactly 3 integers C;H;W, at most 4 offsets).
- The classifier label file: src/utils/nvdsinfer/nvdsinfer_context_impl.cpp,
  ``InferPostprocessor::parseLabelsFile``: one line per output layer, labels split on ';' with no escape.

A key whose documentation we could not find is not in the table, so it cannot be written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clipedge.core.errors import ClipedgeError
from clipedge.core.labels import label_problem

PROPERTY = "property"
#: the maximum batch size nvinfer accepts (nvdsinfer_context.h: NVDSINFER_MAX_BATCH_SIZE)
MAX_BATCH_SIZE = 1024


@dataclass(frozen=True)
class NvinferKey:
    """One documented Gst-nvinfer configuration key."""

    name: str
    group: str
    #: int, float, bool, path, string-list, int-list or float-list
    kind: str
    meaning: str
    #: where this row comes from: "manual", "reference", "parser" (see the module docstring)
    sources: tuple[str, ...]
    allowed: tuple[int, ...] | None = None
    minimum: float | None = None
    #: numbers that must be strictly greater than this (the manual's "Float, >0.0")
    above: float | None = None
    maximum: float | None = None
    #: list keys: the exact number of items (infer-dims) or the most allowed (offsets)
    length: int | None = None
    max_length: int | None = None


MANUAL, REFERENCE, PARSER = "manual", "reference", "parser"
MRP, MP, RP = (MANUAL, REFERENCE, PARSER), (MANUAL, PARSER), (REFERENCE, PARSER)
NVINFER_KEYS: dict[str, NvinferKey] = {k.name: k for k in (
    NvinferKey("gpu-id", PROPERTY, "int", "GPU device ID used for pre-processing and inference", RP, minimum=0),
    NvinferKey("onnx-file", PROPERTY, "path", "pathname of the ONNX model file (relative to the config file)", MP),
    NvinferKey("model-engine-file", PROPERTY, "path", "pathname of the serialized model engine file", MRP),
    NvinferKey("labelfile-path", PROPERTY, "path", "pathname of a text file containing the labels for the model", MP),
    NvinferKey("batch-size", PROPERTY, "int", "number of frames or objects to be inferred together in a batch", MP,
               minimum=1, maximum=MAX_BATCH_SIZE),
    NvinferKey("network-mode", PROPERTY, "int", "data format used by inference: 0=FP32, 1=INT8, 2=FP16", MRP,
               allowed=(0, 1, 2)),
    NvinferKey("network-type", PROPERTY, "int", "0=Detector, 1=Classifier, 2=Segmentation, 3=Instance Segmentation",
               MRP, allowed=(0, 1, 2, 3)),
    NvinferKey("process-mode", PROPERTY, "int", "1=Primary (full frames), 2=Secondary (objects from upstream)", MP,
               allowed=(1, 2)),
    NvinferKey("gie-unique-id", PROPERTY, "int", "unique ID of this GIE, by which others find its metadata", MP,
               minimum=1),
    NvinferKey("operate-on-gie-id", PROPERTY, "int", "unique ID of the GIE on whose objects this GIE operates", MP,
               minimum=1),
    NvinferKey("model-color-format", PROPERTY, "int", "0=RGB, 1=BGR, 2=GRAY", MRP, allowed=(0, 1, 2)),
    NvinferKey("network-input-order", PROPERTY, "int", "0=NCHW, 1=NHWC", RP, allowed=(0, 1)),
    NvinferKey("infer-dims", PROPERTY, "int-list", "input dimensions C;H;W", RP, minimum=1, length=3),
    NvinferKey("net-scale-factor", PROPERTY, "float", "pixel normalization factor: y = factor·(x − offsets[c])", MP,
               above=0.0),
    NvinferKey("offsets", PROPERTY, "float-list", "per-channel means subtracted from each pixel before scaling", MP,
               minimum=0.0, max_length=4),
    NvinferKey("maintain-aspect-ratio", PROPERTY, "bool", "whether to maintain aspect ratio while scaling input", MP),
    NvinferKey("symmetric-padding", PROPERTY, "bool", "with maintain-aspect-ratio: pad on both sides, not only "
               "right/bottom", RP),
    NvinferKey("output-blob-names", PROPERTY, "string-list", "array of output layer names", MP),
    NvinferKey("classifier-threshold", PROPERTY, "float", "minimum label probability: the most probable label is "
               "output only if its probability is greater than this", MP, minimum=0.0),
)}


def _refuse(key: str, value: Any, expected: str) -> ClipedgeError:
    return ClipedgeError(f"nvinfer key {key}={value!r}: expected {expected}")


def _check_number(spec: NvinferKey, value: Any, integer: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise _refuse(spec.name, value, "an integer" if integer else "a number")
    if not math.isfinite(value):
        raise _refuse(spec.name, value, "a finite number")
    if spec.allowed is not None and value not in spec.allowed:
        raise _refuse(spec.name, value, f"one of {', '.join(map(str, spec.allowed))} ({spec.meaning})")
    if spec.minimum is not None and value < spec.minimum:
        raise _refuse(spec.name, value, f"at least {spec.minimum:g}")
    if spec.above is not None and value <= spec.above:
        raise _refuse(spec.name, value, f"greater than {spec.above:g}")
    if spec.maximum is not None and value > spec.maximum:
        raise _refuse(spec.name, value, f"at most {spec.maximum:g}")
    return value


def _escape_text(key: str, text: str, separator: str | None = None) -> str:
    """GLib key-file escaping: backslash doubled, a leading space as \\s; a line break or NUL cannot be written,
    and neither can a list separator inside a list item (nvinfer splits on it)."""
    if not isinstance(text, str) or not text:
        raise _refuse(key, text, "a non-empty string")
    if any(c in text for c in "\n\r\0"):
        raise _refuse(key, text, "text without line breaks or NUL characters")
    if separator and separator in text:
        raise _refuse(key, text, f"list items without {separator!r} (nvinfer's list separator)")
    escaped = text.replace("\\", "\\\\")
    return "\\s" + escaped[1:] if escaped[0] in " \t" else escaped


def format_value(key: str, value: Any) -> str:
    """``value`` as nvinfer's key-file parser reads it for ``key``, after checking it against the table."""
    spec = NVINFER_KEYS.get(key)
    if spec is None:
        raise ClipedgeError(f"nvinfer key {key}: not in the Gst-nvinfer property table this writer knows")
    if spec.kind == "int":
        return str(_check_number(spec, value, integer=True))
    if spec.kind == "float":
        return repr(float(_check_number(spec, value, integer=False)))
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise _refuse(key, value, "True or False")
        return "1" if value else "0"
    if spec.kind == "path":
        return _escape_text(key, value)
    if not isinstance(value, (list, tuple)) or not value:
        raise _refuse(key, value, "a non-empty list")
    if spec.length is not None and len(value) != spec.length:
        raise _refuse(key, value, f"exactly {spec.length} items")
    if spec.max_length is not None and len(value) > spec.max_length:
        raise _refuse(key, value, f"at most {spec.max_length} items")
    if spec.kind == "string-list":
        return ";".join(_escape_text(key, item, ";") for item in value)
    integer = spec.kind == "int-list"
    return ";".join(str(_check_number(spec, item, integer)) if integer
                    else repr(float(_check_number(spec, item, integer))) for item in value)


@dataclass(frozen=True)
class ConfigEntry:
    key: str
    value: Any
    #: why this value: written as a comment line above the key
    note: str = ""


def render_config(entries: Sequence[ConfigEntry], header: Sequence[str] = ()) -> str:
    """A Gst-nvinfer config file: header comment lines, then each group with its checked keys in order."""
    lines = [_comment(line) for line in header]
    seen: set[str] = set()
    group = None
    for entry in entries:
        if entry.key in seen:
            raise ClipedgeError(f"nvinfer key {entry.key}: given twice")
        seen.add(entry.key)
        value = format_value(entry.key, entry.value)
        if NVINFER_KEYS[entry.key].group != group:
            group = NVINFER_KEYS[entry.key].group
            lines += ["", f"[{group}]"]
        if entry.note:
            lines.append(_comment(entry.note))
        lines.append(f"{entry.key}={value}")
    return "\n".join(lines) + "\n"


def _comment(text: str) -> str:
    if any(c in text for c in "\n\r\0"):
        raise ClipedgeError(f"config comment {text!r}: must be one line")
    return f"# {text}" if text else "#"


def classifier_labels(class_names: Sequence[str], source: str) -> str:
    """nvinfer's classifier label file: one line (one softmax output) of labels separated by ';'.

    nvinfer splits that line on every ';' and has no escape, so a class name containing ';' (or a line
    break, which would start another output's labels) would shift every label after it: refused, naming it.
    """
    for name in class_names:
        what = "contains ';'" if ";" in name else label_problem(name)
        if what is not None:
            raise ClipedgeError(
                f"{source}: class name {name!r} {what}, which nvinfer's classifier label file (one line of "
                "';'-separated labels, no escapes) cannot hold; rename that class and re-train")
    return ";".join(class_names) + "\n"

