"""benchmarks/fewshot.py's report: cells summarised over seeds, the markdown table (with each method's
selection protocol and an ``auto`` row) and the plot per data set."""

from __future__ import annotations

import statistics
from pathlib import Path

from clipedge.figures import pyplot, save_png
from clipedge.heads import METHODS, head_class
from clipedge.heads.selection import AUTO, best_method

#: published top-1 % (PAPERS.md; "reported", as the papers give them): (dataset, backbone, weights, shots) -> method -> %
PUBLISHED = {
    ("ImageNet", "RN50", "openai", 16): {"zero-shot": 58.18, "linear-probe": 55.87, "clip-adapter": 63.59,
                                         "tip-adapter": 62.03, "tip-adapter-f": 65.51},
}



def summarise(rows: list[dict], backbone: str, pretrained: str, methods: tuple[str, ...] | list[str] = METHODS,
              ) -> dict[str, dict[str, dict[int, dict[str, list[float]]]]]:
    """dataset -> method -> shots -> {"val", "test", "seconds": [...]} over seeds, for this run's backbone, with an
    ``auto`` method: in each (shots, seed) where all of ``methods`` ran, the test figure of the one auto's rule
    picks from their val figures."""
    table: dict = {}
    by_cell: dict = {}
    for row in rows:
        if (row["backbone"], row["pretrained"]) != (backbone, pretrained):
            continue
        cell = table.setdefault(row["dataset"], {}).setdefault(row["method"], {}).setdefault(
            int(row["shots"]), {"val": [], "test": [], "seconds": []})
        cell["val"].append(100 * float(row["val_top1"]))
        cell["test"].append(100 * float(row["test_top1"]))
        cell["seconds"].append(float(row["head_s"]))
        by_cell.setdefault((row["dataset"], int(row["shots"]), int(row["seed"])), {})[row["method"]] = row
    for (dataset, shots, _), by_method in sorted(by_cell.items()):
        if not set(methods) <= set(by_method) or len(methods) < 2:
            continue
        chosen = by_method[best_method({m: float(by_method[m]["val_top1"]) for m in methods})]
        cell = table[dataset].setdefault(AUTO, {}).setdefault(shots, {"val": [], "test": [], "seconds": []})
        cell["val"].append(100 * float(chosen["val_top1"]))
        cell["test"].append(100 * float(chosen["test_top1"]))
        cell["seconds"].append(sum(float(by_method[m]["head_s"]) for m in methods))
    return table


def chosen_on_val(method: str) -> str:
    return "the best val top-1 of the rows above" if method == AUTO else head_class(method).chosen_on_val


def mean_std(values: list[float]) -> str:
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def markdown(summary: dict, backbone: str, pretrained: str, shots: list[int]) -> str:
    lines = [f"# Few-shot results: {backbone} ({pretrained})", "",
             "Top-1 %, mean ± std over seeds (n = seeds done). Test decides nothing: every choice inside a run "
             "(α, β, epoch, L2 penalty) is made on val, as the column says; `reported` is the paper's published "
             "figure; head s: mean seconds to fit the head (all shots).", ""]
    for dataset, by_method in summary.items():
        for split in ("test", "val"):
            lines += [f"## {dataset}: {split} top-1", "", "| method | chosen on val | "
                      + " | ".join(f"{k}-shot" for k in shots) + " | head s |", "|---|---|" + "---|" * (len(shots) + 1)]
            for method in (*METHODS, AUTO):
                if method not in by_method:
                    continue
                seconds = [t for k in shots for t in by_method[method].get(k, {}).get("seconds", [])]
                cells = [chosen_on_val(method)]
                for k in shots:
                    values = by_method[method].get(k, {}).get(split)
                    text = f"{mean_std(values)} (n={len(values)})" if values else "—"
                    published = PUBLISHED.get((dataset, backbone, pretrained, k), {}).get(method)
                    if published is not None and split == "test":
                        text += f" · reported {published:.2f}"
                    cells.append(text)
                cells.append(f"{statistics.fmean(seconds):.2f}" if seconds else "—")
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def plot(dataset: str, by_method: dict, backbone: str, pretrained: str, shots: list[int], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for method in (m for m in METHODS if m in by_method):
        points = [(k, by_method[method][k]["test"]) for k in shots if k in by_method[method]]
        means = [statistics.fmean(v) for _, v in points]
        spread = [statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in points]
        line = ax.errorbar([k for k, _ in points], means, yerr=spread, fmt="--" if method == "zero-shot" else "-o",
                           capsize=3, label=method)
        for k in shots:
            published = PUBLISHED.get((dataset, backbone, pretrained, k), {}).get(method)
            if published is not None:
                ax.plot([k], [published], "*", markersize=11, color=line[0].get_color())
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.set_xlabel("training images per class")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title(f"{dataset}, {backbone} ({pretrained}); ★ reported")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
