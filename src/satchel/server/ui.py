"""The /ui admin page."""

from __future__ import annotations

from fastapi import FastAPI


def routes(app: FastAPI) -> None:
    """Register /ui."""
