"""The JSON sidecar beside a TensorRT engine, and the contract of an engine built by another tool."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from clipedge.core.errors import ClipedgeError

from .names import LABELS_FILE, SIDECAR_SUFFIX
from .onnx_metadata import onnx_metadata_of


def sidecar_path(engine: Path) -> Path:
    """``model.engine`` → ``model.engine.json``: the build facts and contract of an engine."""
    return engine.with_name(engine.name + SIDECAR_SUFFIX)


def read_sidecar(engine: Path) -> dict[str, Any]:
    """The JSON sidecar beside an engine."""
    sidecar = sidecar_path(engine)
    try:
        facts = json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise ClipedgeError(f"model {engine}: missing {sidecar.name}, the sidecar `clipedge engine` writes") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ClipedgeError(f"model {sidecar}: not a valid JSON sidecar ({error})") from None
    if not isinstance(facts, dict):
        raise ClipedgeError(f"model {sidecar}: expected a JSON object")
    return facts


def engine_fingerprint(engine: Path) -> dict[str, Any]:
    """Size and SHA-256 of an engine file: recorded in its sidecar, so a sidecar is never trusted for another
    engine (a rebuilt, copied-over or truncated one)."""
    digest = hashlib.sha256()
    with open(engine, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return {"engine_bytes": engine.stat().st_size, "engine_sha256": digest.hexdigest()}


def check_sidecar_matches(engine: Path, sidecar: dict[str, Any]) -> None:
    """Refuse a sidecar whose recorded size or SHA-256 is not this engine file's (size first: it costs nothing)."""
    if "engine_sha256" not in sidecar:
        raise ClipedgeError(f"model {engine}: {sidecar_path(engine).name} records no engine_sha256 (written by an older "
                            f"clipedge); rebuild the engine with `clipedge engine MODEL.onnx`")
    size = engine.stat().st_size
    if size != sidecar.get("engine_bytes"):
        raise ClipedgeError(f"model {engine}: the file has {size} bytes but {sidecar_path(engine).name} describes one of "
                            f"{sidecar.get('engine_bytes')} bytes (truncated, or the sidecar of another engine)")
    if engine_fingerprint(engine)["engine_sha256"] != sidecar["engine_sha256"]:
        raise ClipedgeError(f"model {engine}: {sidecar_path(engine).name} belongs to another engine (SHA-256 differs); "
                            f"rebuild with `clipedge engine MODEL.onnx` or remove the sidecar")


def foreign_engine_metadata(engine: Path) -> dict[str, str]:
    """The contract of an engine without a sidecar (built by trtexec or Polygraphy): the metadata of the ONNX of the
    same name beside it, else class names from ``labels.txt`` beside it. The engine itself supplies the tensors."""
    onnx_file = engine.with_suffix(".onnx")
    labels = engine.with_name(LABELS_FILE)
    if onnx_file.is_file():
        return onnx_metadata_of(onnx_file)
    if labels.is_file():
        try:
            names = [line.strip() for line in labels.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise ClipedgeError(f"model {engine}: {labels} is not UTF-8 text (one class name per line)") from None
        if not names:
            raise ClipedgeError(f"model {engine}: {labels} lists no class names (one per line)")
        return {"class_names": json.dumps(names)}
    raise ClipedgeError(f"model {engine}: no {sidecar_path(engine).name} sidecar, and neither {onnx_file.name} nor "
                        f"{LABELS_FILE} beside it to name the classes")
