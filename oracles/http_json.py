"""A generic HTTP JSON oracle: numbers taken from a JSON document at a URL (a price API, a weather service).

Readings (prefix ``http`` by default): one per configured field, ``<name>.<field>``, plus ``<name>.updated_at``
when the document carries its own timestamp (``timestamp_path``)::

    HttpJsonOracle(
        "https://api.example.com/v1/price?ids=ethereum",
        {"usd": "$.ethereum.usd", "change_24h": "$.ethereum.usd_24h_change"},
        name="cg",
        timestamp_path="$.ethereum.last_updated_at",
    )

Paths are JSONPath, read by jsonpath-ng's extended parser (``jsonpath_ng.ext``): ``$.data.prices[0].usd``,
``$["key with . or spaces"]``, and filters that pick an element by content rather than position, which is what list
answers need (``$.data[?(@.symbol == "ETH")].price``: an API that reorders its list cannot silently swap
assets). A path must select exactly one value in the document: none is missing data, several are refused as
ambiguous. Values must be JSON numbers or numeric strings (``"3012.5"``: converted to float); timestamps are unix
seconds or ISO 8601 text.

An HTTP source has no notion of the block: the oracle reads *now*, and a reading is stamped with the context's
block and carries ``fetched_at`` (unix seconds of the fetch) in its ``meta``. Replaying an old block therefore reads
today's document; with ``timestamp_path`` set, the guard's ``max_age_s`` check on ``<name>.updated_at`` rejects it
(its timestamp is after the block). Fetches are cached for
``cache_ttl_s`` (a refresh reading 10,000 tokens at one block asks the source once), time out after
``timeout_s``, and are retried ``retries`` times with exponential backoff on connection errors, timeouts, 5xx
and 429 (honouring ``Retry-After`` up to ``max_backoff_s``).

Failures: unreachable after the retries -> :class:`~oracles.errors.OracleUnavailableError` (retryable); other 4xx
-> :class:`HttpOracleError` (permanent: fix the URL or credentials); a body that is not JSON, a value that is not a
number, a path that selects several values -> :class:`~oracles.guard.AbsurdOracleDataError`; a path that is not in
the document or is null -> :class:`~oracles.guard.MissingOracleDataError`. Bounds and staleness are the guard's job
(:class:`oracles.guard.OracleGuard`, e.g. ``max_age_s`` on ``<name>.updated_at``).
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from jsonpath_ng import JSONPath
from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext import parse as jsonpath_parse
from jsonpath_ng.jsonpath import Child, Root, This

from agent.domain import OracleReading
from agent.errors import ConfigError
from oracles.base import Oracle, ReadContext
from oracles.errors import OracleError, OracleUnavailableError
from oracles.guard import AbsurdOracleDataError, MissingOracleDataError

_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class HttpOracleError(OracleError):
    """The source answered with a client error (4xx other than 429): the request itself is wrong.

    Attributes:
        url: The URL. status: The HTTP status.
    """

    def __init__(self, *, oracle: str, block_number: int, url: str, status: int, body: str) -> None:
        self.url = url
        self.status = status
        super().__init__(
            f"GET {url} answered HTTP {status}: {body[:200]}",
            oracle=oracle,
            block_number=block_number,
            hint="check the URL, its query and any API key header; retrying will not help",
        )


DEFAULT_MAX_BYTES = 4 * 1024 * 1024
"""Largest HTTP oracle body read (decoded), by default."""


def _read_capped(response: httpx.Response, limit: int) -> bytes | None:
    """The (decoded) body of a streamed response, or None once it passes ``limit`` bytes (the rest unread)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit and not response.headers.get("content-encoding"):
        return None
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def parse_path(path: str) -> JSONPath:
    """Compile a JSONPath (``$.a["b c"][0]``, ``$.list[?(@.id == "x")].v``) with jsonpath-ng.

    Raises:
        ConfigError: the path does not parse, or selects the whole document.
    """
    hint = 'write a JSONPath such as $.ethereum.usd, $.data[0]["usd"] or $.data[?(@.symbol == "ETH")].price'
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"JSON path {path!r} is empty", hint=hint)
    try:
        expr = jsonpath_parse(path.strip())
    except (JSONPathError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ConfigError(f"JSON path {path!r} cannot be read: {exc}", hint=hint) from None
    if isinstance(expr, Root | This):
        raise ConfigError(f"JSON path {path!r} selects the whole document", hint="select a value inside it")
    return expr


def extract(document: Any, expr: JSONPath) -> tuple[list[Any], str]:
    """Every value ``expr`` selects in ``document``; when there is none, also the shortest leading part of the
    path that already selects nothing (where the document ends), else ``""``."""
    values = [match.value for match in expr.find(document)]
    if values:
        return values, ""
    stopped = expr
    while isinstance(stopped, Child) and not stopped.left.find(document):
        stopped = stopped.left
    return [], str(stopped)


class HttpJsonOracle(Oracle):
    """Numbers from a JSON document over HTTP (see the module docstring).

    Args:
        url: The document's URL (GET).
        fields: Reading field -> JSON path (``{"usd": "$.ethereum.usd"}``).
        name: Reading prefix.
        timestamp_path: Path of the document's own update time; adds ``<name>.updated_at``.
        timeout_s: Timeout of one request. retries: Extra attempts after a transient failure.
        backoff_s: First wait between attempts (doubles). max_backoff_s: Longest wait (Retry-After included).
        cache_ttl_s: Seconds a fetched document is reused (0: every read fetches).
        headers: Request headers (e.g. an API key).
        client: An httpx client to use (default: one of its own).
        max_bytes: Largest body read (decoded); a longer one is refused, never held whole in memory.
        clock, sleep: Monotonic time source and sleep (tests replace them).
    """

    def __init__(
        self,
        url: str,
        fields: Mapping[str, str],
        *,
        name: str = "http",
        timestamp_path: str | None = None,
        timeout_s: float = 5.0,
        retries: int = 2,
        backoff_s: float = 0.25,
        max_backoff_s: float = 10.0,
        cache_ttl_s: float = 30.0,
        headers: Mapping[str, str] | None = None,
        client: httpx.Client | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"HTTP oracle URL {url!r} is not http(s)", hint="give the full URL, https://..."
            )
        if not fields:
            raise ConfigError(
                f"HTTP oracle {name!r} has no fields", hint='map reading fields to paths: {"usd": "$.usd"}'
            )
        for field in fields:
            if not _FIELD.match(field) or field == "updated_at" and timestamp_path:
                raise ConfigError(
                    f"HTTP oracle {name!r}: field name {field!r} is not usable",
                    hint="use letters, digits and _ (updated_at is taken when timestamp_path is set)",
                )
        if timeout_s <= 0 or retries < 0 or backoff_s < 0 or cache_ttl_s < 0:
            raise ConfigError(
                f"HTTP oracle {name!r}: timeout_s, retries, backoff_s and cache_ttl_s must be positive (or 0)",
                hint="e.g. timeout_s=5, retries=2, backoff_s=0.25, cache_ttl_s=30",
            )
        self.url = url
        self._name = name
        self.fields = {field: (path, parse_path(path)) for field, path in fields.items()}
        self.timestamp = None if timestamp_path is None else (timestamp_path, parse_path(timestamp_path))
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.cache_ttl_s = cache_ttl_s
        self.headers = dict(headers or {})
        self.max_bytes = max_bytes
        self._client = client or httpx.Client(timeout=timeout_s, follow_redirects=True)
        self._own_client = client is None
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._cached: tuple[float, Any, int] | None = None  # (expires at, document, fetched_at unix seconds)
        self.fetches = 0
        """Requests actually sent (cache misses and retries included)."""

    @property
    def name(self) -> str:
        return self._name

    @property
    def provides(self) -> tuple[str, ...]:
        names = [f"{self._name}.{field}" for field in self.fields]
        if self.timestamp is not None:
            names.append(f"{self._name}.updated_at")
        return tuple(names)

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def read(self, ctx: ReadContext) -> list[OracleReading]:
        document, fetched_at = self._document(ctx)
        source = f"http:{self.url}"
        readings = []
        for field, (path, expr) in self.fields.items():
            value = self._number(ctx, f"{self._name}.{field}", document, path, expr)
            readings.append(
                OracleReading(
                    f"{self._name}.{field}",
                    value,
                    source,
                    ctx.block_number,
                    {"path": path, "fetched_at": fetched_at},
                )
            )
        if self.timestamp is not None:
            path, expr = self.timestamp
            when = self._time(ctx, document, path, expr)
            readings.append(
                OracleReading(
                    f"{self._name}.updated_at",
                    when,
                    source,
                    ctx.block_number,
                    {"path": path, "fetched_at": fetched_at},
                )
            )
        return readings

    # -- fetching -----------------------------------------------------------------------------------------

    def _document(self, ctx: ReadContext) -> tuple[Any, int]:
        with self._lock:
            now = self._clock()
            if self._cached is not None and now < self._cached[0]:
                return self._cached[1], self._cached[2]
            document = self._fetch(ctx)
            fetched_at = int(time.time())
            if self.cache_ttl_s > 0:
                self._cached = (self._clock() + self.cache_ttl_s, document, fetched_at)
            return document, fetched_at

    def _fetch(self, ctx: ReadContext) -> Any:
        last = ""
        for attempt in range(self.retries + 1):
            wait = min(self.backoff_s * 2**attempt, self.max_backoff_s)
            self.fetches += 1
            try:
                with self._client.stream(
                    "GET", self.url, headers=self.headers, timeout=self.timeout_s
                ) as response:
                    body = _read_capped(response, self.max_bytes)
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout_s} s"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if body is None and status < 400:
                    raise AbsurdOracleDataError(
                        f"the body of GET {self.url} (HTTP {status}) is larger than {self.max_bytes} bytes; "
                        "not read",
                        oracle=self._name,
                        block_number=ctx.block_number,
                        reading=f"{self._name}.*",
                        value=None,
                        hint="point the oracle at a smaller document (a narrower query), or raise max_bytes",
                    )
                if status < 400 and body is not None:
                    return self._json(ctx, response, body)
                if status == 429 or status >= 500:
                    last = f"HTTP {status}"
                    wait = min(
                        max(wait, _retry_after(response.headers.get("Retry-After"))), self.max_backoff_s
                    )
                else:
                    raise HttpOracleError(
                        oracle=self._name,
                        block_number=ctx.block_number,
                        url=self.url,
                        status=status,
                        body=body.decode("utf-8", "replace")
                        if body is not None
                        else f"(a body over {self.max_bytes} bytes)",
                    )
            if attempt < self.retries:
                self._sleep(wait)
        raise OracleUnavailableError(
            f"GET {self.url} failed {self.retries + 1} times (last: {last})",
            oracle=self._name,
            block_number=ctx.block_number,
        )

    def _json(self, ctx: ReadContext, response: httpx.Response, body: bytes) -> Any:
        try:
            return json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise AbsurdOracleDataError(
                f"the body is not JSON ({exc})",
                oracle=self._name,
                block_number=ctx.block_number,
                reading=f"{self._name}.*",
                value=body[:80].decode("utf-8", "replace"),
                hint=f"check that {self.url} returns JSON (content type {response.headers.get('content-type')!r})",
            ) from None

    # -- values -------------------------------------------------------------------------------------------

    def _lookup(self, ctx: ReadContext, reading: str, document: Any, path: str, expr: JSONPath) -> Any:
        values, where = extract(document, expr)
        if not values:
            raise MissingOracleDataError(
                f"path {path} is not in the document (nothing at {where})",
                oracle=self._name,
                block_number=ctx.block_number,
                reading=reading,
                hint=f"check the path against what {self.url} returns now",
            )
        if len(values) > 1:
            raise AbsurdOracleDataError(
                f"path {path} selects {len(values)} values, not one",
                oracle=self._name,
                block_number=ctx.block_number,
                reading=reading,
                value=[str(v) if isinstance(v, Decimal) else v for v in values[:5]],
                hint="make the path select exactly one value: an index, or a filter on a unique key such as "
                '[?(@.symbol == "ETH")]',
            )
        value = values[0]
        if value is None:
            raise MissingOracleDataError(
                f"path {path} is null", oracle=self._name, block_number=ctx.block_number, reading=reading
            )
        return value

    def _number(
        self, ctx: ReadContext, reading: str, document: Any, path: str, expr: JSONPath
    ) -> int | float:
        value = self._lookup(ctx, reading, document, path, expr)
        number: int | float | None = None
        if isinstance(value, bool):
            number = None
        elif isinstance(value, int):
            number = value
        elif isinstance(value, Decimal):
            number = float(value)
        elif isinstance(value, str):
            try:
                parsed = Decimal(value.strip())
                number = float(parsed) if parsed.is_finite() else None
            except InvalidOperation:
                number = None
        if number is None or (isinstance(number, float) and not math.isfinite(number)):
            raise AbsurdOracleDataError(
                f"path {path} is not a finite number",
                oracle=self._name,
                block_number=ctx.block_number,
                reading=reading,
                value=value if not isinstance(value, Decimal) else str(value),
            )
        return number

    def _time(self, ctx: ReadContext, document: Any, path: str, expr: JSONPath) -> int:
        reading = f"{self._name}.updated_at"
        value = self._lookup(ctx, reading, document, path, expr)
        if isinstance(value, str):
            try:
                return int(datetime.fromisoformat(value).timestamp())
            except ValueError:
                pass
        try:
            return int(self._number(ctx, reading, document, path, expr))
        except AbsurdOracleDataError:
            raise AbsurdOracleDataError(
                f"path {path} is neither unix seconds nor an ISO 8601 time",
                oracle=self._name,
                block_number=ctx.block_number,
                reading=reading,
                value=value,
            ) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _retry_after(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return 0.0
