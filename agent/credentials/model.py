"""What a Chrysalis Content Credential says, and what reading one back found.

The manifest signed into every generated PNG (:mod:`agent.credentials.sign`) holds:

* a ``c2pa.actions.v2`` assertion with one ``c2pa.created`` action: the IPTC digital source type
  ``trainedAlgorithmicMedia`` (:data:`TRAINED_ALGORITHMIC_MEDIA`) and a ``softwareAgent`` naming Chrysalis (its
  version) and the image model (id and weights digest, under :data:`MODEL_KEY`);
* an :data:`ASSERTION_LABEL` assertion, the :class:`CredentialClaim`: chain id, collection contract, token, stage,
  the sha256 of the inference receipt and the image model's id and weights digest;
* for an evolution, the previous stage's PNG as a ``parentOf`` ingredient whose ``instance_id`` is
  ``ipfs://<its CID>``.

Plain data only: this module imports nothing of ours.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ASSERTION_LABEL = "org.chrysalis.provenance"
"""The label of the assertion that binds an image to its token and receipt."""

CLAIM_SCHEMA = "chrysalis.content-credentials/1"
"""The ``schema`` field of that assertion: bumped if its shape ever changes."""

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
"""IPTC digital source type of media made by a trained model (what EU AI Act Art. 50 marking asks to say)."""

MODEL_KEY = "org.chrysalis.model"
"""The key of the ``softwareAgent`` object that names the image model (``model_id``, ``weights_sha256``)."""

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


@dataclass(frozen=True)
class CredentialClaim:
    """What one image's credential binds it to (the :data:`ASSERTION_LABEL` assertion).

    Attributes:
        chain_id: The chain the collection lives on.
        contract: The collection's address (``0x`` + 40 hex digits).
        token_id: The token. stage: The stage this image is the image of.
        receipt_sha256: sha256 (hex) of the inference receipt's canonical JSON: the ``provenance`` the contract
            stores, without ``0x``.
        weights_sha256: The image model's weights digest (hex), as the on-chain model registry records it.
        model_id: The image model's id (``chrysalis/sprites-32@1``, a hub id or a path).
    """

    chain_id: int
    contract: str
    token_id: int
    stage: int
    receipt_sha256: str
    weights_sha256: str
    model_id: str

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("invalid credential claim: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """What is malformed in this claim (empty when it is well formed)."""
        out = []
        for name in ("chain_id", "token_id", "stage"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                out.append(f"{name} must be a non-negative integer, not {value!r}")
        if not isinstance(self.contract, str) or not _ADDRESS.match(self.contract):
            out.append(f"contract must be a 0x-prefixed 20-byte address, not {self.contract!r}")
        for name in ("receipt_sha256", "weights_sha256"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _HEX64.match(value):
                out.append(f"{name} must be 64 lower-case hex digits, not {value!r}")
        if not isinstance(self.model_id, str) or not self.model_id:
            out.append(f"model_id must be a non-empty string, not {self.model_id!r}")
        return out

    def to_json(self) -> dict[str, Any]:
        """The assertion's data."""
        return {
            "schema": CLAIM_SCHEMA,
            "chain_id": self.chain_id,
            "contract": self.contract,
            "token_id": self.token_id,
            "stage": self.stage,
            "receipt_sha256": self.receipt_sha256,
            "weights_sha256": self.weights_sha256,
            "model_id": self.model_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CredentialClaim:
        """Read :meth:`to_json`'s object back.

        Raises:
            ValueError: another schema, a missing field or a malformed value (the message names it).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"the {ASSERTION_LABEL} assertion is not an object")
        if data.get("schema") != CLAIM_SCHEMA:
            raise ValueError(
                f"the {ASSERTION_LABEL} assertion has schema {data.get('schema')!r}, expected {CLAIM_SCHEMA!r}"
            )
        missing = [k for k in cls.__dataclass_fields__ if k not in data]
        if missing:
            raise ValueError(f"the {ASSERTION_LABEL} assertion lacks {', '.join(missing)}")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def differences(self, expected: CredentialClaim) -> list[str]:
        """The fields where this claim differs from ``expected``, as ``field: expected X, got Y``."""
        return [
            f"{name}: expected {getattr(expected, name)!r}, got {getattr(self, name)!r}"
            for name in self.__dataclass_fields__
            if _norm(name, getattr(self, name)) != _norm(name, getattr(expected, name))
        ]


def _norm(name: str, value: Any) -> Any:
    return value.lower() if name == "contract" and isinstance(value, str) else value


@dataclass(frozen=True)
class CredentialReport:
    """What :func:`agent.credentials.inspect_png` found in a PNG.

    Attributes:
        present: The PNG carries a C2PA manifest store.
        signature_valid: The active manifest's claim signature verifies with its certificate, inside the
            certificate's validity (trust is separate: ``trusted``).
        bound_to_pixels: The hard binding (``c2pa.hash.data``) matches these bytes: no byte of the image outside
            the manifest was changed since signing (a re-encoded or edited image fails it).
        trusted: The signing certificate chains to a trust anchor that was given (or to the SDK's own list).
        source_type: The ``digitalSourceType`` of the ``c2pa.created`` action (:data:`TRAINED_ALGORITHMIC_MEDIA`
            for Chrysalis' images), if any.
        claim: The Chrysalis assertion, when present and well formed.
        ingredients: Each ingredient's ``instance_id`` (``ipfs://<CID>`` for a Chrysalis parent image), else its
            title.
        problems: Everything that is not right, one line each (validation failures with their C2PA codes, a
            malformed Chrysalis assertion, ...). A missing trust anchor alone is not a problem unless anchors
            were given.
        validation_state: The SDK's overall verdict: ``Invalid``, ``Valid`` or ``Trusted`` (None: no manifest).
        software_agent: The ``c2pa.created`` action's software agent name.
        model: The software agent's model (``model_id``, ``weights_sha256``), if named.
        signer: The signing certificate's common name and issuer, as the SDK reports them.
    """

    present: bool
    signature_valid: bool
    bound_to_pixels: bool
    trusted: bool
    source_type: str | None
    claim: CredentialClaim | None
    ingredients: tuple[str, ...]
    problems: tuple[str, ...]
    validation_state: str | None = None
    software_agent: str | None = None
    model: Mapping[str, str] | None = None
    signer: str | None = None

    @property
    def valid(self) -> bool:
        """Present, signed validly, bound to these bytes, made by a trained model, and with a well-formed claim."""
        return (
            self.present
            and self.signature_valid
            and self.bound_to_pixels
            and self.source_type == TRAINED_ALGORITHMIC_MEDIA
            and self.claim is not None
        )

    def check(self, expected: CredentialClaim) -> list[str]:
        """Why these credentials do not vouch for ``expected`` (empty when they do): missing, an invalid
        signature, a broken hard binding, another source type, or a claim that names something else. Trust is not
        checked here (see ``trusted``)."""
        if not self.present:
            return list(self.problems) or ["no C2PA manifest in the image"]
        out = []
        if not self.signature_valid:
            out.append("the manifest's signature is not valid")
        if not self.bound_to_pixels:
            out.append("the manifest is not bound to these bytes (the image was re-encoded or edited)")
        if self.source_type != TRAINED_ALGORITHMIC_MEDIA:
            out.append(f"digital source type {self.source_type!r}, not trainedAlgorithmicMedia")
        if self.claim is None:
            out.append(f"no well-formed {ASSERTION_LABEL} assertion")
        else:
            out += self.claim.differences(expected)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "present": self.present,
            "signature_valid": self.signature_valid,
            "bound_to_pixels": self.bound_to_pixels,
            "trusted": self.trusted,
            "source_type": self.source_type,
            "claim": self.claim.to_json() if self.claim else None,
            "ingredients": list(self.ingredients),
            "problems": list(self.problems),
            "validation_state": self.validation_state,
            "software_agent": self.software_agent,
            "model": dict(self.model) if self.model is not None else None,
            "signer": self.signer,
        }
