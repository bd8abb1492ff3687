"""Secondary classifier: a detector's boxes → clipedge labels for each region, one batched call per frame.

    python examples/detector_crops.py --model RUN/export/model.onnx --detections detections.json --min-score 0.5

``detections.json`` is a detection list in the COCO results layout most detectors can write:
``[{"image": "frame_0001.jpg", "bbox": [x, y, width, height], "score": 0.91, "category": "car"}, ...]``
(``file_name`` is accepted for ``image``; paths are relative to the JSON file). Boxes are clipped to the frame,
as detectors may reach past its edge. Needs only numpy, PIL, onnxruntime (or TensorRT) and clipedge: no PyTorch.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from clipedge import ClipedgeError
from clipedge.core.images import load_rgb
from clipedge.runtime import Classifier


def load_detections(path: Path, min_score: float) -> dict[Path, list[dict]]:
    """Detections grouped by image, those below ``min_score`` dropped."""
    by_image: dict[Path, list[dict]] = defaultdict(list)
    for detection in json.loads(path.read_text()):
        if detection.get("score", 1.0) >= min_score:
            by_image[path.parent / (detection.get("image") or detection["file_name"])].append(detection)
    return by_image


def corners(bbox: list[float], width: int, height: int) -> list[float]:
    """COCO [x, y, w, h] → [x0, y0, x1, y1] inside the frame."""
    x, y, w, h = bbox
    return [max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)]


def classify(classifier: Classifier, image: Path, detections: list[dict]) -> list[dict]:
    # decoded as the model's training decoded its files (EXIF orientation, pixel limit), or skipped with a reason
    frame = np.asarray(load_rgb(image, classifier.decoding))
    height, width = frame.shape[:2]
    boxes = [corners(d["bbox"], width, height) for d in detections]
    predictions = classifier(frame, boxes=boxes)  # every region of this frame in one model call
    return [{"image": image.name, "box": box, "detector": d.get("category"), "label": p.label, "score": p.score}
            for d, box, p in zip(detections, boxes, predictions)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="exported .onnx model or .engine (not a --frame export)")
    parser.add_argument("--detections", required=True, type=Path, help="COCO-style detection list (JSON)")
    parser.add_argument("--min-score", type=float, default=0.0, help="ignore detections scored below this")
    parser.add_argument("--output", type=Path, help="write the labelled regions here as JSON")
    args = parser.parse_args()
    try:
        classifier = Classifier(args.model)
        rows = [row for image, found in load_detections(args.detections, args.min_score).items()
                for row in classify(classifier, image, found)]
    except (ClipedgeError, OSError, KeyError, ValueError) as error:  # one line, no traceback
        raise SystemExit(f"Error: {error}") from None
    for row in rows:
        box = ", ".join(f"{v:.0f}" for v in row["box"])
        print(f"{row['image']} [{box}] {row['detector']} → {row['label']} {row['score']:.3f}")
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2))
    print(f"classified {len(rows)} regions with {classifier.backend_name}")


if __name__ == "__main__":
    main()
