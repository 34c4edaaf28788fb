"""``molfusion worker``: run recommendation jobs from the Redis queue (arq) in this process."""

from __future__ import annotations

import logging
import signal
import time

import typer

from app.settings import get_settings

log = logging.getLogger(__name__)

RETRY_MAX_S = 30.0


def register(cli: typer.Typer) -> None:
    @cli.command("worker")
    def worker_cmd(
        burst: bool = typer.Option(False, help="Exit once the queue is empty (for scripts and tests)."),
    ) -> None:
        """Run queued recommendation jobs (needs MOLFUSION_REDIS_URL); one job at a time per process.

        When Redis goes away (at start or later) the worker logs it and reconnects, waiting 1, 2, 4 ...
        up to 30 s between tries; with --burst it exits with status 1 instead."""
        from arq.worker import Worker
        from redis.exceptions import RedisError

        from app.jobs import worker_settings

        try:
            config = worker_settings(get_settings())
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        delay = 1.0
        while True:
            worker = Worker(**config, burst=burst)
            started = time.monotonic()
            try:
                worker.run()  # returns after SIGTERM/SIGINT (or an empty queue with --burst)
                return
            except (RedisError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if burst:
                    typer.echo(f"error: the job queue's Redis is unavailable: {error}", err=True)
                    raise typer.Exit(1) from None
                for sig in (signal.SIGINT, signal.SIGTERM):  # arq's handlers only act inside its loop
                    worker.loop.remove_signal_handler(sig)
                if time.monotonic() - started > 60:
                    delay = 1.0  # it ran a while: a new outage starts with a short wait
                log.warning("worker lost its Redis; reconnecting", extra={"error": error, "retry_s": delay})
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
