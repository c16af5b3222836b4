"""Model selection on val: the monitored score (higher is better), the best epoch's weights
and the count of epochs without improvement that early stopping (``train.patience``) reads."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def score(metrics: dict, loss: float, monitor: str) -> float:
    # Higher is better for every monitored quantity; loss is negated.
    return -loss if monitor == "loss" else metrics[monitor]


@dataclass
class Selection:
    """The best validation score so far, the epochs since it improved, and a CPU copy of the
    best epoch's weights (None before the first finite score)."""

    best_score: float = -math.inf
    bad_epochs: int = 0
    best_state: dict[str, torch.Tensor] | None = None

    def exhausted(self, patience: int) -> bool:
        """Whether ``patience`` epochs in a row brought no improvement: training stops."""
        return self.bad_epochs >= patience

    def observe(self, value: float, model: nn.Module) -> bool:
        """One epoch's score: a better one keeps the model's weights and resets the count, any
        other (a tie, NaN) adds to it. Returns whether it improved."""
        if value > self.best_score:
            self.best_score, self.bad_epochs = value, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            return True
        self.bad_epochs += 1
        return False
