"""Small adaptable exports built with onnx.helper, so class-bank tests need neither torch nor the export side.

The image model's embedding is a normalised affine map of an image's mean colour (solid colours are separable
classes); the text model sums a token table whose only non-zero rows are colour words, mapped to exactly the
embedding of that colour, so "a photo of a blue." embeds where blue images do. ``write_fused_model`` is the same
encoder with a bank's readout, softmax and temperature in the graph: what the fused export computes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from clipedge.runtime.classes import ClassBank, bank_path_for, save_bank
from clipedge.runtime.text.tokenizer import ClipTokenizer

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30),
           "purple": (140, 30, 160), "orange": (240, 120, 20)}
SIZE, DIM, CONTEXT = 16, 8, 16
TEMPLATES = ["a photo of a {}.", "a picture of a {}."]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Encoder:
    projection: np.ndarray  # [3, D]
    offset: np.ndarray  # [D]

    @classmethod
    def make(cls, seed: int = 0) -> Encoder:
        rng = np.random.default_rng(seed)
        projection = rng.normal(size=(3, DIM)).astype(np.float32)  # centred colours: grey-ish at the origin
        return cls(projection, (-0.5 * projection.sum(0) + rng.normal(scale=0.02, size=DIM)).astype(np.float32))

    def raw(self, rgb: np.ndarray) -> np.ndarray:
        return (np.asarray(rgb, dtype=np.float32) / 255.0) @ self.projection + self.offset

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """The model's embeddings of uint8 [N, S, S, 3] frames, in numpy."""
        raw = self.raw(frames.reshape(len(frames), -1, 3).mean(axis=1))
        return raw / np.linalg.norm(raw, axis=1, keepdims=True)

    def colour(self, name: str) -> np.ndarray:
        return self.embed(np.full((1, SIZE, SIZE, 3), COLOURS[name], dtype=np.uint8))[0]


def colour_frames(name: str, count: int, seed: int = 0, noise: float = 25.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.array(COLOURS[name], dtype=np.float32)
    shift = rng.normal(scale=noise, size=(count, 1, 1, 3))
    pixels = base + shift + rng.normal(scale=8.0, size=(count, SIZE, SIZE, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_colour_folder(folder: Path, name: str, count: int, seed: int = 0, noise: float = 25.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(colour_frames(name, count, seed, noise)):
        Image.fromarray(frame).save(folder / f"{name}_{i}.png")
    return folder


def _encoder_nodes(encoder: Encoder) -> tuple[list, list]:
    nodes = [
        helper.make_node("Cast", ["images"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["pixels"], ["mean_rgb"], axes=[1, 2], keepdims=0),
        helper.make_node("Div", ["mean_rgb", "c255"], ["unit_rgb"]),
        helper.make_node("MatMul", ["unit_rgb", "projection"], ["projected"]),
        helper.make_node("Add", ["projected", "offset"], ["raw"]),
        helper.make_node("ReduceL2", ["raw"], ["norm"], axes=[1], keepdims=1),
        helper.make_node("Div", ["raw", "norm"], ["embeddings"]),
    ]
    initializers = [numpy_helper.from_array(np.array(255.0, dtype=np.float32), "c255"),
                    numpy_helper.from_array(encoder.projection, "projection"),
                    numpy_helper.from_array(encoder.offset, "offset")]
    return nodes, initializers


def _metadata(names: list[str], outputs: list[str], **extra: str) -> dict[str, str]:
    return {"class_names": json.dumps(names), "image_size": str(SIZE), "precision": "fp32",
            "input": json.dumps({"name": "images", "dtype": "uint8", "layout": "NHWC", "channels": "RGB",
                                 "shape": ["N", SIZE, SIZE, 3]}),
            "outputs": json.dumps(outputs), "backbone": "fixture-linear", "pretrained": "none", "interpolation": "bilinear",
            **extra}


def _save(path: Path, nodes: list, initializers: list, inputs: list, outputs: list, metadata: dict[str, str]) -> Path:
    graph = helper.make_graph(nodes, "fixture", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _images_input() -> object:
    return helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", SIZE, SIZE, 3])


def write_image_model(path: Path, encoder: Encoder, names: list[str]) -> Path:
    """An adaptable image model: uint8 images → ``embeddings`` only, metadata ``adaptable``."""
    nodes, initializers = _encoder_nodes(encoder)
    output = helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", DIM])
    return _save(path, nodes, initializers, [_images_input()], [output],
                 _metadata(names, ["embeddings"], adaptable="true"))


def write_fused_model(path: Path, encoder: Encoder, bank: ClassBank) -> Path:
    """The same encoder with ``bank``'s readout (rows, bias, cache), softmax(logits / T) and the embeddings."""
    nodes, initializers = _encoder_nodes(encoder)
    count = len(bank.names)
    nodes += [helper.make_node("MatMul", ["embeddings", "rows_t"], ["cosines"]),
              helper.make_node("Mul", ["cosines", "scale"], ["scaled"]),
              helper.make_node("Add", ["scaled", "row_bias"], ["row_logits" if bank.has_cache else "logits"])]
    initializers += [numpy_helper.from_array(bank.weights.T.copy(), "rows_t"),
                     numpy_helper.from_array(np.array(bank.logit_scale, dtype=np.float32), "scale"),
                     numpy_helper.from_array(bank.bias, "row_bias"),
                     numpy_helper.from_array(np.array(1.0 / bank.temperature, dtype=np.float32), "inverse_t")]
    if bank.has_cache:
        values = np.zeros((len(bank.cache_labels), count), dtype=np.float32)
        values[np.arange(len(bank.cache_labels)), bank.cache_labels] = 1
        nodes += [helper.make_node("MatMul", ["embeddings", "keys_t"], ["affinity"]),
                  helper.make_node("Sub", ["one", "affinity"], ["distance"]),
                  helper.make_node("Mul", ["distance", "minus_beta"], ["exponent"]),
                  helper.make_node("Exp", ["exponent"], ["weights"]),
                  helper.make_node("MatMul", ["weights", "values"], ["cache_sum"]),
                  helper.make_node("Mul", ["cache_sum", "alpha"], ["cache_logits"]),
                  helper.make_node("Add", ["row_logits", "cache_logits"], ["logits"])]
        initializers += [numpy_helper.from_array(bank.cache_keys.T.copy(), "keys_t"),
                         numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
                         numpy_helper.from_array(np.array(-bank.cache_beta, dtype=np.float32), "minus_beta"),
                         numpy_helper.from_array(values, "values"),
                         numpy_helper.from_array(np.array(bank.cache_alpha, dtype=np.float32), "alpha")]
    nodes += [helper.make_node("Mul", ["logits", "inverse_t"], ["tempered"]),
              helper.make_node("Softmax", ["tempered"], ["probs"], axis=1)]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", width])
               for name, width in (("logits", count), ("probs", count), ("embeddings", DIM))]
    extra = {"temperature": str(bank.temperature)}
    if bank.rejection:
        extra |= {"rejection_threshold": str(bank.rejection["threshold"]), "rejection_score": bank.rejection["score"]}
    return _save(path, nodes, initializers, [_images_input()], outputs,
                 _metadata(list(bank.names), ["logits", "probs", "embeddings"], **extra))


def write_text_model(path: Path, encoder: Encoder, space: dict) -> Path:
    """int32 tokens → normalised sum of token rows; only colour words have rows (their colour's embedding)."""
    tokenizer = ClipTokenizer(CONTEXT)
    table = np.zeros((tokenizer.vocab_size, DIM), dtype=np.float32)
    for name in COLOURS:
        (token,) = tokenizer.encode(name)
        table[token] = encoder.colour(name)
    nodes = [helper.make_node("Gather", ["table", "tokens"], ["rows"], axis=0),
             helper.make_node("ReduceSum", ["rows", "axis1"], ["summed"], keepdims=0),
             helper.make_node("ReduceL2", ["summed"], ["norm"], axes=[1], keepdims=1),
             helper.make_node("Max", ["norm", "tiny"], ["safe_norm"]),
             helper.make_node("Div", ["summed", "safe_norm"], ["text_embeddings"])]
    initializers = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1]), "axis1"),
                    numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "tiny")]
    inputs = [helper.make_tensor_value_info("tokens", TensorProto.INT32, ["N", CONTEXT])]
    outputs = [helper.make_tensor_value_info("text_embeddings", TensorProto.FLOAT, ["N", DIM])]
    metadata = {"tokenizer": json.dumps(tokenizer.spec()), "embedding_space": json.dumps(space),
                "templates": json.dumps(TEMPLATES)}
    return _save(path, nodes, initializers, inputs, outputs, metadata)


def make_bank(encoder: Encoder, names: list[str], space: dict, rows: str = "text", cache: bool = False,
              shots: int = 4, text_model: dict | None = None, rejection: dict | None = None,
              temperature: float = 1.0) -> ClassBank:
    """A trained bank over ``names``: text rows at the colours' embeddings (``rows="learned"``: at norm 3 with a
    bias), image statistics from ``shots`` noisy frames per class, and their keys when ``cache``."""
    per_class = [encoder.embed(colour_frames(name, shots, seed=i)) for i, name in enumerate(names)]
    weights = np.stack([encoder.colour(name) for name in names]).astype(np.float32)
    bias = np.zeros(len(names), dtype=np.float32)
    if rows == "learned":
        weights, bias = weights * 3.0, np.linspace(-0.5, 0.5, len(names)).astype(np.float32)
    scatter = sum((e - e.mean(0)).T @ (e - e.mean(0)) for e in per_class)
    keys = np.concatenate(per_class) if cache else np.zeros((0, DIM))
    labels = np.repeat(np.arange(len(names)), shots) if cache else np.zeros(0, dtype=np.int64)
    return ClassBank(
        names=list(names), weights=weights, bias=bias, logit_scale=20.0, cache_keys=keys.astype(np.float32),
        cache_labels=labels.astype(np.int64), cache_alpha=1.5 if cache else None, cache_beta=4.0 if cache else None,
        image_sums=np.stack([e.sum(0) for e in per_class]).astype(np.float32),
        image_counts=np.full(len(names), shots, dtype=np.int64), scatter=scatter.astype(np.float32),
        provenance=[{"name": n, "source": "trained", "images": shots, "prompt": None, "templates": len(TEMPLATES),
                     "revision": 0} for n in names],
        head_kind="tip-adapter" if cache else ("linear-probe" if rows == "learned" else "zero-shot"), rows=rows,
        temperature=temperature, rejection=rejection, space=space, text_model=text_model, templates=list(TEMPLATES))


def adaptable_export(folder: Path, names: list[str], seed: int = 0, text: bool = True, **bank_options) -> Path:
    """``folder/model.onnx`` + ``model.text.onnx`` (unless not ``text``) + ``model.classes.npz``; the model's path."""
    folder.mkdir(parents=True, exist_ok=True)
    encoder = Encoder.make(seed)
    model = write_image_model(folder / "model.onnx", encoder, names)
    space = {"backbone": "fixture-linear", "pretrained": "none", "weights_sha256": f"{seed:064x}", "dim": DIM}
    text_model = None
    if text:
        text_path = write_text_model(folder / "model.text.onnx", encoder, space)
        text_model = {"file": text_path.name, "sha256": sha256_of(text_path)}
    bank = make_bank(encoder, names, {**space, "image_model_sha256": sha256_of(model)}, text_model=text_model,
                     **bank_options)
    save_bank(bank, bank_path_for(model))
    return model
