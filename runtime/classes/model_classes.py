"""An adaptable model's classes in use: which bank, checked against which model, its readout, and edits to it.

``Classifier`` holds one of these when its model ends at ``embeddings`` (metadata ``adaptable``) or when it is
given ``classes=BANK``. The bank is checked against the model it will read (backbone, pretrained weights, width
D, and for an ``.onnx`` the image model file's SHA-256); the text tower is opened only when a class is first
added by name. Edits replace the bank object whole (under a lock), so a classification running meanwhile uses
the old bank or the new one, never a mix; nothing is written until :meth:`ModelClasses.save`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.core.errors import ClipedgeError

from . import learning
from .bank import ClassBank, bank_path_for, load_bank, save_bank
from .readout import BankReadout
from .text_encoder import HOW_TO_EXPORT, TextEncoder, file_sha256, text_model_path

ADAPTABLE_KEY = "adaptable"
EMBEDDINGS = "embeddings"
#: CLIP's own prompt, for a bank that records no templates
DEFAULT_TEMPLATE = "a photo of a {}."


def is_adaptable(metadata: dict[str, str]) -> bool:
    """Whether a model ends at the embedding and takes its classes from a bank (``export --adaptable``)."""
    return metadata.get(ADAPTABLE_KEY, "").strip().lower() == "true"


def model_space(path: Path, metadata: dict[str, str], dim: int | None) -> dict[str, Any]:
    """The embedding-space fingerprint a bank must carry to be read by this model: what its metadata states
    (``embedding_space``, else backbone and pretrained), its embedding width, and an ONNX file's own hash (an
    engine's bytes are not the ONNX's, so an engine is matched on the rest)."""
    try:
        space = {key: value for key, value in json.loads(metadata.get("embedding_space", "{}")).items()
                 if key != "image_model_sha256"}
    except ValueError:
        raise ClipedgeError(f"model {path}: its embedding_space metadata is not JSON") from None
    for key in ("backbone", "pretrained"):
        if key in metadata and key not in space:
            space[key] = metadata[key]
    if dim is not None:
        space["dim"] = dim
    if path.suffix.lower() == ".onnx":
        space["image_model_sha256"] = file_sha256(path)
    return space


def prompts_for(name: str, prompt: str | None, templates: Sequence[str]) -> list[str]:
    """The texts a class name is embedded as: ``prompt`` (a template with ``{}``, or the whole text), else every
    template over the name."""
    if prompt is not None:
        if not prompt.strip():
            raise ClipedgeError(f"--prompt {prompt!r}: empty; give a text such as 'a photo of a {{}}.'")
        return [prompt.replace("{}", name)]
    return [template.replace("{}", name) for template in (templates or [DEFAULT_TEMPLATE])]


class ModelClasses:
    """The bank one model reads; see the module docstring."""

    def __init__(self, model: Path, metadata: dict[str, str], output_names: Sequence[str], dim: int | None,
                 classes: str | Path | None = None, providers: list[str] | None = None, threads: int | None = None):
        if EMBEDDINGS not in output_names:
            raise ClipedgeError(f"model {model}: exported without embeddings (outputs {', '.join(output_names)}); "
                                f"a class bank needs the embedding: `clipedge export RUN --adaptable`")
        self.model, self.providers, self.threads = model, providers, threads
        self.path = Path(classes) if classes is not None else bank_path_for(model)
        self.space = model_space(model, metadata, dim)
        self._lock = threading.Lock()
        self._text: TextEncoder | None = None
        self._set(load_bank(self.path, self.space))

    def _set(self, bank: ClassBank) -> None:
        self._state = (bank, BankReadout(bank))

    @property
    def bank(self) -> ClassBank:
        return self._state[0]

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        return self._state[1](embeddings)  # one read: the bank and its readout belong together

    def text_encoder(self) -> TextEncoder:
        """The exported text tower, opened on first use and checked against the bank."""
        if self._text is None:
            bank = self.bank
            path = text_model_path(self.path, bank.text_model)
            if bank.text_model is None and not path.is_file():
                raise ClipedgeError(f"class bank {self.path}: no text model recorded and none at {path}; adding a "
                                    f"class by name needs it: {HOW_TO_EXPORT}")
            self._text = TextEncoder(path, bank.space, (bank.text_model or {}).get("sha256"), self.providers,
                                     self.threads)
        return self._text

    def name_embeddings(self, name: str, prompt: str | None) -> np.ndarray:
        """Text embeddings [T, D] of ``name`` through the bank's templates (or ``prompt``)."""
        encoder = self.text_encoder()
        return encoder(prompts_for(learning.check_name(name), prompt, self.bank.templates or encoder.templates))

    def add(self, name: str, image_embeddings: np.ndarray | None, by_name: bool, prompt: str | None,
            replace: bool) -> learning.LearnedClass:
        text = self.name_embeddings(name, prompt) if by_name else None
        with self._lock:
            bank, learned = learning.add_class(self.bank, name, text, image_embeddings, prompt, replace)
            self._set(bank)
        return learned

    def remove(self, name: str) -> None:
        with self._lock:
            self._set(learning.remove_class(self.bank, name))

    def rename(self, old: str, new: str) -> None:
        with self._lock:
            self._set(learning.rename_class(self.bank, old, new))

    def save(self, path: str | Path | None = None) -> Path:
        """Write the bank (to where it was read, by default) atomically; returns where."""
        target = Path(path) if path is not None else self.path
        save_bank(self.bank, target)
        return target
