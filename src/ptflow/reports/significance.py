"""Whether two models' test accuracies really differ: McNemar's exact test on the same examples.

Two accuracies of 0.981 and 0.983 on 10,000 test images have overlapping 95% intervals, yet the
difference may still be real: both models see the same images, and most images both get right.
What tells them apart is the examples exactly one of them gets right; if the models were equally
good, each such example would be equally likely to favour either (McNemar's test, exact form:
a two-sided binomial test with p = 1/2 on those disagreements).

Each run keeps its test predictions (predictions.py): the run folder's own, written by `ptflow
train`, or those of `ptflow evaluate` in `<run>/model-eval/`. Runs tested on different examples
(another dataset, seed or split) are refused: their fingerprints differ.
"""

from __future__ import annotations

from pathlib import Path

from ptflow import predictions, stats

LEVEL = 0.05  # the significance level the verdicts use


def find(run_dir: Path) -> Path | None:
    """A run's test predictions: from training, else from `ptflow evaluate` beside its model."""
    for path in (run_dir / predictions.FILE, run_dir / "model-eval" / predictions.FILE):
        if path.is_file():
            return path
    return None


def paired(a: predictions.Predictions, b: predictions.Predictions) -> dict:
    """The 2x2 agreement counts of two models on the same examples, and McNemar's exact p-value."""
    right_a, right_b = a.correct, b.correct
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    return {"n": len(right_a), "both": int((right_a & right_b).sum()), "neither": int((~right_a & ~right_b).sum()),
            "only_a": only_a, "only_b": only_b, "p_value": stats.mcnemar_exact(only_a, only_b)}


def verdict(result: dict, name_a: str, name_b: str) -> str:
    if result["p_value"] >= LEVEL:
        return f"no significant difference at the {LEVEL:.0%} level"
    better = name_a if result["only_a"] > result["only_b"] else name_b
    return f"{better} is more accurate (p < {LEVEL:g})"


def pairs(paths: list[Path], names: list[str]) -> tuple[list[dict], list[str]]:
    """McNemar's test for each pair of runs that can be compared, and a note per pair or run that cannot."""
    loaded, notes = {}, []
    for path, name in zip(paths, names):
        found = find(path)
        if found is None:
            notes.append(f"{name}: no test predictions (`ptflow evaluate --model_fn {path / 'model.safetensors'}` "
                         f"writes them)")
        else:
            loaded[name] = predictions.load(found)
    results, present = [], [n for n in names if n in loaded]
    for i, name_a in enumerate(present):
        for name_b in present[i + 1:]:
            a, b = loaded[name_a], loaded[name_b]
            if a.fingerprint != b.fingerprint:
                notes.append(f"{name_a} vs {name_b}: not compared: they were tested on different data (test-split "
                             f"fingerprints {a.fingerprint[:12]} and {b.fingerprint[:12]})")
                continue
            result = paired(a, b)
            results.append({"a": name_a, "b": name_b, **result, "verdict": verdict(result, name_a, name_b)})
    return results, notes


def rows(results: list[dict]) -> list[list[str]]:
    """pairs()'s results as the rows of a table under HEADERS."""
    return [[f"{r['a']} vs {r['b']}", f"{r['n']:,}", str(r["only_a"]), str(r["only_b"]), stats.format_p(r["p_value"]),
             r["verdict"]] for r in results]


HEADERS = ["pair (A vs B)", "test examples", "only A right", "only B right", "p (McNemar exact)", "verdict"]
