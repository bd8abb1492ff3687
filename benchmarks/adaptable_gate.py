"""The gate figures of ``clipedge export RUN --adaptable`` on clipedge-tiny (its shipped weights), per method.

For each method: a 4-shot run on the generated ``colours-tinted`` task, then adaptable fp32 and fp16 exports. The
table shows the image gate (the class bank applied to the ONNX ``embeddings`` against the fused PyTorch head and
the unfused pipeline) and the text gate (the text ONNX against open_clip's ``encode_text``, on the run's prompts
and the generated strings), with the export time.

    python benchmarks/adaptable_gate.py [--methods zero-shot,clip-adapter,tip-adapter,linear-probe] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from pathlib import Path

import torch

import clipedge
from clipedge.core.tables import format_table
from clipedge.export import export_model
from clipedge.synthetic import write_task

QUICK = {"clip-adapter": dict(epochs=20, views=4), "tip-adapter": dict(views=4), "linear-probe": dict(views=4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="zero-shot,clip-adapter,tip-adapter,linear-probe")
    parser.add_argument("--templates", default="imagenet", help="the runs' prompt templates (the text gate's prompts)")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    root = args.out or Path(tempfile.mkdtemp(prefix="adaptable-gate-"))
    data = write_task("colours-tinted", root / "data", images_per_class=20)
    rows = []
    for method in args.methods.split(","):
        run = root / method
        clipedge.train(data, run, method=method, backbone="clipedge-tiny", shots=4, templates=args.templates,
                       overwrite=True, progress=False, **QUICK.get(method, {}))
        for fp16 in (False, True):
            result = export_model(run, out=run / f"adaptable{'.fp16' if fp16 else ''}.onnx", adaptable=True,
                                  fp16=fp16, progress=False)
            image, text = result.parity, result.text_gate
            rows.append([method, result.precision, image["images"],
                         f"{100 * min(image['agreement_fused'], image['agreement_pipeline']):.1f} %",
                         f"{image['max_dprob_fused']:.1e} / {image['max_dprob_pipeline']:.1e}", f"{image['max_dprob']:.0e}",
                         text["strings"], f"{text['max_l2_diff']:.1e}", f"{text['max_l2_allowed']:.1e}",
                         f"{text['min_cosine']:.7f}", f"{result.seconds:.1f}"])
    print(format_table(["method", "precision", "images", "top-1 agreement", "max |Δprob| fused / pipeline", "bound",
                        "text strings", "text max L2 error", "allowed", "min cosine", "export s"], rows))


if __name__ == "__main__":
    main()
