"""Renderers for the annotated example in docs/upload-contract.md (used by its test and to
regenerate the example: ``python -m tests.docs.contract_example``)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import cbor2

from edge.contract import DecodedBatch, decode_batch, encode_batch
from edge.model import Batch, Datastream, Observation, Provenance, Quality


def example_payload() -> bytes:
    """The batch shown in the document: two sensors, an interval, a calibration, flags, a gap."""
    gw = "gw-gent-0001"
    sds = Datastream(gw, "pm-sds011", "pm2_5")
    pms = Datastream(gw, "pm-pms5003", "pm10")
    sds_prov = Provenance("SDS011", "A1B2", "", "cal-7", "3")
    pms_prov = Provenance("PMS5003")
    t0 = 1764126120000  # 2025-11-26T03:02:00Z
    spiky = Quality()
    spiky.set("gross_range", 1)
    spiky.set("spike", 3)
    spiky.scores["ml_anomaly"] = 0.82
    rows = (
        Observation(sds, 12.5, t0, sds_prov, phenomenon_end_ms=t0 + 60_000, raw_result=13.75,
                    quality=Quality(1, {"gross_range": 1}), sequence=1042),
        Observation(pms, 24.0, t0 + 10_000, pms_prov, sequence=1043),
        Observation(pms, 31.337, t0 + 20_000, pms_prov, result_ms=t0 + 20_450, quality=spiky,
                    sequence=1045),
    )
    return encode_batch(Batch(gw, rows), gaps=[(1000, 1039, 40, "evicted:size")],
                        sent_ms=t0 + 21_000, version=1)


def diag(value: object, indent: int = 0) -> str:
    """CBOR diagnostic notation (RFC 8949 §8), one map entry per line at the top two levels."""
    pad = "  " * (indent + 1)
    if isinstance(value, dict):
        items = [f"{diag(k)}: {diag(v, indent + 1)}" for k, v in value.items()]
        if indent < 1:
            return "{\n" + ",\n".join(pad + i for i in items) + "\n" + "  " * indent + "}"
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(diag(v, indent + 1) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def decoded_view(batch: DecodedBatch) -> dict[str, object]:
    """What a receiver gets out of the batch, as JSON-friendly data."""
    rows: list[dict[str, object]] = []
    for obs, obs_id in zip(batch.observations, batch.ids, strict=True):
        row: dict[str, object] = {
            "id": obs_id,
            "seq": obs.sequence,
            "sensor": obs.stream.sensor_id,
            "quantity": obs.stream.quantity_code,
            "result": obs.result,
            "phenomenonTime": _iso(obs.phenomenon_ms)
            + ("" if obs.phenomenon_end_ms is None else "/" + _iso(obs.phenomenon_end_ms)),
            "resultTime": _iso(obs.result_time_ms),
            "provenance": obs.provenance.as_dict(),
        }
        if obs.raw_result is not None:
            row["rawResult"] = obs.raw_result
        if obs.quality is not None:
            row["quality"] = obs.quality.as_dict()
        rows.append(row)
    return {
        "gateway": batch.gateway_id,
        "sent": _iso(batch.sent_ms),
        "observations": rows,
        "gaps": [list(g) for g in batch.gaps],
    }


def hex_lines(payload: bytes, width: int = 32) -> str:
    text = payload.hex()
    return "\n".join(text[i : i + 2 * width] for i in range(0, len(text), 2 * width))


if __name__ == "__main__":
    payload = example_payload()
    print(len(payload), "bytes\n")
    print(hex_lines(payload), "\n")
    print(diag(cbor2.loads(payload)), "\n")
    print(json.dumps(decoded_view(decode_batch(payload)), indent=2, ensure_ascii=False))
