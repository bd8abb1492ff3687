"""``clipedge train``, ``eval``, ``calibrate`` and ``demo``: the PyTorch side, importing it only when run."""

from __future__ import annotations

from pathlib import Path

import click

from clipedge.calibration.rejection_policy import MIN_AUROC
from clipedge.core.errors import ClipedgeError
from clipedge.core.tables import format_table

from .options import device_option

#: the registered heads (spelled out: the CLI loads without torch), then auto, which chooses between them on val
METHODS = ("zero-shot", "linear-probe", "clip-adapter", "tip-adapter", "tip-adapter-f", "zs-lp", "clap", "gda", "lp++",
           "auto")


def parse_alpha(value: str | None) -> float | str | None:
    if value is None or value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise ClipedgeError(f"--alpha {value}: expected a number or 'auto'") from None



@click.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run directory to create.")
@click.option("--method", default="clip-adapter", show_default=True, help=f"One of: {', '.join(METHODS)} (auto: every method on the same features, the best val top-1 wins).")
@click.option("--backbone", default="clipedge-tiny", show_default=True, help="open_clip model name or hf-hub:ID.")
@click.option("--pretrained", default=None, help="Pretrained tag, checkpoint file, or 'none' (default: the shipped weights of clipedge-tiny).")
@click.option("--shots", default=16, show_default=True, type=int, help="Training images per class.")
@click.option("--seed", default=1, show_default=True, type=int, help="Few-shot sampling and training seed.")
@click.option("--split", type=click.Path(path_type=Path), help="CoOp-style split JSON (train/val/test lists).")
@click.option("--templates", default="single", show_default=True, help="'single', 'imagenet' (80 prompts), or a file.")
@click.option("--views", type=int, help="Augmented views per training image (default: the method's recipe).")
@click.option("--epochs", type=int, help="Training epochs (default: the method's recipe).")
@click.option("--lr", type=float, help="Learning rate (default: the method's recipe).")
@click.option("--batch-size", type=int, help="Head training batch size (default: the method's recipe).")
@click.option("--alpha", help="CLIP-Adapter blend ratio, or 'auto' to choose it on val (default 0.2).")
@click.option("--branch", help="CLIP-Adapter branch: visual (default), text or both.")
@click.option("--recipe", help="official or fast (clip-adapter: official, linear-probe: fast by default; docs/methods.md, 'Recipes and deviations').")
@device_option()
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True, help="Head training precision.")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Share a feature cache between runs (default RUN/cache).")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty RUN.")
@click.option("--no-exif-transpose", "exif_transpose", is_flag=True, flag_value=False, default=True,
              help="Use pixels as stored, ignoring the EXIF orientation (recorded in RUN and the exported model).")
@click.option("--max-image-pixels", type=int,
              help="Skip files declaring more pixels than this (default: Pillow's limit, about 89 million).")
def train(data: Path, out: Path, alpha: str | None, **options) -> None:
    """Train a few-shot head on DATA (one subfolder per class) and write the run directory OUT."""
    from clipedge.training import train as train_run

    result = train_run(data, out, alpha=parse_alpha(alpha), **options)
    metrics, timings = result.metrics, result.timings
    if result.candidates is not None:
        click.echo(format_table(
            ["candidate", "val top-1", "seconds", "note"],
            [[c["method"], c["val_top1"], c["seconds"], ("chosen" if c["method"] == result.method else c["error"] or "")]
             for c in result.candidates],
        ))
        click.echo()
    click.echo(
        format_table(
            ["method", "shots", "val top-1", "test top-1", "zero-shot test top-1"],
            [[result.method, result.shots, metrics["val_top1"], metrics["test_top1"], metrics["zero_shot_test_top1"]]],
        )
    )
    click.echo()
    click.echo(format_table(["stage", "seconds"], [[stage, round(seconds, 2)] for stage, seconds in timings.items()]))
    click.echo(f"\nrun written to {result.run_dir}")


@click.command("eval")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("data", required=False, type=click.Path(path_type=Path))
@click.option("--split", type=click.Path(path_type=Path), help="Evaluate the test list of this split JSON under DATA.")
@device_option()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema: clipedge/runtime/schemas/eval.schema.json).")
def eval_command(run: Path, data: Path | None, split: Path | None, device: str, as_json: bool) -> None:
    """Accuracy of RUN on its held-out test images, or on the labelled folder DATA."""
    from clipedge.evaluation import evaluate

    report = evaluate(run, data, split, device=device, progress=not as_json)
    if as_json:
        click.echo(report.to_json())
        return
    click.echo(format_table(
        ["method", "images", "top-1", f"top-{report.top5_k}"],
        [[report.method, report.num_images, report.top1, report.top5]],
    ))
    click.echo()
    click.echo(format_table(["class", "images", "accuracy"], [[c["class"], c["count"], c["accuracy"]] for c in report.per_class]))
    click.echo(f"\nconfusion matrix: {report.confusion_matrix_png}")


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--target-frr", default=0.05, show_default=True, type=float, help="Share of known-class val images that may be rejected.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the known/unknown class split for the AUROC check.")
@click.option("--min-auroc", default=MIN_AUROC, show_default=True, type=float,
              help="Held-out AUROC below which the rejection threshold is recorded but not applied.")
@click.option("--force-threshold", is_flag=True, help="Apply the rejection threshold even below --min-auroc.")
@device_option()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def calibrate(run: Path, target_frr: float, seed: int, min_auroc: float, force_threshold: bool, device: str,
              as_json: bool) -> None:
    """Fit a temperature and an open-set rejection threshold on RUN's val images."""
    import json

    from clipedge.calibration.calibrate import calibrate as calibrate_run

    report = calibrate_run(run, target_frr=target_frr, seed=seed, device=device, progress=not as_json,
                           min_auroc=min_auroc, force_threshold=force_threshold)
    if as_json:
        from clipedge.runtime.schemas import SCHEMA_VERSIONS

        click.echo(json.dumps({"schema_version": SCHEMA_VERSIONS["calibrate"], **report.to_manifest()}, indent=2))
        return
    click.echo(format_table(
        ["temperature", "ECE before", "ECE after", "NLL before", "NLL after"],
        [[report.temperature, report.ece_before, report.ece_after, report.nll_before, report.nll_after]],
    ))
    click.echo()
    click.echo(format_table(
        ["rejection score", "threshold", "target FRR", "val FRR", "val AUROC max_prob", "val AUROC energy"],
        [[report.rejection_score, report.candidate_threshold, report.target_frr, report.val_frr,
          report.auroc["max_prob"], report.auroc["energy"]]],
    ))
    if report.threshold_withheld:
        click.echo(f"\nno rejection threshold applied: {report.threshold_withheld} (--force-threshold applies it)")
    elif report.threshold_forced:
        click.echo(f"\nrejection threshold applied by --force-threshold although its held-out val AUROC "
                   f"{report.auroc[report.rejection_score]:.2f} is below the minimum {report.min_auroc:g}")
    click.echo(f"\nopen-set check on val: {report.open_set['known_classes']} known / {report.open_set['unknown_classes']} "
               f"held-out classes chose the score; reliability diagram: {report.diagram}")
    if report.test_auroc_report:
        click.echo("report only (test decides nothing): test AUROC "
                   + ", ".join(f"{kind} {value:.3f}" for kind, value in report.test_auroc_report.items()))


@click.command()
@click.option("--out", default="clipedge-demo", show_default=True, type=click.Path(path_type=Path), help="Folder for data, runs and results.")
@click.option("--full", is_flag=True, help="All of 1, 2, 4, 8 and 16 shots (default: 1, 4, 16).")
@click.option("--task", default="colours-tinted", show_default=True, help="colours-tinted, shapes-dusk, the harder shapes-sketch, or colours (no shift: the control).")
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of the task data and of the first few-shot draw.")
@click.option("--seeds", default=3, show_default=True, type=int, help="Few-shot draws per method and shot count; tables show their mean.")
@device_option()
def demo(out: Path, full: bool, task: str, seed: int, seeds: int, device: str) -> None:
    """The whole job on the shipped clipedge-tiny, offline: few-shot training, comparison, calibration, export, runtime."""
    from clipedge.cli.demo import run_demo

    run_demo(out, full=full, seed=seed, device=device, task=task, seeds=seeds, echo=click.echo)
