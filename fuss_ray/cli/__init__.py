"""The `fuss-ray` command line."""
