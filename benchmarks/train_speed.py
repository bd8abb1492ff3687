"""Head training speed on cached features at ImageNet 16-shot scale.

16 shots × 1,000 classes = 16,000 training images, D = 1024 (RN50's feature
size), 10 augmented views each, 4 val images per class (CoOp's val size), and
each method's official epoch count (CLIP-Adapter 200, Tip-Adapter-F 20). The
features are synthetic class clusters: only the time is measured here, not
accuracy. Prints one table; pass ``--json`` for machine-readable output.

    python benchmarks/train_speed.py [--threads 2] [--methods clip-adapter,tip-adapter,tip-adapter-f]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
import torch.nn.functional as F

from clipedge.core.tables import format_table
from clipedge.heads import FewShotProblem, head_class, head_options

TARGETS_S = {"clip-adapter": 60.0, "tip-adapter": 10.0, "tip-adapter-f": 60.0}


def imagenet_scale_problem(classes: int, shots: int, dim: int, views: int, val_per_class: int) -> FewShotProblem:
    generator = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(classes, dim, generator=generator), dim=-1)
    centres = text + F.normalize(torch.randn(classes, dim, generator=generator), dim=-1)
    train_labels = torch.arange(classes).repeat_interleave(shots)
    val_labels = torch.arange(classes).repeat_interleave(val_per_class)
    train = centres[train_labels] + 0.5 * torch.randn(views, len(train_labels), dim, generator=generator)
    val = centres[val_labels] + 0.5 * torch.randn(len(val_labels), dim, generator=generator)
    # Cached features are stored in fp16; training reads them back as fp32, as here.
    return FewShotProblem(text, 100.0, train.half().float(), train_labels, val.half().float(), val_labels)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--methods", default="clip-adapter,tip-adapter,tip-adapter-f")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--views", type=int, default=10)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, help="override each method's default batch size")
    parser.add_argument("--epochs", type=int, help="override the official epoch counts (for quick checks only)")
    parser.add_argument("--recipe", default="fast", choices=["official", "fast"], help="CLIP-Adapter's recipe")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    problem = imagenet_scale_problem(args.classes, args.shots, args.dim, args.views, val_per_class=4)
    rows, results = [], {}
    for method in args.methods.split(","):
        trained = "epochs" in head_class(method).Options.method_fields()
        options = head_options(method, epochs=args.epochs if trained else None, batch_size=args.batch_size if trained else None,
                               recipe=args.recipe if method == "clip-adapter" else None,
                               precision=args.precision, progress=not args.json)
        started = time.perf_counter()
        head = head_class(method).fit(problem, options)
        seconds = time.perf_counter() - started
        with torch.no_grad():
            val = (head(problem.val_features).argmax(1) == problem.val_labels).float().mean().item()
        target = TARGETS_S.get(method)
        results[method] = {"seconds": seconds, "target_s": target, "val_top1": val, "hparams": head.hparams()}
        rows.append([method, round(seconds, 1), target, "yes" if target and seconds <= target else "no", round(val, 3)])

    machine = f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}, precision {args.precision}"
    scale = f"{args.classes} classes × {args.shots} shots × {args.views} views, D={args.dim}"
    if args.json:
        print(json.dumps({"machine": machine, "scale": scale, "results": results}, indent=2))
        return
    print(f"head training on cached features: {scale}\nmachine: {machine}\n")
    print(format_table(["method", "seconds", "target s", "met", "val top-1 (synthetic)"], rows))


if __name__ == "__main__":
    main()
