"""MOON's model-contrastive term, on image-level (pooled) codes.

The local representation is pulled toward the global model's and pushed from the previous
local model's, which counters client drift without sharing data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def moon_loss(
    local: torch.Tensor, global_: torch.Tensor, previous: torch.Tensor, tau: float
) -> torch.Tensor:
    """-log(e^{sim(z,zg)/tau} / (e^{sim(z,zg)/tau} + e^{sim(z,zp)/tau})), averaged.

    Inputs are (B, D) representations; the global and previous ones carry no gradient.
    """
    pos = F.cosine_similarity(local, global_.detach(), dim=1) / tau
    neg = F.cosine_similarity(local, previous.detach(), dim=1) / tau
    logits = torch.stack([pos, neg], dim=1)
    # The positive (the global model) is class 0; made where the logits are, so that the
    # loss runs on a GPU as on the CPU.
    target = torch.zeros(local.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)
