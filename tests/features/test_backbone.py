from pathlib import Path

import numpy as np
import pytest
import torch

from fuss_ray.config import FeatureConfig
from fuss_ray.errors import UserError
from fuss_ray.features.backbone import create_backbone, resolve_weights


@pytest.fixture(scope="module")
def lite0_file(cache_dir: Path) -> Path:
    resolved = resolve_weights(FeatureConfig(cache_dir=cache_dir))
    assert resolved.file is not None
    return resolved.file


def test_packaged_lite0_weights_classify_real_photos(lite0_file: Path) -> None:
    """The renamed weights load strictly and still recognise ImageNet classes."""
    import skimage.data
    import timm
    from PIL import Image

    model = timm.create_model(
        "tf_efficientnet_lite0", pretrained=True, pretrained_cfg_overlay={"file": str(lite0_file)}
    ).eval()
    expected = {"coffee": 967, "chelsea": 285}  # espresso, Egyptian cat
    for name, label in expected.items():
        img = Image.fromarray(getattr(skimage.data, name)()).resize((224, 224))
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            logits = model((x - 0.5) / 0.5)
        assert int(logits.argmax()) == label, name


def test_cnn_dense_features_concatenate_strides_8_and_16(cache_dir: Path) -> None:
    bb = create_backbone(FeatureConfig(cache_dir=cache_dir, input_size=64))
    out = bb(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 40 + 112, 8, 8)


def test_vit_patch_tokens_drop_prefix_tokens(tmp_path: Path) -> None:
    cfg = FeatureConfig(
        backbone="vit_small_patch14_reg4_dinov2",
        pretrained=False,
        weights=None,
        input_size=56,
        cache_dir=tmp_path,
    )
    bb = create_backbone(cfg)
    assert bb.prefix_tokens == 5  # class token + 4 registers
    x = torch.rand(1, 3, 56, 56) * 255
    out = bb(x)
    assert out.shape == (1, 384, 4, 4)
    tokens = bb.model.forward_features((x / 255.0 - bb.mean) / bb.std)
    assert torch.allclose(out.flatten(2).transpose(1, 2), tokens[:, 5:])


def test_local_weights_file_is_used(tmp_path: Path) -> None:
    import timm

    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32)
    path = tmp_path / "w.pth"
    torch.save(ref.state_dict(), path)
    cfg = FeatureConfig(
        backbone="vit_tiny_patch16_224", weights=str(path), input_size=32, cache_dir=tmp_path
    )
    bb = create_backbone(cfg)
    for k, v in ref.state_dict().items():
        assert torch.equal(bb.model.state_dict()[k], v)


def test_weight_errors_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        resolve_weights(FeatureConfig(weights=str(tmp_path / "missing.pth"), cache_dir=tmp_path))
    with pytest.raises(UserError, match="fits only"):
        resolve_weights(FeatureConfig(backbone="resnet18", cache_dir=tmp_path))
    with pytest.raises(UserError, match="not a timm model"):
        create_backbone(FeatureConfig(backbone="no_such_net", pretrained=False, weights=None))
