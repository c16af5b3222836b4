"""The HTTP service's default bounds, importable without FastAPI: every ``audioflow`` command
builds the parser that shows them, and none should pay for importing the web framework."""

DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_DURATION_S = 600.0
