import pytest
import torch

from audioflow.models import create_model, list_models, register_model


@pytest.mark.parametrize(("name", "options"), [("cnn", {"channels": [4, 8]}), ("bcresnet", {"width": 1.0})])
def test_every_model_any_length_and_mel_count(name, options):
    m = create_model(name, n_mels=40, n_classes=5, **options).eval()
    assert m(torch.randn(3, 40, 77)).shape == (3, 5)
    assert m(torch.randn(2, 40, 13)).shape == (2, 5)  # any number of frames: time is pooled
    m64 = create_model(name, n_mels=64, n_classes=3, **options).eval()
    assert m64(torch.randn(2, 64, 101)).shape == (2, 3)


def test_models_declare_their_options():
    from audioflow.config import MODEL_OPTIONS, ModelConfig
    from audioflow.models import model_options

    assert set(list_models()) == set(MODEL_OPTIONS) == {"cnn", "bcresnet"}
    for name in list_models():
        assert model_options(name) is MODEL_OPTIONS[name]
    with pytest.raises(ValueError, match=r"model 'bcresnet': channels: Extra inputs.*its options: width, dropout"):
        create_model("bcresnet", n_mels=40, n_classes=2, channels=[4])
    with pytest.raises(ValueError, match="width"):
        create_model("bcresnet", n_mels=40, n_classes=2, width=-1)
    cfg = ModelConfig(name="bcresnet", bcresnet={"width": 1.5})
    assert cfg.options == {"width": 1.5, "dropout": 0.1, "subbands": 4}
    with pytest.raises(ValueError, match="not one of"):
        ModelConfig(name="resnet9000")


def test_bcresnet_is_small_and_its_subspectral_norm_groups_mel_bins():
    from audioflow.models.bcresnet import SubSpectralNorm

    n = sum(p.numel() for p in create_model("bcresnet", n_mels=40, n_classes=12, width=1.0).parameters())
    assert n < 20_000  # BC-ResNet-1 is about 10k parameters
    ssn = SubSpectralNorm(2, 4).train()
    x = torch.randn(8, 2, 16, 10) * torch.arange(1, 17).float()[None, None, :, None]  # scale grows with F
    y = ssn(x)
    for g in range(4):  # each group of 4 mel bins standardized on its own
        part = y[:, :, 4 * g : 4 * g + 4]
        assert part.mean().abs() < 1e-4 and (part.std() - 1).abs() < 0.05


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
        register_model("cnn", dict)(lambda **kw: None)


def test_bad_args():
    with pytest.raises(ValueError):
        create_model("cnn", n_mels=40, n_classes=1)


def test_normalization_buffers_are_state():
    m = create_model("cnn", n_mels=8, n_classes=2, channels=[4])
    m.set_normalization(torch.full((8,), 3.0), torch.full((8,), 2.0))
    sd = m.state_dict()
    assert torch.equal(sd["mel_mean"], torch.full((8,), 3.0))
