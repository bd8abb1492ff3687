"""One writer per destination: a second ``train`` or ``export`` to the same ``--out`` is refused while the first
runs (a real second process holds the lock), a killed holder blocks nothing, stale staging folders go."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import clipedge
from clipedge.cli import main
from clipedge.core.atomic import staging_folder
from clipedge.core.errors import ClipedgeError
from clipedge.core.lock import destination_lock, lock_file

TINY = ["--backbone", "test-tiny-vit", "--pretrained", "none", "--shots", "2", "--method", "zero-shot"]
HOLDER = textwrap.dedent("""
    import sys
    from clipedge.core.lock import destination_lock
    with destination_lock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.readline()
""")


class Holder:
    """Another process holding the lock of ``destination`` until it is told to go (or killed)."""

    def __init__(self, destination: Path):
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, str(destination)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "locked"

    def release(self) -> None:
        self.process.communicate("go\n", timeout=30)
        assert self.process.returncode == 0

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


def one_error_line(args: list) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_second_train_to_the_same_out_is_refused_while_the_first_runs(image_folder, tmp_path):
    out = tmp_path / "run"
    holder = Holder(out)
    try:
        line = one_error_line(["train", image_folder, "--out", out, *TINY])
        assert f"--out {out}: another clipedge process (pid {holder.process.pid}) is writing it now" in line
        assert not out.exists()
    finally:
        holder.release()
    assert not lock_file(out).exists(), "a clean release removes the lock file"
    result = CliRunner().invoke(main, ["train", str(image_folder), "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_to_a_destination_being_written_is_refused(image_folder, tmp_path):
    run = tmp_path / "run"
    clipedge.train(image_folder, run, method="zero-shot", backbone="test-tiny-vit", pretrained="none", shots=2,
                   progress=False)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"the good model")
    holder = Holder(model)
    try:
        line = one_error_line(["export", run, "--out", model])
        assert "another clipedge process" in line and str(model) in line
    finally:
        holder.release()
    assert model.read_bytes() == b"the good model"


def test_a_killed_holder_blocks_nothing_and_its_staging_folder_is_removed(image_folder, tmp_path):
    out = tmp_path / "run"
    holder = Holder(out)
    stale = tmp_path / ".run.k1ll3d_x.partial"  # what a killed train leaves: its half-written staging folder
    (stale / "cache").mkdir(parents=True)
    (stale / "cache" / "train-0.safetensors").write_bytes(b"\0" * 1024)
    other = tmp_path / ".run.v2.abcdefgh.partial"  # another destination's (run.v2) staging folder
    other.mkdir()
    holder.kill()
    assert lock_file(out).exists(), "the killed holder could not remove its lock file"
    result = CliRunner().invoke(main, ["train", str(image_folder), "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert not stale.exists() and other.is_dir()
    assert not lock_file(out).exists()


def test_the_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    destination = tmp_path / "model.onnx"
    with destination_lock(destination), destination_lock(destination):  # a probe inside a held lock passes
        assert lock_file(destination).read_text().strip() == str(os.getpid())
        probe = subprocess.run([sys.executable, "-c", "import sys\nfrom clipedge.core.lock import check_unlocked\n"
                                "try:\n    check_unlocked(sys.argv[1])\nexcept Exception as e:\n    print(e)",
                                str(destination)], capture_output=True, text=True, timeout=60)
        assert f"(pid {os.getpid()}) is writing it now" in probe.stdout, probe
    assert not lock_file(destination).exists()


def test_staging_refuses_a_destination_another_process_holds(tmp_path):
    destination = tmp_path / "model.onnx"
    holder = Holder(destination)
    try:
        with pytest.raises(ClipedgeError, match="another clipedge process"), staging_folder(destination):
            pass
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    finally:
        holder.release()


def test_a_nested_staging_step_leaves_the_outer_one_alone(tmp_path):
    """Only the process step that took the lock clears staging folders beside it: a nested one (same process)
    must not take the outer step's live folder for a dead writer's."""
    destination = tmp_path / "model.onnx"
    with staging_folder(destination) as outer, staging_folder(destination) as inner:
        assert outer.is_dir() and inner.is_dir() and outer != inner
    assert not list(tmp_path.iterdir())


def test_a_published_run_directory_has_mkdirs_permissions(tmp_path):
    """Staging folders are private (mkdtemp); a run directory published from one must not stay 0700."""
    from clipedge.run_dir import staged_run_dir

    umask = os.umask(0o022)
    try:
        with staged_run_dir(tmp_path / "run", overwrite=False) as staging:
            (staging / "clipedge.json").write_text("{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o755
