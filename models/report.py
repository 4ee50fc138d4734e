"""Human-readable evaluation artifacts: confusion matrix and reliability diagram (PNG), Markdown summary."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: servers and CI have no display
import matplotlib.pyplot as plt
import numpy as np


def plot_confusion(report: dict[str, Any], path: Path) -> None:
    cm = np.asarray(report["confusion_matrix"])
    names = report["class_names"]
    size = max(5.0, 0.55 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if cm[i, j] > threshold else "black",
                )
    ax.set_title(f"accuracy {report['accuracy']:.2%}, macro-F1 {report['macro_f1']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(report: dict[str, Any], path: Path) -> None:
    bins = [b for b in report["reliability_bins"] if b["count"]]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    width = report["reliability_bins"][0]["hi"] - report["reliability_bins"][0]["lo"]
    ax.bar(
        [b["lo"] for b in bins],
        [b["accuracy"] for b in bins],
        width=width,
        align="edge",
        alpha=0.7,
        edgecolor="black",
        label="accuracy",
    )
    ax.plot(
        [b["confidence"] for b in bins],
        [b["confidence"] for b in bins],
        "o",
        color="red",
        markersize=3,
        label="mean confidence",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE {report['ece']:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def misclassified(
    probs: np.ndarray, labels: Sequence[int], paths: Sequence[str], class_names: Sequence[str]
) -> list[dict[str, Any]]:
    """Every wrong prediction, most confident first: the images a quality engineer should look at."""
    predicted = probs.argmax(1)
    rows = [
        {
            "path": paths[i],
            "label": class_names[labels[i]],
            "predicted": class_names[predicted[i]],
            "confidence": round(float(probs[i, predicted[i]]), 4),
            "label_probability": round(float(probs[i, labels[i]]), 4),
        }
        for i in range(len(labels))
        if predicted[i] != labels[i]
    ]
    return sorted(rows, key=lambda r: -r["confidence"])


def markdown_summary(report: dict[str, Any], context: dict[str, Any], max_errors: int = 50) -> str:
    lines = ["# Evaluation report", ""]
    lines += [f"- **{k}**: {v}" for k, v in context.items()]
    lines += [
        "",
        f"- **accuracy**: {report['accuracy']:.4f} ({report['samples']} images)",
        f"- **macro-F1**: {report['macro_f1']:.4f}",
        f"- **expected calibration error**: {report['ece']:.4f} (15 bins)",
    ]
    if "detection_rate" in report:
        lines += [
            f"- **detection rate** (defective parts flagged defective): {report['detection_rate']:.4f}"
            f" of {report['defective_parts']}",
            f"- **false-positive rate** (OK parts flagged defective): {report['false_positive_rate']:.4f}"
            f" of {report['ok_parts']}",
        ]
    else:
        lines.append("- detection rate / false-positive rate: not defined (no OK class in this dataset)")
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, m in report["per_class"].items():
        lines.append(f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']} |")
    lines += ["", "![confusion matrix](confusion_matrix.png)", "", "![reliability diagram](reliability.png)", ""]
    errors = report.get("misclassified", [])
    if errors:
        shown = errors[:max_errors]
        lines += [
            f"## Misclassified images ({len(errors)}, most confident first"
            + (f", first {len(shown)}" if len(shown) < len(errors) else "")
            + ")",
            "",
            "| image | label | predicted | confidence | p(label) |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {e['path']} | {e['label']} | {e['predicted']} | {e['confidence']:.3f} | {e['label_probability']:.3f} |"
            for e in shown
        ]
        lines.append("")
    return "\n".join(lines)
