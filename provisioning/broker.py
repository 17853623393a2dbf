"""Render the shipped Mosquitto configuration (``provisioning/mosquitto/``) for one broker."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from provisioning.identity import RECEIVER_PREFIX
from provisioning.secrets import write_public

TOPIC_PREFIX = "duet/v1"
RECEIVER_TOPICS = (
    f"{TOPIC_PREFIX}/+/obs",
    f"{TOPIC_PREFIX}/+/status",
    f"{TOPIC_PREFIX}/+/events/#",
)


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """Paths the rendered configuration refers to (all must exist when Mosquitto starts)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    crl_file: Path


def template_text(name: str) -> str:
    return resources.files("provisioning.mosquitto").joinpath(name).read_text(encoding="utf-8")


def render_acl(receivers: tuple[str, ...]) -> str:
    blocks = []
    for name in receivers:
        if not name.startswith(RECEIVER_PREFIX):
            raise ValueError(f"receiver {name!r} must start with {RECEIVER_PREFIX!r}")
        lines = [f"user {name}"] + [f"topic read {t}" for t in RECEIVER_TOPICS]
        lines.append(f"topic write {TOPIC_PREFIX}/+/ack")
        lines.append(f"topic write {TOPIC_PREFIX}/+/config/#")
        blocks.append("\n".join(lines))
    return Template(template_text("duet-acl.conf")).substitute(
        receiver_blocks="\n\n".join(blocks) or "# (no receivers configured)"
    )


def render_broker_config(
    dest: Path,
    files: BrokerFiles,
    *,
    port: int = 8883,
    bind_address: str = "0.0.0.0",
    receivers: tuple[str, ...] = ("receiver-twin",),
    run_as_user: str | None = "mosquitto",
    persistence_dir: Path | None = None,
) -> Path:
    """Write ``mosquitto.conf`` and ``acl.conf`` into ``dest``; return the config path.

    ``run_as_user``: the user Mosquitto drops to when started as root (it must be able to
    read the key file). ``None`` means the current user. ``persistence_dir``: where the
    broker keeps its on-disk state (default ``/var/lib/mosquitto``, Debian's; must be
    writable by ``run_as_user``).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    acl = write_public(dest / "acl.conf", render_acl(receivers).encode())
    user = run_as_user or getpass.getuser()
    conf = Template(template_text("duet-broker.conf")).substitute(
        user_line=f"user {user}",
        port=port,
        bind_address=bind_address,
        ca_file=files.ca_file,
        cert_file=files.cert_file,
        key_file=files.key_file,
        crl_file=files.crl_file,
        acl_file=acl,
        log_file=dest / "mosquitto.log",
        persistence_dir=str(persistence_dir or Path("/var/lib/mosquitto")).rstrip("/"),
    )
    return write_public(dest / "mosquitto.conf", conf.encode())
