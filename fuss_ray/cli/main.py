"""`fuss-ray run | partition | extract | tune | compare | sync`: user errors become one line and
exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from fuss_ray.errors import SimulationError, UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fuss-ray", description="Federated USS simulator on Ray")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser, optional: bool = False) -> None:
        if optional:
            sp.add_argument(
                "config",
                type=Path,
                nargs="?",
                help="YAML config (see configs/); with --resume, default: the run's own",
            )
        else:
            sp.add_argument("config", type=Path, help="YAML config (see configs/)")
        sp.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a field, e.g. train.rounds=3",
        )
        sp.add_argument("--quiet", action="store_true", help="no progress bars")

    run = sub.add_parser("run", help="run a simulation and write summary.json")
    common(run, optional=True)
    run.add_argument("--out", type=Path, default=None, help="output folder (default runs/NAME)")
    run.add_argument(
        "--address",
        default=None,
        help="an existing Ray cluster (default: $RAY_ADDRESS, else a local Ray)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config against the data on disk and print the plan; train nothing",
    )
    run.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="DIR",
        help="continue a killed run from the newest checkpoint in its output folder DIR",
    )
    part = sub.add_parser("partition", help="split the data and write the manifest")
    common(part)
    part.add_argument("--out", type=Path, default=None, help="output folder (default runs/NAME)")
    ext = sub.add_parser("extract", help="extract and cache the frozen features")
    common(ext)
    tune = sub.add_parser(
        "tune",
        help="hyperparameter search (Optuna on Ray Tune)",
        description="--set search.KEY=VALUE changes the search file's own settings (e.g. "
        "search.num_samples=4); any other --set KEY=VALUE changes the base run config (e.g. "
        "train.rounds=3). Relative paths are resolved against the current directory.",
    )
    common(tune)
    tune.add_argument("--resume", action="store_true", help="continue an interrupted search")
    tune.add_argument(
        "--verbose",
        action="store_true",
        help="show Ray Tune's progress tables and every failed trial's traceback",
    )
    tune.add_argument("--address", default=None, help="Ray cluster address (or RAY_ADDRESS)")
    study = sub.add_parser(
        "study",
        help="paired, multi-seed comparison of strategies (Ray Tune runs them)",
        description="--set study.KEY=VALUE changes the study file's own settings (e.g. "
        "study.seeds=[0,1]); any other --set KEY=VALUE changes the base run config. "
        "Writes DIR/study.json, DIR/report.md and its figures.",
    )
    study.add_argument("config", type=Path, help="study file (see configs/studies/)")
    study.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    study.add_argument("--out", type=Path, default=None, help="default: runs/studies/NAME")
    study.add_argument("--resume", action="store_true", help="continue a killed study")
    study.add_argument("--address", default=None, help="Ray cluster address (or RAY_ADDRESS)")
    study.add_argument(
        "--verbose", action="store_true", help="show Ray Tune's output and tracebacks"
    )
    study.add_argument("--quiet", action="store_true", help="no progress bars")
    sync = sub.add_parser(
        "sync",
        help="send what a run kept under OUT/mlflow_unsent/ to MLflow, once it is back",
    )
    sync.add_argument("out", type=Path, help="the run's output folder")
    sync.add_argument(
        "--tracking-uri", default=None, help="default: the store the run was logging to"
    )
    cmp = sub.add_parser("compare", help="strategies x settings from an MLflow experiment")
    cmp.add_argument("--experiment", required=True, help="MLflow experiment name")
    cmp.add_argument(
        "--tracking-uri",
        default=None,
        help="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db",
    )
    cmp.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="comparison PNG (default runs/compare-EXPERIMENT.png)",
    )
    return p


def _compare(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from fuss_ray.config import absolute_uri
    from fuss_ray.tracking.compare import collect, comparison_plot, table_rows
    from fuss_ray.tracking.mlflow_tracker import DEFAULT_URI

    uri = absolute_uri(
        args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI, Path.cwd()
    )
    rows = table_rows(collect(uri, args.experiment))
    table = Table(title=f"final mIoU, experiment '{args.experiment}'")
    for col in ("strategy", "partition", "alpha", "mIoU (mean ± std)", "runs"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["strategy"],
            r["partition"],
            r["alpha"],
            f"{r['mean']:.1f} ± {r['std']:.1f}",
            str(r["runs"]),
        )
    Console().print(table)
    plot = args.plot or Path("runs") / f"compare-{args.experiment}.png"
    comparison_plot(rows, plot, f"experiment '{args.experiment}'")
    print(f"plot: {plot}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from fuss_ray.api import tune

    summary = tune(
        args.config,
        args.overrides,
        resume=args.resume,
        address=args.address,
        verbose=args.verbose,
    )
    print(json.dumps(summary))
    return 0


def _study(args: argparse.Namespace) -> int:
    from fuss_ray.api import study

    result = study(
        args.config,
        args.overrides,
        args.out,
        resume=args.resume,
        address=args.address,
        verbose=args.verbose,
    )
    print(
        json.dumps(
            {
                "name": result.study["name"],
                "runs": len(result.study["runs"]),
                "failed": len(result.study["failed"]),
                "study": str(result.out / "study.json"),
                "report": str(result.report),
            }
        )
    )
    return 0


def _sync(args: argparse.Namespace) -> int:
    from fuss_ray.config import absolute_uri
    from fuss_ray.tracking.sync import sync_unsent

    uri = absolute_uri(args.tracking_uri, Path.cwd()) if args.tracking_uri else None
    print(sync_unsent(args.out, uri).line())
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.command == "compare":
        return _compare(args)
    if args.command == "sync":
        return _sync(args)
    if args.command == "study":
        return _study(args)
    if args.command == "tune":
        return _tune(args)
    if args.command == "run" and args.resume is not None:
        return _resume(args)
    from fuss_ray.config import load_config, resolve_path

    if args.config is None:
        raise UserError("a config file is required (or --resume DIR)")
    config = load_config(args.config, _with_address(args))
    out = resolve_path(getattr(args, "out", None) or Path("runs") / config.name, Path.cwd())
    if out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} exists and is not a folder")
    show = not args.quiet
    if args.command == "run" and args.dry_run:
        from fuss_ray.simulation import dry_run_plan

        for line in dry_run_plan(config):
            print(line)
        return 0
    if args.command == "extract":
        from fuss_ray.data.splits import build_datasets
        from fuss_ray.features.cache import ensure_features
        from fuss_ray.simulation import eval_extras

        splits = build_datasets(config)
        named = (("train", splits.train), ("val", splits.val), ("eval", splits.eval))
        for split, ds in ((name, d) for name, d in named if d is not None):
            extras = eval_extras(config) if split == "eval" else {}
            store = ensure_features(config.features, ds, split, show, **extras)
            how = "cached already" if store.reused else "extracted now"
            print(
                f"{split}: {len(store)} images, features {store.meta['feature_shape']} "
                f"at {store.path} ({how})"
            )
        return 0
    if args.command == "partition":
        from fuss_ray.data.partition import write_manifest
        from fuss_ray.simulation import prepare_partition

        partition, hist, ids, _ = prepare_partition(config)
        write_manifest(out / "partition.parquet", partition, ids, hist)
        sizes = partition.sizes()
        print(
            f"{partition.num_clients} clients, images per client: min {min(sizes)}, "
            f"max {max(sizes)}; manifest at {out / 'partition.parquet'}"
        )
        return 0
    from fuss_ray.api import run

    result = run(config, out, progress=show)  # the command is a thin layer over the API
    _print_result(result.summary, result.out)
    return 0


def _with_address(args: argparse.Namespace) -> list[str]:
    """--set overrides, plus --address as federation.ray_address."""
    address = getattr(args, "address", None)
    extra = [f"federation.ray_address={address}"] if address else []
    return [*args.overrides, *extra]


def _resume(args: argparse.Namespace) -> int:
    from fuss_ray.config import (
        apply_override,
        load_config,
        resolve_path,
        resolve_paths,
        validate_config,
    )
    from fuss_ray.federation.checkpoint import latest_checkpoint
    from fuss_ray.simulation import run_simulation

    out = resolve_path(args.resume, Path.cwd())
    if args.out is not None and resolve_path(args.out, Path.cwd()) != out:
        raise UserError("--out and --resume name different folders; give only --resume DIR")
    if not out.is_dir():
        raise UserError(f"--resume {args.resume}: no such run folder")
    if args.config is not None:
        config = load_config(args.config, _with_address(args))
    else:
        ckpt = latest_checkpoint(out / "checkpoints")
        if ckpt is None:
            raise UserError(f"--resume {args.resume}: no checkpoint there to resume from")
        tree = ckpt.meta["config"]
        for item in _with_address(args):
            apply_override(tree, item)
        config = resolve_paths(validate_config(tree, f"{ckpt.path / 'meta.json'}"))
    summary = run_simulation(config, out, show_progress=not args.quiet, resume=True)
    _print_result(summary, out)
    return 0


def _print_result(summary: dict[str, Any], out: Path) -> None:
    ref = summary["reference"]["random_assignment"]
    print(
        json.dumps(
            {
                "strategy": summary["strategy"],
                "final": {k: summary["final"][k] for k in ("miou", "pixel_acc")},
                "random_assignment_miou": ref["miou"],
                "summary": str(out / "summary.json"),
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `fuss-ray` console script."""
    from fuss_ray.log import setup_cli_logging

    setup_cli_logging()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    warnings.filterwarnings("ignore", category=UserWarning, module="timm")
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except UserError as err:
        print(f"fuss-ray: error: {err}", file=sys.stderr)
        return 2
    except SimulationError as err:
        print(f"fuss-ray: failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fuss-ray: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
