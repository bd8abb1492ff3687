"""``clipedge export RUN --adaptable``: the image model ends at the embedding; the classes travel as data beside it.

Three files, staged together and published only after every gate passed:

- ``model.onnx``: the fused model's graph up to ``head.embed(features)`` (same uint8 input, same preprocessing in
  the graph, same metadata keys), one output ``embeddings``, ``"adaptable": "true"``;
- ``model.text.onnx``: the text tower (clipedge.export.text_model), so a device adds classes by name;
- ``model.classes.npz``: the class bank (clipedge.export.initial_bank), written last because it names the other
  two by hash.

The gate: the bank applied to the exported ``embeddings`` (the runtime's own numpy readout) must give the
fused PyTorch head's probabilities within the tolerance the fused export is held to; the text model must give
open_clip's normalised text embeddings for the run's prompts and a few hundred generated strings; both graphs must
pass the static TensorRT check. The image model carries the reference set an engine built from it on the device is
gated on (``clipedge engine``), with the frames' fp32 PyTorch embeddings, since the device may change the classes.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from clipedge.backbone import Backbone, load_backbone_from_spec
from clipedge.core.atomic import check_destination, publish, staging_folder
from clipedge.core.errors import ClipedgeError
from clipedge.devices import resolve_device
from clipedge.run_dir import Run, load_run
from clipedge.runtime.classes import bank_path_for, save_bank
from clipedge.runtime.classes.readout import bank_probabilities
from clipedge.runtime.contract import BATCH_PROFILE_KEY, INPUT_NAME, REFERENCE_KEY, run_in_batches
from clipedge.runtime.tensorrt.check import require_tensorrt_compatible
from clipedge.version import __version__

from .batch import resolve_batch
from .exporter import default_artifact
from .fuse import FusedClassifier
from .initial_bank import embedding_space, file_sha256, initial_bank
from .metadata import calibration_of, model_metadata, set_onnx_metadata
from .onnx_export import trace_to_onnx
from .options import ExportOptions
from .parity import (
    REFERENCE_BATCH,
    compare,
    exact_fp32,
    onnxruntime_backend,
    parity_images,
    reference_outputs,
    reference_set,
)
from .result import ExportResult, require_parity
from .text_model import (
    TEXT_OUTPUT,
    TOKENS_INPUT,
    TextEncoder,
    TextParity,
    generated_strings,
    run_tokenizer,
    text_graph,
    text_parity,
)

EMBEDDINGS = "embeddings"
TEXT_SUFFIX = ".text.onnx"


class EmbeddingModel(FusedClassifier):
    """uint8 images [N, H, W, 3] → the head's adapted, L2-normalised embeddings [N, D]: the fused model without
    its classes (the encoder, its folding and its fp16 rules are the fused model's)."""

    def classify(self, pixels: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.head.embed(self.encode(pixels)),)


@torch.no_grad()
@exact_fp32()
def reference_embeddings(backbone: Backbone, run: Run, temperature: float | None, frames: np.ndarray) -> np.ndarray:
    """fp32 PyTorch ``embeddings`` of model-size ``frames``: what an engine built from the export must reproduce."""
    module = EmbeddingModel(backbone.model.visual, run.head, run.backbone_spec, temperature)
    chunks = [module(torch.from_numpy(frames[start : start + REFERENCE_BATCH]).to(module.device))[0].cpu()
              for start in range(0, len(frames), REFERENCE_BATCH)]
    return torch.cat(chunks).numpy()


def text_model_path_for(model: Path) -> Path:
    """``model.onnx`` → ``model.text.onnx`` (``model.fp16.onnx`` → ``model.fp16.text.onnx``): the pair stays together."""
    return model.with_name(model.stem + TEXT_SUFFIX)


def model_embeddings(model_path: Path, device: str, frames: np.ndarray) -> np.ndarray:
    """``embeddings`` of the staged image model through the runtime's onnxruntime backend."""
    backend = onnxruntime_backend(model_path, device)
    low, high = backend.batch_range
    embeddings = run_in_batches(backend.infer, frames, high or REFERENCE_BATCH, low)[EMBEDDINGS]
    backend.close()
    return embeddings


def class_prompts(run: Run) -> list[str]:
    """Every template of the run filled with every class name: the texts the bank's text rows were built from."""
    templates = run.manifest.get("templates") or []
    return [template.format(name) for name in run.class_names for template in templates]


def text_metadata(run: Run, backbone: Backbone, encoder: TextEncoder, tokenizer_spec: dict, space: dict,
                  opset: int) -> dict[str, Any]:
    """The text model's contract: how to tokenize for it, which image space its embeddings live in, the templates."""
    return {
        "tokenizer": tokenizer_spec, "embedding_space": space, "templates": list(run.manifest.get("templates") or []),
        "input": {"name": TOKENS_INPUT, "dtype": "int32", "shape": ["N", encoder.context_length]},
        "outputs": [TEXT_OUTPUT], "text_adapter": encoder.text_adapter is not None,
        "backbone": backbone.spec.name, "pretrained": backbone.spec.pretrained, "source_run": str(run.path.resolve()),
        "clipedge_version": __version__, "precision": "fp32", "opset": str(opset),
    }


def _gate_text(parity: TextParity, run: Run) -> None:
    if not parity.passed:
        raise ClipedgeError(f"export of {run.path}: the text model failed its parity gate with open_clip: "
                            f"{parity.describe()}; nothing was written")


def export_adaptable(run_dir: str | Path, options: ExportOptions) -> ExportResult:
    """``--format onnx --adaptable`` (``options`` validated): RUN as an adaptable model, its text model and its class
    bank, gated; nothing is written on failure."""
    started = time.perf_counter()
    fp16, opset, progress = options.fp16, options.opset, options.progress
    run = load_run(run_dir)
    device = resolve_device(options.device)
    precision = options.precision
    artifact = options.out or default_artifact(run, "onnx", precision)
    if options.out is None:
        artifact.parent.mkdir(exist_ok=True)
    check_destination(artifact)
    text_path, bank_path = text_model_path_for(artifact), bank_path_for(artifact)
    profile, _ = resolve_batch(None, False)

    spec = run.backbone_spec
    backbone = load_backbone_from_spec(spec, device)
    tokenizer = run_tokenizer(backbone)  # a foreign tokenizer is refused before the slow work
    temperature = calibration_of(run).get("temperature")
    reference_module = FusedClassifier(backbone.model.visual, run.head, spec, temperature)
    exported_module = EmbeddingModel(backbone.model.visual, run.head, spec, temperature, half_encoder=fp16)
    example = torch.zeros(2, spec.image_size, spec.image_size, 3, dtype=torch.uint8, device=exported_module.device)
    graph = trace_to_onnx(exported_module, example, INPUT_NAME, [EMBEDDINGS], dynamic_batch=True, opset=opset)
    encoder = TextEncoder(backbone.model, run.head)
    text = text_graph(encoder.to(backbone.device), opset)
    metadata = {**model_metadata(run, precision, True, None, graph.opset), "outputs": [EMBEDDINGS],
                "adaptable": "true", BATCH_PROFILE_KEY: str(profile)}
    reference = reference_outputs(run, backbone, reference_module, temperature, parity_images(run, options.parity_count))
    bank = initial_bank(run, backbone, {}, None, progress)
    with staging_folder(artifact) as staging:
        image_onnx, text_onnx = staging / artifact.name, staging / text_path.name
        set_onnx_metadata(graph.model, metadata)
        onnx.save(graph.model, str(image_onnx))
        parity = compare(bank_probabilities(bank, model_embeddings(image_onnx, device, reference.frames)), reference,
                         precision, temperature)
        require_parity(parity, run, "adaptable model with its class bank")
        engine_reference = reference_set(reference, precision, temperature)  # what `clipedge engine` is gated on
        engine_reference = replace(engine_reference, embeddings=reference_embeddings(
            backbone, run, temperature, engine_reference.frames))
        set_onnx_metadata(graph.model, {**metadata, "parity": parity.to_dict(), REFERENCE_KEY: engine_reference.encode()})
        onnx.save(graph.model, str(image_onnx))
        require_tensorrt_compatible(image_onnx, artifact)
        bank.space = embedding_space(backbone, image_onnx)

        contract = text_metadata(run, backbone, encoder, tokenizer.spec(), bank.space, text.opset)
        set_onnx_metadata(text.model, contract)
        onnx.save(text.model, str(text_onnx))
        texts = class_prompts(run) + generated_strings()
        text_gate = text_parity(text_onnx, backbone, encoder, texts, tokenizer, device)
        _gate_text(text_gate, run)
        set_onnx_metadata(text.model, {**contract, "parity": text_gate.to_dict()})
        onnx.save(text.model, str(text_onnx))
        require_tensorrt_compatible(text_onnx, text_path)
        bank.text_model = {"file": text_path.name, "sha256": file_sha256(text_onnx)}

        staged_bank = staging / bank_path.name
        save_bank(bank, staged_bank)
        publish(text_onnx, text_path)
        publish(image_onnx, artifact)
        publish(staged_bank, bank_path)  # last: it names the two models by hash
    return ExportResult(artifact, "onnx", precision, artifact.stat().st_size, graph.nodes_before, graph.nodes_after,
                        parity.to_dict(), time.perf_counter() - started,
                        {"class bank": bank_path, "text model": text_path}, text_gate=text_gate.to_dict())
