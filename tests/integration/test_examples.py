"""The camera-pipeline examples run end to end on a short video file that the test writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_image_folder

import clipedge
from clipedge.export import export_model

pytestmark = pytest.mark.integration

cv2 = pytest.importorskip("cv2", reason="the camera examples need opencv-python")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def model_and_video(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    run = root / "run"
    clipedge.train(write_image_folder(root / "data", per_class=8), run, method="zero-shot", backbone="test-tiny-vit",
                   pretrained="none", shots=2, progress=False)
    model = export_model(run, parity_count=8).artifact
    video = root / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (80, 60))
    rng = np.random.default_rng(0)
    for _ in range(12):
        writer.write(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    writer.release()
    return model, video


def test_opencv_camera_example(model_and_video, tmp_path):
    model, video = model_and_video
    output = tmp_path / "labelled.avi"
    result = subprocess.run([sys.executable, str(EXAMPLES / "opencv_camera.py"), "--model", str(model), "--source", str(video),
                             "--output", str(output), "--max-frames", "8"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    labels = [line.split()[2] for line in result.stdout.splitlines() if line.startswith("frame ")]
    assert len(labels) == 8 and set(labels) <= {"red", "green", "blue"}
    assert "classified 8 frames with onnxruntime" in result.stdout
    capture = cv2.VideoCapture(str(output))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 8


def test_opencv_camera_example_bad_source(model_and_video, tmp_path):
    model, _ = model_and_video
    result = subprocess.run([sys.executable, str(EXAMPLES / "opencv_camera.py"), "--model", str(model), "--source",
                             str(tmp_path / "missing.avi")], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "cannot open this camera or video file" in result.stderr


def test_gstreamer_example(model_and_video):
    sys.path.insert(0, str(EXAMPLES))
    from gstreamer_appsink import gstreamer_available

    if not gstreamer_available():
        pytest.skip("this OpenCV build has no GStreamer support (PyPI wheels do not; JetPack's does)")
    model, video = model_and_video
    result = subprocess.run([sys.executable, str(EXAMPLES / "gstreamer_appsink.py"), "--model", str(model), "--file", str(video),
                             "--max-frames", "5"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "classified 5 frames" in result.stdout, result.stderr


def test_detector_crops_example(model_and_video, tmp_path):
    """Boxes from a COCO-style detection list, one of them past the frame's edge and one below --min-score."""
    from PIL import Image

    model, _ = model_and_video
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[:, :80] = (220, 30, 30)  # left half red, right half blue
    frame[:, 80:] = (30, 40, 220)
    Image.fromarray(frame).save(tmp_path / "frame.png")
    detections = [{"image": "frame.png", "bbox": [5, 10, 60, 100], "score": 0.9, "category": "thing"},
                  {"image": "frame.png", "bbox": [100, 20, 80, 90], "score": 0.8, "category": "thing"},
                  {"image": "frame.png", "bbox": [0, 0, 10, 10], "score": 0.1, "category": "noise"}]
    (tmp_path / "detections.json").write_text(json.dumps(detections))
    output = tmp_path / "labels.json"
    result = subprocess.run([sys.executable, str(EXAMPLES / "detector_crops.py"), "--model", str(model), "--detections",
                             str(tmp_path / "detections.json"), "--min-score", "0.5", "--output", str(output)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "classified 2 regions with onnxruntime" in result.stdout
    rows = json.loads(output.read_text())
    assert [row["box"] for row in rows] == [[5, 10, 65, 110], [100, 20, 160, 110]]  # the second clipped to the frame
    assert {row["label"] for row in rows} <= {"red", "green", "blue"}
    bad = subprocess.run([sys.executable, str(EXAMPLES / "detector_crops.py"), "--model", str(model), "--detections",
                          str(tmp_path / "missing.json")], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and bad.stderr.startswith("Error:") and "Traceback" not in bad.stderr
