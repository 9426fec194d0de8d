"""Figures of a differential model: per cell type, the blast decision, and the differential itself.

A differential LeukoNet outputs one probability per white-cell type; p_blast is the sum over the
blast types and the operating threshold on it is chosen on the validation split, which holds every
normal type (a threshold chosen on blasts against neutrophils alone does not hold on lymphocytes).
What is reported, on a split the model never trained on:

* blast vs every other cell: the binary figures of :func:`~leukoedge.train.scoring.evaluate_scores`
  on p_blast (sensitivity, specificity, ROC-AUC, ... with bootstrap intervals);
* per cell type: how many, the share recognised as that type (recall), and the share called a
  suspected blast (for blasts the sensitivity, for every other type one minus its specificity),
  each with a Wilson 95 % interval;
* the differential: balanced accuracy (mean recall over the types present) and the confusion matrix;
* per source class (e.g. TCIA code), the share called a suspected blast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from leukoedge.contract import DIFFERENTIAL_BLAST_CLASSES, DIFFERENTIAL_CLASSES
from leukoedge.metrics import wilson_interval
from leukoedge.train.scoring import choose_thresholds, evaluate_scores, with_margin


def _rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_interval(k, n)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci95": [lo, hi]}


def blast_targets(y: np.ndarray, blast_indices: Sequence[int]) -> np.ndarray:
    """1 where the true type is a blast type, else 0."""
    return np.isin(np.asarray(y, dtype=np.int64), list(blast_indices)).astype(np.int64)


def differential_metrics(
    y: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    blast_indices: Sequence[int],
    threshold: float,
    seed: int = 0,
    source_classes: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """Blast-vs-rest figures at ``threshold`` plus a ``differential`` block (see the module)."""
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    p_blast = probs[:, list(blast_indices)].sum(axis=1)
    out = evaluate_scores(blast_targets(y, blast_indices), p_blast, threshold, seed=seed)
    pred = probs.argmax(axis=1)
    called = p_blast >= threshold
    per_type: dict[str, Any] = {}
    recalls = []
    for k, name in enumerate(class_names):
        sel = y == k
        n = int(sel.sum())
        row: dict[str, Any] = {"n": n, "is_blast": k in blast_indices}
        row["recall"] = _rate(int((pred[sel] == k).sum()), n)
        row["called_blast"] = _rate(int(called[sel].sum()), n)
        if k not in blast_indices:
            row["specificity"] = _rate(int((~called[sel]).sum()), n)
        per_type[name] = row
        if n:
            recalls.append(row["recall"]["rate"])
    matrix = np.zeros((len(class_names), len(class_names)), dtype=np.int64)
    np.add.at(matrix, (y, pred), 1)
    diff: dict[str, Any] = {
        "classes": list(class_names),
        "blast_classes": [class_names[i] for i in blast_indices],
        "per_type": per_type,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
        "accuracy": float((pred == y).mean()) if len(y) else None,
        "confusion": matrix.tolist(),
    }
    if source_classes is not None:
        sources = np.array([str(s) for s in source_classes])
        diff["by_source_class"] = {
            s: {
                "type": class_names[int(np.bincount(y[sources == s]).argmax())],
                **_called(called, sources == s),
            }
            for s in sorted(set(sources.tolist()))
        }
    out["differential"] = diff
    return out


def _called(called: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    return {"called_blast": _rate(int(called[mask].sum()), int(mask.sum()))}


def type_table(m: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows per cell type for reports: n, recall, called blast (sensitivity / 1 - specificity)."""

    def pct(r: dict[str, Any]) -> str:
        if not r["n"]:
            return "n/a"
        return f"{r['rate']:.3f} ({r['ci95'][0]:.3f}-{r['ci95'][1]:.3f})"

    rows = []
    for name, row in m["differential"]["per_type"].items():
        decision = pct(row["called_blast"]) if row["is_blast"] else pct(row["specificity"])
        kind = "sensitivity" if row["is_blast"] else "specificity"
        rows.append([name, str(row["n"]), pct(row["recall"]), f"{kind} {decision}"])
    return ["cell type", "images", "recall as type (95 % CI)", "blast decision (95 % CI)"], rows


def confusion_rows(m: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    diff = m["differential"]
    names = diff["classes"]
    return ["true \\ predicted", *names], [
        [n, *map(str, r)] for n, r in zip(names, diff["confusion"], strict=True)
    ]


def type_balanced_youden(y: np.ndarray, p_blast: np.ndarray, blast_indices: Sequence[int]) -> dict[str, Any]:
    """The threshold on p_blast maximising sensitivity + mean specificity over the normal types - 1.

    Every normal type present weighs the same, however many images it has: a threshold chosen with
    each cell weighted alike is set by the common, easy types (neutrophils) and does not hold on
    the rare, hard ones (immature granulocytes, monocytes). The value is placed halfway to the next
    lower validation score, as for the binary rules.
    """
    y = np.asarray(y, dtype=np.int64)
    is_blast = np.isin(y, list(blast_indices))
    normal_types = [k for k in np.unique(y[~is_blast])]
    candidates = np.unique(p_blast)
    best_j, edge = -np.inf, float(candidates[-1])
    for t in candidates:
        sens = float((p_blast[is_blast] >= t).mean())
        spec = float(np.mean([(p_blast[y == k] < t).mean() for k in normal_types]))
        if sens + spec - 1 > best_j + 1e-12:
            best_j, edge = sens + spec - 1, float(t)
    value = with_margin(edge, p_blast)
    return {
        "value": value,
        "validation_score_edge": edge,
        "rule": "maximises sensitivity + the mean specificity over the normal types - 1 on validation, "
        "every normal type weighted alike; placed halfway to the next lower validation score",
        "val_sensitivity": float((p_blast[is_blast] >= value).mean()),
        "val_specificity": float(np.mean([(p_blast[y == k] < value).mean() for k in normal_types])),
    }


#: Share of validation cells whose top type probability falls below the abstention cut.
ABSTAIN_QUANTILE = 0.05


def unclassified_shares(
    y: np.ndarray, probs: np.ndarray, blast_indices: Sequence[int], threshold: float, min_confidence: float
) -> dict[str, Any]:
    """Per true type, the share the abstention rule leaves unclassified (Wilson intervals)."""
    y = np.asarray(y, dtype=np.int64)
    p_blast = probs[:, list(blast_indices)].sum(axis=1)
    unclassified = (p_blast < threshold) & (probs.max(axis=1) < min_confidence)
    out = {"overall": _rate(int(unclassified.sum()), len(y))}
    for k, name in enumerate(DIFFERENTIAL_CLASSES):
        if (y == k).any():
            out[name] = _rate(int(unclassified[y == k].sum()), int((y == k).sum()))
    return out


def score_differential(
    predict: Callable[[np.ndarray], np.ndarray],
    parts: dict[str, tuple[np.ndarray, np.ndarray, list]],
    operating: str,
    target_sensitivity: float,
    seed: int = 0,
) -> tuple[dict[str, Any], dict]:
    """A run's figures: p_blast's threshold from validation (every normal type is in it), then
    per-type and blast-vs-rest figures on validation and, once, on test.

    ``parts`` maps "val" and "test" to (images, type indices, records); returns (metrics, scores)
    with scores the (blast target, p_blast) pairs the plots draw.
    """
    blast = [DIFFERENTIAL_CLASSES.index(c) for c in DIFFERENTIAL_BLAST_CLASSES]
    probs = {name: predict(x) for name, (x, _, _) in parts.items() if len(x)}
    y_val = parts["val"][1]
    p_blast_val = probs["val"][:, blast].sum(axis=1)
    thresholds = choose_thresholds(blast_targets(y_val, blast), p_blast_val, target_sensitivity)
    thresholds["youden"] = type_balanced_youden(y_val, p_blast_val, blast)
    op = thresholds[operating]["value"]
    top_val = probs["val"].max(axis=1)
    min_confidence = float(np.quantile(top_val, ABSTAIN_QUANTILE))
    metrics: dict[str, Any] = {
        "task": "differential",
        "positive_class": "blast",
        "operating_threshold": {"rule": operating, "value": op},
        "thresholds": thresholds,
        "abstention": {
            "min_confidence": min_confidence,
            "rule": f"{ABSTAIN_QUANTILE:.0%} quantile of the top type probability on the validation split: "
            "a cell below it that is not a suspected blast is 'unclassified'",
        },
    }
    scores: dict[str, Any] = {"val": None, "test": None}
    for name, (_, y, recs) in parts.items():
        if name not in probs:
            continue
        sources = [r.source_class for r in recs]
        metrics[name] = differential_metrics(y, probs[name], DIFFERENTIAL_CLASSES, blast, op, seed, sources)
        metrics[name]["differential"]["unclassified"] = unclassified_shares(
            y, probs[name], blast, op, min_confidence
        )
        scores[name] = (blast_targets(y, blast), probs[name][:, blast].sum(axis=1))
    if metrics.get("test"):
        y_t, p_t = scores["test"]
        metrics["test_at"] = {
            n: evaluate_scores(y_t, p_t, t["value"], seed=seed) for n, t in thresholds.items()
        }
    else:
        metrics["test"] = None
        metrics["test_note"] = "the test split is empty: no test figures"
    return metrics, scores


def type_rates(
    y: np.ndarray, probs: np.ndarray, contract: Any, threshold: float, source_classes: Sequence[str | None]
) -> dict[str, Any]:
    """What any labelled set tells about a differential model, one class or many: per source class
    (and overall) the share called a suspected blast, the share left unclassified, and the types
    the model gave, with Wilson intervals. Needs no blasts (an external set of normal cells) and no
    normal cells (a set of one microscope's blasts)."""
    probs = np.asarray(probs, dtype=np.float64)
    p_blast = contract.p_blast(probs)
    called = p_blast >= threshold
    unclassified = np.array(
        [contract.abstains(row, pb, threshold) for row, pb in zip(probs, p_blast, strict=True)]
    )
    names = contract.class_names
    sources = np.array([str(s) for s in source_classes])

    def rates(mask: np.ndarray) -> dict[str, Any]:
        n = int(mask.sum())
        given = np.bincount(probs[mask].argmax(axis=1), minlength=len(names)) if n else np.zeros(len(names))
        return {
            "n": n,
            "called_blast": _rate(int(called[mask].sum()), n),
            "unclassified": _rate(int(unclassified[mask].sum()), n),
            "types_given": {names[i]: int(v) for i, v in enumerate(given) if v},
        }

    true_types = {str(s): names[int(np.bincount(y[sources == s]).argmax())] for s in set(sources.tolist())}
    return {
        "threshold": float(threshold),
        "overall": rates(np.ones(len(y), dtype=bool)),
        "by_source_class": {s: {"type": true_types[s], **rates(sources == s)} for s in sorted(true_types)},
    }
