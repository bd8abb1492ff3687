"""Each head against an independent NumPy computation of its formula, and on a synthetic few-shot task."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipedge.heads import HEADS, FewShotProblem, head_class, head_options, training_loop
from clipedge.heads.clip_adapter import ClipAdapterHead
from clipedge.heads.linear_probe import LinearProbeHead
from clipedge.heads.tip_adapter import SEARCH_SCALE, TipAdapterFHead, TipAdapterHead, search_alpha_beta
from clipedge.heads.zero_shot import ZeroShotHead

D, C, SCALE = 16, 5, 37.5


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def text_weights(rng) -> np.ndarray:
    return unit_rows(rng.normal(size=(C, D)))


@pytest.fixture
def features(rng) -> np.ndarray:
    return rng.normal(size=(7, D)) * 3.0


def run_head(head, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return head(torch.tensor(features, dtype=torch.float32)).double().numpy()


def test_zero_shot_matches_numpy(text_weights, features):
    head = ZeroShotHead(torch.tensor(text_weights, dtype=torch.float32), SCALE)
    expected = SCALE * unit_rows(features) @ text_weights.T
    np.testing.assert_allclose(run_head(head, features), expected, rtol=1e-5, atol=1e-4)


def test_linear_probe_matches_numpy(text_weights, features, rng):
    head = LinearProbeHead(torch.tensor(text_weights, dtype=torch.float32), SCALE)
    weight, bias = rng.normal(size=(C, D)), rng.normal(size=C)
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor(weight))
        head.linear.bias.copy_(torch.tensor(bias))
    expected = unit_rows(features) @ weight.T + bias
    np.testing.assert_allclose(run_head(head, features), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("alpha", [0.2, 0.6])
def test_clip_adapter_matches_numpy(text_weights, features, alpha):
    head = ClipAdapterHead(torch.tensor(text_weights, dtype=torch.float32), SCALE, alpha=alpha)
    w1 = head.visual_adapter[0].weight.detach().double().numpy()
    w2 = head.visual_adapter[2].weight.detach().double().numpy()
    assert w1.shape == (D // 4, D) and w2.shape == (D, D // 4)
    assert head.visual_adapter[0].bias is None and head.visual_adapter[2].bias is None
    adapted = alpha * relu(relu(features @ w1.T) @ w2.T) + (1 - alpha) * features
    expected = SCALE * unit_rows(adapted) @ text_weights.T
    np.testing.assert_allclose(run_head(head, features), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("cls", [TipAdapterHead, TipAdapterFHead])
def test_tip_adapter_matches_numpy(cls, text_weights, features, rng):
    keys, labels = unit_rows(rng.normal(size=(12, D))), rng.integers(0, C, 12)
    values = np.eye(C)[labels]
    head = cls(torch.tensor(text_weights, dtype=torch.float32), SCALE, num_keys=12, alpha=1.7, beta=5.5)
    with torch.no_grad():
        head.keys.copy_(torch.tensor(keys))
        head.values.copy_(torch.tensor(values))
    f = unit_rows(features)
    expected = SCALE * f @ text_weights.T + 1.7 * np.exp(-5.5 * (1 - f @ keys.T)) @ values
    np.testing.assert_allclose(run_head(head, features), expected, rtol=1e-5, atol=1e-4)


def test_alpha_zero_reduces_to_zero_shot(text_weights, features, rng):
    weights = torch.tensor(text_weights, dtype=torch.float32)
    zero_shot = run_head(ZeroShotHead(weights, SCALE), features)
    adapter = ClipAdapterHead(weights, SCALE, alpha=0.0)
    tip = TipAdapterHead(weights, SCALE, num_keys=4, alpha=0.0, beta=3.0)
    with torch.no_grad():
        tip.keys.copy_(torch.tensor(unit_rows(rng.normal(size=(4, D)))))
        tip.values.copy_(torch.eye(C)[:4])
    np.testing.assert_allclose(run_head(adapter, features), zero_shot, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(run_head(tip, features), zero_shot, rtol=1e-5, atol=1e-4)


def synthetic_problem(seed: int = 0, dim: int = 48, classes: int = 8, shots: int = 16, views: int = 4):
    """Class clusters offset from their text directions, so zero-shot is weak but data helps.

    Each class centre is its text direction plus a larger shared-structure offset,
    which is what a domain shift does to CLIP features.
    """
    gen = torch.Generator().manual_seed(seed)
    text = F.normalize(torch.randn(classes, dim, generator=gen), dim=-1)
    centres = 0.6 * text + F.normalize(torch.randn(classes, dim, generator=gen), dim=-1)

    def draw(per_class: int, extra_views: int = 0):
        labels = torch.arange(classes).repeat_interleave(per_class)
        base = centres[labels] + 0.35 * torch.randn(len(labels), dim, generator=gen)
        if not extra_views:
            return base * 4.0, labels
        views_ = base + 0.1 * torch.randn(extra_views, len(labels), dim, generator=gen)
        return views_ * 4.0, labels

    train, train_labels = draw(shots, views)
    val, val_labels = draw(6)
    test, test_labels = draw(40)
    problem = FewShotProblem(text, 30.0, train, train_labels, val, val_labels)
    return problem, test, test_labels


def test_learned_heads_beat_zero_shot_on_a_shifted_feature_task():
    problem, test, test_labels = synthetic_problem()
    # A larger α suits specialised data (the paper); the tiny problem needs more Tip-Adapter-F steps than 1/epoch.
    options = {
        "clip-adapter": head_options("clip-adapter", epochs=100, alpha=0.6, recipe="fast", progress=False, precision="fp32"),
        "tip-adapter-f": head_options("tip-adapter-f", epochs=20, lr=1e-2, batch_size=32, progress=False, precision="fp32"),
    }

    def test_accuracy(kind: str) -> float:
        head = head_class(kind).fit(problem, options.get(kind, head_options(kind, progress=False)))
        with torch.no_grad():
            return (head(test).argmax(1) == test_labels).float().mean().item()

    zero_shot = test_accuracy("zero-shot")
    scores = {kind: test_accuracy(kind) for kind in ("clip-adapter", "tip-adapter-f", "linear-probe", "tip-adapter")}
    assert zero_shot < 0.8
    for kind in ("clip-adapter", "tip-adapter-f", "linear-probe", "tip-adapter"):
        assert scores[kind] > zero_shot + 0.1, (kind, scores[kind], zero_shot)


def test_alpha_auto_picks_from_the_grid_on_val():
    problem, _, _ = synthetic_problem(classes=4, shots=4)
    head = ClipAdapterHead.fit(problem, head_options("clip-adapter", epochs=5, alpha="auto", progress=False))
    assert head.alpha in (0.1, 0.2, 0.4, 0.6, 0.8)


@pytest.mark.parametrize("branch", ["text", "both"])
def test_text_branch_folds_into_a_plain_classifier(branch):
    problem, test, _ = synthetic_problem(classes=4, shots=4)
    head = ClipAdapterHead.fit(problem, head_options("clip-adapter", epochs=10, branch=branch, progress=False))
    assert head.text_adapter is None
    assert not torch.allclose(head.text_weights, problem.text_weights)
    torch.testing.assert_close(head.text_weights.norm(dim=-1), torch.ones(4))
    restored = ClipAdapterHead.restore(head.state_dict(), head.hparams())
    torch.testing.assert_close(restored(test), head(test))


@pytest.mark.parametrize("kind", list(HEADS))
def test_every_head_restores_from_its_tensors(kind):
    problem, test, _ = synthetic_problem(classes=3, shots=2)
    epochs = {"epochs": 2} if "epochs" in head_class(kind).Options.method_fields() else {}
    head = head_class(kind).fit(problem, head_options(kind, progress=False, **epochs))
    restored = head_class(kind).restore(dict(head.state_dict()), head.hparams())
    with torch.no_grad():
        torch.testing.assert_close(restored(test), head(test))


def tip_adapter_logits(problem: FewShotProblem, features: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                       alpha: float, beta: float) -> torch.Tensor:
    """The paper's formula in float64, written out apart from the head."""
    f = F.normalize(features.double(), dim=-1)
    cache = torch.exp(-beta * (1 - f @ keys.double().t())) @ values.double()
    return problem.logit_scale * f @ problem.text_weights.double().t() + alpha * cache


def test_tip_adapter_f_keeps_the_best_val_epoch_not_the_last(monkeypatch):
    problem, _, _ = synthetic_problem(classes=4, shots=4)
    snapshots = []
    original = training_loop.val_accuracy

    def record(head, problem, **kwargs):  # called once after every epoch: keep that epoch's keys
        snapshots.append(head.keys.detach().clone())
        return original(head, problem, **kwargs)

    monkeypatch.setattr(training_loop, "val_accuracy", record)
    head = TipAdapterFHead.fit(problem, head_options("tip-adapter-f", epochs=8, lr=0.05, batch_size=4, progress=False,
                                                         precision="fp32"))
    assert len(snapshots) == 8
    initial = TipAdapterHead.from_cache(problem)
    correct = [int((tip_adapter_logits(problem, problem.val_features, keys, initial.values, initial.alpha, initial.beta)
                    .argmax(1) == problem.val_labels).sum()) for keys in snapshots]
    best = correct.index(max(correct))  # the first epoch with the most val images right
    assert best != len(snapshots) - 1 and not torch.equal(snapshots[best], snapshots[-1]), correct  # a case that tells
    torch.testing.assert_close(head.keys.detach(), snapshots[best], rtol=0, atol=0)


def test_alpha_beta_search_widens_when_the_cache_wants_more_weight():
    """Text directions unrelated to the classes (zero-shot near chance): the cache must dominate, past α = 3."""
    problem, _, _ = synthetic_problem(seed=5, classes=6, shots=4)
    unrelated = F.normalize(torch.randn(problem.text_weights.shape, generator=torch.Generator().manual_seed(9)), dim=-1)
    problem = FewShotProblem(unrelated, problem.logit_scale, problem.train_features, problem.train_labels,
                             problem.val_features, problem.val_labels)
    alpha, _ = search_alpha_beta(TipAdapterHead.from_cache(problem), problem, progress=False)
    assert alpha > SEARCH_SCALE[1]


def test_grouped_cache_sum_equals_the_one_hot_matmul():
    problem, test, _ = synthetic_problem(classes=4, shots=3)
    grouped = TipAdapterHead.from_cache(problem)
    assert grouped.shots_per_class == 3
    general = TipAdapterHead.restore(dict(grouped.state_dict()), {**grouped.hparams(), "shots_per_class": None})
    with torch.no_grad():
        torch.testing.assert_close(grouped(test), general(test))


@pytest.mark.parametrize("kind", list(HEADS))
def test_folding_the_logit_scale_keeps_every_heads_logits(kind):
    problem, test, _ = synthetic_problem(classes=3, shots=2)
    epochs = {"epochs": 2} if "epochs" in head_class(kind).Options.method_fields() else {}
    head = head_class(kind).fit(problem, head_options(kind, progress=False, **epochs))
    folded = head_class(kind).restore(dict(head.state_dict()), head.hparams())
    folded.fold_logit_scale()
    with torch.no_grad():
        torch.testing.assert_close(folded(test), head(test))
    if kind not in ("linear-probe", "lp++"):  # the probes' logits never use the scale
        assert float(folded.logit_scale) == 1.0


def test_official_clip_adapter_schedule_is_dassls_warmup_then_per_epoch_cosine():
    """Against torch's own CosineAnnealingLR stepped once per epoch after one constant warm-up epoch
    (Dassl's ConstantWarmupScheduler with WARMUP_RECOUNT)."""
    from clipedge.heads.clip_adapter import RECIPES

    recipe = RECIPES["official"]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=recipe.lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs)
    expected = [1e-5]
    for _ in range(1, recipe.epochs):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        cosine.step()
    got = [recipe.learning_rate(epoch, step=3, steps_per_epoch=5) for epoch in range(recipe.epochs)]
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert (recipe.optimizer, recipe.momentum, recipe.weight_decay, recipe.batch_size) == ("sgd", 0.9, 5e-4, 32)


def test_fast_schedule_is_a_per_batch_cosine():
    from clipedge.heads.tip_adapter import FINETUNE_RECIPE

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=FINETUNE_RECIPE.lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=FINETUNE_RECIPE.epochs * 4)
    for epoch in range(FINETUNE_RECIPE.epochs):
        for step in range(4):
            assert FINETUNE_RECIPE.learning_rate(epoch, step, 4) == pytest.approx(optimizer.param_groups[0]["lr"])
            optimizer.step()
            cosine.step()


def test_refit_options_keep_what_the_head_chose():
    problem, _, _ = synthetic_problem(classes=4, shots=4)
    head = ClipAdapterHead.fit(problem, head_options("clip-adapter", epochs=3, alpha="auto", branch="text", recipe="fast",
                                                     progress=False))
    recorded = {"epochs": 3, "alpha": "auto", "branch": "text", "recipe": "fast", "views": 10, "lr": None}
    options = head.refit_options(recorded, seed=7, progress=False)
    assert (options.alpha, options.branch, options.recipe, options.epochs, options.seed) == (head.alpha, "text", "fast", 3, 7)
    tip = TipAdapterHead.from_cache(problem)
    assert tip.refit_options({"alpha": 0.5, "branch": "visual", "views": 10}, seed=1) == head_options("tip-adapter", seed=1)
