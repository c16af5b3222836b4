"""Model registry: ``@register_model(name, options)`` and ``create_model(name, n_mels, n_classes, **options)``.

A model is a ``LogMelModel``: [batch, n_mels, frames] log-mel (dB) in, logits out, with the
per-mel-bin standardisation of the training set in buffers (so it travels in the weights and
the ONNX graph). Each model declares its options (a pydantic section of ``audioflow.config``:
``model.<name>`` in params.yaml); ``create_model`` checks them against that declaration.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable
from importlib import import_module

import torch
from pydantic import ValidationError
from torch import nn

_REGISTRY: dict[str, tuple[Callable[..., nn.Module], type]] = {}


class LogMelModel(nn.Module):
    """Base of the registered models: the input standardisation every model shares.

    ``classifier`` names the submodules that map features to the label set: fine-tuning on new
    labels replaces them (and trains them at the full learning rate); the rest is the backbone.
    """

    classifier: tuple[str, ...] = ("head",)

    def __init__(self, n_mels: int, n_classes: int):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes}")
        self.register_buffer("mel_mean", torch.zeros(n_mels))
        self.register_buffer("mel_std", torch.ones(n_mels))

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mel_mean.copy_(mean)
        self.mel_std.copy_(std.clamp_min(1e-3))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mel_mean[:, None]) / self.mel_std[:, None]

    def is_classifier(self, name: str) -> bool:
        """Whether a parameter, buffer or submodule (by qualified name) belongs to the classifier."""
        return any(name == c or name.startswith(c + ".") for c in self.classifier)


def register_model(name: str, options: type) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``factory(n_mels, n_classes, **options)`` under ``name``; ``options`` is the
    pydantic class that declares (and validates) what it takes beyond n_mels and n_classes."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = (factory, options)
        return factory

    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_options(name: str) -> type:
    """The options class a model declared."""
    return _entry(name)[1]


def _entry(name: str):
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(list_models())}") from None


def create_model(name: str, n_mels: int, n_classes: int, **options) -> nn.Module:
    """Build a registered model; unknown names and options fail naming what is known."""
    factory, declared = _entry(name)
    try:
        checked = declared.model_validate(options).model_dump()
    except ValidationError as exc:
        raise ValueError(f"model {name!r}: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']} "
                         f"(its options: {', '.join(declared.model_fields)})") from None
    return factory(n_mels=n_mels, n_classes=n_classes, **checked)


# Each module of this package registers its models when imported: a new model is a new module.
for _module in pkgutil.iter_modules(__path__):
    import_module(f"{__name__}.{_module.name}")
