"""How relaybox's log lines look: for a person at a terminal (the default), or one JSON object per
line (`relaybox serve --log-format json`, or `RELAYBOX_LOG_FORMAT=json`) for a log collector. The
access log's fields (`web/access_log.py`) become the JSON object's own keys."""

from __future__ import annotations

import json
import logging
import time

FORMATS = ("text", "json")
ENVIRONMENT = "RELAYBOX_LOG_FORMAT"


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "access", {}),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(kind: str) -> None:
    handler = logging.StreamHandler()
    if kind == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # httpx notes every upstream call at INFO: a line per request on the hot path, and the access
    # log and the request log already hold each one.
    logging.getLogger("httpx").setLevel(logging.WARNING)
