"""The local status page, JSON API, Prometheus metrics and /healthz of a gateway.

The runtime starts it as a service of the ``[web]`` capability (:mod:`edge.web.capability`);
the server itself lives in :mod:`edge.web.server` (needs the ``web`` extra).
"""
