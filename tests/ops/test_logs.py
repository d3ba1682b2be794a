"""Structured logs: one parseable JSON object per line, with ``extra`` fields and tracebacks."""

from __future__ import annotations

import io
import json
import logging

from agent.ops.logs import configure_logging


def test_json_lines_carry_the_fields_and_the_traceback() -> None:
    stream = io.StringIO()
    handler = configure_logging("INFO", "json", stream=stream)
    try:
        log = logging.getLogger("chrysalis.test")
        log.info("job %s confirmed", 7, extra={"job_id": 7, "tx": "0xabc"})
        log.debug("not shown at INFO")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("stage failed")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "job 7 confirmed"
    assert first["level"] == "info" and first["logger"] == "chrysalis.test"
    assert first["job_id"] == 7 and first["tx"] == "0xabc"
    assert first["ts"].endswith("+00:00")
    assert second["level"] == "error"
    assert "ValueError: boom" in second["exc"]


def test_configuring_twice_keeps_one_handler() -> None:
    a, b = io.StringIO(), io.StringIO()
    configure_logging("INFO", "json", stream=a)
    handler = configure_logging("INFO", "text", stream=b)
    try:
        logging.getLogger("chrysalis.test").warning("once")
    finally:
        logging.getLogger().removeHandler(handler)
    assert a.getvalue() == ""
    assert "once" in b.getvalue()
