"""INT8 exports to benchmark on the CPU: a trained clipedge-tiny run and ViT-B-32 with random weights.

For each backbone: a run, its fp32 export and its INT8 export (``clipedge
export --int8``), with the figures the INT8 step measured: the calibration
method it chose, how many weighted layers run in INT8 (and which the measured
fallback returned to float), the agreement of each method on the selection
images and the gate's agreement with fp32, with its 95 % Wilson interval, on
every image calibration did not see. Latency is then measured by ``clipedge bench`` (printed
commands), INT8 and fp32 side by side in one run.

- clipedge-tiny: CLIP-Adapter, 16 shots, on the in-distribution ``colours``
  task (the shifted demo tasks put many test images within a hair of the
  decision boundary, where INT8 agreement says little about the model).
- ViT-B-32: random weights (nothing can be downloaded here), so every class
  probability is within a hair of the others and agreement is meaningless:
  its gate is switched off (``--min-agreement 0``) and only speed counts.

    python benchmarks/int8_export.py [--out bench-runs/int8] [--backbones clipedge-tiny,ViT-B-32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import torch

import clipedge
from clipedge.calibration.int8_options import Int8Options
from clipedge.core.tables import format_table
from clipedge.export import export_model
from clipedge.synthetic import write_task

sys.path.insert(0, str(Path(__file__).parent))
from export_real import write_folder  # noqa: E402  (the 224 px folder the other real-architecture benchmark uses)


def make_run(backbone: str, out: Path) -> tuple[Path, Path, Int8Options]:
    """(run, its data, INT8 options) for one backbone."""
    run = out / backbone
    if backbone == "clipedge-tiny":
        data = write_task("colours", out / "data-colours", images_per_class=40, seed=11)
        clipedge.train(data, run, method="clip-adapter", shots=16, overwrite=True, progress=False)
        return run, data, Int8Options()
    data = write_folder(out / "data-224", per_class=24)
    clipedge.train(data, run, method="clip-adapter", backbone=backbone, pretrained="none", shots=4, views=1, epochs=2,
                   overwrite=True, progress=False)
    return run, data, Int8Options(min_agreement=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-runs/int8"))
    parser.add_argument("--backbones", default="clipedge-tiny,ViT-B-32")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    args.out.mkdir(parents=True, exist_ok=True)
    rows, commands, results = [], [], {}
    for backbone in args.backbones.split(","):
        run, data, options = make_run(backbone, args.out)
        fp32 = export_model(run, progress=False)
        int8 = export_model(run, int8=options, progress=False)
        q, parity = int8.quantization, int8.parity
        selection = ", ".join(f"{c['method']} {100 * c['agreement']:.1f} %" for c in q["selection"])
        gate, (low, high) = q["gate"], q["gate"]["interval"]
        rows.append([backbone, q["calibration_method"], f"{q['int8_layers']}/{q['weighted_layers']}",
                     len(q["float_layers"]), selection,
                     f"{100 * gate['agreement']:.2f} % [{100 * low:.1f}, {100 * high:.1f}] of {gate['images']}",
                     f"{options.min_agreement:g}",
                     f"{fp32.size_bytes / 1e6:.1f} → {int8.size_bytes / 1e6:.1f}", round(int8.seconds, 1)])
        results[backbone] = {"fp32": str(fp32.artifact), "int8": str(int8.artifact), "quantization": q, "parity": parity}
        commands.append(f"clipedge bench {int8.artifact} --baseline {fp32.artifact} --images {data} "
                        f"--batch 1,32 --threads {args.threads}")
    print(format_table(["backbone", "method", "INT8 layers", "float fallback", "selection agreement",
                        "gate: agreement with fp32 [95 % CI] on unseen images",
                        "required", "MB fp32 → int8", "export s"], rows))
    (args.out / "int8_export.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\nlatency, INT8 beside fp32 in one run each:")
    for command in commands:
        print(f"  {command}")


if __name__ == "__main__":
    main()
