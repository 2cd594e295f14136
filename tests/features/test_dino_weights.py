"""DINO checkpoints from a user's disk: raw layouts and prefixes, resampled to the input."""

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from fuss_ray.config import FeatureConfig
from fuss_ray.errors import UserError
from fuss_ray.features.backbone import DenseBackbone, create_backbone, unwrap_checkpoint

BACKBONE = "vit_small_patch16_224"


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Random ViT-S/16 weights, an image, and the features they give loaded directly."""
    torch.manual_seed(0)
    model = timm.create_model(BACKBONE, pretrained=False, num_classes=0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    image = torch.rand(1, 3, 224, 224) * 255
    with torch.no_grad():
        feats = DenseBackbone(model, "vit", 14, model.num_prefix_tokens)(image)
    return state, image, feats


def _dino_full_checkpoint(state: dict[str, torch.Tensor], path: Path) -> Path:
    """DINO's main_dino.py layout: teacher with 'backbone.', DDP student with 'module.'."""
    junk = {"head.mlp.0.weight": torch.randn(8, 384), "head.last_layer.weight_g": torch.ones(1)}
    torch.save(
        {
            "teacher": {**{f"backbone.{k}": v for k, v in state.items()}, **junk},
            "student": {f"module.backbone.{k}": torch.zeros_like(v) for k, v in state.items()},
            "optimizer": {"state": {}},
            "epoch": 100,
        },
        path,
    )
    return path


def _features(cfg: FeatureConfig, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return create_backbone(cfg)(image)


def test_raw_dino_checkpoint_gives_the_same_features(
    reference: tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    state, image, expected = reference
    ckpt = _dino_full_checkpoint(state, tmp_path / "dino_full.pth")
    cfg = FeatureConfig(backbone=BACKBONE, weights=str(ckpt), input_size=224, cache_dir=tmp_path)
    got = _features(cfg, image)
    assert got.shape == (1, 384, 14, 14)
    assert torch.equal(got, expected)  # the teacher's weights, exactly


def test_prefixes_and_timm_format_are_accepted(
    reference: tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    state, _, _ = reference
    for name, blob in {
        "timm.pth": state,
        "student.pth": {f"module.backbone.{k}": v for k, v in state.items()},
        "wrapped.pth": {"state_dict": {f"module.{k}": v for k, v in state.items()}},
    }.items():
        unwrapped = unwrap_checkpoint(blob)
        assert set(unwrapped) == set(state), name
        torch.save(blob, tmp_path / name)
        cfg = FeatureConfig(
            backbone=BACKBONE, weights=str(tmp_path / name), input_size=224, cache_dir=tmp_path
        )
        create_backbone(cfg)


def test_position_embeddings_are_resampled_to_the_input_size(
    reference: tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    state, _, _ = reference
    ckpt = _dino_full_checkpoint(state, tmp_path / "dino_full.pth")
    cfg = FeatureConfig(backbone=BACKBONE, weights=str(ckpt), input_size=320, cache_dir=tmp_path)
    got = _features(cfg, torch.rand(2, 3, 320, 320) * 255)
    assert got.shape == (2, 384, 20, 20) and np.isfinite(got.numpy()).all()


def test_weights_for_another_model_are_one_line(
    reference: tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    state, _, _ = reference
    ckpt = _dino_full_checkpoint(state, tmp_path / "dino_full.pth")
    cfg = FeatureConfig(
        backbone="vit_base_patch16_224", weights=str(ckpt), input_size=224, cache_dir=tmp_path
    )
    with pytest.raises(UserError, match=r"^features\.weights: .* does not fit vit_base"):
        create_backbone(cfg)
