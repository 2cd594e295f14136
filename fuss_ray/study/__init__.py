"""`fuss-ray study`: paired, multi-seed comparisons of strategies, with intervals and tests."""
