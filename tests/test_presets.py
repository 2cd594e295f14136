"""Every config under configs/ validates; the paper presets plan runs on fake official trees."""

from pathlib import Path

import pytest

from fuss_ray.cli.main import main
from fuss_ray.config import load_config
from tests.data.fake_trees import make_cityscapes, make_cocostuff, make_potsdam

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# preset -> (dataset, clients, local steps per round, backbone)
PAPER = {
    "cityscapes_3c": ("cityscapes", 3, 2500, "dino_vitb8"),
    "cityscapes_6c": ("cityscapes", 6, 1500, "dino_vitb8"),
    "cityscapes_18c": ("cityscapes", 18, 2500, "dino_vitb8"),
    "cocostuff_18c": ("cocostuff", 18, 1000, "dino_vits8"),
    "potsdam_3c": ("potsdam", 3, 2500, "dino_vits8"),
}
MAKERS = {"cityscapes": make_cityscapes, "cocostuff": make_cocostuff, "potsdam": make_potsdam}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_validates(path: Path) -> None:
    load_config(path)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_presets_hold_the_papers_settings(name: str) -> None:
    dataset, clients, steps, backbone = PAPER[name]
    c = load_config(CONFIGS / f"{name}.yaml")
    assert (c.data.dataset, c.partition.num_clients, c.train.local_steps) == (
        dataset,
        clients,
        steps,
    )
    assert (c.features.backbone, c.features.input_size, c.features.eval_input_size) == (
        backbone,
        224,
        320,
    )
    assert c.features.five_crop and c.features.label_size == 320
    assert (c.train.rounds, c.train.batch_size, c.train.lr_head, c.train.lr_centroids) == (
        10,
        8,
        5e-4,
        5e-3,
    )
    assert (c.model.code_dim, c.loss.knn_k) == (70, 2)
    assert c.data.num_classes == (3 if dataset == "potsdam" else 27)
    if dataset == "cityscapes":
        assert c.partition.kind == "natural"
        assert (c.loss.weights.knn, c.loss.shifts.self_) == (0.5775, 0.4583)  # ViT-B/8 row


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trees")
    weights = root / "dino.pth"
    weights.write_bytes(b"only its existence is checked by a dry run")
    out = {name: maker(root / name) for name, maker in MAKERS.items() if name != "cocostuff"}
    out["cocostuff"] = make_cocostuff(root / "cocostuff", per_split=12)  # enough for 18
    out["weights"] = weights
    return out


@pytest.mark.parametrize("name", sorted(PAPER))
def test_dry_run_on_a_fake_tree_prints_the_plan(
    name: str, trees: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset, clients, steps, _ = PAPER[name]
    sets = [
        f"data.root={trees[dataset]}",
        f"features.weights={trees['weights']}",
        f"features.cache_dir={tmp_path}",
        "partition.min_images=1",
        "partition.alpha=100",  # every fake mask has the same dominant class
    ]
    argv = ["run", str(CONFIGS / f"{name}.yaml"), "--dry-run"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{clients} clients; images per client" in out
    assert f"{steps} local steps of batch 8" in out
    assert "five half-size crops" in out and "feature cache:" in out
    per_actor = load_config(CONFIGS / f"{name}.yaml").federation.clients_per_actor
    hosts = -(-clients // per_actor)
    assert f"runs on: Ray: {hosts} client actor(s) of up to " in out
    assert "; the rounds in a server actor (1 CPU, the head node)" in out
    assert not any(tmp_path.iterdir())  # nothing extracted, nothing written
    if dataset == "cityscapes":  # 18 cities x (2 images - 1 for validation) x 5 crops
        per_client = 90 // clients
        assert f"images per client: {', '.join([str(per_client)] * clients)}" in out


@pytest.mark.parametrize("name", sorted(PAPER))
def test_dry_run_without_the_tree_names_the_missing_path(
    name: str, tmp_path: Path, trees: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    argv = ["run", str(CONFIGS / f"{name}.yaml"), "--dry-run", "--set", f"data.root={missing}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(missing) in err and "Traceback" not in err


def test_dry_run_on_a_malformed_tree_names_the_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_cityscapes(tmp_path / "c", cities=("aachen", "bochum", "bremen"), per_city=1)
    gone = root / "gtFine/val/frankfurt/frankfurt_000000_000000_gtFine_labelIds.png"
    gone.unlink()
    argv = ["run", str(CONFIGS / "cityscapes_3c.yaml"), "--dry-run", "--set", f"data.root={root}"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(gone) in err


def test_dry_run_with_a_missing_weights_file_names_it(
    trees: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", str(CONFIGS / "potsdam_3c.yaml"), "--dry-run"]
    argv += ["--set", f"data.root={trees['potsdam']}", "--set", "partition.min_images=1"]
    argv += ["--set", f"features.weights={tmp_path / 'absent.pth'}"]
    assert main(argv) == 2
    assert "features.weights: " in capsys.readouterr().err
