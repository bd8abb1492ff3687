"""The device side of classes as data runs in the runtime install: torch and open_clip unimportable, a class is
added by name and from images, renamed and removed, saved, and classified with; the CLI does the same."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from class_bank_models import adaptable_export, write_colour_folder

BLOCK = "import sys\nfor name in ('torch', 'open_clip', 'torchvision'):\n    sys.modules[name] = None\n"


def run_torch_free(body: str) -> str:
    script = BLOCK + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_add_rename_remove_and_classify_without_torch(tmp_path):
    model = adaptable_export(tmp_path / "export", ["red", "green", "blue"], cache=True)
    photos = write_colour_folder(tmp_path / "purple", "purple", 4)
    test_photos = write_colour_folder(tmp_path / "test", "purple", 3, seed=7, noise=12)
    out = run_torch_free(f"""
        import json
        import numpy as np
        from PIL import Image
        from clipedge.runtime import Classifier

        yellow = np.full((2, 40, 40, 3), (230, 220, 30), dtype=np.uint8)
        with Classifier({str(model)!r}) as classifier:
            named = classifier.add_class("yellow")
            learned = classifier.add_class("violet", images={str(photos)!r})
            classifier.rename_class("violet", "purple")
            classifier.remove_class("green")
            classifier.save_classes()
        with Classifier({str(model)!r}) as reloaded:
            files = sorted(str(p) for p in __import__("pathlib").Path({str(test_photos)!r}).iterdir())
            print(json.dumps({{"classes": reloaded.labels, "named": named.source, "learned": learned.generator,
                              "yellow": [p.label for p in reloaded(yellow)],
                              "purple": [p.label for p in reloaded(files)],
                              "loaded": sorted(m for m in ("torch", "open_clip") if sys.modules.get(m))}}))
    """)
    result = json.loads(out.splitlines()[-1])
    assert result == {"classes": ["red", "blue", "yellow", "purple"], "named": "name", "learned": "gda",
                      "yellow": ["yellow", "yellow"], "purple": ["purple"] * 3, "loaded": []}


def test_the_classes_command_without_torch(tmp_path):
    model = adaptable_export(tmp_path / "export", ["red", "green"])
    out = run_torch_free(f"""
        from clipedge.cli import main
        for args in (["add", "blue"], ["rename", "blue", "navy"], ["list"]):
            try:
                main(["classes", {str(model)!r}, *args], standalone_mode=False)
            except SystemExit as exit:
                assert not exit.code, exit.code
    """)
    assert "navy" in out and "by name" in out
