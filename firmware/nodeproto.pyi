# Type stub for the shared protocol module (the .py stays MicroPython-compatible, unannotated).
from typing import Any

MAJOR: int
MINOR: int
VERSION_BYTE: int
MAX_FRAME: int
MAX_DEPTH: int
HELLO: int
BATCH: int
ACK: int
TIME: int
CFG_GET: int
CFG: int
LOG: int
SYNC: int
TYPE_NAMES: dict[int, str]
TYPE_CODES: dict[str, int]
FIELDS: dict[int, tuple[tuple[str, int], ...]]
REQUIRED: dict[int, tuple[str, ...]]
LOG_LEVELS: tuple[str, ...]
COMPANY_ID: int
BLE_VERSION: int
BLE_QUANTITIES: dict[int, tuple[str, int, int, bool]]
BLE_IDS: dict[str, int]
BLE_MAX_VALUES: int

class ProtocolError(ValueError):
    reason: str
    detail: str
    def __init__(self, reason: str, detail: str = "") -> None: ...

class RawCBOR:
    data: bytes
    def __init__(self, data: bytes) -> None: ...

class FrameReader:
    buf: bytearray
    limit: int
    overflows: int
    skipping: bool
    def __init__(self, limit: int = ...) -> None: ...
    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]: ...

def cobs_encode(data: bytes | bytearray) -> bytes: ...
def cobs_decode(data: bytes | bytearray) -> bytes: ...
def cbor_dumps(obj: Any) -> bytes: ...
def cbor_loads(data: bytes | bytearray) -> Any: ...
def build_frame(mtype: int, body_map: dict[int, Any]) -> bytes: ...
def parse_frame(block: bytes | bytearray) -> tuple[int, int, dict[Any, Any]]: ...
def encode_message(msg: dict[str, Any]) -> bytes: ...
def decode_message(block: bytes | bytearray) -> dict[str, Any]: ...
def encode_advert(node_short: int, seq: int, values: list[tuple[str, float | None]]) -> bytes: ...
def decode_advert(data: bytes | bytearray) -> dict[str, Any]: ...
