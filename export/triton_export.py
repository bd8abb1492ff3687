"""``clipedge export RUN --format triton --out REPO``: export the ONNX (fp32, --fp16 or --int8) and write a
Triton model repository around it with the runtime's torch-free writer (clipedge.runtime.triton.repository).

The destination is checked before the slow export; the ONNX is exported and gated into a staging folder
beside the repository (clipedge.core.atomic, as every export) and only then copied into REPO/NAME/1/model.onnx, so a failed gate writes nothing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from clipedge.core.atomic import staging_folder
from clipedge.core.errors import ClipedgeError
from clipedge.run_dir import load_run
from clipedge.runtime.triton.repository import check_repository_destination, write_repository

from .exporter import export_fused
from .options import ExportOptions
from .result import ExportResult


def default_repository(run_dir: str | Path) -> Path:
    return load_run(run_dir).path / "export" / "triton"


def export_triton(run_dir: str | Path, options: ExportOptions) -> ExportResult:
    """Export RUN to ONNX (fp32, ``fp16`` or ``int8``) and write REPO/NAME around it (``options.out`` is REPO); the
    result's artifact is the repository's model file, ``related["repository"]`` its model folder."""
    repository = options.repository
    repo = Path(options.out) if options.out else default_repository(run_dir)
    if options.out is None:
        repo.parent.mkdir(exist_ok=True)
    if not repo.parent.is_dir():
        raise ClipedgeError(f"--out {repo}: folder {repo.parent} does not exist")
    check_repository_destination(repo, repository.name, options.overwrite)
    with staging_folder(repo) as scratch:
        onnx_options = replace(options, format="onnx", out=scratch / "model.onnx", overwrite=False,
                               repository=ExportOptions().repository)
        result = export_fused(run_dir, onnx_options)
        folder = write_repository(result.artifact, repo, repository, options.overwrite)
    model = folder / "1" / "model.onnx"
    return replace(result, artifact=model, format="triton", size_bytes=model.stat().st_size,
                   related={**result.related, "repository": folder})
