from pathlib import Path

import pytest
from pydantic import ValidationError

from audioflow.config import ParamsError, load_params


def test_repo_params_load():
    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    assert p.data.root == "data" and p.features.sample_rate == "auto"
    assert p.train.epochs >= 1 and p.split.strategy == "stratified"


def test_unknown_key_and_bad_value_are_named(tmp_path: Path):
    f = tmp_path / "params.yaml"
    f.write_text("train:\n  epochz: 3\nsplit:\n  val_fraction: 2\nfeatures:\n  n_mels: many\n")
    with pytest.raises(ParamsError) as e:
        load_params(f)
    msg = str(e.value)
    assert "train.epochz: unknown key" in msg
    assert "split.val_fraction" in msg and "features.n_mels" in msg


def test_unknown_section(tmp_path: Path):
    f = tmp_path / "params.yaml"
    f.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ParamsError, match="trian: unknown key"):
        load_params(f)


def test_overrides_and_frozen(tmp_path: Path):
    p = load_params(tmp_path / "absent.yaml", {"train.epochs": 2, "features.sample_rate": 8000})
    assert p.train.epochs == 2 and p.features.sample_rate == 8000
    with pytest.raises(ValidationError, match="frozen"):
        p.train.epochs = 3


def test_section_hash_changes_only_with_its_section():
    a = load_params("absent.yaml")
    b = load_params("absent.yaml", {"train.lr": 0.1})
    assert a.section_hash("features") == b.section_hash("features")
    assert a.section_hash("train") != b.section_hash("train")


def test_cross_field_checks():
    with pytest.raises(ParamsError, match="min_duration_s"):
        load_params("absent.yaml", {"validate.min_duration_s": 10, "validate.max_duration_s": 5})
