"""``audioflow serve MODEL.onnx``: the exported model behind an HTTP API (FastAPI + uvicorn).

ONNX Runtime only, like ``audioflow.inference``: nothing here imports torch. One inference
session is loaded at start and shared by every request; ``/predict`` runs in FastAPI's thread
pool, so a slow decode or a long recording never blocks the event loop (ONNX Runtime's
``run`` is thread-safe and releases the GIL).

Bad input is answered, never crashed on: an upload over ``max_upload_bytes`` gets 413 before
its body is read, a recording longer than ``max_duration_s`` gets 413 from its header alone
(nothing decoded), and an empty, corrupt or unsupported file gets 415 or 422 with a JSON
``detail`` that says why. The service binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, HTTPException, Query, UploadFile

from audioflow import __version__, audio
from audioflow.inference import Predictor
from audioflow.limits import DEFAULT_MAX_DURATION_S, DEFAULT_MAX_UPLOAD_MB


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, before or while it arrives.

    A declared Content-Length over the limit is refused without reading anything; a chunked
    body is counted as it streams and cut off at the limit, so no upload can fill the memory
    or the disk of the server.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(send)
        seen, started = 0, False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:
                await self._too_large(send)

    async def _too_large(self, send):
        body = json.dumps({"detail": f"upload larger than the limit of {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def model_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def create_app(model_path: str | Path, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
               max_duration_s: float = DEFAULT_MAX_DURATION_S, operating_point: bool = False):
    """(the ASGI app to run, the FastAPI app inside it) serving ``model_path``, loaded once, here.

    ``operating_point``: every answer applies the model's operating point (``?operating_point=``
    on a request overrides it); a model without one is refused here, at start.
    """
    predictor = Predictor(model_path)
    if operating_point and predictor.operating_point is None:
        raise ValueError(f"{model_path}: the model has no operating point (it was exported with "
                         "evaluate.positive_labels empty); serve it without --operating-point")
    op, default_operating_point = predictor.operating_point, operating_point
    digest = model_sha256(predictor.model_path)
    limit = int(max_upload_mb * 1024 * 1024)
    metadata = {
        "labels": predictor.labels,
        "sample_rate": predictor.sample_rate,
        "window_s": predictor.window_samples / predictor.sample_rate,
        "hop_s": predictor.window_hop_samples / predictor.sample_rate,
        "model_sha256": digest,
        "model_version": digest[:12],
        "model_file": predictor.model_path.name,
        "audioflow_version": __version__,
        "max_upload_bytes": limit,
        "max_duration_s": max_duration_s,
        "temperature": predictor.temperature,
        "operating_point": None if op is None else {"positive_labels": list(op.positive_labels),
                                                    "threshold": op.threshold, "target_recall": op.target_recall,
                                                    "applied_by_default": operating_point},
    }
    app = FastAPI(
        title="audioflow", version=__version__,
        description="Audio classification with an ONNX model exported by audioflow: POST a recording "
                    "to /predict (multipart field `file`) for its label and class probabilities.")

    @app.get("/health")
    def health() -> dict:
        """Liveness and readiness: the model is loaded and answers."""
        return {"status": "ok", "model_version": metadata["model_version"]}

    @app.get("/metadata")
    def model_metadata() -> dict:
        """What the model expects and returns: labels, sample rate, window, its hash, the limits."""
        return metadata

    @app.post("/predict", responses={
        413: {"description": "upload or recording longer than the service's limits"},
        415: {"description": "not an audio format the service can decode"},
        422: {"description": "an empty recording, one without samples, or no `file` field"}})
    def predict(file: Annotated[UploadFile, File(description="the recording: WAV, FLAC, OGG, AIFF or MP3, any "
                                                             "sample rate and channel count")],
                operating_point: Annotated[bool | None, Query(
                    description="apply the model's operating point (its positive classes' summed probability "
                                "against the threshold set on validation); default: the service's setting")] = None,
                ) -> dict:
        """Label and probabilities of one recording (windows averaged, as in evaluation); with the
        operating point, whether it is positive."""
        apply = default_operating_point if operating_point is None else operating_point
        if apply and op is None:
            raise HTTPException(422, "the model has no operating point (exported with evaluate.positive_labels empty)")
        # A sync endpoint: FastAPI runs it in its thread pool, off the event loop.
        name = file.filename or "upload"
        blob = file.file.read(limit + 1)
        if len(blob) > limit:
            raise HTTPException(413, f"{name}: upload larger than the limit of {limit} bytes")
        try:
            head = audio.info_of(blob, name)
            if head.frames / head.sample_rate > max_duration_s:
                raise HTTPException(413, f"{name}: {head.frames / head.sample_rate:.1f} s of audio, longer "
                                         f"than the limit of {max_duration_s:g} s")
            data, sr = audio.decode(blob, name)
            signal = audio.resample(audio.to_mono(data), sr, predictor.sample_rate)
            result = predictor.predict_waveform(signal, path=name)
        except audio.AudioError as exc:
            status = 415 if "unsupported format" in exc.reason else 422
            raise HTTPException(status, f"{exc.path}: {exc.reason}") from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        answer = {"file": name, "label": result.label, "probabilities": result.probabilities,
                  "n_windows": result.n_windows, "duration_s": round(len(signal) / predictor.sample_rate, 3),
                  "model_version": metadata["model_version"]}
        if apply:
            answer["operating_point"] = op.apply(result.probabilities)
        return answer

    return BodyLimit(app, limit=limit + 64 * 1024), app  # the multipart envelope on top of the file


def serve(model_path: str | Path, host: str = "127.0.0.1", port: int = 8000,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, max_duration_s: float = DEFAULT_MAX_DURATION_S,
          log_level: str = "info", operating_point: bool = False) -> None:
    """Run the service until SIGINT or SIGTERM (uvicorn finishes the requests in flight, then exits)."""
    import uvicorn

    asgi, _ = create_app(model_path, max_upload_mb, max_duration_s, operating_point)
    uvicorn.run(asgi, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)
