"""Pretrain clipedge-tiny: a small open_clip CLIP, contrastively, on generated image–caption pairs.

Deterministic by seed: step s trains on ``generate_pairs(batch, seed=seed * 1_000_003 + s)``.
Writes fp16 safetensors of the open_clip state dict, which ``--backbone clipedge-tiny``
loads with no network. ``--eval-only FILE`` measures a weights file's zero-shot accuracy.

    python scripts/pretrain_tiny_clip.py                 # the shipped recipe
    python scripts/pretrain_tiny_clip.py --eval-only toolkit/weights/clipedge-tiny.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from clipedge.backbone import WEIGHTS_DIR, register_model_configs
from clipedge.synthetic.scenes import COLOURS, SHAPES, generate_pairs

MODEL = "clipedge-tiny"
EVAL_SEED = 999_999
MEAN = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC at model size → normalised NCHW, exactly what the eval transform produces at this size."""
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, count: int = 2000) -> dict[str, float]:
    """Zero-shot top-1 on held-out generated scenes: shapes (10 classes) and colours (8, prompt ensemble over shapes)."""
    model.eval()
    batch = generate_pairs(count, EVAL_SEED, second_object_rate=0.0)
    images = F.normalize(torch.cat([model.encode_image(to_pixels(chunk)) for chunk in np.array_split(batch.images, 8)]), dim=-1)

    def classifier(prompts_per_class: list[list[str]]) -> torch.Tensor:
        rows = [F.normalize(F.normalize(model.encode_text(tokenizer(p)), dim=-1).mean(0), dim=-1) for p in prompts_per_class]
        return torch.stack(rows)

    shapes = classifier([[f"a photo of a {s}."] for s in SHAPES])
    colours = classifier([[f"a photo of a {c} {s}." for s in SHAPES] for c in COLOURS])
    result = {
        "shape_top1": float(((images @ shapes.t()).argmax(1).numpy() == batch.labels("shape")).mean()),
        "colour_top1": float(((images @ colours.t()).argmax(1).numpy() == batch.labels("colour")).mean()),
    }
    model.train()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR / f"{MODEL}.safetensors")
    parser.add_argument("--eval-every", type=int, default=400)
    parser.add_argument("--eval-only", type=Path, help="only measure the zero-shot accuracy of this weights file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    register_model_configs()
    model = open_clip.create_model(MODEL)
    tokenizer = open_clip.get_tokenizer(MODEL)
    if args.eval_only:
        model.load_state_dict({k: v.float() for k, v in load_file(str(args.eval_only)).items()})
        print(json.dumps(zero_shot_accuracy(model, tokenizer)))
        return

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embedding" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / args.warmup if s < args.warmup else 0.5 * (1 + math.cos(math.pi * (s - args.warmup) / (args.steps - args.warmup))),
    )
    loss_fn = open_clip.ClipLoss()
    started = time.perf_counter()
    history = []
    bar = tqdm(range(args.steps), desc="pretraining clipedge-tiny", unit="step")
    for step in bar:
        batch = generate_pairs(args.batch_size, seed=args.seed * 1_000_003 + step)
        image_features, text_features, logit_scale = model(to_pixels(batch.images), tokenizer(batch.captions))
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            accuracy = zero_shot_accuracy(model, tokenizer)
            history.append({"step": step + 1, "loss": loss.item(), **accuracy, "seconds": time.perf_counter() - started})
            tqdm.write(json.dumps(history[-1]))
    seconds = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_suffix(".partial")
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, str(partial),
              metadata={"model": MODEL, "seed": str(args.seed), "steps": str(args.steps)})
    os.replace(partial, args.out)
    summary = {"seconds": seconds, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
               "size_mb": args.out.stat().st_size / 1e6, "final": history[-1], "history": history}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
