"""What ``clipedge serve`` serves: the model file behind a source, its options, and the scratch repository.

A source is an exported ``.onnx``/``.engine`` file, a model folder or a repository with one model; its
repository's scheduling applies where no option overrides it. The scratch repository holds the model under
its name with the exact tensors, labels and parameters of a written repository (``repository.build_config``),
served by Triton's python backend through ``python_model.py``, plus ``NAME_encoded``, a twin that takes
JPEG/PNG bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from clipedge.core.errors import ClipedgeError

from ..contract import sidecar_path
from .adaptable import served_bank, served_signature
from .parameters import (
    BANK_FILE_PARAMETER,
    ENCODED_PARAMETER,
    MODEL_FILE_PARAMETER,
    PYTHON_MODEL_SOURCE,
    THREADS_PARAMETER,
)
from .repository import (
    RepositoryOptions,
    build_config,
    model_config_pb2,
    parse_config,
    write_model_folder,
)
from .signature import PLATFORMS, read_signature

ENCODED_SUFFIX = "_encoded"


@dataclass(frozen=True)
class ServeOptions:
    """Ports, address and scheduling of ``clipedge serve`` (None: the repository's or model's own value)."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    name: str | None = None
    max_batch: int | None = None
    max_queue_delay_us: int | None = None
    instances: int | None = None
    threads: int | None = None


@dataclass(frozen=True)
class ServedModel:
    """The exported model file to serve and the repository options it is served with."""

    model: Path
    options: RepositoryOptions


def resolve_model(source: Path, serve: ServeOptions) -> ServedModel:
    """An exported ``.onnx``/``.engine`` file, a model folder (``NAME/config.pbtxt``) or a repository with one
    model (or the one ``--name`` picks); a repository's own scheduling applies where no option overrides it."""
    if source.is_file():
        base = RepositoryOptions(name=serve.name or "clipedge")
    elif (source / "config.pbtxt").is_file():
        return _from_model_folder(source, serve)
    elif source.is_dir():
        folders = sorted(p.parent for p in source.glob("*/config.pbtxt"))
        if serve.name:
            folders = [f for f in folders if f.name == serve.name]
        if len(folders) != 1:
            names = ", ".join(f.name for f in sorted(source.glob("*/config.pbtxt"))) or "none"
            raise ClipedgeError(f"MODEL_OR_REPO {source}: expected one model folder with a config.pbtxt "
                                f"(found: {names}); pick one with --name")
        return _from_model_folder(folders[0], serve)
    else:
        raise ClipedgeError(f"MODEL_OR_REPO {source}: no such file or folder")
    return ServedModel(source, _override(base, serve))


def _from_model_folder(folder: Path, serve: ServeOptions) -> ServedModel:
    config = parse_config((folder / "config.pbtxt").read_text(encoding="utf-8"), folder / "config.pbtxt")
    files = [folder / "1" / name for _, name in PLATFORMS.values() if (folder / "1" / name).is_file()]
    if not files:
        raise ClipedgeError(f"MODEL_OR_REPO {folder}: no 1/model.onnx or 1/model.plan in the model folder")
    base = RepositoryOptions(name=serve.name or config.name or folder.name, max_batch=config.max_batch_size or None,
                             max_queue_delay_us=config.dynamic_batching.max_queue_delay_microseconds,
                             instances=sum(g.count for g in config.instance_group) or 1)
    return ServedModel(files[0], _override(base, serve))


def _override(base: RepositoryOptions, serve: ServeOptions) -> RepositoryOptions:
    changes = {key: value for key, value in (("max_batch", serve.max_batch), ("instances", serve.instances),
                                             ("max_queue_delay_us", serve.max_queue_delay_us)) if value is not None}
    options = replace(base, **changes)
    options.validate()
    return options


def serving_repository(served: ServedModel, repo: Path, threads: int | None = None) -> list[str]:
    """The scratch repository: NAME and NAME_encoded, both python-backend models over the same model file."""
    signature = read_signature(served.model)
    bank = served_bank(signature)
    signature = served_signature(signature)
    model_file = PLATFORMS[served.model.suffix.lower()][1]
    source = Path(__file__).with_name(PYTHON_MODEL_SOURCE).read_text(encoding="utf-8")
    files = {"1/model.py": source, f"1/{model_file}": served.model}
    if served.model.suffix.lower() != ".onnx":  # engines carry their contract in a sidecar
        files[f"1/{sidecar_path(Path(model_file)).name}"] = sidecar_path(served.model)
    parameters = {MODEL_FILE_PARAMETER: model_file, THREADS_PARAMETER: str(threads or 0)}
    if bank:
        parameters[BANK_FILE_PARAMETER] = str(bank)
    config = build_config(signature, served.options, backend="python", extra_parameters=parameters)
    write_model_folder(signature, repo, config, files, link=True)
    encoded = build_config(signature, replace(served.options, name=served.options.name + ENCODED_SUFFIX),
                           backend="python", extra_parameters={**parameters, ENCODED_PARAMETER: "true"})
    del encoded.input[:]
    del encoded.model_warmup[:]  # zero bytes are no image: a warmup would fail the model's load
    if not encoded.max_batch_size:  # a fixed-batch model: the twin batches like it, one encoded image per row
        encoded.max_batch_size = signature.fixed_batch
        encoded.dynamic_batching.max_queue_delay_microseconds = served.options.max_queue_delay_us
        for output in encoded.output:
            del output.dims[0]
    encoded.input.add(name="images", data_type=model_config_pb2().TYPE_STRING, dims=[1])
    write_model_folder(signature, repo, encoded, files, link=True)
    return [config.name, encoded.name]
