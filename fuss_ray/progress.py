"""One progress-bar helper so that every long step looks the same and can be silenced."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def progress_bar(label: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yield `advance(n=1, **fields)`; with `enabled=False` it does nothing."""
    if not enabled:
        yield lambda n=1, **fields: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(label, total=total, status="")

        def advance(n: int = 1, **fields: object) -> None:
            status = " ".join(f"{k}={v}" for k, v in fields.items())
            bar.update(task, advance=n, status=status)

        yield advance
