"""examples/opencv_camera.py on the contract model (tests/integration/test_examples.py runs it on an exported one):
it labels every frame of a written video, writes the labelled video, and names a missing model in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx_models import solid

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_opencv_example_labels_a_written_video(model, tmp_path):
    cv2 = pytest.importorskip("cv2", reason="the camera examples need opencv-python")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (40, 30))
    colours = ["red", "green", "blue", "red", "green", "blue"]
    for colour in colours:
        writer.write(np.ascontiguousarray(solid(colour, 30, 40)[..., ::-1]))  # VideoWriter takes BGR
    writer.release()
    output = tmp_path / "labelled.avi"
    result = subprocess.run([sys.executable, str(EXAMPLES / "opencv_camera.py"), "--model", str(model), "--source", str(video),
                             "--output", str(output)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [line.split()[2] for line in result.stdout.splitlines() if line.startswith("frame ")] == colours
    assert int(cv2.VideoCapture(str(output)).get(cv2.CAP_PROP_FRAME_COUNT)) == len(colours)
    missing = subprocess.run([sys.executable, str(EXAMPLES / "opencv_camera.py"), "--model", str(tmp_path / "none.onnx"),
                              "--source", str(video)], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "Error: model" in missing.stderr and "no such file" in missing.stderr
    assert "Traceback" not in missing.stderr
