"""Settings of the local status page (``[web]`` in the gateway's TOML file)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class WebSettings(BaseModel):
    """The status page, health and metrics endpoints; read-only unless a token is configured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(
        "127.0.0.1",
        description="Address to bind: 127.0.0.1 this machine only, 0.0.0.0 the home network too.",
    )
    port: int = Field(8080, ge=0, lt=65536, description="TCP port (0: pick a free one).")
    token_file: Path | None = Field(
        None,
        description="File holding the action token (restart a source, upload now). "
        "Without it every action is refused.",
    )
    healthz_missed_intervals: float = Field(
        10, gt=0, description="/healthz fails when no source produced data for this many intervals."
    )
    healthz_grace_s: float = Field(
        60, ge=0, description="After start, /healthz does not judge sources for this long."
    )
    history_bucket_s: int = Field(
        60, ge=1, le=3600, description="Resolution of the 24 h charts (one mean per bucket)."
    )
    history_s: int = Field(24 * 3600, ge=60, le=7 * 24 * 3600, description="Chart time span.")
    max_streams: int = Field(256, ge=1, le=10_000, description="Datastreams kept in memory.")
    refresh_s: float = Field(1.0, gt=0, le=600, description="How often the pages poll.")
    contact_name: str = Field(
        "", max_length=80, description="Whom the host contacts when a sensor stops (on the page)."
    )
    contact_email: str = Field(
        "", max_length=120, pattern=r"^([^@\s]+@[^@\s]+\.[^@\s]+)?$", description="Their e-mail."
    )
    contact_phone: str = Field(
        "", max_length=32, pattern=r"^([+0-9][0-9 ()./-]{2,31})?$", description="Their phone number."
    )
    contact_url: str = Field(
        "", max_length=200, pattern=r"^(https?://\S+)?$", description="A web page with help or a form."
    )

    @property
    def has_contact(self) -> bool:
        return any((self.contact_name, self.contact_email, self.contact_phone, self.contact_url))

    def read_token(self) -> str | None:
        """The action token, or None when none is configured or the file is empty."""
        if self.token_file is None:
            return None
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return token or None
