"""Classes as data, measured honestly: leave-k-classes-out accuracy, add-class cost, bank latency.

1. Leave k classes out: on the embedded task, for each seed the k held-out classes are drawn; ``clipedge train``
   fits the method on the other C−k classes (the same train/val/test images as the full data set, through a split
   file), ``clipedge export --adaptable`` exports it, and the k classes are added on the device through
   ``Classifier.add_class``: (a) by name, (b) from the seed's shots of them, (c) both. Top-1 is over all C classes
   on the full test split, beside ``clipedge train`` on all C classes with the same shots, seed and method. The
   one choice, the name's weight in (c), is made per cell on val; test is only reported.
2. Time to add one class: by name with one template and with the 80 ImageNet templates (text model warm, and the
   first add that opens it), from 16 images (beside one batched inference of the same 16 frames, and the learning
   alone on their embeddings).
3. Latency of the same run fused, with the bank on the host (numpy, what the runtime does), and with the bank as
   second network inputs (an ONNX with the readout in the graph, fed the bank's arrays on every call), at batch
   1 and 32, in alternating rounds so passing load on the machine hits all three; and the host readout alone,
   timed right after each onnxruntime call (which leaves the caches cold and its threads spinning).

Run: python benchmarks/class_bank.py --out /tmp/class-bank  (2–3 minutes on a quiet 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image
from tqdm import tqdm

import clipedge
from clipedge.core.tables import format_table
from clipedge.data import sample_few_shot, scan_image_folder
from clipedge.export import export_model
from clipedge.prompts import resolve_templates
from clipedge.runtime import Classifier
from clipedge.runtime.classes import learning
from clipedge.runtime.classes.model_classes import EMBEDDINGS
from clipedge.runtime.classes.readout import probabilities
from clipedge.synthetic import write_task

NAME_WEIGHTS = (0.25, 0.5, 0.75, 1.0)


def write_split(path: Path, data, keep: list[int]) -> Path:
    """A CoOp split file with the classes ``keep`` (relabelled 0..) and exactly the full data set's images."""
    relabel = {old: new for new, old in enumerate(keep)}
    entries = {split: [[s.relpath, relabel[s.label], data.class_names[s.label].replace(" ", "_")]
                       for s in samples if s.label in relabel] for split, samples in data.splits.items()}
    path.write_text(json.dumps(entries))
    return path


def top1(classifier: Classifier, samples, names: list[str]) -> float:
    predicted = []
    for start in range(0, len(samples), 64):
        chunk = samples[start : start + 64]
        predicted += [p.labels[0] for p in classifier.predict([s.path for s in chunk])]
    return float(np.mean([p == names[s.label] for p, s in zip(predicted, samples)]))


def added(model: Path, held: list[str], shots: dict[str, list[Path]], mode: str, weight: float | None = None) -> Classifier:
    """A fresh classifier of ``model`` with the held-out classes added in ``mode`` (nothing is saved)."""
    learning.NAME_WEIGHT = weight if weight is not None else learning.NAME_WEIGHT
    classifier = Classifier(model, resize_quality="exact")
    for name in held:
        if mode == "name":
            classifier.add_class(name)
        else:
            classifier.add_class(name, images=shots[name], by_name=mode == "both")
    return classifier


def leave_out_cell(args, data, seed: int, shots: int, held_labels: list[int], splits: dict[str, Path],
                   work: Path) -> dict:
    names = data.class_names
    held = [names[i] for i in held_labels]
    common = {"method": args.method, "shots": shots, "seed": seed, "progress": False, "overwrite": True,
              "cache_dir": work / "features"}
    full = clipedge.train(args.data, work / f"full-{shots}-{seed}", split=splits["full"], **common)
    part = clipedge.train(args.data, work / f"part-{shots}-{seed}", split=splits[seed], **common)
    model = export_model(part.run_dir, work / f"part-{shots}-{seed}.onnx", adaptable=True,
                         progress=False).artifact
    few = sample_few_shot(data.splits["train"], shots, seed, names)
    examples = {name: [s.path for s in few if names[s.label] == name] for name in held}
    row = {"full": full.metrics["test_top1"], "part": part.metrics["test_top1"] * (len(names) - len(held)) / len(names)}
    for mode in ("name", "images"):
        with added(model, held, examples, mode) as classifier:
            row[mode] = top1(classifier, data.splits["test"], names)
    val = {}
    for weight in NAME_WEIGHTS:
        with added(model, held, examples, "both", weight) as classifier:
            val[weight] = top1(classifier, data.splits["val"], names)
    chosen = max(NAME_WEIGHTS, key=lambda w: (val[w], -abs(w - 0.5)))  # ties: nearer the middle
    with added(model, held, examples, "both", chosen) as classifier:
        row["both"] = top1(classifier, data.splits["test"], names)
    learning.NAME_WEIGHT = 0.5
    return {**row, "weight": chosen, "held": held}


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * sd:.1f}"


def median_ms(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def add_timings(model: Path, frames: np.ndarray, repeats: int) -> list[tuple[str, float]]:
    """Milliseconds to add one class, each measured ``repeats`` times (median), text model warm unless said."""
    rows = []
    with Classifier(model) as classifier:
        started = time.perf_counter()
        classifier.add_class("first added class", prompt="a photo of a {}.")
        rows.append(("by name, 1 template, first add (opens the text model)", 1000 * (time.perf_counter() - started)))
        rows.append(("by name, 1 template", median_ms(lambda: classifier.add_class(
            "forklift", prompt="a photo of a {}.", replace=True), repeats)))
        bank = classifier.classes.bank
        bank.templates = resolve_templates("imagenet")
        rows.append((f"by name, {len(bank.templates)} templates", median_ms(lambda: classifier.add_class(
            "forklift", replace=True), max(3, repeats // 4))))
        inference = median_ms(lambda: classifier.infer(frames), repeats)
        adding = median_ms(lambda: classifier.add_class("pallet", images=frames, replace=True), repeats)
        embeddings = classifier.infer(frames)[EMBEDDINGS]
        learning_only = median_ms(lambda: learning.add_class(
            classifier.classes.bank, "pallet", image_embeddings=embeddings, replace=True), repeats)
        rows += [(f"one batched inference of {len(frames)} frames", inference),
                 (f"from {len(frames)} images (frames in memory)", adding),
                 (f"from {len(frames)} images' embeddings (the learning alone)", learning_only)]
    return rows


def second_input_model(adaptable: Path, out: Path, temperature: float) -> Path:
    """The adaptable model with the readout in the graph, the bank's arrays as inputs (YOLO-World's pattern)."""
    model = onnx.load(str(adaptable))
    graph = model.graph
    floats = TensorProto.FLOAT
    for name, shape in (("class_weights", ["C", "D"]), ("class_bias", ["C"]), ("cache_keys", ["K", "D"]),
                        ("cache_values", ["K", "C"]), ("readout", [3])):
        graph.input.append(helper.make_tensor_value_info(name, floats, shape))
    constant = [helper.make_tensor(n, floats, [], [v]) for n, v in (("one", 1.0), ("inverse_t", 1.0 / temperature))]
    graph.initializer.extend(constant)
    graph.node.extend([
        helper.make_node("Split", ["readout"], ["scale", "alpha", "beta"], axis=0, num_outputs=3),
        helper.make_node("Gemm", ["embeddings", "class_weights"], ["cosines"], transB=1),
        helper.make_node("Mul", ["cosines", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "class_bias"], ["rows"]),
        helper.make_node("Gemm", ["embeddings", "cache_keys"], ["affinity"], transB=1),
        helper.make_node("Sub", ["affinity", "one"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "beta"], ["exponent"]),
        helper.make_node("Exp", ["exponent"], ["weights"]),
        helper.make_node("MatMul", ["weights", "cache_values"], ["cache_sum"]),
        helper.make_node("Mul", ["cache_sum", "alpha"], ["cache_logits"]),
        helper.make_node("Add", ["rows", "cache_logits"], ["logits"]),
        helper.make_node("Mul", ["logits", "inverse_t"], ["tempered"]),
        helper.make_node("Softmax", ["tempered"], ["probs"], axis=1)])
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info(n, floats, ["N", "C"]) for n in ("logits", "probs")])
    onnx.save(model, str(out))
    return out


#: the latency table's row for the host readout and softmax timed alone, right after each onnxruntime call
READOUT_ALONE = "bank readout alone, after the call"


def latency(fused: Path, adaptable: Path, work: Path, batches: list[int], rounds: int, iters: int) -> list[list]:
    """p50 ms of fused, bank on the host, and bank as graph inputs, uint8 frames in, probabilities out."""
    import onnxruntime as ort

    bank_classifier, fused_classifier = Classifier(adaptable), Classifier(fused)
    bank = bank_classifier.classes.bank
    session = ort.InferenceSession(str(second_input_model(adaptable, work / "second_input.onnx", bank.temperature)),
                                   providers=["CPUExecutionProvider"])
    has_cache = bank.has_cache and len(bank.cache_labels)
    feeds = {"class_weights": bank.weights, "class_bias": bank.bias,
             "cache_keys": bank.cache_keys if has_cache else np.zeros((1, bank.dim), np.float32),
             "cache_values": np.eye(len(bank.names), dtype=np.float32)[bank.cache_labels] if has_cache
             else np.zeros((1, len(bank.names)), np.float32),
             "readout": np.array([bank.logit_scale, bank.cache_alpha or 0.0, bank.cache_beta or 0.0], np.float32)}
    rng = np.random.default_rng(0)
    size = bank_classifier.image_size
    variants = {"fused": lambda b: fused_classifier.infer(b)["probs"],
                "bank (host numpy)": lambda b: bank_classifier.infer(b)["probs"],
                "bank (graph inputs)": lambda b: session.run(["probs"], {"images": b, **feeds})[0]}
    rows = []
    for batch in batches:
        frames = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        reference = variants["fused"](frames)
        deltas = {name: f"{np.abs(call(frames) - reference).max():.1e}" for name, call in variants.items()}
        times: dict[str, list[float]] = {name: [] for name in [*variants, READOUT_ALONE]}
        for _ in tqdm(range(rounds), desc=f"latency batch {batch}", leave=False):
            for name, call in variants.items():
                for _ in range(iters):
                    started = time.perf_counter()
                    call(frames)
                    times[name].append(time.perf_counter() - started)
            for _ in range(iters):  # the host path's own share: what it adds to the model's call
                embeddings = bank_classifier.backend.infer(frames)[EMBEDDINGS]
                started = time.perf_counter()
                probabilities(bank_classifier.classes.logits(embeddings), bank.temperature)
                times[READOUT_ALONE].append(time.perf_counter() - started)
        fused_p50 = statistics.median(times["fused"])
        rows += [[batch, name, round(1000 * statistics.median(t), 3), round(statistics.median(t) / fused_p50, 3),
                  deltas.get(name, "")] for name, t in times.items()]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--task", default="colours-tinted")
    parser.add_argument("--method", default="tip-adapter")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--k", type=int, default=2, help="held-out classes per seed")
    parser.add_argument("--images-per-class", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--timings-only", action="store_true", help="only parts 2 and 3, on an earlier --out")
    args = parser.parse_args()
    work = args.out
    work.mkdir(parents=True, exist_ok=True)
    args.data = write_task(args.task, work / "data", args.images_per_class)
    data = scan_image_folder(args.data)
    names = data.class_names
    splits: dict = {"full": write_split(work / "full.json", data, list(range(len(names))))}
    held_of = {}
    for seed in args.seeds:
        held_of[seed] = sorted(random.Random(f"held-out:{seed}").sample(range(len(names)), args.k))
        splits[seed] = write_split(work / f"without-{seed}.json", data,
                                   [i for i in range(len(names)) if i not in held_of[seed]])
    if not args.timings_only:
        leave_out_table(args, data, held_of, splits, work)
    timings(args, data, work)


def leave_out_table(args, data, held_of: dict, splits: dict, work: Path) -> None:
    names = data.class_names
    cells = {}
    for shots in args.shots:
        for seed in tqdm(args.seeds, desc=f"{shots}-shot cells"):
            cells[shots, seed] = leave_out_cell(args, data, seed, shots, held_of[seed], splits, work)
            (work / "cells.json").write_text(json.dumps({f"{k}-shot seed {s}": v for (k, s), v in cells.items()}))
    rows = []
    for shots in args.shots:
        per = [cells[shots, seed] for seed in args.seeds]
        gap = [c["both"] - c["full"] for c in per]
        rows.append([shots, mean_sd([c["full"] for c in per]), mean_sd([c["part"] for c in per]),
                     mean_sd([c["name"] for c in per]), mean_sd([c["images"] for c in per]),
                     mean_sd([c["both"] for c in per]), f"{100 * statistics.fmean(gap):+.1f}",
                     "/".join(str(c["weight"]) for c in per)])
    print(f"\nLeave {args.k} classes out of {len(names)}: {args.task}, clipedge-tiny, {args.method}, seeds "
          f"{args.seeds} (held out: {', '.join('+'.join(cells[args.shots[0], s]['held']) for s in args.seeds)}); "
          "test top-1 % over all classes, mean ± sd over seeds")
    print(format_table(["shots", "full retrain (C)", "C−k only", "(a) by name", "(b) images", "(c) both",
                        "(c) − full", "name weight (val)"], rows))


def timings(args, data, work: Path) -> None:
    names = data.class_names
    run = work / f"full-{args.shots[-1]}-{args.seeds[0]}"
    fused = export_model(run, work / "latency-fused.onnx", progress=False).artifact
    adaptable = export_model(run, work / "latency-adaptable.onnx", adaptable=True, progress=False).artifact
    frames = np.stack([np.asarray(Image.open(s.path).convert("RGB")) for s in data.splits["train"][:16]])
    print(f"\nAdding one class to {adaptable.name} ({len(names)} classes, {args.method}); ms, median of {args.repeats}")
    print(format_table(["how", "ms"], [[how, round(ms, 2)] for how, ms in add_timings(adaptable, frames, args.repeats)]))
    print(f"\nLatency, same run ({run.name}): p50 ms over {args.rounds} alternating rounds × {args.iters} calls; "
          "max |Δprob| against fused")
    print(format_table(["batch", "variant", "p50 ms", "× fused", "max |Δprob|"],
                       latency(fused, adaptable, work, [1, 32], args.rounds, args.iters)))


if __name__ == "__main__":
    main()
