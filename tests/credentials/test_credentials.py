"""C2PA Content Credentials: development credentials, signing, reading back (c2pa-python's own Reader and
``inspect_png``), the hard binding against re-encoded and edited images, and clear errors for bad key material and
settings. Everything runs offline with the real SDK and real certificates made by ``create_dev_credentials``."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import stat
from pathlib import Path

import c2pa
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image

from agent.credentials import (
    ASSERTION_LABEL,
    TRAINED_ALGORITHMIC_MEDIA,
    ContentCredentials,
    CredentialClaim,
    DevCredentials,
    ParentImage,
    create_dev_credentials,
    has_manifest,
    inspect_png,
    png_pixels_sha256,
    strip_manifest,
)
from agent.credentials.png import MANIFEST_CHUNK, manifest_chunk, with_chunk
from agent.credentials.read import reader_context
from agent.errors import ConfigError, NotFoundError
from agent.settings import CredentialsSettings, load_settings

CLAIM = CredentialClaim(
    chain_id=31337,
    contract="0x5FbDB2315678afecb367f032d93F642f64180aa3",
    token_id=7,
    stage=2,
    receipt_sha256="ab" * 32,
    weights_sha256="9178ee7d48c09dc62d601e9713d2f8f61d556abdeb379770cf7242edfd9d7d30",
    model_id="chrysalis/sprites-32@1",
)


def _png(pixels: np.ndarray, *, level: int = 6) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as img:
        return np.asarray(img.convert("RGB")).copy()


@pytest.fixture(scope="module")
def image() -> bytes:
    return _png(np.random.default_rng(7).integers(0, 256, (64, 64, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> DevCredentials:
    return create_dev_credentials(tmp_path_factory.mktemp("creds") / "dev")


@pytest.fixture(scope="module")
def signer(dev: DevCredentials) -> ContentCredentials:
    return ContentCredentials.from_files(dev.key_file, dev.certificate_chain, trust_anchors=dev.trust_anchors)


@pytest.fixture(scope="module")
def signed(signer: ContentCredentials, image: bytes) -> bytes:
    return signer.sign(image, CLAIM)


# -- development credentials ----------------------------------------------------------------------------------


def test_dev_credentials_are_a_ca_and_an_es256_certificate_it_issued_with_private_keys(
    dev: DevCredentials, tmp_path: Path
) -> None:
    for key in (dev.key_file, dev.ca_key_file):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600, key
    chain = x509.load_pem_x509_certificates(dev.certificate_chain.read_bytes())
    (ca,) = x509.load_pem_x509_certificates(dev.trust_anchors.read_bytes())
    assert len(chain) == 2 and chain[1] == ca
    leaf = chain[0]
    assert leaf.issuer == ca.subject and leaf.subject != ca.subject  # never self-signed: the SDK refuses that
    assert (
        isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
        and leaf.public_key().curve.name == "secp256r1"
    )
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert dev.settings() == {
        "key_file": str(dev.key_file),
        "certificate_chain": str(dev.certificate_chain),
        "trust_anchors": str(dev.trust_anchors),
    }

    again = tmp_path / "again"
    create_dev_credentials(again)
    with pytest.raises(ConfigError, match="already exists; not overwriting") as err:
        create_dev_credentials(again)
    assert "--force" in (err.value.hint or "")
    before = (again / "chain.pem").read_bytes()
    create_dev_credentials(again, force=True)
    assert (again / "chain.pem").read_bytes() != before


# -- signing and reading back -----------------------------------------------------------------------------------


def test_c2pa_pythons_reader_reads_the_manifest_and_trusts_it_with_the_dev_ca_only(
    signed: bytes, dev: DevCredentials
) -> None:
    with c2pa.Reader(
        "image/png", io.BytesIO(signed), context=reader_context(dev.trust_anchors.read_bytes())
    ) as r:
        assert r.get_validation_state() == "Trusted"
        manifest = r.get_active_manifest()
    assert manifest["claim_generator_info"][0]["name"] == "Chrysalis"
    assert "thumbnail" not in manifest  # the automatic thumbnail is off
    assertions = {a["label"]: a["data"] for a in manifest["assertions"]}
    (created,) = assertions["c2pa.actions.v2"]["actions"]
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    agent = created["softwareAgent"]
    assert agent["name"].startswith("Chrysalis ") and CLAIM.model_id in agent["name"]
    assert agent["org.chrysalis.model"] == {
        "model_id": CLAIM.model_id,
        "weights_sha256": CLAIM.weights_sha256,
    }
    assert assertions[ASSERTION_LABEL] == CLAIM.to_json()

    with c2pa.Reader("image/png", io.BytesIO(signed)) as r:  # no trust anchors: valid, but untrusted
        assert r.get_validation_state() == "Valid"
        failures = [f["code"] for f in r.get_validation_results()["activeManifest"]["failure"]]
    assert failures == ["signingCredential.untrusted"]


def test_inspect_png_reports_a_valid_credential_and_its_claim(signed: bytes, dev: DevCredentials) -> None:
    trusted = inspect_png(signed, trust_anchors=dev.trust_anchors)
    assert trusted.present and trusted.signature_valid and trusted.bound_to_pixels and trusted.trusted
    assert trusted.valid and trusted.problems == ()
    assert trusted.source_type == TRAINED_ALGORITHMIC_MEDIA
    assert trusted.claim == CLAIM and trusted.ingredients == ()
    assert trusted.model == {"model_id": CLAIM.model_id, "weights_sha256": CLAIM.weights_sha256}
    assert trusted.validation_state == "Trusted" and "Chrysalis development signer" in (trusted.signer or "")
    json.dumps(trusted.to_json())
    assert trusted.check(CLAIM) == []
    assert trusted.check(CredentialClaim(**{**CLAIM.__dict__, "stage": 3})) == ["stage: expected 3, got 2"]

    plain = inspect_png(signed)  # without the anchors: not trusted, and that alone is not a problem
    assert plain.valid and not plain.trusted and plain.problems == () and plain.validation_state == "Valid"

    other = create_dev_credentials(
        dev.key_file.parent.parent / "other-ca"
    )  # another CA: untrusted is a problem
    foreign = inspect_png(signed, trust_anchors=other.trust_anchors)
    assert foreign.valid and not foreign.trusted
    assert any("signingCredential.untrusted" in p for p in foreign.problems)


def test_signatures_are_salted_and_removing_the_manifest_gives_back_the_signed_bytes(
    signer: ContentCredentials, signed: bytes, image: bytes
) -> None:
    again = signer.sign(image, CLAIM)
    assert again != signed  # not deterministic: compare what is read back, never the bytes
    assert has_manifest(signed) and not has_manifest(image)
    assert strip_manifest(signed) == image == strip_manifest(again)
    assert len(signed) - len(image) < 8_000  # no thumbnail: a few KB
    width, height = Image.open(io.BytesIO(image)).size
    assert png_pixels_sha256(signed, width=width, height=height) == png_pixels_sha256(
        image, width=width, height=height
    )


def test_an_evolution_lists_its_parent_image_as_an_ingredient(
    signer: ContentCredentials, signed: bytes, dev: DevCredentials
) -> None:
    child_pixels = np.full((64, 64, 3), 40, dtype=np.uint8)
    later = CredentialClaim(**{**CLAIM.__dict__, "stage": 3})
    child = signer.sign(_png(child_pixels), later, parent=ParentImage(signed, "bafkreiparent", 2))
    report = inspect_png(child, trust_anchors=dev.trust_anchors)
    assert report.valid and report.trusted and report.problems == ()
    assert report.ingredients == ("ipfs://bafkreiparent",) and report.claim == later
    with c2pa.Reader("image/png", io.BytesIO(child)) as r:
        (ingredient,) = r.get_active_manifest()["ingredients"]
    assert ingredient["relationship"] == "parentOf" and ingredient["title"] == "token 7 stage 2"
    assert ingredient.get("active_manifest")  # the parent's own manifest travels with it


def test_a_reencoded_png_with_the_same_pixels_fails_the_hard_binding(
    signed: bytes, dev: DevCredentials
) -> None:
    pixels = _pixels(signed)
    reencoded = with_chunk(_png(pixels, level=1), MANIFEST_CHUNK, manifest_chunk(signed) or b"")
    assert reencoded != signed and np.array_equal(_pixels(reencoded), pixels)
    report = inspect_png(reencoded, trust_anchors=dev.trust_anchors)
    assert report.present and report.signature_valid and not report.bound_to_pixels and not report.valid
    assert any(p.startswith("assertion.dataHash.mismatch") for p in report.problems), report.problems
    with c2pa.Reader("image/png", io.BytesIO(reencoded)) as r:
        assert r.get_validation_state() == "Invalid"
    assert report.claim == CLAIM  # the claim is still readable: it is the binding that fails
    assert report.check(CLAIM) == [
        "the manifest is not bound to these bytes (the image was re-encoded or edited)"
    ]


def test_an_image_with_one_pixel_changed_fails_the_hard_binding(signed: bytes, dev: DevCredentials) -> None:
    pixels = _pixels(signed)
    pixels[10, 20] = (pixels[10, 20] + 1) % 256
    edited = with_chunk(_png(pixels), MANIFEST_CHUNK, manifest_chunk(signed) or b"")
    report = inspect_png(edited, trust_anchors=dev.trust_anchors)
    assert report.present and not report.bound_to_pixels and not report.valid
    assert any("dataHash.mismatch" in p for p in report.problems)
    assert png_pixels_sha256(edited, width=64, height=64) != png_pixels_sha256(signed, width=64, height=64)


def test_images_without_credentials_and_data_that_is_not_png(image: bytes, signed: bytes) -> None:
    for data, why in ((image, "no C2PA manifest"), (b"GIF89a...", "not a PNG")):
        report = inspect_png(data)
        assert not report.present and not report.valid and why in report.problems[0]
    truncated = signed[:200]  # the manifest chunk cut short
    assert not inspect_png(truncated).valid
    garbage = inspect_png(with_chunk(image, MANIFEST_CHUNK, b"not JUMBF" * 8))
    assert garbage.present and not garbage.signature_valid
    assert garbage.problems[0].startswith("the C2PA manifest cannot be read")


def test_pixels_of_an_exact_upscale_are_the_native_pixels_and_an_edit_is_caught() -> None:
    native = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(native, 16, axis=0), 16, axis=1)
    expected = png_pixels_sha256(_png(native), width=32, height=32)
    assert png_pixels_sha256(_png(big), width=32, height=32) == expected
    big[5, 7] = (big[5, 7] + 1) % 256  # not the sampled corner of its block: still caught
    with pytest.raises(ConfigError, match="neither the receipt's 32x32 nor an exact upscale"):
        png_pixels_sha256(_png(big), width=32, height=32)


# -- bad key material: clear errors -------------------------------------------------------------------------------


def _certificate(key: ec.EllipticCurvePrivateKey, issuer_key: ec.EllipticCurvePrivateKey, *, self_signed: bool,
                 eku: bool = True, days: int = 30) -> x509.Certificate:  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test signer")])
    issuer = subject if self_signed else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test ca")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=2 * abs(days)))
        .not_valid_after(now + dt.timedelta(days=days))
    )
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def test_malformed_missing_and_mismatched_files_are_clear_errors(dev: DevCredentials, tmp_path: Path) -> None:
    good_chain = dev.certificate_chain.read_text()

    broken = tmp_path / "broken.pem"  # a certificate block whose base64 was damaged
    broken.write_text(
        good_chain.replace(good_chain.splitlines()[3], "AAAA" + good_chain.splitlines()[3][4:], 1)
    )
    with pytest.raises(
        ConfigError, match=r"certificate 1 of 2 in the C2PA certificate chain .* is malformed"
    ):
        ContentCredentials.from_files(dev.key_file, broken)

    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="holds no PEM certificate") as err:
        ContentCredentials.from_files(dev.key_file, empty)
    assert "chrysalis init --dev-credentials" in (err.value.hint or "")

    with pytest.raises(NotFoundError, match=r"the C2PA certificate chain .*missing.pem does not exist"):
        ContentCredentials.from_files(dev.key_file, tmp_path / "missing.pem")
    with pytest.raises(NotFoundError, match="signing key .* does not exist"):
        ContentCredentials.from_files(tmp_path / "missing.key", dev.certificate_chain)

    garbled = tmp_path / "garbled.key"
    garbled.write_text("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="signing key .* is malformed"):
        ContentCredentials.from_files(garbled, dev.certificate_chain)
    with pytest.raises(ConfigError, match="is not a PEM private key"):
        ContentCredentials.from_files(dev.certificate_chain, dev.certificate_chain)

    other = create_dev_credentials(tmp_path / "other")
    with pytest.raises(ConfigError, match="does not match the certificate") as err:
        ContentCredentials.from_files(other.key_file, dev.certificate_chain)
    assert "issued together" in (err.value.hint or "")
    with pytest.raises(ConfigError, match="does not lead to a certificate in credentials.trust_anchors"):
        ContentCredentials.from_files(dev.key_file, dev.certificate_chain, trust_anchors=other.trust_anchors)
    reversed_chain = tmp_path / "reversed.pem"
    certs = x509.load_pem_x509_certificates(dev.certificate_chain.read_bytes())
    reversed_chain.write_bytes(_pem(certs[0]) + _pem(other_ca := x509.load_pem_x509_certificate(
        other.trust_anchors.read_bytes())))  # fmt: skip
    assert other_ca.subject != certs[1].subject
    with pytest.raises(ConfigError, match="is not issued by certificate 2"):
        ContentCredentials.from_files(dev.key_file, reversed_chain)


def test_certificates_the_sdk_would_refuse_are_refused_with_the_reason(tmp_path: Path) -> None:
    key, ca_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "k.pem"
    key_file.write_bytes(_key_pem(key))
    cases = {
        "self-signed": (_certificate(key, key, self_signed=True), "is self-signed"),
        "no-eku": (_certificate(key, ca_key, self_signed=False, eku=False), "no extended key usage"),
        "expired": (_certificate(key, ca_key, self_signed=False, days=-1), "has expired"),
    }
    for name, (cert, message) in cases.items():
        chain = tmp_path / f"{name}.pem"
        chain.write_bytes(_pem(cert))
        with pytest.raises(ConfigError, match=message):
            ContentCredentials.from_files(key_file, chain)


def test_an_encrypted_key_needs_its_password_from_a_file_or_the_environment(
    dev: DevCredentials, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, image: bytes
) -> None:
    key = serialization.load_pem_private_key(dev.key_file.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    locked = tmp_path / "locked.key"
    locked.write_bytes(_key_pem(key, b"s3cret"))
    locked.chmod(0o600)
    settings = CredentialsSettings(key_file=locked, certificate_chain=dev.certificate_chain)
    monkeypatch.delenv("CHRYSALIS_C2PA_KEY_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="is encrypted and no password was given") as err:
        ContentCredentials.from_settings(settings)
    assert "CHRYSALIS_C2PA_KEY_PASSWORD" in (err.value.hint or "")
    monkeypatch.setenv("CHRYSALIS_C2PA_KEY_PASSWORD", "wrong")
    with pytest.raises(ConfigError, match=r"wrong password \(from \$CHRYSALIS_C2PA_KEY_PASSWORD\)") as err:
        ContentCredentials.from_settings(settings)
    assert "s3cret" not in str(err.value) and "wrong" not in err.value.message.replace("wrong password", "")
    monkeypatch.setenv("CHRYSALIS_C2PA_KEY_PASSWORD", "s3cret")
    assert inspect_png(ContentCredentials.from_settings(settings).sign(image, CLAIM)).valid
    monkeypatch.delenv("CHRYSALIS_C2PA_KEY_PASSWORD")
    password_file = tmp_path / "pw"
    password_file.write_text("s3cret\n")
    from_file = CredentialsSettings(
        key_file=locked, certificate_chain=dev.certificate_chain, key_password_file=password_file
    )
    assert "locked.key" in repr(ContentCredentials.from_settings(from_file))


def test_a_readable_key_file_is_warned_about(dev: DevCredentials, tmp_path: Path, caplog) -> None:
    shared = tmp_path / "shared.key"
    shared.write_bytes(dev.key_file.read_bytes())
    shared.chmod(0o644)
    with caplog.at_level("WARNING", logger="chrysalis.credentials"):
        ContentCredentials.from_files(shared, dev.certificate_chain)
    assert any("chmod 600" in r.getMessage() for r in caplog.records)


# -- settings --------------------------------------------------------------------------------------------------


def test_credentials_settings_are_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CHRYSALIS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    assert not load_settings().credentials.enabled  # off by default: images stay unsigned

    config = tmp_path / "chrysalis.toml"
    config.write_text('[credentials]\nkey_file = "signer.key"\n')
    with pytest.raises(ConfigError, match="credentials.certificate_chain is not set"):
        load_settings(config)
    config.write_text('[credentials]\ntrust_anchors = "ca.pem"\n')
    with pytest.raises(ConfigError, match="trust_anchors and tsa_url need key_file and certificate_chain"):
        load_settings(config)
    config.write_text(
        '[credentials]\nkey_file = "k"\ncertificate_chain = "c"\ntsa_url = "ftp://tsa.example/x"\n'
    )
    with pytest.raises(ConfigError, match="credentials.tsa_url must be an http:// or https:// URL"):
        load_settings(config)
    config.write_text('[credentials]\nkey_file = "k"\ncertificate_chain = "c"\nprivate_key = "-----BEGIN"\n')
    with pytest.raises(ConfigError, match="credentials.private_key: Extra inputs are not permitted") as err:
        load_settings(config)
    assert "BEGIN" not in str(err.value)  # a key pasted into the file is never echoed
    config.write_text('[credentials]\nkey_file = "k"\ncertificate_chain = "c"\n')
    settings = load_settings(config).credentials
    assert settings.enabled and settings.key_file == Path("k") and settings.trust_anchors is None
    with pytest.raises(ConfigError, match="no C2PA signing key and certificate chain configured"):
        ContentCredentials.from_settings(CredentialsSettings())


def test_a_claim_is_checked_and_compared() -> None:
    with pytest.raises(ValueError, match="receipt_sha256 must be 64 lower-case hex digits"):
        CredentialClaim(**{**CLAIM.__dict__, "receipt_sha256": "0x" + "ab" * 32})
    with pytest.raises(ValueError, match="contract must be"):
        CredentialClaim(**{**CLAIM.__dict__, "contract": "bob"})
    assert CredentialClaim.from_json(CLAIM.to_json()) == CLAIM
    lower = CredentialClaim(**{**CLAIM.__dict__, "contract": CLAIM.contract.lower()})
    assert lower.differences(CLAIM) == []  # addresses compare case-insensitively
    other = CredentialClaim(**{**CLAIM.__dict__, "token_id": 8})
    assert other.differences(CLAIM) == ["token_id: expected 7, got 8"]
