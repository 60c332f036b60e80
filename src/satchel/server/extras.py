"""Blob chunks, time series and event sequences over HTTP."""

from __future__ import annotations

from fastapi import FastAPI

from .service import Service


def routes(app: FastAPI, service: Service) -> None:
    """Register the blob, series and events endpoints."""
