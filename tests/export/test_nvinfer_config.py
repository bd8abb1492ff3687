"""The nvinfer config writer (clipedge.export.nvinfer_config): it refuses what Gst-nvinfer would misread or reject,
escapes what its key file parser would mangle, and every key of its table names the NVIDIA sources it came from."""

from __future__ import annotations

import pytest

from clipedge.core.errors import ClipedgeError
from clipedge.export.nvinfer_config import NVINFER_KEYS, ConfigEntry, classifier_labels, format_value, render_config


@pytest.mark.parametrize("entry, message", [
    (ConfigEntry("enable-magic", 1), "not in the Gst-nvinfer property table"),
    (ConfigEntry("process-mode", 3), "expected one of 1, 2"),
    (ConfigEntry("batch-size", 0), "at least 1"),
    (ConfigEntry("classifier-threshold", -0.1), "at least 0"),
    (ConfigEntry("classifier-threshold", float("nan")), "finite"),
    (ConfigEntry("infer-dims", [3, 224]), "exactly 3 items"),
    (ConfigEntry("maintain-aspect-ratio", 1), "True or False"),
    (ConfigEntry("onnx-file", "model\n.onnx"), "without line breaks"),
    (ConfigEntry("output-blob-names", ["probs;logits"]), "list items without ';'"),
])
def test_the_writer_refuses_what_nvinfer_would_misread(entry, message):
    with pytest.raises(ClipedgeError, match=message):
        render_config([entry])


def test_the_writer_escapes_backslashes_and_leading_spaces():
    text = render_config([ConfigEntry("onnx-file", " models\\m.onnx")])
    assert "onnx-file=\\smodels\\\\m.onnx" in text.splitlines()
    with pytest.raises(ClipedgeError, match="given twice"):
        render_config([ConfigEntry("gpu-id", 0), ConfigEntry("gpu-id", 1)])
    assert classifier_labels(["a b", "c"], "RUN x") == "a b;c\n"


def test_every_table_row_names_its_nvidia_sources():
    assert all(key.sources and set(key.sources) <= {"manual", "reference", "parser"} for key in NVINFER_KEYS.values())
    with pytest.raises(ClipedgeError, match="greater than 0"):
        format_value("net-scale-factor", 0.0)
