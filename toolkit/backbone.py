"""Frozen open_clip backbones: resolve a name + weights source into a model and its transforms.

Weights sources, in the order users meet them: a pretrained tag (downloaded where
a network exists), a local checkpoint file, an ``hf-hub:`` id, ``none`` (random
init), and, for the models clipedge ships, nothing at all. Every failure becomes
a one-line :class:`ClipedgeError` naming the option and what to pass instead.

The :class:`BackboneSpec` records everything needed to rebuild the model and its
eval transform later (the full architecture config included), so a run directory
never depends on a config that was registered only in the training process.
"""

from __future__ import annotations

import difflib
import json
import logging
import pickle
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from clipedge.core.errors import ClipedgeError

from .hub_cache import hub_files, hub_offline

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
WEIGHTS_DIR = Path(__file__).parent / "weights"

#: Models whose weights ship inside the package: name -> (tag, file under WEIGHTS_DIR).
SHIPPED_WEIGHTS = {"clipedge-tiny": ("clipedge", "clipedge-tiny.safetensors")}

NO_WEIGHTS = "none"
RANDOM_INIT_SEED = 0
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
#: clipedge's answer to a pickle that needs code to load; torch's own message advises weights_only=False
NOT_WEIGHTS_ONLY = "not a weights-only checkpoint; clipedge never unpickles code — convert it to safetensors"


def register_model_configs() -> None:
    """Make the package's own open_clip configs (clipedge-tiny) known to open_clip, once."""
    if MODEL_CONFIG_DIR.is_dir() and MODEL_CONFIG_DIR not in open_clip.factory._MODEL_CONFIG_PATHS:
        open_clip.add_model_config(MODEL_CONFIG_DIR)


def register_model_config(name: str, config: dict) -> None:
    """Register one architecture config under ``name`` (used to rebuild a backbone from a manifest)."""
    if name not in open_clip.list_models():
        # open_clip only reads configs from files; its registry dict is the one public-enough seam.
        open_clip.factory._MODEL_CONFIGS[name] = json.loads(json.dumps(config))


@dataclass(frozen=True)
class BackboneSpec:
    """What the manifest stores about the image encoder; enough to rebuild it and its transform."""

    name: str
    pretrained: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    resize_mode: str
    embed_dim: int
    model_config: dict = field(repr=False)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BackboneSpec:
        data = dict(data)
        data["mean"] = tuple(data["mean"])
        data["std"] = tuple(data["std"])
        return cls(**data)

    def cache_identity(self) -> dict:
        """The fields that change image features (used in feature-cache keys)."""
        return {k: v for k, v in self.to_dict().items() if k != "embed_dim"}


@dataclass
class Backbone:
    """A frozen CLIP model with the transforms and tokenizer that belong to it."""

    model: nn.Module
    spec: BackboneSpec
    eval_transform: Callable
    tokenizer: Callable
    device: torch.device

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp().item())

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) image features, fp32, on the CPU."""
        return self.model.encode_image(pixels.to(self.device)).float().cpu()

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return self.model.encode_text(tokens).float().cpu()


def _suggest_models(name: str) -> str:
    close = difflib.get_close_matches(name, open_clip.list_models(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `python -c \"import open_clip; print(open_clip.list_models())\"` lists them"
    return f"--backbone: unknown open_clip model {name!r}{hint}"


def is_pickle_checkpoint(path: Path) -> bool:
    """Whether ``path`` holds a pickle: a ``torch.save`` zip archive or a bare pickle (protocol 2+ opens with 0x80).

    ``torch.load(weights_only=True)`` raises the same error, with the same words, for a pickle that needs code
    to load and for bytes that are no pickle at all; only the file itself tells them apart.
    """
    with open(path, "rb") as file:
        if zipfile.is_zipfile(file):
            return True
        file.seek(0)
        return file.read(1) == b"\x80"


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict without unpickling arbitrary objects."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            with warnings.catch_warnings():  # torch warns about pickle protocols before refusing: not the user's concern
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any reader failure is a bad file for the user
        if isinstance(error, pickle.UnpicklingError):  # torch's text advises weights_only=False: never repeat it
            what = NOT_WEIGHTS_ONLY if is_pickle_checkpoint(path) else "cannot read checkpoint (neither safetensors nor a torch.save file)"
            raise ClipedgeError(f"--pretrained {path}: {what}") from None
        raise ClipedgeError(f"--pretrained {path}: cannot read checkpoint ({type(error).__name__}: {error})".splitlines()[0]) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ClipedgeError(f"--pretrained {path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_checkpoint_into(model: nn.Module, path: Path, name: str) -> None:
    state = _read_checkpoint(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)):
            if keys:
                shown = ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
                parts.append(f"{len(keys)} {label} keys: {shown}")
        raise ClipedgeError(f"--pretrained {path}: checkpoint does not fit {name}: " + "; ".join(parts))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def resolve_pretrained(name: str, pretrained: str | None) -> str:
    """Turn the user's ``--pretrained`` (possibly empty) into an explicit source string."""
    if pretrained:
        return pretrained
    if name in SHIPPED_WEIGHTS:
        return SHIPPED_WEIGHTS[name][0]
    tags = open_clip.list_pretrained_tags_by_model(name)
    listed = ", ".join(tags) if tags else "no published tags"
    raise ClipedgeError(
        f"--pretrained: {name} needs weights: a tag ({listed}), a checkpoint file, or 'none' for random init"
    )


def load_backbone(
    name: str = "clipedge-tiny",
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
    model_config: dict | None = None,
) -> Backbone:
    """Build a frozen open_clip model in eval mode.

    ``model_config`` rebuilds an architecture that is not registered in this
    process (a manifest carries it), so runs stay self-describing.
    """
    register_model_configs()
    if model_config is not None:
        register_model_config(name, model_config)
    is_hub = name.startswith(open_clip.factory.HF_HUB_PREFIX)
    if not is_hub and name not in open_clip.list_models():
        raise ClipedgeError(_suggest_models(name))
    source = "" if is_hub else resolve_pretrained(name, pretrained)
    device = torch.device(device)
    checkpoint: Path | None = None
    if name in SHIPPED_WEIGHTS and source == SHIPPED_WEIGHTS[name][0]:
        checkpoint = WEIGHTS_DIR / SHIPPED_WEIGHTS[name][1]
        if not checkpoint.is_file():
            raise ClipedgeError(f"--backbone {name}: shipped weights {checkpoint} are missing from this install")
    elif source and Path(source).suffix in CHECKPOINT_SUFFIXES:
        checkpoint = Path(source).resolve()
        if not checkpoint.is_file():
            raise ClipedgeError(f"--pretrained {source}: no such checkpoint file")
        source = str(checkpoint)  # absolute, so the manifest works from any directory

    tag = None
    if source and source != NO_WEIGHTS and checkpoint is None:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if source not in tags:
            raise ClipedgeError(
                f"--pretrained {source!r}: not a tag of {name} (tags: {', '.join(tags) or 'none'}), nor a checkpoint file"
            )
        tag = source
    hub = hub_files(name, tag)  # air-gapped machines: the hub repository to find in the local cache
    option = f"--backbone {name}" if is_hub else f"--pretrained {tag}"
    if hub is not None and hub_offline() and not hub.is_cached():
        raise ClipedgeError(hub.missing(option))
    try:
        # Random init is seeded so a `--pretrained none` run rebuilds the same network for eval and export.
        with torch.random.fork_rng(devices=[]), _random_init_notice_dropped(checkpoint is not None or source == NO_WEIGHTS):
            torch.manual_seed(RANDOM_INIT_SEED)
            model, _, eval_transform = open_clip.create_model_and_transforms(
                name, pretrained=tag, device="cpu", weights_only=True
            )
    except Exception as error:  # noqa: BLE001 - downloads fail in many library-specific ways
        if hub is not None and not hub.is_cached():
            raise ClipedgeError(hub.missing(option)) from None
        what = name if is_hub else f"{name} weights {tag!r}"
        raise ClipedgeError(
            f"--pretrained: could not load {what} ({type(error).__name__}); offline? "
            "pass --pretrained path/to/checkpoint.safetensors, or --pretrained none for random weights"
        ) from None
    if hub is not None and not hub.is_cached():  # open_clip keeps an hf-hub model at random init, with a log line
        raise ClipedgeError(hub.missing(option))
    if checkpoint is not None:
        _load_checkpoint_into(model, checkpoint, name)
    if source == NO_WEIGHTS:
        warnings.warn(f"{name} has random weights (--pretrained none): features carry no meaning", stacklevel=2)

    model = model.to(device).eval().requires_grad_(False)
    spec = _spec_for(model, name, source or name)
    return Backbone(model, spec, eval_transform, open_clip.get_tokenizer(name), device)


@contextmanager
def _random_init_notice_dropped(drop: bool) -> Iterator[None]:
    """Drop open_clip's "initialized randomly" line when clipedge loads the weights itself or says so itself.

    open_clip logs it on the root logger whenever ``create_model`` is given no tag, which is how a checkpoint
    (shipped or a file) is loaded: the line would tell the user the opposite of what happens. Its
    ``logging.warning`` would also configure the root logger of a program that has not, so a placeholder
    handler stands in for the call's duration.
    """
    if not drop:
        yield
        return
    root, placeholder = logging.getLogger(), logging.NullHandler()

    def not_the_notice(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root.addHandler(placeholder)
    root.addFilter(not_the_notice)
    try:
        yield
    finally:
        root.removeFilter(not_the_notice)
        root.removeHandler(placeholder)


def _spec_for(model: nn.Module, name: str, source: str) -> BackboneSpec:
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg["size"]
    image_size = size if isinstance(size, int) else int(size[0])
    config: dict[str, Any] = open_clip.get_model_config(name) or {}
    return BackboneSpec(
        name=name,
        pretrained=source,
        image_size=int(image_size),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bicubic")),
        resize_mode=str(cfg.get("resize_mode", "shortest")),
        embed_dim=int(getattr(model, "embed_dim", None) or model.text_projection.shape[-1]),
        model_config=config,
    )


def load_backbone_from_spec(spec: BackboneSpec, device: str | torch.device = "cpu") -> Backbone:
    """Rebuild the backbone a run was trained with."""
    return load_backbone(spec.name, spec.pretrained, device=device, model_config=spec.model_config or None)
