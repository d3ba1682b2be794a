"""Verify one version of a token from public sources: the chain, and IPFS content checked block by block.

:func:`verify_token` is the one path behind ``chrysalis verify`` (with the operator's config or with nothing but
``--rpc``, ``--contract`` and ``--gateway``) and the studio's Verify button. It

1. checks the node and the contract (:meth:`CollectionReader.connect`: chain id, code, ERC-721 + ERC-4906, the
   model registry), then reads the token (digest, stage, ``tokenURI``, ``modelOf``) at one block;
2. fetches the metadata by the CID its on-chain digest names, and every earlier version by the ``parent`` links,
   each block checked against its CID (:class:`~agent.ipfs.fetch.Fetcher`: a gateway is never trusted);
3. checks what ties the version to the chain and to its neighbours: the provenance written on-chain is the
   receipt's sha256, every version was written on-chain for this token, the stage, the input snapshot's chain and
   block, the request and its seed, the model in the collection's registry, the previous version's image as the
   evolution's start, the image and the lore the metadata publishes, the image's Content Credentials (C2PA), and
   the collection's ERC-7007 ``verify`` for the version (true once the operator recorded it with
   ``chrysalis aigc record``; not recorded is said, and does not change the exit code);
4. replays the receipt canonically (:func:`agent.generate.verify.verify`) and names every field that differs.

Exit codes (:class:`~agent.verify.report.StageCheck`): 0 match, 1 mismatch, 2 cannot reproduce here; errors
(unknown or burnt token, wrong chain, unreachable node or gateway, a gateway's wrong bytes) are raised and exit 3.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.credentials import TRAINED_ALGORITHMIC_MEDIA, CredentialClaim, inspect_png, png_pixels_sha256
from agent.domain import canonical_json, sha256_hex
from agent.erc7007 import aigc_triple_for_metadata, erc7007_verify
from agent.errors import ChrysalisError, ConfigError, NotFoundError
from agent.gates.reroll import find_reroll
from agent.generate.published import PublishedModelError
from agent.generate.receipt import ImageRecord, InferenceReceipt
from agent.generate.verify import FieldMismatch, ModelUnavailableError, VerifyResult, load_models, verify
from agent.ipfs.fetch import Fetcher
from agent.metadata import (
    MAX_METADATA_BYTES,
    HistoryEntry,
    cid_from_digest,
    digest_from_cid,
    history,
    parse_metadata,
)
from agent.verify.chain import CollectionReader, MetadataWrite, RegistryRecord, TokenFacts
from agent.verify.models import ModelLocation, ModelMissing, locate_image_model
from agent.verify.report import Check, StageCheck, Status

MAX_IMAGE_BYTES = 64 << 20
"""The largest image verify fetches (a 4096 x 4096 RGBA PNG is at most 64 MiB)."""


class _Findings:
    """The checks made so far and the fields that differ."""

    def __init__(self) -> None:
        self.checks: list[Check] = []
        self.mismatches: list[FieldMismatch] = []
        self.checked: list[str] = []

    def add(self, check: Check) -> None:
        self.checks.append(check)

    def compare(self, name: str, expected: Any, actual: Any, ok: str, bad: str | None = None) -> bool:
        self.checked.append(name)
        if expected == actual:
            self.checks.append(Check(name, "ok", ok))
            return True
        self.mismatches.append(FieldMismatch(name, expected, actual))
        self.checks.append(Check(name, "mismatch", bad or f"expected {expected!r}, found {actual!r}"))
        return False

    def differ(self, name: str, expected: Any, actual: Any, detail: str) -> None:
        self.checked.append(name)
        self.mismatches.append(FieldMismatch(name, expected, actual))
        self.checks.append(Check(name, "mismatch", detail))


@contextmanager
def _fetching(what: str) -> Iterator[None]:
    """Say which link was being fetched when a fetch fails (the error keeps its kind, hence its exit code)."""
    try:
        yield
    except ChrysalisError as exc:
        exc.message = f"{what}: {exc.message}"
        exc.args = (exc.message,)
        raise


def verify_token(
    reader: CollectionReader,
    fetcher: Fetcher,
    token_id: int,
    stage: int | None = None,
    *,
    cache_dir: Path | None = None,
    image_model: str | None = None,
    lore_model: str | None = None,
    trust_anchors: Path | None = None,
) -> StageCheck:
    """Verify ``token_id`` at ``stage`` (default: its current stage) from the chain and IPFS.

    Args:
        reader: The collection on its node (not connected yet: this checks chain and contract first).
        fetcher: Verified IPFS access (gateways, a Kubo API, a local repo).
        cache_dir: Converted-model cache for the embedded lore model.
        image_model, lore_model: Where this machine keeps the receipt's models, when not where recorded.
        trust_anchors: PEM root certificates the images' Content Credentials may chain to.

    Raises:
        NotFoundError: no such token, burnt, no metadata yet, no such stage, content no source has.
        ConfigError: the node serves another chain, no LivingCollection at the address, a malformed receipt.
        BackendUnavailableError: the node or every IPFS source is unreachable or too slow.
        IntegrityError: the IPFS sources returned bytes that do not hash to the CID asked for.
    """
    started = time.monotonic()
    found = _Findings()
    for check in reader.connect():
        found.add(check)
    facts = reader.token(token_id)
    if not facts.has_metadata:
        raise NotFoundError(
            f"token {token_id} has no metadata yet",
            hint="it is verifiable once it has evolved (its tokenURI is then ipfs://...)",
        )
    current = cid_from_digest(bytes.fromhex(facts.digest[2:]))
    found.compare(
        "chain.tokenURI",
        f"ipfs://{current}",
        facts.token_uri,
        f"tokenURI is ipfs://{current}, the CID of the digest metadataDigestOf stores",
    )

    fetched: dict[str, bytes] = {}

    def fetch_metadata(cid: str) -> bytes:
        with _fetching(f"fetching metadata {cid} of token {token_id}"):
            fetched[cid] = fetcher.fetch_file(cid, max_bytes=MAX_METADATA_BYTES)
            return fetched[cid]

    entries = list(reversed(history(fetch_metadata, current)))  # oldest first
    found.add(
        Check(
            "ipfs.metadata",
            "ok",
            f"{len(entries)} version{'s' if len(entries) != 1 else ''} fetched by CID through the parent links, "
            "every block checked against its CID",
        )
    )
    index = _select(entries, token_id, stage)
    entry = entries[index]
    md = entry.metadata
    receipt = _receipt(md.receipt, entry.cid)
    writes = reader.writes(token_id)
    write = _links_to_chain(found, reader, fetcher, facts, entries, index, writes, receipt)
    _model_in_registry(found, reader, facts, write, index == len(entries) - 1, receipt)
    found.compare(
        "metadata.models",
        _roles(receipt),
        {role: ref.weights_sha256 for role, ref in md.models.items()},
        "the metadata names the receipt's models (weights digests)",
    )
    parent = entries[index - 1] if index > 0 else None
    png = _links_to_content(found, fetcher, token_id, entry, parent, receipt)
    _credentials(found, png, reader, facts, entry, parent, receipt, trust_anchors)
    _erc7007(found, reader, entry, fetched[entry.cid], index == len(entries) - 1)

    location: ModelLocation | ModelMissing | None = None
    if receipt.image is not None:
        ref = receipt.image.model
        record = reader.model_record(reader.model_id_of(ref.weights_sha256))
        try:
            location = locate_image_model(
                ref, record, fetcher=fetcher, cache_dir=cache_dir, override=image_model
            )
        except PublishedModelError as exc:  # the registry points to other files than the registered model
            found.differ(
                "image.model.weights_sha256",
                ref.weights_sha256,
                exc.message,
                f"the model the registry publishes at {record.manifest_uri if record else '?'} is not the "
                f"registered one: {exc.message}",
            )
            location = ModelMissing("the published image model is not the registered one", exc.hint or "")
    result, hint = _replay(found, fetcher, receipt, md.inputs, location, lore_model, cache_dir)

    mismatches = found.mismatches + list(result.mismatches)
    match = result.match and not found.mismatches
    note = result.note
    if found.mismatches and not result.mismatches:
        note = (
            "MISMATCH: "
            + ", ".join(m.field for m in found.mismatches)
            + "; the replay itself: "
            + result.note
        )
    sources = fetcher.stats.by_source()
    if sources:
        note += f" (IPFS: {sources})"
    return StageCheck(
        token_id=token_id,
        stage=md.stage,
        cid=entry.cid,
        match=match,
        reproducible=result.reproducible,
        mismatches=mismatches,
        note=note,
        checked=found.checked + list(result.checked),
        seconds=time.monotonic() - started,
        checks=found.checks,
        chain_id=reader.chain_id,
        contract=reader.address,
        hint=hint,
    )


def _select(entries: list[HistoryEntry], token_id: int, stage: int | None) -> int:
    if stage is None:
        return len(entries) - 1
    for n in range(len(entries) - 1, -1, -1):
        if entries[n].metadata.stage == stage:
            return n
    stages = ", ".join(str(e.metadata.stage) for e in entries)
    raise NotFoundError(f"token {token_id} has no stage {stage}", hint=f"its timeline has stages {stages}")


def _receipt(data: Mapping[str, Any], cid: str) -> InferenceReceipt:
    try:
        return InferenceReceipt.from_json(dict(data))
    except ChrysalisError as exc:
        raise ConfigError(
            f"the receipt in metadata {cid} cannot be read: {exc.message}",
            hint=exc.hint or "it was not made by a Chrysalis agent this version can replay",
        ) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"the receipt in metadata {cid} is malformed ({type(exc).__name__}: {exc})",
            hint="it was not made by a Chrysalis agent this version can replay",
        ) from None


def _roles(receipt: InferenceReceipt) -> dict[str, str]:
    out = {}
    if receipt.image is not None:
        out["image"] = receipt.image.model.weights_sha256
    if receipt.lore is not None:
        out["lore"] = receipt.lore.model.weights_sha256
    return out


def _digest(cid: str) -> str:
    return "0x" + digest_from_cid(cid).hex()


def _links_to_chain(
    found: _Findings,
    reader: CollectionReader,
    fetcher: Fetcher,
    facts: TokenFacts,
    entries: list[HistoryEntry],
    index: int,
    writes: list[MetadataWrite],
    receipt: InferenceReceipt,
) -> MetadataWrite | None:
    """The write of this version on-chain (its provenance, stage, request and seed), every version written for
    this token, and the input snapshot's chain and block."""
    entry = entries[index]
    md = entry.metadata
    inputs = md.inputs
    found.compare(
        "receipt.token_id",
        facts.token_id,
        receipt.seed.token_id,
        f"the receipt is token {facts.token_id}'s (its seed derives from this token id)",
    )
    by_digest = {w.digest.lower(): w for w in writes}
    write = by_digest.get(_digest(entry.cid))
    if write is None:
        found.differ(
            "chain.provenance",
            f"a write of digest {_digest(entry.cid)} for token {facts.token_id}",
            None,
            f"no fulfilment or refresh of token {facts.token_id} wrote this version's digest on chain "
            f"{reader.chain_id} (searched blocks {reader.from_block}..{reader.block})",
        )
    elif write.kind == "evolved":
        _evolved(found, reader, write, md.stage, inputs, md.receipt, receipt)
    else:
        _refreshed(found, reader, fetcher, write, entry, receipt)
    if index == len(entries) - 1:
        found.compare("token.stage", facts.stage, md.stage, f"stageOf({facts.token_id}) is {facts.stage}")
    missing = [e.cid for e in entries if _digest(e.cid) not in by_digest]
    if missing:
        found.differ(
            "history.onchain",
            f"every version in the parent chain written on-chain for token {facts.token_id}",
            missing,
            f"never written for token {facts.token_id}: {', '.join(missing)}",
        )
    else:
        found.checked.append("history.onchain")
        found.add(
            Check(
                "history.onchain",
                "ok",
                "the one version was written on-chain for this token"
                if len(entries) == 1
                else f"each of the {len(entries)} versions in the parent chain was written on-chain for this token",
            )
        )
    found.compare(
        "metadata.inputs.chain_id",
        reader.chain_id,
        inputs.get("chain_id"),
        f"the inputs were read on chain {reader.chain_id}",
    )
    number = inputs.get("block_number")
    if isinstance(number, int) and number >= 0:
        on_chain = reader.block_hash(number) if number <= reader.block else None
        found.compare(
            "metadata.inputs.block_hash",
            on_chain,
            str(inputs.get("block_hash") or "").lower() or None,
            f"the inputs were read at block {number}, a block of this chain ({on_chain})",
        )
    return write


def _evolved(
    found: _Findings,
    reader: CollectionReader,
    write: MetadataWrite,
    stage: int,
    inputs: Mapping[str, Any],
    published: Mapping[str, Any],
    receipt: InferenceReceipt,
) -> None:
    """A fulfilment: its provenance is the sha256 of the receipt as published; the receipt's seed is its request's
    (or a reroll of it); the inputs were read at the request's block."""
    provenance = "0x" + sha256_hex(canonical_json(dict(published)))
    label = f"request {write.request_id:#x}" if write.request_id is not None else "a request"
    found.compare(
        "chain.provenance",
        write.provenance.lower(),
        provenance,
        f"{label} fulfilled in tx {write.tx_hash} (block {write.block_number}): the provenance it wrote is the "
        "sha256 of the receipt",
        f"the provenance written in tx {write.tx_hash} (block {write.block_number}) is {write.provenance}, but the "
        f"published receipt hashes to {provenance}",
    )
    if write.stage is not None:
        found.compare("chain.stage", write.stage, stage, f"the fulfilment moved the token to stage {stage}")
    request = reader.request(write.request_id) if write.request_id is not None else None
    if request is None:
        found.differ(
            "chain.seed",
            f"the EvolutionRequested log of {label}",
            None,
            f"no EvolutionRequested log of {label} since block {reader.from_block}: its seed cannot be checked",
        )
        return
    seed = str(receipt.seed.onchain_seed).lower()
    n = find_reroll(request.seed, seed)
    if n is None:
        found.differ(
            "chain.seed",
            request.seed,
            seed,
            f"the receipt's seed {seed} is neither {label}'s on-chain seed {request.seed} nor one of its rerolls",
        )
    else:
        found.checked.append("chain.seed")
        said = (
            "the request's on-chain seed"
            if n == 0
            else f"reroll {n} of the request's on-chain seed (a curator's"
        )
        found.add(
            Check("chain.seed", "ok", f"the receipt's seed is {said}{')' if n else ''} ({request.seed})")
        )
    found.compare(
        "chain.request_block",
        request.block_number,
        inputs.get("block_number"),
        f"the inputs were read at block {request.block_number}, where {label} was opened",
    )


def _refreshed(
    found: _Findings,
    reader: CollectionReader,
    fetcher: Fetcher,
    write: MetadataWrite,
    entry: HistoryEntry,
    receipt: InferenceReceipt,
) -> None:
    """A ``refreshMetadata`` write: its seed is the hash of the block it read the inputs at, and its provenance is
    the sha256 of its batch (:func:`refresh_provenance`), recomputed from the calldata and each token's receipt."""
    block_hash = str(entry.metadata.inputs.get("block_hash") or "").lower()
    found.compare(
        "chain.seed",
        block_hash,
        str(receipt.seed.onchain_seed).lower(),
        "a refresh: the receipt's seed is the hash of the block the inputs were read at",
    )
    batch = reader.refresh_batch(write.tx_hash)
    if len(batch) > MAX_REFRESH_BATCH:
        found.add(
            Check(
                "chain.provenance",
                "skipped",
                f"the refresh in tx {write.tx_hash} wrote {len(batch)} tokens, more than verify fetches "
                f"({MAX_REFRESH_BATCH}) to recompute its provenance",
            )
        )
        return
    items = []
    for item in batch:
        if item.token_id == write.token_id and item.digest == write.digest:
            sha = sha256_hex(canonical_json(dict(entry.metadata.receipt)))
        else:
            cid = cid_from_digest(bytes.fromhex(item.digest[2:]))
            with _fetching(f"fetching metadata {cid} of token {item.token_id} (refreshed in the same batch)"):
                other = parse_metadata(fetcher.fetch_file(cid, max_bytes=MAX_METADATA_BYTES), cid=cid)
            sha = sha256_hex(canonical_json(dict(other.receipt)))
        items.append((item.token_id, item.digest, sha))
    found.compare(
        "chain.provenance",
        write.provenance.lower(),
        refresh_provenance(block_hash, items),
        f"refresh in tx {write.tx_hash} (block {write.block_number}): the provenance it wrote is the sha256 of its "
        f"batch of {len(items)} token{'s' if len(items) != 1 else ''} (each with its receipt's sha256)",
        f"the provenance written by the refresh in tx {write.tx_hash} is {write.provenance}, but its batch of "
        f"{len(items)} (with the published receipts) hashes to {refresh_provenance(block_hash, items)}",
    )


REFRESH_PROVENANCE_SCHEMA = "chrysalis.refresh-batch/1"
"""The ``schema`` of a refresh batch's provenance document (:data:`agent.refresh.runner.PROVENANCE_SCHEMA`)."""

MAX_REFRESH_BATCH = 1_000
"""The most tokens of one refresh verify fetches to recompute its provenance."""


def refresh_provenance(block_hash: str, items: list[tuple[int, str, str]]) -> str:
    """The provenance a ``refreshMetadata`` transaction writes: ``0x`` + sha256 of the canonical JSON
    ``{"schema", "block_hash", "items": [[token id, metadata digest, receipt sha256], ...]}`` in calldata order."""
    doc = {"schema": REFRESH_PROVENANCE_SCHEMA, "block_hash": block_hash, "items": [list(i) for i in items]}
    return "0x" + hashlib.sha256(canonical_json(doc)).hexdigest()


def _model_in_registry(
    found: _Findings,
    reader: CollectionReader,
    facts: TokenFacts,
    write: MetadataWrite | None,
    is_current: bool,
    receipt: InferenceReceipt,
) -> RegistryRecord | None:
    """The receipt's image model is the one the collection's registry records for this version."""
    if receipt.image is None:
        found.add(Check("chain.model", "skipped", "the receipt has no image model"))
        return None
    weights = receipt.image.model.weights_sha256
    if is_current and write is not None and write.kind == "evolved" and facts.model_id:
        record = reader.model_record(facts.model_id)
        found.compare(
            "chain.model",
            record.weights_sha256 if record else None,
            weights,
            f"modelOf({facts.token_id}) is model {facts.model_id}: weights sha256 {weights}, manifest "
            f"{record.manifest_uri if record else '?'!r}",
            f"modelOf({facts.token_id}) is model {facts.model_id} with weights sha256 "
            f"{record.weights_sha256 if record else '?'}, but the receipt's image model has {weights}",
        )
        return record
    model_id = reader.model_id_of(weights)
    record = reader.model_record(model_id)
    if record is None:
        found.differ(
            "chain.model",
            "an image model registered in the collection's model registry",
            weights,
            f"the receipt's image model (weights sha256 {weights}) is not in the collection's model registry",
        )
        return None
    found.checked.append("chain.model")
    found.add(
        Check(
            "chain.model",
            "ok",
            f"the image model is registered as model {model_id}: weights sha256 {weights}, manifest "
            f"{record.manifest_uri!r}",
        )
    )
    return record


def _links_to_content(
    found: _Findings,
    fetcher: Fetcher,
    token_id: int,
    entry: HistoryEntry,
    parent: HistoryEntry | None,
    receipt: InferenceReceipt,
) -> bytes | None:
    """The previous version's image as the evolution's start; the image and lore the metadata publishes."""
    md = entry.metadata
    png = None
    if receipt.image is not None:
        init_cid = receipt.image.request.get("init_image_cid")
        expected = parent.metadata.image_cid if parent is not None else None
        found.compare(
            "parent.image",
            expected,
            init_cid,
            f"the evolution started from the previous version's image {expected}"
            if expected
            else "a first version: the image was made from noise, not from an earlier image",
            f"the receipt started from image {init_cid}, but the previous version ({parent.cid if parent else 'none'}) "
            f"shows {expected}",
        )
        with _fetching(f"fetching the image {md.image_cid} of token {token_id} stage {md.stage}"):
            png = fetcher.fetch_file(md.image_cid, max_bytes=MAX_IMAGE_BYTES)
        _image_matches(found, png, receipt.image, md.image_cid)
    if receipt.lore is not None:
        found.compare(
            "metadata.description",
            receipt.lore.output.get("text"),
            md.description,
            "the metadata's lore is the receipt's text",
        )
    return png


def _image_matches(found: _Findings, png: bytes, part: ImageRecord, cid: str) -> None:
    want_png = part.output.get("png_sha256")
    got_png = hashlib.sha256(png).hexdigest()
    found.checked.append("metadata.image")
    if got_png == want_png:
        found.add(Check("metadata.image", "ok", f"the image {cid} is the PNG the receipt hashed"))
        return
    pixels = _pixels(png, part.output.get("width"), part.output.get("height"))
    if pixels is not None and pixels == part.output.get("pixels_sha256"):
        found.add(
            Check(
                "metadata.image",
                "ok",
                f"the image {cid} has the receipt's pixels (its PNG bytes differ from the receipt's: signed "
                "Content Credentials, or another encoder)",
            )
        )
        return
    found.mismatches.append(FieldMismatch("metadata.image", want_png, got_png))
    found.add(
        Check(
            "metadata.image",
            "mismatch",
            f"the image {cid} is neither the PNG the receipt hashed ({want_png}) nor its pixels",
        )
    )


def _pixels(png: bytes, width: Any, height: Any) -> str | None:
    """sha256 of the PNG's native pixels (:func:`agent.credentials.png_pixels_sha256`), None when it has none."""
    if not isinstance(width, int) or not isinstance(height, int):
        return None
    try:
        return png_pixels_sha256(png, width=width, height=height)
    except ChrysalisError:
        return None


def _credentials(
    found: _Findings,
    png: bytes | None,
    reader: CollectionReader,
    facts: TokenFacts,
    entry: HistoryEntry,
    parent: HistoryEntry | None,
    receipt: InferenceReceipt,
    trust_anchors: Path | None,
) -> None:
    """The Content Credentials (C2PA) of the published image: signed, bound to these bytes, made by a trained model,
    and claiming this chain, contract, token, stage, receipt and model (and, for an evolution, the previous image as
    its ingredient). An image without credentials is reported as such, not as a mismatch; a signer that is not on a
    trust list (development credentials) is said, not failed."""
    if png is None or receipt.image is None:
        found.add(Check("credentials", "skipped", "no image to read Content Credentials from"))
        return
    report = inspect_png(png, trust_anchors=trust_anchors)
    if not report.present:
        found.add(
            Check("credentials", "skipped", f"no Content Credentials in the image ({report.problems[0]})")
        )
        return
    md = entry.metadata
    model = receipt.image.model
    expected = CredentialClaim(
        chain_id=int(reader.chain_id or 0),
        contract=reader.address,
        token_id=facts.token_id,
        stage=md.stage,
        receipt_sha256=sha256_hex(canonical_json(dict(md.receipt))),
        weights_sha256=model.weights_sha256,
        model_id=model.model_id,
    )
    wrong: list[str] = []
    if not report.signature_valid:
        wrong.append("the signature does not verify")
    if not report.bound_to_pixels:
        wrong.append("the hard binding fails: the image was changed after signing")
    if report.source_type != TRAINED_ALGORITHMIC_MEDIA:
        wrong.append(f"the digital source type is {report.source_type!r}, not trainedAlgorithmicMedia")
    if report.claim is None:
        wrong.append("no well-formed Chrysalis claim")
    else:
        wrong += report.claim.differences(expected)
    if parent is not None and f"ipfs://{parent.metadata.image_cid}" not in report.ingredients:
        wrong.append(f"the previous image ipfs://{parent.metadata.image_cid} is not its ingredient")
    found.checked.append("credentials")
    if wrong:
        shown = "; ".join(wrong + [p for p in report.problems if p not in wrong][:3])
        found.mismatches.append(FieldMismatch("credentials", expected.to_json(), shown))
        found.add(Check("credentials", "mismatch", f"the image's Content Credentials do not hold: {shown}"))
        return
    trust = (
        "a trusted signer"
        if report.trusted
        else "on no trust list given here (development credentials? pass --trust-anchors)"
    )
    found.add(
        Check(
            "credentials",
            "ok",
            f"signed by {report.signer or '?'}, {trust}; bound to these pixels; trainedAlgorithmicMedia; claims "
            f"this chain, collection, token {facts.token_id} stage {md.stage}, receipt and model",
        )
    )


def _erc7007(
    found: _Findings, reader: CollectionReader, entry: HistoryEntry, data: bytes, is_current: bool
) -> None:
    """The collection's ERC-7007 ``verify(prompt, aigcData, proof)`` for this version, at the block of the other
    reads: true once the agent recorded it (``addAigcData``). Not recorded, an earlier version or a collection
    without ERC-7007 is said, not failed: the off-chain checks above are the proof, the record only announces it."""
    if not is_current:
        found.add(
            Check(
                "erc7007",
                "skipped",
                "an earlier version: the collection's ERC-7007 verify answers for the current version only",
            )
        )
        return
    try:
        triple = aigc_triple_for_metadata(data)
    except ConfigError as exc:
        found.add(Check("erc7007", "skipped", f"no ERC-7007 triple for this version: {exc.message}"))
        return
    try:
        recorded = erc7007_verify(reader.rpc.w3, reader.address, triple, block_identifier=reader.block)
    except ConfigError:
        found.add(
            Check(
                "erc7007",
                "skipped",
                "the collection answers no ERC-7007 verify (deployed before ERC-7007): nothing recorded on-chain",
            )
        )
        return
    if not recorded:
        found.add(
            Check(
                "erc7007",
                "skipped",
                "not recorded on-chain (the operator runs `chrysalis aigc record`): verify(prompt, aigcData, proof) "
                f"is false at block {reader.block}",
            )
        )
        return
    found.checked.append("erc7007")
    found.add(
        Check(
            "erc7007",
            "ok",
            f"recorded and verified on-chain: verify(prompt, aigcData, proof) is true at block {reader.block} (the "
            f"agent recorded token {triple.token_id} stage {triple.stage}: this metadata, this receipt)",
        )
    )


def _replay(
    found: _Findings,
    fetcher: Fetcher,
    receipt: InferenceReceipt,
    inputs: Mapping[str, Any],
    location: ModelLocation | ModelMissing | None,
    lore_model: str | None,
    cache_dir: Path | None,
) -> tuple[VerifyResult, str | None]:
    """The canonical replay, or why it cannot run here (then the result is "not reproducible", with a hint)."""
    if isinstance(location, ModelMissing):
        reason = f"CANNOT REPRODUCE HERE: {location.reason}"
        found.add(Check("replay", "not reproducible", reason))
        return VerifyResult(False, [], reason, reproducible=False), location.hint or None
    image_model = location.path if location is not None else None
    try:
        load_models(receipt, image_model=image_model, lore_model=lore_model, cache_dir=cache_dir)
    except ModelUnavailableError as exc:
        reason = f"CANNOT REPRODUCE HERE: {exc.message}"
        found.add(Check("replay", "not reproducible", reason))
        return VerifyResult(False, [], reason, reproducible=False), exc.hint

    def init_image(sha256: str, cid: str | None) -> bytes:
        if not cid:
            raise ConfigError(
                f"the receipt names a previous image (sha256 {sha256}) but no CID",
                hint="this receipt cannot be replayed from IPFS alone",
            )
        with _fetching(f"fetching the previous image {cid}"):
            return fetcher.fetch_file(cid, max_bytes=MAX_IMAGE_BYTES)

    loader: Callable[[str, str | None], bytes] = init_image
    result = verify(
        receipt,
        init_image_loader=loader,
        snapshot=dict(inputs),
        image_model=image_model,
        lore_model=lore_model,
        cache_dir=cache_dir,
    )
    where = f" (image model: {location.how})" if location is not None else ""
    status: Status
    if result.mismatches:
        status = "mismatch"
    elif result.match:
        status = "ok"
    else:
        status = "not reproducible"
    found.add(Check("replay", status, f"{len(result.checked)} receipt fields compared{where}"))
    return result, None
