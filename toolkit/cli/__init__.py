"""The ``clipedge`` command line: one click group whose commands are imported only when they run.

Each command group lives in its own module (``training``, ``export``, ``predict``, ``bench``, ``tensorrt``,
``triton``, ``classes``) and is listed in :data:`COMMANDS` with its one-line help, so ``clipedge --help`` imports
none of them and ``clipedge predict`` imports only ``predict`` (the layering test holds both to it). Commands
are thin: they parse options, call one library function and format what it returns; the library never prints.
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings

import click

from clipedge.core.errors import ClipedgeError
from clipedge.version import __version__

#: command name → (module under clipedge.cli, function name, the one-line help ``clipedge --help`` shows)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("training", "train", "Train a few-shot head on DATA (one subfolder per class) and write the run directory OUT."),
    "eval": ("training", "eval_command", "Accuracy of RUN on its held-out test images, or on the labelled folder DATA."),
    "calibrate": ("training", "calibrate", "Fit a temperature and an open-set rejection threshold on RUN's val images."),
    "demo": ("training", "demo", "The whole job on the shipped clipedge-tiny, offline: few-shot training, comparison, calibration, export, runtime."),
    "export": ("export", "export_command", "Fuse RUN's encoder and head into one model (uint8 images in, probabilities out) and check it."),
    "predict": ("predict", "predict_command", "Label IMAGES (files or folders, searched recursively) with MODEL (.onnx or .engine, or a served model: grpc://HOST:PORT/NAME or http://HOST:PORT/NAME), without PyTorch."),
    "bench": ("bench", "bench_command", "Latency (p50/p90/p99) and images/s of MODEL on uint8 frames in host memory, probabilities out."),
    "check": ("tensorrt", "check_command", "Check MODEL.onnx statically against TensorRT 10.x's ONNX rules (operators, types, UINT8/INT8, shapes)."),
    "engine": ("tensorrt", "engine_command", "Build a strongly typed TensorRT engine from a clipedge MODEL.onnx on this GPU, gated on its reference set."),
    "repository": ("triton", "repository_command", "Write a Triton model repository REPO/NAME for an exported MODEL (.onnx or .engine), without PyTorch."),
    "classes": ("classes", "classes_command", "List, add, remove and rename the classes of an adaptable MODEL (`clipedge export RUN --adaptable`), without PyTorch and without re-exporting; the class bank is rewritten atomically."),
    "serve": ("triton", "serve_command", "Serve an exported model (or a repository from `clipedge repository`) on Triton Inference Server."),
}


def load_command(name: str) -> click.Command:
    """The click command ``name``, importing its module now."""
    module, attribute, _ = COMMANDS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)


class ClipedgeGroup(click.Group):
    """Lazy commands (click's documented lazy-group pattern), and one error rule: a :class:`ClipedgeError` becomes
    one line on stderr and exit status 2, without a traceback; what image decoders said while the command ran is
    summarised in one line (listed with --verbose)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return load_command(name) if name in COMMANDS else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from :data:`COMMANDS`, so ``--help`` imports no command module."""
        width = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, click.utils.make_default_short_help(help_text, width)) for name, (_, _, help_text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        from clipedge.core.decoder_messages import capturing_decoder_messages

        with capturing_decoder_messages() as decoder_messages:
            try:
                return super().invoke(ctx)
            except ClipedgeError as error:
                click.echo(f"Error: {error}", err=True)
                sys.exit(2)
            finally:
                for line in decoder_messages.summary(verbose=bool(ctx.params.get("verbose"))):
                    click.echo(line, err=True)


def configure_logging(verbose: bool) -> None:
    """clipedge's own messages on stderr as plain lines; other libraries' chatter only with --verbose."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("clipedge", "py.warnings"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False  # libraries configure the root logger; don't print twice
    logging.getLogger("clipedge").setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(True)
    # open_clip and the ONNX exporter log chatter ("initialized randomly" even when clipedge then loads
    # the weights) on the root logger; only their errors are worth a user's attention.
    logging.getLogger().setLevel(logging.DEBUG if verbose else logging.ERROR)
    warnings.formatwarning = lambda message, category, *_: f"warning: {message}"


@click.group(cls=ClipedgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="clipedge")
@click.option("-v", "--verbose", is_flag=True, help="Print debug messages.")
def main(verbose: bool) -> None:
    """Few-shot CLIP classifiers (CLIP-Adapter family), exported for edge GPUs."""
    configure_logging(verbose)
