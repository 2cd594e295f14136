"""Typed run configuration: YAML in, validated pydantic objects out.

Every field has a default, so an empty file is a valid (small, synthetic) run. Validation
errors are turned into one line that names the dotted key, because users meet them at the
command line and must fix them without reading a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from fuss_ray.errors import UserError
from fuss_ray.plugins import DATASETS, STRATEGIES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _partial_sections(cls, data: Any) -> Any:
        """A section given in part keeps the rest of its default.

        A section whose model has required fields (`loss.weights`: self, knn, rand) gets
        its default from the parent, so `--set loss.weights.knn=0` alone would otherwise
        fail on the two fields it does not name. Sections whose model fills its own
        fields are left to it.
        """
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            default, key = field.default, field.alias or name
            given = data.get(key, data.get(name))
            if not (isinstance(default, BaseModel) and isinstance(given, dict)):
                continue
            inner = type(default).model_fields
            if not any(f.is_required() for f in inner.values()):
                continue
            base = default.model_dump(by_alias=True)
            for iname, ifield in inner.items():
                if iname in given or (ifield.alias or iname) in given:
                    base.pop(ifield.alias or iname, None)
            merged[key if key in data else name] = {**base, **given}
        return merged


class DataParams(_Strict):
    """The `data` section: what every dataset has. Each adapter's `Params`, in the
    adapter's own file, adds the settings it reads.

    The section is validated by the `Params` of the adapter that `dataset` names, found
    through the registry (`fuss_ray.plugins.DATASETS`), as a strategy's settings are: a
    setting of another dataset is an error that names it, and a new adapter (or a
    plugin's) edits nothing here.
    """

    dataset: str = Field(
        "synthetic",
        description="a registered adapter: synthetic, folder, cityscapes, cocostuff, "
        "potsdam, packaged-real, or a plugin's",
    )
    num_classes: int = Field(5, ge=2, le=255, description="classes scored (benchmarks fix it)")
    val_fraction: float = Field(
        0.1,
        ge=0.0,
        le=0.5,
        description="share of the training images set aside, with their labels, as the "
        "validation set that searches select on (never trained on; 0: none)",
    )
    # A benchmark's class count: filled in when left out, and a contradicting one refused.
    fixed_classes: ClassVar[int | None] = None

    @model_validator(mode="before")
    @classmethod
    def _implied_classes(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fixed = cls.implied_classes(data)
        if fixed is None:
            return data
        given = data.get("num_classes")
        if given is None:
            return {**data, "num_classes": fixed}
        if given != fixed:
            raise ValueError(
                f"data.num_classes: {data.get('dataset')} has {fixed} classes (got {given!r}); "
                "leave it out"
            )
        return data

    @classmethod
    def implied_classes(cls, data: dict[str, Any]) -> int | None:
        """The class count the other settings imply, or None where the user sets it."""
        return cls.fixed_classes

    def root_path(self) -> Path | None:
        """The folder the images are read from, for datasets read from one."""
        return None

    def resolved(self, base: Path) -> DataParams:
        """Every path setting made absolute against `base` (see `resolve_paths`)."""
        paths = {
            name: resolve_path(value, base)
            for name in type(self).model_fields
            if isinstance(value := getattr(self, name), Path)
        }
        return self.model_copy(update=paths)


# Every setting the one `data` model of earlier versions held, at its default. A config
# written whole by one of them (a checkpoint's, a run's summary) holds each of these; a
# key that the chosen dataset does not have is dropped while it keeps this value, so old
# runs resume. Set to anything else, it is reported as a setting of another dataset.
LEGACY_DATA_DEFAULTS: dict[str, Any] = {
    "root": None,
    "curated_list": "Coco164kFull_Stuff_Coarse_7.txt",
    "sources": ["voc", "arc", "nuclei"],
    "tile_size": 128,
    "tile_stride": 64,
    "num_images": 200,
    "num_eval_images": 40,
    "num_classes": 5,
    "image_size": 224,
    "regions": [3, 7],
    "seed": None,
    "domains": 3,
    "eval_fraction": 0.2,
    "val_fraction": 0.1,
    "strict": False,
}


def earlier_layout(tree: dict[str, Any]) -> dict[str, Any]:
    """A config tree with its `data` section as the one `data` model of earlier versions
    wrote it: every setting of every dataset, those the dataset lacks at their defaults.

    Trees written before and after the data sections were split compare equal in this
    form (a resumed run's config against its checkpoint's, a digest against a summary's).
    """
    data = tree.get("data")
    if not isinstance(data, dict):
        return tree
    return {**tree, "data": {**LEGACY_DATA_DEFAULTS, **data}}


def without_legacy_defaults(raw: dict[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """`raw` minus the keys outside `fields` that hold their `LEGACY_DATA_DEFAULTS` value."""
    keep = set(fields)

    def legacy(key: str, value: Any) -> bool:
        plain = json.loads(json.dumps(value, default=str))
        return key in LEGACY_DATA_DEFAULTS and plain == LEGACY_DATA_DEFAULTS[key]

    return {k: v for k, v in raw.items() if k in keep or not legacy(k, v)}


def data_params(raw: Any) -> DataParams:
    """A `data` section validated by the `Params` of the dataset it names."""
    if isinstance(raw, DataParams):
        return raw
    if not isinstance(raw, dict):
        raise ValueError("data: expected a section of settings")
    name = raw.get("dataset", DataParams.model_fields["dataset"].default)
    if not isinstance(name, str) or name not in DATASETS:
        known = ", ".join(sorted(DATASETS))
        raise ValueError(f"data.dataset: must be one of: {known} (got {name!r})")
    params: type[DataParams] = DATASETS[name].Params
    fields = params.model_fields
    try:
        return params.model_validate(without_legacy_defaults(raw, fields))
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            own = ", ".join(k for k in fields if k != "dataset")
            raise ValueError(
                f"data.{key}: not a setting of dataset '{name}' (its settings: {own})"
            ) from None
        if first["type"] == "missing":
            raise ValueError(f"data.{key}: required for dataset '{name}'") from None
        raise ValueError(format_validation_error(err, prefix="data.")) from None


class PartitionConfig(_Strict):
    """How training images are split across clients."""

    kind: Literal["iid", "dirichlet", "pathological", "natural", "quantity"] = "dirichlet"
    num_clients: int = Field(10, ge=1, le=1_000_000)
    alpha: float = Field(0.1, gt=0.0, le=1e6, description="dirichlet and quantity concentration")
    min_images: int = Field(2, ge=1, description="dirichlet/quantity: images per client at least")
    classes_per_client: int = Field(2, ge=1, description="pathological: classes per client")


class FeatureConfig(_Strict):
    """The frozen backbone and its cache."""

    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    weights: str | None = Field(
        "package:efficientnet-lite0",
        description="a local file, 'package:efficientnet-lite0', or null for the hub",
    )
    layers: list[int] | None = Field(
        None, description="CNN feature stages to concatenate (default: strides 8 and 16)"
    )
    input_size: int = Field(224, ge=32, le=2048)
    eval_input_size: int | None = Field(
        None, ge=32, le=2048, description="evaluation images' side (paper: 320; default input_size)"
    )
    five_crop: bool = Field(
        False, description="training images become five half-size crops (the paper's protocol)"
    )
    batch_size: int = Field(16, ge=1, le=4096)
    mode: Literal["cache", "online"] = Field(
        "cache",
        description="training features extracted once into the cache, or by every actor's "
        "own backbone each round for the clients it trains (datasets too big to cache)",
    )
    cache_dir: Path = Path(".fuss_cache")
    label_size: int = Field(112, ge=8, le=2048, description="evaluation mask side")
    dtype: Literal["float32", "float16"] = Field(
        "float32",
        description="how the cache stores features: float16 halves its disk, page cache and "
        "object-store size; clients compute in float32 either way",
    )


class ModelConfig(_Strict):
    """The trainable segmentation head and centroids."""

    code_dim: int = Field(70, ge=2, le=4096)
    num_centroids: int | None = Field(None, ge=2, le=1024, description="default: num_classes")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    centroid_order: Literal["shared", "per_client"] = Field(
        "shared",
        description="per_client: every client keeps its centroids in an order of its own "
        "(a seeded permutation per client, as if each had initialised its model alone), so "
        "centroid k of one client need not be centroid k of another: the permutation "
        "ambiguity that index-wise averaging cannot see and matching can undo",
    )


class PairTerms(_Strict):
    """One number per correspondence pair kind."""

    self_: float = Field(alias="self")
    knn: float
    rand: float

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)


class LossConfig(_Strict):
    """STEGO correspondence distillation and the cluster loss."""

    weights: PairTerms = PairTerms.model_validate({"self": 0.67, "knn": 0.25, "rand": 0.63})
    shifts: PairTerms = PairTerms.model_validate({"self": 0.08, "knn": 0.02, "rand": 0.66})
    feature_samples: int = Field(11, ge=1, le=64)
    knn_k: int = Field(2, ge=1, le=64)
    rand_permutations: int = Field(5, ge=1, le=64)
    cluster_weight: float = Field(1.0, ge=0.0)


class TrainConfig(_Strict):
    """Local optimisation, re-created every round as in the paper."""

    rounds: int = Field(10, ge=1, le=100_000)
    local_steps: int = Field(20, ge=1, le=1_000_000)
    batch_size: int = Field(8, ge=1, le=4096)
    lr_head: float = Field(5e-4, gt=0.0, le=10.0)
    lr_centroids: float = Field(5e-3, gt=0.0, le=10.0)


class FedBuffConfig(_Strict):
    """Asynchronous federation (`federation.mode: async`): FedBuff on the virtual clock."""

    concurrency: int = Field(10, ge=1, le=1_000_000, description="clients training at once")
    buffer_size: int = Field(5, ge=1, le=1_000_000, description="arrivals per server update")
    staleness: Literal["constant", "polynomial", "hinge"] = Field(
        "polynomial",
        description="how an update s server updates old is weighted: 1, (1 + s)^-exponent, "
        "or 1 up to hinge_b and 1 / (hinge_a (s - hinge_b) + 1) after",
    )
    exponent: float = Field(0.5, ge=0.0, le=10.0)
    hinge_a: float = Field(10.0, gt=0.0)
    hinge_b: int = Field(4, ge=0)


class ServerConfig(_Strict):
    """Where the round loop runs with the Ray executor (federation.executor: ray)."""

    actor: bool = Field(
        True,
        description="run the rounds in a server actor on the cluster (the driver only "
        "starts it, shows progress and collects the result); false: in the driver",
    )
    num_cpus: float = Field(1.0, ge=0.0, le=1024.0, description="the server actor's CPUs")
    num_gpus: float = Field(0.0, ge=0.0, le=64.0, description="the server actor's GPUs")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray resources the server actor needs (they pick its node)",
    )
    node: str | None = Field(
        None,
        description="the node the server actor runs on: a Ray node id, or an IP address "
        "that names one node (default: the head node, unless `resources` picks one)",
    )

    @field_validator("resources")
    @classmethod
    def _custom_resources(cls, v: dict[str, float]) -> dict[str, float]:
        return check_custom_resources(v)


def check_custom_resources(v: dict[str, float]) -> dict[str, float]:
    """Custom Ray resources only: CPUs and GPUs have fields of their own."""
    for name, amount in v.items():
        if name in ("CPU", "GPU", "memory", "object_store_memory"):
            raise ValueError(f"'{name}' is set by num_cpus/num_gpus, not resources")
        if not amount > 0:
            raise ValueError(f"resource '{name}' must be positive (got {amount!r})")
    return v


class FederationConfig(_Strict):
    """The strategy, client sampling and how clients map onto executors."""

    mode: Literal["sync", "async"] = Field(
        "sync",
        description="sync: rounds that wait for their sampled clients; async: FedBuff "
        "(federation.fedbuff), a server update every buffer_size arrivals",
    )
    fedbuff: FedBuffConfig = FedBuffConfig()

    strategy: dict[str, Any] = Field(default_factory=lambda: {"name": "fuss-maximin"})
    fraction: float = Field(1.0, gt=0.0, le=1.0, description="share of clients sampled per round")
    min_clients: int = Field(1, ge=1)
    server_lr: float = Field(1.0, gt=0.0, le=10.0, description="server step on the head")
    server_momentum: float = Field(0.0, ge=0.0, lt=1.0, description="FedAvgM momentum")
    head_aggregation: Literal["mean", "median", "trimmed_mean"] = "mean"
    trim_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="trimmed_mean: per end")
    max_update_norm: float | None = Field(
        None, gt=0.0, description="reject updates farther than this (L2) from the global state"
    )
    executor: Literal["ray", "sequential"] = "ray"
    on_actor_failure: Literal["retry", "drop"] = Field(
        "retry",
        description="a dead actor's clients are trained again once it restarts, or the round "
        "completes with the survivors (if min_clients of them are left)",
    )
    max_actor_restarts: int = Field(3, ge=0, le=1000, description="per actor, over the run")
    round_retries: int = Field(2, ge=0, le=100, description="retry: attempts per round")
    round_timeout_s: float | None = Field(
        None,
        gt=0.0,
        description="an actor that has not answered this long into a round counts as failed "
        "(a node gone silent, an actor that cannot be placed again)",
    )
    memory_limit_gb: float | None = Field(
        None, gt=0.0, description="refuse runs estimated above this (default: what is free)"
    )
    clients_per_actor: int = Field(1, ge=1, le=100_000)
    client_batch: int = Field(
        1,
        ge=1,
        le=4096,
        description="clients of a host trained as one stacked computation (batched "
        "products; for GPUs). 1: one at a time. Any value above 1 gives the same bits; "
        "they differ from 1's by float rounding",
    )
    num_cpus: float = Field(1.0, ge=0.0, le=1024.0, description="per actor")
    num_gpus: float = Field(0.0, ge=0.0, le=64.0, description="per actor")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="where clients train: auto = the GPU when the process sees one (Ray "
        "shows an actor its GPU only when num_gpus > 0), else the CPU",
    )
    gpu_memory_fraction: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="hard cap on each actor's share of GPU memory (default: num_gpus when "
        "below 1), so actors sharing a GPU cannot run each other out of memory",
    )
    ray_address: str | None = Field(
        None, description="an existing cluster (default: $RAY_ADDRESS, else a local Ray)"
    )
    placement: Literal["pack", "spread"] = Field(
        "pack", description="actors on as few nodes as possible, or across as many"
    )
    resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources each actor needs"
    )
    feature_transport: Literal["auto", "path", "object_store"] = Field(
        "auto",
        description="how actors reach the training features: the cache path (shared "
        "storage), or the Ray object store (auto: when the cluster has several nodes and "
        "the cache is at most 1 GiB)",
    )
    server: ServerConfig = ServerConfig()

    @field_validator("resources")
    @classmethod
    def _custom_resources(cls, v: dict[str, float]) -> dict[str, float]:
        return check_custom_resources(v)

    @field_validator("strategy", mode="before")
    @classmethod
    def _strategy_name(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"name": v}
        return v

    @field_validator("strategy")
    @classmethod
    def _strategy_known(cls, v: dict[str, Any]) -> dict[str, Any]:
        return strategy_params(v)


def strategy_params(raw: dict[str, Any]) -> dict[str, Any]:
    """A strategy section checked against that strategy's own settings (its `Params`).

    Strategies are found through the registry (`fuss_ray.plugins`), so this works for a
    plugin's strategy as for a built-in one, in any process where the plugin is installed.
    """
    name = raw.get("name")
    if not isinstance(name, str) or name not in STRATEGIES:
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(f"strategy.name must be one of: {known} (got {name!r})")
    try:
        params: dict[str, Any] = STRATEGIES[name].Params.model_validate(raw).model_dump()
    except ValidationError as err:
        first = err.errors()[0]
        if first["type"] == "extra_forbidden":
            key = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"strategy '{name}' has no setting '{key}'") from None
        raise ValueError(format_validation_error(err, prefix="strategy.")) from None
    return params


class TrackingConfig(_Strict):
    """MLflow logging; `tracking: off` in YAML turns it off."""

    enabled: bool = True
    uri: str | None = Field(
        None, description="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here"
    )
    experiment: str | None = Field(None, description="default: the config's name")
    overlays: int = Field(4, ge=0, le=64, description="evaluation images drawn as PNG")
    timeout_s: float = Field(10.0, gt=0.0, le=600.0, description="per HTTP request")


class EvaluationConfig(_Strict):
    """Where runs are scored, and optional test-time extras (reported with and without)."""

    score_test: bool = Field(
        True,
        description="score on the test split; off in search trials, which see the "
        "validation split only (the test masks are then never read)",
    )
    flip_tta: bool = Field(False, description="average the codes of the image and its mirror")
    crf: bool = Field(False, description="dense CRF refinement (needs the pydensecrf2 package)")
    crf_iterations: int = Field(10, ge=1, le=100)


class SystemsConfig(_Strict):
    """Device speed, bandwidth and availability on a virtual clock (off by default)."""

    enabled: bool = False
    step_seconds: float = Field(0.1, gt=0.0, description="simulated s per local step, speed 1")
    speed_sigma: float = Field(0.0, ge=0.0, le=5.0, description="lognormal spread of speeds")
    speed_trace: Path | None = Field(None, description="JSON {client_id: speed}")
    download_mbps: float = Field(50.0, gt=0.0, description="median download rate")
    upload_mbps: float = Field(10.0, gt=0.0, description="median upload rate")
    bandwidth_sigma: float = Field(0.0, ge=0.0, le=5.0, description="lognormal spread")
    availability: float = Field(1.0, gt=0.0, le=1.0, description="P(online at round start)")
    availability_trace: Path | None = Field(
        None, description="JSON {client_id: [[on_s, off_s], ...]} on the simulated clock"
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="P(leaves mid-round)")
    deadline_s: float | None = Field(None, gt=0.0, description="simulated round deadline")
    over_commit: float = Field(
        1.0, ge=1.0, le=10.0, description="sample this many times the target, keep the first"
    )


class CheckpointConfig(_Strict):
    """Crash safety: the whole simulation state, written under OUT/checkpoints."""

    every: int = Field(1, ge=0, le=100_000, description="rounds between checkpoints; 0: never")
    keep: int = Field(2, ge=1, le=1000, description="newest checkpoints kept on disk")


# Fields that decide where and how fast clients run, never what they compute (the Ray and
# sequential executors are bit-identical), so a run may resume under different values.
PLACEMENT_FIELDS = {
    "federation": (
        "executor",
        "clients_per_actor",
        "num_cpus",
        "num_gpus",
        "gpu_memory_fraction",
        "ray_address",
        "placement",
        "resources",
        "feature_transport",
        "max_actor_restarts",
        "memory_limit_gb",
        "server",
    ),
    # Where the features are cached, not what they are: the cache key names the content.
    "features": ("cache_dir",),
}


class RunConfig(_Strict):
    """A whole simulation."""

    name: str = "fuss-run"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    data: SerializeAsAny[DataParams] = Field(default_factory=lambda: data_params({}))
    partition: PartitionConfig = PartitionConfig()
    features: FeatureConfig = FeatureConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    federation: FederationConfig = FederationConfig()
    tracking: TrackingConfig = TrackingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    systems: SystemsConfig = SystemsConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    @field_validator("data", mode="before")
    @classmethod
    def _data_params(cls, v: Any) -> DataParams:
        return data_params(v)

    @field_validator("tracking", mode="before")
    @classmethod
    def _tracking_switch(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return {"enabled": v}
        if isinstance(v, str) and v.lower() in ("off", "on", "false", "true"):
            return {"enabled": v.lower() in ("on", "true")}
        return v

    @property
    def num_centroids(self) -> int:
        return self.model.num_centroids or self.data.num_classes

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def digest(self) -> str:
        """A hash of the resolved config, so that outputs can be tied to it.

        Taken in the earlier layout of the `data` section (`earlier_layout`), so that the
        digests that finished runs wrote before still name their configs: a study or a
        search resumed across that change does not train its finished runs again.
        """
        blob = json.dumps(earlier_layout(self.to_dict()), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def outcome_dict(self) -> dict[str, Any]:
        """The config minus placement fields: what a resumed run must agree on."""
        tree = self.to_dict()
        for section, keys in PLACEMENT_FIELDS.items():
            for key in keys:
                tree[section].pop(key, None)
        return tree


DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def resolve_path(path: Path, base: Path) -> Path:
    """`~` expanded, and a relative path made absolute against `base` (`..` folded)."""
    path = path.expanduser()
    return path if path.is_absolute() else Path(os.path.abspath(base / path))


def absolute_uri(uri: str, base: Path) -> str:
    """A `sqlite:///` or `file:` URI whose path is relative, made absolute against `base`.

    Other URIs (http, postgresql, databricks) name no local path and are returned as given.
    """
    if uri.startswith("sqlite:///"):
        rest = uri.removeprefix("sqlite:///")
        if rest and not rest.startswith(("/", ":memory:")):
            return f"sqlite:///{resolve_path(Path(rest), base)}"
    elif uri.startswith("file:") and not uri.startswith("file://"):
        return f"file://{resolve_path(Path(uri.removeprefix('file:')), base)}"
    return uri


def resolve_paths(config: RunConfig, base: Path | None = None) -> RunConfig:
    """The config with every path in it absolute, resolved against one base.

    The base is the directory the command was run from. Resolving once, in the process the
    user started, is what lets Ray Tune trials (which run in their own folders), actors
    and resumed runs see the same files: they only ever get the resolved config. The
    tracking store is filled in too when the config leaves it to the environment or the
    default, since a trial's working directory is not the user's.
    """
    base = (base or Path.cwd()).resolve()
    data, feats, systems, tracking = config.data, config.features, config.systems, config.tracking
    weights = feats.weights
    if weights is not None and not weights.startswith("package:"):
        weights = str(resolve_path(Path(weights), base))
    uri = tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    traces = {
        name: resolve_path(value, base)
        for name in ("speed_trace", "availability_trace")
        if (value := getattr(systems, name)) is not None
    }
    return config.model_copy(
        update={
            "data": data.resolved(base),
            "features": feats.model_copy(
                update={"cache_dir": resolve_path(feats.cache_dir, base), "weights": weights}
            ),
            "systems": systems.model_copy(update=traces),
            "tracking": tracking.model_copy(
                update={"uri": absolute_uri(uri, base) if tracking.enabled else tracking.uri}
            ),
        }
    )


def first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    """The dotted key of the first value that differs between two config trees."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    if a != b:
        return f"{prefix.rstrip('.')}: {a!r} vs {b!r}"
    return None


def format_validation_error(err: ValidationError, source: str = "", prefix: str = "") -> str:
    """A pydantic error as the one line users see: where, which key, what is wrong.

    `source` names the file (or section) the values came from; `prefix` is the dotted
    path of the validated part inside it (`strategy.` for a strategy's settings), so that
    the key shown is the one the user writes. The one formatter of validation errors:
    configs, search and study files, strategy settings.
    """
    first = err.errors()[0]
    loc = prefix + ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-after"))
    msg = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    head = f"{source}: " if source else ""
    if first["type"] == "extra_forbidden":
        return f"{head}unknown key '{loc}'"
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    if loc and msg.startswith(f"{loc}."):  # the message names its own, deeper key
        return f"{head}{msg}"
    return f"{head}{loc.rstrip('.') or 'config'}: {msg}{shown}"


def parse_value(text: str) -> Any:
    """Read a --set value as YAML, so that numbers, lists and null keep their types."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.c=value` override in place; it may create missing levels."""
    if "=" not in assignment:
        raise UserError(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.rounds=5")
    key, _, raw = assignment.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise UserError(f"--set {assignment!r}: empty key")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = {}
            node[part] = child
        if isinstance(child, str) and part == "strategy":
            child = {"name": child}
            node[part] = child
        if part == "tracking" and (isinstance(child, bool) or child in ("on", "off")):
            child = {"enabled": child in (True, "on")}  # `tracking: off`, then a setting
            node[part] = child
        if not isinstance(child, dict):
            raise UserError(f"--set {key}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = parse_value(raw)


def load_config(
    path: Path | None, overrides: list[str] | None = None, base: Path | None = None
) -> RunConfig:
    """Read a YAML config (or none, for the defaults), apply overrides, validate.

    Relative paths in it are resolved against `base` (default: the working directory),
    see `resolve_paths`.
    """
    tree: dict[str, Any] = {}
    source = "config"
    if path is not None:
        source = str(path)
        if not path.is_file():
            raise UserError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise UserError(f"{path}: not valid YAML{where}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UserError(f"{path}: the top level must be a mapping of sections")
        tree = loaded or {}
    for item in overrides or []:
        apply_override(tree, item)
    return resolve_paths(validate_config(tree, source), base)


def validate_config(tree: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a plain dict, raising a one-line UserError that names the key."""
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        raise UserError(format_validation_error(err, source)) from None
