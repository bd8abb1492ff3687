"""What decoders print is captured per file inside a command, summarised in one line, and left alone elsewhere."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from conftest import make_image
from PIL import Image

from clipedge.cli import main
from clipedge.core.images import check_image, load_rgb


def damaged_fax_tiff(path: Path) -> Path:
    """A Group 4 TIFF with damaged code words: libtiff decodes it but prints warnings on stderr."""
    bits = (np.random.default_rng(0).random((64, 64)) > 0.5).astype(np.uint8) * 255
    Image.fromarray(bits).convert("1").save(path, compression="group4")
    data = bytearray(path.read_bytes())
    with Image.open(path) as image:
        offset, length = image.tag_v2[273], image.tag_v2[279]
    offset, length = (value[0] if isinstance(value, tuple) else value for value in (offset, length))
    data[offset + length // 3 : offset + length // 3 + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    return path


# --- decoding -----------------------------------------------------------------------------------------------------


def test_libtiff_warnings_are_captured_per_file_and_summarised(tmp_path, capfd):
    from onnx_models import clipedge_metadata, contract_onnx

    folder = tmp_path / "frames"
    folder.mkdir()
    damaged_fax_tiff(folder / "fax.tif")
    make_image((200, 30, 30), np.random.default_rng(1)).save(folder / "red.png")
    model = contract_onnx(tmp_path / "model.onnx", clipedge_metadata())
    result = CliRunner().invoke(main, ["predict", str(model), str(folder)])
    assert result.exit_code == 0, result.output
    assert "1 file(s) produced decoder warnings; --verbose lists them" in result.stderr
    assert "Fax4Decode" not in result.output + capfd.readouterr().err  # nothing reached the terminal raw
    verbose = CliRunner().invoke(main, ["-v", "predict", str(model), str(folder)])
    assert verbose.exit_code == 0
    assert f"{folder / 'fax.tif'}: Fax4Decode: Bad code word" in verbose.stderr
    assert "Fax4Decode" not in capfd.readouterr().err


def test_outside_a_command_decoding_leaves_the_process_alone(tmp_path, capfd):
    """A library user (a Classifier in a camera loop, a served model): fd 2 is not redirected, so another thread's
    output is never taken for a decoder's, decodes do not take turns, and nothing accumulates."""
    import threading

    from clipedge.core.decoder_messages import DECODER_MESSAGES

    fax = damaged_fax_tiff(tmp_path / "fax.tif")
    other_thread = threading.Thread(target=lambda: print("heartbeat", file=sys.stderr, flush=True))
    for _ in range(3):
        load_rgb(fax)
    other_thread.start()
    other_thread.join()
    assert DECODER_MESSAGES.files() == {}
    assert "heartbeat" in capfd.readouterr().err


def test_no_stderr_sink_means_no_capture_and_no_leak(tmp_path, monkeypatch):
    from clipedge.core import decoder_messages

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    good = tmp_path / "good.png"
    make_image((10, 20, 30), np.random.default_rng(0)).save(good)
    monkeypatch.setattr(decoder_messages._SINK, "pid", -1)  # the sink is (re)made on next use
    monkeypatch.setattr(decoder_messages.tempfile, "mkstemp", no_space)
    before = len(os.listdir("/proc/self/fd"))
    with decoder_messages.capturing_decoder_messages():
        for _ in range(4):
            assert load_rgb(good).size == (40, 40) and check_image(good) is None
    assert len(os.listdir("/proc/self/fd")) == before


