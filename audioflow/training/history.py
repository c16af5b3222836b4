"""The per-epoch record: the ``history.csv`` columns, the rows live progress gets for refit
epochs, and history.csv plus training_curves.png written at the end of training."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_balanced_accuracy", "val_macro_f1",
                   "lr", "backbone_frozen", "seconds", "train_seconds")


def refit_row(row: dict, chosen_from: int) -> dict:
    """A refit epoch for live progress: ``epoch`` counts on after the ``chosen_from`` epochs of the
    first pass (a step axis that only grows), its figures named apart (``refit_epoch``, ``refit_*``)."""
    return {"epoch": chosen_from + row["epoch"], **{f"refit_{k}": v for k, v in row.items()}}


def write_history(history: list[dict], out_dir: Path, refit: list[dict] = ()) -> None:
    """history.csv and training_curves.png (loss and validation metrics per epoch; the refit's
    training loss as a third curve, ``refit`` its rows). history.csv holds the epochs chosen
    from; train.json counts the refit's."""
    if not history:
        return
    frame = pd.DataFrame(history)
    frame.to_csv(out_dir / "history.csv", index=False)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    a.plot(frame["epoch"], frame["train_loss"], label="train")
    a.plot(frame["epoch"], frame["val_loss"], label="val")
    if refit:
        again = pd.DataFrame(refit)
        a.plot(again["epoch"], again["train_loss"], "--", label="train + val (refit)")
    a.set_xlabel("epoch")
    a.set_ylabel("cross-entropy")
    a.set_title("Loss")
    a.legend()
    for col in ("val_accuracy", "val_balanced_accuracy", "val_macro_f1"):
        b.plot(frame["epoch"], frame[col], label=col.removeprefix("val_"))
    b.set_xlabel("epoch")
    b.set_ylim(0, 1.02)
    b.set_title("Validation (per recording)")
    b.legend(loc="lower right")
    fig.savefig(out_dir / "training_curves.png", dpi=100)
    plt.close(fig)
