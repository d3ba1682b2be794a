"""Logging for ``chrysalis run``: human-readable lines, or one JSON object per line for log shippers.

Chrysalis modules log through the standard :mod:`logging` package under the ``chrysalis`` and ``agent`` logger
names; this module only decides where records go and how they look. Structured fields passed with
``log.info(..., extra={"job_id": 7})`` become keys of the JSON object.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

from rich.console import Console
from rich.logging import RichHandler

#: Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a structured field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}

#: The name of the handler :func:`configure_logging` installs (so a second call finds and replaces it).
_HANDLER_NAME = "chrysalis"

#: Loggers of libraries that are chatty at INFO and say nothing an operator acts on.
_QUIET = ("httpx", "httpcore", "urllib3", "web3", "uvicorn.access", "filelock", "PIL", "alembic")


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the record's
    ``extra`` fields, and ``exc`` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


class OneLineFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger>: <message>``, one line per record whatever it holds: newlines in the message and
    a traceback are written as the two characters ``\\n`` (so grep, journald and log shippers see one record per
    line, and a transaction hash is never broken)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "").replace("\n", "\\n")


def disable_progress_bars() -> None:
    """Turn off the tqdm bars model loading draws on stderr: they would break JSON lines and flood log files."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault(
        "TQDM_DISABLE", "1"
    )  # plain tqdm bars (GGUF conversion); read when tqdm is imported
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def route_library_logs() -> None:
    """Send transformers', diffusers' and huggingface_hub's log records through our handler at DEBUG, with their
    progress bars off (they print to stderr themselves by default, which breaks JSON lines and a live status
    line); see :mod:`agent.generate.quiet`."""
    from agent.generate.quiet import quiet_libraries

    quiet_libraries()


def configure_logging(
    level: str = "INFO",
    fmt: Literal["text", "json"] = "text",
    *,
    stream: IO[str] | None = None,
    console: Console | None = None,
) -> logging.Handler:
    """Send every log record at ``level`` or above to stderr (or ``stream``) in ``fmt``; return the handler.

    Text goes through rich on a terminal (on ``console`` when given, so lines print above a live status line);
    anywhere else (a pipe, a file, nohup, systemd) it is one plain line per record (:class:`OneLineFormatter`),
    never wrapped at the console's width. JSON is one object per line. Replaces handlers an earlier call
    installed, so it is safe to call twice.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(JsonLineFormatter())
    else:
        console = console or Console(file=stream or sys.stderr)
        if console.is_terminal:
            handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        else:  # rich would wrap each record at 80 columns here
            handler = logging.StreamHandler(console.file)
            handler.setFormatter(OneLineFormatter())
    handler.set_name(_HANDLER_NAME)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return handler
