"""Reading and checking the signing key, the certificate chain and the trust anchors (PEM files).

Everything the C2PA SDK would refuse later, or silently accept wrongly, is refused here with the file and the fix:
a missing or malformed file, an encrypted key without its password, a key that is not the certificate's, a
self-signed or expired signing certificate, a chain out of order. Messages never show key material.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.errors import ConfigError, NotFoundError

log = logging.getLogger("chrysalis.credentials")

DEV_HINT = "`chrysalis init --dev-credentials` makes a development CA, key and certificate chain"

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)

DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")
"""id-kp-documentSigning (RFC 9336)."""

C2PA_CLAIM_SIGNING = x509.ObjectIdentifier("1.3.6.1.4.1.62558.2.1")
"""The C2PA claim-signing EKU."""

SIGNING_EKUS = {
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    DOCUMENT_SIGNING: "documentSigning",
    C2PA_CLAIM_SIGNING: "c2pa claim signing",
}
"""Extended key usages the C2PA trust model accepts for a claim signer."""


@dataclass(frozen=True)
class SigningKey:
    """A private key read from a PEM file, as the SDK takes it (unencrypted PKCS#8 PEM), and its algorithm.

    Attributes:
        pem: The key as unencrypted PKCS#8 PEM (kept in memory only; never logged or shown).
        alg: The C2PA algorithm it signs with: ``es256``, ``es384``, ``es512``, ``ps256`` or ``ed25519``.
        public_der: The public key (SubjectPublicKeyInfo DER), to match against the certificate.
        source: Where it came from.
    """

    pem: bytes
    alg: str
    public_der: bytes
    source: str

    def __repr__(self) -> str:
        return f"SigningKey(alg={self.alg}, source={self.source})"


def _read(path: Path, what: str, setting: str) -> bytes:
    path = Path(path).expanduser()
    if not path.is_file():
        raise NotFoundError(
            f"the C2PA {what} {path} does not exist",
            hint=f"point {setting} at a PEM file; {DEV_HINT}",
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the C2PA {what} {path}: {exc.strerror}",
            hint=f"make {path} readable by the user the agent runs as",
        ) from None


def warn_if_readable_by_others(path: Path, what: str) -> bool:
    """Log a WARNING when group or other users may read ``path`` (POSIX only); return whether it did."""
    if os.name != "posix":
        return False
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return False
    if not mode & 0o077:
        return False
    log.warning(
        "the %s %s can be read by other users (mode %03o): chmod 600 %s", what, path, mode & 0o777, path,
        extra={"path": str(path), "mode": f"{mode & 0o777:03o}"},
    )  # fmt: skip
    return True


def load_signing_key(
    path: Path,
    *,
    password: bytes | None = None,
    password_source: str = "",
    setting: str = "credentials.key_file",
    password_hint: str = "set $CHRYSALIS_C2PA_KEY_PASSWORD or credentials.key_password_file",
) -> SigningKey:
    """Read a PEM private key (PKCS#8 or the traditional EC/RSA forms; encrypted with ``password`` if it is).

    Raises:
        NotFoundError: the file does not exist.
        ConfigError: it is not a PEM private key, it is encrypted and no (or a wrong) password was given, or its
            type cannot sign C2PA claims (EC P-256/P-384/P-521, RSA >= 2048 bits and Ed25519 can).
    """
    path = Path(path).expanduser()
    data = _read(path, "signing key", setting)
    if b"-----BEGIN" not in data or b"PRIVATE KEY-----" not in data:
        raise ConfigError(
            f"the C2PA signing key {path} is not a PEM private key (no '-----BEGIN ... PRIVATE KEY-----' block)",
            hint=f"point {setting} at the PEM key that goes with the certificate; {DEV_HINT}",
        )
    warn_if_readable_by_others(path, "C2PA signing key")
    try:
        key = serialization.load_pem_private_key(data, password=password or None)
    except TypeError:
        if password:
            raise ConfigError(
                f"the C2PA signing key {path} is not encrypted, but a password was given ({password_source})",
                hint="remove the password setting, or encrypt the key",
            ) from None
        raise ConfigError(
            f"the C2PA signing key {path} is encrypted and no password was given",
            hint=password_hint,
        ) from None
    except ValueError as exc:
        reason = str(exc).lower()
        if password and ("password" in reason or "decrypt" in reason):
            raise ConfigError(
                f"cannot decrypt the C2PA signing key {path}: wrong password (from {password_source})",
                hint=password_hint.replace("set ", "set the key's password in ", 1),
            ) from None
        raise ConfigError(
            f"the C2PA signing key {path} is malformed: {_first_line(exc)}",
            hint=f"point {setting} at an intact PEM private key; {DEV_HINT}",
        ) from None
    except UnsupportedAlgorithm as exc:
        raise ConfigError(
            f"the C2PA signing key {path} uses an unsupported algorithm: {_first_line(exc)}",
            hint="use an EC P-256 key (ES256), P-384, P-521, RSA of 2048 bits or more, or Ed25519",
        ) from None
    alg = _algorithm(key, path)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SigningKey(pem=pem, alg=alg, public_der=public, source=str(path))


def _algorithm(key: object, path: Path) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        alg = by_curve.get(key.curve.name)
        if alg is None:
            raise ConfigError(
                f"the C2PA signing key {path} is on curve {key.curve.name}, which C2PA does not sign with",
                hint="use a P-256 key (ES256; `openssl ecparam -name prime256v1 -genkey`), P-384 or P-521",
            )
        return alg
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ConfigError(
                f"the C2PA signing key {path} is a {key.key_size}-bit RSA key; C2PA needs 2048 bits or more",
                hint="use an EC P-256 key (ES256) or RSA of 2048 bits or more",
            )
        return "ps256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise ConfigError(
        f"the C2PA signing key {path} is a {type(key).__name__.lstrip('_')}, which cannot sign C2PA claims",
        hint="use an EC P-256 key (ES256), P-384, P-521, RSA of 2048 bits or more, or Ed25519",
    )


def load_certificates(path: Path, *, what: str, setting: str) -> list[x509.Certificate]:
    """Every PEM certificate in ``path``, in file order.

    Raises:
        NotFoundError: the file does not exist.
        ConfigError: it holds no PEM certificate, or one of them is malformed (named by its position).
    """
    path = Path(path).expanduser()
    data = _read(path, what, setting)
    blocks = _PEM_CERT.findall(data)
    if not blocks:
        raise ConfigError(
            f"the C2PA {what} {path} holds no PEM certificate (no '-----BEGIN CERTIFICATE-----' block)",
            hint=f"point {setting} at a PEM certificate file; {DEV_HINT}",
        )
    certs = []
    for i, block in enumerate(blocks, 1):
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError as exc:
            raise ConfigError(
                f"certificate {i} of {len(blocks)} in the C2PA {what} {path} is malformed: {_first_line(exc)}",
                hint=f"restore {path} from its source (PEM blocks copied whole); {DEV_HINT}",
            ) from None
    return certs


def check_chain(
    key: SigningKey, chain: list[x509.Certificate], path: Path, *, now: datetime | None = None
) -> None:
    """Check that ``chain`` can sign with ``key`` as the C2PA SDK requires.

    Raises:
        ConfigError: the first certificate is not the key's, is self-signed (the SDK refuses those), is expired
            or not yet valid, has no extended key usage a claim signer may have, or a certificate is not issued by
            the next one.
    """
    leaf = chain[0]
    now = now or datetime.now(UTC)
    leaf_public = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if leaf_public != key.public_der:
        raise ConfigError(
            f"the C2PA signing key {key.source} does not match the certificate {_name(leaf)} (the first one in "
            f"{path})",
            hint="credentials.key_file and credentials.certificate_chain must be the key and certificate issued "
            "together; the signing certificate goes first in the chain file",
        )
    if len(chain) == 1 and _issued_by(leaf, leaf):
        raise ConfigError(
            f"the C2PA signing certificate {_name(leaf)} in {path} is self-signed; the C2PA SDK refuses a "
            "self-signed signer",
            hint=f"use a certificate issued by a CA (and list the CA after it in {path}); {DEV_HINT}",
        )
    if now < leaf.not_valid_before_utc or now > leaf.not_valid_after_utc:
        state = "is not valid yet" if now < leaf.not_valid_before_utc else "has expired"
        raise ConfigError(
            f"the C2PA signing certificate {_name(leaf)} in {path} {state} (valid "
            f"{leaf.not_valid_before_utc:%Y-%m-%d} to {leaf.not_valid_after_utc:%Y-%m-%d})",
            hint="renew the certificate; " + DEV_HINT + " (run it again for a fresh one)",
        )
    try:
        usages = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = set()
    if not usages & set(SIGNING_EKUS):
        raise ConfigError(
            f"the C2PA signing certificate {_name(leaf)} in {path} has no extended key usage a C2PA claim signer "
            "may have",
            hint="issue it with the emailProtection EKU (1.3.6.1.5.5.7.3.4; documentSigning and the C2PA "
            "claim-signing EKU need a trust configuration that lists them)",
        )
    for i, (cert, issuer) in enumerate(zip(chain, chain[1:], strict=False), 1):
        if not _issued_by(cert, issuer):
            raise ConfigError(
                f"certificate {i} in {path} ({_name(cert)}) is not issued by certificate {i + 1} "
                f"({_name(issuer)})",
                hint="list the signing certificate first, then each issuer in turn (the root may be left out)",
            )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s key signed ``cert`` (names compared first)."""
    if cert.issuer != issuer.subject:
        return False
    public = issuer.public_key()
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            hash_alg = cert.signature_hash_algorithm
            if hash_alg is None:
                return False
            public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hash_alg))
        elif isinstance(public, rsa.RSAPublicKey):
            hash_alg = cert.signature_hash_algorithm
            if hash_alg is None:
                return False
            pad: padding.AsymmetricPadding = padding.PKCS1v15()
            if cert.signature_algorithm_parameters is not None and isinstance(
                cert.signature_algorithm_parameters, padding.PSS
            ):
                pad = cert.signature_algorithm_parameters
            public.verify(cert.signature, cert.tbs_certificate_bytes, pad, hash_alg)
        elif isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            return True  # a key type we do not check ourselves: the SDK's own validation decides
    except InvalidSignature:
        return False
    return True


def pem_bytes(certs: list[x509.Certificate]) -> bytes:
    """The certificates as one PEM bundle."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return repr(str(names[0].value)) if names else cert.subject.rfc4514_string() or "(no subject)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
