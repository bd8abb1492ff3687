"""A corpus of image files nobody here wrote, through clipedge's decoding and then its commands.

The corpus is Pillow's own test images, the ``Tests/images`` folder of its source distribution (about 1,060
files: camera JPEGs with odd EXIF, CMYK, 16-bit, palette, animated and multi-page files, and the files its
fuzzers found). Get it from the package registry:

    pip download --no-binary :all: --no-deps "pillow==$(python -c 'import PIL; print(PIL.__version__)')" -d /tmp/pillow
    tar xzf /tmp/pillow/pillow-*.tar.gz -C /tmp/pillow
    python benchmarks/decoder_corpus.py /tmp/pillow/pillow-*/Tests/images --work /tmp/corpus-run

Part 1 decodes every file the way every command does (``clipedge.core.images``: the folder scan's header check, then
the full decode) and counts the outcomes by reason; anything else a decoder raises is a crash, listed by file.
Part 2 is what a user does with such a folder: the corpus dealt into four class folders by file order, then
``clipedge train`` (clipedge-tiny), ``eval``, ``calibrate``, ``export``, ``export --int8`` and ``predict --json``
on the whole corpus, each its own process, reporting exit status, whether a traceback was printed, the stderr
lines other than progress bars, and the decoder-warning summary. Exit status 1 if a file crashed the decoder or a command failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import PIL
from tqdm import tqdm

from clipedge.core.decoder_messages import capturing_decoder_messages
from clipedge.core.images import UnreadableImage, check_image, load_rgb
from clipedge.core.tables import format_table

#: the classes the corpus is dealt into: arbitrary labels (they carry no signal), enough of them for calibrate's
#: held-out classes
CLASSES = ("first", "second", "third", "fourth")


def decode_all(files: list[Path]) -> tuple[Counter, list[tuple[Path, str]]]:
    """Outcome counts ("decoded", "scan: REASON", "decode: REASON") and the files whose decoder raised anything
    clipedge does not treat as 'this file is not a usable image'."""
    outcomes: Counter = Counter()
    crashes: list[tuple[Path, str]] = []
    for path in tqdm(files, unit="file", desc="decoding", leave=False):
        try:
            problem = check_image(path)
            if problem is not None:
                outcomes[f"scan: {problem.reason}"] += 1
                continue
            load_rgb(path)
            outcomes["decoded"] += 1
        except UnreadableImage as error:
            outcomes[f"decode: {error.skipped.reason}"] += 1
        except Exception as error:  # the finding this script exists to report, not to hide
            crashes.append((path, f"{type(error).__name__}: {str(error)[:120]}"))
    return outcomes, crashes


def class_folders(files: list[Path], corpus: Path, data: Path) -> None:
    """The corpus dealt into the class folders, file names prefixed by their sub-folder so none collide."""
    shutil.rmtree(data, ignore_errors=True)
    for index, path in enumerate(files):
        target = data / CLASSES[index % len(CLASSES)] / "_".join(path.relative_to(corpus).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def run_command(args: list[str]) -> dict[str, object]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "clipedge.cli", *args], capture_output=True, text=True)
    # messages only: progress bars (tqdm's "NN%|") are not what a user has to read
    stderr = [kept for line in done.stderr.split("\n") if (kept := line.rsplit("\r", 1)[-1].strip()) and "%|" not in kept]
    return {
        "command": "clipedge " + " ".join(args),
        "exit": done.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "traceback": "Traceback" in done.stderr or "Traceback" in done.stdout,
        "stderr_lines": len(stderr),
        "decoder_summary": next((line for line in stderr if "decoder warnings" in line), ""),
        "skipped_line": next((line for line in stderr if line.startswith("skipped")), ""),
        "stdout": done.stdout,
    }


def user_commands(corpus: Path, work: Path) -> list[dict[str, object]]:
    data, run = work / "data", work / "run"
    shutil.rmtree(run, ignore_errors=True)
    commands = [
        ["train", str(data), "--out", str(run), "--shots", "16", "--method", "clip-adapter", "--recipe", "fast"],
        ["eval", str(run)],
        ["calibrate", str(run)],
        ["export", str(run)],
        # arbitrary labels leave the INT8 model nothing to agree on: the gate is relaxed, the image sampling is tested
        ["export", str(run), "--int8", "--min-agreement", "0.5"],
        ["predict", str(run / "export" / "model.onnx"), str(corpus), "--json"],
    ]
    results = []
    for args in tqdm(commands, unit="command", desc="commands", leave=False):
        results.append(run_command(args))
        if results[-1]["exit"] != 0 and args[0] == "train":
            break
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path, help="a folder of image files (Pillow's Tests/images)")
    parser.add_argument("--work", type=Path, required=True, help="where the class folders and the run are written")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.corpus.is_dir():
        sys.exit(f"corpus {args.corpus}: no such folder")
    files = sorted(path for path in args.corpus.rglob("*") if path.is_file())
    started = time.perf_counter()
    with capturing_decoder_messages() as decoder_messages:  # as a command does
        outcomes, crashes = decode_all(files)
        warned = len(decoder_messages.files())
    decode_seconds = time.perf_counter() - started
    class_folders(files, args.corpus, args.work / "data")
    commands = user_commands(args.corpus, args.work)
    predict = next((c for c in commands if c["command"].startswith("clipedge predict") and c["exit"] == 0), None)
    predicted = json.loads(predict["stdout"]) if predict else None
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, Pillow {PIL.__version__}"
    failed = bool(crashes) or any(c["exit"] != 0 or c["traceback"] for c in commands)
    if args.json:
        print(json.dumps({
            "corpus": str(args.corpus), "files": len(files), "machine": machine, "decode_seconds": decode_seconds,
            "outcomes": dict(outcomes), "crashes": [[str(p), e] for p, e in crashes], "decoder_warning_files": warned,
            "commands": [{k: v for k, v in c.items() if k != "stdout"} for c in commands],
            "predict": None if predicted is None else {"predictions": len(predicted["predictions"]),
                                                       "skipped": Counter(s["reason"] for s in predicted["skipped_files"])},
        }, indent=2))
        sys.exit(1 if failed else 0)
    print(f"{args.corpus}: {len(files)} files · {machine}")
    print(f"decoding, as every command does ({decode_seconds:.1f} s; {warned} file(s) produced decoder warnings):")
    print(format_table(["outcome", "files"], [[name, count] for name, count in sorted(outcomes.items())]))
    print(f"crashes (a decoder error clipedge does not handle): {len(crashes)}")
    for path, error in crashes:
        print(f"  {path}: {error}")
    print(format_table(["command", "exit", "seconds", "traceback", "stderr lines", "decoder summary"],
                       [[c["command"].replace(str(args.work), "WORK").replace(str(args.corpus), "CORPUS"), c["exit"],
                         c["seconds"], "yes" if c["traceback"] else "no", c["stderr_lines"], c["decoder_summary"]]
                        for c in commands]))
    if predicted is not None:
        reasons = Counter(s["reason"] for s in predicted["skipped_files"])
        print(f"predict: {len(predicted['predictions'])} classified, skipped by reason: {dict(sorted(reasons.items()))}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
