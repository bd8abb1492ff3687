"""Camera frame → probabilities: frame overhead of the fast CPU resize, and its deviation from open_clip.

For clipedge-tiny and ViT-B-32 (random weights: nothing can be downloaded here): a zero-shot run on a small
generated folder, an fp32 ONNX export, then ``clipedge bench MODEL --frame 1920x1080`` (batch 1, alternating
rounds, one run each) with the fast and the exact resize. Beside it, the fast resize's deviation from the exact
transform on scikit-image's photographs placed in 1080p frames: max grey-level difference on the resized crop,
and top-1 agreement and max |Δprob| through the model.

    python benchmarks/frame_bench.py [--out bench-frames] [--iters 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skimage_data

import clipedge
from clipedge.core.tables import format_table
from clipedge.export import export_model
from clipedge.runtime import Classifier
from clipedge.runtime.bench.local import run_bench
from clipedge.runtime.preprocessing.transform import prepare_frame

sys.path.insert(0, str(Path(__file__).parent))
from export_real import write_folder  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "cat", "hubble_deep_field", "immunohistochemistry")
BACKBONES = {"clipedge-tiny": "default", "ViT-B-32": "none"}


def photo_frames(width: int = 1920, height: int = 1080) -> list[np.ndarray]:
    frames = []
    for name in PHOTOS:
        pixels = getattr(skimage_data, name)()
        pixels = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)
        frames.append(np.asarray(Image.fromarray(pixels[..., :3]).resize((width, height), Image.Resampling.BICUBIC)))
    return frames


def deviation(classifier: Classifier, frames: list[np.ndarray]) -> dict:
    size = classifier.image_size
    exact = np.stack([prepare_frame(f, size, quality="exact") for f in frames])
    fast = np.stack([prepare_frame(f, size, quality="fast") for f in frames])
    p_exact, p_fast = classifier.infer(exact)["probs"], classifier.infer(fast)["probs"]
    return {"photos": len(frames), "max_grey_diff": int(np.abs(exact.astype(int) - fast).max()),
            "mean_grey_diff": float(np.abs(exact.astype(int) - fast).mean()),
            "top1_agreement": float((p_exact.argmax(1) == p_fast.argmax(1)).mean()),
            "max_dprob": float(np.abs(p_exact - p_fast).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-frames"))
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    folder = write_folder(args.out / "data")
    frames = photo_frames()
    rows, report = [], {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "results": []}
    for backbone, pretrained in BACKBONES.items():
        run = args.out / backbone
        model = run / "export" / "model.onnx"
        if not model.exists():
            clipedge.train(folder, run, method="zero-shot", backbone=backbone,
                           pretrained=None if pretrained == "default" else pretrained, shots=2, views=1,
                           overwrite=True, progress=False)
            export_model(run, parity_count=16, progress=False)
        classifier = Classifier(model, threads=args.threads)
        found = deviation(classifier, frames)
        for quality in ("fast", "exact"):
            bench = run_bench(model, [1], iterations=args.iters, warmup=10, threads=args.threads,
                              frame="1920x1080", resize_quality=quality)
            entry = bench["results"][0]
            rows.append([backbone, quality, round(entry["runtime"]["p50_ms"], 2), round(entry["frame"]["p50_ms"], 2),
                         round(entry["frame"]["p99_ms"], 2), round(entry["frame_overhead_p50"], 2)])
            report["results"].append({"backbone": backbone, "resize_quality": quality, "bench": entry})
        report["results"].append({"backbone": backbone, "fast_vs_exact": found})
        print(f"{backbone}: fast vs exact on {found['photos']} photographs in 1080p frames: max grey diff "
              f"{found['max_grey_diff']}, mean {found['mean_grey_diff']:.3f}, top-1 agreement "
              f"{100 * found['top1_agreement']:.1f} %, max |Δprob| {found['max_dprob']:.2e}", flush=True)
    print(format_table(["model", "resize", "model-only p50 ms", "frame p50 ms", "frame p99 ms", "frame_overhead_p50"], rows))
    (args.out / "frame_bench.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
