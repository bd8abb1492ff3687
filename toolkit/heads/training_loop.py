"""Cross-entropy training of a head on cached augmented views: the loop every gradient-trained head shares."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .base import FewShotProblem, Head, val_accuracy
from .options import TrainOptions
from .recipe import Recipe


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast roughly triples matmul throughput on CPUs with AVX512-BF16 or AMX."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    has_native_bf16 = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")() in ("AVX512", "AMX") and bool(
        getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    )
    return torch.bfloat16 if has_native_bf16 else None


def train_head(
    head: Head,
    problem: FewShotProblem,
    options: TrainOptions,
    recipe: Recipe,
    keep_best_on_val: bool = False,
    description: str = "train",
    penalty: Callable[[], torch.Tensor] | None = None,
) -> Head:
    """Cross-entropy training of ``head``'s trainable parameters on cached augmented views, per ``recipe``.

    Each epoch shows every image once, as one randomly chosen cached view. With
    ``keep_best_on_val`` the epoch with the best validation accuracy is kept
    (never the test set: that is the flaw in the official Tip-Adapter-F script
    that this avoids). ``penalty``, if given, is added to every batch's loss (CLAP's constraint).
    """
    device = torch.device(options.device)
    generator = torch.Generator().manual_seed(options.seed)
    torch.manual_seed(options.seed)
    head.to(device)
    if keep_best_on_val and problem.has_val:
        problem = _on_device(problem, device)
    views, labels = problem.train_features, problem.train_labels
    num_views, num_images = views.shape[0], views.shape[1]
    views, labels = views.to(device), labels.to(device)
    optimizer = recipe.optimizer_for([p for p in head.parameters() if p.requires_grad])
    batch_size = recipe.batch_size
    steps_per_epoch = math.ceil(num_images / batch_size)
    dtype = autocast_dtype(options.precision, device)
    best_state, best_accuracy = None, -1.0
    # miniters=1: an epoch can take minutes at ImageNet scale, and tqdm's adaptive interval, set by a fast first
    # epoch, would otherwise hold the bar at 0/N until the end
    bar = tqdm(range(recipe.epochs), desc=description, unit="epoch", disable=not options.progress, leave=False,
               miniters=1)
    for epoch in bar:
        head.train()
        order = torch.randperm(num_images, generator=generator).to(device)
        chosen_views = torch.randint(num_views, (num_images,), generator=generator).to(device)
        for step, start in enumerate(range(0, num_images, batch_size)):
            for group in optimizer.param_groups:
                group["lr"] = recipe.learning_rate(epoch, step, steps_per_epoch)
            index = order[start : start + batch_size]
            batch = views[chosen_views[index], index]
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = F.cross_entropy(head(batch).float(), labels[index])
                if penalty is not None:
                    loss = loss + penalty()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if keep_best_on_val and problem.has_val:
            score = val_accuracy(head, problem, dtype=dtype)
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{score:.3f}")
            if score > best_accuracy:
                best_accuracy = score
                best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        else:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    if best_state is not None:
        head.load_state_dict(best_state)
    return head.cpu().eval()


def _on_device(problem: FewShotProblem, device: torch.device) -> FewShotProblem:
    if problem.val_features.device == device:
        return problem
    return FewShotProblem(
        problem.text_weights, problem.logit_scale, problem.train_features, problem.train_labels,
        problem.val_features.to(device), problem.val_labels.to(device),
    )
