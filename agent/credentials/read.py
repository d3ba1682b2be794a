"""Reading a PNG's Content Credentials back: :func:`inspect_png`.

The C2PA SDK (``c2pa-python``) validates the manifest: the claim signature and its certificate, the hashed links
to every assertion, and the hard binding (``c2pa.hash.data``: a hash over every byte of the file outside the
manifest). This module turns its validation results into a :class:`~agent.credentials.model.CredentialReport`
and reads the Chrysalis assertion out of the manifest. Nothing is fetched over the network.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import c2pa

from agent.credentials.model import (
    ASSERTION_LABEL,
    MODEL_KEY,
    CredentialClaim,
    CredentialReport,
)
from agent.credentials.pem import load_certificates, pem_bytes
from agent.credentials.png import has_manifest, is_png
from agent.errors import ConfigError

ACTIONS_LABELS = ("c2pa.actions.v2", "c2pa.actions")

HARD_BINDING_MATCH = frozenset(
    {"assertion.dataHash.match", "assertion.boxesHash.match", "assertion.bmffHash.match"}
)
"""Success codes that say the hard binding matches the asset's bytes."""

HARD_BINDING_FAILURES = (
    "assertion.dataHash.",
    "assertion.boxesHash.",
    "assertion.bmffHash.",
    "claim.hardBindings.",
)
"""Failure code prefixes that say it does not (or that there is none)."""

UNTRUSTED = "signingCredential.untrusted"

READ_SETTINGS: dict[str, Any] = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
"""Offline: a manifest stored elsewhere is not fetched, nor certificate revocation."""


def reader_context(trust_anchors_pem: bytes | None = None) -> c2pa.Context:
    """A C2PA context that reads offline, trusting ``trust_anchors_pem`` (PEM roots) if given."""
    config: dict[str, Any] = json.loads(json.dumps(READ_SETTINGS))
    if trust_anchors_pem:
        config["trust"] = {"trust_anchors": trust_anchors_pem.decode()}
    return c2pa.Context(settings=c2pa.Settings.from_dict(config))


def load_trust_anchors(path: Path, *, setting: str = "trust_anchors") -> bytes:
    """The PEM certificates in ``path``, re-encoded (only whole, well-formed certificates pass).

    Raises:
        NotFoundError: the file does not exist. ConfigError: it holds no (or a malformed) certificate.
    """
    return pem_bytes(load_certificates(Path(path), what="trust anchors file", setting=setting))


def inspect_png(png: bytes, *, trust_anchors: Path | None = None) -> CredentialReport:
    """What Content Credentials ``png`` carries, and whether they hold.

    Args:
        png: The PNG file's bytes, as published.
        trust_anchors: PEM root certificates to trust (the development CA for development credentials). Without
            them, a certificate not on the SDK's own list is reported ``trusted=False`` (not a problem).

    Returns:
        The report. A PNG without a manifest is ``present=False``; an unreadable or failing manifest lists why in
        ``problems`` (with the C2PA validation codes).

    Raises:
        NotFoundError, ConfigError: ``trust_anchors`` is missing or holds no well-formed certificate.
    """
    anchors = load_trust_anchors(trust_anchors) if trust_anchors is not None else None
    return inspect_bytes(png, trust_anchors_pem=anchors)


def inspect_bytes(
    png: bytes, *, trust_anchors_pem: bytes | None = None, context: c2pa.Context | None = None
) -> CredentialReport:
    """:func:`inspect_png` with the anchors already read (or a ready ``context``)."""
    if not is_png(png):
        return _absent("not a PNG image")
    try:
        if not has_manifest(png):
            return _absent("no C2PA manifest in the image")
    except ConfigError as exc:
        return _absent(exc.message)
    context = context or reader_context(trust_anchors_pem)
    try:
        with c2pa.Reader("image/png", io.BytesIO(png), context=context) as reader:
            manifest = reader.get_active_manifest() or {}
            results = reader.get_validation_results() or {}
            state = reader.get_validation_state()
    except c2pa.C2paError as exc:
        return CredentialReport(
            present=True,
            signature_valid=False,
            bound_to_pixels=False,
            trusted=False,
            source_type=None,
            claim=None,
            ingredients=(),
            problems=(f"the C2PA manifest cannot be read: {_sdk_message(exc)}",),
        )
    return _report(manifest, results, state, anchors_given=trust_anchors_pem is not None)


def _absent(problem: str) -> CredentialReport:
    return CredentialReport(
        present=False,
        signature_valid=False,
        bound_to_pixels=False,
        trusted=False,
        source_type=None,
        claim=None,
        ingredients=(),
        problems=(problem,),
    )


def _codes(entries: Sequence[Mapping[str, Any]] | None) -> list[tuple[str, str]]:
    return [(str(e.get("code", "")), str(e.get("explanation", ""))) for e in entries or ()]


def _report(
    manifest: Mapping[str, Any], results: Mapping[str, Any], state: str | None, *, anchors_given: bool
) -> CredentialReport:
    active = results.get("activeManifest") or {}
    success = {code for code, _ in _codes(active.get("success"))}
    failures = _codes(active.get("failure"))
    problems = [f"{code}: {why}" for code, why in failures if code != UNTRUSTED or anchors_given]
    for delta in results.get("ingredientDeltas") or ():
        for code, why in _codes((delta.get("validationDeltas") or {}).get("failure")):
            if code != UNTRUSTED or anchors_given:
                problems.append(f"ingredient {delta.get('ingredientAssertionURI', '?')}: {code}: {why}")

    binding_failed = any(code.startswith(HARD_BINDING_FAILURES) for code, _ in failures)
    bound = bool(success & HARD_BINDING_MATCH) and not binding_failed
    other_failures = [
        code for code, _ in failures if code != UNTRUSTED and not code.startswith(HARD_BINDING_FAILURES)
    ]
    signature_valid = "claimSignature.validated" in success and not other_failures
    trusted = "signingCredential.trusted" in success and signature_valid

    source_type = software = None
    model: dict[str, str] | None = None
    claim: CredentialClaim | None = None
    for assertion in manifest.get("assertions") or ():
        label, data = assertion.get("label"), assertion.get("data")
        if label in ACTIONS_LABELS and isinstance(data, Mapping):
            created = next(
                (
                    a
                    for a in data.get("actions") or ()
                    if isinstance(a, Mapping) and a.get("action") == "c2pa.created"
                ),
                None,
            )
            if created is not None:
                source_type = created.get("digitalSourceType")
                agent = created.get("softwareAgent")
                if isinstance(agent, Mapping):
                    software = agent.get("name")
                    named = agent.get(MODEL_KEY)
                    if isinstance(named, Mapping):
                        model = {str(k): str(v) for k, v in named.items()}
                elif isinstance(agent, str):
                    software = agent
        elif label == ASSERTION_LABEL:
            try:
                claim = CredentialClaim.from_json(data if isinstance(data, Mapping) else {})
            except (ValueError, TypeError) as exc:
                problems.append(str(exc))
    if source_type is None:
        problems.append("no c2pa.created action with a digital source type")
    if claim is None and not any(ASSERTION_LABEL in p for p in problems):
        problems.append(f"no {ASSERTION_LABEL} assertion (not an image Chrysalis signed)")
    ingredients = tuple(
        str(i.get("instance_id") or i.get("title") or "")
        for i in manifest.get("ingredients") or ()
        if isinstance(i, Mapping)
    )
    info = manifest.get("signature_info") or {}
    signer = None
    if info:
        signer = f"{info.get('common_name') or '?'} (issued by {info.get('issuer') or '?'})"
    return CredentialReport(
        present=True,
        signature_valid=signature_valid,
        bound_to_pixels=bound,
        trusted=trusted,
        source_type=source_type,
        claim=claim,
        ingredients=ingredients,
        problems=tuple(problems),
        validation_state=state,
        software_agent=software,
        model=model,
        signer=signer,
    )


def _sdk_message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
