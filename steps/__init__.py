"""ZenML steps: one per stage, generated from the stage declarations (``steps/stages.py``), and
``publish``, which stages and promotes the model version."""

from steps.publish import publish
from steps.stages import *  # noqa: F403
from steps.stages import __all__ as _stages

__all__ = [*_stages, "publish"]
