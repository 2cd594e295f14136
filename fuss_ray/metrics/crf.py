"""Dense CRF refinement of cluster maps (Krähenbühl and Koltun), as STEGO applies it.

Uses the `pydensecrf2` package (import name `pydensecrf`), an optional extra because it
compiles from source: `pip install 'fuss-ray[crf]'`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fuss_ray.errors import UserError

# STEGO's settings: softmax of 2 x cosine as the unary; Gaussian (sxy 1, weight 3) and
# bilateral (sxy 67, srgb 3, weight 4) pairwise terms.
SCORE_SCALE = 2.0
GAUSSIAN_SXY, GAUSSIAN_WEIGHT = 1.0, 3.0
BILATERAL_SXY, BILATERAL_SRGB, BILATERAL_WEIGHT = 67.0, 3.0, 4.0


def crf_available() -> bool:
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def dense_crf(
    image: NDArray[np.uint8], scores: NDArray[np.float32], iterations: int
) -> NDArray[np.float32]:
    """Refined class probabilities (C, H, W) for one image (H, W, 3) and its cosine scores."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise UserError(
            "evaluation.crf: needs the pydensecrf2 package (pip install 'fuss-ray[crf]')"
        ) from None
    c, h, w = scores.shape
    logits = SCORE_SCALE * scores.astype(np.float64)
    logits -= logits.max(axis=0, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=0, keepdims=True)
    unary = np.ascontiguousarray(
        -np.log(np.clip(probs, 1e-8, 1.0)).reshape(c, -1), dtype=np.float32
    )
    model = dcrf.DenseCRF2D(w, h, c)
    model.setUnaryEnergy(unary)
    model.addPairwiseGaussian(sxy=GAUSSIAN_SXY, compat=GAUSSIAN_WEIGHT)
    model.addPairwiseBilateral(
        sxy=BILATERAL_SXY,
        srgb=BILATERAL_SRGB,
        rgbim=np.ascontiguousarray(image),
        compat=BILATERAL_WEIGHT,
    )
    out: NDArray[np.float32] = np.asarray(model.inference(iterations), dtype=np.float32).reshape(
        c, h, w
    )
    return out
