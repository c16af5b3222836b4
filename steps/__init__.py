"""ZenML steps: thin, typed adapters over ``audioflow.stages`` (one step per file)."""

from steps.evaluate import evaluate
from steps.export import export
from steps.featurize import featurize
from steps.folds import evaluate_fold, train_fold
from steps.ingest import ingest
from steps.publish import publish
from steps.split import split
from steps.train import train
from steps.validate import validate

__all__ = ["ingest", "validate", "featurize", "split", "train_fold", "evaluate_fold", "train", "evaluate", "export",
           "publish"]
