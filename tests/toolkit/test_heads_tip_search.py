"""Tip-Adapter's α/β search: the grid scorer equals direct evaluation, ties included, and the grid is the documented one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_heads import synthetic_problem

from clipedge.heads import FewShotProblem
from clipedge.heads.tip_adapter import (
    SEARCH_SCALE,
    SEARCH_STEPS,
    WIDE_SEARCH_SCALE,
    TipAdapterHead,
    score_grid,
    search_alpha_beta,
    search_grid,
)


@torch.no_grad()
def direct_counts(head: TipAdapterHead, problem: FewShotProblem, betas, alphas) -> torch.Tensor:
    """Brute force: set the head to each (β, α), evaluate all of val at once, count argmax == label."""
    counts = torch.zeros(len(betas), len(alphas), dtype=torch.long)
    for i, beta in enumerate(betas.tolist()):
        for j, alpha in enumerate(alphas.tolist()):
            head.alpha, head.beta = alpha, beta
            counts[i, j] = int((head(problem.val_features).argmax(dim=1) == problem.val_labels).sum())
    return counts


def brute_force_search(head: TipAdapterHead, problem: FewShotProblem) -> tuple[float, float]:
    """The documented rule, by brute force: the first best (β outer, α inner) of ImageNet's grid; where it lies
    on that grid's largest α or β, DTD's grid too, which wins only when strictly better."""
    def first_best(betas, alphas):
        counts = direct_counts(head, problem, betas, alphas)
        i, j = divmod(int((counts == counts.max()).flatten().nonzero()[0]), len(alphas))
        return int(counts[i, j]), float(alphas[j]), float(betas[i]), i == len(betas) - 1 or j == len(alphas) - 1

    correct, alpha, beta, on_edge = first_best(search_grid(7.0, 200), search_grid(3.0, 20))
    if on_edge:
        wide_correct, wide_alpha, wide_beta, _ = first_best(search_grid(13.0, 200), search_grid(13.0, 20))
        if wide_correct > correct:
            return wide_alpha, wide_beta
    return alpha, beta


def near_tie_problem(val_rows: int = 300) -> FewShotProblem:
    """Class 1 is class 0 exactly (same text row, same keys): every image of either ties bit for bit, and the
    first maximum (class 0) wins. Class 2 is class 0 moved by about one float32 rounding step."""
    generator = torch.Generator().manual_seed(11)
    dim, shots = 16, 3
    text = F.normalize(torch.randn(4, dim, generator=generator), dim=-1)
    text[1] = text[0]
    text[2] = F.normalize(text[0] + 3e-7 * torch.randn(dim, generator=generator), dim=0)
    centres = text.clone()
    centres[3] = F.normalize(text[0] + 0.3 * torch.randn(dim, generator=generator), dim=0)
    labels = torch.arange(4).repeat_interleave(shots)
    train = centres[labels] + 0.2 * torch.randn(2, len(labels), dim, generator=generator)
    train[:, labels == 1] = train[:, labels == 0]
    train[:, labels == 2] = train[:, labels == 0] + 1e-7 * torch.randn(2, shots, dim, generator=generator)
    val_labels = torch.arange(4).repeat(val_rows // 4)
    val = centres[val_labels] + 0.25 * torch.randn(len(val_labels), dim, generator=generator)
    return FewShotProblem(text, 30.4, train, labels, val, val_labels)


@pytest.mark.parametrize("grouped", [True, False])
def test_grid_scorer_equals_direct_evaluation_on_near_ties(grouped):
    problem = near_tie_problem()
    head = TipAdapterHead.from_cache(problem)
    if not grouped:  # the general `weights @ values` path
        head.shots_per_class = None
    betas, alphas = search_grid(7.0, 40), search_grid(3.0, 20)
    expected = direct_counts(head, problem, betas, alphas)
    torch.testing.assert_close(score_grid(head, problem, betas, alphas), expected, rtol=0, atol=0)
    # the crafted ties matter: counting a tie as right (the old interval scorer) would give more on every cell
    with torch.no_grad():
        head.alpha, head.beta = float(alphas[5]), float(betas[5])
        logits = head(problem.val_features)
        ties = (logits.gather(1, problem.val_labels[:, None]).squeeze(1) == logits.max(dim=1).values)
        assert int(ties.sum()) > int(expected[5, 5])


@pytest.mark.parametrize("seed", [3, 5])
def test_search_takes_the_documented_grids_as_brute_force_does(seed):
    problem, _, _ = synthetic_problem(seed=seed, classes=5, shots=3, dim=24)
    if seed == 5:  # text directions unrelated to the classes: zero-shot is near chance and the cache must dominate
        unrelated = F.normalize(torch.randn(problem.text_weights.shape, generator=torch.Generator().manual_seed(9)), dim=-1)
        problem = FewShotProblem(unrelated, problem.logit_scale, problem.train_features, problem.train_labels,
                                 problem.val_features, problem.val_labels)
    head = TipAdapterHead.from_cache(problem)
    alpha, beta = search_alpha_beta(head, problem, progress=False)
    assert (alpha, beta) == brute_force_search(TipAdapterHead.from_cache(problem), problem)


def test_the_grids_are_the_official_imagenet_and_dtd_configurations():
    assert SEARCH_SCALE == (7.0, 3.0) and WIDE_SEARCH_SCALE == (13.0, 13.0) and SEARCH_STEPS == (200, 20)
    betas = search_grid(7.0, 200)
    assert len(betas) == 200 and betas[0] == pytest.approx(0.1) and betas[-1] < 7.0
    assert betas[1] - betas[0] == pytest.approx(6.9 / 200)
