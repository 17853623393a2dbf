"""Renderers for the annotated example in docs/upload-contract.md (used by its test and to
regenerate the example: ``python -m tests.docs.contract_example``)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import cbor2

from edge.contract import Ack, DecodedBatch, SessionEncoder, decode_batch, encode_ack
from edge.model import Batch, Datastream, Observation, Provenance, Quality

GW = "gw-gent-0001"
T0 = 1764126120000  # 2025-11-26T03:02:00Z


def example_session() -> tuple[bytes, bytes]:
    """The two batches shown in the document: the first of a connection (with the session
    dictionary) and the next one (its reference only)."""
    sds = Datastream(GW, "pm-sds011", "pm2_5")
    pms = Datastream(GW, "pm-pms5003", "pm10")
    sds_prov = Provenance("SDS011", "A1B2", "", "cal-7", "3")
    pms_prov = Provenance("PMS5003")
    spiky = Quality()
    spiky.set("gross_range", 1)
    spiky.set("spike", 3)
    spiky.scores["ml_anomaly"] = 0.82
    rows = (
        Observation(sds, 12.5, T0, sds_prov, phenomenon_end_ms=T0 + 60_000, raw_result=13.75,
                    quality=Quality(1, {"gross_range": 1}), sequence=1042),
        Observation(pms, 24.0, T0 + 10_000, pms_prov, sequence=1043),
        Observation(pms, 31.337, T0 + 20_000, pms_prov, result_ms=T0 + 20_450, quality=spiky,
                    sequence=1045),
    )
    later = (
        Observation(pms, 24.5, T0 + 30_000, pms_prov, sequence=1046),
        Observation(pms, 25.25, T0 + 40_000, pms_prov, sequence=1047),
    )
    encoder = SessionEncoder(GW)
    first = encoder.encode(
        Batch(GW, rows),
        gaps=[(1000, 1039, 40, "evicted:size"), (1040, 1041, -1, "restart:unclean")],
        sent_ms=T0 + 21_000,
    )
    second = encoder.encode(Batch(GW, later), sent_ms=T0 + 41_000)
    return first.payload, second.payload


def example_payload() -> bytes:
    return example_session()[0]


def example_ack() -> bytes:
    """What the twin answers to the first batch (see tests/docs/test_upload_contract.py)."""
    return encode_ack(Ack(ok=[(1042, 1043), (1045, 1045)]))


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
    if isinstance(value, bytes):
        return f"h'{value.hex()}'"
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
    first, second = example_session()
    carried = decode_batch(first).dictionary
    for name, payload in (("first batch", first), ("second batch", second),
                          ("ack", example_ack())):
        print(f"== {name}: {len(payload)} bytes\n")
        print(hex_lines(payload), "\n")
        print(diag(cbor2.loads(payload)), "\n")
    print(json.dumps(decoded_view(decode_batch(first)), indent=2, ensure_ascii=False))
    print(json.dumps(decoded_view(decode_batch(second, lambda gw, ref: carried)), indent=2,
                     ensure_ascii=False))
