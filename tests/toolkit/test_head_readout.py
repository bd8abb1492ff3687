"""Every registered head equals its readout: ``scale · embed(f)·Wᵀ + bias [+ cache]`` (the class bank's formula).

The test iterates the registry, so a head added later is held to it without editing this file.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipedge.heads import HEADS, FewShotProblem, Readout, head_options
from clipedge.heads.clip_adapter import Adapter, ClipAdapterHead

D, C, SHOTS, VIEWS = 16, 4, 3, 2


@pytest.fixture(scope="module")
def problem() -> FewShotProblem:
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(C, D, generator=generator) * 2
    labels = torch.arange(C).repeat_interleave(SHOTS)
    train = centres[labels] + torch.randn(VIEWS, C * SHOTS, D, generator=generator)
    val_labels = torch.arange(C).repeat(3)
    val = centres[val_labels] + torch.randn(len(val_labels), D, generator=generator)
    text = F.normalize(centres + torch.randn(C, D, generator=generator), dim=-1)
    return FewShotProblem(text, 30.4, train, labels, val, val_labels)


def quick_options(kind: str, **extra):
    fields = HEADS[kind].Options.method_fields()
    given = {"epochs": 3} if "epochs" in fields else {}
    return head_options(kind, progress=False, **given, **extra)


def numpy_readout_logits(readout: Readout, embeddings: np.ndarray) -> np.ndarray:
    """The formula written out in NumPy, independently of ``Readout.logits``."""
    weights, bias = readout.weights.double().numpy(), readout.bias.double().numpy()
    logits = readout.scale * embeddings @ weights.T + bias
    if readout.cache is not None:
        keys, labels = readout.cache.keys.double().numpy(), readout.cache.labels.numpy()
        one_hot = np.eye(weights.shape[0])[labels]
        logits += readout.cache.alpha * np.exp(-readout.cache.beta * (1 - embeddings @ keys.T)) @ one_hot
    return logits


def assert_head_equals_readout(head, features: torch.Tensor) -> None:
    head.eval()
    with torch.no_grad():
        expected = head(features).double().numpy()
        embeddings = head.embed(features)
        readout = head.readout()
    assert readout.weights.shape == (C, D) and readout.bias.shape == (C,)
    assert isinstance(readout.scale, float)
    if readout.cache is not None:
        assert readout.cache.labels.dtype == torch.int64 and readout.cache.keys.shape[1] == D
    np.testing.assert_allclose(numpy_readout_logits(readout, embeddings.double().numpy()), expected,
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(readout.logits(embeddings).double().numpy(), expected, rtol=1e-5, atol=1e-4)
    norms = embeddings.norm(dim=-1)
    np.testing.assert_allclose(norms.numpy(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_every_registered_head_equals_its_readout(kind, problem):
    head = HEADS[kind].fit(problem, quick_options(kind))
    assert_head_equals_readout(head, problem.val_features * 3)


@pytest.mark.parametrize("kind", sorted(HEADS))
def test_readout_survives_folding_the_logit_scale(kind, problem):
    """Export folds the scale into W first; the readout of the folded copy still equals the head."""
    head = HEADS[kind].fit(problem, quick_options(kind))
    head.fold_logit_scale()
    assert_head_equals_readout(head, problem.val_features)


@pytest.mark.parametrize("branch", ["visual", "text", "both"])
def test_clip_adapter_branches_equal_their_readout(branch, problem):
    fitted = ClipAdapterHead.fit(problem, quick_options("clip-adapter", branch=branch))
    assert fitted.text_adapter is None  # the text branch is folded into W after training
    assert_head_equals_readout(fitted, problem.val_features)
    # and while the text adapter is still a module (mid-training), the readout folds it itself
    head = ClipAdapterHead(problem.text_weights, problem.logit_scale, alpha=0.6, branch=branch)
    if branch != "visual":
        torch.manual_seed(1)
        head.text_adapter = Adapter(D)
    assert_head_equals_readout(head, problem.val_features)
