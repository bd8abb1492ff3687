"""``clipedge calibrate``: fit a temperature and a rejection threshold on a run's val split.

Both are stored in the manifest's ``calibration`` entry; export bakes the
temperature into ``probs`` and carries the threshold in the model metadata,
where the runtime applies it ("unknown").

The open-set check needs classes the head has never seen. It re-fits the same
head on a seeded half of the classes from cached features (seconds) and
presents the other half as unknowns; the score with the better AUROC there is
the one whose threshold is set, on the full run's val images.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from clipedge.errors import ClipedgeError
from clipedge.heads import FewShotProblem, head_class
from clipedge.run_dir import Run, load_run, update_manifest
from clipedge.run_features import RunFeatures

from .rejection import SCORES, auroc, confidence_score, false_reject_rate, threshold_for_frr
from .reliability import save_reliability_diagram
from .temperature import expected_calibration_error, fit_temperature, nll, reliability_bins

DIAGRAM_FILE = "reliability_diagram.png"


@dataclass
class CalibrationReport:
    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    rejection_score: str
    threshold: float
    target_frr: float
    val_frr: float
    auroc: dict[str, float]
    open_set: dict[str, int]
    diagram: str

    def to_manifest(self) -> dict:
        return asdict(self)


def _known_unknown_split(num_classes: int, seed: int) -> tuple[list[int], list[int]]:
    classes = list(range(num_classes))
    random.Random(f"open-set:{seed}").shuffle(classes)
    known = sorted(classes[: max(2, num_classes // 2)])
    return known, sorted(set(classes) - set(known))


def _subset(labels: torch.Tensor, keep: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of rows whose label is in ``keep`` and those labels renumbered 0..len(keep)-1."""
    remap = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
    remap[torch.tensor(keep)] = torch.arange(len(keep))
    mask = remap[labels] >= 0
    return mask, remap[labels[mask]]


def open_set_auroc(run: Run, features: RunFeatures, seed: int) -> tuple[dict[str, float], dict[str, int]]:
    """AUROC of each score for held-out classes, with the run's head kind re-fitted on the known half."""
    known, unknown = _known_unknown_split(len(run.class_names), seed)
    train, val, test = features.split("train"), features.split("val"), features.split("test")
    train_mask, train_labels = _subset(train.labels, known)
    val_mask, val_labels = _subset(val.labels, known)
    test_known, _ = _subset(test.labels, known)
    problem = FewShotProblem(
        run.head.text_weights[known], float(run.head.logit_scale), train.features[:, train_mask], train_labels,
        val.features[val_mask], val_labels,
    )
    options = run.head.refit_options(run.manifest.get("training", {}), seed=seed, progress=False)
    head = head_class(run.method).fit(problem, options)
    with torch.no_grad():
        temperature = fit_temperature(head(problem.val_features), val_labels)
        known_logits, unknown_logits = head(test.features[test_known]), head(test.features[~test_known])
    if not len(known_logits) or not len(unknown_logits):
        raise ClipedgeError(f"RUN {run.path}: the test split has too few images for the open-set check")
    scores = {
        kind: auroc(confidence_score(known_logits, kind, temperature), confidence_score(unknown_logits, kind, temperature))
        for kind in SCORES
    }
    return scores, {"known_classes": len(known), "unknown_classes": len(unknown), "unknown_images": int((~test_known).sum())}


def calibrate(run_path: str | Path, target_frr: float = 0.05, seed: int = 0, device: str = "auto",
              progress: bool = True) -> CalibrationReport:
    """Fit the temperature and rejection threshold on val; write them and a reliability diagram into the run."""
    if not 0 < target_frr < 1:
        raise ClipedgeError(f"--target-frr {target_frr}: expected a rate strictly between 0 and 1, e.g. 0.05")
    run = load_run(run_path)
    features = RunFeatures(run, device, progress)
    val = features.split("val")
    if len(val.relpaths) < 2 or len(run.class_names) < 3:
        raise ClipedgeError(
            f"RUN {run.path}: calibration needs val images of at least 3 classes; re-train with a folder of "
            "≥ 3 images per class (20 % are held out for val) or a --split file with a 'val' list"
        )
    with torch.no_grad():
        logits = run.head(val.features)
    temperature = fit_temperature(logits, val.labels)
    probs_before = logits.softmax(dim=1)
    probs_after = (logits / temperature).softmax(dim=1)
    aurocs, open_set = open_set_auroc(run, features, seed)
    score = max(SCORES, key=lambda kind: aurocs[kind])
    known_scores = confidence_score(logits, score, temperature)
    threshold = threshold_for_frr(known_scores, target_frr)
    diagram = run.path / DIAGRAM_FILE
    save_reliability_diagram(
        reliability_bins(probs_before, val.labels), reliability_bins(probs_after, val.labels), temperature, diagram
    )
    report = CalibrationReport(
        temperature=temperature,
        ece_before=expected_calibration_error(probs_before, val.labels),
        ece_after=expected_calibration_error(probs_after, val.labels),
        nll_before=nll(logits, val.labels),
        nll_after=nll(logits, val.labels, temperature),
        rejection_score=score,
        threshold=threshold,
        target_frr=target_frr,
        val_frr=false_reject_rate(known_scores, threshold),
        auroc=aurocs,
        open_set=open_set,
        diagram=str(diagram),
    )
    update_manifest(run.path, "calibration", report.to_manifest())
    return report
