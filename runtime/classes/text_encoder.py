"""The exported text tower (``model.text.onnx``) on onnxruntime: class names in, text embeddings out, no torch.

An ``--adaptable`` export writes it beside the image model: int32 token ids [N, L] → L2-normalised
``text_embeddings`` [N, D] in the bank's embedding space. Its metadata names the tokenizer (rebuilt here from the
spec, refused in one line if it is not the CLIP BPE one) and the embedding space, which must be the bank's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.contract.onnx_metadata import read_onnx_metadata
from clipedge.runtime.text.tokenizer import tokenizer_from_spec

TEXT_SUFFIX = ".text.onnx"
TOKENS_INPUT, TEXT_OUTPUT = "tokens", "text_embeddings"
#: the space fields a text model must share with the bank (the image model's own file hash is not the text's)
SHARED_SPACE_KEYS = ("backbone", "pretrained", "weights_sha256", "dim")
HOW_TO_EXPORT = "export it with `clipedge export RUN --adaptable`, which writes it beside the image model"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def text_model_path(bank_path: Path, text_model: dict[str, Any] | None) -> Path:
    """The text model a bank names (its ``text_model.file``, beside the bank), else ``MODEL.text.onnx`` beside it."""
    if text_model is not None:
        return bank_path.parent / text_model["file"]
    return bank_path.with_name(bank_path.name.removesuffix(".classes.npz") + TEXT_SUFFIX)


class TextEncoder:
    """Texts → float32 [N, D] normalised text embeddings through the exported text tower."""

    def __init__(self, path: Path, space: dict[str, Any], expected_sha256: str | None = None,
                 providers: list[str] | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.path = path
        if not path.is_file():
            raise ClipedgeError(f"text model {path}: missing, and adding a class by name needs it; {HOW_TO_EXPORT}")
        if expected_sha256 and file_sha256(path) != expected_sha256:
            raise ClipedgeError(f"text model {path}: not the one this class bank was exported with (SHA-256 differs); "
                                f"{HOW_TO_EXPORT}")
        metadata = read_onnx_metadata(path)
        if metadata is None:
            raise ClipedgeError(f"text model {path}: not a valid ONNX model (truncated, or another format)")
        try:
            spec = json.loads(metadata["tokenizer"])
            recorded = json.loads(metadata.get("embedding_space", "{}"))
            self.templates = [str(t) for t in json.loads(metadata.get("templates", "[]"))]
        except (KeyError, ValueError) as error:
            raise ClipedgeError(f"text model {path}: its metadata lacks a JSON tokenizer spec ({error}); "
                                f"{HOW_TO_EXPORT}") from None
        for key in SHARED_SPACE_KEYS:
            if key in space and key in recorded and recorded[key] != space[key]:
                raise ClipedgeError(f"text model {path}: another embedding space than the class bank's ({key} is "
                                    f"{recorded[key]!r}, the bank's {space[key]!r})")
        self.tokenizer = tokenizer_from_spec(spec)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        available = ort.get_available_providers()
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options,
                                                providers=[p for p in providers or available if p in available])
        except Exception as error:  # noqa: BLE001 - onnxruntime's pybind exceptions share no public base class
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ClipedgeError(f"text model {path}: onnxruntime cannot load it ({first_line})") from None
        inputs, outputs = self.session.get_inputs(), [o.name for o in self.session.get_outputs()]
        if [i.name for i in inputs] != [TOKENS_INPUT] or TEXT_OUTPUT not in outputs:
            raise ClipedgeError(f"text model {path}: expected input {TOKENS_INPUT} and output {TEXT_OUTPUT}, got "
                                f"{', '.join(i.name for i in inputs)} → {', '.join(outputs)}")
        batch = inputs[0].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) else None

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Embeddings of ``texts`` in one call (a fixed-batch text model: in chunks of its batch, padded)."""
        tokens = self.tokenizer(texts)
        step = self.fixed_batch or len(tokens)
        parts = []
        for start in range(0, len(tokens), step):
            chunk = tokens[start : start + step]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], step - len(chunk), axis=0)]) if len(chunk) < step else chunk
            parts.append(self.session.run([TEXT_OUTPUT], {TOKENS_INPUT: padded})[0][: len(chunk)])
        return np.concatenate(parts).astype(np.float32, copy=False)
