"""Operations commands of the scaled mode: ``clampdown deploy``, ``worker`` and ``inputs-key``.

Registered on the main CLI by ``register(app)``. Prefect is imported inside the
commands only, so ``clampdown lint`` and friends stay fast.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from clampdown.app.cli_errors import user_errors
from clampdown.core.diagnostics import ClampdownError


def shipped_prefect_file() -> Path:
    """The ``prefect.yaml`` that ships inside ``clampdown_flows`` (the checkout's top-level
    ``prefect.yaml`` in a development install), found without importing Prefect."""
    spec = importlib.util.find_spec("clampdown_flows")
    assert spec is not None and spec.submodule_search_locations, "clampdown_flows not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "prefect.yaml"


PoolOpt = Annotated[
    str | None,
    typer.Option("--pool", help="work pool (default: $CLAMPDOWN_WORK_POOL, else clampdown)"),
]


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ClampdownError(
            "PREFECT_API_URL is not set: the scaled mode needs a Prefect server",
            "start one (`prefect server start` on PostgreSQL, docs/operations.md) and set "
            "PREFECT_API_URL=http://<host>:4200/api",
        )
    return str(url)


def ensure_work_pool(name: str) -> bool:
    """Create the ``process`` work pool ``name`` unless it exists; True when created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            pass
        else:
            if pool.type != "process":
                raise ClampdownError(
                    f"work pool '{name}' exists with type '{pool.type}', not 'process'",
                    "pick another pool with --pool / CLAMPDOWN_WORK_POOL, or delete that pool",
                )
            return False
        try:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
        except ObjectAlreadyExists:  # another machine created it in between
            return False
    return True


def deploy_from_file(prefect_file: Path, pool: str) -> None:
    """``prefect deploy --all`` of ``prefect_file``: the one way ``respond`` gets deployed."""
    if not prefect_file.is_file():
        raise ClampdownError(
            f"no Prefect deployment file at {prefect_file}",
            "pass --prefect-file path/to/prefect.yaml",
        )
    ensure_work_pool(pool)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "--no-prompt",
            "deploy",
            "--all",
            "--prefect-file",
            str(prefect_file),
        ],
        cwd=prefect_file.parent,
        env={**os.environ, "PREFECT_API_URL": _api_url()},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-8:])
        raise ClampdownError(f"prefect deploy failed:\n{tail}", f"check {prefect_file}")


def register(app: typer.Typer) -> None:
    """Add ``deploy``, ``worker`` and ``inputs-key`` to the ``clampdown`` command."""

    @app.command()
    @user_errors()
    def deploy(
        prefect_file: Annotated[
            Path | None,
            typer.Option(
                "--prefect-file", help="Prefect deployment file (default: the shipped one)"
            ),
        ] = None,
        pool: PoolOpt = None,
    ) -> None:
        """Create the work pool if needed and deploy `respond` from prefect.yaml."""
        from clampdown.app.deployment import deployment_settings

        conf = deployment_settings()  # read once for the command
        name = pool or conf.work_pool
        _api_url()
        deploy_from_file(prefect_file or shipped_prefect_file(), name)
        typer.echo(f"deployed {conf.deployment} on work pool '{name}'")

    @app.command()
    @user_errors()
    def worker(
        pool: PoolOpt = None,
        name: Annotated[str | None, typer.Option(help="worker name shown in Prefect")] = None,
        limit: Annotated[int, typer.Option(min=1, help="runs executed at the same time")] = 8,
        poll: Annotated[
            float, typer.Option(min=0.1, max=60, help="seconds between polls of the pool")
        ] = 0.5,
    ) -> None:
        """Execute runs from the work pool inside this process (no process spawned per run)."""
        import asyncio

        from clampdown.app.deployment import deployment_settings, run_worker
        from clampdown.core.extensions import ledger_signer
        from clampdown.core.settings import settings

        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
        _api_url()
        ledger_signer(settings())  # a key its runs could not sign with: said now, not per run
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_worker(pool or deployment_settings().work_pool, name, limit, poll))

    @app.command("inputs-key")
    def inputs_key() -> None:
        """Print a new key for CLAMPDOWN_INPUTS_KEY (seals secret inputs in deployment mode)."""
        from cryptography.fernet import Fernet

        typer.echo(Fernet.generate_key().decode())
