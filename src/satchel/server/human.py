"""Endpoints for people and the /ui page: keys by pattern, decoded values, usage."""

from __future__ import annotations

from fastapi import FastAPI

from .service import Service


def routes(app: FastAPI, service: Service) -> None:
    """Register the endpoints that decode values with the typed codec."""
