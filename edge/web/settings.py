"""Settings of the local status page (``[web]`` in the gateway's TOML file)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class WebSettings(BaseModel):
    """The status page, health and metrics endpoints; read-only unless a token is configured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Address to bind; a LAN address to share it.")
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

    def read_token(self) -> str | None:
        """The action token, or None when none is configured or the file is empty."""
        if self.token_file is None:
            return None
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return token or None
