"""Export real open_clip architectures (random weights: nothing can be downloaded here) and report the graphs.

For each backbone: a CLIP-Adapter run on a small generated 224 px folder, then
fp32 and fp16 ONNX exports through the full parity gate (64 images). Prints
node counts before/after optimisation, file sizes, parity figures and export
times. The runs stay in --out so ``clipedge bench --compare-torch`` can use them.

    python benchmarks/export_real.py --backbones ViT-B-16,RN50 [--out bench-runs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import clipedge
from clipedge.core.tables import format_table
from clipedge.export import export_model


def write_folder(root: Path, per_class: int = 8, size: int = 224) -> Path:
    """Three classes of noisy colour photographs-to-be; only the pipeline is measured, not accuracy."""
    rng = np.random.default_rng(0)
    for name, colour in {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 40, (size, size + 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default="ViT-B-16,RN50")
    parser.add_argument("--out", type=Path, default=Path("bench-runs"))
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    data = write_folder(args.out / "data")
    rows, results = [], []
    for backbone in args.backbones.split(","):
        run = args.out / backbone
        started = time.perf_counter()
        clipedge.train(data, run, method="clip-adapter", backbone=backbone, pretrained="none", shots=2, views=1,
                       epochs=2, overwrite=True, progress=False)
        train_seconds = time.perf_counter() - started
        for fp16 in (False, True):
            result = export_model(run, fp16=fp16)
            parity = result.parity
            entry = {"backbone": backbone, "precision": result.precision, "nodes_before": result.nodes_before,
                     "nodes_after": result.nodes_after, "size_mb": result.size_bytes / 1e6, "export_s": result.seconds,
                     "parity": parity, "train_s": train_seconds, "artifact": str(result.artifact)}
            results.append(entry)
            rows.append([backbone, result.precision, f"{result.nodes_before} → {result.nodes_after}",
                         round(entry["size_mb"], 1), round(result.seconds, 1),
                         f"{100 * min(parity['agreement_fused'], parity['agreement_pipeline']):.1f} %",
                         f"{max(parity['max_dprob_fused'], parity['max_dprob_pipeline']):.1e}"])
    machine = f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, Python {sys.version.split()[0]}"
    if args.json:
        print(json.dumps({"machine": machine, "results": results}, indent=2))
        return
    print(f"machine: {machine}\n")
    print(format_table(["backbone", "precision", "ONNX nodes (exported → optimised)", "MB", "export s", "top-1 agreement",
                        "max |Δprob|"], rows))
    print(f"\nparity on {results[0]['parity']['images']} images per export; 'export s' includes the parity gate")


if __name__ == "__main__":
    main()
