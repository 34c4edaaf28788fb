"""``molfusion worker``: run recommendation jobs from the Redis queue (arq) in this process."""

from __future__ import annotations

import typer

from app.settings import get_settings


def register(cli: typer.Typer) -> None:
    @cli.command("worker")
    def worker_cmd(
        burst: bool = typer.Option(False, help="Exit once the queue is empty (for scripts and tests)."),
    ) -> None:
        """Run queued recommendation jobs (needs MOLFUSION_REDIS_URL); one job at a time per process."""
        from arq.worker import Worker

        from app.jobs import worker_settings

        try:
            config = worker_settings(get_settings())
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        Worker(**config, burst=burst).run()
