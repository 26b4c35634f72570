import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from aegmm.config import ModelConfig
from aegmm.nn import AutoEncoder


@pytest.mark.parametrize(
    ("stem", "size", "channels"),
    [
        ("small", 8, 1),
        ("small", 16, 3),
        ("small", 32, 3),
        ("strided", 16, 1),
        ("strided", 32, 3),
        ("standard", 32, 3),
        ("standard", 64, 1),
    ],
)
def test_shapes_through_encoder_and_decoder(stem, size, channels):
    config = ModelConfig(image_size=size, channels=channels, latent_dim=6, stem=stem, width=0.125)
    model = AutoEncoder(config).eval()
    x = torch.randn(3, channels, size, size)
    with torch.no_grad():
        output, z = model(x)
        maps = model.encoder.feature_maps(x)
    assert z.shape == (3, 6)
    assert output.shape == x.shape
    factor = {"small": 8, "strided": 16, "standard": 32}[stem]
    assert maps[-1].shape[-1] == size // factor
    assert len(maps) == 5  # stem + four ResNet stages


def test_full_width_encoder_is_torchvisions_resnet18_trunk():
    encoder = AutoEncoder(ModelConfig(image_size=64, stem="standard", width=1.0)).encoder
    reference = resnet18(weights=None)
    ours = [tuple(p.shape) for p in encoder.stages.parameters()]
    theirs = [tuple(p.shape) for name, p in reference.named_parameters() if name.startswith("layer")]
    assert ours == theirs
    assert encoder.stem[0].kernel_size == (7, 7)
    assert isinstance(encoder.stem[3], torch.nn.MaxPool2d)


def test_width_narrows_the_network():
    def size(width):
        return sum(p.numel() for p in AutoEncoder(ModelConfig(width=width)).parameters())

    assert size(0.25) < size(0.5) / 3 < size(1.0) / 9


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 20}, "image_size must be a positive multiple of 8 for the 'small' stem, got 20"),
        ({"image_size": 16, "stem": "standard"}, "multiple of 32 for the 'standard' stem"),
        ({"image_size": 24, "stem": "strided"}, "multiple of 16 for the 'strided' stem, got 24"),
        ({"stem": "big"}, "stem must be one of small, strided, standard, got 'big'"),
        ({"channels": 2}, "channels must be 1 or 3"),
        ({"width": 0}, "width must be in"),
        ({"latent_dim": 0}, "latent_dim must be a whole number >= 1 or 'auto', got 0"),
        ({"latent_dim": 2.5}, "latent_dim must be a whole number >= 1 or 'auto', got 2.5"),
        ({"latent_dim": "big"}, "latent_dim must be a whole number >= 1 or 'auto', got 'big'"),
    ],
)
def test_invalid_model_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


@pytest.mark.parametrize(
    ("channels", "objective", "reducer", "expected"),
    [
        (1, "reconstruction", "umap", 64),
        (1, "reconstruction", "pca", 32),  # under PCA 64 did worse (results/small_grayscale/)
        (3, "reconstruction", "umap", 32),
        (1, "contrastive", "umap", 32),  # the projection head reads the bottleneck
        (1, "hybrid", "umap", 32),
    ],
)
def test_an_auto_latent_size_is_64_where_umap_clusters_a_grayscale_autoencoder_else_32(
    channels, objective, reducer, expected
):
    auto = ModelConfig(channels=channels)
    assert auto.latent_dim == "auto" and auto.resolve(objective, reducer).latent_dim == expected
    assert ModelConfig(channels=channels, latent_dim=16).resolve(objective, reducer).latent_dim == 16  # kept


def test_networks_build_with_the_latent_size_of_their_objective():
    from aegmm.contrastive import ContrastiveConfig, ContrastiveModel
    from aegmm.nn.autoencoder import Encoder

    gray = ModelConfig(image_size=16, channels=1, width=0.125)
    assert AutoEncoder(gray).config.latent_dim == 32  # alone, no mixture to follow: the study's size
    assert AutoEncoder(gray.resolve("reconstruction", "umap")).encoder(torch.zeros(2, 1, 16, 16)).shape == (
        2,
        64,
    )
    assert ContrastiveModel(gray, ContrastiveConfig()).autoencoder.config.latent_dim == 32
    assert ContrastiveModel(gray, ContrastiveConfig(mode="hybrid")).autoencoder.config.latent_dim == 32
    with pytest.raises(ValueError, match="latent_dim 'auto' follows the objective"):
        Encoder(gray)  # a part alone does not know its objective


def test_narrow_shortcuts_subsample_then_convolve_and_keep_the_weights_and_their_names():
    from aegmm.nn.autoencoder import Encoder, StridedPointwise

    narrow, default = (AutoEncoder(ModelConfig(width=w)).encoder for w in (0.125, 0.25))
    shortcuts = [b.downsample[0] for stage in narrow.stages for b in stage if b.downsample is not None]
    assert [type(c) for c in shortcuts] == [StridedPointwise, nn.Conv2d, nn.Conv2d]  # 8, 16, 32 inputs
    assert not any(isinstance(m, StridedPointwise) for m in default.modules())  # 16+ inputs: untouched
    assert set(narrow.state_dict()) == set(Encoder(ModelConfig(width=0.125, latent_dim=32)).state_dict())
    assert "stages.1.0.downsample.0.weight" in narrow.state_dict()
    x = torch.randn(3, 8, 9, 9)  # an odd side: the strided convolution keeps ceil(9 / 2) = 5
    conv = shortcuts[0]
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, stride=2))
