"""The fault campaign, kept in the repository: ``python -m hil.chaos``.

Starts the real processes — Mosquitto on a free port, ``duet-edge ingest`` as shipped,
``duet-edge run`` reading emulated sensors on ptys at a high rate — and, bounded in count and
time, kills them with ``kill -9``, stops the broker, fills the gateway's disk, damages its
database and WAL between runs, feeds the receiver poison, and fuzzes the decoders and the
contract. For every scenario it prints what the gateway **committed** (read from its own
journal while it ran, :mod:`hil.chaos.tap`), what the twin **stored**, what was **lost**
(committed, not stored, never announced as a gap) and what was **duplicated**, and exits
non-zero if one observation was lost or duplicated (docs/reliability.md).
"""
