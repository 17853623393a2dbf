"""duet-edge gateway runtime: source → decode → calibrate → quality → outbox → uplink."""

__version__ = "0.1.0"
