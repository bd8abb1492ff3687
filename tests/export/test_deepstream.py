"""``clipedge export --format deepstream``: the float NCHW variant, its parity, and the nvinfer files beside it.

DeepStream cannot run here: the configs are parsed back and every key checked against the documented
property table (clipedge.export.nvinfer_config), the label file is read the way nvinfer's parser reads it,
and the ONNX goes through onnxruntime, Polygraphy's lint and the static TensorRT check (nvinfer builds its
engine with TensorRT). The config writer's own refusals are in test_nvinfer_config.py.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from conftest import write_image_folder

import clipedge
from clipedge.backbone import load_backbone_from_spec
from clipedge.cli import main
from clipedge.core.errors import ClipedgeError
from clipedge.export import export_model
from clipedge.export.deepstream import nvinfer_input
from clipedge.export.deepstream_config import (
    GIE,
    Threshold,
    config_entries,
    geometry_for,
    strictly_below,
    threshold_for,
)
from clipedge.export.fuse import FusedClassifier
from clipedge.export.nvinfer_config import (
    NVINFER_KEYS,
    format_value,
    render_config,
)
from clipedge.run_dir import load_run, update_manifest
from clipedge.runtime import Classifier
from clipedge.runtime.contract import NVINFER_INPUT_NAME, NVINFER_OUTPUT_NAMES
from clipedge.runtime.contract.onnx_metadata import read_onnx_metadata
from clipedge.runtime.tensorrt.check import check_tensorrt_compatible

PARITY = 16
TEMPERATURE = 0.25
CLASSES = ["blue", "green", "red"]
FILES = {"model.onnx", "labels.txt", "config_infer_primary.txt", "config_infer_secondary.txt", "README.md"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A zero-shot run on the tiny ViT (resize_mode 'shortest', open_clip's default), calibrated on max_prob."""
    root = tmp_path_factory.mktemp("deepstream")
    data = write_image_folder(root / "data", per_class=8)
    clipedge.train(data, root / "run", method="zero-shot", backbone="test-tiny-vit", pretrained="none", shots=4,
                   progress=False)
    update_manifest(root / "run", "calibration",
                    {"temperature": TEMPERATURE, "rejection_score": "max_prob", "threshold": 0.6})
    return root / "run"


@pytest.fixture(scope="module")
def exported(run):
    result = export_model(run, out=run.parent / "ds", format="deepstream", parity_count=PARITY)
    return result


def read_config(path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), comment_prefixes=("#",))
    parser.optionxform = str  # nvinfer keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def nvinfer_labels(text: str) -> list[list[str]]:
    """nvinfer's parseLabelsFile: each non-empty line is one output layer's labels, split on ';'."""
    return [line.split(";") for line in text.split("\n") if line]


def parse_value(key: str, raw: str):
    """A config value back into Python by the table's type, so ``format_value`` can re-check it."""
    kind = NVINFER_KEYS[key].kind
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind == "bool":
        return {"1": True, "0": False}[raw]
    if kind == "int-list":
        return [int(v) for v in raw.split(";")]
    if kind == "float-list":
        return [float(v) for v in raw.split(";")]
    if kind == "string-list":
        return raw.split(";")
    return raw


def test_export_writes_the_folder_and_passes_parity(exported):
    folder = exported.artifact.parent
    assert {p.name for p in folder.iterdir()} == FILES
    assert exported.format == "deepstream" and exported.precision == "fp32"
    assert exported.parity["passed"] and exported.parity["images"] == PARITY
    assert exported.parity["agreement_fused"] == 1.0 and exported.parity["max_dprob_pipeline"] <= 1e-4
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "staging left behind"
    assert oct(folder.stat().st_mode & 0o777) == oct(0o755)


def test_onnx_is_what_the_config_declares(exported, run):
    """float32 [N, 3, H, W] named as the contract says, `probs` its only output, dims and names equal to the config's;
    and its probabilities are the fused PyTorch module's on the same uint8 frames, fed nvinfer's way."""
    session = ort.InferenceSession(str(exported.artifact), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    assert (model_input.name, model_input.type) == (NVINFER_INPUT_NAME, "tensor(float)")
    assert not isinstance(model_input.shape[0], int) and model_input.shape[1:] == [3, 32, 32]
    assert [o.name for o in session.get_outputs()] == list(NVINFER_OUTPUT_NAMES) == ["probs"]
    for mode in GIE:
        config = read_config(exported.artifact.parent / f"config_infer_{mode}.txt")["property"]
        assert [int(v) for v in config["infer-dims"].split(";")] == model_input.shape[1:]
        assert config["output-blob-names"].split(";") == [o.name for o in session.get_outputs()]
    metadata = read_onnx_metadata(exported.artifact)
    assert json.loads(metadata["input"])["name"] == NVINFER_INPUT_NAME and json.loads(metadata["outputs"]) == ["probs"]
    assert check_tensorrt_compatible(exported.artifact) == []  # nvinfer builds its engine with TensorRT

    loaded = load_run(run)
    backbone = load_backbone_from_spec(loaded.backbone_spec)
    fused = FusedClassifier(backbone.model.visual, loaded.head, loaded.backbone_spec, TEMPERATURE)
    frames = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)  # a batch never exported
    with torch.no_grad():
        expected = fused(torch.from_numpy(frames))[1].numpy()
    (probs,) = session.run(None, {NVINFER_INPUT_NAME: nvinfer_input(frames)})
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_the_uint8_runtime_refuses_the_variant_in_one_line(exported):
    with pytest.raises(ClipedgeError, match=r"input is float32 \[N, 3, 32, 32\]; expected uint8"):
        Classifier(exported.artifact)


def test_polygraphy_lints_the_deepstream_onnx(exported, tmp_path):
    polygraphy = shutil.which("polygraphy", path=os.path.dirname(sys.executable)) or shutil.which("polygraphy")
    if not polygraphy:
        pytest.skip("polygraphy is not installed (pip install polygraphy)")
    report = tmp_path / "lint.json"
    result = subprocess.run([polygraphy, "check", "lint", str(exported.artifact), "-o", str(report)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(report.read_text())["summary"]
    assert summary["failing"] == [] and summary["passing"], summary


def test_config_keys_are_all_in_the_documented_table(exported):
    folder = exported.artifact.parent
    for mode, (process_mode, gie_id, batch) in GIE.items():
        config = read_config(folder / f"config_infer_{mode}.txt")
        assert config.sections() == ["property"]
        for key, raw in config["property"].items():
            assert key in NVINFER_KEYS and NVINFER_KEYS[key].group == "property", key
            assert format_value(key, parse_value(key, raw)) == raw, key
        values = config["property"]
        assert values["network-type"] == "1" and values["process-mode"] == str(process_mode)
        assert values["gie-unique-id"] == str(gie_id) and values["batch-size"] == str(batch)
        assert ("operate-on-gie-id" in values) == (mode == "secondary")
        assert values["net-scale-factor"] == "1.0" and values["offsets"] == "0.0;0.0;0.0"
        assert values["network-input-order"] == "0" and values["model-color-format"] == "0"
        assert values["network-mode"] == "0" and float(values["classifier-threshold"]) == strictly_below(0.6)
        assert (folder / values["onnx-file"]).is_file() and (folder / values["labelfile-path"]).is_file()
        assert values["model-engine-file"] == f"model.onnx_b{batch}_gpu0_fp32.engine"


def test_label_file_is_nvinfer_classifier_format(exported):
    text = (exported.artifact.parent / "labels.txt").read_text(encoding="utf-8")
    assert text == "blue;green;red\n"
    assert nvinfer_labels(text) == [json.loads(read_onnx_metadata(exported.artifact)["class_names"])] == [CLASSES]


@pytest.mark.parametrize("mode, maintain, padding, caveat", [("squash", "0", None, False), ("longest", "1", "1", False),
                                                             ("shortest", "1", "1", True)])
def test_resize_mode_mapping(mode, maintain, padding, caveat):
    geometry = geometry_for(mode, 224)
    assert (geometry.caveat is not None) == caveat
    config = configparser.ConfigParser(interpolation=None, comment_prefixes=("#",))
    config.read_string(render_config(config_entries("secondary", 16, "fp16", 224, geometry, Threshold(0.0, "x"))))
    assert config["property"]["maintain-aspect-ratio"] == maintain
    assert config["property"].get("symmetric-padding") == padding
    assert config["property"]["network-mode"] == "2" and config["property"]["infer-dims"] == "3;224;224"


def test_shortest_mode_warns_and_the_cli_writes_one_config_into_a_replaced_folder(run, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "stale.txt").write_text("from an older export")
    args = ["export", str(run), "--format", "deepstream", "--out", str(out), "--process-mode", "secondary",
            "--batch", "4"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2 and "directory is not empty; pass --overwrite" in refused.stderr
    assert (out / "stale.txt").exists()

    result = CliRunner().invoke(main, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "has no Gst-nvinfer equivalent" in result.stderr and "letterbox" in result.stderr
    assert {p.name for p in out.iterdir()} == FILES - {"config_infer_primary.txt"}
    config = read_config(out / "config_infer_secondary.txt")["property"]
    assert config["batch-size"] == "4" and config["maintain-aspect-ratio"] == "1"
    readme = (out / "README.md").read_text()
    assert "no Gst-nvinfer equivalent" in readme and "letterboxing kept the top-1 class" in readme
    assert str(out / "config_infer_secondary.txt") in result.stdout


@pytest.mark.parametrize("threshold", [0.6, 1.0, 0.5, 0.999999, 1e-8])
def test_nvinfer_keeps_exactly_the_probabilities_clipedge_accepts(threshold):
    """nvinfer attaches a label when probability > classifier-threshold; clipedge accepts a score >= its threshold."""
    written = strictly_below(threshold)
    centre = np.float32(threshold)
    neighbours = [centre]
    for direction in (np.float32(-np.inf), np.float32(np.inf)):
        value = centre
        for _ in range(3):
            value = np.nextafter(value, direction)
            neighbours.append(value)
    for p in neighbours:
        assert (p > np.float32(written)) == (p >= threshold), (p, written)
    assert strictly_below(0.0) == 0.0


def test_energy_rejection_is_not_passed_off_as_a_probability(run, tmp_path):
    energy = tmp_path / "energy"
    shutil.copytree(run, energy)
    update_manifest(energy, "calibration", {"temperature": 1.0, "rejection_score": "energy", "threshold": 3.5})
    threshold = threshold_for(load_run(energy))
    assert threshold.value == 0.0 and "energy" in threshold.warning and "cannot express" in threshold.warning
    update_manifest(energy, "calibration", {"temperature": 1.0})
    assert threshold_for(load_run(energy)).value == 0.0


# --- bad input ------------------------------------------------------------------------------------------------------


def one_line_error(args: list) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2, (result.output, result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@pytest.mark.parametrize("extra, expected", [
    (["--process-mode", "tertiary"], "--process-mode"),
    (["--int8"], "--int8: not available with --format deepstream"),
    (["--embeddings"], "--embeddings: not available with --format deepstream"),
    (["--batch", "1,8,32"], "takes one batch size N"),
    (["--batch", "2048"], "at most 1024"),
    (["--fixed-batch"], "--fixed-batch: not used by --format deepstream"),
])
def test_bad_options_fail_in_one_line(run, tmp_path, extra, expected):
    line = one_line_error(["export", run, "--format", "deepstream", "--out", tmp_path / "ds", *extra])
    assert expected in line
    assert not (tmp_path / "ds").exists()


def test_bad_process_mode_through_the_api(run, tmp_path):
    with pytest.raises(ClipedgeError, match="--process-mode tertiary: expected one of primary, secondary, both"):
        export_model(run, out=tmp_path / "ds", format="deepstream", process_mode="tertiary")
    with pytest.raises(ClipedgeError, match="--process-mode: not used by --format onnx"):
        export_model(run, out=tmp_path / "m.onnx", process_mode="primary")


@pytest.mark.parametrize("name, what", [("gr;een", "contains ';'"), ("gr\neen", "contains '\\n'"), ("  ", "is empty")])
def test_class_names_nvinfer_cannot_hold_are_refused_before_any_work(run, tmp_path, name, what):
    bad = tmp_path / "run"
    shutil.copytree(run, bad)
    manifest = json.loads((bad / "clipedge.json").read_text())
    manifest["class_names"] = ["blue", name, "red"]
    (bad / "clipedge.json").write_text(json.dumps(manifest))
    line = one_line_error(["export", bad, "--format", "deepstream", "--out", tmp_path / "ds"])
    assert "class name" in line and what in line and "label file" in line
    assert not (tmp_path / "ds").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
