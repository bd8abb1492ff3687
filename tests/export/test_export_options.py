"""The export's options are one object, validated once: the CLI and the Python API refuse the same combinations.

Each refusal below runs through ``clipedge export`` and through ``clipedge.export.export_model``; both must fail
before the run is even read (the run path does not exist) with the same one line.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from clipedge.cli import main
from clipedge.core.errors import ClipedgeError
from clipedge.export import export_model
from clipedge.export.formats import FORMATS
from clipedge.export.options import ExportOptions

#: (CLI flags, the same request as export_model keywords, what the one-line error says)
REFUSALS = [
    (["--fp16", "--int8"], {"fp16": True, "int8": True}, "--int8 and --fp16: choose one"),
    (["--calib-count", "5"], {"calib_count": 5}, "--calib-count configures INT8 calibration"),
    (["--pixel-format", "nv12"], {"pixel_format": "nv12"}, "--pixel-format describes the camera frame"),
    (["--frame", "640x480", "--int8"], {"frame": "640x480", "int8": True}, "--frame and --int8"),
    (["--batch", "4"], {"batch": "4"}, "--batch: a dynamic ONNX accepts any batch size"),
    (["--format", "deepstream", "--int8"], {"format": "deepstream", "int8": True}, "--int8: not available with --format deepstream"),
    (["--format", "deepstream", "--embeddings"], {"format": "deepstream", "embeddings": True}, "--embeddings: not available"),
    (["--process-mode", "primary"], {"process_mode": "primary"}, "--process-mode: not used by --format onnx"),
    (["--name", "other"], {"name": "other"}, "--name: not used by --format onnx"),
    (["--format", "triton", "--timing-cache", "t"], {"format": "triton", "timing_cache": "t"}, "--timing-cache: not used by --format triton"),
    (["--format", "triton", "--adaptable"], {"format": "triton", "adaptable": True},
     "--adaptable: not used by --format triton (it applies only with --format onnx)"),
    (["--frame", "641x480", "--pixel-format", "nv12"], {"frame": "641x480", "pixel_format": "nv12"}, "must be even"),
    (["--frame", "wide"], {"frame": "wide"}, "--frame wide: expected WIDTHxHEIGHT"),
    (["--opset", "17"], {"opset": 17}, "--opset 17: expected 18 to"),
    (["--int8", "--calib-count", "0"], {"int8": True, "calib_count": 0}, "--calib-count 0: expected at least 1"),
    (["--int8", "--min-agreement", "1.5"], {"int8": True, "min_agreement": 1.5}, "--min-agreement 1.5"),
    (["--format", "triton", "--name", "../x"], {"format": "triton", "name": "../x"}, "--name '../x'"),
]
#: refused by click's own option types on the command line (its wording), by ExportOptions in the API
TYPED_REFUSALS = [
    (["--format", "deepstream", "--process-mode", "tertiary"], {"format": "deepstream", "process_mode": "tertiary"},
     "--process-mode"),
    (["--format", "tflite"], {"format": "tflite"}, "--format"),
    (["--int8", "--calib-method", "median"], {"int8": True, "calib_method": "median"}, "--calib-method"),
]


@pytest.mark.parametrize("flags, keywords, expected", REFUSALS, ids=[" ".join(r[0]) for r in REFUSALS])
def test_the_cli_and_the_api_refuse_alike(tmp_path, flags, keywords, expected):
    missing_run = tmp_path / "no-such-run"
    result = CliRunner().invoke(main, ["export", str(missing_run), *flags])
    assert result.exit_code == 2, result.output
    cli_line = result.stderr.strip().splitlines()[-1]
    with pytest.raises(ClipedgeError) as api:
        export_model(missing_run, **keywords)
    assert expected in str(api.value) and cli_line == f"Error: {api.value}"


@pytest.mark.parametrize("flags, keywords, option", TYPED_REFUSALS, ids=[" ".join(r[0]) for r in TYPED_REFUSALS])
def test_values_click_refuses_are_refused_by_the_api_too(tmp_path, flags, keywords, option):
    result = CliRunner().invoke(main, ["export", str(tmp_path / "no-such-run"), *flags])
    assert result.exit_code == 2 and option in result.stderr
    with pytest.raises(ClipedgeError, match=option):
        export_model(tmp_path / "no-such-run", **keywords)


def test_given_means_different_from_the_default():
    assert ExportOptions().given() == set()
    assert ExportOptions(fp16=True, pixel_format="rgb", progress=False).given() == {"fp16"}


def test_unknown_options_are_named():
    with pytest.raises(ClipedgeError, match="unknown option.*fp8"):
        export_model("run", fp8=True)


def test_every_format_names_its_builder():
    """The table dispatches: each row's builder exists and takes (run_dir, options)."""
    import importlib
    import inspect

    for spec in FORMATS.values():
        module, function = spec.builder.split(":")
        builder = getattr(importlib.import_module(f"clipedge.export.{module}"), function)
        assert list(inspect.signature(builder).parameters) == ["run_dir", "options"], spec.name
