"""The papers' ViT backbones by name, at the training and the evaluation side."""

from pathlib import Path

import pytest
import timm
import torch

from fuss_ray.config import FeatureConfig
from fuss_ray.features.backbone import (
    BACKBONES,
    DenseBackbone,
    create_backbone,
    feature_geometry,
    timm_name,
)


@pytest.mark.parametrize(
    ("alias", "dim", "patch"),
    [
        ("dino_vits8", 384, 8),
        ("dino_vits16", 384, 16),
        ("dino_vitb8", 768, 8),
        ("dinov2_vits14", 384, 14),
        ("dinov2_vits14_reg", 384, 14),
    ],
)
def test_aliases_build_dense_patch_features_at_224_and_320(
    alias: str, dim: int, patch: int, tmp_path: Path
) -> None:
    cfg = FeatureConfig(backbone=alias, pretrained=False, weights=None, cache_dir=tmp_path)
    backbone = create_backbone(cfg)
    assert feature_geometry(cfg) == (dim, patch)
    with torch.no_grad():
        for side in (224, 320):  # evaluation runs at its own side (the paper's 320)
            out = backbone(torch.rand(1, 3, side, side) * 255)
            grid = -(-side // patch)  # 320 is padded to a multiple of 14
            assert out.shape == (1, dim, grid, grid), side


def test_every_alias_names_a_timm_model() -> None:
    assert all(timm.is_model(name) for name in BACKBONES.values())
    assert timm_name("resnet18") == "resnet18"


def test_raw_dinov2_register_checkpoint_loads_and_is_resampled(tmp_path: Path) -> None:
    """DINOv2's release layout: 518 px position embeddings, `register_tokens`, `mask_token`."""
    torch.manual_seed(0)
    name = timm_name("dinov2_vits14_reg")
    native: torch.nn.Module = timm.create_model(name, pretrained=False, num_classes=0)
    native_state = native.state_dict()
    raw = {
        ("register_tokens" if k == "reg_token" else k): v.clone() for k, v in native_state.items()
    }
    # DINOv2 keeps a position for the class token inside pos_embed (1 + 37 x 37 entries);
    # timm folds it into cls_token. Write it the release's way round.
    cls_pos = torch.randn(1, 1, 384)
    raw["pos_embed"] = torch.cat([cls_pos, native_state["pos_embed"]], dim=1)
    raw["cls_token"] = native_state["cls_token"] - cls_pos
    raw["mask_token"] = torch.zeros(1, 384)
    torch.save(raw, tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    cfg = FeatureConfig(
        backbone="dinov2_vits14_reg",
        weights=str(tmp_path / "dinov2_vits14_reg4_pretrain.pth"),
        input_size=224,
        cache_dir=tmp_path,
    )
    image = torch.rand(1, 3, 224, 224) * 255
    with torch.no_grad():
        got = create_backbone(cfg)(image)
        # The same weights with timm's own resampling to 224 px, loaded directly.
        direct: torch.nn.Module = timm.create_model(
            name, pretrained=False, num_classes=0, img_size=224, dynamic_img_size=True
        )
        from timm.models.vision_transformer import checkpoint_filter_fn

        direct.load_state_dict(checkpoint_filter_fn(dict(raw), direct))
        expected = DenseBackbone(direct, "vit", 16, direct.num_prefix_tokens)(image)
    assert got.shape == (1, 384, 16, 16)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
