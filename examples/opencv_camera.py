"""Classify a camera or video stream with OpenCV: frame → clipedge Classifier → label overlay.

    python examples/opencv_camera.py --model RUN/export/model.onnx --source 0          # webcam 0
    python examples/opencv_camera.py --model model.onnx --source clip.mp4 --output labelled.avi

Needs only numpy, onnxruntime (or TensorRT), opencv-python and clipedge: no PyTorch.
"""

from __future__ import annotations

import argparse
import time

import cv2

from clipedge import ClipedgeError
from clipedge.runtime import Classifier


def open_source(source: str) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not capture.isOpened():
        raise SystemExit(f"--source {source}: cannot open this camera or video file")
    return capture


def overlay(frame, text: str) -> None:
    cv2.rectangle(frame, (0, 0), (frame.shape[1], 28), (0, 0, 0), thickness=-1)
    cv2.putText(frame, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 0), 1, cv2.LINE_AA)


def run(capture: cv2.VideoCapture, classifier: Classifier, output: str | None, show: bool, max_frames: int | None) -> int:
    writer, count = None, 0
    while max_frames is None or count < max_frames:
        ok, frame = capture.read()
        if not ok:
            break
        started = time.perf_counter()
        prediction = classifier(frame)  # BGR frame of any size: resized and centre-cropped by the runtime
        milliseconds = (time.perf_counter() - started) * 1e3
        overlay(frame, f"{prediction.label} {prediction.score:.2f}  ({milliseconds:.1f} ms)")
        print(f"frame {count}: {prediction.label} {prediction.score:.3f}", flush=True)
        if output:
            if writer is None:
                height, width = frame.shape[:2]
                writer = cv2.VideoWriter(output, cv2.VideoWriter_fourcc(*"MJPG"), capture.get(cv2.CAP_PROP_FPS) or 25, (width, height))
            writer.write(frame)
        if show:
            cv2.imshow("clipedge", frame)
            if cv2.waitKey(1) & 0xFF == ord("q"):
                break
        count += 1
    if writer is not None:
        writer.release()
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="exported .onnx model or .engine")
    parser.add_argument("--source", default="0", help="camera index or video file/URL")
    parser.add_argument("--output", help="write the labelled video here (MJPG)")
    parser.add_argument("--show", action="store_true", help="display a window (q quits)")
    parser.add_argument("--max-frames", type=int)
    args = parser.parse_args()
    try:
        classifier = Classifier(args.model, bgr=True)  # OpenCV delivers BGR
    except ClipedgeError as error:  # a missing or foreign model file: one line, no traceback
        raise SystemExit(f"Error: {error}") from None
    frames = run(open_source(args.source), classifier, args.output, args.show, args.max_frames)
    print(f"classified {frames} frames with {classifier.backend_name}")


if __name__ == "__main__":
    main()
