"""Errors of the IPFS layer: leaves of :mod:`agent.errors` with structured fields.

Fields hold CIDs as :class:`~agent.ipfs.cid.CID` objects (or whatever the caller had, for values that failed to
parse); messages name the problem and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.errors import (
    IntegrityError,
    NotFoundError,
    PermanentError,
    RetryableError,
)

__all__ = [
    "BackendAuthError",
    "BackendCapabilityError",
    "BackendRequestError",
    "BlockNotFoundError",
    "BlockTooLargeError",
    "CIDMismatchError",
    "CarFormatError",
    "CorruptBlockError",
    "DagLimitError",
    "InvalidBlockError",
    "InvalidCIDError",
    "InvalidPathError",
    "NodeKindError",
    "NotPinnedError",
    "PathNotFoundError",
    "PinFailedError",
    "PinTimeoutError",
    "ReplicationError",
    "TooManyLinksError",
    "UnsupportedCodecError",
]


# -- the core: CIDs, blocks, paths, CARs --


class InvalidCIDError(PermanentError, ValueError):
    """A value is not a CID we can read.

    Attributes:
        value: what was given (str, bytes or other), for the message.
        reason: what is wrong with it.
    """

    def __init__(self, value: object, reason: str, *, hint: str | None = None) -> None:
        self.value = value
        self.reason = reason
        shown = value if isinstance(value, str) else repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(
            f"invalid CID {shown}: {reason}",
            hint=hint
            or "pass a CIDv1 in base32 ('bafy...', 'bafk...'), a CIDv0 ('Qm...', 46 characters) or binary CID bytes",
        )


class BlockNotFoundError(NotFoundError):
    """A block is not in the blockstore.

    Attributes:
        cid: the missing block.
        root: the DAG being walked when it was missed, if any.
    """

    def __init__(self, cid: Any, *, root: Any = None, hint: str | None = None) -> None:
        self.cid = cid
        self.root = root
        where = f" (part of the DAG under {root})" if root is not None and root != cid else ""
        super().__init__(
            f"block {cid} is not in the repo{where}",
            hint=hint
            or "add the content again (`chrysalis ipfs add`), or import its whole DAG from a CAR "
            "(`chrysalis ipfs import dag.car`) before using or pinning it",
        )


class CorruptBlockError(IntegrityError):
    """Stored or received bytes do not hash to the CID that addresses them; they are never served.

    Attributes:
        cid: the CID the bytes should match.
        path: the file holding them on disk, or ``None`` (in memory, inside a CAR).
    """

    def __init__(
        self, cid: Any, path: Path | str | None = None, *, detail: str = "", hint: str | None = None
    ) -> None:
        self.cid = cid
        self.path = Path(path) if path is not None else None
        where = f" in {self.path}" if self.path is not None else ""
        more = f": {detail}" if detail else ""
        super().__init__(
            f"block {cid}{where} is corrupt (its bytes do not hash to its CID){more}",
            hint=hint
            or (
                f"delete {self.path} and add or import the content again (e.g. from a CAR); then run gc"
                if self.path is not None
                else "fetch the data again from a source you trust"
            ),
        )


class InvalidBlockError(PermanentError, ValueError):
    """A block hashes correctly but is not valid for its codec (malformed dag-pb or UnixFS).

    Attributes:
        cid: the block, when known.
        reason: what is malformed.
    """

    def __init__(self, reason: str, *, cid: Any = None, hint: str | None = None) -> None:
        self.cid = cid
        self.reason = reason
        what = f"block {cid}" if cid is not None else "block"
        super().__init__(
            f"{what} is not valid dag-pb/UnixFS: {reason}",
            hint=hint or "this DAG was not made by a UnixFS importer; re-add the original content",
        )


class DagLimitError(PermanentError, ValueError):
    """A well-formed DAG that this node refuses to serve whole: a directory with more entries than it lists,
    or a file that declares far more bytes than it stores (repeated links: a DAG bomb).

    Attributes:
        cid: the directory or file.
        setting: the ``ipfs.*`` setting that sets the limit.
        limit: its value.
    """

    def __init__(self, message: str, *, cid: Any, setting: str, limit: int, hint: str | None = None) -> None:
        self.cid = cid
        self.setting = setting
        self.limit = limit
        super().__init__(
            message,
            hint=hint or f"raise {setting} (now {limit}) only if you trust this content",
        )


class BlockTooLargeError(PermanentError, ValueError):
    """Bytes meant to be one block exceed the limit for that use.

    Attributes:
        size: bytes given.
        limit: the largest allowed size.
    """

    def __init__(self, size: int, limit: int, *, what: str = "block", hint: str | None = None) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"{what} is {size} bytes, over the limit of {limit} bytes", hint=hint)


class UnsupportedCodecError(PermanentError, ValueError):
    """A CID's codec or hash function is one this node cannot walk or verify.

    Attributes:
        cid: the CID.
        what: the unsupported part, e.g. ``"codec 0x71"``.
    """

    def __init__(self, cid: Any, what: str, *, hint: str | None = None) -> None:
        self.cid = cid
        self.what = what
        super().__init__(
            f"{cid}: {what} is not supported here",
            hint=hint or "this node handles raw (0x55) and dag-pb (0x70) blocks hashed with sha2-256",
        )


class InvalidPathError(PermanentError, ValueError):
    """A path or directory entry name is not acceptable (``..``, empty segments, ``/`` in a name...).

    Attributes:
        path: the path or name given.
        reason: what is wrong with it.
    """

    def __init__(self, path: str, reason: str, *, hint: str | None = None) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"invalid path {path!r}: {reason}",
            hint=hint
            or "use '<cid>/<name>/...' (or '/ipfs/<cid>/...') with non-empty names and no '.' or '..'",
        )


class PathNotFoundError(NotFoundError):
    """A path segment names nothing in its directory (or the parent is not a directory).

    Attributes:
        path: the whole path asked for.
        name: the segment that failed.
        parent: the CID of the node the segment was looked up in.
    """

    def __init__(
        self, path: str, name: str, parent: Any, *, reason: str = "", hint: str | None = None
    ) -> None:
        self.path = path
        self.name = name
        self.parent = parent
        super().__init__(
            f"{path}: {reason or f'no link named {name!r} under {parent}'}",
            hint=hint or f"list the directory with `chrysalis ipfs ls {parent}` to see the names it holds",
        )


class NodeKindError(PermanentError, ValueError):
    """An operation was asked of the wrong kind of node (``cat`` of a directory, ``ls`` of a file).

    Attributes:
        cid: the node.
        kind: what it is (``"raw"``, ``"file"``, ``"directory"``).
        expected: what the operation needs.
    """

    def __init__(self, cid: Any, kind: str, expected: str, *, hint: str | None = None) -> None:
        self.cid = cid
        self.kind = kind
        self.expected = expected
        default_hint = (
            f"list it with ls({cid}) or read a file inside it: '{cid}/<name>'"
            if kind == "directory"
            else f"read it with cat({cid})"
        )
        super().__init__(
            f"{cid} is a {kind}, not a {expected}"
            + (" (this dag node is a directory)" if kind == "directory" else ""),
            hint=hint or default_hint,
        )


class NotPinnedError(NotFoundError):
    """``pin_rm`` of a CID that carries no recursive or direct pin.

    Attributes:
        cid: the CID.
    """

    def __init__(self, cid: Any, *, hint: str | None = None) -> None:
        self.cid = cid
        super().__init__(
            f"{cid} is not pinned or pinned indirectly",
            hint=hint or "see pin_ls() for the pins this repo holds; indirect pins go with their root",
        )


class TooManyLinksError(PermanentError, ValueError):
    """A CAR import would hold more blocks and links in memory than its limit allows; nothing was stored.

    Attributes:
        limit: the most blocks plus dag-pb links allowed.
    """

    def __init__(self, limit: int, *, hint: str | None = None) -> None:
        self.limit = limit
        super().__init__(
            f"the CAR holds more than {limit} blocks and links; nothing was stored",
            hint=hint
            or "split the DAG into several CARs (one per subtree), or import it with `chrysalis ipfs import`",
        )


class CarFormatError(PermanentError, ValueError):
    """A CAR file is malformed or truncated; nothing from it was stored.

    Attributes:
        reason: what is wrong.
        offset: byte offset in the CAR where it was noticed, if known.
    """

    def __init__(self, reason: str, *, offset: int | None = None, hint: str | None = None) -> None:
        self.reason = reason
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(
            f"invalid CAR{where}: {reason}",
            hint=hint
            or "export the CAR again (CARv1, e.g. `ipfs dag export <cid>`) and make sure it is sent whole",
        )


# -- backends: pinning elsewhere --


class CIDMismatchError(IntegrityError):
    """A backend computed or reported a different CID than our own importer for the same content.

    Attributes:
        expected: the CID we computed.
        actual: the CID the backend gave (``None`` if it gave none).
        backend: the backend's name.
    """

    def __init__(self, expected: Any, actual: Any, backend: str, *, hint: str | None = None) -> None:
        self.expected = expected
        self.actual = actual
        self.backend = backend
        super().__init__(
            f"{backend} gave CID {actual} where our importer computed {expected}",
            hint=hint
            or "check the backend's import options (cid-version=1, raw-leaves=true, chunker size-262144); "
            "never publish a CID you did not compute yourself",
        )


class BackendCapabilityError(PermanentError):
    """A backend was asked to do something it cannot (e.g. store content on a pin-only service)."""


class BackendRequestError(PermanentError):
    """A backend refused a request (4xx, or a reply we cannot read); retrying the same request will not help.

    Attributes:
        backend: the backend's name.
        status: the HTTP status, if there was one.
    """

    def __init__(self, message: str, *, backend: str, status: int | None, hint: str | None = None) -> None:
        self.backend = backend
        self.status = status
        super().__init__(message, hint=hint)


class BackendAuthError(PermanentError, PermissionError):
    """A backend refused our credentials (401/403).

    Attributes:
        backend: the backend's name.
        url: the URL that was refused.
    """

    def __init__(self, message: str, *, backend: str, url: str, hint: str | None = None) -> None:
        self.backend = backend
        self.url = url
        super().__init__(message, hint=hint or f"check the access token configured for {backend}")


class PinFailedError(PermanentError):
    """A backend reported that pinning a CID failed.

    Attributes:
        backend: the backend's name.
        cid: the CID.
        reason: the backend's reason.
    """

    def __init__(self, message: str, *, backend: str, cid: Any, reason: str, hint: str | None = None) -> None:
        self.backend = backend
        self.cid = cid
        self.reason = reason
        super().__init__(
            message, hint=hint or "check that the content is reachable by the backend (origins) and pin again"
        )


class PinTimeoutError(RetryableError, TimeoutError):
    """A backend did not confirm a pin in time (it may still finish).

    Attributes:
        backend: the backend's name.
        cid: the CID.
        waited: seconds waited.
    """

    def __init__(
        self, message: str, *, backend: str, cid: Any, waited: float, hint: str | None = None
    ) -> None:
        self.backend = backend
        self.cid = cid
        self.waited = waited
        super().__init__(
            message, hint=hint or "publish again later; a pin already requested is not duplicated"
        )


class ReplicationError(RetryableError):
    """Too few backends confirmed a pin; confirmed pins are kept and publishing can be retried.

    Attributes:
        cid: the CID.
        required: confirmations needed.
        outcomes: one outcome per backend (what each did).
    """

    def __init__(
        self, message: str, *, cid: Any, required: int, outcomes: Sequence[Any], hint: str | None = None
    ) -> None:
        self.cid = cid
        self.required = required
        self.outcomes = list(outcomes)
        super().__init__(message, hint=hint)
