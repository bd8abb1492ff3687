"""``clipedge export RUN --format triton --out REPO``: export the ONNX (fp32, --fp16 or --int8) and write a
Triton model repository around it with the runtime's torch-free writer (clipedge.runtime.triton.repository).

The destination is checked before the slow export; the ONNX is exported and gated into a scratch folder
beside the repository and only then copied into REPO/NAME/1/model.onnx, so a failed gate writes nothing.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

from clipedge.core.errors import ClipedgeError
from clipedge.run_dir import load_run
from clipedge.runtime.triton.repository import RepositoryOptions, check_repository_destination, write_repository

from .exporter import ExportResult, export_model


def default_repository(run_dir: str | Path) -> Path:
    return load_run(run_dir).path / "export" / "triton"


def export_triton(run_dir: str | Path, out: str | Path | None = None, options: RepositoryOptions = RepositoryOptions(),
                  overwrite: bool = False, **export_options: Any) -> ExportResult:
    """Export RUN to ONNX (``export_options`` as for :func:`export_model`) and write REPO/NAME around it; the
    result's artifact is the repository's model file, ``related["repository"]`` its model folder."""
    options.validate()
    repo = Path(out) if out else default_repository(run_dir)
    if out is None:
        repo.parent.mkdir(exist_ok=True)
    if not repo.parent.is_dir():
        raise ClipedgeError(f"--out {repo}: folder {repo.parent} does not exist")
    check_repository_destination(repo, options.name, overwrite)
    scratch = Path(tempfile.mkdtemp(prefix=".clipedge-triton-", dir=repo.parent))
    try:
        result = export_model(run_dir, out=scratch / "model.onnx", format="onnx", **export_options)
        folder = write_repository(result.artifact, repo, options, overwrite)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    model = folder / "1" / "model.onnx"
    return dataclasses.replace(result, artifact=model, format="triton", size_bytes=model.stat().st_size,
                               related={**result.related, "repository": folder})
