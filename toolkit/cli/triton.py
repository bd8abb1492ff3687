"""``clipedge repository`` and ``clipedge serve``: torch-free click commands over ``clipedge.runtime.triton``.

Registered on the main group (toolkit/cli.py). The repository options are shared with ``clipedge export
--format triton`` (export/cli.py), which writes the same repository right after exporting.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from clipedge.core.tables import format_table
from clipedge.runtime.triton.repository import (
    DEFAULT_QUEUE_DELAY_US,
    INSTANCE_KINDS,
    RepositoryOptions,
    write_repository,
)
from clipedge.runtime.triton.server import SERVER_DIED_EXIT, ServerDied, TritonServer
from clipedge.runtime.triton.serving import ServeOptions
from clipedge.runtime.triton.supervision import DEFAULT_RESTARTS, serve_forever


def repository_options(command: Callable) -> Callable:
    """The options of a written repository's scheduling: --name, --max-batch, --max-queue-delay-us, ..."""
    for option in reversed((
        click.option("--name", default="clipedge", show_default=True, help="Triton model name (the folder REPO/NAME)."),
        click.option("--max-batch", type=click.IntRange(min=1),
                     help="Triton max_batch_size (default: the engine profile's maximum, 32 for a dynamic ONNX)."),
        click.option("--max-queue-delay-us", default=DEFAULT_QUEUE_DELAY_US, show_default=True, type=click.IntRange(min=0),
                     help="Dynamic batching: how long a request may wait for others to share its batch."),
        click.option("--instances", default=1, show_default=True, type=click.IntRange(min=1),
                     help="Model instances (instance_group count)."),
        click.option("--instance-kind", type=click.Choice(INSTANCE_KINDS), default="auto", show_default=True,
                     help="auto: KIND_CPU for an INT8 ONNX (its integer kernels run on the CPU), KIND_GPU otherwise."),
        click.option("--ort-tensorrt", is_flag=True,
                     help="ONNX on GPU: add onnxruntime's TensorRT accelerator (engine and timing caches, the batch "
                          "range as its profile, FP32 precision mode so fp16/INT8 models keep their own types)."),
        click.option("--overwrite", is_flag=True, help="Replace an existing, non-empty REPO/NAME."),
    )):
        command = option(command)
    return command


def written_table(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return format_table(["file", "bytes"], [[str(p), p.stat().st_size] for p in files])


@click.command("repository")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Model repository folder (REPO).")
@repository_options
def repository_command(model: Path, out: Path, name: str, max_batch: int | None, max_queue_delay_us: int,
                       instances: int, instance_kind: str, ort_tensorrt: bool, overwrite: bool) -> None:
    """Write a Triton model repository REPO/NAME for an exported MODEL (.onnx or .engine), without PyTorch.

    REPO/NAME/config.pbtxt (built as Triton's ModelConfig), labels.txt, and 1/model.onnx or 1/model.plan.
    """
    options = RepositoryOptions(name, max_batch, max_queue_delay_us, instances, instance_kind, ort_tensorrt)
    folder = write_repository(model, out, options, overwrite)
    click.echo(written_table(folder))


@click.command("serve")
@click.argument("model_or_repo", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--http-port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--grpc-port", default=8001, show_default=True, type=click.IntRange(1, 65535))
@click.option("--metrics-port", default=8002, show_default=True, type=click.IntRange(1, 65535))
@click.option("--name", help="Model name (default: the repository's, or 'clipedge' for a model file).")
@click.option("--max-batch", type=click.IntRange(min=1), help="Largest batch the dynamic batcher forms (default: the repository's, or 32).")
@click.option("--max-queue-delay-us", type=click.IntRange(min=0), help=f"Dynamic batching delay (default: the repository's, or {DEFAULT_QUEUE_DELAY_US}).")
@click.option("--instances", type=click.IntRange(min=1), help="Model instances, each its own process (default: the repository's, or 1).")
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime CPU threads per instance (default: all cores).")
@click.option("--restarts", default=DEFAULT_RESTARTS, show_default=True, type=click.IntRange(min=0),
              help="How often a crashed tritonserver is restarted, and a model whose stub died reloaded, in any "
                   "5 minutes (each kind counted apart; restarts back off 1, 2, 4 ... s); past that serve exits with status 3.")
def serve_command(model_or_repo: Path, host: str, http_port: int, grpc_port: int, metrics_port: int, name: str | None,
                  max_batch: int | None, max_queue_delay_us: int | None, instances: int | None, threads: int | None,
                  restarts: int) -> None:
    """Serve an exported model (or a repository from `clipedge repository`) on Triton Inference Server.

    The model runs through clipedge.runtime inside Triton's python backend, with dynamic batching, under NAME
    (uint8 frames) and NAME_encoded (JPEG/PNG bytes, decoded and resized on the server). Readiness at
    /v2/health/ready, statistics at /v2/models/NAME/stats. Needs `pip install 'clipedge[serve]'`.

    Supervised: a crashed tritonserver is restarted on the same ports, and a model whose python-backend stub
    died is unloaded (readiness false within a second) and reloaded, up to --restarts times in 5 minutes.
    Exit status: 0 after SIGTERM or Ctrl-C, 2 for a bad model or option (or a busy port), 3 when tritonserver
    or a model died and was not restored (the message names which, and the signal or exit status).
    """
    options = ServeOptions(host, http_port, grpc_port, metrics_port, name, max_batch, max_queue_delay_us, instances, threads)
    try:
        serve_forever(TritonServer(model_or_repo, options), restarts, echo=click.echo)
    except ServerDied as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(SERVER_DIED_EXIT)
