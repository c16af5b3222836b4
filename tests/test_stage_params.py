"""Each stage reads exactly the params.yaml keys its declaration lists (``Stage.params``).

The declaration decides what every front hands a stage: ZenML's step parameters, KFP's
``sections``, dvc.yaml's ``params:``. A key a stage reads but does not declare would reach it as
its default under ZenML and KFP, silently, and would not rerun it under DVC. So every stage runs
here on a small collection with a ``Params`` that records each key read (attribute access,
``model_dump``, and the items of ``to_dict()``), and what it read must be declared.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from audioflow.config import Params, _Section, load_params
from audioflow.stages import STAGES, Layout, run_stage

ROOT = Path(__file__).resolve().parents[1]


class _Reads:
    """Which params keys were read, by dotted path (``train.epochs``, ``model.cnn``)."""

    def __init__(self):
        self.where: dict[int, str] = {}  # id(section) -> its dotted path
        self.keys: set[str] = set()

    def index(self, obj: _Section, prefix: str = "") -> None:
        self.where[id(obj)] = prefix
        for name, field in type(obj).model_fields.items():
            value = object.__getattribute__(obj, name)
            if isinstance(value, _Section):
                self.index(value, f"{prefix}{field.alias or name}.")

    def key(self, obj, name: str) -> str | None:
        prefix = self.where.get(id(obj))
        fields = type(obj).model_fields
        if prefix is None or name not in fields:
            return None
        return f"{prefix}{fields[name].alias or name}"


class _Recording(dict):
    """``Params.to_dict()`` whose items record their path when read."""

    def __init__(self, d: dict, reads: _Reads, prefix: str = ""):
        super().__init__(d)
        self.reads, self.prefix = reads, prefix

    def __getitem__(self, k):
        value = super().__getitem__(k)
        path = f"{self.prefix}{k}"
        if isinstance(value, dict):
            return _Recording(value, self.reads, path + ".")
        self.reads.keys.add(path)
        return value

    def items(self):  # iterating over every item reads every one
        self.reads.keys.add(self.prefix.rstrip(".") or "*")
        return super().items()

    def values(self):
        self.reads.keys.add(self.prefix.rstrip(".") or "*")
        return super().values()


@pytest.fixture
def reads(monkeypatch) -> _Reads:
    r = _Reads()
    original = _Section.__getattribute__
    dump = _Section.model_dump

    def getattribute(self, name):
        value = original(self, name)
        key = r.key(self, name)
        if key is not None and not isinstance(value, _Section):
            r.keys.add(key)
        return value

    def model_dump(self, *args, **kwargs):
        prefix = r.where.get(id(self))
        if prefix is not None:
            r.keys.add(prefix.rstrip(".") or "*")
        return dump(self, *args, **kwargs)

    def to_dict(self):
        return _Recording(dump(self, mode="json", by_alias=True), r)

    monkeypatch.setattr(_Section, "__getattribute__", getattribute)
    monkeypatch.setattr(_Section, "model_dump", model_dump)
    monkeypatch.setattr(Params, "to_dict", to_dict)
    return r


def _covered(key: str, declared: tuple[str, ...]) -> bool:
    """A key read is declared, or lies in a declared key; a whole section read needs all its keys."""
    if "." not in key:
        section = {f.alias or n: f.annotation for n, f in Params.model_fields.items()}[key]
        return all(_covered(f"{key}.{k}", declared) for k in section.model_fields)
    return any(key == d or key.startswith(d + ".") for d in declared)


VARIANTS = {
    # every stage once with the defaults, on a small collection
    "defaults": {},
    # the branches that read more: an operating point, INT8, a balanced sampler
    "operating point, int8": {"evaluate.positive_labels": ["systolic_murmur"], "export.int8": True},
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_stage_reads_only_the_keys_it_declares(variant, tmp_path: Path, monkeypatch, reads: _Reads):
    from audioflow.demo import write_demo_dataset

    write_demo_dataset(tmp_path / "data", n_recordings=60, seed=3, min_s=1.0, max_s=1.5, progress=False)
    monkeypatch.chdir(tmp_path)
    overrides = {"data.root": "data", "train.epochs": 1, "features.window_s": 1.0, "model.cnn.channels": [8],
                 "validate.min_per_class": 3, "evaluate.bootstrap": 100} | VARIANTS[variant]
    layout = Layout()
    undeclared = {}
    for name, stage in STAGES.items():
        if stage.per_fold:
            continue  # tests/test_kfold.py runs the folds
        params = load_params(ROOT / "params.yaml", overrides)
        reads.where.clear()
        reads.keys.clear()
        reads.index(params)
        run_stage(name, params, layout, progress=False)
        declared = stage.params
        print(name, sorted(reads.keys))
        if extra := sorted(k for k in reads.keys if not _covered(k, declared)):
            undeclared[name] = extra
    assert not undeclared, f"read but not declared: {undeclared}"


def test_the_recorder_sees_every_kind_of_read(reads: _Reads):
    """The check above cannot pass by seeing nothing: attribute reads, a model's options
    (``model_dump``) and items of ``to_dict()`` are all recorded."""
    params = load_params(ROOT / "params.yaml")
    reads.index(params)
    assert params.train.batch_size > 0 and params.train.epochs and params.model.options
    assert params.to_dict()["export"]["atol"] > 0
    assert reads.keys == {"train.batch_size", "train.epochs", "model.name", "model.cnn", "export.atol"}
    assert _covered("train.epochs", ("train.epochs",)) and _covered("model.cnn.channels", ("model.cnn",))
    assert not _covered("train", ("train.epochs",)) and not _covered("train.lr", ("train.epochs",))
