"""ONNX export (waveform-in graph, metadata, parity) and the torch-free Predictor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf
import torch

from audioflow import __version__, audio
from audioflow.checkpoint import ModelMeta, save_model
from audioflow.export import (
    ExportError,
    WaveformClassifier,
    check_parity,
    export_onnx,
)
from audioflow.features import FeatureSpec
from audioflow.inference import Prediction, PredictionError, Predictor, softmax, window_batches
from audioflow.models import create_model

SR = 4000
WINDOW = SR // 2  # 0.5 s
HOP = WINDOW // 2
LABELS = ["dog", "rain", "siren"]
SPEC = FeatureSpec(sample_rate=SR, window_samples=WINDOW, window_hop_samples=HOP, n_fft=256,
                   win_length=100, hop_length=40, n_mels=32, f_min=0.0, f_max=None)


def sine(n: int, freq: float, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)


def noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """An untrained tiny CNN with non-trivial normalisation, saved like a trained one."""
    torch.manual_seed(0)
    kwargs = {"n_mels": SPEC.n_mels, "n_classes": len(LABELS), "channels": [4, 8], "dropout": 0.0}
    model = create_model("cnn", **kwargs).eval()
    model.set_normalization(-40 + 5 * torch.randn(SPEC.n_mels), 8 + torch.rand(SPEC.n_mels))
    meta = ModelMeta("cnn", kwargs, LABELS, SPEC, params_hash="p" * 16,
                     dataset_fingerprint="d" * 16)
    return save_model(model, meta, tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory) -> tuple[Path, dict]:
    check = [sine(WINDOW, f) for f in (220, 440, 880)] + list(noise((4, WINDOW), seed=1))
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return out, export_onnx(model_dir, out, check_audio=check)


@pytest.fixture(scope="module")
def predictor(exported) -> Predictor:
    return Predictor(exported[0])


# --- export -------------------------------------------------------------------------------


def test_export_report_checker_and_metadata(exported):
    path, report = exported
    assert report["max_abs_diff"] <= 1e-4
    assert report["n_checked"] >= 7 and report["opset"] == 18
    assert report["size_bytes"] == path.stat().st_size
    assert not list(path.parent.glob("*.data")), "weights must be inside the single file"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["labels"]) == LABELS
    assert int(meta["sample_rate"]) == SR and int(meta["window_samples"]) == WINDOW
    assert int(meta["window_hop_samples"]) == HOP
    assert meta["params_hash"] == "p" * 16 and meta["dataset_fingerprint"] == "d" * 16
    assert meta["audioflow_version"] == __version__ and meta["model_name"] == "cnn"
    assert [i.name for i in model.graph.input] == ["waveform"]
    assert [o.name for o in model.graph.output] == ["logits"]


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("length", [WINDOW, int(1.7 * WINDOW)])
def test_onnx_matches_pytorch(exported, model_dir, batch, length):
    module, _ = WaveformClassifier.from_model_dir(model_dir)
    session = ort.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"])
    x = noise((batch, length), seed=batch * length)
    x[0] = sine(length, 330)  # one tonal input among the noise
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)).numpy()
    got = session.run(None, {"waveform": x})[0]
    assert got.shape == (batch, len(LABELS))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_parity_failure_raises_export_error(exported, model_dir):
    """A PyTorch model that no longer matches the file (shifted bias) must be rejected."""
    module, _ = WaveformClassifier.from_model_dir(model_dir)
    with torch.no_grad():
        module.classifier.head[-1].bias[0] += 0.5
    with pytest.raises(ExportError, match=r"differ by 0\.5"):
        check_parity(module, exported[0], [noise((2, WINDOW), seed=3)], atol=1e-4)


def test_failed_parity_check_leaves_no_model(model_dir, tmp_path):
    """The file is moved into place only after onnx.checker and parity pass."""
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="differ by"):
        export_onnx(model_dir, out, atol=1e-12)  # float32 graphs never agree this closely
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"the previous, verified model")
    with pytest.raises(ExportError, match="differ by"):
        export_onnx(model_dir, out, atol=1e-12)
    assert out.read_bytes() == b"the previous, verified model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_export_rejects_bad_inputs(model_dir, tmp_path):
    with pytest.raises(ExportError, match="opset"):
        export_onnx(model_dir, tmp_path / "m.onnx", opset=17)
    with pytest.raises(ValueError, match="check_audio"):
        export_onnx(model_dir, tmp_path / "m.onnx", check_audio=[np.zeros(WINDOW - 1, np.float32)])
    assert not (tmp_path / "m.onnx").exists()


# --- inference ----------------------------------------------------------------------------


def test_softmax_is_stable():
    p = softmax(np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]]))
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[1], 1 / 3)


def test_window_batches_match_frame_windows():
    x = noise((10 * WINDOW + 123,), seed=4)
    chunks = list(window_batches(x, WINDOW, HOP, max_batch=4))
    assert all(len(c) <= 4 for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), audio.frame_windows(x, WINDOW, HOP))
    short = list(window_batches(x[:100], WINDOW, HOP))
    np.testing.assert_array_equal(np.concatenate(short), audio.frame_windows(x[:100], WINDOW, HOP))


def test_predictor_metadata(predictor):
    assert predictor.labels == LABELS
    assert (predictor.sample_rate, predictor.window_samples, predictor.window_hop_samples) == (
        SR, WINDOW, HOP)
    assert predictor.metadata["model_name"] == "cnn"


def test_predict_stereo_8k_wav(predictor, tmp_path):
    """Decoded, mixed to mono and resampled to the model's 4 kHz before scoring."""
    path = tmp_path / "stereo.wav"
    left, right = sine(8000, 300, sr=8000), sine(8000, 900, sr=8000)
    sf.write(path, np.stack([left, right], axis=1), 8000)
    pred = predictor.predict_file(path)
    assert isinstance(pred, Prediction) and pred.path == str(path)
    assert set(pred.probabilities) == set(LABELS)
    assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-9)
    assert pred.label == max(pred.probabilities, key=pred.probabilities.get)
    assert pred.n_windows == 3  # 1 s at 4 kHz: 0.5 s windows starting at 0, 0.25 and 0.5 s
    line = json.loads(pred.to_json())
    assert line["path"] == str(path) and set(line) >= {"label", "probabilities"}


def test_long_file_averages_window_softmax(predictor, exported, tmp_path):
    path = tmp_path / "long.wav"
    n = WINDOW + 4 * HOP  # exactly 5 windows
    signal = noise((n,), seed=5) + sine(n, 600)
    sf.write(path, signal, SR, subtype="FLOAT")
    pred = predictor.predict_file(path)
    assert pred.n_windows == 5

    # Independent reference: whole-file windows in one ORT run, softmax by hand.
    windows = audio.frame_windows(audio.load(path, SR), WINDOW, HOP)
    session = ort.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"waveform": windows})[0].astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected = (e / e.sum(axis=1, keepdims=True)).mean(axis=0)
    got = np.array([pred.probabilities[lab] for lab in LABELS])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert pred.label == LABELS[int(np.argmax(expected))]


def test_predict_paths_folder_and_bad_file(predictor, tmp_path):
    root = tmp_path / "clips"
    (root / "sub").mkdir(parents=True)
    sf.write(root / "a.wav", sine(SR, 200), SR)
    sf.write(root / "sub" / "b.flac", sine(SR // 3, 700), SR)  # shorter than a window
    (root / "c.wav").write_bytes(b"this is not audio")
    (root / "notes.txt").write_text("ignored: not an audio extension")
    missing = tmp_path / "missing.wav"

    results = list(predictor.predict_paths([root, missing]))
    assert [Path(r.path).name for r in results] == ["a.wav", "c.wav", "b.flac", "missing.wav"]
    ok = [r for r in results if isinstance(r, Prediction)]
    bad = [r for r in results if isinstance(r, PredictionError)]
    assert [Path(r.path).name for r in ok] == ["a.wav", "b.flac"]
    assert bad[0].path == str(root / "c.wav") and "unreadable" in bad[0].reason
    assert bad[1].path == str(missing) and "not found" in bad[1].reason
    assert json.loads(bad[0].to_json())["error"] == bad[0].reason


def test_inference_does_not_import_torch():
    code = ("import sys, audioflow.inference; "
            "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def clips_folder(root: Path) -> Path:
    """Recordings of many lengths (shorter than a window to 12 windows), rates and channels."""
    for i, seconds in enumerate([0.2, 0.5, 0.9, 1.3, 2.1, 3.25]):
        sr = (4000, 8000, 11025)[i % 3]
        x = sine(int(seconds * sr), 250 + 90 * i, sr=sr) + noise((int(seconds * sr),), seed=i)
        path = root / f"c{i}" / f"clip{i}.wav" if i % 2 else root / f"clip{i}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.stack([x, x[::-1]], axis=1) if i == 4 else x, sr)
    return root


def test_batches_across_recordings_give_the_per_file_answers(predictor, tmp_path):
    """Short recordings share ONNX Runtime runs; the answers are those of one file at a time."""
    root = clips_folder(tmp_path / "clips")
    alone = {str(p): predictor.predict_file(p) for p in sorted(root.rglob("clip*"))}
    for batch in (1, 5, 64):  # 1: every recording runs alone, in chunks; 64: many share a run
        got = list(predictor.predict_paths([root], batch_windows=batch))
        assert [g.path for g in got] == sorted(alone)
        for g in got:
            ref = alone[g.path]
            assert g.n_windows == ref.n_windows and g.label == ref.label
            np.testing.assert_allclose(list(g.probabilities.values()), list(ref.probabilities.values()),
                                       rtol=0, atol=1e-6)


def test_timeline_lists_every_window_with_its_time(predictor, tmp_path):
    path = tmp_path / "long.wav"
    n = WINDOW + 6 * HOP + 100  # 8 windows, the last one cut short by the end of the recording
    sf.write(path, sine(n, 500) + noise((n,), seed=2), SR, subtype="FLOAT")
    pred = predictor.predict_file(path, keep_windows=True)
    rows = pred.timeline()
    assert len(rows) == pred.n_windows == 8
    assert [r["start_s"] for r in rows] == [round(i * HOP / SR, 4) for i in range(8)]
    assert rows[-1]["end_s"] == round(n / SR, 4) and rows[0]["end_s"] == WINDOW / SR
    mean = np.mean([[r["probabilities"][lab] for lab in LABELS] for r in rows], axis=0)
    np.testing.assert_allclose(mean, [pred.probabilities[lab] for lab in LABELS], atol=1e-9)
    d = json.loads(pred.to_json(top_k=2, timeline=True))
    assert [t["label"] for t in d["top"]] == [lab for lab, _ in pred.top(2)] and len(d["timeline"]) == 8


def test_globs_expand_sorted_and_an_unmatched_pattern_is_an_error(tmp_path):
    from audioflow.inference import expand_paths

    root = clips_folder(tmp_path / "clips")
    got = list(expand_paths([str(root / "**" / "*.wav"), str(root / "*.ogg")]))
    assert [p.name for p in got[:-1]] == ["clip1.wav", "clip3.wav", "clip5.wav"]
    assert isinstance(got[-1], PredictionError) and "no file matches" in got[-1].reason


def test_predict_cli_csv_top_k_timeline_and_exit_code(exported, tmp_path):
    import csv

    root = clips_folder(tmp_path / "clips")
    (root / "broken.wav").write_bytes(b"RIFF....WAVEfmt ")
    cli = [str(Path(sys.executable).parent / "audioflow"), "predict", str(exported[0])]
    p = subprocess.run([*cli, str(root), "--format", "csv", "--top-k", "2", "-o", str(tmp_path / "p.csv")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "broken.wav" in p.stderr  # one failed: exit 1, the rest are there
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 7 and [r for r in rows if r["error"]][0]["path"].endswith("broken.wav")
    good = [r for r in rows if not r["error"]]
    for r in good:
        probs = {lab: float(r[f"p_{lab}"]) for lab in LABELS}
        assert r["label"] == max(probs, key=probs.get) and abs(sum(probs.values()) - 1) < 1e-5
        assert r["top"].split("|")[0].split(":")[0] == r["label"] and len(r["top"].split("|")) == 2
    p = subprocess.run([*cli, str(root / "c5" / "clip5.wav"), "--timeline", "--format", "csv"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    windows = list(csv.DictReader(p.stdout.splitlines()))
    assert len(windows) == json.loads(subprocess.run([*cli, str(root / "c5" / "clip5.wav")], capture_output=True,
                                                     text=True, timeout=120).stdout)["n_windows"] > 1
    assert float(windows[1]["start_s"]) == HOP / SR


def test_the_model_file_holds_no_path_of_this_machine(exported):
    """No stack traces or other debug metadata: the bytes depend on the model, not on where the
    checkout lives (a clone under /tmp must not put temporary paths into an artifact)."""
    path, _ = exported
    model = onnx.load(str(path))
    assert all(not n.metadata_props for n in model.graph.node)
    blob = path.read_bytes()
    assert str(Path(__file__).resolve().parents[1]).encode() not in blob and b"site-packages" not in blob


def test_int8_model_keeps_the_front_end_in_float_and_the_metadata(exported, tmp_path):
    from audioflow.quantize import frontend_nodes, quantize_int8

    fp32_path = exported[0]
    calibration = [sine(WINDOW, f) + noise((WINDOW,), seed=i) for i, f in enumerate(range(200, 1800, 100))]
    info = quantize_int8(fp32_path, tmp_path / "model.int8.onnx", calibration)
    int8 = onnx.load(str(tmp_path / "model.int8.onnx"))
    onnx.checker.check_model(int8)
    assert info["n_calibration_windows"] == len(calibration) and info["quantize_nodes"] > 0
    assert info["front_end_nodes_in_float"] == len(frontend_nodes(onnx.load(str(fp32_path))))
    # Nothing is quantized before the first convolution: STFT, mel and log run in float.
    ops = [n.op_type for n in int8.graph.node]
    assert "QuantizeLinear" not in ops[: ops.index("Log") + 1] and ops.index("Conv") < ops.index("Log")
    assert {"Conv", "DequantizeLinear", "QuantizeLinear"} <= set(ops)
    meta = {p.key: p.value for p in int8.metadata_props}
    assert json.loads(meta["labels"]) == LABELS and meta["quantization"].startswith("int8")
    fp32, q = Predictor(fp32_path), Predictor(tmp_path / "model.int8.onnx")
    clip = sine(3 * WINDOW, 650) + noise((3 * WINDOW,), seed=9)
    a, b = fp32.predict_waveform(clip), q.predict_waveform(clip)
    assert a.n_windows == b.n_windows
    assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in LABELS) < 0.1


def test_int8_needs_calibration_audio(exported, tmp_path):
    from audioflow.quantize import QuantizationError, quantize_int8

    with pytest.raises(QuantizationError, match="no calibration audio"):
        quantize_int8(exported[0], tmp_path / "x.onnx", [])
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("level", ["peak", "absolute"])
@pytest.mark.parametrize("args", [(16000, 512, 400, 160, 64), (4000, 256, 100, 40, 32), (8000, 512, 200, 80, 64)])
def test_the_exported_front_end_computes_the_same_log_mel(args, level):
    """The export's STFT-as-convolution equals torchaudio's STFT front-end (dB), any length."""
    from audioflow.export import ConvLogMel
    from audioflow.features import LogMel

    front = LogMel(*args, level=level).eval()
    conv = ConvLogMel(front).eval()
    for n in (args[0], 1234, 50):
        x = torch.from_numpy(noise((3, n), seed=n) + sine(n, 440, sr=args[0]))
        with torch.no_grad():
            a, b = front(x), conv(x)
        assert a.shape == b.shape and (a - b).abs().max().item() < 1e-3


def test_bcresnet_exports_with_the_front_end_inside(tmp_path):
    """The second architecture leaves the pipeline like the CNN: one ONNX file, waveform in,
    checked against PyTorch on audio of any batch size and length."""
    torch.manual_seed(0)
    kwargs = {"width": 1.0, "dropout": 0.0, "subbands": 4}
    model = create_model("bcresnet", n_mels=SPEC.n_mels, n_classes=len(LABELS), **kwargs)
    model.set_normalization(-40 + 5 * torch.randn(SPEC.n_mels), 8 + torch.rand(SPEC.n_mels))
    for m in model.modules():  # non-trivial batch-norm statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    meta = ModelMeta("bcresnet", {"n_mels": SPEC.n_mels, "n_classes": len(LABELS), **kwargs}, LABELS, SPEC,
                     params_hash="p" * 16, dataset_fingerprint="d" * 16)
    model_dir = save_model(model.eval(), meta, tmp_path / "model")
    check = [sine(WINDOW, f) for f in (220, 880)] + list(noise((3, WINDOW), seed=2))
    report = export_onnx(model_dir, tmp_path / "model.onnx", check_audio=check)
    assert report["max_abs_diff"] <= 1e-4
    module, _ = WaveformClassifier.from_model_dir(model_dir)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = noise((3, int(1.7 * WINDOW)), seed=5)
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"waveform": x})[0], expected, atol=1e-4)
    meta_props = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert meta_props["model_name"] == "bcresnet"


# --- calibration and the operating point in the model -------------------------------------

OPERATING_POINT = {"positive_labels": ["rain", "siren"], "target_recall": 1.0, "threshold": 0.6}


@pytest.fixture(scope="module")
def calibrated(model_dir, tmp_path_factory) -> Path:
    """The same model exported with temperature 2 and an operating point."""
    out = tmp_path_factory.mktemp("calibrated") / "model.onnx"
    check = [sine(WINDOW, f) for f in (220, 880)] + list(noise((3, WINDOW), seed=6))
    report = export_onnx(model_dir, out, check_audio=check, temperature=2.0, operating_point=OPERATING_POINT)
    assert report["max_abs_diff"] <= 1e-4 and report["temperature"] == 2.0  # parity holds with T inside
    return out


def test_the_temperature_divides_the_logits_inside_the_graph(calibrated, exported):
    x = noise((4, WINDOW), seed=21)
    plain = ort.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"]).run(None, {"waveform": x})[0]
    scaled = ort.InferenceSession(str(calibrated), providers=["CPUExecutionProvider"]).run(None, {"waveform": x})[0]
    np.testing.assert_allclose(scaled, plain / 2.0, rtol=0, atol=1e-5)
    model = onnx.load(str(calibrated))
    assert model.graph.node[-1].op_type == "Div" and onnx.load(str(exported[0])).graph.node[-1].op_type != "Div"
    meta = {p.key: p.value for p in model.metadata_props}
    assert float(meta["temperature"]) == 2.0 and json.loads(meta["operating_point"]) == OPERATING_POINT
    # Served probabilities are those of the scaled logits: flatter than the uncalibrated ones.
    p = Predictor(calibrated)
    assert p.temperature == 2.0 and Predictor(exported[0]).temperature == 1.0
    np.testing.assert_allclose(p.window_probabilities(x[0]), softmax(plain[:1] / 2.0), atol=1e-6)


def test_the_operating_point_is_applied_on_request(calibrated, exported, tmp_path):
    p = Predictor(calibrated)
    assert p.operating_point.positive_labels == ("rain", "siren") and p.operating_point.threshold == 0.6
    assert Predictor(exported[0]).operating_point is None
    pred = p.predict_waveform(sine(WINDOW, 500))
    screen = p.operating_point.apply(pred.probabilities)
    assert screen["score"] == pytest.approx(pred.probabilities["rain"] + pred.probabilities["siren"])
    assert screen["positive"] == (screen["score"] >= 0.6)
    assert "operating_point" not in pred.to_dict()
    assert pred.to_dict(operating_point=p.operating_point)["operating_point"] == screen

    root = clips_folder(tmp_path / "clips")
    cli = [str(Path(sys.executable).parent / "audioflow"), "predict"]
    out = subprocess.run([*cli, str(calibrated), str(root), "--operating-point"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    for line in map(json.loads, out.stdout.splitlines()):
        score = line["probabilities"]["rain"] + line["probabilities"]["siren"]
        assert line["operating_point"]["positive"] == (score >= 0.6)
        assert line["operating_point"]["score"] == pytest.approx(score)
    csv_out = subprocess.run([*cli, str(calibrated), str(root), "--operating-point", "--format", "csv"],
                             capture_output=True, text=True, timeout=120)
    head, *rows = csv_out.stdout.splitlines()
    assert head.split(",")[4:6] == ["positive", "positive_score"] and len(rows) == 6
    assert {r.split(",")[4] for r in rows} <= {"true", "false"}
    # A model without an operating point says so, instead of guessing one.
    refused = subprocess.run([*cli, str(exported[0]), str(root), "--operating-point"], capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2 and "has no operating point" in refused.stderr and not refused.stdout
