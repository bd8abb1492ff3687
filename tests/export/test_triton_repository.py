"""Triton model repositories: every config.pbtxt parsed with Triton's own schema and checked against the model
as onnxruntime sees it; labels, parameters, scheduling options; bad input refused in one line."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from conftest import write_image_folder
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

import clipedge
from clipedge.cli import main
from clipedge.core.errors import ClipedgeError
from clipedge.export import export_model
from clipedge.runtime.contract import sidecar_path
from clipedge.runtime.triton.repository import RepositoryOptions, build_config
from clipedge.runtime.triton.server import ServeOptions, resolve_model, serving_repository
from clipedge.runtime.triton.signature import read_signature

ORT_TO_TRITON = {"tensor(uint8)": pb.TYPE_UINT8, "tensor(float)": pb.TYPE_FP32}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("triton-repo")
    data = write_image_folder(root / "data", per_class=10, classes={"red car": (220, 30, 30), 'say "hi"': (30, 200, 40),
                                                                    "blue": (30, 40, 220)})
    run = root / "run"
    clipedge.train(data, run, method="linear-probe", backbone="test-tiny-vit", pretrained="none", shots=3, views=1,
                   progress=False)
    return run


@pytest.fixture(scope="module")
def repository(run_dir, tmp_path_factory):
    """Two models in one repository: a dynamic-batch one with embeddings written by `clipedge export --format
    triton`, and a fixed-batch one written by the Python API, ``export_model(run, repo, format="triton")``."""
    repo = tmp_path_factory.mktemp("repo") / "models"
    args = ["--name", "dynamic", "--embeddings", "--max-batch", "16", "--instances", "2"]
    result = CliRunner().invoke(main, ["export", str(run_dir), "--format", "triton", "--out", str(repo), *args])
    assert result.exit_code == 0, result.output
    written = export_model(run_dir, repo, format="triton", name="fixed", fixed_batch=True, batch=2, progress=False)
    assert written.format == "triton" and written.artifact == repo / "fixed" / "1" / "model.onnx"
    assert written.related["repository"] == repo / "fixed" and not (run_dir / "export" / "model.onnx").exists()
    return repo


def read_config(folder: Path):
    return text_format.Parse((folder / "config.pbtxt").read_text(), pb.ModelConfig())


def test_every_config_matches_the_model_onnxruntime_loads(repository, run_dir):
    folders = sorted(p.parent for p in repository.glob("*/config.pbtxt"))
    assert [f.name for f in folders] == ["dynamic", "fixed"]
    classes = clipedge.load_run(run_dir).class_names
    for folder in folders:
        config = read_config(folder)
        session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        assert config.name == folder.name and config.platform == "onnxruntime_onnx"
        batch = config.max_batch_size
        for declared, actual in [*zip(config.input, session.get_inputs()), *zip(config.output, session.get_outputs())]:
            assert declared.name == actual.name
            assert declared.data_type == ORT_TO_TRITON[actual.type]
            expected = actual.shape[1:] if batch else actual.shape  # batch dim implied when max_batch_size > 0
            assert list(declared.dims) == list(expected), (folder.name, declared.name)
        assert len(config.input) == len(session.get_inputs()) and len(config.output) == len(session.get_outputs())
        probs = next(o for o in config.output if o.name == "probs")
        assert probs.label_filename == "labels.txt"
        assert (folder / "labels.txt").read_text(encoding="utf-8").splitlines() == classes
        metadata = json.loads(config.parameters["clipedge"].string_value)
        assert metadata == session.get_modelmeta().custom_metadata_map
        assert config.model_warmup[0].inputs["images"].zero_data


def test_scheduling_follows_the_options(repository):
    dynamic, fixed = read_config(repository / "dynamic"), read_config(repository / "fixed")
    assert dynamic.max_batch_size == 16 and dynamic.input[0].format == pb.ModelInput.FORMAT_NHWC
    assert dynamic.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.kind, g.count) for g in dynamic.instance_group] == [(pb.ModelInstanceGroup.KIND_GPU, 2)]
    assert [o.name for o in dynamic.output] == ["logits", "probs", "embeddings"]
    assert fixed.max_batch_size == 0 and list(fixed.input[0].dims) == [2, 32, 32, 3]
    assert not fixed.HasField("dynamic_batching"), "a fixed-batch model cannot be batched by Triton"


def test_ort_tensorrt_accelerator_keeps_fp32_precision_and_the_profile(repository, tmp_path):
    result = CliRunner().invoke(main, ["repository", str(repository / "dynamic" / "1" / "model.onnx"), "--out",
                                       str(tmp_path), "--ort-tensorrt", "--max-batch", "8"])
    assert result.exit_code == 0, result.output
    [accelerator] = read_config(tmp_path / "clipedge").optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    parameters = dict(accelerator.parameters)
    assert parameters["precision_mode"] == "FP32" and parameters["trt_engine_cache_enable"] == "true"
    assert parameters["trt_profile_min_shapes"] == "images:1x32x32x3"
    assert parameters["trt_profile_max_shapes"] == "images:8x32x32x3"
    assert not any("calibration" in key for key in parameters)


def test_engine_repository_takes_its_batch_range_from_the_sidecar(repository, tmp_path):
    """The writer reads an engine's contract from the sidecar `clipedge export --format engine` writes; the
    engine bytes are copied untouched (no TensorRT here, so Triton does not load this one)."""
    onnx_metadata = json.loads(read_config(repository / "dynamic").parameters["clipedge"].string_value)
    sidecar = {key: value if key in ("image_size", "precision") else json.loads(value) if value[:1] in "[{" else value
               for key, value in onnx_metadata.items()}
    sidecar.update(outputs=["logits", "probs"], precision="fp16", tensorrt_version="10.7.0",
                   build_flags={"profile": "1,4,12"})
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"serialized engine bytes")
    sidecar_path(engine).write_text(json.dumps(sidecar))
    result = CliRunner().invoke(main, ["repository", str(engine), "--out", str(tmp_path / "repo")])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "repo" / "clipedge"
    config = read_config(folder)
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 12
    assert [o.name for o in config.output] == ["logits", "probs"] and list(config.output[1].dims) == [3]
    assert (folder / "1" / "model.plan").read_bytes() == b"serialized engine bytes"
    assert json.loads((folder / "1" / "model.plan.json").read_text())["tensorrt_version"] == "10.7.0"


def refused(*args) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_bad_input_is_refused_in_one_line(repository, run_dir, tmp_path):
    model = repository / "dynamic" / "1" / "model.onnx"
    assert "exists and is not empty" in refused("repository", model, "--out", repository, "--name", "dynamic")
    assert "exists and is not empty" in refused("export", run_dir, "--format", "triton", "--out", repository,
                                                "--name", "fixed")
    assert "--name" in refused("repository", model, "--out", tmp_path, "--name", "../up")
    assert "--max-batch 4" in refused("repository", repository / "fixed" / "1" / "model.onnx", "--out", tmp_path,
                                      "--max-batch", "4")
    assert "--ort-tensorrt" in refused("repository", model, "--out", tmp_path, "--ort-tensorrt", "--instance-kind", "cpu")
    assert "--name" in refused("export", run_dir, "--out", tmp_path / "m.onnx", "--name", "x")
    bogus = tmp_path / "bogus.onnx"
    bogus.write_text("not a model")
    assert "bogus.onnx" in refused("repository", bogus, "--out", tmp_path / "r")
    assert "bogus.onnx" in refused("serve", bogus, "--http-port", "1", "--grpc-port", "2", "--metrics-port", "3")
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir()), "nothing half-written"


def test_overwrite_replaces_the_model_folder_whole(repository, tmp_path):
    model = repository / "dynamic" / "1" / "model.onnx"
    for _ in range(2):
        result = CliRunner().invoke(main, ["repository", str(model), "--out", str(tmp_path), "--overwrite"])
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clipedge"], "no staging folders left behind"
    assert np.array_equal(np.frombuffer((tmp_path / "clipedge" / "1" / "model.onnx").read_bytes(), np.uint8),
                          np.frombuffer(model.read_bytes(), np.uint8))


def test_a_second_writer_of_the_model_folder_is_refused_and_the_folder_is_readable_by_others(repository, tmp_path):
    """One writer per model folder (the destination lock, held here by a real second process), and a published
    folder has mkdir's permissions, not mkdtemp's 0700: Triton in a container may run as another user."""
    model = repository / "dynamic" / "1" / "model.onnx"
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom clipedge.core.lock import destination_lock\n"
                               "with destination_lock(sys.argv[1]):\n    print('locked', flush=True)\n"
                               "    sys.stdin.readline()", str(tmp_path / "clipedge")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert f"(pid {holder.pid}) is writing it now" in refused("repository", model, "--out", tmp_path)
        assert not (tmp_path / "clipedge").exists()
    finally:
        holder.communicate("go\n", timeout=30)
    umask = os.umask(0o022)
    try:
        result = CliRunner().invoke(main, ["repository", str(model), "--out", str(tmp_path)])
    finally:
        os.umask(umask)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((tmp_path / "clipedge").stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clipedge"], "no lock file or staging folder left"


def test_int8_onnx_gets_cpu_instances(repository):
    signature = read_signature(repository / "dynamic" / "1" / "model.onnx")
    int8 = dataclasses.replace(signature, contract=dataclasses.replace(signature.contract, precision="int8"))
    config = build_config(int8, RepositoryOptions())
    assert [g.kind for g in config.instance_group] == [pb.ModelInstanceGroup.KIND_CPU]
    assert [g.kind for g in build_config(signature, RepositoryOptions()).instance_group] == [pb.ModelInstanceGroup.KIND_GPU]


def test_serve_takes_a_repositorys_model_and_scheduling(repository, tmp_path):
    served = resolve_model(repository, ServeOptions(name="dynamic"))
    assert served.model == repository / "dynamic" / "1" / "model.onnx"
    assert (served.options.max_batch, served.options.instances, served.options.max_queue_delay_us) == (16, 2, 500)
    assert resolve_model(repository / "fixed", ServeOptions(instances=3)).options.instances == 3
    with pytest.raises(ClipedgeError, match="pick one with --name"):
        resolve_model(repository, ServeOptions())


def test_serving_repository_has_the_same_contract_and_an_encoded_twin(repository, tmp_path):
    """What `clipedge serve` gives Triton: python-backend models with the written repository's tensors and labels."""
    for name in ("dynamic", "fixed"):
        served = resolve_model(repository / name, ServeOptions())
        names = serving_repository(served, tmp_path / name)
        written, uint8, twin = (read_config(repository / name), read_config(tmp_path / name / names[0]),
                                read_config(tmp_path / name / names[1]))
        assert uint8.backend == twin.backend == "python" and names[1] == f"{name}_encoded"
        assert list(uint8.input) == list(written.input) and list(uint8.output) == list(written.output)
        assert uint8.parameters["clipedge"] == written.parameters["clipedge"]
        assert [i.data_type for i in twin.input] == [pb.TYPE_STRING] and list(twin.input[0].dims) == [1]
        assert twin.max_batch_size == (written.max_batch_size or 2) and not twin.model_warmup
        assert (tmp_path / name / names[1] / "labels.txt").read_text() == (repository / name / "labels.txt").read_text()
        assert (tmp_path / name / names[0] / "1" / "model.py").is_file()


def test_a_served_bank_model_states_no_labels_its_scores_may_outgrow(run_dir, tmp_path):
    """An adaptable model's class axis follows its bank, which may gain, lose or rename a class while it is
    served: a labels.txt of the exported classes on ``probs`` would make Triton's classification extension name
    the scores wrongly, so the served config names none and each answer carries ``class_names`` instead."""
    model = export_model(run_dir, tmp_path / "model.onnx", adaptable=True, parity_count=4, progress=False).artifact
    names = serving_repository(resolve_model(model, ServeOptions(name="bank")), tmp_path / "repo")
    for name in names:
        config = read_config(tmp_path / "repo" / name)
        outputs = {output.name: output for output in config.output}
        assert set(outputs) == {"logits", "probs", "class_names"} and list(outputs["probs"].dims) == [-1]
        assert not any(output.label_filename for output in config.output)
        assert not (tmp_path / "repo" / name / "labels.txt").exists()
