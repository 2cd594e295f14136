"""Warnings go through `logging` (logger `fuss_ray.*`); the command line shows them as
one line each on stderr, `fuss-ray: warning: ...`, the same form as its errors.

A program that embeds fuss-ray configures logging as it likes; `fuss-ray` itself calls
`setup_cli_logging()`.
"""

from __future__ import annotations

import logging
import sys


class _StderrLine(logging.Handler):
    """One line per record on whatever sys.stderr is at the time (so capture works)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"fuss-ray: {record.levelname.lower()}: {record.getMessage()}\n")
        except Exception:  # pragma: no cover  (logging must never raise)
            self.handleError(record)


def setup_cli_logging(level: int = logging.WARNING) -> None:
    """Send fuss-ray's warnings to stderr as one line each; idempotent."""
    logger = logging.getLogger("fuss_ray")
    if not any(isinstance(h, _StderrLine) for h in logger.handlers):
        logger.addHandler(_StderrLine())
    logger.setLevel(level)
    logger.propagate = False  # one line, not one more from a root handler
