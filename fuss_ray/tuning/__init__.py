"""Hyperparameter search: Optuna (TPE) inside Ray Tune, with ASHA and MLflow parent runs."""

from fuss_ray.tuning.search import SearchSpec, load_search, run_search

__all__ = ["SearchSpec", "load_search", "run_search"]
