"""``clipedge predict``: torch-free, over the runtime; output through the writers of ``predict_output``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from clipedge.core.errors import ClipedgeError
from clipedge.core.images import SkippedFile, UnreadableImage
from clipedge.runtime.classifier import Classifier, Prediction
from clipedge.runtime.preprocessing.boxes import Region, boxes_for, check_boxes, read_boxes_file
from clipedge.runtime.preprocessing.image_files import check_inputs, collect_images
from clipedge.runtime.preprocessing.transform import prepare_whole_frame

from .options import providers_option
from .predict_output import not_an_image, stream_predictions, write_all

#: the shell's status for a run stopped by SIGINT (128 + 2); predict's output is complete up to that point
INTERRUPTED_EXIT = 130


def predict_regions(classifier: Classifier, paths: list[Path], boxes: dict[str, list] | list, top_k: int,
                    boxes_file: Path) -> tuple[list[tuple[Region, Prediction]], list[SkippedFile]]:
    """``--boxes``: each image's boxes classified in one call per image; images without boxes are skipped, a
    bad box is an error naming the file and the box."""
    results: list[tuple[Region, Prediction]] = []
    unreadable: list[SkippedFile] = []
    boxed = [(path, boxes_for(boxes, path)) for path in paths]
    if all(image_boxes is None for _, image_boxes in boxed):
        raise ClipedgeError(f"--boxes {boxes_file}: names none of the {len(paths)} image(s) given (keys are image paths "
                            "as given on the command line, or file names)")
    for path, image_boxes in boxed:
        if image_boxes is None:
            continue
        try:
            frame = prepare_whole_frame(path, classifier.decoding)
        except UnreadableImage as error:
            unreadable.append(error.skipped)
            continue
        checked = check_boxes(image_boxes, frame.shape[1], frame.shape[0], f"--boxes {boxes_file} for {path}")
        results += [(Region(path, box), prediction)
                    for box, prediction in zip(checked, classifier.predict(frame, top_k=top_k, boxes=checked))]
    return results, unreadable


@click.command("predict")
@click.argument("model")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", default=1, show_default=True, type=click.IntRange(min=1), help="Classes listed per image.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Images per model call.")
@providers_option()
@click.option("--labels", "labels", type=click.Path(path_type=Path),
              help="Class names, one per line, for an ONNX model that is not a clipedge export (uint8 NHWC input).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object (model, backend, predictions, skipped files), streamed one prediction per line.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: path,label,score (+ label_k,score_k for --top-k > 1), streamed.")
@click.option("--boxes", "boxes_file", type=click.Path(path_type=Path),
              help="JSON boxes [[x0, y0, x1, y1], ...] to classify instead of whole images: one list for every image, "
                   "or an object mapping image paths (or file names) to their boxes.")
@click.option("--no-exif-transpose", "exif_transpose", is_flag=True, flag_value=False, default=None,
              help="Use pixels as stored, ignoring the EXIF orientation (default: as the model's training did).")
@click.option("--max-image-pixels", type=click.IntRange(min=1),
              help="Skip files declaring more pixels than this (default: the model's training limit, else Pillow's, "
                   "about 89 million).")
def predict_command(model: str, images: tuple[Path, ...], top_k: int, batch_size: int, providers: tuple[str, ...],
                    labels: Path | None, as_json: bool, as_csv: bool, boxes_file: Path | None,
                    exif_transpose: bool | None, max_image_pixels: int | None) -> None:
    """Label IMAGES (files or folders, searched recursively) with MODEL (.onnx or .engine, or a served model:
    grpc://HOST:PORT/NAME or http://HOST:PORT/NAME), without PyTorch.

    Results are written batch by batch as they are computed, so folders of any size run in flat memory and
    an interrupted run (Ctrl-C, SIGTERM: exit status 130) keeps, and properly closes, what it did. Files in
    folders that are not images are skipped and counted on stderr; so are files that fail to decode, each with
    its reason. Animations and multi-page files are classified by their first frame.
    """
    if as_json and as_csv:
        raise ClipedgeError("--json and --csv: choose one output format")
    classifier_options = {"providers": list(providers) or None, "batch_size": batch_size, "labels": labels,
                          "exif_transpose": exif_transpose, "max_image_pixels": max_image_pixels}
    if boxes_file:
        _predict_boxes(model, images, top_k, read_boxes_file(boxes_file), boxes_file, as_json, as_csv,
                       Classifier(model, **classifier_options))
        return
    inputs = check_inputs(images)
    classifier = Classifier(model, **classifier_options)
    fmt = "json" if as_json else "csv" if as_csv else "table"
    outcome = stream_predictions(classifier, inputs, sys.stdout, model, fmt, top_k)
    report_skipped(outcome.skipped)
    if outcome.interrupted:
        click.echo(f"interrupted: the output holds the {outcome.classified} image(s) classified before", err=True)
        sys.exit(INTERRUPTED_EXIT)
    if not outcome.classified:
        raise ClipedgeError(f"IMAGES: no readable images among {len(outcome.skipped)} file(s)")


def _predict_boxes(model: Path, images: tuple[Path, ...], top_k: int, boxes: dict[str, list] | list, boxes_file: Path,
                   as_json: bool, as_csv: bool, classifier: Classifier) -> None:
    """``--boxes``: regions of each image, one model call per image (not streamed: boxes files list few images)."""
    paths, not_images = collect_images(images)
    skipped = [not_an_image(path) for path in not_images]
    results, unreadable = predict_regions(classifier, paths, boxes, top_k, boxes_file)
    skipped += unreadable
    if not results:
        raise ClipedgeError(f"IMAGES: no readable images among {len(paths) + len(skipped)} file(s)")
    write_all(results, skipped, sys.stdout, classifier, model, "json" if as_json else "csv" if as_csv else "table", top_k)
    report_skipped(skipped)


def report_skipped(skipped: list[SkippedFile]) -> None:
    """One line on stderr: how many files were skipped, the first few with their one-word reasons."""
    if skipped:
        names = ", ".join(f"{s.path.name} ({s.reason})" for s in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        click.echo(f"skipped {len(skipped)} file(s) that are not readable images: {names}", err=True)
