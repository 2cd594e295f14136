"""Every random stream of a run, named in one place.

A run has one seed; each use of randomness draws from its own stream, a numpy
`SeedSequence` of the seed, the keys that make a draw unique (client, round, image) and
the stream's salt below. Distinct salts keep streams from ever sharing draws, and since a
draw depends only on its keys, results do not depend on which process makes it (the Ray
and sequential executors agree bit for bit) nor on what ran before (a resumed run
continues exactly).

Client training (dropout masks, batches, kNN partners, correspondence samples) uses
(seed, client, round) with no salt: `fuss_ray.federation.client.client_seed`.
"""

from __future__ import annotations

from enum import IntEnum


class Stream(IntEnum):
    """The salt of each stream (its value is part of every seed drawn from it)."""

    SAMPLING = 271_828  # which clients a round samples: (seed, round)
    DISPATCH = 314_159  # asynchronous mode: which idle client a dispatch starts: (seed, n)
    KMEANS = 31_337  # FedCC k-means initialisation: (seed, round)
    DEVICE = 7_331  # a client's device speed and bandwidth: (seed, client)
    AVAILABILITY = 4_242  # online at a round's start: (seed, client, round)
    DROPOUT = 9_001  # leaves mid-round: (seed, client, round)
    PARTITION = 15_485_863  # the split of images over clients: (seed,)
    FOLDER_SPLIT = 104_729  # a folder dataset's evaluation hold-out: (seed,)
    VALIDATION = 1_299_709  # the labelled validation subset of the training images: (seed,)
    SCENE_DOMAIN = 7_919  # a synthetic domain's lighting: (seed, SALT, domain)
    GENERATED = 16_661  # benchmark feature maps generated per block: (seed, block)
    CENTROID_ORDER = 6_007  # a client's private order of its centroids: (seed, client)


def seed_stream(stream: Stream, *keys: int) -> list[int]:
    """The entropy of one draw: its keys, then the stream's salt."""
    return [*(int(k) for k in keys), int(stream)]
