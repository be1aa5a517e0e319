"""The structured access log (opt-in: ``serve --access-log``, the resource's ``serving.accessLog``).

One JSON object per request on standard output (the server's own log stays on standard error),
so a log pipeline (Fluent Bit, Vector, Loki's promtail) parses it without patterns. What a line
holds is decided by :func:`access_record` (pure); never the request or response body — an image
is the user's data, and a detection list can be large. Health probes and metric scrapes are left
out (the kubelet and Prometheus would drown everything else); their outcome is in /metrics.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TextIO

import orjson

QUIET_ROUTES = frozenset({"live", "ready", "metrics"})
"""Routes never logged: probes and scrapes, every few seconds from the kubelet and Prometheus."""
HEADER_LIMIT = 200
"""Longest header value logged (user agents and request ids), in characters."""


def access_record(
    *,
    started_unix: float,
    method: str,
    path: str,
    query: str,
    route: str,
    status: int,
    duration_seconds: float,
    request_bytes: int | None,
    response_bytes: int,
    client: str | None,
    headers: Mapping[str, str],
    model: str,
) -> dict[str, object] | None:
    """The access-log record of one request, or None for a route that is not logged. Pure."""
    if route in QUIET_ROUTES:
        return None
    record: dict[str, object] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started_unix)) + f".{int(started_unix % 1 * 1000):03d}Z",
        "method": method,
        "path": path,
        "route": route,
        "status": status,
        "duration_ms": round(duration_seconds * 1000, 3),
        "request_bytes": request_bytes,
        "response_bytes": response_bytes,
        "client": client,
        "model": model,
    }
    if query:
        record["query"] = query[:HEADER_LIMIT]
    for header, key in (("user-agent", "user_agent"), ("x-request-id", "request_id"), ("traceparent", "traceparent")):
        value = headers.get(header)
        if value:
            record[key] = value[:HEADER_LIMIT]
    return record


class AccessLog:
    """Writes :func:`access_record` lines to a stream (standard output by default), one write and
    flush per line so lines never interleave or wait in a buffer."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    def write(self, record: dict[str, object] | None) -> None:
        if record is not None:
            self._stream.write(orjson.dumps(record).decode() + "\n")
            self._stream.flush()
