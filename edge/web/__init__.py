"""The local status page, JSON API, Prometheus metrics and /healthz of a gateway.

This module stays light (no aiohttp import) so the runtime can import :func:`start` whether
or not the ``web`` extra is installed; the server itself lives in :mod:`edge.web.server`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any


def start(gateway: Any, tasks: list[asyncio.Task[None]] | None = None) -> asyncio.Task[None]:
    """Serve ``gateway.config.web`` as one more task of the gateway (cancel it to stop).

    ``tasks`` is the runtime's list of source tasks: a source restarted from the technician
    page replaces its entry there, so the runtime's shutdown still cancels it. Call this
    before the sources start, so the page sees their very first observations.
    """
    try:
        from edge.web.server import StatusServer
    except ImportError as exc:  # the `web` extra is not installed: run without the page
        logging.getLogger("duet.web").error(
            "status page configured but not available (pip install 'duet-edge[web]')",
            extra={"event": "web_unavailable", "reason": str(exc)},
        )
        return asyncio.create_task(asyncio.sleep(0), name="web")
    server = StatusServer(gateway, gateway.config.web, tasks=tasks)
    return asyncio.create_task(server.serve_forever(), name="web")
