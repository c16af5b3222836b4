"""The validation gate: what featurize and split read is the ingested dataset without what
validation left out, and nothing at all before validation passed."""

from __future__ import annotations

from pathlib import Path

QUARANTINE = "quarantine.csv"  # in the validate folder: what it left out (empty unless quarantine)


def validated(dataset: Path, validation: Path):
    """The ingested dataset without what validation left out (its ``quarantine.csv``)."""
    from dataclasses import replace

    import pandas as pd

    from audioflow.errors import NotValidatedError
    from audioflow.manifest import Dataset

    quarantine = validation / QUARANTINE
    if not quarantine.is_file():
        raise NotValidatedError(f"{validation}: no validation result ({QUARANTINE}) here: run "
                                "`audioflow validate` first; nothing reads unvalidated data")
    ds = Dataset.load(dataset)
    left_out = set(pd.read_csv(quarantine, dtype=str, keep_default_na=False)["path"])
    return replace(ds, files=ds.files[~ds.files["path"].isin(left_out)].reset_index(drop=True))
