"""C2PA Content Credentials in every generated image: signing, reading back, development credentials.

Every PNG the generate stage makes is signed (when ``[credentials]`` is configured) before it goes into the IPFS
repo, with a manifest that says it is AI-made (IPTC ``trainedAlgorithmicMedia``), which software and model made
it, and which token, stage, receipt and chain it belongs to; an evolution lists the previous stage's image as its
``parentOf`` ingredient. Receipts keep hashing the unsigned PNG and its pixels, so signing never changes replay.

* :class:`ContentCredentials` signs (:meth:`~ContentCredentials.sign`), from the ``[credentials]`` settings;
* :func:`inspect_png` reads a PNG's credentials back into a :class:`CredentialReport`;
* :func:`create_dev_credentials` makes a local CA and ES256 signing certificate (``chrysalis init
  --dev-credentials``);
* :func:`png_pixels_sha256` and :func:`strip_manifest` tie a published (signed) PNG to its receipt.
"""

from agent.credentials.dev import DevCredentials, create_dev_credentials
from agent.credentials.model import (
    ASSERTION_LABEL,
    CLAIM_SCHEMA,
    TRAINED_ALGORITHMIC_MEDIA,
    CredentialClaim,
    CredentialReport,
)
from agent.credentials.png import has_manifest, png_pixels_sha256, strip_manifest
from agent.credentials.read import inspect_png
from agent.credentials.sign import ContentCredentials, ParentImage, SigningError

__all__ = [
    "ASSERTION_LABEL",
    "CLAIM_SCHEMA",
    "TRAINED_ALGORITHMIC_MEDIA",
    "ContentCredentials",
    "CredentialClaim",
    "CredentialReport",
    "DevCredentials",
    "ParentImage",
    "SigningError",
    "create_dev_credentials",
    "has_manifest",
    "inspect_png",
    "png_pixels_sha256",
    "strip_manifest",
]
