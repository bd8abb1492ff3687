"""How an adaptable model (image model → embeddings, classes in ``model.classes.npz``) is served by Triton.

Only clipedge's python-backend model can apply a bank (it runs :class:`~clipedge.runtime.Classifier`), so
``clipedge serve`` serves it and the plain onnxruntime-backend repository writer refuses it in one line.
The served outputs are ``logits`` and ``probs`` with a variable class axis (a bank can gain or lose a class
while the server runs) and ``class_names``: per batch row the names of the bank that answered it, so a client
always knows which classes the scores are over, before and after a swap.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.classes import bank_path_for
from clipedge.runtime.classes.model_classes import is_adaptable

#: the output naming, per batch row, the classes its scores are over
CLASS_NAMES_OUTPUT = "class_names"


def served_signature(signature):
    """The signature ``clipedge serve`` declares: an adaptable model's embeddings become the bank's scores."""
    if not is_adaptable(signature.metadata):
        return signature
    outputs = {"logits": ("TYPE_FP32", [-1]), "probs": ("TYPE_FP32", [-1]), CLASS_NAMES_OUTPUT: ("TYPE_STRING", [-1])}
    return replace(signature, outputs=outputs)


def served_bank(signature) -> Path | None:
    """The bank file an adaptable model is served from and watched at: the one beside the original model (not a
    copy), so ``clipedge classes MODEL ...`` reaches the running server; None for a fused model."""
    if not is_adaptable(signature.metadata):
        return None
    bank = bank_path_for(Path(signature.source).resolve())
    if not bank.is_file():
        raise ClipedgeError(f"model {signature.source}: adaptable, but its class bank {bank} is missing")
    return bank.resolve()


def refuse_plain_repository(signature) -> None:
    """Triton's onnxruntime backend would serve bare embeddings: refuse instead of writing a model that has no classes."""
    if is_adaptable(signature.metadata):
        raise ClipedgeError(f"model {signature.source}: adaptable (classes in {bank_path_for(signature.source).name}); "
                            "Triton's onnxruntime backend cannot apply a class bank: serve it with "
                            "`clipedge serve MODEL.onnx`, or export a fused model for a plain repository")
