"""Typed configuration: one settings object, loaded from TOML and overridden by ``CHRYSALIS_*`` env vars.

Precedence (highest first): init kwargs, environment (``CHRYSALIS_IPFS__REPLICATION=2``), the TOML file
(the one :func:`load_settings` is given, else ``$CHRYSALIS_CONFIG`` or ``./chrysalis.toml``), then the embedded
defaults below. The defaults run the whole service offline: a local chain, the embedded IPFS node, SQLite and the
shipped models.

Loading has no side effect: the file named to :func:`load_settings` is used for that call only (never exported
to the environment), so two loads in one process never see each other's file.

Secrets (keystore passwords, pinning-service tokens) are read from the environment or files only, never
from the TOML file.
"""

from __future__ import annotations

import os
import re
import tomllib
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from agent.cron import crontab_trigger
from agent.domain import ModelKind
from agent.errors import ConfigError
from agent.net import is_loopback
from agent.redact import redact_text, redact_url
from agent.tokens import parse_tokens

DEFAULT_CONFIG_FILE = Path("chrysalis.toml")
DEFAULT_DATABASE_URL = "sqlite:///.chrysalis/chrysalis.db"
"""Where the agent's database is when ``database.url`` is not set (relative to the working directory)."""


class Section(BaseModel):
    """A TOML table of the settings. Unknown keys are errors: a misspelt key must not be ignored silently."""

    model_config = ConfigDict(extra="forbid")


_URL_SCHEMES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "rpc_url": (
        "an http:// or https:// JSON-RPC URL",
        ("http://", "https://"),
        "e.g. http://127.0.0.1:8545 (a WebSocket endpoint goes in chain.ws_url)",
    ),
    "ws_url": (
        "a ws:// or wss:// WebSocket URL",
        ("ws://", "wss://"),
        "e.g. ws://127.0.0.1:8545 (anvil serves it on its HTTP port), or leave it unset",
    ),
    "rpc_url_secondary": (
        "an http:// or https:// JSON-RPC URL",
        ("http://", "https://"),
        "set it to a second provider's HTTP endpoint (e.g. https://eth.example.org), or leave it unset "
        "(CHRYSALIS_CHAIN__RPC_URL_SECONDARY='') to skip the cross-checks",
    ),
}
"""Per URL field of [chain]: what it is, the schemes it takes, and how to fix a wrong one."""


class ChainSettings(Section):
    """Where the collection lives."""

    rpc_url: str = Field(
        default="http://127.0.0.1:8545", description="JSON-RPC endpoint (http:// or https://)."
    )
    deployment: Path = Field(
        default=Path("deployments/local.json"),
        description="Deployment record written by `chrysalis deploy` (chain id, addresses, deploy block, ABI).",
    )
    confirmations: int = Field(
        default=0, ge=0, description="Blocks a log must be buried under before it counts."
    )
    finality_depth: int = Field(
        default=64,
        ge=0,
        description="Blocks after which a block is final; a reorg deeper than this stops the watcher (fatal).",
    )
    ws_url: str | None = Field(
        default=None,
        description="Optional WebSocket endpoint (ws://...) whose new heads wake the watcher early; "
        "polling stays the source of truth. anvil serves it on its HTTP port.",
        examples=["ws://127.0.0.1:8545"],
    )
    poll_interval_s: float = Field(default=2.0, gt=0, description="Seconds between log polls.")
    max_block_range: int = Field(
        default=2000, ge=1, description="Largest eth_getLogs span; halved when the provider refuses a range."
    )
    rpc_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one JSON-RPC request.")
    rpc_retries: int = Field(
        default=4, ge=0, description="Retries of a JSON-RPC request after a transient error."
    )
    rpc_max_rps: float | None = Field(
        default=None,
        gt=0,
        description="Client-side limit on JSON-RPC requests per second (none by default).",
        examples=[25.0],
    )
    rpc_url_secondary: str | None = Field(
        default=None,
        description="Optional second JSON-RPC endpoint (another provider, or another node behind your load "
        "balancer) that `chrysalis doctor` cross-checks rpc_url against: chain id, genesis and head lag. The "
        "agent never sends through it.",
    )

    @field_validator("ws_url", "rpc_url_secondary", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("rpc_url", "ws_url", "rpc_url_secondary")
    @classmethod
    def _url_scheme(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind, schemes, fix = _URL_SCHEMES[info.field_name or ""]
        if value is not None and not value.strip().lower().startswith(schemes):
            raise ValueError(f"chain.{info.field_name} must be {kind}, not {redact_url(value)!r}: {fix}")
        return value

    @model_validator(mode="after")
    def _secondary_differs(self) -> ChainSettings:
        if self.rpc_url_secondary is not None and (
            self.rpc_url_secondary.rstrip("/").lower() == self.rpc_url.rstrip("/").lower()
        ):
            raise ValueError(
                "chain.rpc_url_secondary is the same URL as chain.rpc_url, so it cannot cross-check it: set it "
                "to another provider's (or another node's) URL, or leave it unset"
            )
        return self


def token_env_var(name: str, token_env: str | None = None) -> str:
    """The env var a pinning service's token is read from: ``token_env``, else ``CHRYSALIS_PINNING_<NAME>_TOKEN``
    (``name`` upper-cased, other characters than letters and digits as ``_``)."""
    if token_env:
        return token_env
    return "CHRYSALIS_PINNING_" + "".join(c if c.isalnum() else "_" for c in name.upper()) + "_TOKEN"


class PinningServiceSettings(Section):
    """An IPFS Pinning Service API endpoint (Pinata and others)."""

    name: str = Field(
        description="A short name for logs (and the default token env var).", examples=["pinata"]
    )
    endpoint: str = Field(
        description="Base URL of the Pinning Service API, e.g. https://api.example.com/psa.",
        examples=["https://api.pinata.cloud/psa"],
    )
    token: SecretStr | None = Field(
        default=None,
        description="Bearer token, from the environment only (CHRYSALIS_IPFS__PINNING_SERVICES as JSON; a TOML "
        "file that sets it is refused); prefer the token env var.",
    )
    token_env: str | None = Field(
        default=None,
        description="Env var holding the bearer token (default CHRYSALIS_PINNING_<NAME>_TOKEN, NAME upper-cased).",
    )
    mode: Literal["origins", "car"] = Field(
        default="origins",
        description="car (recommended: needs no inbound access): we upload a CAR (POST /car); origins (the "
        "spec): the service fetches from our node's read-only gateway, which must then be reachable off-host.",
    )

    def token_env_var(self) -> str:
        """The env var the token is read from."""
        return token_env_var(self.name, self.token_env)

    def bearer_token(self) -> str | None:
        """The token: the env var first, then ``token`` (set through env settings, never the TOML file)."""
        value = os.environ.get(self.token_env_var())
        if value:
            return value
        return self.token.get_secret_value() if self.token is not None else None


class IpfsSettings(Section):
    """The IPFS layer: the embedded node, and the backends that must confirm a pin."""

    repo: Path | None = Field(
        default=None,
        description="Embedded node's blockstore directory (default: <data_dir>/ipfs; read it as Settings.ipfs_repo).",
    )
    gateway_host: str = Field(
        default="127.0.0.1", description="Address the embedded node's read-only gateway (/ipfs/) listens on."
    )
    gateway_port: int = Field(default=8080, description="Port of the embedded node's read-only gateway.")
    script_roots: list[str] = Field(
        default_factory=list,
        description="Directories (CIDs) whose pages the gateway lets run their own scripts, under a strict policy "
        "of their own: the token viewer's site (`chrysalis renderer publish` prints it; the agent adds the viewer "
        "it publishes by itself). Everything else stays sandboxed.",
    )

    @field_validator("script_roots")
    @classmethod
    def _script_roots_are_cids(cls, value: list[str]) -> list[str]:
        for (
            text
        ) in value:  # the shapes of a CIDv1 in base32 and of a CIDv0 (agent.ipfs parses them when served)
            if not re.fullmatch(r"b[a-z2-7]{58,}|Qm[1-9A-HJ-NP-Za-km-z]{44}", text):
                raise ValueError(
                    f"ipfs.script_roots: {text!r} is not a CID; list the viewer site's directory CID, as "
                    "`chrysalis renderer publish` prints it"
                )
        return value

    rpc_host: str = Field(
        default="127.0.0.1",
        description="Address of the embedded node's Kubo RPC subset (/api/v0: add, pin, dag/import): loopback "
        "only. Its bearer token: $CHRYSALIS_IPFS_RPC_TOKEN, else <repo>/rpc.token (created 0600).",
    )
    rpc_port: int = Field(default=5001, ge=0, le=65535, description="Port of the embedded node's RPC.")
    kubo_api: str | None = Field(
        default=None, description="Kubo RPC multiaddr or URL, e.g. /ip4/127.0.0.1/tcp/5001"
    )
    fetch_gateways: list[str] = Field(
        default_factory=list,
        description="Gateways to read a block from when the embedded repo lacks it (a token's previous version "
        "that another agent published), after ipfs.kubo_api; every block is checked against its CID.",
    )
    pinning_services: list[PinningServiceSettings] = Field(
        default_factory=list, description="Remote pinning services (IPFS Pinning Service API) that also pin."
    )
    replication: int = Field(
        default=1, ge=1, description="Backends that must confirm a pin before it counts."
    )
    max_request_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1,
        description="Largest add / dag/import body the embedded node accepts (413).",
    )
    max_listing_entries: int = Field(
        default=10_000,
        ge=1,
        description="Most entries a directory listing shows (gateway pages stop there; `ls` fails past it).",
    )
    max_file_expansion: int = Field(
        default=1024,
        ge=1,
        description="A file may declare at most this many times the bytes of its distinct blocks "
        "(refuses DAG bombs that repeat links to one leaf; 403 on the gateway).",
    )
    origins: list[str] = Field(
        default_factory=list,
        description="Addresses (multiaddr or URL) pinning services fetch our content from; "
        "default: the gateway's address.",
    )
    pin_timeout_s: float = Field(
        default=300.0, gt=0, description="How long one backend may take to confirm a pin."
    )

    @field_validator("rpc_host")
    @classmethod
    def _rpc_host_is_loopback(cls, value: str) -> str:

        if not is_loopback(value):
            raise ValueError(
                f"ipfs.rpc_host must be a loopback address (127.0.0.1 or ::1), not {value!r}: the RPC API can "
                "add, pin and unpin, so it never listens off-host; pinning services fetch from the read-only "
                'gateway (ipfs.gateway_host), or use mode = "car"'
            )
        return value


@dataclass(frozen=True, init=False)
class ModelKey:
    """Marks a :class:`ModelSettings` field that a model loader reads: ``Annotated[type, ModelKey("image")]``.

    The marks are the one list of model settings: the factory keeps one loaded model per distinct value of the
    fields its loader reads (:mod:`agent.generate.factory`), and a resumed genesis must run with the values of the
    fields that affect output (:mod:`agent.genesis.run`). Both lists come from :func:`model_keys`, so a new
    model setting is one field here, marked.

    Attributes:
        loaders: The loaders that read the field: ``"image"`` (the image generator), ``"lore"`` (the lore writer).
        affects_output: Whether the value decides what is generated. False for memory and speed switches, for
            where converted models are cached, and for the thread count (receipts and a genesis record that on
            their own, as ``runtime.threads`` and ``torch_threads``).
    """

    loaders: frozenset[ModelKind]
    affects_output: bool

    def __init__(self, *loaders: ModelKind, affects_output: bool = True) -> None:
        object.__setattr__(self, "loaders", frozenset(loaders))
        object.__setattr__(self, "affects_output", affects_output)


class ModelSettings(Section):
    """Which image and lore models run, and how."""

    def image_runtime_for(self, *, genesis: bool = False) -> Literal["torch", "portable"]:
        """``image_runtime`` with ``auto`` resolved: portable for the embedded model's evolutions and refreshes,
        torch for a genesis (its batched speed) and for the diffusers backend."""
        if self.image_runtime != "auto":
            return self.image_runtime
        return "portable" if self.image_backend == "embedded" and not genesis else "torch"

    image_backend: Annotated[Literal["embedded", "diffusers"], ModelKey("image")] = Field(
        default="embedded",
        description="embedded: the shipped sprite model; diffusers: any diffusers pipeline.",
    )
    image_model: Annotated[str | None, ModelKey("image")] = Field(
        default=None, description="Local path or hub id for the diffusers backend."
    )
    image_runtime: Annotated[Literal["auto", "torch", "portable"], ModelKey("image")] = Field(
        default="auto",
        description="How the embedded sprite model runs. portable: the model exported to ONNX (cached under "
        "<cache_dir>/portable/) and run by onnxruntime-web's WASM build in Node.js, with chrysalis-noise/1 noise, "
        "so any browser replays an image bit for bit, whatever its batch (receipt scheme chrysalis-portable/1, "
        "and an animation_url that opens the token viewer; needs node and `make setup`'s node_modules). torch: "
        "the batched torch backend (receipts replay bit for bit on a CPU with the same library versions; "
        "1.5-1.7x faster on the CPU). auto: portable for the agent's evolutions and refreshes with "
        "image_backend = 'embedded', torch for a genesis and for the diffusers backend.",
    )
    image_lora: Annotated[str | None, ModelKey("image")] = Field(
        default=None, description="LoRA weights (path or hub id) for the diffusers backend."
    )
    lore_backend: Annotated[Literal["embedded", "transformers"], ModelKey("lore")] = Field(
        default="embedded", description="embedded: the packaged SmolLM2 GGUF; transformers: any causal LM."
    )
    lore_model: Annotated[str | None, ModelKey("lore")] = Field(
        default=None, description="Local path or hub id for the transformers backend."
    )
    device: Annotated[Literal["auto", "cpu", "cuda", "mps"], ModelKey("image", "lore")] = Field(
        default="auto", description="Where models run (auto: CUDA, then MPS, then CPU)."
    )
    cache_dir: Annotated[Path, ModelKey("lore", affects_output=False)] = Field(
        default=Path(".chrysalis/models"),
        description="Converted-model cache (default: <data_dir>/models, so it lives with the agent's other state).",
    )
    dtype: Annotated[Literal["auto", "float32", "float16", "bfloat16"], ModelKey("image", "lore")] = Field(
        default="auto", description="auto: float16 on CUDA/MPS for production pipelines, float32 on CPU."
    )
    threads: Annotated[int | None, ModelKey("image", affects_output=False)] = Field(
        default=1,
        ge=1,
        description="torch CPU threads; receipts record the value. 1 (the default) gives canonical, verifiable "
        "receipts and measured 10x faster than 2 on a busy 2-core machine; raise it on a dedicated many-core host, "
        "None leaves torch's default.",
    )
    # images
    image_lora_scale: Annotated[float, ModelKey("image")] = Field(
        default=1.0, description="Weight of image_lora when it is loaded."
    )
    image_scheduler: Annotated[str | None, ModelKey("image")] = Field(
        default=None,
        description="diffusers scheduler class name (e.g. DDIMScheduler); None keeps the model's.",
    )
    image_steps: Annotated[int | None, ModelKey("image")] = Field(
        default=None, ge=1, description="Denoising steps (None: 50 embedded, 30 diffusers).", examples=[30]
    )
    image_guidance: Annotated[float | None, ModelKey("image")] = Field(
        default=None,
        ge=1.0,
        description="Classifier-free guidance (None: 1.0 embedded, 7.5 diffusers).",
        examples=[7.5],
    )
    image_width: Annotated[int | None, ModelKey("image")] = Field(
        default=None, ge=8, description="diffusers output width (None: the model's).", examples=[512]
    )
    image_height: Annotated[int | None, ModelKey("image")] = Field(
        default=None, ge=8, description="diffusers output height (None: the model's).", examples=[512]
    )
    image_negative_prompt: Annotated[str | None, ModelKey("image")] = Field(
        default=None, description="diffusers negative prompt."
    )
    image_batch_size: Annotated[int, ModelKey("image")] = Field(
        default=8, ge=1, description="Most images generated in one pipeline call."
    )
    attention_slicing: Annotated[bool, ModelKey("image", affects_output=False)] = Field(
        default=False, description="Trade speed for memory (diffusers backend)."
    )
    cpu_offload: Annotated[
        Literal["none", "model", "sequential"], ModelKey("image", affects_output=False)
    ] = Field(
        default="none",
        description="Keep diffusers submodels on the CPU until used (needs a GPU; saves memory).",
    )
    channels_last: Annotated[bool, ModelKey("image", affects_output=False)] = Field(
        default=False, description="channels_last UNet/VAE memory format (GPU speed)."
    )
    compile: Annotated[bool, ModelKey("image", affects_output=False)] = Field(
        default=False, description="torch.compile the UNet (GPU; slow first call)."
    )
    # lore
    lore_max_new_tokens: Annotated[int, ModelKey("lore")] = Field(
        default=64, ge=8, description="Token budget for the two lore sentences."
    )
    lore_do_sample: Annotated[bool, ModelKey("lore")] = Field(
        default=False, description="Greedy by default; True samples with the token seed."
    )
    lore_temperature: Annotated[float, ModelKey("lore")] = Field(
        default=0.7, gt=0, description="Sampling temperature (lore_do_sample)."
    )
    lore_top_p: Annotated[float, ModelKey("lore")] = Field(
        default=0.9, gt=0, le=1, description="Nucleus sampling mass (lore_do_sample)."
    )
    lore_repetition_penalty: Annotated[float, ModelKey("lore")] = Field(
        default=1.1, ge=1.0, description="Penalty on repeated tokens."
    )
    lore_batch_size: Annotated[int, ModelKey("lore")] = Field(
        default=8, ge=1, description="Most lore prompts generated together."
    )


def model_keys(*loaders: ModelKind, output_only: bool = False) -> tuple[str, ...]:
    """The :class:`ModelSettings` fields that ``loaders`` read, from their :class:`ModelKey` marks.

    Args:
        *loaders: ``"image"``, ``"lore"`` or both.
        output_only: Only the fields whose value decides what is generated.

    Returns:
        The field names, each once: for each loader in turn the fields only it reads, then the ones it shares with
        the other loader, each group in declaration order.
    """
    marks = {
        name: mark
        for name, info in ModelSettings.model_fields.items()
        for mark in info.metadata
        if isinstance(mark, ModelKey) and (mark.affects_output or not output_only)
    }
    keys: list[str] = []
    for loader in loaders:
        for shared in (False, True):
            keys += [
                name
                for name, mark in marks.items()
                if loader in mark.loaders and (len(mark.loaders) > 1) == shared and name not in keys
            ]
    return tuple(keys)


class SignerSettings(Section):
    """The agent's key: an encrypted keystore, never a raw key. The password comes from the env or a file."""

    keystore: Path | None = Field(
        default=None, description="V3 keystore JSON (eth-account / geth / Ape format)."
    )
    ape_account: str | None = Field(
        default=None,
        description="Ape account alias: $APE_DATA_FOLDER/accounts/<alias>.json (default ~/.ape).",
    )
    password_file: Path | None = Field(default=None, description="File holding the keystore password.")
    password_env: str = Field(
        default="CHRYSALIS_KEYSTORE_PASSWORD", description="Env var holding the keystore password."
    )


class CredentialsSettings(Section):
    """C2PA Content Credentials signed into every generated image (off until key_file and certificate_chain are
    set). `chrysalis init --dev-credentials` makes development ones; the key's password, if it has one, comes from
    the env or a file, never from this file."""

    key_file: Path | None = Field(
        default=None,
        description="PEM private key that signs the images' C2PA manifests (EC P-256 for ES256); keep it 0600.",
        examples=[".chrysalis/credentials/signer.key"],
    )
    certificate_chain: Path | None = Field(
        default=None,
        description="PEM certificates: the signing certificate first (issued by a CA, with the emailProtection "
        "extended key usage), then its issuers.",
        examples=[".chrysalis/credentials/chain.pem"],
    )
    trust_anchors: Path | None = Field(
        default=None,
        description="PEM root certificates the chain must lead to (the development CA for development "
        "credentials); checked at start-up and used when Chrysalis reads credentials back.",
        examples=[".chrysalis/credentials/ca.pem"],
    )
    key_password_file: Path | None = Field(
        default=None,
        description="File holding the key's password, when the PEM key is encrypted.",
        examples=["keys/c2pa.password"],
    )
    key_password_env: str = Field(
        default="CHRYSALIS_C2PA_KEY_PASSWORD",
        description="Env var holding the key's password, when the PEM key is encrypted.",
    )
    tsa_url: str | None = Field(
        default=None,
        description="RFC 3161 time-stamp authority (http:// or https://) that countersigns each manifest, so it "
        "stays valid after the certificate expires (None: no time-stamp, nothing leaves the machine).",
        examples=["http://timestamp.digicert.com"],
    )

    @field_validator(
        "key_file", "certificate_chain", "trust_anchors", "key_password_file", "tsa_url", mode="before"
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("tsa_url")
    @classmethod
    def _tsa_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.strip().lower().startswith(("http://", "https://")):
            raise ValueError(
                f"credentials.tsa_url must be an http:// or https:// URL, not {redact_url(value)!r}: a time-stamp "
                "authority's RFC 3161 endpoint, or leave it unset"
            )
        return value

    @model_validator(mode="after")
    def _key_and_chain_together(self) -> CredentialsSettings:
        if (self.key_file is None) != (self.certificate_chain is None):
            missing = "certificate_chain" if self.certificate_chain is None else "key_file"
            raise ValueError(
                f"credentials.{missing} is not set: signing needs both key_file and certificate_chain (or "
                "neither, to leave images unsigned); `chrysalis init --dev-credentials` makes a matching pair"
            )
        if self.key_file is None and (self.trust_anchors is not None or self.tsa_url is not None):
            raise ValueError(
                "credentials.trust_anchors and tsa_url need key_file and certificate_chain: set them, or unset "
                "the others"
            )
        return self

    @property
    def enabled(self) -> bool:
        """Whether images are signed."""
        return self.key_file is not None and self.certificate_chain is not None


class SubmitSettings(Section):
    """How transactions are priced, sent, replaced when stuck, and confirmed."""

    confirmations: int = Field(
        default=0, ge=0, description="Blocks on top of a transaction's block before it counts as confirmed."
    )
    max_fee_per_gas_gwei: float = Field(
        default=200.0, gt=0, description="Never pay more per gas; above it nothing is sent (retryable error)."
    )
    priority_fee_gwei: float | None = Field(
        default=None, ge=0, description="Fixed tip; None asks the node (eth_maxPriorityFeePerGas)."
    )
    fallback_priority_fee_gwei: float = Field(
        default=1.0, ge=0, description="Tip when the node cannot suggest one."
    )
    base_fee_multiplier: float = Field(
        default=2.0, ge=1.0, description="maxFeePerGas = multiplier x next base fee + tip (capped)."
    )
    gas_multiplier: float = Field(default=1.2, ge=1.0, description="Gas limit = estimate x multiplier.")
    dry_run: bool = Field(
        default=True, description="eth_call a transaction with a preset gas limit before sending."
    )
    stuck_after_s: float = Field(
        default=90.0, gt=0, description="Replace a transaction not mined after this long."
    )
    stuck_after_blocks: int | None = Field(
        default=6, ge=1, description="... or after this many new blocks without it (None: time only)."
    )
    fee_bump_percent: float = Field(
        default=12.5, ge=12.5, description="Raise both fee fields by at least this much when replacing."
    )
    max_replacements: int = Field(
        default=5, ge=0, description="Most fee-bumped replacements of one transaction."
    )
    receipt_timeout_s: float = Field(
        default=1800.0,
        gt=0,
        description="Longest single wait for a fulfilment before its job is given back to wait again (a stall "
        "never fails a job).",
    )
    poll_interval_s: float = Field(default=1.0, gt=0, description="Seconds between receipt polls.")
    rpc_retries: int = Field(default=3, ge=0, description="Extra attempts after an RPC transport failure.")
    rpc_backoff_s: float = Field(default=0.25, ge=0, description="First wait between RPC attempts (doubles).")
    batch_max_count: int = Field(
        default=100, ge=1, description="Most fulfilments in one fulfillEvolutions tx."
    )
    batch_max_gas: int = Field(
        default=10_000_000, ge=100_000, description="Gas cap of one batched transaction."
    )
    refresh_max_gas: int | None = Field(
        default=None,
        ge=100_000,
        description="Gas cap of one refreshMetadata tx (None: half the block gas limit).",
    )
    precheck_batch_size: int = Field(
        default=200, ge=1, description="isPendingWith calls per JSON-RPC batch in the pre-send check."
    )


class DatabaseSettings(Section):
    """The agent's database: jobs and the chain watcher's cursor."""

    url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL: sqlite:///path (default) or postgresql+psycopg2://user@host:5432/db. "
        "Migrated to the latest schema when opened.",
    )
    busy_timeout_ms: int = Field(
        default=30_000, ge=0, description="SQLite: how long a writer waits for the lock."
    )


class MetricsSettings(Section):
    """The Prometheus ``/metrics`` endpoint that ``chrysalis run`` serves."""

    enabled: bool = Field(default=True, description="Serve /metrics while the agent runs.")
    host: str = Field(
        default="127.0.0.1", description="Address to listen on; keep it local unless a firewall guards it."
    )
    port: int = Field(
        default=9464, ge=0, le=65535, description="TCP port (0: any free port, logged at start)."
    )


class LogSettings(Section):
    """How ``chrysalis run`` logs (to stderr)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Least severe level logged."
    )
    format: Literal["text", "json"] = Field(
        default="text",
        description="text: human-readable lines; json: one JSON object per line (log shippers).",
    )


class AgentSettings(Section):
    """The agent's pipeline: who it is, how it holds and retries jobs, where its rules and oracles come from."""

    worker_id: str | None = Field(
        default=None, description="This worker's name in the job store (None: <hostname>:<pid>, unique)."
    )
    lease_s: float = Field(
        default=60.0, gt=0, description="Seconds a claimed job stays ours without a heartbeat (then reaped)."
    )
    role_lease_s: float = Field(
        default=15.0,
        gt=0,
        description="Seconds a singleton role (watching the chain, the cron schedules) stays this agent's without "
        "a renewal; agents renew theirs about every second, and another agent takes a lapsed role over.",
    )
    max_attempts: int = Field(
        default=5, ge=1, description="Attempts before a job ends failed, with its error."
    )
    retry_base_s: float = Field(
        default=5.0, ge=0, description="Back-off after a first failed attempt (doubles)."
    )
    retry_cap_s: float = Field(default=600.0, ge=0, description="Longest back-off between attempts.")
    batch_size: int = Field(
        default=8, ge=1, description="Most jobs advanced together (one inference batch, one fulfilment tx)."
    )
    batch_wait_s: float = Field(
        default=0.0,
        ge=0,
        description="Wait this long for more claimable jobs to fill a batch (0: go at once).",
    )
    reconcile_interval_s: float = Field(
        default=60.0,
        ge=0,
        description="Seconds between sweeps that find requests pending on-chain with no job (a missed log): one "
        "eth_call per minted token per sweep (0: never).",
    )
    rules: Path | None = Field(default=None, description="Evolution rules TOML (None: the shipped default).")
    price_feed: str | None = Field(
        default=None, description="Chainlink feed for the price oracle (None: the deployment's DevPriceFeed)."
    )
    price_window_s: int | None = Field(
        default=86_400, gt=0, description="Window of price.change_pct in seconds (None: leave it out)."
    )
    price_max_age_s: int | None = Field(
        default=3_600,
        ge=0,
        description="Refuse a price older than this at the event's block (None: no check).",
    )
    token_name: str = Field(
        default="{collection} #{token_id}", description="Token name; {collection} is the contract's name()."
    )
    external_url: str | None = Field(
        default=None,
        examples=["https://example.org/tokens/{token_id}"],
        description="The token page written as the metadata's external_url (OpenSea), e.g. "
        "'https://example.org/tokens/{token_id}' (None: not written).",
    )

    @field_validator("external_url")
    @classmethod
    def _external_url_template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            filled = value.format(token_id=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"{value!r} is not a template with only {{token_id}} in braces ({exc}); "
                "e.g. 'https://example.org/tokens/{token_id}'"
            ) from None
        if not filled.startswith(("https://", "http://", "ipfs://")) or " " in filled:
            raise ValueError(
                f"{value!r} is not an http(s):// or ipfs:// URL, e.g. 'https://example.org/tokens/{{token_id}}'"
            )
        return value

    serve_gateway: bool | None = Field(
        default=None,
        description="Serve the embedded IPFS node's read-only gateway (no RPC) at "
        "ipfs.gateway_host:gateway_port while running (None: only when a pinning service must fetch from it).",
    )
    wait_chunk_s: float = Field(
        default=2.0,
        gt=0,
        description="Confirmation waits run in chunks this long, so a stop is seen quickly.",
    )


class HttpOracleSettings(Section):
    """An extra oracle: numbers from a JSON document over HTTP (oracles/http_json.py), read at each evolution."""

    name: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Reading prefix: the rules read <name>.<field> (e.g. weather.temp_c).",
        examples=["weather"],
    )
    url: str = Field(
        description="The document's URL (GET, http:// or https://).", examples=["https://api.example.com/now"]
    )
    fields: dict[str, str] = Field(
        description='Reading field -> JSONPath selecting exactly one number, e.g. { usd = "$.ethereum.usd" }.',
        examples=[{"usd": "$.ethereum.usd"}],
    )
    timestamp_path: str | None = Field(
        default=None, description="JSONPath of the document's own update time; adds <name>.updated_at."
    )
    headers_env: dict[str, str] | None = Field(
        default=None,
        description="Request header -> env var holding its value (API keys stay out of the TOML file).",
        examples=[{"X-Api-Key": "WEATHER_API_KEY"}],
    )
    timeout_s: float = Field(default=5.0, gt=0, description="Timeout of one request.")
    retries: int = Field(
        default=2, ge=0, description="Retries after a timeout, connection error, 5xx or 429."
    )
    cache_ttl_s: float = Field(
        default=30.0,
        ge=0,
        description="Seconds a fetched document is reused (one fetch per burst of evolutions).",
    )


class EthCallOracleSettings(Section):
    """An extra oracle: a view function's return values, read with eth_call at the event's block."""

    name: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Reading prefix: the rules read <name>.<output> (e.g. held.value).",
        examples=["held"],
    )
    address: str = Field(
        description="The contract (0x address on the collection's chain).",
        examples=["0x5FbDB2315678afecb367f032d93F642f64180aa3"],
    )
    signature: str = Field(
        description='"name(inputTypes)(outputTypes)", e.g. "balanceOf(address)(uint256)" (cast style).',
        examples=["balanceOf(address)(uint256)"],
    )
    args: list[str | int | bool] = Field(
        default_factory=list,
        description="Arguments: literals or $holder, $token_id, $collection, $block_number, $block_timestamp.",
    )
    outputs: list[str] | None = Field(
        default=None, description="Names of the return values (reading fields)."
    )
    decimals: int | dict[str, int] | None = Field(
        default=None,
        description="Scale integer outputs to floats: one int, or { output = decimals }.",
        examples=[18],
    )


class OraclesSettings(Section):
    """Extra oracles read into each evolution's input snapshot (next to the wallet and the price feed, whose
    settings are agent.price_*), and the guard that screens every reading before the rules see it."""

    http: list[HttpOracleSettings] = Field(
        default_factory=list,
        description="[[oracles.http]] tables: HTTP JSON sources (or CHRYSALIS_ORACLES__HTTP as a JSON list).",
    )
    eth_call: list[EthCallOracleSettings] = Field(
        default_factory=list,
        description="[[oracles.eth_call]] tables: view functions (or CHRYSALIS_ORACLES__ETH_CALL as a JSON list).",
    )
    guard: dict[str, dict[str, float | int | bool]] | None = Field(
        default=None,
        description='Limits per reading, e.g. [oracles.guard."price.answer"] min = 100, max = 1e6, '
        "max_age_s = 3600, required = false. A reading out of bounds, stale or missing is left out (logged, "
        "counted) and the rules use their defaults; a required one makes the evolution wait.",
        examples=[{"price.answer": {"min": 100, "max": 1e6, "max_age_s": 3600}}],
    )


class StudioSettings(Section):
    """The web app (``chrysalis studio``): where it listens, human review, and who may change anything.

    Secrets (the admin password, the API token, the session secret) come from env vars or files only.
    """

    host: str = Field(default="127.0.0.1", description="Address the studio listens on; keep it local.")
    port: int = Field(default=8090, ge=0, le=65535, description="TCP port of the studio (0: any free port).")
    allowed_hosts: list[str] | None = Field(
        default=None,
        description="Host names the studio answers to (the Host header, without the port; others get 400), "
        "e.g. ['studio.example.org'] behind a proxy or when listening on 0.0.0.0; '*.example.org' for "
        "subdomains, '*' for any. None: studio.host (or --host), localhost, 127.0.0.1 and [::1].",
    )
    review: bool = Field(
        default=False,
        description="Review mode: generated results wait (awaiting_review) until a curator approves them; "
        "nothing is pinned remotely or sent on-chain before.",
    )
    admin_user: str = Field(default="admin", description="Login name that the admin password belongs to.")
    password_env: str = Field(
        default="CHRYSALIS_STUDIO_PASSWORD", description="Env var holding the admin password."
    )
    password_file: Path | None = Field(default=None, description="File holding the admin password.")
    curators_file: Path | None = Field(
        default=None,
        description="More logins: lines `name:scrypt$...` written by `chrysalis review curator NAME`.",
    )
    token_env: str = Field(
        default="CHRYSALIS_STUDIO_TOKEN", description="Env var holding the API bearer token (scripts, CI)."
    )
    token_file: Path | None = Field(default=None, description="File holding the API bearer token.")
    token_user: str = Field(
        default="api", description="Name recorded for actions taken with the bearer token."
    )
    session_secret_env: str = Field(
        default="CHRYSALIS_STUDIO_SESSION_SECRET",
        description="Env var holding the key that signs session cookies (None set: a random key per start, "
        "so logins end when the studio restarts).",
    )
    session_secret_file: Path | None = Field(default=None, description="File holding the session key.")
    secure_cookies: bool = Field(
        default=False, description="Send the session cookie over HTTPS only (set it behind a TLS proxy)."
    )
    session_max_age_s: int = Field(default=12 * 3600, ge=60, description="How long a login lasts.")
    viewer_gateway: str | None = Field(
        default=None,
        description="An IPFS gateway on an origin of its own that runs the token viewer (the agent's, "
        "http://<ipfs.gateway_host>:<ipfs.gateway_port>, or one you run): a token page then embeds the version's "
        "animation_url from it, so the studio and marketplaces show one artefact. None: a link only.",
        examples=["http://127.0.0.1:8080"],
    )

    @field_validator("viewer_gateway")
    @classmethod
    def _viewer_gateway_is_an_origin(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = value.rstrip("/")
        scheme, _, rest = url.partition("://")
        if scheme not in ("http", "https") or not rest or "/" in rest or " " in rest:
            raise ValueError(
                f"studio.viewer_gateway {value!r} is not a gateway origin: give scheme, host and port only, e.g. "
                "http://127.0.0.1:8080 (the viewer is then opened under its /ipfs/ path)"
            )
        return url

    poll_interval_s: float = Field(
        default=1.0, gt=0, description="Seconds between the studio's chain / review polls (live updates)."
    )
    login_free_failures: int = Field(
        default=5,
        ge=1,
        description="Failed logins allowed per client address and per name before the studio makes them wait "
        "(1 s, then doubling each failure up to login_lockout_s; 429 with Retry-After meanwhile).",
    )
    login_lockout_s: int = Field(default=900, ge=1, description="Longest wait after repeated failed logins.")
    max_event_streams: int = Field(
        default=200, ge=1, description="Live-update streams (/events) open at once in all; beyond: 503."
    )
    max_event_streams_per_client: int = Field(
        default=16, ge=1, description="Live-update streams one client address may hold open; beyond: 429."
    )
    verify_queue: int = Field(
        default=8,
        ge=1,
        description="Verify runs waiting or running at most (each replays a model); beyond: 503.",
    )
    verify_per_minute: int = Field(
        default=4,
        ge=0,
        description="Verify runs an anonymous client address may start a minute (beyond: 429; results already "
        "computed are free; curators are not limited).",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _host_patterns(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or []:
            if (
                not pattern
                or "*" in pattern[1:]
                or (pattern.startswith("*") and not pattern.startswith("*.") and pattern != "*")
            ):
                raise ValueError(
                    f"studio.allowed_hosts: {pattern!r} is not a host name or pattern: use names like "
                    "'studio.example.org', '*.example.org' for its subdomains, or '*' for any host"
                )
        return value


class RefreshPolicySettings(Section):
    """One refresh policy of the collection: on a schedule (``cron``) or when the price moves (``price_change_pct``)."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Unique name (letters, digits, - _ .): logs, job keys, `chrysalis refresh status`.",
        examples=["daily"],
    )
    cron: str | None = Field(
        default=None,
        description="Crontab 'minute hour day month weekday' in refresh.timezone, e.g. '0 0 * * *' (daily at 00:00); "
        "weekday 0 or 7 is Sunday, as in cron.",
        examples=["0 0 * * *"],
    )
    price_change_pct: float | None = Field(
        default=None,
        gt=0,
        description="Refresh when a Chainlink AnswerUpdated moves the price more than this many percent since the "
        "last refresh.",
    )
    feed: str | None = Field(
        default=None,
        description="Feed whose AnswerUpdated events are watched (None: agent.price_feed, else the deployment's "
        "DevPriceFeed).",
    )
    tokens: str = Field(
        default="all", description="Which tokens: 'all', or ids and ranges such as '1-100,250'."
    )

    @model_validator(mode="after")
    def _one_trigger(self) -> RefreshPolicySettings:
        if (self.cron is None) == (self.price_change_pct is None):
            raise ValueError(
                f"refresh policy {self.name!r} needs exactly one of cron = '...' or price_change_pct = ..."
            )
        if self.cron is not None:
            try:
                crontab_trigger(self.cron)
            except ValueError as exc:
                raise ValueError(
                    f"refresh policy {self.name!r}: cron {self.cron!r} is not a crontab expression ({exc}); "
                    "write 'minute hour day month weekday', e.g. '0 0 * * *'"
                ) from None
        try:
            parse_tokens(self.tokens)
        except ConfigError as exc:
            raise ValueError(f"refresh policy {self.name!r}: {exc.message}") from None
        return self


class RefreshSettings(Section):
    """Scheduled and oracle-driven refreshes: policies, and the budgets that bound them."""

    policies: list[RefreshPolicySettings] = Field(
        default_factory=list,
        description="[[refresh.policies]] tables; none: only manual and studio refreshes. In the environment: "
        'CHRYSALIS_REFRESH__POLICIES=\'[{"name": "daily", "cron": "0 0 * * *"}]\' (a JSON list).',
    )
    timezone: str = Field(default="UTC", description="Time zone of the cron expressions (IANA name).")
    max_tokens: int = Field(
        default=10_000,
        ge=1,
        description="Budget: tokens one refresh regenerates before it pauses for pause_s (then it goes on).",
    )
    max_gas_per_day: int | None = Field(
        default=200_000_000,
        ge=100_000,
        description="Budget: refreshMetadata gas per UTC day; a refresh that reaches it pauses until 00:00 UTC.",
    )
    max_fee_per_gas_gwei: float = Field(
        default=50.0,
        gt=0,
        description="Budget: never pay more per gas for a refresh; above it the refresh pauses for pause_s.",
    )
    pause_s: float = Field(
        default=3_600.0, gt=0, description="How long a refresh paused by max_tokens or the fee cap waits."
    )
    chunk_size: int = Field(
        default=64,
        ge=1,
        description="Tokens read, generated and published per step; evolution requests are served between steps.",
    )
    send_batch: int = Field(
        default=500,
        ge=1,
        description="Published tokens gathered before refreshMetadata is sent (fewer at the end of a refresh); "
        "each transaction is then sized to submit.refresh_max_gas.",
    )
    first_render: bool = Field(
        default=False,
        description="Also render tokens without metadata yet (genesis art): a first image at their stage, no parent.",
    )
    guard: dict[str, dict[str, float | int | bool]] | None = Field(
        default=None,
        description='Extra oracle guard limits for refreshes, per reading, e.g. [refresh.guard."price.answer"] '
        "min = 1, max = 1e6, max_age_s = 3600, required = false (see oracles/guard.py); they override the "
        "pipeline's own limits for the same reading.",
        examples=[{"price.answer": {"min": 1, "max": 1e6}}],
    )
    scheduler_table: str = Field(
        default="refresh_schedules",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="APScheduler's job table (in database.url) holding the cron schedules.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> RefreshSettings:
        names = [p.name for p in self.policies]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"refresh policy names must be unique; {', '.join(twice)} appear more than once")
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"timezone {self.timezone!r} is not an IANA time zone name (e.g. UTC, Europe/Paris)"
            ) from None
        return self


class GatesSettings(Section):
    """Automatic quality gates every candidate (evolution, refresh, genesis item) passes before it is published
    or shown to a curator (:mod:`agent.gates`). A failing candidate is regenerated with the next public reroll of
    its seed, up to ``max_rerolls`` times; then it goes to review flagged, or (review off) its job fails."""

    enabled: bool = Field(
        default=True,
        description="Run the gates. The defaults pass the shipped models' normal output (measured: "
        "bench/gates.py), so a passing candidate's bytes are exactly those of an ungated run.",
    )
    max_rerolls: int = Field(
        default=2, ge=0, le=16, description="Rerolls of a failing candidate before it is flagged (or fails)."
    )
    duplicate_distance: int = Field(
        default=6,
        ge=0,
        le=20,
        description="Near duplicate: a perceptual hash (64-bit dHash) within this many bits of another "
        "token's image; 0 catches only identical hashes. Measured (bench/gates.py): distinct sprites >= 13 "
        "bits apart, a rescaled or touched-up copy <= 5.",
    )
    min_symmetry: float = Field(
        default=0.85, ge=0, le=1, description="Embedded sprite model: lowest left-right symmetry."
    )
    min_palette: float = Field(
        default=0.6, ge=0, le=1, description="Embedded sprite model: lowest palette adherence to the mood."
    )
    lore_min_chars: int = Field(default=20, ge=0, description="Shortest lore (characters).")
    lore_max_chars: int = Field(default=1000, ge=1, description="Longest lore (characters).")
    blocklist: list[str] = Field(
        default_factory=list,
        description="Words or phrases lore must not contain (whole words, case-insensitive).",
    )
    metrics: list[str] = Field(
        default_factory=list,
        description="More image metrics: 'module:function' entry points called as function(png, traits, "
        "backend) -> list of agent.gates.GateResult.",
    )


class Settings(BaseSettings):
    """Everything Chrysalis can be told. Sections mirror the TOML tables."""

    model_config = SettingsConfigDict(
        env_prefix="CHRYSALIS_",
        env_nested_delimiter="__",
        extra="forbid",
        toml_file=None,
    )

    data_dir: Path = Field(
        default=Path(".chrysalis"), description="Where the agent keeps its state and generated assets."
    )
    chain: ChainSettings = Field(default_factory=ChainSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    ipfs: IpfsSettings = Field(default_factory=IpfsSettings)
    models: ModelSettings = Field(default_factory=ModelSettings)
    signer: SignerSettings = Field(default_factory=SignerSettings)
    credentials: CredentialsSettings = Field(default_factory=CredentialsSettings)
    submit: SubmitSettings = Field(default_factory=SubmitSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    oracles: OraclesSettings = Field(default_factory=OraclesSettings)
    studio: StudioSettings = Field(default_factory=StudioSettings)
    refresh: RefreshSettings = Field(default_factory=RefreshSettings)
    gates: GatesSettings = Field(default_factory=GatesSettings)

    @model_validator(mode="after")
    def _model_cache_under_data_dir(self) -> Settings:
        """The converted-model cache goes with the rest of the state (``<data_dir>/models``), not into
        whatever directory the command runs in, unless ``models.cache_dir`` is set."""
        if "cache_dir" not in self.models.model_fields_set:
            self.models.cache_dir = self.data_dir / "models"
        return self

    @property
    def ipfs_repo(self) -> Path:
        """The embedded IPFS repo every command and the agent use: ``ipfs.repo``, else ``<data_dir>/ipfs``."""
        return Path(self.ipfs.repo) if self.ipfs.repo is not None else Path(self.data_dir) / "ipfs"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = _explicit_file.get() or config_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path is not None:
            sources.append(_TomlWithoutSecrets(settings_cls, toml_file=toml_path))
        return tuple(sources)


class _TomlWithoutSecrets(TomlConfigSettingsSource):
    """The TOML file as a settings source, refusing the secrets it must not hold (they come from the environment
    or files): a pinning service's ``token``.

    Raises:
        ConfigError: the file sets one; the message names the key and the env var to use instead.
    """

    def __init__(self, settings_cls: type[BaseSettings], toml_file: Path) -> None:
        super().__init__(settings_cls, toml_file=toml_file)
        ipfs = self.toml_data.get("ipfs")
        services = ipfs.get("pinning_services") if isinstance(ipfs, dict) else None
        for i, service in enumerate(services if isinstance(services, list) else []):
            if isinstance(service, dict) and "token" in service:
                name = service.get("name")
                env = (
                    token_env_var(str(name), service.get("token_env"))
                    if name
                    else "CHRYSALIS_PINNING_<NAME>_TOKEN"
                )
                raise ConfigError(
                    f"{toml_file}: ipfs.pinning_services[{i}].token ({name or 'unnamed'}) is a secret, and secrets "
                    "are never read from the TOML file",
                    hint=f"delete the token line from {toml_file} and set ${env} instead (or name another variable "
                    "with token_env); rotate the token if the file was shared",
                )


_explicit_file: ContextVar[Path | None] = ContextVar("chrysalis_settings_file", default=None)
"""The file :func:`load_settings` was given, while it builds the :class:`Settings` (a context variable, not the
environment: it holds for that call, in that thread, only)."""


def config_path() -> Path | None:
    """The TOML file: ``$CHRYSALIS_CONFIG`` (which must exist), else ./chrysalis.toml if there is one."""
    explicit = os.environ.get("CHRYSALIS_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(
                f"config file {path} (from $CHRYSALIS_CONFIG) does not exist",
                hint="point CHRYSALIS_CONFIG at your chrysalis.toml (`chrysalis init` writes one), or unset it to "
                "use ./chrysalis.toml",
            )
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


_ENV_PREFIX = "CHRYSALIS_"
_ENV_DELIMITER = "__"


def _env_var_for(loc: tuple[int | str, ...]) -> str | None:
    """The ``CHRYSALIS_*`` variable that set the value at ``loc`` (or a table or list above it), if one did."""
    present = {name.upper(): name for name in os.environ if name.upper().startswith(_ENV_PREFIX)}
    keys = [str(p) for p in loc if isinstance(p, str)]
    for n in range(len(keys), 0, -1):
        name = _ENV_PREFIX + _ENV_DELIMITER.join(keys[:n]).upper()
        if name in present:
            return present[name]
    return None


def _bad_json_env() -> list[str]:
    """``CHRYSALIS_*`` variables holding a list or table (``[`` or ``{`` first) that is not valid JSON."""
    import json

    bad = []
    for name, value in sorted(os.environ.items()):
        if name.upper().startswith(_ENV_PREFIX) and value.lstrip()[:1] in ("[", "{"):
            try:
                json.loads(value)
            except ValueError:
                bad.append(name)
    return bad


def load_settings(config: Path | None = None, **overrides: object) -> Settings:
    """Load settings, turning validation errors into a :class:`ConfigError` that names the key and the fix.

    Args:
        config: The TOML file to read (default: :func:`config_path`). It is used for this call only.
        **overrides: Values that win over every source (init kwargs of :class:`Settings`).

    Raises:
        ConfigError: ``config`` (or ``$CHRYSALIS_CONFIG``) does not exist, is not TOML, or a value is invalid.
    """
    if config is not None and not config.is_file():
        raise ConfigError(f"config file {config} does not exist", hint="run `chrysalis init` to write one")
    token = _explicit_file.set(config)
    try:
        return _build(overrides)
    finally:
        _explicit_file.reset(token)


def _build(overrides: dict[str, object]) -> Settings:
    """:class:`Settings` from the sources, its errors as :class:`ConfigError` (see :func:`load_settings`)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except SettingsError as exc:  # a list or table from the environment that is not JSON
        names = _bad_json_env()
        cause = exc.__cause__
        detail = f": {cause}" if isinstance(cause, ValueError) else ""
        raise ConfigError(
            (f"environment variable {', '.join(names)} is not valid JSON{detail}" if names else str(exc)),
            hint="lists and tables set from the environment are JSON, e.g. "
            """CHRYSALIS_REFRESH__POLICIES='[{"name": "daily", "cron": "0 0 * * *"}]' (double quotes around """
            "keys and strings)",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"config file {_explicit_file.get() or config_path()} is not valid TOML: {exc}",
            hint="fix the line named above; `chrysalis init` writes a commented example",
        ) from None
    except ValidationError as exc:
        lines = []
        from_env: list[str] = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            field = next((str(p) for p in reversed(err["loc"]) if isinstance(p, str)), "")
            env = _env_var_for(tuple(err["loc"]))
            # the environment wins over the file: where it set the value, the variable is what to fix
            source = "" if env is None else f" (from ${env})"
            if env is not None:
                from_env.append(env)
            if err["type"] == "extra_forbidden":  # a misspelt key may hold a secret: name it, hide its value
                lines.append(f"{key}: {err['msg']}{source}")
            else:
                lines.append(f"{key}: {err['msg']} (got {_shown_input(err.get('input'), field)}){source}")
        file = _explicit_file.get() or config_path()
        if len(from_env) == len(lines):
            source, fix = "the environment", "fix or unset the variables above"
        elif not from_env and file is not None:
            source, fix = str(file), "fix the keys above"
        else:
            source, fix = (f"{file} and the environment" if file else "the environment"), "fix the keys above"
        raise ConfigError(
            f"invalid configuration in {source}:\n  " + "\n  ".join(lines),
            hint=f"{fix}; `chrysalis init` writes a commented example",
        ) from None


_SECRET_KEY = re.compile(r"(token|password|secret|api_?key|credentials?)$", re.IGNORECASE)
"""Keys whose values are secrets (``token``; not ``token_env`` or ``password_file``, which only name them)."""


def _shown_input(value: object, key: str = "") -> str:
    """A rejected input as a validation error shows it: never a secret. A secret key's value is ``'***'``, a
    table only its key names, text with its URLs redacted (an RPC URL may hold an API key)."""
    if _SECRET_KEY.search(key) and value is not None:
        return "'***'"
    if isinstance(value, dict):
        return "a table with keys " + (", ".join(repr(str(k)) for k in value) or "none")
    if isinstance(value, list | tuple):
        items = [_shown_input(v) for v in value[:5]]
        return "[" + ", ".join(items + (["..."] if len(value) > 5 else [])) + "]"
    if isinstance(value, SecretStr):
        return "'***'"
    if isinstance(value, str):
        return repr(redact_text(value))
    return repr(value)
