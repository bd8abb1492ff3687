"""Runtime latency and throughput beside PyTorch eager: backbone × precision × batch, for BENCHMARKS.md.

Each RUN directory must hold its exports (``RUN/export/model.onnx`` and, when
present, ``RUN/export/model.fp16.onnx``), e.g. from
``python benchmarks/export_real.py --backbones clipedge-tiny,ViT-B-32 --out bench-runs``.
Every model goes through ``clipedge.runtime.bench.run_bench`` with
``--compare-torch RUN`` semantics: the same uint8 frames through the runtime
and through the run's fp32 PyTorch eager pipeline, in one process, with the
same thread count, in alternating rounds. The load average is printed with the table because on a
shared machine other processes distort both columns.

    python benchmarks/runtime_bench.py bench-runs/clipedge-tiny bench-runs/ViT-B-32 [--batch 1,8,32] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import warnings
from pathlib import Path

import onnxruntime
import torch

from clipedge.core.tables import format_table
from clipedge.runtime.bench.local import parse_batches, run_bench
from clipedge.torch_pipeline import eager_pipeline

PRECISIONS = {"fp32": "model.onnx", "fp16": "model.fp16.onnx"}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine(threads: int) -> str:
    return (f"{cpu_name()}, {os.cpu_count()} cores, {threads} threads; onnxruntime {onnxruntime.__version__}, "
            f"torch {torch.__version__}, Python {sys.version.split()[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories with export/model*.onnx")
    parser.add_argument("--batch", default="1,8,32")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="alternating runtime/torch blocks per batch size")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    batches = parse_batches(args.batch)
    load_before = os.getloadavg()[0]
    reports, rows = [], []
    for run in args.runs:
        backbone = json.loads((run / "clipedge.json").read_text())["backbone"]["name"]
        for precision in args.precisions.split(","):
            model = run / "export" / PRECISIONS[precision]
            if not model.is_file():
                continue
            report = run_bench(model, batches, args.iters, args.warmup, args.threads, torch_run=run, rounds=args.rounds,
                               torch_pipeline=eager_pipeline(run, args.threads))
            reports.append({"backbone": backbone, "precision": precision, **report})
            for entry in report["results"]:
                rt, pt = entry["runtime"], entry["torch"]
                rows.append([backbone, precision, entry["batch"], round(rt["p50_ms"], 1), round(rt["p99_ms"], 1),
                             round(rt["images_per_s"], 1), round(pt["p50_ms"], 1), round(pt["p99_ms"], 1),
                             round(pt["images_per_s"], 1), f"{entry['speedup_p50']:.2f}×", f"{entry['speedup_throughput']:.2f}×"])
    load = f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    if args.json:
        print(json.dumps({"machine": machine(args.threads), "load": load, "iterations": args.iters, "results": reports}, indent=2))
        return
    print(f"machine: {machine(args.threads)}; {load}; {args.iters} timed calls after {args.warmup} warm-up calls\n")
    print(format_table(["backbone", "precision", "batch", "runtime p50 ms", "runtime p99 ms", "runtime img/s",
                        "torch p50 ms", "torch p99 ms", "torch img/s", "speed-up p50", "speed-up img/s"], rows))


if __name__ == "__main__":
    main()
