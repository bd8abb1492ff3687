"""Every JSON clipedge writes for other programs validates against the schema it ships (clipedge.runtime.schemas)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from cli_checks import validate
from click.testing import CliRunner
from conftest import write_image_folder

import clipedge
from clipedge.cli import main
from clipedge.runtime.contract import decode_metadata
from clipedge.runtime.contract.onnx_metadata import read_onnx_metadata
from clipedge.runtime.schemas import SCHEMA_VERSIONS, load_schema


@pytest.fixture(scope="module")
def calibrated_export(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("schemas")
    data = write_image_folder(root / "data", per_class=10)
    run = root / "run"
    clipedge.train(data, run, method="clip-adapter", backbone="test-tiny-rn", pretrained="none", shots=2, views=1,
                   epochs=2, progress=False)
    validate(cli_json("calibrate", run, "--json"), "calibrate")  # the CLI's own JSON, and the manifest entry it writes
    from clipedge.export import export_model

    return data, run, export_model(run, parity_count=8, progress=False).artifact


def cli_json(*args: object) -> dict:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def test_run_manifest_and_model_metadata(calibrated_export):
    _, run, model = calibrated_export
    manifest = json.loads((run / "clipedge.json").read_text())
    assert "calibration" in manifest, "the calibrated manifest exercises the optional part of the schema"
    validate(manifest, "manifest")
    metadata = decode_metadata(read_onnx_metadata(model))
    validate(metadata, "onnx_metadata")
    assert metadata["schema_version"] == SCHEMA_VERSIONS["onnx_metadata"] and "temperature" in metadata


def test_eval_predict_and_bench_json(calibrated_export):
    data, run, model = calibrated_export
    validate(cli_json("eval", run, "--json"), "eval")
    report = cli_json("predict", model, data / "red", data / "blue", "--json", "--top-k", "2")
    assert len(report["predictions"]) == 20
    validate(report, "predict")
    validate(cli_json("bench", model, "--batch", "1,2", "--iters", "2", "--warmup", "0", "--rounds", "1", "--json"),
             "bench")


def test_schemas_reject_what_breaks_the_contract(calibrated_export):
    """The schemas are not vacuous: a missing or mistyped field fails validation."""
    _, run, model = calibrated_export
    manifest = json.loads((run / "clipedge.json").read_text())
    with pytest.raises(jsonschema.ValidationError, match="class_names"):
        validate({k: v for k, v in manifest.items() if k != "class_names"}, "manifest")
    metadata = decode_metadata(read_onnx_metadata(model))
    with pytest.raises(jsonschema.ValidationError):
        validate({**metadata, "precision": "fp8"}, "onnx_metadata")
    with pytest.raises(jsonschema.ValidationError, match="tensorrt_version"):
        validate(metadata, "sidecar")


def test_the_manifest_schema_names_every_registered_head():
    """A new head is registered once; the shipped schema must know its kind, or its runs would not load."""
    from clipedge.heads.registry import HEADS

    kinds = load_schema("manifest")["properties"]["head"]["properties"]["kind"]["enum"]
    assert sorted(kinds) == sorted(HEADS)
