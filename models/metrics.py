"""Classification metrics for inspection: pure numpy, no plotting (see :mod:`models.report`)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def per_class_prf(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 per class; 0 where undefined (no predictions / no samples)."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> float:
    cm = confusion_matrix(y_true, y_pred, num_classes)
    # Classes that occur as truth or as prediction (a class predicted but absent scores F1 = 0), as sklearn does.
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    return float(per_class_prf(cm)[2][present].mean())


def expected_calibration_error(probs: np.ndarray, y_true: Sequence[int], bins: int = 15) -> tuple[float, list[dict]]:
    """ECE over equal-width confidence bins, plus the per-bin table for a reliability diagram."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    table = []
    for lo, hi in itertools.pairwise(edges):
        mask = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        n = int(mask.sum())
        if n:
            acc, avg_conf = float(correct[mask].mean()), float(conf[mask].mean())
            ece += n / len(conf) * abs(acc - avg_conf)
        else:
            acc = avg_conf = float("nan")
        table.append({"lo": float(lo), "hi": float(hi), "count": n, "accuracy": acc, "confidence": avg_conf})
    return float(ece), table


def defect_rates(y_true: Sequence[int], y_pred: Sequence[int], ok_index: int) -> dict[str, float]:
    """Detection rate = defective parts flagged defective (any defect class); false-positive rate = OK parts
    flagged defective. A defect called the wrong defect class still counts as detected: the part is rejected."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    defective, ok = t != ok_index, t == ok_index
    return {
        "detection_rate": float((p[defective] != ok_index).mean()) if defective.any() else float("nan"),
        "false_positive_rate": float((p[ok] != ok_index).mean()) if ok.any() else float("nan"),
        "defective_parts": int(defective.sum()),
        "ok_parts": int(ok.sum()),
    }


def classification_report(
    probs: np.ndarray, y_true: Sequence[int], class_names: Sequence[str], ok_class: str | None = "ok"
) -> dict[str, Any]:
    y_true = np.asarray(y_true)
    y_pred = probs.argmax(axis=1)
    k = len(class_names)
    cm = confusion_matrix(y_true, y_pred, k)
    precision, recall, f1 = per_class_prf(cm)
    ece, bins = expected_calibration_error(probs, y_true)
    report: dict[str, Any] = {
        "samples": len(y_true),
        "accuracy": float((y_pred == y_true).mean()),
        "macro_f1": macro_f1(y_true, y_pred, k),
        "ece": ece,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(cm[i].sum()),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
        "reliability_bins": bins,
    }
    if ok_class is not None and ok_class in class_names:
        report.update(defect_rates(y_true, y_pred, list(class_names).index(ok_class)))
    return report
