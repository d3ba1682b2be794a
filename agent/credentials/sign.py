"""Signing Content Credentials into a PNG: :class:`ContentCredentials`.

One instance holds the key and certificate chain (checked when loaded, then proven by signing and reading back a
1x1 image), and signs each image the generate stage makes with the manifest :mod:`agent.credentials.model`
describes. The automatic thumbnail is off (it costs ~45 ms and 40-127 KB per image; without it a manifest adds
about 3.6 KB). Signatures are not deterministic (the SDK salts every assertion), so two signings of one PNG give
different files: compare what :func:`~agent.credentials.read.inspect_png` reads, never the bytes.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import c2pa
from PIL import Image

from agent import __version__
from agent.credentials.model import (
    ASSERTION_LABEL,
    MODEL_KEY,
    TRAINED_ALGORITHMIC_MEDIA,
    CredentialClaim,
    CredentialReport,
)
from agent.credentials.pem import (
    DEV_HINT,
    SigningKey,
    check_chain,
    load_certificates,
    load_signing_key,
    pem_bytes,
)
from agent.credentials.read import inspect_bytes, load_trust_anchors
from agent.errors import ConfigError, PermanentError
from agent.settings import CredentialsSettings

log = logging.getLogger("chrysalis.credentials")

SIGN_SETTINGS: dict[str, Any] = {"builder": {"thumbnail": {"enabled": False}}}
"""No thumbnail in the manifest: the image is the asset, and a copy of it is 40-127 KB more per file."""


@dataclass(frozen=True)
class ParentImage:
    """The previous stage's image, listed as the ``parentOf`` ingredient of an evolution.

    Attributes:
        png: Its bytes as published (signed or not). cid: Its CID (the ingredient's ``instance_id`` is
        ``ipfs://<cid>``). stage: Its stage.
    """

    png: bytes
    cid: str
    stage: int


class SigningError(PermanentError):
    """The SDK refused to sign an image (the key and chain passed their start-up test, so this is unexpected)."""


class ContentCredentials:
    """Signs C2PA manifests into PNGs with one key and certificate chain (see the module docstring).

    Build it with :meth:`from_settings` or :meth:`from_files`; both check the files and sign a test image.
    Thread-safe (one signing at a time).
    """

    def __init__(
        self,
        key: SigningKey,
        chain_pem: bytes,
        *,
        trust_anchors_pem: bytes | None = None,
        tsa_url: str | None = None,
        chain_source: str = "memory",
        thumbnail: bool = False,
    ) -> None:
        self._key = key
        self._chain = chain_pem
        self._tsa_url = tsa_url
        self.trust_anchors_pem = trust_anchors_pem
        self.chain_source = chain_source
        settings = SIGN_SETTINGS if not thumbnail else {"builder": {"thumbnail": {"enabled": True}}}
        self._context = c2pa.Context(settings=c2pa.Settings.from_dict(settings))
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ContentCredentials(alg={self._key.alg}, key={self._key.source}, chain={self.chain_source})"

    @classmethod
    def from_files(
        cls,
        key_file: Path,
        certificate_chain: Path,
        *,
        trust_anchors: Path | None = None,
        password: bytes | None = None,
        password_source: str = "",
        tsa_url: str | None = None,
        thumbnail: bool = False,
    ) -> ContentCredentials:
        """Load and check the key, the chain and the anchors, then sign and read back a test image.

        ``thumbnail``: embed the SDK's automatic thumbnail (off in Chrysalis; the benchmark measures it).

        Raises:
            NotFoundError: a file is missing.
            ConfigError: a file is malformed, the key is not the certificate's, the certificate cannot sign C2PA
                claims, or the test image's signature does not validate (or does not chain to
                ``trust_anchors`` when given).
        """
        key = load_signing_key(key_file, password=password, password_source=password_source)
        chain = load_certificates(
            certificate_chain, what="certificate chain", setting="credentials.certificate_chain"
        )
        check_chain(key, chain, certificate_chain)
        anchors = (
            load_trust_anchors(trust_anchors, setting="credentials.trust_anchors") if trust_anchors else None
        )
        self = cls(
            key,
            pem_bytes(chain),
            trust_anchors_pem=anchors,
            tsa_url=tsa_url,
            chain_source=str(certificate_chain),
            thumbnail=thumbnail,
        )
        self.self_test(where=f"{key_file} with {certificate_chain}")
        return self

    @classmethod
    def from_settings(cls, settings: CredentialsSettings) -> ContentCredentials:
        """From the ``[credentials]`` settings (the key's password from ``key_password_file`` or the env var).

        Raises:
            ConfigError: no key or chain is configured, or anything :meth:`from_files` refuses.
        """
        if settings.key_file is None or settings.certificate_chain is None:
            raise ConfigError(
                "no C2PA signing key and certificate chain configured",
                hint=f"set credentials.key_file and credentials.certificate_chain; {DEV_HINT}",
            )
        password, source = _password(settings)
        return cls.from_files(
            settings.key_file,
            settings.certificate_chain,
            trust_anchors=settings.trust_anchors,
            password=password,
            password_source=source,
            tsa_url=settings.tsa_url,
        )

    def self_test(self, *, where: str = "the configured credentials") -> None:
        """Sign a 1x1 PNG and read it back: the SDK's own checks, at start-up rather than at the first image.

        Raises:
            ConfigError: the SDK refuses to sign, or the result does not validate (or is untrusted while trust
                anchors are configured).
        """
        buf = io.BytesIO()
        Image.new("RGB", (1, 1)).save(buf, format="PNG")
        probe = CredentialClaim(0, "0x" + "00" * 20, 0, 0, "00" * 32, "00" * 32, "self-test")
        try:
            signed = self.sign(buf.getvalue(), probe)
        except SigningError as exc:
            raise ConfigError(
                f"the C2PA SDK refuses to sign with {where}: {exc.message}",
                hint="use an ES256 certificate issued by a CA, with the emailProtection extended key usage; "
                + DEV_HINT,
            ) from None
        report = inspect_bytes(signed, trust_anchors_pem=self.trust_anchors_pem)
        if not (report.signature_valid and report.bound_to_pixels):
            raise ConfigError(
                f"a test image signed with {where} does not validate: {'; '.join(report.problems)}",
                hint="use an ES256 certificate issued by a CA, with the emailProtection extended key usage; "
                + DEV_HINT,
            )
        if self.trust_anchors_pem is not None and not report.trusted:
            raise ConfigError(
                f"the certificate chain {self.chain_source} does not lead to a certificate in "
                f"credentials.trust_anchors: {'; '.join(report.problems) or report.validation_state}",
                hint="point credentials.trust_anchors at the root CA that issued the chain (or leave it unset)",
            )

    def sign(self, png: bytes, claim: CredentialClaim, *, parent: ParentImage | None = None) -> bytes:
        """``png`` with a signed C2PA manifest for ``claim`` (and ``parent`` as its ``parentOf`` ingredient).

        Raises:
            SigningError: the SDK refused (the message is the SDK's).
        """
        version = __version__
        agent: dict[str, Any] = {
            "name": f"Chrysalis {version} ({claim.model_id})",
            "version": version,
            MODEL_KEY: {"model_id": claim.model_id, "weights_sha256": claim.weights_sha256},
        }
        manifest: dict[str, Any] = {
            "claim_generator_info": [{"name": "Chrysalis", "version": version}],
            "title": f"token {claim.token_id} stage {claim.stage}",
            "format": "image/png",
            "assertions": [
                {
                    "label": "c2pa.actions.v2",
                    "data": {
                        "actions": [
                            {
                                "action": "c2pa.created",
                                "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                                "softwareAgent": agent,
                            }
                        ]
                    },
                },
                {"label": ASSERTION_LABEL, "data": claim.to_json()},
            ],
        }
        out = io.BytesIO()
        with self._lock:
            try:
                signer = c2pa.Signer.from_info(
                    c2pa.C2paSignerInfo(self._key.alg, self._chain, self._key.pem, self._tsa_url)
                )
                with signer, c2pa.Builder(manifest, context=self._context) as builder:
                    if parent is not None:
                        builder.add_ingredient(
                            {
                                "title": f"token {claim.token_id} stage {parent.stage}",
                                "relationship": "parentOf",
                                "instance_id": f"ipfs://{parent.cid}",
                            },
                            "image/png",
                            io.BytesIO(parent.png),
                        )
                    builder.sign(signer, "image/png", io.BytesIO(png), out)
            except c2pa.C2paError as exc:
                raise SigningError(
                    f"cannot sign the image of token {claim.token_id} stage {claim.stage}: "
                    + (" ".join(str(exc).split()) or type(exc).__name__),
                    hint="check the [credentials] files, then `chrysalis retry` the job",
                ) from None
        return out.getvalue()

    def inspect(self, png: bytes) -> CredentialReport:
        """:func:`~agent.credentials.read.inspect_png` with these credentials' trust anchors."""
        return inspect_bytes(png, trust_anchors_pem=self.trust_anchors_pem)


def _password(settings: CredentialsSettings) -> tuple[bytes | None, str]:
    """The key's password: ``key_password_file`` (one trailing newline stripped), else the env var, else none."""
    if settings.key_password_file is not None:
        path = Path(settings.key_password_file).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(
                f"cannot read credentials.key_password_file {path}: {exc.strerror}",
                hint="point it at a file holding the signing key's password, or unset it",
            ) from None
        return text.removesuffix("\n").encode(), str(path)
    value = os.environ.get(settings.key_password_env)
    if value:
        return value.encode(), f"${settings.key_password_env}"
    return None, ""
