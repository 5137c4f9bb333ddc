"""HTTP service over marginface.infer: FastAPI routes, API-key guard, upload limits and a static web page."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    """`create_app` imported on first use, so auth/limits load without the model stack."""
    if name == "create_app":
        from marginface.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'marginface.serve' has no attribute {name!r}")
