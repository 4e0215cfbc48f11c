"""``instructmix studio``: write, preview and lint templates in the browser, on real sample rows.

``create_app`` builds the Starlette app over a catalog (built-in plus the given folders);
``serve`` runs it on 127.0.0.1 with uvicorn. Importing this package starts nothing.
"""

from __future__ import annotations

from .server import create_app, serve

__all__ = ["create_app", "serve"]
