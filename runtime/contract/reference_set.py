"""The reference set embedded in an export: the frames and fp32 answers an engine built later is gated on."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.core.errors import ClipedgeError

from .names import REFERENCE_KEY


@dataclass(frozen=True)
class ReferenceSet:
    """A few of the run's frames at model resolution and the fp32 PyTorch probabilities for them, embedded in the
    ONNX at export, so an engine built later on the device (without PyTorch or the run) is gated on the answers
    the exported model was gated on, with the export gate's tolerance for its precision.

    An adaptable model's set also holds the fp32 PyTorch ``embeddings`` of the frames: its classes live in a bank
    the device may have changed since the export, so its engine is gated on both sides' embeddings read out
    through the bank it will serve with (:meth:`through`)."""

    frames: np.ndarray
    probs: np.ndarray
    min_agreement: float
    max_dprob: float | None
    embeddings: np.ndarray | None = None

    def encode(self) -> str:
        frames = np.ascontiguousarray(self.frames, dtype=np.uint8)
        entry = {"shape": list(frames.shape), "frames": base64.b64encode(frames.tobytes()).decode("ascii"),
                 "probs": np.asarray(self.probs, dtype=np.float32).tolist(),
                 "min_agreement": self.min_agreement, "max_dprob": self.max_dprob}
        if self.embeddings is not None:
            entry["embeddings"] = np.asarray(self.embeddings, dtype=np.float32).tolist()
        return json.dumps(entry)

    def through(self, readout: Callable[[np.ndarray], np.ndarray]) -> ReferenceSet:
        """This set with its probabilities remade from its embeddings by ``readout`` (embeddings → probabilities)."""
        if self.embeddings is None:
            raise ClipedgeError("reference set: no embeddings to read out (not an adaptable model's)")
        return replace(self, probs=readout(self.embeddings))

    def compare(self, probs: np.ndarray) -> dict[str, Any]:
        """Top-1 agreement and max |Δprob| of ``probs`` against the reference, and whether they pass."""
        agreement = float((probs.argmax(1) == self.probs.argmax(1)).mean())
        dprob = float(np.abs(probs - self.probs).max())
        passed = agreement >= self.min_agreement and (self.max_dprob is None or dprob <= self.max_dprob)
        return {"images": len(probs), "agreement": agreement, "max_dprob": dprob, "min_agreement": self.min_agreement,
                "max_dprob_allowed": self.max_dprob, "passed": passed}


def read_reference_set(metadata: dict[str, str], source: str | Path) -> ReferenceSet:
    """The embedded reference set; one line naming ``source`` when it is absent or malformed."""
    if REFERENCE_KEY not in metadata:
        raise ClipedgeError(f"model {source}: metadata lacks {REFERENCE_KEY} (the frames an engine is gated on); "
                            f"re-export it with this clipedge's `clipedge export`")
    try:
        entry = json.loads(metadata[REFERENCE_KEY])
        frames = np.frombuffer(base64.b64decode(entry["frames"]), dtype=np.uint8).reshape(entry["shape"])
        probs = np.asarray(entry["probs"], dtype=np.float32)
        maximum = entry["max_dprob"]
        embeddings = np.asarray(entry["embeddings"], dtype=np.float32) if "embeddings" in entry else None
        reference = ReferenceSet(frames, probs, float(entry["min_agreement"]), None if maximum is None else float(maximum),
                                 embeddings)
    except (ValueError, TypeError, KeyError) as error:
        raise ClipedgeError(f"model {source}: malformed {REFERENCE_KEY} metadata ({error})") from None
    if probs.ndim != 2 or len(probs) != len(frames):
        raise ClipedgeError(f"model {source}: {REFERENCE_KEY} has {len(frames)} frames but {len(probs)} probability rows")
    if embeddings is not None and (embeddings.ndim != 2 or len(embeddings) != len(frames)):
        raise ClipedgeError(f"model {source}: {REFERENCE_KEY} has {len(frames)} frames but embeddings of shape "
                            f"{list(embeddings.shape)}")
    return reference
