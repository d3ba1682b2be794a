"""Fetching IPFS content from sources that are never trusted: every block is checked against its CID here.

A :class:`BlockSource` hands out a block's bytes by CID: an HTTP gateway (:class:`GatewaySource`, ``GET
/ipfs/<cid>?format=raw``, or a whole DAG as ``?format=car``), a Kubo RPC API (:class:`KuboRpcSource`,
``/api/v0/block/get`` and ``dag/export``) or a local repo (:class:`RepoSource`). None of them is believed: a
:class:`Fetcher` hashes every block it receives and keeps only those whose hash is their CID, so a gateway that
returns other bytes is caught (:class:`UntrustedBlockError`) and the next source is asked.

On top of verified blocks the fetcher reads UnixFS with the repo's own reader (:class:`~agent.ipfs.reader.DagReader`,
its DAG-bomb limits included): :meth:`Fetcher.fetch_block`, :meth:`Fetcher.fetch_file`,
:meth:`Fetcher.fetch_directory` (every file of a directory, by path) and :meth:`Fetcher.save_directory` (the same,
written to disk file by file). What one fetcher may download is capped (``max_bytes``), each block is at most
:data:`MAX_FETCH_BLOCK` bytes, and each request has a deadline (``timeout_s``); a source that does not answer in
time is reported as "no gateway answered for CID X within N s".

Example::

    fetcher = Fetcher([GatewaySource("https://ipfs.io")])
    png = fetcher.fetch_file("bafkrei...")
    files = fetcher.fetch_directory("bafybei...")   # {"manifest.json": b"...", "weights/model.safetensors": ...}

Pass ``store=`` (any :class:`~agent.ipfs.blockstore.Blockstore`, e.g. a repo's) to keep the verified blocks on
disk instead of in memory: a model's blocks, fetched once, are then served by that repo.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

import httpx

from agent.errors import BackendUnavailableError, ConfigError
from agent.ipfs.blockstore import Blockstore, BytesLike, MemoryBlockstore, atomic_write
from agent.ipfs.car import CarReader
from agent.ipfs.cid import CID, DAG_PB, IDENTITY, RAW, hash_matches, raw_cid
from agent.ipfs.errors import (
    BlockNotFoundError,
    CarFormatError,
    CorruptBlockError,
    DagLimitError,
    InvalidCIDError,
    InvalidPathError,
    NodeKindError,
    UnsupportedCodecError,
)
from agent.ipfs.reader import DagLimits, DagReader
from agent.ipfs.repo import IpfsRepo
from agent.ipfs.rpc_auth import KUBO_TOKEN_ENV
from agent.redact import redact_url

__all__ = [
    "DEFAULT_FETCH_TIMEOUT_S",
    "DEFAULT_MAX_FETCH_BYTES",
    "MAX_FETCH_BLOCK",
    "BlockSource",
    "ContentUnavailableError",
    "Failed",
    "FetchLimitError",
    "FetchStats",
    "FetchTimeoutError",
    "Fetcher",
    "GatewaySource",
    "KuboRpcSource",
    "Miss",
    "RemoteTree",
    "RemoteBlocks",
    "RepoSource",
    "SourceUnreachableError",
    "UntrustedBlockError",
    "api_url",
    "gateway_url",
    "make_fetcher",
]

log = logging.getLogger(__name__)

DEFAULT_FETCH_TIMEOUT_S: Final = 30.0
"""How long one source may take to answer for one block (or one CAR) before the next is asked."""

DEFAULT_MAX_FETCH_BYTES: Final = 1 << 30
"""The most bytes one :class:`Fetcher` downloads in all (1 GiB): blocks are kept until it is dropped."""

MAX_FETCH_BLOCK: Final = 2 << 20
"""The largest block accepted from a source (2 MiB: the most Kubo moves over bitswap; its importer makes 256 KiB)."""

_RAW_TYPE: Final = "application/vnd.ipld.raw"
_CAR_TYPE: Final = "application/vnd.ipld.car"
_CHUNK: Final = 64 << 10


# -- errors -----------------------------------------------------------------------------------------------------


class ContentUnavailableError(BlockNotFoundError):
    """No source has the block (each answered "not found").

    Attributes:
        cid: the block. outcomes: what each source answered.
    """

    def __init__(self, cid: CID, outcomes: Sequence[str], *, root: CID | None = None) -> None:
        self.outcomes = list(outcomes)
        super().__init__(cid, root=root, hint=_SOURCES_HINT)
        where = f" (part of {root})" if root is not None and root != cid else ""
        self.message = f"no source has block {cid}{where}: " + "; ".join(outcomes)
        self.args = (self.message,)


class FetchTimeoutError(BackendUnavailableError, TimeoutError):
    """No source answered for a block in time.

    Attributes:
        cid: the block. timeout_s: the deadline each source had. outcomes: what each source did.
    """

    def __init__(self, cid: CID, timeout_s: float, outcomes: Sequence[str]) -> None:
        self.cid = cid
        self.timeout_s = timeout_s
        self.outcomes = list(outcomes)
        super().__init__(
            f"no gateway answered for CID {cid} within {timeout_s:g} s: " + "; ".join(outcomes),
            hint="the content may not be pinned anywhere reachable: check the URL, pass another --gateway (or "
            "--ipfs-api) that has it, or raise --timeout for a slow one",
        )


class SourceUnreachableError(BackendUnavailableError):
    """No source could be reached at all (connection refused, unknown host, TLS failure)."""

    def __init__(self, cid: CID, outcomes: Sequence[str]) -> None:
        self.cid = cid
        self.outcomes = list(outcomes)
        super().__init__(
            f"no IPFS source could be reached for block {cid}: " + "; ".join(outcomes),
            hint="check the --gateway / --ipfs-api URL (scheme, host and port) and that the service is running",
        )


class UntrustedBlockError(CorruptBlockError):
    """Every source that answered returned bytes that do not hash to the CID asked for.

    Attributes:
        cid: the block. outcomes: what each source did.
    """

    def __init__(self, cid: CID, outcomes: Sequence[str]) -> None:
        self.outcomes = list(outcomes)
        super().__init__(
            cid,
            None,
            detail="; ".join(outcomes),
            hint="a gateway is never trusted, and this one returned other bytes than the CID names: it is broken "
            "or lying; fetch from another gateway (--gateway) or a node you run (--ipfs-api)",
        )
        self.message = f"no source returned block {cid}: " + "; ".join(outcomes)
        self.args = (self.message,)


class FetchLimitError(DagLimitError):
    """Fetching more would pass the fetcher's byte budget (``max_bytes``) or a block's size limit."""

    def __init__(self, message: str, *, cid: CID, limit: int) -> None:
        super().__init__(
            message,
            cid=cid,
            setting="max_bytes",
            limit=limit,
            hint=f"this content is larger than the {limit}-byte limit of this fetch; raise the limit only for "
            "content you expect to be that large",
        )


_SOURCES_HINT = (
    "pin it where a gateway can serve it, or pass a gateway (--gateway URL) or a node (--ipfs-api URL) "
    "that has it"
)


# -- sources ----------------------------------------------------------------------------------------------------


class Miss(Exception):
    """A source does not have the block (its answer is the message)."""


class Failed(Exception):
    """A source failed to answer usefully (its problem is the message); ``unreachable``: it could not be reached."""

    def __init__(self, message: str, *, unreachable: bool = False, timed_out: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable
        self.timed_out = timed_out


@runtime_checkable
class BlockSource(Protocol):
    """Somewhere blocks can be asked for by CID. Nothing it returns is trusted (the :class:`Fetcher` verifies).

    ``get_block`` returns the bytes it got, or raises :class:`Miss` (it has no such block) or :class:`Failed`
    (an error, a timeout or an unreachable source). ``get_car`` streams a whole DAG's ``(cid, bytes)``
    (unverified), or returns ``None`` when the source offers no such export.
    """

    name: str
    """How messages name the source: ``gateway https://ipfs.io``."""

    def get_block(self, cid: CID, *, timeout_s: float, max_bytes: int) -> bytes:
        """The block's bytes as the source gives them."""

    def get_car(self, root: CID, *, timeout_s: float, max_bytes: int) -> Iterator[tuple[CID, bytes]] | None:
        """Every block of the DAG under ``root`` (a CARv1 export), or ``None``."""


def gateway_url(url: str) -> str:
    """A gateway's base URL (``https://ipfs.io``), from what a user may type (``ipfs.io/ipfs/``, a trailing /).

    Raises:
        ConfigError: not an http(s) URL.
    """
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"gateway {url!r} is not an http(s) URL",
            hint="pass a gateway's base URL, e.g. --gateway https://ipfs.io or --gateway http://127.0.0.1:8080",
        )
    path = parts.path.rstrip("/")
    path = path.removesuffix("/ipfs")
    return f"{parts.scheme}://{parts.netloc}{path}"


def api_url(api: str) -> str:
    """A Kubo RPC API's base URL from a URL or a multiaddr (``/ip4/127.0.0.1/tcp/5001[/http]``).

    Raises:
        ConfigError: neither.
    """
    text = api.strip()
    if text.startswith("/"):
        parts = [p for p in text.split("/") if p]
        if len(parts) >= 4 and parts[0] in ("ip4", "ip6", "dns", "dns4", "dns6") and parts[2] == "tcp":
            host = f"[{parts[1]}]" if parts[0] == "ip6" else parts[1]
            scheme = parts[4] if len(parts) > 4 and parts[4] in ("http", "https") else "http"
            return f"{scheme}://{host}:{parts[3]}"
        raise ConfigError(
            f"cannot read the IPFS API address {api!r}",
            hint="use /ip4/127.0.0.1/tcp/5001 or http://127.0.0.1:5001",
        )
    if "://" not in text:
        text = "http://" + text
    parts_ = urlsplit(text)
    if parts_.scheme not in ("http", "https") or not parts_.hostname:
        raise ConfigError(
            f"cannot read the IPFS API address {api!r}",
            hint="use /ip4/127.0.0.1/tcp/5001 or http://127.0.0.1:5001",
        )
    return f"{parts_.scheme}://{parts_.netloc}{parts_.path.rstrip('/').removesuffix('/api/v0')}"


class _HttpSource:
    """What the gateway and the Kubo RPC sources share: one httpx client, capped and deadlined reads."""

    name: str

    def __init__(self, base: str, *, headers: dict[str, str] | None = None) -> None:
        self.base = base
        self._client = httpx.Client(headers=headers or {}, follow_redirects=True, max_redirects=3)

    def close(self) -> None:
        self._client.close()

    def _open(self, method: str, url: str, *, timeout_s: float, accept: str) -> httpx.Response:
        timeout = httpx.Timeout(timeout_s)
        try:
            request = self._client.build_request(method, url, headers={"Accept": accept}, timeout=timeout)
            return self._client.send(request, stream=True)
        except httpx.TimeoutException:
            raise Failed(f"{self.name}: no answer within {timeout_s:g} s", timed_out=True) from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.UnsupportedProtocol) as exc:
            raise Failed(f"{self.name}: cannot connect ({_short(exc)})", unreachable=True) from None
        except httpx.HTTPError as exc:
            raise Failed(f"{self.name}: {type(exc).__name__} ({_short(exc)})") from None

    def _read_all(
        self, response: httpx.Response, *, timeout_s: float, max_bytes: int, started: float
    ) -> bytes:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise Failed(f"{self.name}: answered with {declared} bytes, more than the {max_bytes}-byte limit")
        parts: list[bytes] = []
        total = 0
        try:
            for chunk in response.iter_bytes(_CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise Failed(f"{self.name}: sent more than the {max_bytes}-byte limit")
                if time.monotonic() - started > timeout_s:
                    raise Failed(f"{self.name}: did not finish within {timeout_s:g} s", timed_out=True)
                parts.append(chunk)
        except httpx.TimeoutException:
            raise Failed(
                f"{self.name}: stopped answering (no data within {timeout_s:g} s)", timed_out=True
            ) from None
        except httpx.HTTPError as exc:
            raise Failed(f"{self.name}: the reply broke off ({_short(exc)})") from None
        return b"".join(parts)

    def _stream_car(
        self, method: str, url: str, root: CID, *, timeout_s: float, max_bytes: int
    ) -> Iterator[tuple[CID, bytes]] | None:
        started = time.monotonic()
        response = self._open(method, url, timeout_s=timeout_s, accept=_CAR_TYPE)
        if response.status_code != 200:
            response.close()
            return None
        return self._car_blocks(response, root, timeout_s=timeout_s, max_bytes=max_bytes, started=started)

    def _car_blocks(
        self, response: httpx.Response, root: CID, *, timeout_s: float, max_bytes: int, started: float
    ) -> Iterator[tuple[CID, bytes]]:
        stream = _ResponseStream(
            response, self.name, timeout_s=timeout_s, max_bytes=max_bytes, started=started
        )
        try:
            reader = CarReader(stream)  # type: ignore[arg-type]
            if root not in reader.roots:
                raise Failed(
                    f"{self.name}: the CAR for {root} has other roots ({', '.join(map(str, reader.roots))})"
                )
            yield from reader.blocks()
        except (CarFormatError, InvalidCIDError, UnsupportedCodecError) as exc:
            raise Failed(f"{self.name}: a broken CAR ({exc.message})") from None
        finally:
            response.close()


class _ResponseStream:
    """``read(n)`` over a streamed httpx reply, for :class:`CarReader`; capped in bytes and in time."""

    def __init__(
        self, response: httpx.Response, name: str, *, timeout_s: float, max_bytes: int, started: float
    ) -> None:
        self._chunks = response.iter_bytes(_CHUNK)
        self._buffer = bytearray()
        self._name = name
        self._timeout_s = timeout_s
        self._max = max_bytes
        self._started = started
        self._total = 0
        self._done = False

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._buffer) < n):
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._done = True
                break
            except httpx.TimeoutException:
                raise Failed(f"{self._name}: stopped sending the CAR", timed_out=True) from None
            except httpx.HTTPError as exc:
                raise Failed(f"{self._name}: the CAR broke off ({_short(exc)})") from None
            self._total += len(chunk)
            if self._total > self._max:
                raise Failed(f"{self._name}: the CAR is larger than the {self._max}-byte limit")
            if time.monotonic() - self._started > self._timeout_s * 4:
                raise Failed(f"{self._name}: the CAR did not finish in time", timed_out=True)
            self._buffer += chunk
        if n < 0:
            out, self._buffer = bytes(self._buffer), bytearray()
        else:
            out, self._buffer = bytes(self._buffer[:n]), self._buffer[n:]
        return out


class GatewaySource(_HttpSource):
    """An HTTP gateway: ``GET <url>/ipfs/<cid>?format=raw`` for a block, ``?format=car`` for a DAG.

    Args:
        url: the gateway's base URL (``https://ipfs.io``, ``http://127.0.0.1:8080``; a trailing ``/ipfs`` is fine).
        headers: extra request headers.
    """

    def __init__(self, url: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(gateway_url(url), headers=headers)
        self.name = f"gateway {redact_url(self.base)}"

    def get_block(self, cid: CID, *, timeout_s: float, max_bytes: int) -> bytes:
        started = time.monotonic()
        response = self._open(
            "GET", f"{self.base}/ipfs/{cid}?format=raw", timeout_s=timeout_s, accept=_RAW_TYPE
        )
        try:
            if response.status_code in (404, 410):
                raise Miss(f"{self.name}: HTTP {response.status_code} (not found)")
            if response.status_code != 200:
                body = self._read_all(response, timeout_s=timeout_s, max_bytes=4096, started=started)
                raise Failed(f"{self.name}: HTTP {response.status_code} {_first_line(body)}".rstrip())
            return self._read_all(response, timeout_s=timeout_s, max_bytes=max_bytes, started=started)
        finally:
            response.close()

    def get_car(self, root: CID, *, timeout_s: float, max_bytes: int) -> Iterator[tuple[CID, bytes]] | None:
        url = f"{self.base}/ipfs/{root}?format=car&dag-scope=all"
        return self._stream_car("GET", url, root, timeout_s=timeout_s, max_bytes=max_bytes)


class KuboRpcSource(_HttpSource):
    """A Kubo RPC API (or Chrysalis' embedded node's): ``POST /api/v0/block/get``, ``/api/v0/dag/export``.

    Args:
        api: the API's URL or multiaddr (``http://127.0.0.1:5001``, ``/ip4/127.0.0.1/tcp/5001``).
        token: a bearer token (a Kubo with ``API.Authorizations``, or the embedded node's RPC token).
    """

    def __init__(self, api: str, *, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        super().__init__(api_url(api), headers=headers)
        self.name = f"IPFS API {redact_url(self.base)}"

    def get_block(self, cid: CID, *, timeout_s: float, max_bytes: int) -> bytes:
        started = time.monotonic()
        url = f"{self.base}/api/v0/block/get?arg={quote(str(cid))}"
        response = self._open("POST", url, timeout_s=timeout_s, accept="application/octet-stream")
        try:
            if response.status_code == 200:
                return self._read_all(response, timeout_s=timeout_s, max_bytes=max_bytes, started=started)
            body = self._read_all(response, timeout_s=timeout_s, max_bytes=4096, started=started)
            message = _kubo_message(body)
            if response.status_code in (401, 403):
                raise Failed(f"{self.name}: HTTP {response.status_code}: {message} (a token is needed)")
            lowered = message.lower()
            if response.status_code == 404 or any(
                s in lowered for s in ("not found", "could not find", "not in the repo")
            ):
                raise Miss(f"{self.name}: {message or 'not found'}")
            raise Failed(f"{self.name}: HTTP {response.status_code}: {message}")
        finally:
            response.close()

    def get_car(self, root: CID, *, timeout_s: float, max_bytes: int) -> Iterator[tuple[CID, bytes]] | None:
        url = f"{self.base}/api/v0/dag/export?arg={quote(str(root))}"
        return self._stream_car("POST", url, root, timeout_s=timeout_s, max_bytes=max_bytes)


class RepoSource:
    """A local IPFS repo (the operator's embedded node): read straight from its blockstore."""

    def __init__(self, repo: IpfsRepo) -> None:
        self.repo = repo
        self.name = f"repo {repo.path}" if repo.path is not None else "repo (in memory)"

    def get_block(self, cid: CID, *, timeout_s: float, max_bytes: int) -> bytes:
        try:
            return self.repo.block_get(cid)
        except BlockNotFoundError:
            raise Miss(f"{self.name}: not there") from None
        except CorruptBlockError as exc:
            raise Failed(f"{self.name}: {exc.message}") from None

    def get_car(self, root: CID, *, timeout_s: float, max_bytes: int) -> Iterator[tuple[CID, bytes]] | None:
        return None  # every block is at hand: nothing to gain


def make_fetcher(
    *,
    gateways: Sequence[str] = (),
    ipfs_apis: Sequence[str] = (),
    api_token: str | None = None,
    repo: IpfsRepo | None = None,
    timeout_s: float = DEFAULT_FETCH_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_FETCH_BYTES,
    store: Blockstore | None = None,
    limits: DagLimits | None = None,
) -> Fetcher:
    """A :class:`Fetcher` over a local repo (first, when given), then Kubo APIs, then gateways, in order.

    ``api_token``: the Kubo APIs' bearer token (default ``$CHRYSALIS_KUBO_API_TOKEN``, as for the Kubo backend).
    """
    if api_token is None:
        api_token = os.environ.get(KUBO_TOKEN_ENV) or None
    sources: list[BlockSource] = []
    if repo is not None:
        sources.append(RepoSource(repo))
    sources += [KuboRpcSource(api, token=api_token) for api in ipfs_apis]
    sources += [GatewaySource(url) for url in gateways]
    return Fetcher(sources, timeout_s=timeout_s, max_bytes=max_bytes, store=store, limits=limits)


class RemoteBlocks:
    """Fills a repo with content it lacks from the other places the collection's content lives.

    Several agents on different machines each have their own embedded repo, and replicate what they publish to
    the same backends. An agent asked to evolve a token that another agent published last finds that version
    in a backend, not in its repo: :meth:`fill` fetches the whole DAG (a raw block, or every block of a UnixFS
    file), checks each block against its CID and keeps it in the repo, so the stages read it as if published
    here.

    Args:
        repo: The agent's repo (the blocks are kept there). ipfs_apis: Kubo RPC APIs (``ipfs.kubo_api``).
        gateways: HTTP gateways (``ipfs.fetch_gateways``). timeout_s: per source and block.
    """

    def __init__(
        self,
        repo: IpfsRepo,
        *,
        ipfs_apis: Sequence[str] = (),
        gateways: Sequence[str] = (),
        timeout_s: float = DEFAULT_FETCH_TIMEOUT_S,
        limits: DagLimits | None = None,
    ) -> None:
        self.repo = repo
        self.ipfs_apis = [api_url(a) for a in ipfs_apis]
        self.gateways = list(gateways)
        self.timeout_s = timeout_s
        self.limits = limits

    @property
    def where(self) -> str:
        """The sources, for messages."""
        return ", ".join([*self.ipfs_apis, *self.gateways])

    def fill(self, cid: CID | str) -> str:
        """Fetch ``cid``'s DAG into the repo (nothing when the repo holds its root); returns where the blocks came
        from ("" when none was needed).

        Raises:
            The fetcher's errors (:class:`ContentUnavailableError` when no source has it, ...).
        """
        root = _cid(cid)
        if self.repo.blockstore.has(root):
            return ""
        with make_fetcher(
            ipfs_apis=self.ipfs_apis,
            gateways=self.gateways,
            timeout_s=self.timeout_s,
            store=self.repo.blockstore,
            limits=self.limits,
        ) as fetcher:
            if root.codec == RAW:
                fetcher.fetch_block(root)
            else:
                fetcher.fetch_file(root)
            return fetcher.stats.by_source()


# -- the fetcher ------------------------------------------------------------------------------------------------


@dataclass
class FetchStats:
    """What a fetcher did: blocks and bytes per source, and the sources caught returning wrong bytes."""

    blocks: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    untrusted: list[str] = field(default_factory=list)

    def by_source(self) -> str:
        """``gateway http://...: 12 blocks`` for each source that gave blocks."""
        return ", ".join(f"{name}: {n} block{'s' if n != 1 else ''}" for name, n in self.blocks.items())


class Fetcher:
    """Blocks and UnixFS content by CID from untrusted sources, each block checked against its CID.

    Args:
        sources: asked in order, for each block, until one gives bytes that hash to the CID.
        timeout_s: how long each source may take for one block (the next is asked after that).
        max_bytes: the most bytes this fetcher downloads in all (:class:`FetchLimitError` beyond).
        store: where verified blocks are kept (default: in memory); pass a repo's blockstore to keep them.
        limits: the reader's DAG limits (listing entries, file expansion): DAG bombs are refused.

    Raises (from every fetch):
        ContentUnavailableError: no source has a block. FetchTimeoutError: no source answered in time.
        SourceUnreachableError: no source could be reached. UntrustedBlockError: the sources that answered sent
        bytes that do not hash to the CID. FetchLimitError: past ``max_bytes`` or a block over
        :data:`MAX_FETCH_BLOCK`. ConfigError: the fetcher has no source.
    """

    def __init__(
        self,
        sources: Sequence[BlockSource],
        *,
        timeout_s: float = DEFAULT_FETCH_TIMEOUT_S,
        max_bytes: int = DEFAULT_MAX_FETCH_BYTES,
        store: Blockstore | None = None,
        limits: DagLimits | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ConfigError(
                f"the fetch timeout must be positive, got {timeout_s}", hint="pass --timeout 30"
            )
        self.sources = list(sources)
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.cache: Blockstore = store if store is not None else MemoryBlockstore()
        self.stats = FetchStats()
        self._lock = threading.Lock()
        self.store = _FetchingStore(self)
        self.reader = DagReader(self.store, limits)
        self._prefetched: set[CID] = set()

    @property
    def source_names(self) -> list[str]:
        return [s.name for s in self.sources]

    def close(self) -> None:
        for source in self.sources:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- blocks --

    def fetch_block(self, cid: CID | str) -> bytes:
        """One block's bytes, verified against ``cid`` (from the cache when it was fetched before)."""
        return self.store.get(_cid(cid))

    def _download(self, cid: CID) -> bytes:
        """Ask each source in turn; the first bytes that hash to ``cid`` win. Stored in :attr:`cache`."""
        if cid.hash_code == IDENTITY:
            return cid.digest
        if not self.sources:
            raise ConfigError(
                f"no IPFS source to fetch {cid} from",
                hint="pass a gateway (--gateway URL, e.g. https://ipfs.io) or a node (--ipfs-api URL)",
            )
        outcomes: list[str] = []
        kinds: list[str] = []
        for source in self.sources:
            try:
                data = source.get_block(cid, timeout_s=self.timeout_s, max_bytes=MAX_FETCH_BLOCK)
            except Miss as miss:
                outcomes.append(str(miss))
                kinds.append("miss")
                continue
            except Failed as failed:
                outcomes.append(str(failed))
                kinds.append(
                    "timeout" if failed.timed_out else "unreachable" if failed.unreachable else "failed"
                )
                continue
            if not _matches(cid, data):
                note = (
                    f"{source.name} returned {len(data)} bytes that do not hash to {cid} (they hash to "
                    f"{raw_cid(data).multihash[2:].hex()[:16]}...)"
                )
                log.warning("%s", note)
                self.stats.untrusted.append(note)
                outcomes.append(note)
                kinds.append("corrupt")
                continue
            self._keep(cid, data, source.name)
            return data
        if "corrupt" in kinds:
            raise UntrustedBlockError(cid, outcomes)
        if "timeout" in kinds:
            raise FetchTimeoutError(cid, self.timeout_s, outcomes)
        if all(k == "unreachable" for k in kinds):
            raise SourceUnreachableError(cid, outcomes)
        if all(k == "miss" for k in kinds):
            raise ContentUnavailableError(cid, outcomes)
        raise BackendUnavailableError(
            f"no source returned block {cid}: " + "; ".join(outcomes), hint=_SOURCES_HINT
        )

    def _keep(self, cid: CID, data: bytes, source: str) -> None:
        with self._lock:
            if self.stats.bytes + len(data) > self.max_bytes:
                raise FetchLimitError(
                    f"fetching block {cid} ({len(data)} bytes) would pass this fetch's limit of {self.max_bytes} "
                    f"bytes ({self.stats.bytes} fetched already)",
                    cid=cid,
                    limit=self.max_bytes,
                )
            self.stats.bytes += len(data)
            self.stats.blocks[source] = self.stats.blocks.get(source, 0) + 1
        self.cache.put(cid, data)

    def prefetch(self, root: CID | str) -> int:
        """Ask the sources for the whole DAG under ``root`` as one CAR (each block verified and kept); returns
        the blocks kept. A source that offers no CAR, or sends a broken one, is simply skipped: the blocks are
        then fetched one by one as they are read."""
        cid = _cid(root)
        if cid.codec != DAG_PB or cid in self._prefetched:
            return 0
        self._prefetched.add(cid)
        for source in self.sources:
            kept = 0
            try:
                blocks = source.get_car(
                    cid, timeout_s=self.timeout_s, max_bytes=self.max_bytes - self.stats.bytes
                )
                if blocks is None:
                    continue
                for block_cid, data in blocks:  # CarReader has hashed each block against its CID
                    if len(data) > MAX_FETCH_BLOCK:
                        raise Failed(f"{source.name}: block {block_cid} in the CAR is {len(data)} bytes")
                    if not self.cache.has(block_cid):
                        self._keep(block_cid, data, source.name)
                        kept += 1
            except (Failed, CorruptBlockError, FetchLimitError) as exc:
                log.info("CAR of %s from %s not used: %s", cid, source.name, exc)
                continue
            if kept or self.cache.has(cid):
                return kept
        return 0

    # -- UnixFS --

    def fetch_file(self, cid: CID | str, *, max_bytes: int | None = None) -> bytes:
        """A whole file (a raw block, or a UnixFS file DAG of dag-pb nodes and raw leaves), every block verified.

        Raises:
            NodeKindError: ``cid`` is a directory. FetchLimitError: the file declares more than ``max_bytes``
            (default: what is left of the fetcher's budget), or fetching it would pass the budget. DagLimitError:
            a DAG bomb.
        """
        root = _cid(cid)
        left = self.max_bytes - self.stats.bytes
        limit = left if max_bytes is None else max_bytes
        if root.codec == RAW or root.hash_code == IDENTITY:
            return self.fetch_block(root)
        if root.codec != DAG_PB:
            raise UnsupportedCodecError(root, f"codec {root.codec_name} (not a UnixFS file)")
        info = self.reader.info(root)
        if info.kind != "file":
            raise NodeKindError(root, info.kind, "file", hint=f"fetch it with fetch_directory({root})")
        if info.size > limit:
            raise FetchLimitError(
                f"file {root} declares {info.size} bytes, more than the limit of {limit}",
                cid=root,
                limit=limit,
            )
        if info.links:
            self.prefetch(root)
        return b"".join(self.reader.read(root))

    def fetch_directory(self, cid: CID | str, *, max_bytes: int | None = None) -> dict[str, bytes]:
        """Every file under the UnixFS directory ``cid`` (basic or HAMT, recursively), by relative path
        (``"a/b.json"``), every block verified. Empty directories are left out.

        Raises:
            NodeKindError: ``cid`` is not a directory. InvalidPathError: an entry name that is not a plain name.
            FetchLimitError: the files hold more than ``max_bytes``. DagLimitError: too many entries, a bomb.
        """
        limit = self.max_bytes if max_bytes is None else max_bytes
        out: dict[str, bytes] = {}
        total = 0
        for path, file_cid in self._files(_cid(cid)):
            data = self.fetch_file(file_cid, max_bytes=limit - total)
            total += len(data)
            out[path] = data
        return out

    def tree(self, cid: CID | str) -> RemoteTree:
        """The files under the UnixFS directory ``cid`` as a mapping that fetches each file when it is read (every
        block verified): the listing is read now, the bytes only on access. For models too large to hold at once;
        the :class:`~agent.generate.published.ModelFetcher` shape (``fetch_directory``) accepts it."""
        return RemoteTree(self, dict(self._files(_cid(cid), prefetch=False)))

    def save_directory(self, cid: CID | str, dest: Path, *, max_bytes: int | None = None) -> dict[str, Path]:
        """Write every file under the UnixFS directory ``cid`` into ``dest`` (made if missing; each file
        written atomically), every block verified; returns where each relative path went. Only the blocks of one
        file at a time are in memory when the fetcher's store is on disk."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        dest = Path(dest)
        out: dict[str, Path] = {}
        total = 0
        for path, file_cid in self._files(_cid(cid)):
            data = self.fetch_file(file_cid, max_bytes=limit - total)
            total += len(data)
            target = dest.joinpath(*path.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, data)
            out[path] = target
        return out

    def _files(self, root: CID, *, prefetch: bool = True) -> Iterator[tuple[str, CID]]:
        info = self.reader.info(root)
        if info.kind != "directory":
            raise NodeKindError(root, info.kind, "directory", hint=f"fetch it with fetch_file({root})")
        if prefetch:
            self.prefetch(root)
        budget = self.reader.limits.max_listing_entries
        seen = 0
        stack: list[tuple[str, CID]] = [("", root)]
        while stack:
            prefix, directory = stack.pop()
            for link in self.reader.entries(directory):
                seen += 1
                if seen > budget:
                    raise DagLimitError(
                        f"directory {root} holds more than {budget} entries",
                        cid=root,
                        setting="ipfs.max_listing_entries",
                        limit=budget,
                    )
                name = _safe_name(link.name, directory)
                path = f"{prefix}{name}"
                child = link.cid
                kind = "file" if child.codec == RAW else self.reader.info(child).kind
                if kind == "directory":
                    stack.append((path + "/", child))
                else:
                    yield path, child


class RemoteTree(Mapping[str, bytes]):
    """Relative path -> bytes of a remote directory's files, each fetched (and verified) when it is read."""

    def __init__(self, fetcher: Fetcher, files: dict[str, CID]) -> None:
        self._fetcher = fetcher
        self._files = files

    def cid(self, path: str) -> CID:
        """The CID of the file at ``path``."""
        return self._files[path]

    def __getitem__(self, path: str) -> bytes:
        return self._fetcher.fetch_file(self._files[path])

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


class _FetchingStore:
    """A :class:`Blockstore` that fetches what its cache lacks (verified) so that the repo's reader can walk
    remote DAGs; writes go to the cache."""

    def __init__(self, fetcher: Fetcher) -> None:
        self._fetcher = fetcher
        self._cache = fetcher.cache

    def put(self, cid: CID, *parts: BytesLike) -> None:
        self._cache.put(cid, *parts)

    def get(self, cid: CID) -> bytes:
        if cid.hash_code == IDENTITY:
            return cid.digest
        if self._cache.has(cid):
            return self._cache.get(cid)
        return self._fetcher._download(cid)

    def has(self, cid: CID) -> bool:
        try:
            self.get(cid)
        except BlockNotFoundError:
            return False
        return True

    def size(self, cid: CID) -> int:
        return len(self.get(cid))

    def delete(self, cid: CID) -> bool:
        return self._cache.delete(cid)

    def iterate(self) -> Iterator[CID]:
        return self._cache.iterate()

    def batch(self) -> AbstractContextManager[None]:
        return self._cache.batch()


# -- helpers ----------------------------------------------------------------------------------------------------


def _cid(value: CID | str) -> CID:
    return value if isinstance(value, CID) else CID.parse(value)


def _matches(cid: CID, data: bytes) -> bool:
    try:
        return hash_matches(cid, data)
    except UnsupportedCodecError:
        return False  # a hash we cannot check is never accepted


def _safe_name(name: str | None, parent: CID) -> str:
    if not name or name in (".", "..") or any(c in name for c in "/\\\x00"):
        raise InvalidPathError(
            repr(name),
            f"directory {parent} holds an entry whose name is not a plain file name",
            hint="this directory cannot be fetched safely; it was not made by a UnixFS importer",
        )
    return name


def _short(exc: BaseException, limit: int = 120) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= 160 else line[:157] + "..."


def _kubo_message(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return _first_line(body)
    if isinstance(doc, dict) and isinstance(doc.get("Message"), str):
        return str(doc["Message"])
    return _first_line(body)
