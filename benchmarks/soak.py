"""Runtime soak for BENCHMARKS.md: one Classifier, 100,000 mixed frames per batch size, memory and answers over time.

Runs ``clipedge.runtime.bench.soak`` (frames in every size and colour layout the runtime accepts, cycled) once per
batch size, each with a fresh Classifier, and prints resident-memory growth after warm-up (target ≤ 10 MB) and
how many calls' probabilities differ from the first cycle's (target 0: the answers at the end are those at the
start). The machine, thread count and load average are printed with the table, since other processes on a
shared machine change the seconds (not the memory or the answers).

    python benchmarks/soak.py runs/tiny/export/model.onnx [--frames 100000] [--batch 1,8] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import onnxruntime
from tqdm import tqdm

from clipedge.core.tables import format_table
from clipedge.runtime import Classifier
from clipedge.runtime.bench.local import parse_batches
from clipedge.runtime.bench.soak import soak

HEADERS = ["batch", "frames", "seconds", "RSS after warm-up MB", "RSS end MB", "growth MB", "max growth MB",
           "differing calls"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="an exported model (.onnx)")
    parser.add_argument("--frames", type=int, default=100_000, help="frames per batch size")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--warmup", type=int, default=2_000, help="frames before the RSS baseline is read")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reports = []
    for batch in parse_batches(args.batch):
        classifier = Classifier(args.model, threads=args.threads, providers=["CPUExecutionProvider"])
        with tqdm(total=args.frames, unit="frame", desc=f"batch {batch}", leave=False) as bar:
            reports.append(soak(classifier, args.frames, batch, warmup=args.warmup, progress=bar))
        classifier.close()
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads, "
               f"onnxruntime {onnxruntime.__version__}, Python {sys.version.split()[0]}, "
               f"load average {os.getloadavg()[0]:.1f}")
    if args.json:
        print(json.dumps({"model": str(args.model), "machine": machine, "results": [r.to_dict() for r in reports]}, indent=2))
        return
    print(f"{args.model} · {machine}")
    print(format_table(HEADERS, [[r.batch, r.frames, r.seconds, r.rss_after_warmup_mb, r.rss_end_mb, r.rss_growth_mb,
                                  r.rss_max_growth_mb, r.differing_calls] for r in reports]))


if __name__ == "__main__":
    main()
