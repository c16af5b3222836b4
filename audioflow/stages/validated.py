"""The validation gate: what featurize and split read is the ingested dataset without what
validation left out, and nothing at all before validation passed."""

from __future__ import annotations

from pathlib import Path

QUARANTINE = "quarantine.csv"  # in the validate folder: what it left out (empty unless quarantine)
FACTS = "facts.csv"  # in the validate folder: what it measured of every recording (rate, duration, level...)


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


def headers(validation: Path):
    """Each recording's native rate and duration as validation read them (its ``facts.csv``):
    featurize resolves ``auto`` settings from these instead of reading every header again.
    None without the file (a validation folder from before it was written)."""
    import pandas as pd

    facts = validation / FACTS
    if not facts.is_file():
        return None
    return pd.read_csv(facts, usecols=["path", "sample_rate", "duration_s"], dtype={"path": str},
                       keep_default_na=False, na_values=[""])
