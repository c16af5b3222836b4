"""The figures of a split's report: ROC and precision-recall curves, and the reliability
diagram (PNG, matplotlib Agg).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(curves: dict, path: str | Path, title: str = "Test set") -> None:
    """ROC and precision-recall, one line per class (AUC / AP in the legend)."""
    plt = _pyplot()
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(11, 4.8), constrained_layout=True)
    for label, e in curves["per_class"].items():
        if "roc" not in e:
            continue
        roc_ax.plot(e["roc"]["fpr"], e["roc"]["tpr"], label=f"{label} (AUC {e['auc']:.3f})")  # ties: diagonal
        pr_ax.plot(e["pr"]["recall"], e["pr"]["precision"], drawstyle="steps-post",
                   label=f"{label} (AP {e['average_precision']:.3f})")
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    macro = curves["macro_auc"]
    roc_ax.set(xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (recall)",
               title=f"{title}: ROC, one class vs rest" + (f" (macro AUC {macro:.3f})" if macro is not None else ""),
               xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    pr_ax.set(xlabel="recall", ylabel="precision", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
              title=f"{title}: precision-recall, one class vs rest")
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is roc_ax else "lower left", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(before: pd.DataFrame, after: pd.DataFrame | None, path: str | Path, ece_before: float,
                     ece_after: float | None, temperature: float, title: str = "Test set") -> None:
    """Reliability diagram: accuracy against confidence per bin, before and after temperature
    scaling (the diagonal is perfect calibration), and how many recordings each bin holds."""
    plt = _pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6, 6.4), height_ratios=(3, 1), sharex=True,
                                   constrained_layout=True)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    tables = [("uncalibrated", before, ece_before)]
    if after is not None:
        tables.append((f"temperature {temperature:g}", after, ece_after))
    width = 1 / len(before)
    for i, (name, t, ece) in enumerate(tables):
        used = t["count"] > 0
        ax.plot(t.loc[used, "confidence"], t.loc[used, "accuracy"], marker="o", label=f"{name} (ECE {ece:.3f})")
        hist.bar(t["lower"] + width * (0.25 + 0.5 * i), t["count"], width=width / 2, align="edge", label=name)
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(-0.02, 1.02), title=f"{title}: reliability")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    hist.set(xlabel="confidence (top probability, per recording)", ylabel="recordings")
    hist.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
