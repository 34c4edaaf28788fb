"""``molfusion serve``: the REST API under uvicorn."""

from __future__ import annotations

import os

import typer

from app.settings import get_settings


def register(cli: typer.Typer) -> None:
    @cli.command("serve")
    def serve_cmd(
        host: str | None = typer.Option(None, help="Bind address (default: MOLFUSION_HOST)."),
        port: int | None = typer.Option(None, min=1, max=65535, help="Port (default: MOLFUSION_PORT)."),
        workers: int | None = typer.Option(None, min=1, help="Processes (default: MOLFUSION_WORKERS)."),
        access_log: bool = typer.Option(False, help="Log every request (uvicorn access log)."),
    ) -> None:
        """Serve /v1/embed, /v1/predict, /v1/properties, /v1/info, health probes and /metrics.

        Each worker process loads the encoders and heads itself: with one worker in the background
        (/v1/health/ready turns 200 when done), with several before it accepts connections.
        """
        import uvicorn

        s = get_settings()
        n_workers = workers or s.workers
        os.environ["MOLFUSION_WORKERS"] = str(n_workers)  # the worker processes read it (app start-up)
        uvicorn.run(
            "app.api.main:create_app",
            factory=True,
            host=host or s.host,
            port=port or s.port,
            workers=n_workers,
            log_config=None,  # keep the JSON logging configured by the CLI
            access_log=access_log,
            loop="auto",
            http="auto",
            timeout_graceful_shutdown=s.shutdown_grace_s,
        )
