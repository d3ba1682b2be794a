"""Development credentials: a local CA and an ES256 signing certificate issued by it (``chrysalis init
--dev-credentials``, ``make demo``).

The C2PA SDK refuses a self-signed signer, so there are two certificates: a CA (the trust anchor a reader may be
given) and an end-entity certificate with the ``emailProtection`` extended key usage, which the SDK accepts as a
claim signer without any trust configuration. Images signed with them validate ("Valid"; "Trusted" where the CA
is given as a trust anchor), but public validators show them as untrusted: only a certificate from a CA on the
C2PA trust list is trusted there.

Files written (keys 0600 from their first byte):

* ``ca.pem``: the CA certificate (``credentials.trust_anchors``);
* ``ca.key``: the CA's private key (to issue more certificates; the agent never reads it);
* ``signer.key``: the signing key (``credentials.key_file``);
* ``chain.pem``: the signing certificate, then the CA certificate (``credentials.certificate_chain``).
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.errors import ConfigError
from agent.fsutil import write_private

CA_FILE, CA_KEY_FILE, KEY_FILE, CHAIN_FILE = "ca.pem", "ca.key", "signer.key", "chain.pem"
FILES = (CA_FILE, CA_KEY_FILE, KEY_FILE, CHAIN_FILE)
ORGANIZATION = "Chrysalis development (untrusted)"


@dataclass(frozen=True)
class DevCredentials:
    """Where :func:`create_dev_credentials` wrote the files.

    Attributes:
        key_file: The signing key. certificate_chain: Signing certificate + CA certificate.
        trust_anchors: The CA certificate. ca_key_file: The CA's key.
        not_after: When the signing certificate expires.
    """

    key_file: Path
    certificate_chain: Path
    trust_anchors: Path
    ca_key_file: Path
    not_after: dt.datetime

    def settings(self) -> dict[str, str]:
        """The ``[credentials]`` values that use these files."""
        return {
            "key_file": str(self.key_file),
            "certificate_chain": str(self.certificate_chain),
            "trust_anchors": str(self.trust_anchors),
        }

    def settings_toml(self) -> str:
        """The ``[credentials]`` table, as lines to paste into chrysalis.toml."""
        import json

        lines = ["[credentials]"] + [f"{k} = {json.dumps(v)}" for k, v in self.settings().items()]
        return "\n".join(lines) + "\n"


def create_dev_credentials(
    directory: Path,
    *,
    force: bool = False,
    days: int = 730,
    common_name: str = "Chrysalis development signer",
    now: dt.datetime | None = None,
) -> DevCredentials:
    """Make a development CA and an ES256 signing certificate issued by it, in ``directory`` (created).

    Args:
        directory: Where the four files go.
        force: Replace files a previous run wrote.
        days: How long the signing certificate is valid (the CA: ten years).
        common_name: The signing certificate's common name (validators show it as the signer).
        now: The certificates' start (tests); default the current time.

    Raises:
        ConfigError: a file exists and ``force`` is false, or ``directory`` is not a directory.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(
            f"{directory} is a file, not a directory",
            hint="give `chrysalis init --dev-credentials` a directory (created if missing)",
        )
    existing = [directory / name for name in FILES if (directory / name).exists()]
    if existing and not force:
        raise ConfigError(
            f"{existing[0]} already exists; not overwriting development credentials",
            hint="pass --force to make new ones (images signed before stay valid), or choose another directory "
            "(--credentials-dir)",
        )
    directory.mkdir(parents=True, exist_ok=True)
    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(
        minutes=5
    )  # clocks a little behind still accept it
    suffix = secrets.token_hex(4)  # two runs never make two CAs with one name

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"Chrysalis development CA {suffix}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                ]
            )
        )
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def pem(c: x509.Certificate) -> str:
        return c.public_bytes(serialization.Encoding.PEM).decode()

    def private(k: ec.EllipticCurvePrivateKey) -> str:
        return k.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    write_private(directory / CA_KEY_FILE, private(ca_key))
    write_private(directory / KEY_FILE, private(key))
    (directory / CA_FILE).write_text(pem(ca))
    (directory / CHAIN_FILE).write_text(pem(cert) + pem(ca))
    return DevCredentials(
        key_file=directory / KEY_FILE,
        certificate_chain=directory / CHAIN_FILE,
        trust_anchors=directory / CA_FILE,
        ca_key_file=directory / CA_KEY_FILE,
        not_after=cert.not_valid_after_utc,
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
