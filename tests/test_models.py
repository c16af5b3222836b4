import pytest
import torch

from audioflow.models import create_model, list_models, register_model


def test_registry_and_shapes():
    assert "cnn" in list_models()
    m = create_model("cnn", n_mels=40, n_classes=5, channels=[4, 8])
    out = m(torch.randn(3, 40, 77))
    assert out.shape == (3, 5)
    # Any number of frames works: time is pooled.
    assert m(torch.randn(2, 40, 13)).shape == (2, 5)


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet9000'.*cnn"):
        create_model("resnet9000", n_mels=40, n_classes=2)


def test_duplicate_registration_rejected():
    with pytest.raises(ValueError, match="already registered"):
        register_model("cnn")(lambda **kw: None)


def test_bad_args():
    with pytest.raises(ValueError):
        create_model("cnn", n_mels=40, n_classes=1)


def test_normalization_buffers_are_state():
    m = create_model("cnn", n_mels=8, n_classes=2, channels=[4])
    m.set_normalization(torch.full((8,), 3.0), torch.full((8,), 2.0))
    sd = m.state_dict()
    assert torch.equal(sd["mel_mean"], torch.full((8,), 3.0))
