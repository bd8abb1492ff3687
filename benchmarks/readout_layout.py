"""Why BankReadout lays a large bank out as it does: each of its two layout choices timed against the other way.

1. Keys: ``concatenated`` is what the runtime does (runtime/classes/readout.py), the scaled class rows and a copy
   of the cache keys in one [D, C + K] matrix, one product per call; ``bank's own keys`` multiplies by the class
   rows and by a transposed view of the bank's [K, D] keys, holding no copy.
2. Cache term, from the [N, K] affinities into the [N, C] logits: ``per-class sum`` is the runtime's arithmetic
   (BankReadout.__call__), the keys grouped by class and summed per class; ``one-hot product`` is the fused graph's
   form, a product with the α-scaled [K, C] one-hot matrix of the keys' labels.

The bank is random (only the shapes matter), at ImageNet scale by default: 1,000 classes, a 16-shot cache of
16,000 keys, D = 512 (ViT-B/32).

Run: python benchmarks/readout_layout.py  (about two minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from clipedge.core.tables import format_table
from clipedge.runtime.classes.readout import product


def alternating_medians(calls: dict[str, Callable[[], object]], rounds: int, iters: int) -> dict[str, float]:
    """Median ms of each call over ``rounds`` alternating blocks of ``iters``, so passing load hits every call."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(iters):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=16000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--iters", type=int, default=50)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    rows = rng.standard_normal((args.classes, args.dim), dtype=np.float32)
    keys = rng.standard_normal((args.keys, args.dim), dtype=np.float32)
    labels = np.sort(rng.integers(0, args.classes, args.keys))
    alpha = np.float32(1.7)
    concatenated = np.ascontiguousarray(np.concatenate([rows, keys]).T)
    class_rows, key_view = np.ascontiguousarray(rows.T), keys.T
    onehot = np.zeros((args.keys, args.classes), dtype=np.float32)
    onehot[np.arange(args.keys), labels] = alpha
    keyed_classes, first_keys = np.unique(labels, return_index=True)
    every_class_keyed = len(keyed_classes) == args.classes
    logits = np.zeros((max(int(b) for b in args.batches.split(",")), args.classes), dtype=np.float32)

    def per_class_sum(affinity: np.ndarray) -> None:  # as BankReadout.__call__ adds the cache term to its logits
        per_class = np.add.reduceat(affinity, first_keys, axis=1)
        per_class *= alpha
        if every_class_keyed:
            logits[:len(affinity)] += per_class
        else:
            logits[:len(affinity), keyed_classes] += per_class

    def one_hot_product(affinity: np.ndarray) -> None:
        logits[:len(affinity)] += product(affinity, onehot)

    choices = {
        "keys": {"concatenated": (lambda e: product(e, concatenated), concatenated.nbytes),
                 "bank's own keys": (lambda e: (product(e, class_rows), product(e, key_view)), class_rows.nbytes)},
        "cache term": {"per-class sum": (per_class_sum, first_keys.nbytes),
                       "one-hot product": (one_hot_product, onehot.nbytes)},
    }
    table = []
    for batch in (int(b) for b in args.batches.split(",")):
        inputs = {"keys": rng.standard_normal((batch, args.dim), dtype=np.float32),
                  "cache term": rng.random((batch, args.keys), dtype=np.float32)}
        for choice, layouts in choices.items():
            medians = alternating_medians(
                {name: (lambda f=call, x=inputs[choice]: f(x)) for name, (call, _) in layouts.items()},
                args.rounds, args.iters)
            for name, (_, held) in layouts.items():
                table.append([batch, choice, name, f"{held / 2**20:.1f}", f"{medians[name]:.3f}"])
    print(f"C = {args.classes}, K = {args.keys}, D = {args.dim}; p50 of {args.rounds} × {args.iters} calls; "
          "the runtime's layout first in each pair")
    print(format_table(["batch", "choice", "layout", "MiB held beside the bank", "p50 ms"], table))


if __name__ == "__main__":
    main()
