"""Orchestrator fronts: ZenML (``training``) and the runner behind ``make demo`` (``run``)."""
