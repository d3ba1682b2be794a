"""``chrysalis run``: the agent as a service, with a live status line, /metrics and a graceful shutdown.

SIGTERM or SIGINT (Ctrl-C) asks the agent to stop: it finishes the step it is in, gives its leased jobs back
to the queue, and the process exits 0. A second SIGINT aborts at once (the jobs it held are picked up again
when their leases expire). Status goes to a rich live line on a terminal, and to a log record whenever it
changes otherwise (with its fields as structured data in JSON logs).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from agent.clicontext import AgentFactory, current_context
from agent.ops.logs import configure_logging, disable_progress_bars, route_library_logs
from agent.ops.metrics import MetricsEndpoint, publish_job_counts, serve_metrics
from agent.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from agent.pipeline import AgentStatus

log = logging.getLogger("chrysalis.run")

_STATES = ("queued", "running", "confirmed", "failed", "cancelled")


def status_line(status: AgentStatus) -> Text:
    """``head 812 | cursor 812 | lag 0 | jobs queued 1 running 1 confirmed 9 failed 0 cancelled 0 | gas ...``."""
    text = Text()
    text.append("head ", style="dim")
    text.append(_num(status.chain_head))
    text.append("  cursor ", style="dim")
    text.append(_num(status.cursor_block))
    text.append("  lag ", style="dim")
    lag = status.lag
    text.append(_num(lag), style="bold red" if lag is not None and lag > 10 else "")
    text.append("  jobs", style="dim")
    for state in _STATES:
        n = status.jobs.get(state, 0)
        style = {"failed": "bold red", "running": "cyan", "queued": "yellow", "confirmed": "green"}.get(
            state, ""
        )
        text.append(f" {state} ", style="dim")
        text.append(str(n), style=style if n else "")
    for label, n in (("unsettled", status.unsettled), ("stalled", status.stalled)):
        if n:
            text.append(f" {label} ", style="dim")
            text.append(str(n), style="yellow")
    text.append("  gas ", style="dim")
    text.append(f"{status.gas_spent:,}")
    if status.last_error:
        text.append("  last error: ", style="dim")
        text.append(_short(status.last_error), style="red")
    return text


def _num(value: int | None) -> str:
    return "?" if value is None else str(value)


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _StatusReporter:
    """Receives the agent's status: updates the live line (if any), the jobs gauge, and logs changes."""

    def __init__(self, live: Live | None) -> None:
        self.live = live
        self.last: tuple[Any, ...] | None = None
        self.latest: AgentStatus | None = None

    def __call__(self, status: AgentStatus) -> None:
        self.latest = status
        publish_job_counts(status.jobs)
        if self.live is not None:
            self.live.update(status_line(status))
            return
        key = (status.lag, tuple(sorted(status.jobs.items())), status.last_error, status.gas_spent)
        if key != self.last:
            self.last = key
            log.info("status: %s", status_line(status).plain, extra={"status": asdict(status)})


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM / SIGINT set ``stop``; a second SIGINT raises KeyboardInterrupt. Handlers restored on exit."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set() and signum == signal.SIGINT:
            log.warning(
                "second %s: aborting now; leased jobs return to the queue when their leases expire", name
            )
            raise KeyboardInterrupt
        log.info("%s received: finishing the current step, then stopping (Ctrl-C again aborts)", name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def unserved_ipfs(settings: Settings) -> str | None:
    """A warning when nothing outside this process will serve what the agent publishes (None: something does).

    The agent writes ``ipfs://<cid>`` token URIs on-chain, but its embedded node is not part of the IPFS network:
    with no Kubo node, no pinning service and no gateway of its own, the images and metadata exist only in its
    repo, and a wallet or marketplace resolving those links finds nothing.
    """
    ipfs = settings.ipfs
    if ipfs.kubo_api or ipfs.pinning_services or settings.agent.serve_gateway:
        return None
    repo = settings.ipfs_repo
    return (
        f"published images and metadata stay in the embedded IPFS repo ({repo}) and nothing serves them: the "
        "ipfs:// token URIs written on-chain resolve for no one else. Pin them where the world can fetch them "
        "(ipfs.kubo_api, [[ipfs.pinning_services]]), or at least serve the repo (agent.serve_gateway = true, "
        "`chrysalis ipfs serve`, `chrysalis studio`)"
    )


def run_agent(
    settings: Settings,
    *,
    worker_id: str | None = None,
    live: bool | None = None,
    console: Console | None = None,
    agent_factory: AgentFactory | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run the agent until SIGTERM/SIGINT (or ``stop``); return the exit code (0 after a graceful stop).

    Args:
        settings: The configuration (``log``, ``metrics`` and everything the agent needs).
        worker_id: Overrides ``agent.worker_id``.
        live: Show the live status line (default: when stderr is a terminal and logs are text).
        console: Where the live line and text logs go (default: stderr).
        agent_factory: Builds the agent (default: the command line's,
            :meth:`~agent.clicontext.CliContext.build_agent`).
        stop: An event that stops the agent like a signal does (for embedding).
    """
    console = console or Console(stderr=True)
    handler = configure_logging(settings.log.level, settings.log.format, console=console)
    if live is None:
        live = console.is_terminal and settings.log.format == "text"
    if settings.log.format == "json" or not console.is_terminal:
        disable_progress_bars()
    route_library_logs()
    stop = stop or threading.Event()
    endpoint: MetricsEndpoint | None = None
    if settings.metrics.enabled:
        endpoint = serve_metrics(settings.metrics.host, settings.metrics.port)
        log.info("metrics at %s", endpoint.url, extra={"metrics_url": endpoint.url})
    started = time.monotonic()
    try:
        if agent_factory is None:
            agent_factory = current_context().build_agent
        with _stop_on_signals(stop), agent_factory(settings, worker_id=worker_id) as agent:
            first = agent.status()
            log.info(
                "agent %s running: chain head %s, cursor %s; stop with Ctrl-C or SIGTERM",
                first.worker_id or "?", _num(first.chain_head), _num(first.cursor_block),
            )  # fmt: skip
            unserved = unserved_ipfs(settings)
            if unserved:
                log.warning(unserved)
            display = Live(status_line(first), console=console, refresh_per_second=4, transient=False)
            with display if live else nullcontext():
                reporter = _StatusReporter(display if live else None)
                reporter(first)
                agent.run(stop, on_status=reporter)
            final = agent.status()
        log.info(
            "agent stopped after %.1f s: %s",
            time.monotonic() - started, status_line(final).plain, extra={"status": asdict(final)},
        )  # fmt: skip
        return 0
    finally:
        if endpoint is not None:
            endpoint.close()
        logging.getLogger().removeHandler(handler)
        sys.stderr.flush()
