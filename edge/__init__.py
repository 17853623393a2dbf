"""duet-edge gateway runtime: source → decode → calibrate → quality → outbox → uplink."""

from importlib import metadata


def version() -> str:
    """The installed version of duet-edge ("unknown" when run from an uninstalled tree)."""
    try:
        return metadata.version("duet-edge")
    except metadata.PackageNotFoundError:
        return "unknown"
