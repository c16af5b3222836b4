import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from audioflow import split as split_mod
from audioflow.checkpoint import load_model
from audioflow.config import load_params
from audioflow.evaluation import file_predictions, rows_for
from audioflow.features import featurize
from audioflow.manifest import ingest
from audioflow.training import train


def crash_during_epoch(epoch: int, feats, table, params, out: Path, monkeypatch) -> None:
    """Run training until it crashes in the given epoch's validation (after earlier checkpoints)."""
    import audioflow.training.loop as tr

    real, calls = tr.aggregate_files, {"n": 0}

    def crashing(*a, **kw):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise RuntimeError("simulated crash")
        return real(*a, **kw)

    with monkeypatch.context() as m:
        m.setattr(tr, "aggregate_files", crashing)
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(feats, table, params, out, progress=False)


@pytest.fixture
def prepared(tone_dataset: Path, tmp_path: Path):
    params = load_params("absent.yaml", {
        "data.root": str(tone_dataset), "data.group_column": "speaker",
        "features.window_s": 0.5, "features.n_mels": 32,
        "split.val_fraction": 0.2, "split.test_fraction": 0.2,
        "model.cnn.channels": [8, 16], "train.epochs": 4, "train.batch_size": 8,
        "train.patience": 10, "train.lr": 0.01,
    })
    ds = ingest(params.data, progress=False)
    feats = featurize(ds, params.features, tmp_path / "features", progress=False)
    table = split_mod.split_files(ds.files, params.split)
    return params, feats, table


def test_trains_saves_safetensors_and_learns(prepared, tmp_path: Path):
    params, feats, table = prepared
    r = train(feats, table, params, tmp_path / "train", progress=False)
    assert len(r.history) == 4 and 1 <= r.best_epoch <= 4
    assert (tmp_path / "train/model/model.safetensors").exists()
    meta = json.loads((tmp_path / "train/model/model.json").read_text())
    assert meta["labels"] == ["high", "low", "mid"] and meta["spec"]["n_mels"] == 32
    assert (tmp_path / "train/training_curves.png").stat().st_size > 1000
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    model, _ = load_model(tmp_path / "train/model")
    preds = file_predictions(model, feats, rows_for(feats, table, "test"), torch.device("cpu"))
    # Pure tones three octaves apart: a trained model must separate them on held-out speakers.
    assert (preds["actual"] == preds["predicted"]).mean() >= 0.8
    test_paths = set(table.loc[table.split == "test", "path"])
    assert set(preds["path"]) == test_paths


def test_deterministic_on_cpu(prepared, tmp_path: Path):
    params, feats, table = prepared
    a = train(feats, table, params, tmp_path / "a", progress=False)
    b = train(feats, table, params, tmp_path / "b", progress=False)
    assert a.history[-1]["train_loss"] == b.history[-1]["train_loss"]
    ma, _ = load_model(tmp_path / "a/model")
    mb, _ = load_model(tmp_path / "b/model")
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.equal(va, vb), k


def test_crash_resumes_from_last_checkpoint(prepared, tmp_path: Path, monkeypatch):
    params, feats, table = prepared
    full = train(feats, table, params, tmp_path / "full", progress=False)

    crash_during_epoch(3, feats, table, params, tmp_path / "crashed", monkeypatch)
    resumed = train(feats, table, params, tmp_path / "crashed", progress=False)
    assert resumed.resumed_from_epoch == 2
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    a, _ = load_model(tmp_path / "full/model")
    b, _ = load_model(tmp_path / "crashed/model")
    for va, vb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(va, vb)


def test_checkpoint_is_chosen_only_once_the_lr_has_decayed(prepared, tmp_path: Path):
    """train.select_lr: an epoch that ends with the lr above that fraction of its peak is never
    the chosen one and does not count towards patience. On pure tones accuracy is perfect within
    two epochs, so with every epoch a candidate (1.0) the choice is early and patience 1 stops
    the run; with 0.5 the choice is the first epoch that ends at half the peak or below."""
    params, feats, table = prepared

    def run(select_lr: float, name: str):
        cfg = params.train.model_copy(update={"monitor": "accuracy", "patience": 1, "refit": False,
                                              "select_lr": select_lr})
        return train(feats, table, params.model_copy(update={"train": cfg}), tmp_path / name, progress=False)

    every = run(1.0, "every")
    assert every.best_epoch <= 2 and len(every.history) < 4, "the check needs an early best and an early stop"
    late = run(0.5, "late")
    first = next(h["epoch"] for h in late.history if h["lr"] <= 0.5 * params.train.lr)
    assert first >= 2 and late.best_epoch >= first
    assert len(late.history) >= first + 1  # patience counted from the first candidate on
    assert [h["train_loss"] for h in late.history[: len(every.history)]] == [h["train_loss"] for h in every.history]
    # A warm-up as long as the schedule never decays the lr: its last epoch is still a candidate.
    warm = params.train.model_copy(update={"epochs": 1, "warmup_epochs": 1, "refit": False})
    one = train(feats, table, params.model_copy(update={"train": warm}), tmp_path / "warm", progress=False)
    assert one.history[0]["lr"] == pytest.approx(params.train.lr) and one.best_epoch == 1


def test_checkpoint_alone_resumes_with_the_best_model(prepared, tmp_path: Path, monkeypatch):
    """A fresh folder with only checkpoint/last.pt (a new pod; DVC removes model/ before a rerun)
    still ends with the best model, even when no epoch after the crash improves on it."""
    import shutil

    params, feats, table = prepared
    # Accuracy reaches its best early on pure tones and later epochs only tie: no new best model.
    params = params.model_copy(update={"train": params.train.model_copy(update={"monitor": "accuracy"})})
    full = train(feats, table, params, tmp_path / "full", progress=False)
    assert full.best_epoch < 4, "the check needs a best epoch before the crash"
    crash_during_epoch(4, feats, table, params, tmp_path / "crashed", monkeypatch)
    (tmp_path / "fresh/checkpoint").mkdir(parents=True)
    shutil.copyfile(tmp_path / "crashed/checkpoint/last.pt", tmp_path / "fresh/checkpoint/last.pt")
    resumed = train(feats, table, params, tmp_path / "fresh", progress=False)
    assert resumed.resumed_from_epoch == 3 and resumed.best_epoch == full.best_epoch
    a, _ = load_model(tmp_path / "full/model")
    b, _ = load_model(tmp_path / "fresh/model")
    for va, vb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(va, vb)


def test_changed_params_do_not_resume_a_stale_checkpoint(prepared, tmp_path: Path):
    params, feats, table = prepared
    train(feats, table, params, tmp_path / "t", progress=False)
    other = params.model_copy(update={"train": params.train.model_copy(update={"lr": 0.002})})
    r = train(feats, table, other, tmp_path / "t", progress=False)
    assert r.resumed_from_epoch == 0 and len(r.history) == 4


def test_finished_run_leaves_no_checkpoint_to_resume(prepared, tmp_path: Path):
    params, feats, table = prepared
    train(feats, table, params, tmp_path / "t", progress=False)
    assert not (tmp_path / "t/checkpoint/last.pt").exists()
    # Rerunning (new code, `dvc repro -f`) trains again and writes the model again.
    import shutil

    shutil.rmtree(tmp_path / "t/model")
    r = train(feats, table, params, tmp_path / "t", progress=False)
    assert r.resumed_from_epoch == 0 and (tmp_path / "t/model/model.safetensors").exists()


def test_crash_checkpoint_loads_without_pickle(prepared, tmp_path: Path, monkeypatch):
    params, feats, table = prepared
    import audioflow.training.loop as tr

    def crash(*a, **kw):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(tr, "write_history", crash)  # after the last epoch's checkpoint
    with pytest.raises(RuntimeError):
        train(feats, table, params, tmp_path / "t", progress=False)
    state = torch.load(tmp_path / "t/checkpoint/last.pt", weights_only=True)
    assert state["epoch"] == 4 and np.isfinite(state["best_score"])


def test_another_split_never_resumes(prepared, tmp_path: Path, monkeypatch):
    params, feats, table = prepared
    crash_during_epoch(2, feats, table, params, tmp_path / "t", monkeypatch)
    other = table.copy()
    swap = other.index[(other.split == "train")][:2]
    other.loc[swap, "split"] = "val"
    r = train(feats, other, params, tmp_path / "t", progress=False)
    assert r.resumed_from_epoch == 0


def test_other_features_never_resume_a_checkpoint(prepared, tmp_path: Path):
    params, feats, table = prepared
    train(feats, table, params, tmp_path / "t", progress=False)
    from audioflow.features import featurize as fz
    from audioflow.manifest import ingest as ing

    other = fz(ing(params.data, progress=False), params.features.model_copy(update={"hop_ms": 20.0}),
               tmp_path / "f2", progress=False)
    r = train(other, table, params, tmp_path / "t", progress=False)
    assert r.resumed_from_epoch == 0


def _weights_equal(a: Path, b: Path) -> bool:
    ma, _ = load_model(a)
    mb, _ = load_model(b)
    return all(torch.equal(va, vb) for va, vb in zip(ma.state_dict().values(), mb.state_dict().values()))


def test_refit_trains_again_on_train_and_val_for_the_chosen_epochs(prepared, tmp_path: Path):
    """train.refit (the default): the epoch is chosen on val exactly as without refit (the same
    weights, kept in model/selected for calibration), then a second pass on train + val for that
    many epochs is the model."""
    from audioflow.checkpoint import SELECTED
    from audioflow.stages.held_out import selected_model

    params, feats, table = prepared
    assert params.train.refit
    plain = params.model_copy(update={"train": params.train.model_copy(update={"refit": False})})
    r = train(feats, table, params, tmp_path / "refit", progress=False)
    p = train(feats, table, plain, tmp_path / "plain", progress=False)
    timings = ("seconds", "train_seconds")
    assert r.history == [h | {k: r.history[i][k] for k in timings} for i, h in enumerate(p.history)]
    assert r.best_epoch == p.best_epoch >= 1 and len(r.refit_history) == r.best_epoch and not p.refit_history
    n_train, n_val = (len(rows_for(feats, table, part)) for part in ("train", "val"))
    assert r.refit_windows == n_train + n_val
    # Its schedule is fitted to the chosen epochs: warm-up, then cosine down to 0 at the last one.
    assert r.refit_history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    # The chosen model is the same either way; refit's exported model is another one.
    assert _weights_equal(tmp_path / "refit/model" / SELECTED, tmp_path / "plain/model")
    assert _weights_equal(tmp_path / "plain/model" / SELECTED, tmp_path / "plain/model")
    assert not _weights_equal(tmp_path / "refit/model", tmp_path / "refit/model" / SELECTED)
    refit_model, _ = load_model(tmp_path / "refit/model")
    # Its input statistics are those of train + val, and it still separates held-out speakers.
    assert not torch.equal(refit_model.mel_mean, selected_model(tmp_path / "refit").mel_mean)
    preds = file_predictions(refit_model, feats, rows_for(feats, table, "test"), torch.device("cpu"))
    assert (preds["actual"] == preds["predicted"]).mean() >= 0.8
    summary = json.loads((tmp_path / "refit/train.json").read_text())
    assert summary["refit_epochs"] == r.best_epoch and summary["refit_windows"] == n_train + n_val
    assert json.loads((tmp_path / "plain/train.json").read_text())["refit_epochs"] == 0


def test_crash_during_refit_resumes_to_the_same_model(prepared, tmp_path: Path, monkeypatch):
    import audioflow.training.loop as tr

    params, feats, table = prepared
    full = train(feats, table, params, tmp_path / "full", progress=False)
    assert full.best_epoch >= 2, "the check needs a refit of two epochs or more"
    real, calls = tr._epoch, {"n": 0}

    def crashing(*a, **kw):  # in the second refit epoch, after the first one's checkpoint
        calls["n"] += 1
        if calls["n"] == len(full.history) + 2:
            raise RuntimeError("simulated crash")
        return real(*a, **kw)

    with monkeypatch.context() as m:
        m.setattr(tr, "_epoch", crashing)
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(feats, table, params, tmp_path / "crashed", progress=False)
    assert not (tmp_path / "crashed/model").exists()  # the model folder is written at the end only
    rows = []
    resumed = train(feats, table, params, tmp_path / "crashed", progress=False, on_epoch=rows.append)
    assert resumed.resumed_from_epoch == len(full.history) + 1
    assert [h["train_loss"] for h in resumed.refit_history] == [h["train_loss"] for h in full.refit_history]
    assert resumed.best_epoch == full.best_epoch
    for part in ("model", "model/selected"):
        assert (tmp_path / "crashed" / part / "model.safetensors").read_bytes() == \
            (tmp_path / "full" / part / "model.safetensors").read_bytes()
    # Live progress replays every epoch: the first pass's, then the refit's, counting on, with
    # their figures under their own names.
    assert [r["epoch"] for r in rows] == list(range(1, len(full.history) + full.best_epoch + 1))
    assert rows[-1]["refit_epoch"] == full.best_epoch and "refit_train_loss" in rows[-1] and "val_loss" not in rows[-1]


def test_result_defaults_follow_the_config():
    from audioflow.config import TrainConfig
    from audioflow.training import TrainResult

    assert TrainResult(Path("m")).monitor == TrainConfig().monitor


def test_rng_state_round_trip_on_cpu():
    from audioflow.training import restore_rng_state, rng_state

    state = rng_state(torch.device("cpu"))
    assert "cuda_rng" not in state
    first = torch.rand(3)
    restore_rng_state(state, torch.device("cpu"))
    assert torch.equal(torch.rand(3), first)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)")
def test_rng_state_includes_cuda_and_restores_it():
    from audioflow.training import restore_rng_state, rng_state

    dev = torch.device("cuda")
    state = rng_state(dev)
    assert len(state["cuda_rng"]) == torch.cuda.device_count()
    first = torch.rand(3, device=dev)
    torch.rand(100, device=dev)
    restore_rng_state(state, dev)
    assert torch.equal(torch.rand(3, device=dev), first)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here)")
@pytest.mark.parametrize("waveform", [True, False], ids=["waveform batches", "stored features"])
def test_cuda_graph_replays_every_full_batch_and_trains_as_the_eager_step(tone_dataset: Path, tmp_path: Path,
                                                                           monkeypatch, waveform: bool):
    """On a GPU each full batch replays one captured CUDA graph. In fp32 without dropout it
    trains as the eager step does, to rounding (cuDNN's kernels need not repeat to the bit):
    the same draws, and the warm-up before the capture leaves batch-norm statistics alone."""
    import audioflow.training as tr

    base = {"data.root": str(tone_dataset), "data.group_column": "speaker", "features.window_s": 0.5,
            "features.n_mels": 32, "split.val_fraction": 0.2, "split.test_fraction": 0.2,
            "model.cnn.channels": [8, 16], "model.cnn.dropout": 0.0, "train.epochs": 3, "train.batch_size": 8,
            "train.lr": 0.01, "train.refit": False, "train.amp": False, "train.device": "cuda"}
    if not waveform:
        base |= {"train.shift": 0.0, "train.speed": 0.0, "train.noise_prob": 0.0}
    eager, graphed = (load_params("absent.yaml", base | {"train.cuda_graph": on}) for on in (False, True))
    ds = ingest(eager.data, progress=False)
    feats = featurize(ds, eager.features, tmp_path / "features", progress=False)
    table = split_mod.split_files(ds.files, eager.split)
    replays, real = [], tr.GraphedStep.__call__
    monkeypatch.setattr(tr.GraphedStep, "__call__", lambda self, *a: replays.append(1) or real(self, *a))
    a = train(feats, table, eager, tmp_path / "eager", progress=False)
    assert not replays
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "could not be captured" would fall back silently
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        b = train(feats, table, graphed, tmp_path / "graphed", progress=False)
    n_train = len(rows_for(feats, table, "train"))
    assert len(replays) == 3 * (n_train // 8) > 0  # the last, partial batch runs eagerly
    for column in ("train_loss", "val_loss"):
        np.testing.assert_allclose([h[column] for h in b.history], [h[column] for h in a.history], rtol=1e-3)


@pytest.mark.parametrize("loss", ["cross_entropy", "focal"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_cuda_graph_loss_is_the_loss(loss: str, smoothing: float, weighted: bool):
    """Inside a CUDA graph the loss is computed without PyTorch's host-side selection of
    targets; it has the same definition, class weights and label smoothing included."""
    from audioflow.config import TrainConfig
    from audioflow.training import capturable_loss_fn, loss_fn

    gen = torch.Generator().manual_seed(0)
    logits, y = torch.randn(16, 5, generator=gen) * 3, torch.randint(0, 5, (16,), generator=gen)
    weight = torch.rand(5, generator=gen) + 0.5 if weighted else None
    cfg = TrainConfig(loss=loss, label_smoothing=smoothing, focal_gamma=2.0)
    expected = loss_fn(logits, y, weight, cfg)
    torch.testing.assert_close(capturable_loss_fn(logits, y, weight, cfg), expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(capturable_loss_fn(logits, y.roll(1), weight, cfg), expected)  # it reads the labels


# --------------------------------------------------------------------------- augmentation, imbalance


def test_spec_augment_masks_one_band_and_one_span_per_example():
    from audioflow.training import spec_augment

    x = torch.arange(6 * 16 * 40, dtype=torch.float32).reshape(6, 16, 40) + 1000
    fill = torch.arange(16, dtype=torch.float32) * -1.0  # distinct per bin, never equal to x
    out = spec_augment(x, fill, 5, 9, torch.Generator().manual_seed(0))
    again = spec_augment(x, fill, 5, 9, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # the generator alone decides
    masked = out != x
    assert torch.equal(out[masked], fill[None, :, None].expand_as(x)[masked])  # masked cells hold the bin's fill
    widths = []
    for m in masked:
        bands = m.all(dim=1)  # mel bins masked across all frames
        spans = m.all(dim=0)  # frames masked across all bins
        assert bands.sum() <= 5 and spans.sum() <= 9
        # nothing else is masked: every masked cell is in the band or the span
        assert torch.equal(m, bands[:, None] | spans[None, :])
        for line in (bands, spans):  # each is one contiguous run
            idx = torch.nonzero(line)[:, 0]
            assert len(idx) == 0 or idx[-1] - idx[0] + 1 == len(idx)
        widths.append((int(bands.sum()), int(spans.sum())))
    assert len(set(widths)) > 1  # drawn per example, not once per batch
    assert torch.equal(spec_augment(x, fill, 0, 0, torch.Generator()), x)


def test_class_weights_and_focal_loss():
    from types import SimpleNamespace

    from audioflow.training import class_weights, loss_fn

    y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 2])
    w = class_weights(y, 4, "balanced")
    assert torch.allclose(w[:3], torch.tensor([9 / 24, 9 / 8, 9 / 4])) and w[3] == 0  # absent class: 0
    assert torch.allclose(class_weights(torch.tensor([0, 1, 0, 1]), 2, "balanced"), torch.ones(2))
    assert class_weights(y, 4, "none") is None
    logits = torch.randn(9, 4, generator=torch.Generator().manual_seed(1))
    ce = SimpleNamespace(loss="cross_entropy", label_smoothing=0.0, focal_gamma=2.0)
    focal0 = SimpleNamespace(loss="focal", label_smoothing=0.0, focal_gamma=0.0)
    focal2 = SimpleNamespace(loss="focal", label_smoothing=0.0, focal_gamma=2.0)
    # gamma 0 is cross-entropy, weighted or not
    assert torch.allclose(loss_fn(logits, y, w, focal0), loss_fn(logits, y, w, ce))
    assert torch.allclose(loss_fn(logits, y, None, focal0), loss_fn(logits, y, None, ce))
    # focal down-weights well-classified examples: never above cross-entropy
    assert loss_fn(logits, y, None, focal2) < loss_fn(logits, y, None, ce)


def test_balanced_sampler_draws_classes_evenly():
    from audioflow.training import epoch_order

    rows = np.arange(1000)
    targets = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    order = epoch_order(rows, targets, "balanced", torch.Generator().manual_seed(0))
    counts = np.bincount(targets[order].numpy(), minlength=3)
    assert len(order) == 1000 and all(abs(c - 333) < 80 for c in counts), counts
    shuffled = epoch_order(rows, targets, "shuffle", torch.Generator().manual_seed(0))
    assert sorted(shuffled) == list(rows)


def test_imbalance_options_train(prepared, tmp_path: Path):
    params, feats, table = prepared
    params = params.model_copy(update={"train": params.train.model_copy(
        update={"loss": "focal", "sampler": "balanced", "epochs": 2})})
    r = train(feats, table, params, tmp_path / "t", progress=False)
    assert len(r.history) == 2 and np.isfinite(r.history[-1]["train_loss"])


def test_bcresnet_trains_from_its_own_options(prepared, tmp_path: Path):
    params, feats, table = prepared
    params = params.model_copy(update={"model": params.model.model_copy(
        update={"name": "bcresnet", "bcresnet": params.model.bcresnet.model_copy(update={"width": 1.0})}),
        "train": params.train.model_copy(update={"epochs": 15})})
    r = train(feats, table, params, tmp_path / "bc", progress=False)
    meta = json.loads((tmp_path / "bc/model/model.json").read_text())
    assert meta["model_name"] == "bcresnet" and meta["model_kwargs"]["width"] == 1.0
    assert "channels" not in meta["model_kwargs"]  # only its own options
    model, _ = load_model(tmp_path / "bc/model")
    preds = file_predictions(model, feats, rows_for(feats, table, "test"), torch.device("cpu"))
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    assert (preds["actual"] == preds["predicted"]).mean() >= 0.8, preds


@pytest.mark.parametrize("level", ["peak", "absolute"])
def test_random_gain_is_a_db_offset_that_leaves_silence_alone(level):
    from audioflow.features import floor_db
    from audioflow.training import random_gain

    FLOOR_DB = floor_db(level, 80.0)  # noqa: N806 (the features' floor, as training passes it)
    x = torch.full((5, 4, 10), -20.0)
    x[:, :, 7:] = FLOOR_DB  # padding / silence
    out = random_gain(x, 6.0, FLOOR_DB, torch.Generator().manual_seed(0))
    offsets = (out[:, :, :7] - x[:, :, :7]).reshape(5, -1)
    assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets))  # one gain per example
    assert offsets.abs().max() <= 6.0 and len(set(offsets[:, 0].tolist())) == 5
    assert torch.equal(out[:, :, 7:], x[:, :, 7:])  # silence stays silence
    assert torch.equal(random_gain(x, 0.0, FLOOR_DB, torch.Generator()), x)


def test_mixup_mixes_examples_and_labels_with_one_weight():
    from audioflow.training import mixup

    x = torch.arange(6, dtype=torch.float32)[:, None, None].expand(6, 2, 3).clone()
    y = torch.arange(6)
    mixed, y1, y2, lam = mixup(x, y, 0.4, torch.Generator().manual_seed(3))
    again = mixup(x, y, 0.4, torch.Generator().manual_seed(3))
    assert lam == again[3] and torch.equal(mixed, again[0])  # the generator decides
    assert 0 <= lam <= 1 and torch.equal(y1, y) and sorted(y2.tolist()) == list(range(6))
    assert torch.allclose(mixed[:, 0, 0], lam * y.float() + (1 - lam) * y2.float())


def test_mixup_and_gain_train(prepared, tmp_path: Path):
    params, feats, table = prepared
    params = params.model_copy(update={"train": params.train.model_copy(update={"mixup": 0.4, "epochs": 2})})
    a = train(feats, table, params, tmp_path / "a", progress=False)
    b = train(feats, table, params, tmp_path / "b", progress=False)
    assert a.history[-1]["train_loss"] == b.history[-1]["train_loss"]  # still deterministic


def test_compiled_training_saves_the_plain_model(prepared, tmp_path: Path):
    """train.compile: the loop runs a torch.compile'd module; what is saved is the model itself
    (no compile wrapper in its weights)."""
    params, feats, table = prepared
    # No refit: its second model would be compiled again, and what is saved is checked on the first.
    compiled = params.model_copy(update={"train": params.train.model_copy(
        update={"compile": True, "epochs": 2, "refit": False})})
    eager = params.model_copy(update={"train": params.train.model_copy(update={"epochs": 2, "refit": False})})
    import getpass
    import tempfile

    inductor_dir = Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}"
    existed = inductor_dir.exists()
    rc = train(feats, table, compiled, tmp_path / "c", progress=False)
    assert existed or not inductor_dir.exists()  # torch's precompiled headers did not outlive the run
    re_ = train(feats, table, eager, tmp_path / "e", progress=False)
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "c/model/model.safetensors")).keys()
    assert not any("_orig_mod" in k for k in keys)
    model, _ = load_model(tmp_path / "c/model")
    preds = file_predictions(model, feats, rows_for(feats, table, "test"), torch.device("cpu"))
    assert set(preds["path"]) == set(table.loc[table.split == "test", "path"])
    # Compiled dropout draws from its own generator, so the losses are alike, not equal.
    losses = [h["train_loss"] for h in rc.history]
    assert all(np.isfinite(losses)) and abs(losses[0] - re_.history[0]["train_loss"]) < 0.5


def _ramp_features(tmp_path: Path, monkeypatch, lengths_s=(2.3, 0.3), window_s=1.0):
    """Features of recordings whose samples are a slow ramp (each sample tells its position),
    with the audio store in float32 so a window can be traced back to its source samples."""
    import soundfile as sf

    from audioflow import features as feats_mod
    from audioflow.config import DataConfig, FeaturesConfig

    monkeypatch.setattr(feats_mod, "AUDIO_DTYPE", np.float32)
    root = tmp_path / "ramps"
    for k, seconds in enumerate(lengths_s):
        n = int(seconds * 8000)
        (root / f"c{k}").mkdir(parents=True)
        sf.write(str(root / f"c{k}/r.wav"), (0.1 + 0.8 * np.arange(n) / n).astype(np.float32), 8000, subtype="FLOAT")
    ds = ingest(DataConfig(root=str(root), manifest=None), progress=False)
    # On the CPU, like the batches below: a GPU's kernels need not match the CPU's to the last bit.
    return featurize(ds, FeaturesConfig(sample_rate=8000, window_s=window_s, n_mels=16, device="cpu"),
                     tmp_path / "f", progress=False)


def _waveform_batches(feats, **aug):
    from audioflow.config import TrainConfig
    from audioflow.training import WaveformBatches

    off = {"shift": 0.0, "speed": 0.0, "noise_prob": 0.0}
    return WaveformBatches(feats, TrainConfig(**(off | aug)), torch.device("cpu"))


def test_waveform_batches_without_augmentation_are_the_stored_features(tmp_path: Path, monkeypatch):
    """Cut from the decoded store and featurized per batch, an unaugmented window is exactly
    the row featurize stored (long recordings' windows and a padded short one alike)."""
    feats = _ramp_features(tmp_path, monkeypatch)
    rows = feats.index["row"].to_numpy()
    assert len(rows) == 5  # 4 windows of the 2.3-s recording, 1 padded
    x = _waveform_batches(feats)(rows, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(x.numpy(), np.asarray(feats.array))


def test_waveform_shift_stays_inside_the_recording(tmp_path: Path, monkeypatch):
    feats = _ramp_features(tmp_path, monkeypatch)
    idx, w = feats.index, feats.spec.window_samples
    wb = _waveform_batches(feats, shift=0.25)
    gen = torch.Generator().manual_seed(1)
    reach = 0.25 * w
    starts = {r: set() for r in idx["row"]}
    for _ in range(30):
        x, valid = wb.waveforms(idx["row"].to_numpy(), gen)
        for i, r in enumerate(idx.itertuples()):
            n = r.audio_length
            sig = 0.1 + 0.8 * np.arange(n) / n
            if n >= w:  # a crop of the long recording, moved by at most reach, wholly inside it
                assert bool(valid[i].all())
                first = round(float((x[i, 0] - 0.1) / 0.8 * n))
                assert abs(first - r.start_sample) <= reach + 1 and 0 <= first <= n - w
                np.testing.assert_allclose(x[i].numpy(), sig[first : first + w], atol=1e-6)
            else:  # the short recording whole, delayed inside the window; padding stays zero
                delay = int((~valid[i]).long().argmin())
                assert delay <= reach and int(valid[i].sum()) == n
                np.testing.assert_allclose(x[i, delay : delay + n].numpy(), sig, atol=1e-6)
                assert not x[i, :delay].any() and not x[i, delay + n :].any()
                first = -delay
            starts[r.row].add(first)
    assert all(len(s) > 5 for s in starts.values())  # the draws differ from batch to batch


def test_waveform_speed_resamples_within_the_range(tmp_path: Path, monkeypatch):
    feats = _ramp_features(tmp_path, monkeypatch, lengths_s=(3.0, 2.5))
    n = feats.index["audio_length"].to_numpy()
    x, _ = _waveform_batches(feats, speed=0.1).waveforms(feats.index["row"].to_numpy(),
                                                         torch.Generator().manual_seed(2))
    # A ramp read at speed f is a ramp whose slope is f times the recording's.
    slopes = (x[:, 1:] - x[:, :-1]).mean(dim=1).numpy() / (0.8 / n)
    assert ((slopes > 0.9 - 1e-3) & (slopes < 1.1 + 1e-3)).all() and slopes.std() > 0.01


def test_waveform_noise_has_the_drawn_snr_and_spares_the_padding(tmp_path: Path, monkeypatch):
    feats = _ramp_features(tmp_path, monkeypatch, lengths_s=(0.5,))  # padded to 1 s
    rows = np.zeros(400, dtype=np.int64)
    clean, _ = _waveform_batches(feats).waveforms(rows, torch.Generator())
    wb = _waveform_batches(feats, noise_prob=0.5, noise_snr_db=(10.0, 20.0))
    x, valid = wb.waveforms(rows, torch.Generator().manual_seed(3))
    noise = x - clean
    assert not noise[~valid].any()  # padding stays exactly zero, as at inference
    noisy = noise.abs().amax(dim=1) > 0
    assert 0.4 < noisy.float().mean() < 0.6  # noise_prob
    inside = valid[0]
    snr = 10 * torch.log10(clean[noisy][:, inside].square().mean(1) / noise[noisy][:, inside].square().mean(1))
    assert snr.min() > 10 - 0.1 and snr.max() < 20 + 0.1 and snr.std() > 1
    again, _ = wb.waveforms(rows, torch.Generator().manual_seed(3))
    assert torch.equal(x, again)  # the generator decides every draw


def test_waveform_augmentation_trains_deterministically(prepared, tmp_path: Path):
    params, feats, table = prepared
    assert params.train.waveform_augmentation  # on by default
    a = train(feats, table, params, tmp_path / "a", progress=False)
    plain = params.model_copy(update={"train": params.train.model_copy(
        update={"shift": 0.0, "speed": 0.0, "noise_prob": 0.0})})
    b = train(feats, table, plain, tmp_path / "b", progress=False)
    assert a.history[-1]["train_loss"] != b.history[-1]["train_loss"]  # the batches differ
    again = train(feats, table, params, tmp_path / "c", progress=False)
    assert [h["train_loss"] for h in again.history] == [h["train_loss"] for h in a.history]


def test_epochs_auto_runs_the_lengthened_schedule(prepared, tmp_path: Path, monkeypatch):
    """train.epochs auto on a small collection: the run takes the schedule config.schedule
    makes of its training windows (constants shrunk to keep the test short), and says so."""
    import math

    import audioflow.config as config

    monkeypatch.setattr(config, "AUTO_EPOCHS", 2)
    monkeypatch.setattr(config, "AUTO_EPOCHS_MAX", 6)
    params, feats, table = prepared
    steps = math.ceil(len(rows_for(feats, table, "train")) / params.train.batch_size)
    auto = params.train.model_copy(update={"epochs": "auto", "min_steps": 5 * steps, "patience": 100,
                                           "refit": False})
    r = train(feats, table, params.model_copy(update={"train": auto}), tmp_path / "auto", progress=False)
    assert len(r.history) == 5  # 2 passes were too few steps; 5 make them
    summary = json.loads((tmp_path / "auto/train.json").read_text())
    assert summary["epochs"] == 5 and summary["patience"] == 250 and summary["epochs_run"] == 5
    # The schedule ends annealed at the lengthened count, not at the two passes' end.
    assert r.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12) and r.history[1]["lr"] > 0
