"""Placeholder until the Redis engine lands: its tests report the engine as missing."""

from __future__ import annotations

from pathlib import Path


def fresh_url(tmp_path: Path) -> str:
    from conftest import require_service

    require_service("Redis", "the redis engine is being written")


fresh_cluster_url = fresh_url


def drop(url: str) -> None:
    pass


def stop_cluster() -> None:
    pass
