"""Settings of the SensorThings HTTP uplink (``[uplinks.sensorthings_http]``).

Kept apart from the uplink itself so that reading a config file does not import httpx.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

REGISTRY_FILE_NAME = "sensorthings-ids.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StaAuthSettings(_Strict):
    """Credentials come from a file or an environment variable, never from the TOML itself."""

    type: Literal["none", "bearer", "basic", "oauth2"] = Field(
        default="none",
        description="'bearer' (token, re-read from token_file when it changes), 'basic' "
        "(username + password), 'oauth2' (client credentials, refreshed before expiry) "
        "or 'none'.",
    )
    token_file: Path | None = Field(default=None, description="bearer: file holding the token.")
    token_env: str | None = Field(
        default=None, description="bearer: environment variable holding the token."
    )
    username: str | None = Field(default=None, description="basic: user name.")
    password_file: Path | None = Field(
        default=None, description="basic: file holding the password."
    )
    password_env: str | None = Field(
        default=None, description="basic: environment variable holding the password."
    )
    token_url: str | None = Field(
        default=None, description="oauth2: the token endpoint (client credentials grant)."
    )
    client_id: str | None = Field(default=None, description="oauth2: client id.")
    client_secret_file: Path | None = Field(
        default=None, description="oauth2: file holding the client secret."
    )
    client_secret_env: str | None = Field(
        default=None, description="oauth2: environment variable holding the client secret."
    )
    scope: str | None = Field(default=None, description="oauth2: scope to ask for (optional).")

    @model_validator(mode="after")
    def _complete(self) -> StaAuthSettings:
        token = [k for k in ("token_file", "token_env") if getattr(self, k) is not None]
        password = [k for k in ("password_file", "password_env") if getattr(self, k) is not None]
        secret = [k for k in ("client_secret_file", "client_secret_env")
                  if getattr(self, k) is not None]
        oauth = secret or self.token_url or self.client_id or self.scope
        if self.type == "oauth2":
            if not self.token_url or not self.client_id or len(secret) != 1:
                raise ValueError(
                    "type = 'oauth2' needs token_url, client_id and exactly one of "
                    "client_secret_file or client_secret_env"
                )
            if token or password or self.username:
                raise ValueError("type = 'oauth2' takes no token_*/username/password_*")
            return self
        if oauth:
            raise ValueError("token_url/client_id/client_secret_*/scope need type = 'oauth2'")
        if self.type == "bearer":
            if len(token) != 1 or password or self.username:
                raise ValueError(
                    "type = 'bearer' needs exactly one of token_file or token_env "
                    "(and no username/password_*)"
                )
        elif self.type == "basic":
            if not self.username or len(password) != 1 or token:
                raise ValueError(
                    "type = 'basic' needs username and exactly one of "
                    "password_file or password_env (and no token_*)"
                )
        elif token or password or self.username:
            raise ValueError("type = 'none' takes no credentials; set type = 'bearer' or 'basic'")
        return self


class StaTlsSettings(_Strict):
    ca_file: Path | None = Field(
        default=None, description="PEM CA bundle to trust instead of the system store."
    )
    cert_file: Path | None = Field(default=None, description="PEM client certificate (mutual TLS).")
    key_file: Path | None = Field(default=None, description="PEM private key of cert_file.")
    verify: bool = Field(
        default=True, description="Verify the server certificate (false: lab use only)."
    )

    @model_validator(mode="after")
    def _key_with_cert(self) -> StaTlsSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self


class SensorThingsHttpSettings(_Strict):
    """``[uplinks.sensorthings_http]``: upload to an OGC SensorThings API v1.1 server."""

    base_url: str = Field(
        description="Service root including the version, e.g. "
        "'https://sta.example.org/FROST-Server/v1.1'."
    )
    auth: StaAuthSettings = Field(default_factory=lambda: StaAuthSettings())
    tls: StaTlsSettings | None = None
    connect_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="TCP/TLS connect timeout in seconds."
    )
    timeout_s: float = Field(
        default=30.0, gt=0, le=600, description="Read/write timeout per request in seconds."
    )
    batch_size: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Most observations per CreateObservations request.",
    )
    phenomenon_interval: Literal["interval", "end_instant", "auto"] = Field(
        default="auto",
        description="How to send interval phenomenonTime: 'interval' (start/end), 'end_instant' "
        "(end only, interval kept in parameters), 'auto' (interval; degrade when refused).",
    )
    create_observations: bool = Field(
        default=True,
        description="Use the dataArray CreateObservations request (false: one POST each).",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra HTTP headers on every request, e.g. istSOS4 with authorization on "
        "needs {commit-message = \"duet-edge\"}. Not for credentials (use auth).",
    )
    registry_file: Path | None = Field(
        default=None, description=f"Entity id cache; default <data_dir>/{REGISTRY_FILE_NAME}."
    )

    @field_validator("headers")
    @classmethod
    def _no_credentials_in_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.lower() in ("authorization", "proxy-authorization", "cookie"):
                raise ValueError(f"header {name!r} carries a credential: use [auth] instead "
                                 f"(its secret comes from a file or the environment)")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                "must be an http:// or https:// URL of the service root, "
                "e.g. 'https://sta.example.org/FROST-Server/v1.1'"
            )
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return value.rstrip("/")


# ---------------------------------------------------------------------------------------
# Errors
