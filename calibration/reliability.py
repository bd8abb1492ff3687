"""The reliability diagram: where a person would rather look than read an ECE number."""

from __future__ import annotations

from pathlib import Path

from clipedge.figures import pyplot, save_png


def save_reliability_diagram(before: list[dict], after: list[dict], temperature: float, path: Path) -> None:
    """Accuracy against confidence per bin, before and after temperature scaling, side by side."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    for ax, bins, title in ((axes[0], before, "before (T = 1)"), (axes[1], after, f"after (T = {temperature:.3g})")):
        centres = [(b["low"] + b["high"]) / 2 for b in bins]
        width = bins[0]["high"] - bins[0]["low"]
        ax.bar(centres, [b["accuracy"] if b["count"] else 0 for b in bins], width=width * 0.95,
               edgecolor="black", color="tab:blue", label="accuracy")
        gaps = [(c, b["confidence"]) for c, b in zip(centres, bins) if b["count"]]
        ax.bar([c for c, _ in gaps], [0.01] * len(gaps), bottom=[conf - 0.005 for _, conf in gaps], width=width * 0.95,
               color="tab:red", label="mean confidence")
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top-1 probability)")
        ax.set_title(title)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
