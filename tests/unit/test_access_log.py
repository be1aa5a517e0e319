"""The access-log record (pure): what a line holds, and what it never does."""

from __future__ import annotations

import io
import json

from rtdetr_edge.server.access_log import QUIET_ROUTES, AccessLog, access_record

REQUEST = dict(started_unix=1733400000.25, method="POST", path="/v1/detect", query="score_threshold=0.4", route="detect",
               status=200, duration_seconds=0.0123456, request_bytes=52341, response_bytes=812, client="10.0.0.7",
               headers={"user-agent": "curl/8.5", "x-request-id": "abc-123", "content-type": "image/jpeg"}, model="rtdetr")  # fmt: skip


def test_a_request_becomes_one_record_with_what_an_operator_searches_by() -> None:
    record = access_record(**REQUEST)  # type: ignore[arg-type]
    assert record == {
        "time": "2024-12-05T12:00:00.250Z", "method": "POST", "path": "/v1/detect", "route": "detect", "status": 200,
        "duration_ms": 12.346, "request_bytes": 52341, "response_bytes": 812, "client": "10.0.0.7", "model": "rtdetr",
        "query": "score_threshold=0.4", "user_agent": "curl/8.5", "request_id": "abc-123",
    }  # fmt: skip


def test_probes_and_scrapes_are_not_logged_and_long_headers_are_cut() -> None:
    for route in QUIET_ROUTES:
        assert access_record(**{**REQUEST, "route": route}) is None  # type: ignore[arg-type]
    record = access_record(**{**REQUEST, "headers": {"user-agent": "x" * 5000}})  # type: ignore[arg-type]
    assert record is not None and len(str(record["user_agent"])) == 200


def test_each_record_is_one_json_line_on_the_stream() -> None:
    stream = io.StringIO()
    log = AccessLog(stream)
    log.write(access_record(**REQUEST))  # type: ignore[arg-type]
    log.write(None)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["status"] == 200
