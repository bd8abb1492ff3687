"""ZS-LP, CLAP, GDA and LP++ against independent NumPy transcriptions of their formulas."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from test_heads import synthetic_problem, unit_rows

from clipedge.core.errors import ClipedgeError
from clipedge.heads import FewShotProblem, head_options
from clipedge.heads.clap import ClapHead, zero_shot_confidence
from clipedge.heads.gda import ALPHA_GRID, GdaHead, gda_classifier
from clipedge.heads.lp_plus_plus import LpPlusPlusHead, starting_point
from clipedge.heads.zs_lp import ZsLpHead

D, C, SCALE = 12, 4, 30.4


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(3)


def as_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def logits_of(head, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return head(as_tensor(features)).double().numpy()


def numpy_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_zs_lp_logits_are_cosines_to_normalised_rows(rng):
    text, prototypes, features = unit_rows(rng.normal(size=(C, D))), rng.normal(size=(C, D)) * 2, rng.normal(size=(6, D))
    head = ZsLpHead(as_tensor(text), SCALE)
    head.prototypes = torch.nn.Parameter(as_tensor(prototypes))
    expected = SCALE * unit_rows(features) @ unit_rows(prototypes).T
    np.testing.assert_allclose(logits_of(head, features), expected, rtol=1e-5, atol=1e-4)
    head.fold_prototypes()
    assert head.prototypes is None and "prototypes" not in head.state_dict()
    np.testing.assert_allclose(logits_of(head, features), expected, rtol=1e-5, atol=1e-4)


def test_zs_lp_starts_at_zero_shot_and_moves_towards_the_data():
    problem, test, labels = synthetic_problem(classes=4, shots=8)
    head = ZsLpHead.fit(problem, head_options("zs-lp", epochs=30, progress=False, precision="fp32"))
    torch.testing.assert_close(head.text_weights.norm(dim=-1), torch.ones(4))
    assert not torch.allclose(head.text_weights, problem.text_weights)
    with torch.no_grad():
        zero_shot = (problem.logit_scale * torch.nn.functional.normalize(test, dim=-1) @ problem.text_weights.t())
        assert (head(test).argmax(1) == labels).float().mean() > (zero_shot.argmax(1) == labels).float().mean()


def numpy_clap_multipliers(problem: FewShotProblem) -> np.ndarray:
    views, labels = problem.train_features.numpy().astype(np.float64), problem.train_labels.numpy()
    x = unit_rows(views.reshape(-1, views.shape[-1]))
    y = np.tile(labels, views.shape[0])
    probs = numpy_softmax(problem.logit_scale * x @ problem.text_weights.numpy().T)
    return np.array([probs[y == c, c].mean() for c in range(problem.num_classes)])


def test_clap_multipliers_and_penalty_match_numpy(rng):
    problem, _, _ = synthetic_problem(classes=C, shots=3, views=2, dim=D)
    multipliers = numpy_clap_multipliers(problem)
    np.testing.assert_allclose(zero_shot_confidence(problem).numpy(), multipliers, rtol=1e-5)
    head = ClapHead(problem.text_weights, problem.logit_scale)
    prototypes = rng.normal(size=(C, D))
    head.prototypes = torch.nn.Parameter(as_tensor(prototypes))
    expected = np.mean(multipliers * ((prototypes - problem.text_weights.numpy()) ** 2).sum(axis=1))
    assert float(head.penalty(problem)().detach()) == pytest.approx(expected, rel=1e-5)
    assert ZsLpHead(problem.text_weights, problem.logit_scale).penalty(problem) is None


def test_clap_stays_closer_to_the_text_rows_than_zs_lp():
    problem, _, _ = synthetic_problem(classes=4, shots=8)
    options = head_options("clap", epochs=40, progress=False, precision="fp32")
    distance = {cls.kind: float((cls.fit(problem, options).text_weights - problem.text_weights).norm())
                for cls in (ZsLpHead, ClapHead)}
    assert distance["clap"] < distance["zs-lp"], distance


def numpy_gda(x: np.ndarray, y: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The official estimator as written there: D · pinv((N−1)·Σ̂ + tr(Σ̂)·I) with Σ̂ the sample covariance."""
    mus = np.stack([x[y == c].mean(axis=0) for c in range(classes)])
    centred = np.concatenate([x[y == c] - mus[c] for c in range(classes)])
    cov = np.cov(centred, rowvar=False)
    n, d = centred.shape
    precision = d * np.linalg.pinv((n - 1) * cov + np.trace(cov) * np.eye(d))
    weights = mus @ precision
    bias = np.log(1 / classes) - 0.5 * np.einsum("cd,de,ce->c", mus, precision, mus)
    return weights, bias


def test_gda_weights_bias_and_logits_match_numpy():
    problem, test, _ = synthetic_problem(classes=C, shots=5, views=3, dim=D)
    views, labels = problem.train_features.numpy().astype(np.float64), problem.train_labels.numpy()
    x, y = unit_rows(views.reshape(-1, D)), np.tile(labels, views.shape[0])
    weights, bias = numpy_gda(x, y, C)
    got_w, got_b = gda_classifier(torch.tensor(x), torch.tensor(y), C)
    np.testing.assert_allclose(got_w.numpy(), weights, rtol=1e-4, atol=1e-3 * np.abs(weights).max())
    np.testing.assert_allclose(got_b.numpy(), bias, rtol=1e-4, atol=1e-3 * np.abs(bias).max())

    head = GdaHead.fit(problem, head_options("gda", progress=False))
    assert head.alpha in ALPHA_GRID
    f, text = unit_rows(test.numpy().astype(np.float64)), problem.text_weights.numpy()
    expected = problem.logit_scale * f @ text.T + head.alpha * (f @ weights.T + bias)
    np.testing.assert_allclose(logits_of(head, test.numpy()), expected, rtol=1e-4, atol=1e-3 * np.abs(expected).max())
    val = unit_rows(problem.val_features.numpy().astype(np.float64))
    scores = [(np.argmax(problem.logit_scale * val @ text.T + a * (val @ weights.T + bias), 1) ==
               problem.val_labels.numpy()).mean() for a in ALPHA_GRID]
    assert head.alpha == ALPHA_GRID[int(np.argmax(scores))]  # the first best, as the official loop


def test_gda_with_one_image_per_class_uses_the_views_and_refuses_without_them():
    problem, test, _ = synthetic_problem(classes=C, shots=1, views=4, dim=D)
    head = GdaHead.fit(problem, head_options("gda", progress=False))
    assert torch.isfinite(head(test)).all() and head.gda_bias.abs().sum() > 0
    single = FewShotProblem(problem.text_weights, problem.logit_scale, problem.train_features[:1],
                            problem.train_labels, problem.val_features, problem.val_labels)
    with pytest.raises(ClipedgeError, match="needs at least 2 per class") as error:
        GdaHead.fit(single, head_options("gda", progress=False))
    assert "\n" not in str(error.value)


def test_lp_plus_plus_logits_match_numpy(rng):
    text, features = unit_rows(rng.normal(size=(C, D))), rng.normal(size=(5, D))
    weights, bias, blend = rng.normal(size=(C, D)), rng.normal(size=C), rng.normal(size=C)
    head = LpPlusPlusHead(as_tensor(text), SCALE)
    with torch.no_grad():
        head.linear.weight.copy_(as_tensor(weights))
        head.linear.bias.copy_(as_tensor(bias))
        head.text_blend.copy_(as_tensor(blend))
    f = unit_rows(features)
    expected = f @ weights.T + bias + blend * (f @ text.T)
    np.testing.assert_allclose(logits_of(head, features), expected, rtol=1e-5, atol=1e-4)


def test_lp_plus_plus_starting_point_matches_numpy():
    problem, _, _ = synthetic_problem(classes=C, shots=3, views=2, dim=D)
    views, labels = problem.train_features.numpy().astype(np.float64), problem.train_labels.numpy()
    x, y, text = unit_rows(views.reshape(-1, D)), np.tile(labels, views.shape[0]), problem.text_weights.numpy()
    start = starting_point(as_tensor(x), torch.tensor(y), problem.text_weights)
    np.testing.assert_allclose(start.weights.numpy(), np.stack([x[y == c].sum(0) for c in range(C)]), rtol=1e-5, atol=1e-5)
    own = x @ text.T
    assert start.alpha == pytest.approx(250 * np.mean([own[y == c, c].mean() for c in range(C)]), rel=1e-5)
    assert start.step_w == pytest.approx(4 * len(x) / np.linalg.eigvalsh(x.T @ x).max(), rel=1e-5)
    assert start.step_alpha == pytest.approx(len(x) / (4 * (own ** 2).sum(axis=0).max()), rel=1e-5)


def test_lp_plus_plus_learns_a_bias_and_beats_zero_shot():
    problem, test, labels = synthetic_problem(classes=4, shots=8)
    head = LpPlusPlusHead.fit(problem, head_options("lp++", epochs=60, progress=False))
    assert head.linear.bias.abs().sum() > 0
    with torch.no_grad():
        zero_shot = problem.logit_scale * torch.nn.functional.normalize(test, dim=-1) @ problem.text_weights.t()
        assert (head(test).argmax(1) == labels).float().mean() > (zero_shot.argmax(1) == labels).float().mean()


@pytest.mark.parametrize("kind, option", [("gda", "epochs"), ("gda", "lr"), ("lp++", "lr"), ("zs-lp", "alpha")])
def test_options_a_head_does_not_take_are_refused(kind, option):
    with pytest.raises(ClipedgeError, match=re.escape(f"--method {kind} does not take this option")):
        head_options(kind, **{option: 1})
