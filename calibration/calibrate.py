"""``clipedge calibrate``: fit a temperature and a rejection threshold on a run's val split.

Both are stored in the manifest's ``calibration`` entry; export bakes the
temperature into ``probs`` and carries the threshold in the model metadata,
where the runtime applies it ("unknown"). A threshold whose score separates
held-out classes no better than ``min_auroc`` (:mod:`.rejection_policy`) is
recorded as ``candidate_threshold`` and not applied: ``threshold`` is then
null, ``threshold_withheld`` says why, and the export carries no threshold.

Test decides nothing here. The open-set check needs classes the head has
never seen, so it re-fits the same head on a seeded half of the classes from
cached features (seconds), with half of those classes' val images as the
re-fit's own val split. The other half of their val images are the knowns and
every val image of the held-out classes the unknowns: the score with the
better AUROC there is deployed, and its threshold is set on the full run's val
images. The same re-fitted head is then scored on the test split, and that
AUROC is only reported (``test_auroc_report``).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from clipedge.core.errors import ClipedgeError
from clipedge.features import FeatureSet
from clipedge.heads import FewShotProblem, Head, head_class
from clipedge.prompts import build_text_classifier
from clipedge.run_dir import Run, load_run, update_manifest
from clipedge.run_features import RunFeatures

from .rejection import SCORES, auroc, confidence_score, false_reject_rate, threshold_for_frr
from .rejection_policy import MIN_AUROC, withheld_reason
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
    #: the deployed threshold; None when the score's held-out AUROC is below ``min_auroc`` and it was not forced
    threshold: float | None
    target_frr: float
    #: the share of known val images ``candidate_threshold`` rejects
    val_frr: float
    #: AUROC of each score on held-out val classes: what chose ``rejection_score``
    auroc: dict[str, float]
    open_set: dict[str, int]
    diagram: str
    #: the threshold the target FRR gives, applied or not
    candidate_threshold: float = 0.0
    min_auroc: float = MIN_AUROC
    #: why no threshold is applied (None when one is)
    threshold_withheld: str | None = None
    #: applied although its AUROC is below ``min_auroc`` (``--force-threshold``)
    threshold_forced: bool = False
    #: the same check on the test split, reported and never used (None when the run has no test images of both kinds)
    test_auroc_report: dict[str, float] | None = None

    def to_manifest(self) -> dict:
        return asdict(self)


@dataclass
class OpenSetCheck:
    """The head re-fitted on the known classes, and which classes and val images each role got."""

    head: Head
    temperature: float
    known: list[int]
    unknown: list[int]
    known_val_scored: torch.Tensor  # mask over the run's val images: known-class images not used by the re-fit

    def scores(self, features: torch.Tensor, labels: torch.Tensor, known_mask: torch.Tensor) -> dict[str, float] | None:
        """AUROC of each score, known-class rows of ``known_mask`` against the held-out classes' rows."""
        unknown_mask = ~_subset(labels, self.known)[0]
        if not known_mask.any() or not unknown_mask.any():
            return None
        with torch.no_grad():
            known_logits, unknown_logits = self.head(features[known_mask]), self.head(features[unknown_mask])
        return {
            kind: auroc(confidence_score(known_logits, kind, self.temperature),
                        confidence_score(unknown_logits, kind, self.temperature))
            for kind in SCORES
        }


def _known_unknown_split(num_classes: int, seed: int) -> tuple[list[int], list[int]]:
    classes = list(range(num_classes))
    random.Random(f"open-set:{seed}").shuffle(classes)
    known = sorted(classes[: max(2, num_classes // 2)])
    return known, sorted(set(classes) - set(known))


def _subset(labels: torch.Tensor, keep: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of rows whose label is in ``keep`` and those labels renumbered 0..len(keep)-1."""
    remap = torch.full((max(int(labels.max()) + 1, max(keep) + 1),), -1, dtype=torch.long)
    remap[torch.tensor(keep)] = torch.arange(len(keep))
    mask = remap[labels] >= 0
    return mask, remap[labels[mask]]


def _halves(mask: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the rows of ``mask`` into two seeded halves: the re-fit's own val, and the scored knowns."""
    rows = mask.nonzero().flatten().tolist()
    random.Random(f"open-set-val:{seed}").shuffle(rows)
    fit, scored = torch.zeros_like(mask), torch.zeros_like(mask)
    fit[rows[: len(rows) // 2]] = True
    scored[rows[len(rows) // 2 :]] = True
    return fit, scored


def text_weights_before_training(run: Run, features: RunFeatures) -> torch.Tensor:
    """W as the text encoder gives it. A text- or both-branch CLIP-Adapter folds its adapted class embeddings
    into W, adapted on every class, the held-out ones included; a re-fit from that W has seen the unknowns."""
    if run.head.hparams().get("branch", "visual") == "visual":
        return run.head.text_weights
    return build_text_classifier(features.backbone().encode_texts, run.class_names, run.manifest["templates"])


def open_set_check(run: Run, features: RunFeatures, seed: int) -> OpenSetCheck:
    """Re-fit the run's head kind on a seeded half of the classes, from train and half of their val images."""
    known, unknown = _known_unknown_split(len(run.class_names), seed)
    train, val = features.split("train"), features.split("val")
    train_mask, train_labels = _subset(train.labels, known)
    known_val = _subset(val.labels, known)[0]
    fit_rows, scored_rows = _halves(known_val, seed)
    if not fit_rows.any() or not scored_rows.any() or known_val.all():
        raise ClipedgeError(
            f"RUN {run.path}: the open-set check needs at least 2 val images of the known classes and 1 of the "
            "held-out ones; re-train with more images per class or a --split file with a longer 'val' list"
        )
    val_labels = _subset(val.labels[fit_rows], known)[1]
    problem = FewShotProblem(
        text_weights_before_training(run, features)[known], float(run.head.logit_scale),
        train.features[:, train_mask], train_labels, val.features[fit_rows], val_labels,
    )
    options = run.head.refit_options(run.manifest.get("training", {}), seed=seed, progress=False)
    head = head_class(run.method).fit(problem, options)
    with torch.no_grad():
        temperature = fit_temperature(head(problem.val_features), val_labels)
    return OpenSetCheck(head, temperature, known, unknown, scored_rows)


def _test_report(check: OpenSetCheck, test: FeatureSet) -> dict[str, float] | None:
    if not len(test.relpaths):
        return None
    return check.scores(test.features, test.labels, _subset(test.labels, check.known)[0])


def calibrate(run_path: str | Path, target_frr: float = 0.05, seed: int = 0, device: str = "auto",
              progress: bool = True, min_auroc: float = MIN_AUROC, force_threshold: bool = False) -> CalibrationReport:
    """Fit the temperature, rejection score and threshold on val; write them and a reliability diagram into the run.
    The threshold is applied only when its score's held-out AUROC reaches ``min_auroc``, or with ``force_threshold``."""
    if not 0 < target_frr < 1:
        raise ClipedgeError(f"--target-frr {target_frr}: expected a rate strictly between 0 and 1, e.g. 0.05")
    if not 0 <= min_auroc <= 1:
        raise ClipedgeError(f"--min-auroc {min_auroc}: expected an AUROC between 0 and 1, e.g. {MIN_AUROC}")
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
    check = open_set_check(run, features, seed)
    aurocs = check.scores(val.features, val.labels, check.known_val_scored)
    score = max(SCORES, key=lambda kind: aurocs[kind])
    known_scores = confidence_score(logits, score, temperature)
    threshold = threshold_for_frr(known_scores, target_frr)
    withheld = withheld_reason(score, aurocs[score], min_auroc)
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
        threshold=threshold if withheld is None or force_threshold else None,
        target_frr=target_frr,
        val_frr=false_reject_rate(known_scores, threshold),
        auroc=aurocs,
        open_set={"known_classes": len(check.known), "unknown_classes": len(check.unknown),
                  "known_val_images": int(check.known_val_scored.sum()),
                  "unknown_val_images": int((~_subset(val.labels, check.known)[0]).sum())},
        diagram=str(diagram),
        candidate_threshold=threshold,
        min_auroc=min_auroc,
        threshold_withheld=None if force_threshold else withheld,
        threshold_forced=force_threshold and withheld is not None,
        test_auroc_report=_test_report(check, features.split("test")),
    )
    update_manifest(run.path, "calibration", report.to_manifest())
    return report
