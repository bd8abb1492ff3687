"""The real adaptable export (``export_model(run, adaptable=True)``) on the device side: the bank reproduces the
fused model of the same run, then, with torch and open_clip unimportable, classes are added by name and from
images, renamed, removed and classified with. Skipped where the export side is not in the tree."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import write_image_folder

pytest.importorskip("clipedge.export.adaptable", reason="the --adaptable export is not in this tree")

import clipedge  # noqa: E402
from clipedge.export import export_model  # noqa: E402
from clipedge.runtime import Classifier  # noqa: E402

BLOCK = "import sys\nfor name in ('torch', 'open_clip', 'torchvision'):\n    sys.modules[name] = None\n"


def test_real_adaptable_export_on_the_device(tmp_path):
    data = write_image_folder(tmp_path / "data", per_class=8)
    run = clipedge.train(data, tmp_path / "run", method="tip-adapter", backbone="test-tiny-vit", pretrained="none",
                         shots=4, progress=False).run_dir
    fused = export_model(run, tmp_path / "fused.onnx", parity_count=4, progress=False).artifact
    adaptable = export_model(run, tmp_path / "adaptable.onnx", adaptable=True, parity_count=4, progress=False).artifact
    assert {p.name for p in tmp_path.iterdir()} >= {"adaptable.onnx", "adaptable.classes.npz", "adaptable.text.onnx"}
    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    with Classifier(fused) as reference, Classifier(adaptable) as banked:
        assert banked.labels == reference.labels
        assert np.abs(banked.infer(frames)["probs"] - reference.infer(frames)["probs"]).max() < 1e-5
    photos = data / "green"
    script = BLOCK + textwrap.dedent(f"""
        import json
        from clipedge.runtime import Classifier
        with Classifier({str(adaptable)!r}) as classifier:
            classifier.add_class("forklift")
            classifier.add_class("pallet", images={str(photos)!r}, prompt="a photo of a {{}}.")
            classifier.rename_class("forklift", "reach truck")
            classifier.remove_class("red")
            classifier.save_classes()
        with Classifier({str(adaptable)!r}) as reloaded:
            predictions = reloaded({str(photos)!r} + "/000.png")
            print(json.dumps({{"classes": reloaded.labels, "label": predictions.label,
                              "torch": "torch" in sys.modules and sys.modules["torch"] is not None}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["classes"] == ["blue", "green", "reach truck", "pallet"] and not result["torch"]
    assert result["label"] in result["classes"]
