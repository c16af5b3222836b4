from pathlib import Path

import pytest
from pydantic import ValidationError

from audioflow.config import ParamsError, load_params


def test_repo_params_load():
    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    assert p.data.root == "data" and p.features.sample_rate == "auto"
    assert p.train.epochs == "auto" and p.split.strategy == "stratified"


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


def test_epochs_auto_is_thirty_passes_or_enough_steps():
    """train.epochs auto: 30 passes, lengthened (up to 60) until the schedule makes min_steps
    optimizer steps; patience keeps its share of the schedule. An explicit count is kept."""
    from audioflow.config import TrainConfig

    cfg = TrainConfig()
    assert cfg.epochs == "auto" and cfg.min_steps == 500 and cfg.batch_size == 32 and cfg.patience == 15
    assert cfg.schedule(2300) == (30, 15)  # 72 steps a pass: 30 passes are 2160 steps
    assert cfg.schedule(32 * 25) == (30, 15)  # 25 steps a pass: 750
    assert cfg.schedule(32 * 12) == (42, 21)  # 12 steps a pass: 42 passes for 500 steps
    assert cfg.schedule(240) == (60, 30)  # 8 steps a pass: 63 wanted, capped at 60
    assert cfg.schedule(1) == (60, 30)
    assert TrainConfig(min_steps=0).schedule(240) == (30, 15)
    assert TrainConfig(epochs=4, patience=2).schedule(240) == (4, 2)
    with pytest.raises(ValueError):
        TrainConfig(epochs=0)
    with pytest.raises(ParamsError) as bad:
        load_params("absent.yaml", {"train.epochs": "many"})
    # One line for the key, whichever member of ``int | "auto"`` pydantic tried.
    assert str(bad.value).splitlines()[1:] == [
        "  train.epochs: Input should be a valid integer, unable to parse string as an integer "
        "or Input should be 'auto'"]
