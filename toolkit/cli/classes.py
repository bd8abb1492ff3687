"""``clipedge classes MODEL list | add | remove | rename``: an adaptable model's classes, changed on the device.

Torch-free: the model's bank (``model.classes.npz``) is edited through ``Classifier`` (the image model embeds
example photos, the exported text tower embeds names) and written back atomically, so a camera pipeline reading
the bank sees the old classes or the new ones. Every refusal is one line, exit status 2, bank untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from clipedge.core.tables import format_table

from .options import providers_option

SOURCES = {"trained": "trained", "name": "by name", "images": "from images", "name+images": "name + images"}


def bank_options(command: Callable) -> Callable:
    """``--bank`` and ``--provider`` on every subcommand (a group's own options would have to precede MODEL)."""
    command = click.option("--bank", type=click.Path(path_type=Path),
                           help="The class bank to read and write (default: MODEL's own, MODEL.classes.npz).")(command)
    return providers_option()(command)


def open_classifier(ctx: click.Context, bank: Path | None, providers: tuple[str, ...]):
    from clipedge.runtime import Classifier

    return Classifier(ctx.obj["model"], providers=list(providers) or None, classes=bank)


@click.group("classes")
@click.argument("model", type=click.Path(path_type=Path))
@click.pass_context
def classes_command(ctx: click.Context, model: Path) -> None:
    """List, add, remove and rename the classes of an adaptable MODEL (`clipedge export RUN --adaptable`),
    without PyTorch and without re-exporting; the class bank is rewritten atomically."""
    ctx.obj = {"model": model}


@classes_command.command("list")
@bank_options
@click.pass_context
def list_command(ctx: click.Context, bank: Path | None, providers: tuple[str, ...]) -> None:
    """The classes in row order, with where each came from."""
    with open_classifier(ctx, bank, providers) as classifier:
        classes, path = classifier.classes.bank, classifier.classes.path
    rows = [(i, name, SOURCES[entry["source"]], entry["images"], entry["templates"], entry["prompt"] or "",
             entry["revision"]) for i, (name, entry) in enumerate(zip(classes.names, classes.provenance))]
    click.echo(f"{path}: {len(classes.names)} classes, revision {classes.revision}, head {classes.head_kind} "
               f"({classes.rows} rows){f', {len(classes.cache_labels)} cache keys' if classes.has_cache else ''}")
    click.echo(format_table(["#", "class", "source", "images", "templates", "prompt", "revision"], rows))


@classes_command.command("add")
@click.argument("name")
@click.option("--images", "images", multiple=True, type=click.Path(path_type=Path),
              help="Example photos of the class: files or folders (searched recursively); repeatable.")
@click.option("--prompt", help="Embed this text instead of the bank's templates over NAME ('{}' stands for NAME); "
                               "with --images, the class combines both.")
@click.option("--with-name", is_flag=True, help="With --images: also embed NAME through the bank's templates.")
@click.option("--replace", is_flag=True, help="Replace the class if NAME exists (its row position is kept).")
@bank_options
@click.pass_context
def add_command(ctx: click.Context, name: str, images: tuple[Path, ...], prompt: str | None, with_name: bool,
                replace: bool, bank: Path | None, providers: tuple[str, ...]) -> None:
    """Add class NAME: by name through the exported text model, from example --images, or both."""
    with open_classifier(ctx, bank, providers) as classifier:
        by_name = True if with_name or not images or prompt is not None else None
        learned = classifier.add_class(name, list(images) or None, prompt, replace, by_name=by_name)
        for skipped in learned.skipped:
            click.echo(f"skipped {skipped.path}: {skipped.reason}{f' ({skipped.detail})' if skipped.detail else ''}",
                       err=True)
        path = classifier.save_classes()
        revision = classifier.classes.bank.revision
    how = SOURCES[learned.source] + (f", {learned.images} images" if learned.images else "") \
        + (f", {learned.templates} prompts" if learned.templates else "") \
        + (f", {learned.generator} row" if learned.generator else "")
    click.echo(f"{'replaced' if learned.replaced else 'added'} class {learned.name!r} as row {learned.index} ({how}); "
               f"{path} is at revision {revision}")


@classes_command.command("remove")
@click.argument("name")
@bank_options
@click.pass_context
def remove_command(ctx: click.Context, name: str, bank: Path | None, providers: tuple[str, ...]) -> None:
    """Remove class NAME (its row and cache keys)."""
    with open_classifier(ctx, bank, providers) as classifier:
        classifier.remove_class(name)
        path = classifier.save_classes()
        left = len(classifier.labels)
    click.echo(f"removed class {name!r}; {path} has {left} classes")


@classes_command.command("rename")
@click.argument("old")
@click.argument("new")
@bank_options
@click.pass_context
def rename_command(ctx: click.Context, old: str, new: str, bank: Path | None, providers: tuple[str, ...]) -> None:
    """Call class OLD NEW from now on (its row, images and cache keys stay)."""
    with open_classifier(ctx, bank, providers) as classifier:
        classifier.rename_class(old, new)
        path = classifier.save_classes()
    click.echo(f"renamed class {old!r} to {new.strip()!r} in {path}")
