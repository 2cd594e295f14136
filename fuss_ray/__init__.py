"""fuss-ray: a simulator for federated unsupervised semantic segmentation (FUSS) on Ray."""

__version__ = "0.1.0"
