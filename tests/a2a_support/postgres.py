"""A real PostgreSQL server for the tests, and a fresh database per test.

``$A2A_TEST_POSTGRES_DSN`` (a server DSN whose user may create databases) is used when set;
otherwise one throwaway cluster per test session is made with Debian's binaries
(``/usr/lib/postgresql/<version>/bin``) in a temp dir, listening on a free loopback port, and
removed at exit. PostgreSQL refuses to run as root, so as root it runs as user ``postgres``.
Missing binaries FAIL the tests that need them, with how to install them (never a skip: CI must
run these).

:func:`node_process` runs a node (``node_main.py``) on such a database, in its own process.
"""

from __future__ import annotations

import atexit
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from support_processes import free_port, listening_port, start_python

NODE_MAIN = Path(__file__).parent / "node_main.py"
FAST_LEASES = {"heartbeat_s": 0.3, "lease_s": 3.0}

_server_dsn: str | None = None


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        on_path = shutil.which("initdb")
        if on_path is None:
            pytest.fail(
                "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb). Install"
                " them: `apt-get install -y --no-install-recommends postgresql` (scripts/setup.sh"
                " does), or set A2A_TEST_POSTGRES_DSN to a server DSN."
            )
        return Path(on_path).parent
    return Path(found[-1]).parent


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _start_cluster() -> str:
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="a2a-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
    made = subprocess.run(
        _as_server_user([*initdb, "-E", "UTF8"]), check=False, capture_output=True, text=True
    )
    if made.returncode != 0:
        pytest.fail(f"initdb failed: {made.stdout}{made.stderr}")
    port = free_port()
    options = (
        f"-p {port} -c listen_addresses=127.0.0.1 -k {sockets} -c fsync=off"
        " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    started = subprocess.run(
        _as_server_user(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(root / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        ),
        check=False,
        capture_output=True,
        text=True,
    )
    if started.returncode != 0:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        pytest.fail(f"PostgreSQL did not start: {started.stdout}{started.stderr}\n{log}")

    def stop() -> None:
        subprocess.run(
            _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(stop)
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def server_dsn() -> str:
    """The test server's DSN (started on first use, once per process)."""
    global _server_dsn
    if _server_dsn is None:
        _server_dsn = os.environ.get("A2A_TEST_POSTGRES_DSN") or _start_cluster()
    return _server_dsn


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """``async with fresh_database() as dsn``: a new, empty database, dropped afterwards."""
    server = server_dsn()
    name = "a2a_test_" + uuid.uuid4().hex[:16]
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _with_database(server, name)
    finally:
        admin = await asyncpg.connect(server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    """A DSN to a new, empty database (dropped after the test)."""
    async with fresh_database() as dsn:
        yield dsn


@contextmanager
def node_process(
    dsn: str, node_id: str, **options: Any
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``with node_process(dsn, "a") as (proc, base_url)``: a node on ``dsn`` with short leases;
    ``options`` go to ``node_main.py`` (``agent="gate"``, ``push={...}``, store settings)."""
    argv = json.dumps({"node_id": node_id, **FAST_LEASES, **options})
    proc = start_python(str(NODE_MAIN), dsn, argv, capture_stderr=False)
    try:
        yield proc, f"http://127.0.0.1:{listening_port(proc, f'node {node_id}')}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
