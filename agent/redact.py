"""Credentials out of what Chrysalis shows and logs: the one place URLs are redacted.

Hosted JSON-RPC providers put the API key in the URL: Infura and Alchemy in the path
(``https://mainnet.infura.io/v3/<key>``, ``https://eth-mainnet.g.alchemy.com/v2/<key>``), others in the query
(``?apikey=...``) or as user info (``https://user:secret@host``). So wherever a URL reaches an error message, a
log line, a page or a report, it is shown as its scheme and host[:port] only: :func:`redact_url` drops the user
info, the path, the query and the fragment, and marks the cut with ``/…`` (``https://mainnet.infura.io/…``).
:data:`HIDDEN_NOTE` says so in words, for hints. :func:`redact_text` does the same to every URL inside a piece of
text (an exception's message from requests or urllib3, a stored job error).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["HIDDEN", "HIDDEN_NOTE", "redact_text", "redact_url"]

HIDDEN = "…"
"""What stands for the hidden part of a URL."""

HIDDEN_NOTE = "the URL's path and query are hidden (they may hold an API key)"
"""Words for a hint that shows a URL with :func:`redact_url` (``/…`` is where its path and query were)."""

_URL = re.compile(r"\b(?:https?|wss?)://[^\s'\"<>()\[\]{}]+", re.IGNORECASE)
_TRAILING = ".,;:!?"


def redact_url(url: str) -> str:
    """``url`` as scheme and host[:port] only: user info, path, query and fragment are dropped, and ``/…`` marks
    that something was (``https://mainnet.infura.io/v3/KEY`` -> ``https://mainnet.infura.io/…``).

    A URL with nothing to hide comes back unchanged (``http://127.0.0.1:8545``); text that is not a URL (a
    multiaddr, a provider's class name) too.
    """
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        scheme = url.split("://", 1)[0]
        return f"{scheme}://{HIDDEN}"
    host = parts.netloc.rpartition("@")[2]
    kept = f"{parts.scheme}://{host}"
    dropped = "@" in parts.netloc or parts.path not in ("", "/") or parts.query or parts.fragment
    if dropped:
        return f"{kept}/{HIDDEN}"
    return kept + parts.path


def redact_text(text: str, *urls: str | None) -> str:
    """``text`` with every http(s)/ws(s) URL in it redacted (:func:`redact_url`).

    ``urls`` are endpoints the text may quote in pieces: requests and urllib3 write only the path and query
    (``Max retries exceeded with url: /v3/KEY``), so those pieces (and any user info) are hidden too.
    """
    for url in urls:
        if not url or "://" not in url:
            continue
        text = text.replace(url, redact_url(url))
        try:
            parts = urlsplit(url.strip())
        except ValueError:
            continue
        pieces = []
        if parts.query:
            pieces.append(f"{parts.path}?{parts.query}")
            pieces.append(parts.query)
        if len(parts.path) > 1:
            pieces.append(parts.path)
        userinfo = parts.netloc.rpartition("@")[0]
        if userinfo:
            pieces.append(userinfo)
        for piece in pieces:
            text = text.replace(piece, HIDDEN)
    return _URL.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    found = match.group(0)
    body = found.rstrip(_TRAILING)
    return redact_url(body) + found[len(body) :]
