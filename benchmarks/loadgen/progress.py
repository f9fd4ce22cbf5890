"""A rich progress bar on stderr while a run goes, redrawn by a trio task four times a second
(rich's own refresh thread is off, so the bar costs the shared cores next to nothing)."""

from __future__ import annotations

import trio
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from loadgen.users import RunState

__all__ = ["show_progress"]


async def show_progress(run: RunState, label: str, every_s: float = 0.25) -> None:
    """Draw ``run``'s progress until cancelled (start it beside the users)."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[counts]}"),
        console=Console(stderr=True),
        auto_refresh=False,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=run.duration_s, counts="")
        while True:
            counts = (
                f"conn {run.connected}/{run.users}  sent {run.sent}  in flight {run.in_flight}  "
                f"tokens {run.tokens}  errors {sum(run.errors.values())}"
            )
            elapsed = max(0.0, trio.current_time() - run.t0) if run.t0 else 0.0
            progress.update(task, completed=min(elapsed, run.duration_s), counts=counts)
            progress.refresh()
            await trio.sleep(every_s)
