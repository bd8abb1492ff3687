"""Triton model repositories from exported models: ``REPO/NAME/config.pbtxt``, ``labels.txt``, ``1/model.*``.

The configuration is built as Triton's own ``ModelConfig`` protobuf message and printed with protobuf's text
format, never filled into a text template: quoting, escaping and field names are then the schema's problem,
not ours (ultralytics#22111 broke on a hand-quoted class name). Everything the runtime's contract says about
the model is read from the model itself (``signature.py``), so a server without PyTorch can write a
repository. Repositories appear whole or not at all: each model folder is staged under a hidden name, under
its destination lock, and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from clipedge.core.atomic import as_if_made_by_mkdir, staging_folder
from clipedge.core.errors import ClipedgeError
from clipedge.core.labels import check_class_names
from clipedge.runtime.backends.onnxruntime_options import tensorrt_provider_options

from ..contract import (
    INPUT_NAME,
    LABELS_FILE,
    BatchProfile,
    sidecar_path,
)
from .adaptable import refuse_plain_repository
from .signature import PLATFORMS, ModelSignature, read_signature

#: the ``parameters`` key holding the model's clipedge metadata (JSON), which the client backend reads
METADATA_PARAMETER = "clipedge"
DEFAULT_MAX_BATCH = 32
DEFAULT_QUEUE_DELAY_US = 500
INSTANCE_KINDS = ("auto", "gpu", "cpu")
#: contract.tensorrt_provider_options keys → the keys Triton's onnxruntime backend reads for its TensorRT
#: accelerator (the parameter mapping table of triton-inference-server/onnxruntime_backend's README)
ORT_TENSORRT_KEYS = {
    "trt_max_workspace_size": "max_workspace_size_bytes",
    "trt_engine_cache_enable": "trt_engine_cache_enable",
    "trt_engine_cache_path": "trt_engine_cache_path",
    "trt_timing_cache_enable": "trt_timing_cache_enable",
    "trt_timing_cache_path": "trt_timing_cache_path",
    "trt_builder_optimization_level": "trt_builder_optimization_level",
    "trt_profile_min_shapes": "trt_profile_min_shapes",
    "trt_profile_opt_shapes": "trt_profile_opt_shapes",
    "trt_profile_max_shapes": "trt_profile_max_shapes",
}


def model_config_pb2():
    """Triton's ``model_config.proto`` as compiled Python, shipped with tritonclient (the ``serve`` extra)."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise ClipedgeError("Triton repositories need tritonclient: pip install 'clipedge[serve]'") from None
    return model_config_pb2


@dataclass(frozen=True)
class RepositoryOptions:
    """How the repository's model is scheduled; the CLI options of ``clipedge repository`` and ``export --format triton``."""

    name: str = "clipedge"
    max_batch: int | None = None
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    instances: int = 1
    instance_kind: str = "auto"
    ort_tensorrt: bool = False

    def validate(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name) or self.name.startswith("."):
            raise ClipedgeError(f"--name {self.name!r}: expected letters, digits, '-', '_' or '.' (a folder name)")
        if self.max_batch is not None and self.max_batch < 1:
            raise ClipedgeError(f"--max-batch {self.max_batch}: expected at least 1")
        if self.max_queue_delay_us < 0:
            raise ClipedgeError(f"--max-queue-delay-us {self.max_queue_delay_us}: expected 0 or more microseconds")
        if self.instances < 1:
            raise ClipedgeError(f"--instances {self.instances}: expected at least 1")
        if self.instance_kind not in INSTANCE_KINDS:
            raise ClipedgeError(f"--instance-kind {self.instance_kind}: expected one of {', '.join(INSTANCE_KINDS)}")


def max_batch_size(signature: ModelSignature, requested: int | None) -> int:
    """Triton's ``max_batch_size``: 0 for a fixed-batch model (its dims are then the full shape), else the
    largest batch the model takes: the engine profile's maximum, or ``requested`` (default 32) for ONNX."""
    if signature.fixed_batch:
        if requested is not None:
            raise ClipedgeError(f"--max-batch {requested}: model {signature.source} takes a fixed batch of "
                                f"{signature.fixed_batch}; leave --max-batch out")
        return 0
    if signature.profile is not None:
        if requested is not None and requested > signature.profile.max:
            raise ClipedgeError(f"--max-batch {requested}: engine {signature.source} was built for batches up to "
                                f"{signature.profile.max}")
        return requested or signature.profile.max
    return requested or DEFAULT_MAX_BATCH


def instance_kind(signature: ModelSignature, kind: str) -> str:
    """GPU instances for fp32/fp16 ONNX and engines; the INT8 ONNX is the CPU model (its integer kernels run there)."""
    if kind == "auto":
        kind = "cpu" if signature.contract.precision == "int8" and signature.source.suffix.lower() == ".onnx" else "gpu"
    if kind == "cpu" and signature.source.suffix.lower() != ".onnx":
        raise ClipedgeError(f"--instance-kind cpu: TensorRT engine {signature.source} runs only on a GPU")
    return kind


def build_config(signature: ModelSignature, options: RepositoryOptions, backend: str | None = None,
                 extra_parameters: dict[str, str] | None = None):
    """The model's ``ModelConfig`` message. ``backend`` (e.g. "python", as ``clipedge serve`` uses) replaces the
    platform the model file implies, keeping every tensor, label and parameter the same."""
    pb = model_config_pb2()
    contract = signature.contract
    batch = max_batch_size(signature, options.max_batch)
    size = contract.image_size
    config = pb.ModelConfig(name=options.name, max_batch_size=batch)
    if backend:
        config.backend = backend
    else:
        config.platform = PLATFORMS[signature.source.suffix.lower()][0]
    image_dims = [size, size, 3] if batch else [contract.fixed_batch, size, size, 3]
    # Triton accepts a format only on a 3-dim (batch excluded) image input, so a fixed-batch model states none
    image_format = pb.ModelInput.FORMAT_NHWC if batch else pb.ModelInput.FORMAT_NONE
    config.input.add(name=INPUT_NAME, data_type=pb.TYPE_UINT8, format=image_format, dims=image_dims)
    for name, (dtype, dims) in signature.outputs.items():
        full = dims if batch else [contract.fixed_batch, *dims]
        output = config.output.add(name=name, data_type=pb.DataType.Value(dtype), dims=full)
        if name == "probs" and -1 not in dims:  # a bank's class axis varies: a fixed labels.txt would misname it
            output.label_filename = LABELS_FILE
    if batch:
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    kind = "cpu" if backend == "python" else instance_kind(signature, options.instance_kind)
    config.instance_group.add(count=options.instances, kind=pb.ModelInstanceGroup.KIND_CPU if kind == "cpu"
                              else pb.ModelInstanceGroup.KIND_GPU)
    warmup = config.model_warmup.add(name="zero_frames", batch_size=1 if batch else 0)
    warmup.inputs[INPUT_NAME].CopyFrom(pb.ModelWarmup.Input(data_type=pb.TYPE_UINT8, dims=image_dims, zero_data=True))
    config.parameters[METADATA_PARAMETER].string_value = json.dumps(signature.metadata, sort_keys=True)
    for key, value in (extra_parameters or {}).items():
        config.parameters[key].string_value = value
    if options.ort_tensorrt:
        _add_ort_tensorrt(config, signature, options, kind, batch, backend)
    return config


def _add_ort_tensorrt(config, signature: ModelSignature, options: RepositoryOptions, kind: str, batch: int,
                      backend: str | None) -> None:
    """onnxruntime's TensorRT accelerator in Triton: caches in the model folder, one profile over the batch range,
    precision_mode FP32 so fp16 models keep their fp32 islands and INT8 models their Q/DQ (never a calibration table)."""
    if backend or signature.source.suffix.lower() != ".onnx" or kind != "gpu":
        raise ClipedgeError("--ort-tensorrt: applies to an ONNX model on GPU instances under Triton's onnxruntime "
                            "backend (not to engines, --instance-kind cpu, or `clipedge serve`)")
    size = signature.contract.image_size
    profile = signature.profile or BatchProfile(1, min(8, batch), batch)
    cache = f"/tmp/clipedge-trt-cache/{options.name}"  # on the serving host; engines are specific to its GPU
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
    accelerator.parameters["precision_mode"] = "FP32"
    for key, value in tensorrt_provider_options(cache, size, profile).items():
        if key in ORT_TENSORRT_KEYS:
            accelerator.parameters[ORT_TENSORRT_KEYS[key]] = value.lower() if value in ("True", "False") else value


def config_text(config) -> str:
    """``config.pbtxt`` as protobuf's text format prints the message."""
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def parse_config(text: str, source: Path | str):
    """A ``config.pbtxt`` parsed with Triton's schema; a one-line error naming the file otherwise."""
    from google.protobuf import text_format

    pb = model_config_pb2()
    try:
        return text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as error:
        raise ClipedgeError(f"{source}: not a valid Triton model configuration ({error})") from None


def check_repository_destination(repo: Path, name: str, overwrite: bool) -> Path:
    """REPO/NAME, refused when it exists and is not empty unless ``overwrite``."""
    if repo.exists() and not repo.is_dir():
        raise ClipedgeError(f"--out {repo}: is a file; expected a model repository folder")
    if repo.exists() and not os.access(repo, os.W_OK):
        raise ClipedgeError(f"--out {repo}: folder is not writable")
    folder = repo / name
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise ClipedgeError(f"--out {repo}: model folder {folder} exists and is not empty; add --overwrite to replace it")
    return folder


def write_model_folder(signature: ModelSignature, repo: Path, config, files: dict[str, Path | str],
                       overwrite: bool = False, link: bool = False) -> Path:
    """Write REPO/NAME with ``config.pbtxt``, ``labels.txt`` (where the config names it) and ``files`` (relative
    name → source file, or text) staged under a hidden name, then renamed into place; the old folder is replaced only once the new
    one is complete. ``link`` symlinks source files instead of copying them (``clipedge serve``'s scratch repository)."""
    folder = check_repository_destination(repo, config.name, overwrite)
    check_class_names(signature.contract.class_names, f"model {signature.source}", "Triton's labels.txt (one class per line)")
    repo.mkdir(parents=True, exist_ok=True)
    with staging_folder(folder) as staging:  # under the folder's lock: a second writer is refused in one line
        check_repository_destination(repo, config.name, overwrite)  # again: one may have finished meanwhile
        (staging / "config.pbtxt").write_text(config_text(config), encoding="utf-8")
        if any(output.label_filename for output in config.output):
            (staging / LABELS_FILE).write_text("".join(f"{name}\n" for name in signature.contract.class_names),
                                               encoding="utf-8")
        for relative, source in files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, str):
                target.write_text(source, encoding="utf-8")
            elif link:
                target.symlink_to(source.resolve())
            else:
                shutil.copyfile(source, target)
        as_if_made_by_mkdir(staging)  # Triton in a container may run as another user
        if folder.exists():
            retired = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(retired, ignore_errors=True)
            os.replace(folder, retired)
            os.replace(staging, folder)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, folder)
    return folder


def write_repository(model: str | Path, repo: str | Path, options: RepositoryOptions = RepositoryOptions(),
                     overwrite: bool = False) -> Path:
    """A Triton model repository for an exported model; returns the model folder REPO/NAME."""
    options.validate()
    model, repo = Path(model), Path(repo)
    signature = read_signature(model)
    refuse_plain_repository(signature)
    config = build_config(signature, options)
    model_file = PLATFORMS[model.suffix.lower()][1]
    files = {f"1/{model_file}": model}
    if model.suffix.lower() != ".onnx":  # Triton ignores it; `clipedge serve REPO` runs the engine with it
        files[f"1/{sidecar_path(Path(model_file)).name}"] = sidecar_path(model)
    return write_model_folder(signature, repo, config, files, overwrite)
