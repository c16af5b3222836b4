"""INT8 models: static (QDQ) quantization of the classifier with ONNX Runtime's quantizer.

The exported graph is waveform -> log-mel front-end (a DFT convolution, power, mel, log) -> CNN.
Quantizing the front-end would put the waveform, the power spectrum and the log through 8 bits,
where the dynamic range of audio (quiet to loud, 60+ dB) does not fit; so everything up to the
log stays in float, and the CNN's convolutions and final linear layer get INT8 weights (per
channel) and INT8 activations calibrated on validation audio (never on the test split, which
judges the result).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from audioflow.atomic import atomic_path
from audioflow.errors import AudioflowError

QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")


class QuantizationError(AudioflowError, RuntimeError):
    pass


def frontend_nodes(model) -> list[str]:
    """Names of the front-end's nodes: everything up to the first Conv after the log of the
    log-mel (the front-end's own STFT is a Conv too; ONNX graphs are topologically sorted)."""
    names, seen_log = [], False
    for node in model.graph.node:
        if node.op_type == "Conv" and seen_log:
            return names
        seen_log = seen_log or node.op_type == "Log"
        names.append(node.name)
    raise QuantizationError("no Conv after the log-mel front-end: nothing to quantize in the classifier")


def _named(model):
    """The model with every node named (the quantizer excludes nodes by name)."""
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    return model


class _Windows:
    """onnxruntime.quantization's CalibrationDataReader over windows of audio, in batches."""

    def __init__(self, input_name: str, windows: Sequence[np.ndarray], batch: int = 16):
        arr = np.stack([np.asarray(w, dtype=np.float32) for w in windows])
        self._batches: Iterator[dict] = iter({input_name: arr[i:i + batch]} for i in range(0, len(arr), batch))

    def get_next(self) -> dict | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # newer quantizers call it; one pass is all calibration needs
        pass


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calibration: Sequence[np.ndarray]) -> dict:
    """Write the INT8 model of ``fp32_path`` to ``out_path`` (atomically) and describe it."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if len(calibration) == 0:
        raise QuantizationError("no calibration audio: the validation split gave no windows")
    fp32 = _named(onnx.load(str(fp32_path)))
    excluded = frontend_nodes(fp32)
    out = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="audioflow-int8-") as scratch:
        named = Path(scratch) / "named.onnx"
        onnx.save(fp32, str(named))
        tmp = Path(scratch) / "int8.onnx"
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer's advice to run its shape pre-processing
        try:
            quantize_static(str(named), str(tmp), _Windows(fp32.graph.input[0].name, calibration),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=excluded,
                            calibrate_method=CalibrationMethod.MinMax)
        finally:
            root.setLevel(level)
        int8 = onnx.load(str(tmp))
        del int8.metadata_props[:]
        for prop in fp32.metadata_props:  # labels, sample rate, window: what Predictor reads
            int8.metadata_props.add(key=prop.key, value=prop.value)
        int8.metadata_props.add(key="quantization", value="int8 static QDQ: Conv/Gemm/MatMul after the front-end")
        onnx.checker.check_model(int8)
        with atomic_path(out) as staged:
            onnx.save(int8, str(staged), format="protobuf")
    quantized = sum(1 for n in int8.graph.node if n.op_type == "QuantizeLinear")
    return {"path": out.name, "size_bytes": out.stat().st_size, "n_calibration_windows": len(calibration),
            "front_end_nodes_in_float": len(excluded), "quantize_nodes": quantized}


def test_split_scores(model_path: str | Path, recordings: Sequence[tuple[object, str]]) -> tuple[float, list[str]]:
    """Macro-F1 of an ONNX model over (location, label) recordings, and its predicted labels."""
    from sklearn.metrics import f1_score

    from audioflow.inference import Predictor

    predictor = Predictor(model_path)
    predicted = [predictor.predict_file(location).label for location, _ in recordings]
    actual = [label for _, label in recordings]
    return float(f1_score(actual, predicted, labels=predictor.labels, average="macro", zero_division=0)), predicted
