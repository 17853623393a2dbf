"""Fleet records for the city: what was provisioned, exported as CSV or JSON.

The source of truth is the CA's index (every certificate issued, its state) joined with the
gateway records that ``provision init`` / ``register`` leave in an inventory directory
(``<gateway id>.json``: site, coordinates, config path, twin ids). No key material is ever
part of a record.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provisioning.ca import CertificateAuthority
from provisioning.secrets import write_public

FIELDS = (
    "gateway_id", "role", "state", "serial", "not_before", "not_after", "fingerprint_sha256",
    "revoked_at", "reason", "name", "latitude", "longitude", "provisioned_at", "twin",
)


def write_record(directory: Path, gateway_id: str, **fields: Any) -> Path:
    """Merge ``fields`` into ``<directory>/<gateway_id>.json`` (created if missing)."""
    path = Path(directory) / f"{gateway_id}.json"
    record: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    record.setdefault("gateway_id", gateway_id)
    record.setdefault("provisioned_at", datetime.now(UTC).isoformat(timespec="seconds"))
    record.update({k: v for k, v in fields.items() if v is not None})
    write_public(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    return path


def collect(ca_dir: Path | None = None, records_dir: Path | None = None) -> list[dict[str, Any]]:
    """One row per certificate (latest first per gateway), plus records without certificate."""
    records: dict[str, dict[str, Any]] = {}
    if records_dir is not None and Path(records_dir).is_dir():
        for path in sorted(Path(records_dir).glob("*.json")):
            data = json.loads(path.read_text())
            records[str(data.get("gateway_id", path.stem))] = data
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    if ca_dir is not None:
        for cert in CertificateAuthority.read_issued(Path(ca_dir)):
            if cert.role == "server":
                continue
            row: dict[str, Any] = dict(records.get(cert.common_name, {}))
            row.update(
                gateway_id=cert.common_name, role=cert.role, state=cert.state(),
                serial=cert.serial, not_before=cert.not_before, not_after=cert.not_after,
                fingerprint_sha256=cert.fingerprint_sha256, revoked_at=cert.revoked_at,
                reason=cert.reason,
            )
            rows.append(row)
            seen.add(cert.common_name)
    for gateway_id, record in sorted(records.items()):
        if gateway_id not in seen:
            rows.append({"role": "gateway", "state": "no certificate", **record})
    return [{k: row.get(k) for k in FIELDS} for row in rows]


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(FIELDS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2) + "\n"
