"""PostgreSQL for the contract suite: every test gets its own schema, dropped after.

The server comes from SATCHEL_TEST_POSTGRES_URL (default: the local one, user postgres,
trust auth). Start a stopped local server with
``pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import psycopg

BASE_URL = os.environ.get(
    "SATCHEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
_reachable: bool | None = None


def _check() -> None:
    global _reachable
    if _reachable is None:
        try:
            psycopg.connect(BASE_URL, connect_timeout=3).close()
            _reachable = True
        except psycopg.Error as exc:
            _reachable = False
            reason = str(exc).strip().splitlines()[0]
            print(f"PostgreSQL unreachable at {BASE_URL}: {reason}")
    if not _reachable:
        from conftest import require_service

        require_service(
            "PostgreSQL",
            f"cannot connect to {BASE_URL}; start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`",
        )


def fresh_url(tmp_path: Path) -> str:
    """URL of an empty satchel store in a schema of its own."""
    _check()
    sep = "&" if "?" in BASE_URL else "?"
    return f"{BASE_URL}{sep}schema=satchel_test_{uuid.uuid4().hex[:16]}&pool_max=4"


def drop(url: str) -> None:
    """Drop the schema `fresh_url` named."""
    schema = dict(parse_qsl(urlsplit(url).query))["schema"]
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
