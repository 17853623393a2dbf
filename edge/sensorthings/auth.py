"""Credentials for SensorThings servers that expire: bearer tokens and OAuth2.

- :class:`BearerFileAuth` re-reads the token file when it changes (a sidecar or cron job
  renews it) and once more after a 401, so a rotated token is picked up without a restart.
- :class:`ClientCredentialsAuth` (OAuth2 client credentials, RFC 6749 §4.4) fetches an access
  token from the token endpoint, refreshes it before it expires (at 90 % of its lifetime, at
  least 30 s early, at most half its lifetime early) and once after a 401. The client authenticates with HTTP Basic
  (``client_secret_basic``); a token endpoint that refuses that gets the credentials in the
  form body instead (``client_secret_post``), remembered for later refreshes.

Secrets are read from files or environment variables, never logged.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator, Callable, Generator
from pathlib import Path

import httpx

REFRESH_FRACTION = 0.9
REFRESH_EARLY_MIN_S = 30.0
DEFAULT_LIFETIME_S = 300.0


class AuthConfigError(Exception):
    """A credential is unusable (missing file, refused client secret): the text says which."""


class AuthUnavailable(Exception):
    """The token endpoint cannot be reached now: retry later."""


class BearerFileAuth(httpx.Auth):
    """``Authorization: Bearer <token>``, the token read from a file whenever it changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._token = ""

    def check(self) -> None:
        """Read the token now (raises AuthConfigError when it cannot be read)."""
        self._current()

    def _current(self, force: bool = False) -> str:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if force or stamp != self._stamp:
                token = self.path.read_text(encoding="utf-8").strip()
                if not token:
                    raise AuthConfigError(f"token file {self.path} is empty")
                self._token, self._stamp = token, stamp
        except OSError as exc:
            raise AuthConfigError(f"cannot read token file {self.path}: {exc.strerror}") from None
        return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._current()}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self._current(force=True)}"
            yield request


class ClientCredentialsAuth(httpx.Auth):
    """OAuth2 client-credentials bearer tokens, refreshed before they expire."""

    def __init__(self, token_url: str, client_id: str, secret: Callable[[], str],
                 scope: str | None, client_factory: Callable[[], httpx.AsyncClient]) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = secret
        self.scope = scope
        self._client_factory = client_factory
        self._token = ""
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self._in_body = False
        self.fetches = 0

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("ClientCredentialsAuth works with httpx.AsyncClient only")
        yield request  # pragma: no cover - makes this a generator, as httpx expects

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"Bearer {await self.token()}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {await self.token(force=True)}"
            yield request

    async def token(self, force: bool = False) -> str:
        async with self._lock:
            if force or not self._token or time.monotonic() >= self._refresh_at:
                await self._fetch()
            return self._token

    async def _fetch(self) -> None:
        data = {"grant_type": "client_credentials"}
        if self.scope:
            data["scope"] = self.scope
        async with self._client_factory() as http:
            response = await self._post(http, data)
            if response.status_code in (400, 401) and not self._in_body:
                self._in_body = True  # some endpoints want client_secret_post
                response = await self._post(http, data)
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise AuthUnavailable(f"token endpoint {self.token_url}: HTTP "
                                  f"{response.status_code}")
        if response.status_code != 200:
            raise AuthConfigError(f"token endpoint {self.token_url} refused client "
                                  f"{self.client_id!r}: HTTP {response.status_code}")
        try:
            body = response.json()
            token = str(body["access_token"])
            lifetime = float(body.get("expires_in", DEFAULT_LIFETIME_S))
        except (ValueError, KeyError, TypeError):
            raise AuthConfigError(f"token endpoint {self.token_url} answered without an "
                                  f"access_token") from None
        early = min(max(REFRESH_EARLY_MIN_S, (1 - REFRESH_FRACTION) * lifetime), lifetime / 2)
        self._token = token
        self._refresh_at = time.monotonic() + max(0.0, lifetime - early)
        self.fetches += 1

    async def _post(self, http: httpx.AsyncClient, data: dict[str, str]) -> httpx.Response:
        try:
            if self._in_body:
                return await http.post(self.token_url, data={
                    **data, "client_id": self.client_id, "client_secret": self._secret()})
            return await http.post(self.token_url, data=data,
                                   auth=httpx.BasicAuth(self.client_id, self._secret()))
        except httpx.TransportError as exc:
            raise AuthUnavailable(f"token endpoint {self.token_url}: {type(exc).__name__}"
                                  ) from None


def env_or_file_secret(file: Path | None, env: str | None, what: str) -> Callable[[], str]:
    """A function reading a secret now (so a rotated file is picked up at the next refresh)."""

    def read() -> str:
        if file is not None:
            try:
                value = file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise AuthConfigError(f"cannot read {what} file {file}: {exc.strerror}"
                                      ) from None
            source = f"file {file}"
        else:
            assert env is not None
            value = os.environ.get(env, "").strip()
            source = f"environment variable {env}"
        if not value:
            raise AuthConfigError(f"{what} from {source} is empty")
        return value

    return read
