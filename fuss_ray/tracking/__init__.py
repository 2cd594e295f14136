"""Experiment tracking: every run lands in MLflow, or is kept locally if it cannot."""

from fuss_ray.tracking.mlflow_tracker import MlflowTracker, NullTracker, Tracker, make_tracker

__all__ = ["MlflowTracker", "NullTracker", "Tracker", "make_tracker"]
