"""The aiohttp application: pages, JSON API, /metrics, /healthz and token-protected actions."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from importlib import resources
from typing import Any

from aiohttp import web

from edge.web import i18n, metrics, system
from edge.web.home import HomePage
from edge.web.settings import WebSettings
from edge.web.state import LiveState
from edge.web.view import GatewayView

log = logging.getLogger("duet.web")

_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"
_BODY_HEADERS = ("content-type", "content-length")
_LANG_COOKIE_S = 365 * 24 * 3600


def _asset(name: str) -> str:
    return resources.files("edge.web").joinpath("static", name).read_text(encoding="utf-8")


class StatusServer:
    """One web server bound to one gateway. ``await start()`` … ``await close()``."""

    def __init__(
        self,
        gateway: Any,
        settings: WebSettings | None = None,
        *,
        tasks: list[asyncio.Task[None]] | None = None,
    ) -> None:
        self.gateway = gateway
        self.settings = settings or WebSettings()
        self.tasks = tasks
        self.live = LiveState(
            bucket_s=self.settings.history_bucket_s,
            history_s=self.settings.history_s,
            max_streams=self.settings.max_streams,
        )
        gateway.listeners.append(self.live)
        self.view = GatewayView(gateway, self.settings, self.live)
        self.registry = metrics.make_registry(self.view)
        self.home_page = HomePage(self.settings)
        self.token = self.settings.read_token()
        self.secrets = system.secret_values(gateway.config, [self.token])
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.app = self._build_app()

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        host = self.settings.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        shown = f"[{shown}]" if ":" in shown else shown
        return f"http://{shown}:{self.port}/"

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.settings.port
        log.info("status page listening", extra={"event": "web_started", "url": self.url})
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.view.buffer.close()
        with contextlib.suppress(ValueError):
            self.gateway.listeners.remove(self.live)

    async def serve_forever(self) -> None:
        """Serve until cancelled; a port that cannot be bound is logged, ingest goes on."""
        try:
            await self.start()
        except OSError as exc:
            log.error(
                "status page could not start",
                extra={"event": "web_failed", "reason": str(exc), "port": self.settings.port},
            )
            await self.close()
            return
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    # ------------------------------------------------------------------ app
    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._home)
        app.router.add_get("/home/main", self._home_main)
        app.router.add_get("/tech", self._tech)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/home", self._api_home)
        app.router.add_get("/api/status", self._status)
        app.router.add_get("/api/latest", self._latest)
        app.router.add_get("/api/history", self._history)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_post("/api/actions/restart/{source}", self._restart)
        app.router.add_post("/api/actions/upload", self._upload)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Security headers on every response, and no configured secret ever in a body."""
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # answer errors as plain responses, same headers
            kept = {k: v for k, v in exc.headers.items() if k.lower() not in _BODY_HEADERS}
            response = web.Response(status=exc.status, text=exc.text, headers=kept)
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Cache-Control", "no-store")
        if isinstance(response, web.Response) and response.body and self.secrets:
            body = bytes(response.body)  # type: ignore[arg-type]
            for secret in self.secrets:
                body = body.replace(secret.encode(), b"[redacted]")
            response.body = body
        return response

    def _json(self, doc: Any, status: int = 200) -> web.Response:
        return web.Response(
            text=json.dumps(doc, separators=(",", ":"), default=str),
            status=status,
            content_type="application/json",
        )

    @staticmethod
    def _language(request: web.Request) -> str:
        """``?lang=`` (the switch), else the remembered choice, else the browser's languages."""
        chosen = request.query.get("lang") or request.cookies.get(i18n.COOKIE)
        return i18n.pick_language(request.headers.get("Accept-Language"), chosen)

    @staticmethod
    def _html(request: web.Request, html: str, lang: str) -> web.Response:
        response = web.Response(text=html, content_type="text/html")
        response.headers["Content-Language"] = lang
        response.headers["Vary"] = "Accept-Language, Cookie"
        if request.query.get("lang") in i18n.LANGUAGES:
            response.set_cookie(i18n.COOKIE, lang, max_age=_LANG_COOKIE_S, samesite="Lax",
                                httponly=True)
        return response

    async def _home(self, request: web.Request) -> web.Response:
        lang = self._language(request)
        html = self.home_page.render(await self.view.home_model(), lang)
        return self._html(request, html, lang)

    async def _home_main(self, request: web.Request) -> web.Response:
        lang = self._language(request)
        html = self.home_page.render(await self.view.home_model(), lang, fragment=True)
        return self._html(request, html, lang)

    async def _api_home(self, _request: web.Request) -> web.Response:
        return self._json((await self.view.home_model()).as_dict())

    async def _tech(self, request: web.Request) -> web.Response:
        lang = self._language(request)
        strings = {key: i18n.TEXTS[lang][key] for key in i18n.TECH_KEYS}
        config = {"refresh_s": self.settings.refresh_s, "lang": lang, "actions": self.token is not None}
        actions = _asset("tech_actions.html") if self.token is not None else ""
        html = (
            _asset("tech.html")
            .replace("{{actions}}", actions)
            .replace("{{lang}}", lang)
            .replace("{{tech_title}}", i18n.TEXTS[lang]["tech_title"])
            .replace("{{strings}}", json.dumps(strings).replace("<", "\\u003c"))
            .replace("{{config}}", json.dumps(config))
        )
        return self._html(request, html, lang)

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        types = {"app.js": "application/javascript", "style.css": "text/css"}
        if name not in types:
            raise web.HTTPNotFound()
        response = web.Response(text=_asset(name), content_type=types[name])
        response.headers["Cache-Control"] = "max-age=300"
        return response

    async def _status(self, _request: web.Request) -> web.Response:
        return self._json(await self.view.status())

    async def _latest(self, _request: web.Request) -> web.Response:
        return self._json(self.view.latest())

    async def _history(self, _request: web.Request) -> web.Response:
        return self._json(self.view.history())

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = await metrics.render(self.view, self.registry)
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})

    async def _healthz(self, _request: web.Request) -> web.Response:
        ok, doc = await self.view.health()
        return self._json(doc, status=200 if ok else 503)

    # ------------------------------------------------------------------ actions
    def _authorise(self, request: web.Request) -> None:
        if self.token is None:
            raise web.HTTPForbidden(text="actions are disabled: no web.token_file configured")
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            raise web.HTTPUnauthorized(
                text="wrong or missing token", headers={"WWW-Authenticate": "Bearer"}
            )

    async def _restart(self, request: web.Request) -> web.Response:
        self._authorise(request)
        name = request.match_info["source"]
        if name not in self.gateway.source_health:
            raise web.HTTPNotFound(text="no such source")
        await self.restart_source(name)
        log.warning(
            "source restarted from the status page", extra={"event": "web_restart", "source": name}
        )
        return self._json({"restarted": name})

    async def _upload(self, request: web.Request) -> web.Response:
        self._authorise(request)
        committed = self.gateway.outbox.commit()
        self.gateway.new_data.set()
        log.info("upload triggered from the status page", extra={"event": "web_upload"})
        return self._json(
            {"committed": committed, "uplinks_woken": list(self.gateway.uplink_health)}
        )

    async def restart_source(self, name: str) -> None:
        """Stop a source's task and start it again under the runtime's supervisor."""
        try:
            await self.gateway.restart_source(name)
        except KeyError:
            raise web.HTTPNotFound(text="no such source") from None
