"""The model ``clipedge serve`` puts behind Triton: a python-backend model that runs ``clipedge.runtime``.

Triton's python backend imports this file (copied as ``REPO/NAME/1/model.py``) in a stub process per
instance and calls ``execute`` with every request the dynamic batcher gathered. All requests of one call
run as one batch through a :class:`~clipedge.runtime.Classifier`, so Triton's batching is the model's
batching. The ``NAME_encoded`` twin takes one JPEG/PNG per batch row as TYPE_STRING bytes and decodes and
resizes it here, exactly as the runtime does for files. A request that cannot be served (bytes that are
no image) gets its own INVALID_ARG error (HTTP 400); the other requests of the batch are still answered.
Shape and dtype errors never get here: Triton checks them against ``config.pbtxt`` first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.core.errors import ClipedgeError
from clipedge.core.images import DecodeOptions, UnreadableImage
from clipedge.runtime.classifier import Classifier
from clipedge.runtime.contract import INPUT_NAME
from clipedge.runtime.preprocessing.transform import prepare_frame
from clipedge.runtime.triton.adaptable import CLASS_NAMES_OUTPUT
from clipedge.runtime.triton.bank_watch import BankWatcher
from clipedge.runtime.triton.parameters import (
    BANK_FILE_PARAMETER,
    ENCODED_PARAMETER,
    MODEL_FILE_PARAMETER,
    THREADS_PARAMETER,
)

#: ``triton_python_backend_utils``, which exists only inside Triton's python backend stub; imported by
#: ``initialize``, so this file also imports where the stub is absent (the tests call its functions)
pb_utils: Any = None


def decode_image(data: bytes, size: int, interpolation: str, resize_mode: str,
                 decoding: DecodeOptions = DecodeOptions(), quality: str = "fast") -> np.ndarray:
    """Encoded image bytes → uint8 [size, size, 3] RGB through the runtime's own path for an image file
    (``prepare_frame`` on the bytes: EXIF orientation, the fast path's JPEG draft, the same resize), so the
    twin's probabilities are ``Classifier(path)``'s; one-line error otherwise."""
    if not data:
        raise ClipedgeError("images: empty bytes; expected a JPEG or PNG file's contents")
    try:
        return prepare_frame(data, size, interpolation, resize_mode, quality=quality, decoding=decoding)
    except UnreadableImage as error:
        raise ClipedgeError(f"images: {len(data)} bytes that are not a readable image ({error.skipped.reason}: "
                            f"{error.skipped.detail})") from None


def _rows(outputs: dict[str, np.ndarray], name: str, classifier: Classifier, start: int, count: int) -> np.ndarray:
    """One request's rows of an output; ``class_names`` (adaptable models): the answering bank's names per row."""
    if name == CLASS_NAMES_OUTPUT:
        return np.array([[label.encode() for label in classifier.labels]] * count, dtype=np.object_)
    return outputs[name][start : start + count]


class TritonPythonModel:
    """Triton's python-backend entry points: ``initialize``, ``execute``, ``finalize``."""

    def initialize(self, args: dict) -> None:
        global pb_utils
        import triton_python_backend_utils as pb_utils

        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        model = Path(args["model_repository"]) / args["model_version"] / parameters[MODEL_FILE_PARAMETER]
        self.encoded = parameters.get(ENCODED_PARAMETER) == "true"
        self.outputs = [output["name"] for output in config["output"]]
        threads = int(parameters.get(THREADS_PARAMETER) or 0) or None
        batch = max(config.get("max_batch_size", 0), 1)
        bank = parameters.get(BANK_FILE_PARAMETER)
        self.watcher = None
        if bank:  # an adaptable model: served from the watched bank, swapped in live when it changes
            self.watcher = BankWatcher(lambda: Classifier(model, batch_size=batch, threads=threads, classes=bank),
                                       Path(bank), lambda line: pb_utils.Logger.log_warn(line))
        else:
            self._classifier = Classifier(model, batch_size=batch, threads=threads)

    @property
    def classifier(self) -> Classifier:
        """The classifier serving now (an adaptable model's: the watcher's latest verified bank)."""
        return self.watcher.classifier if self.watcher else self._classifier

    def _frames(self, request, c: Classifier) -> np.ndarray:
        images = pb_utils.get_input_tensor_by_name(request, INPUT_NAME).as_numpy()
        if not self.encoded:
            return images
        return np.stack([decode_image(bytes(row[0]), c.image_size, c.interpolation, c.resize_mode, c.decoding,
                                      c.resize_quality) for row in images])

    def execute(self, requests: list) -> list:
        classifier = self.classifier  # read once: the whole batch is answered by one bank, old or new
        frames, served, responses = [], [], [None] * len(requests)
        for index, request in enumerate(requests):
            try:
                frames.append(self._frames(request, classifier))
                served.append(index)
            except ClipedgeError as error:
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG))
        if frames:
            outputs = classifier.infer(np.concatenate(frames))
            start = 0
            for index, batch in zip(served, frames):
                tensors = [pb_utils.Tensor(name, _rows(outputs, name, classifier, start, len(batch)))
                           for name in self.outputs]
                responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += len(batch)
        return responses

    def finalize(self) -> None:
        if self.watcher:
            self.watcher.close()
        else:
            self._classifier.close()
