"""The text tower as its own ONNX: int32 token ids [N, L] → L2-normalised text embeddings [N, D].

A device adds a class by name by running this model over the run's templates filled with the name
(tokenized by the torch-free ``ClipTokenizer``, whose ids are open_clip's), so it computes exactly what
``open_clip``'s ``encode_text(normalize=True)`` computes for training, with two changes for TensorRT:

- the input is int32 (TensorRT has no INT64 network inputs worth the name), used as it is by the embedding
  Gather, which TensorRT indexes with INT32;
- open_clip pools at ``tokens.argmax(-1)`` (the end-of-text id is the highest in a row). ArgMax yields INT64
  computed from the input, which the static TensorRT check refuses, so the pooling is a 0/1 mask of the row's
  first maximum multiplied into the sequence: a sum of one value and zeros, exactly the argmax row.

The model stays fp32 with ``--fp16`` too: a class row from an fp16 text tower would move the cosines it is
compared with by ~1e-3, i.e. logits by ~0.1 at CLIP's logit scale; its FLOPs are spent once per added class.
"""

from __future__ import annotations

import copy
import random
import string
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from clipedge.backbone import Backbone
from clipedge.core.errors import ClipedgeError
from clipedge.heads import Head
from clipedge.heads.clip_adapter import blend
from clipedge.runtime.contract import run_in_batches
from clipedge.runtime.text.tokenizer import ClipTokenizer

from .onnx_export import OnnxGraph, trace_to_onnx
from .options import OPSET
from .parity import REFERENCE_BATCH, TOLERANCES, exact_fp32, onnxruntime_backend

TOKENS_INPUT = "tokens"
TEXT_OUTPUT = "text_embeddings"
POOLING = ("argmax", "first", "last")
#: generated strings checked in the gate beside the run's own prompts
GENERATED_STRINGS = 256


class TextEncoder(nn.Module):
    """open_clip's CLIP text tower (and a head's text-branch CLIP-Adapter, when it has one), int32 tokens in."""

    def __init__(self, clip: nn.Module, head: Head | None = None):
        super().__init__()
        pooling = getattr(clip, "text_pool_type", None)
        if not hasattr(clip, "token_embedding") or pooling not in POOLING:
            raise ClipedgeError(f"text model: {type(clip).__name__} (text pooling {pooling!r}) is not an open_clip "
                                "CLIP text tower; --adaptable exports the BPE-tokenized CLIP text transformer only")
        self.token_embedding = copy.deepcopy(clip.token_embedding)
        self.transformer = copy.deepcopy(clip.transformer)
        self.ln_final = copy.deepcopy(clip.ln_final)
        self.text_projection = copy.deepcopy(clip.text_projection)
        self.register_buffer("positional_embedding", clip.positional_embedding.detach().clone())
        self.register_buffer("attn_mask", clip.attn_mask.detach().clone() if clip.attn_mask is not None else None)
        self.pooling = pooling
        adapter = getattr(head, "text_adapter", None)
        self.text_adapter = copy.deepcopy(adapter) if adapter is not None else None
        self.adapter_alpha = float(getattr(head, "alpha", 0.0))
        self.float().eval().requires_grad_(False)

    @property
    def context_length(self) -> int:
        return int(self.positional_embedding.shape[0])

    def pool(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if self.pooling == "first":
            return x[:, 0]
        if self.pooling == "last":
            return x[:, -1]
        is_max = (tokens == tokens.amax(dim=-1, keepdim=True)).float()
        first_max = is_max * (torch.cumsum(is_max, dim=-1) == 1).float()
        return (first_max.unsqueeze(1) @ x).squeeze(1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask))
        x = self.pool(x, tokens)
        x = self.text_projection(x) if isinstance(self.text_projection, nn.Linear) else x @ self.text_projection
        x = F.normalize(x, dim=-1)
        if self.text_adapter is not None:  # CLIP-Adapter adapts the normalised class embedding, then renormalises
            x = F.normalize(blend(x, self.text_adapter, self.adapter_alpha), dim=-1)
        return x


def run_tokenizer(backbone: Backbone) -> ClipTokenizer:
    """The torch-free tokenizer for ``backbone``'s text tower, or a one-line refusal naming its tokenizer."""
    tokenizer = backbone.tokenizer
    if not isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer):
        raise ClipedgeError(f"--adaptable: {backbone.spec.name} uses {type(tokenizer).__name__}, not CLIP's BPE "
                            "tokenizer; the torch-free runtime cannot tokenize for it (export without --adaptable)")
    clip_tokenizer = ClipTokenizer(int(tokenizer.context_length))
    if clip_tokenizer.vocab_size != tokenizer.vocab_size:
        raise ClipedgeError(f"--adaptable: {backbone.spec.name}'s tokenizer has {tokenizer.vocab_size} ids, "
                            f"the shipped CLIP vocabulary {clip_tokenizer.vocab_size}")
    return clip_tokenizer


def text_graph(encoder: TextEncoder, opset: int = OPSET) -> OnnxGraph:
    """The text tower as a checked ONNX graph: dynamic batch, the context length fixed."""
    example = torch.zeros(2, encoder.context_length, dtype=torch.int32, device=encoder.positional_embedding.device)
    return trace_to_onnx(encoder, example, TOKENS_INPUT, [TEXT_OUTPUT], dynamic_batch=True, opset=opset)


def generated_strings(count: int = GENERATED_STRINGS, seed: int = 0) -> list[str]:
    """Class-name-like strings that exercise the tokenizer and the pooling: words, digits, punctuation, accents,
    CJK, emoji, repeated spaces, and names long enough to be cut at the context length."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "  -_'.,!?&/()" + "éüßçøñ" + "日本語中文" + "🙂🚗🔧"
    texts = []
    for index in range(count):
        length = rng.choice((1, 3, 8, 20, 60, 200)) if index % 4 else rng.randint(1, 12)
        texts.append("".join(rng.choice(alphabet) for _ in range(length)))
    return texts


@dataclass
class TextParity:
    """The text ONNX against open_clip's ``encode_text(normalize=True)``, each fed its own tokenizer's ids."""

    strings: int
    tokens_identical: bool
    max_abs_diff: float
    min_cosine: float
    #: the largest embedding error (L2) allowed: one that moves no logit at CLIP's scale by more than the fp32 gate
    max_l2_diff: float
    max_l2_allowed: float

    @property
    def passed(self) -> bool:
        return self.tokens_identical and self.max_l2_diff <= self.max_l2_allowed

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def describe(self) -> str:
        ids = "" if self.tokens_identical else "the torch-free tokenizer's ids differ from open_clip's; "
        return (f"{ids}max L2 error {self.max_l2_diff:.2e} (allowed {self.max_l2_allowed:.2e}), min cosine "
                f"{self.min_cosine:.7f} on {self.strings} strings")


def allowed_l2_error(logit_scale: float) -> float:
    """A class row off by δ (L2) moves a logit of a unit embedding by at most scale·δ, and a probability by at most
    half the largest logit move; so δ ≤ 2·(fp32 |Δprob| bound)/scale keeps added classes inside the fp32 gate."""
    return 2 * TOLERANCES["fp32"][1] / logit_scale


@torch.no_grad()
@exact_fp32()
def text_parity(model_path: Path, backbone: Backbone, encoder: TextEncoder, texts: list[str],
                tokenizer: ClipTokenizer, device: str) -> TextParity:
    """``texts`` through the exported text model (torch-free ids) and through open_clip (its own ids); the
    reference applies the head's text adapter the way ``encoder`` does."""
    ours = tokenizer(texts)
    theirs = backbone.tokenizer(texts)
    reference_module = copy.deepcopy(encoder).to(backbone.device)
    reference = []
    for start in range(0, len(texts), REFERENCE_BATCH):
        chunk = theirs[start : start + REFERENCE_BATCH].to(backbone.device)
        embedded = backbone.model.encode_text(chunk, normalize=True).float()
        if reference_module.text_adapter is not None:
            embedded = F.normalize(blend(embedded, reference_module.text_adapter, reference_module.adapter_alpha), dim=-1)
        reference.append(embedded.cpu())
    expected = torch.cat(reference).numpy()
    backend = onnxruntime_backend(model_path, device)
    exported = run_in_batches(backend.infer, ours, REFERENCE_BATCH, 1)[TEXT_OUTPUT]
    backend.close()
    difference = exported - expected
    return TextParity(
        strings=len(texts), tokens_identical=bool(np.array_equal(ours, theirs.numpy())),
        max_abs_diff=float(np.abs(difference).max()), min_cosine=float((exported * expected).sum(axis=1).min()),
        max_l2_diff=float(np.linalg.norm(difference, axis=1).max()),
        max_l2_allowed=allowed_l2_error(backbone.logit_scale),
    )
