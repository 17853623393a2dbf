"""Structured logging: one JSON object per line (or plain text), with secrets redacted.

Log calls pass fields with ``extra={...}``; the formatter puts them next to the message.
A redaction filter masks anything that looks like key material, passwords or tokens, so a
mistake elsewhere cannot put a secret into a log file.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}
_SECRET_KEYS = re.compile(r"(pass(word)?|secret|token|private|api[_-]?key|authorization)", re.I)
_SECRET_TEXT = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|(?i:(password|passwd|token|secret)\s*[=:]\s*)\S+",
    re.S,
)
REDACTED = "«redacted»"


def redact(text: str) -> str:
    return _SECRET_TEXT.sub(REDACTED, text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_"):
                continue
            out[key] = REDACTED if _SECRET_KEYS.search(key) else _safe(value)
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{k}={REDACTED if _SECRET_KEYS.search(k) else _safe(v)}"
            for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_")
        )
        base = f"{record.levelname:<7} {record.name}: {redact(record.getMessage())}"
        text = f"{base} {fields}" if fields else base
        if record.exc_info:
            text += "\n" + redact(self.formatException(record.exc_info))
        return text


def _safe(value: object) -> object:
    return redact(value) if isinstance(value, str) else value


def setup_logging(level: str = "INFO", fmt: str = "json", stream: object = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("asyncio", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
