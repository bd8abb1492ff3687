"""Changing an adaptable Classifier's classes: the methods ``Classifier`` gains from a class bank.

A mixin, so ``classifier.add_class(...)`` reads as part of the one Classifier API while the bank logic stays in
this package: it uses the classifier's own preprocessing (``prepare``, the decode policy, the model's resize) and
``infer`` for the embeddings, so example photos are seen exactly as the images it will classify.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from clipedge.core.errors import ClipedgeError
from clipedge.runtime.preprocessing.transform import prepare_files

from .class_images import decode_class_images, is_file_input
from .learning import LearnedClass, check_new_name
from .model_classes import EMBEDDINGS, ModelClasses


class ClassEditing:
    """add_class / remove_class / rename_class / save_classes over ``self.classes`` (a ModelClasses, or None)."""

    classes: ModelClasses | None
    labels: list[str]

    def _bank(self) -> ModelClasses:
        if self.classes is None:
            raise ClipedgeError(f"model {self.path}: not adaptable, its classes are fixed in the graph; export it "
                                "with `clipedge export RUN --adaptable` to change classes on the device")
        return self.classes

    def add_class(self, name: str, images: Any = None, prompt: str | None = None, replace: bool = False,
                  by_name: bool | None = None) -> LearnedClass:
        """Learn class ``name``: by name (``images`` None: the bank's templates, or ``prompt``, through the text
        model), from ``images`` (files, folders, or any accepted frames; their embeddings in one batched call), or
        from both (images with ``prompt``, or with ``by_name=True`` for the bank's templates). In memory;
        :meth:`save_classes` writes it."""
        classes = self._bank()
        check_new_name(classes.bank, name, replace)  # before any image is decoded or run
        if by_name is None:
            by_name = images is None or prompt is not None
        if not by_name and images is None:
            raise ClipedgeError(f"class {name!r}: by_name=False needs images to learn from")
        embeddings, skipped = None, ()
        if images is not None:
            if is_file_input(images) and self.frame is None:
                frames, skipped = decode_class_images(images, lambda files: prepare_files(
                    files, self.image_size, self.interpolation, self.resize_mode, self.resize_quality, self.decoding))
            else:
                frames = self.prepare(images)[0]
            embeddings = self.infer(frames)[EMBEDDINGS]
        learned = classes.add(name, embeddings, by_name, prompt, replace)
        self.labels = list(classes.bank.names)
        return dataclasses.replace(learned, skipped=skipped)

    def remove_class(self, name: str) -> None:
        """Forget class ``name`` (in memory; :meth:`save_classes` writes it)."""
        self._bank().remove(name)
        self.labels = list(self.classes.bank.names)

    def rename_class(self, old: str, new: str) -> None:
        """Call class ``old`` ``new`` from now on (in memory; :meth:`save_classes` writes it)."""
        self._bank().rename(old, new)
        self.labels = list(self.classes.bank.names)

    def save_classes(self, path: str | Path | None = None) -> Path:
        """Write the class bank atomically (by default over the one it was read from); returns where."""
        return self._bank().save(path)

