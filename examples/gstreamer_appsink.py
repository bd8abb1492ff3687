"""Classify frames from a GStreamer pipeline through an appsink (OpenCV's GStreamer backend).

    python examples/gstreamer_appsink.py --model model.onnx \
        --pipeline "v4l2src device=/dev/video0 ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"
    python examples/gstreamer_appsink.py --model model.onnx --file clip.avi     # builds a filesrc pipeline

On Jetson, use ``nvarguscamerasrc ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink``.
Needs an OpenCV built with GStreamer (JetPack's is; the PyPI wheels are not).
"""

from __future__ import annotations

import argparse

import cv2
from opencv_camera import run

from clipedge import ClipedgeError
from clipedge.runtime import Classifier


def gstreamer_available() -> bool:
    lines = [line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GStreamer:")]
    return bool(lines) and "YES" in lines[0]


def file_pipeline(path: str) -> str:
    return f"filesrc location={path} ! decodebin ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pipeline", help="a GStreamer pipeline ending in appsink")
    source.add_argument("--file", help="a video file, played through filesrc ! decodebin")
    parser.add_argument("--max-frames", type=int)
    args = parser.parse_args()
    if not gstreamer_available():
        raise SystemExit("this OpenCV was built without GStreamer; use JetPack's OpenCV or build one with -DWITH_GSTREAMER=ON")
    capture = cv2.VideoCapture(args.pipeline or file_pipeline(args.file), cv2.CAP_GSTREAMER)
    if not capture.isOpened():
        raise SystemExit("GStreamer pipeline did not start; test it with gst-launch-1.0 first")
    try:
        classifier = Classifier(args.model, bgr=True)
    except ClipedgeError as error:
        raise SystemExit(f"Error: {error}") from None
    frames = run(capture, classifier, output=None, show=False, max_frames=args.max_frames)
    print(f"classified {frames} frames with {classifier.backend_name}")


if __name__ == "__main__":
    main()
