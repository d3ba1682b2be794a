"""Holder actions from a local account: open an evolution request (``chrysalis evolve``) or fuse two tokens.

:class:`Collection` is the deployed LivingCollection seen from a holder. Before sending, it checks what the
contract would check (the token exists, the account holds it, no request is pending, the collection is not
paused) so the common mistakes get a plain message and cost nothing; whatever still reverts is reported with
the contract's decoded custom error. Transactions go through :class:`~agent.submit.sender.Web3TxSender`
(EIP-1559 fees, chain-reconciled nonce, dry run), with the fee the contract is configured with.

:func:`command_rpc` and :func:`check_deployment` are how every short command reaches the node (``status``,
``evolve``, ``refresh --tokens``, ``verify``): it lives below the command packages (ops, refresh, studio) so that
they share it without importing one another.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eth_abi import decode as abi_decode
from web3 import Web3

from agent.deployment import Deployment
from agent.errors import BackendUnavailableError, ConfigError, NotFoundError, PermanentError, RetryableError
from agent.jsonrpc import RetryNotice, describe_reply
from agent.redact import redact_text, redact_url
from agent.settings import Settings, SubmitSettings
from agent.submit.errors import DecodedError, ErrorDecoder, RevertError, TransactionRevertedError
from agent.submit.rpc import ChainRpc
from agent.submit.sender import TxRequest, Web3TxSender
from agent.submit.signer import Signer
from agent.watch.logs import LogDecoder

_ETH = 10**18


# -- results --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenedRequest:
    """An evolution request a holder opened (directly, or by fusing ``burn_id`` into ``token_id``).

    Attributes:
        request_id: ``tokenId << 32 | nonce``, what the agent fulfils. stage: The token's stage before evolving.
        seed: The request's on-chain seed (``0x`` hex). fee_wei: The fee paid (escrowed until fulfilment).
        tx_hash, block_number, gas_used: The mined transaction.
    """

    request_id: int
    token_id: int
    requester: str
    stage: int
    seed: str
    fee_wei: int
    tx_hash: str
    block_number: int
    gas_used: int
    burn_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": hex(self.request_id),
            "token_id": self.token_id,
            "burn_id": self.burn_id,
            "requester": self.requester,
            "stage_before": self.stage,
            "seed": self.seed,
            "fee_wei": str(self.fee_wei),
            "tx_hash": self.tx_hash,
            "block_number": self.block_number,
            "gas_used": self.gas_used,
        }


@dataclass(frozen=True)
class TokenView:
    """A token as the contract reports it now."""

    token_id: int
    owner: str
    stage: int
    token_uri: str
    pending_request: int | None


# -- errors ---------------------------------------------------------------------------------------------------


class UnknownTokenError(NotFoundError):
    """The token was never minted, or was burnt (fused away).

    Attributes:
        token_id: The token. total_minted: Ids 1..total_minted were ever minted.
    """

    def __init__(self, token_id: int, total_minted: int) -> None:
        self.token_id = token_id
        self.total_minted = total_minted
        if 1 <= token_id <= total_minted:
            why = "it was burnt (fused into another token)"
        else:
            why = (
                f"it was never minted (ids 1..{total_minted} exist)"
                if total_minted
                else "nothing is minted yet"
            )
        super().__init__(f"token {token_id} does not exist: {why}", hint="check the token id")


class NotHolderError(PermanentError):
    """The account neither owns the token nor is approved to act for it.

    Attributes:
        token_id: The token. account: Who tried. owner: Who owns it.
    """

    def __init__(self, token_id: int, account: str, owner: str) -> None:
        self.token_id = token_id
        self.account = account
        self.owner = owner
        super().__init__(
            f"account {account} does not hold token {token_id} (its owner is {owner})",
            hint="send from the owner's account (--from), or have the owner approve this account",
        )


class RequestPendingError(PermanentError):
    """The token already has an evolution request that is neither fulfilled nor cancelled.

    Attributes:
        token_id: The token. request_id: The pending request. cancellable_at: Unix time after which its
            requester may cancel it for a refund.
    """

    def __init__(self, token_id: int, request_id: int, cancellable_at: int) -> None:
        self.token_id = token_id
        self.request_id = request_id
        self.cancellable_at = cancellable_at
        when = datetime.fromtimestamp(cancellable_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        super().__init__(
            f"token {token_id} already has a pending evolution request {request_id:#x}",
            hint=f"wait for the agent to fulfil it (`chrysalis jobs`), or cancel it for a refund after {when}",
        )


class CollectionPausedError(PermanentError):
    """The collection is paused: no new requests until the admin unpauses it."""

    def __init__(self, address: str) -> None:
        super().__init__(
            f"collection {address} is paused: it accepts no new evolution requests",
            hint="ask the collection's admin to unpause it",
        )


class HolderActionRevertedError(PermanentError):
    """A holder transaction reverted (in its dry run, or mined); the contract's custom error is decoded.

    Attributes:
        action: ``requestEvolution`` or ``fuse``. error: The decoded error. tx_hash: The mined transaction,
            if it got that far (its gas was spent), else None.
    """

    def __init__(self, action: str, error: DecodedError, *, tx_hash: str | None, detail: str) -> None:
        self.action = action
        self.error = error
        self.tx_hash = tx_hash
        explain, hint = _explain(error)
        where = f"transaction {tx_hash} reverted" if tx_hash else "would revert (nothing was sent)"
        super().__init__(
            f"{action} {where}: {error}" + (f": {explain}" if explain else ""), hint=hint or detail
        )


def _explain(error: DecodedError) -> tuple[str, str | None]:
    """A sentence and a hint for the custom errors a holder can cause."""
    a = error.args
    match error.name:
        case "LivingCollectionUnknownToken":
            return f"token {a['tokenId']} does not exist (never minted, or burnt)", "check the token id"
        case "LivingCollectionNotHolder":
            return (
                f"{a['caller']} neither owns nor is approved for token {a['tokenId']}",
                "send from the owner's account (--from)",
            )
        case "LivingCollectionWrongPayment":
            return (
                f"sent {a['sent']} wei, the fee is {a['required']} wei",
                "the fee changed while sending; run the command again (it reads the fee from the contract)",
            )
        case "LivingCollectionRequestPending":
            return (
                f"token {a['tokenId']} already has pending request {a['requestId']:#x}",
                "wait for the agent to fulfil it",
            )
        case "LivingCollectionSelfFuse":
            return "a token cannot be fused with itself", "name two different tokens"
        case "EnforcedPause":
            return "the collection is paused", "ask the collection's admin to unpause it"
        case "":
            return (
                "",
                "the revert data matches no error in the collection's ABI; is the deployment record current?",
            )
    return "", None


# -- the collection -------------------------------------------------------------------------------------------


class Collection:
    """The deployed collection, read through :class:`ChainRpc` and written from a local :class:`Signer`.

    Args:
        rpc: The node (its decoder knows the collection's errors).
        deployment: Where the collection lives.
        submit: Fee, nonce and confirmation settings for holder transactions.
    """

    def __init__(self, rpc: ChainRpc, deployment: Deployment, submit: SubmitSettings) -> None:
        self.rpc = rpc
        self.deployment = deployment
        self.submit = submit
        self.abi = deployment.abi()
        self.address = Web3.to_checksum_address(deployment.address())
        self.contract = rpc.w3.eth.contract(address=self.address, abi=self.abi)
        self.chain_id = deployment.chain_id

    @classmethod
    def connect(cls, settings: Settings) -> Collection:
        """The collection of ``settings.chain.deployment`` on ``settings.chain.rpc_url``, checked to be there.

        Raises:
            NotFoundError: no deployment record. BackendUnavailableError: the node cannot be reached.
            ConfigError: the node serves another chain, or has no contract at the recorded address.
        """
        deployment = Deployment.load(settings.chain.deployment)
        abi = deployment.abi()
        rpc = command_rpc(settings, decoder=ErrorDecoder([abi]))
        check_deployment(
            rpc,
            deployment,
            settings.chain.rpc_url,
            str(settings.chain.deployment),
            probe=command_rpc(settings, first_contact=True),
        )
        return cls(rpc, deployment, settings.submit)

    # -- views ------------------------------------------------------------------------------------------------

    def view(self, name: str, *args: Any) -> Any:
        """Call view ``name``; one output is returned bare, several as a tuple."""
        fn = self.contract.get_function_by_name(name)
        data = self.contract.encode_abi(name, args=list(args))
        raw = self.rpc.call({"to": self.address, "data": data})
        types = [o["type"] for o in fn.abi["outputs"]]
        values = abi_decode(types, raw)
        return values[0] if len(values) == 1 else tuple(values)

    def evolution_fee(self) -> int:
        return int(self.view("evolutionFee"))

    def token(self, token_id: int) -> TokenView:
        """Owner, stage, tokenURI and pending request of an existing token (:class:`UnknownTokenError` if not)."""
        self.require_exists(token_id)
        request_id, _requester, _fee, requested_at = self.view("pendingRequestOf", token_id)
        return TokenView(
            token_id=token_id,
            owner=Web3.to_checksum_address(self.view("ownerOf", token_id)),
            stage=int(self.view("stageOf", token_id)),
            token_uri=str(self.view("tokenURI", token_id)),
            pending_request=int(request_id) if requested_at else None,
        )

    def require_exists(self, token_id: int) -> None:
        if token_id < 1 or not self.view("exists", token_id):
            raise UnknownTokenError(token_id, int(self.view("totalMinted")))

    def check_can_request(self, account: str, token_id: int, *, burn_id: int | None = None) -> None:
        """Raise what the contract would revert with, as a plain error, before anything is sent."""
        if self.view("paused"):
            raise CollectionPausedError(self.address)
        if burn_id is not None and burn_id == token_id:
            raise HolderActionRevertedError(
                "fuse",
                DecodedError("LivingCollectionSelfFuse", {"tokenId": token_id}),
                tx_hash=None,
                detail="",
            )
        for tid in (token_id,) if burn_id is None else (token_id, burn_id):
            self.require_exists(tid)
            owner = Web3.to_checksum_address(self.view("ownerOf", tid))
            if owner != account and not self._approved(owner, account, tid):
                raise NotHolderError(tid, account, owner)
            request_id, _requester, _fee, requested_at = self.view("pendingRequestOf", tid)
            if requested_at:
                raise RequestPendingError(tid, int(request_id), int(self.view("cancellableAt", request_id)))

    def _approved(self, owner: str, account: str, token_id: int) -> bool:
        if self.view("isApprovedForAll", owner, account):
            return True
        return Web3.to_checksum_address(self.view("getApproved", token_id)) == account

    # -- holder transactions ----------------------------------------------------------------------------------

    def request_evolution(
        self,
        signer: Signer,
        token_id: int,
        *,
        precheck: bool = True,
        dry_run: bool = True,
        gas: int | None = None,
    ) -> OpenedRequest:
        """Send ``requestEvolution(token_id)`` with the configured fee from ``signer``; wait until it is mined.

        ``precheck=False`` skips the local checks (the contract then decides); ``dry_run=False`` with a ``gas``
        limit sends even a transaction that will revert (its gas is spent).
        """
        if precheck:
            self.check_can_request(signer.address, token_id)
        return self._open("requestEvolution", signer, [token_id], dry_run=dry_run, gas=gas)

    def fuse(
        self,
        signer: Signer,
        keep_id: int,
        burn_id: int,
        *,
        precheck: bool = True,
        dry_run: bool = True,
        gas: int | None = None,
    ) -> OpenedRequest:
        """Send ``fuse(keep_id, burn_id)``: ``burn_id`` is burnt and an evolution request opens for ``keep_id``."""
        if precheck:
            self.check_can_request(signer.address, keep_id, burn_id=burn_id)
        opened = self._open("fuse", signer, [keep_id, burn_id], dry_run=dry_run, gas=gas)
        return OpenedRequest(**{**opened.__dict__, "burn_id": burn_id})

    def _open(
        self, action: str, signer: Signer, args: Sequence[int], *, dry_run: bool, gas: int | None
    ) -> OpenedRequest:
        if not dry_run and gas is None:
            raise ConfigError(
                "sending without simulating first needs a gas limit", hint="pass --gas N with --no-simulate"
            )
        fee = self.evolution_fee()
        sender = Web3TxSender(self.rpc, signer, self.submit, decoder=self.rpc.decoder)
        data = bytes.fromhex(self.contract.encode_abi(action, args=list(args))[2:])
        tx = TxRequest(to=self.address, data=data, value=fee, gas=gas, label=action)
        try:
            confirmation = sender.wait(sender.send(tx, dry_run=dry_run))
        except TransactionRevertedError as exc:
            raise HolderActionRevertedError(
                action, exc.error, tx_hash=exc.tx_hash, detail=exc.hint or ""
            ) from None
        except RevertError as exc:
            raise HolderActionRevertedError(action, exc.error, tx_hash=None, detail=exc.hint or "") from None
        receipt = self.rpc.receipt(confirmation.tx_hash)
        decoder = LogDecoder(self.abi, self.chain_id, events=["EvolutionRequested"])
        for raw in receipt.logs if receipt is not None else ():
            if Web3.to_checksum_address(raw["address"]) != self.address:
                continue
            event = decoder.decode(
                {**raw, "logIndex": _int(raw["logIndex"]), "blockNumber": _int(raw["blockNumber"])}
            )
            if event is not None:
                a = event.args
                return OpenedRequest(
                    request_id=int(a["requestId"]),
                    token_id=int(a["tokenId"]),
                    requester=str(a["requester"]),
                    stage=int(a["stage"]),
                    seed=str(a["seed"]),
                    fee_wei=fee,
                    tx_hash=confirmation.tx_hash,
                    block_number=confirmation.block_number,
                    gas_used=confirmation.gas_used,
                )
        raise PermanentError(
            f"{action} transaction {confirmation.tx_hash} succeeded but logged no EvolutionRequested",
            hint="the address in the deployment record may not be a LivingCollection; redeploy",
        )

    # -- after --------------------------------------------------------------------------------------------------

    def wait_fulfilled(
        self,
        request_id: int,
        *,
        timeout_s: float = 300.0,
        poll_s: float = 0.5,
        on_poll: Callable[[], None] | None = None,
    ) -> TokenView:
        """Block until ``request_id`` is no longer pending; return its token as it is then.

        Raises :class:`RetryableError` if it is still pending after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while self.view("isPending", request_id):
            if time.monotonic() > deadline:
                raise RetryableError(
                    f"request {request_id:#x} is still pending after {timeout_s:g} s",
                    hint="is the agent running (`chrysalis run`)? `chrysalis status` shows its lag and jobs",
                )
            if on_poll is not None:
                on_poll()
            time.sleep(poll_s)
        return self.token(request_id >> 32)


FIRST_CONTACT_TIMEOUT_S = 5.0
"""A short command's first request waits at most this long (or ``chain.rpc_timeout_s``, if shorter)."""
FIRST_CONTACT_RETRIES = 2
"""... and is retried at most this often (or ``submit.rpc_retries``): a hanging node costs ~16 s, not ~45 s."""


def say_waiting(notice: RetryNotice) -> None:
    """Print a retry of a short command's request on stderr (``waiting for the node at ... (attempt 1/3)``)."""
    print(str(notice), file=sys.stderr, flush=True)


def command_rpc(
    settings: Settings, *, decoder: ErrorDecoder | None = None, first_contact: bool = False
) -> ChainRpc:
    """The node for a short command (``status``, ``evolve``, ``fuse``): every retry is said on stderr
    (:func:`say_waiting`), so a slow or hanging node is never a silent wait. ``first_contact`` gives the shorter
    budget of the first request (:data:`FIRST_CONTACT_TIMEOUT_S`, :data:`FIRST_CONTACT_RETRIES`): a node that
    does not answer then is reported in seconds, and one that does gets the configured budget for the rest."""
    timeout_s, retries = settings.chain.rpc_timeout_s, settings.submit.rpc_retries
    if first_contact:
        timeout_s, retries = min(timeout_s, FIRST_CONTACT_TIMEOUT_S), min(retries, FIRST_CONTACT_RETRIES)
    return ChainRpc.connect(
        settings.chain.rpc_url,
        timeout_s=timeout_s,
        retries=retries,
        backoff_s=settings.submit.rpc_backoff_s,
        decoder=decoder,
        on_retry=say_waiting,
    )


def check_deployment(
    rpc: ChainRpc, deployment: Deployment, url: str, record: str, *, probe: ChainRpc | None = None
) -> int:
    """Check that the node at ``url`` serves the deployment's chain and holds its contract; return the chain id.

    A fresh local chain (anvil restarted) with an old deployment record is the usual cause of a mismatch.
    ``probe`` (default ``rpc``) makes the first request (``eth_chainId``): a client with a shorter budget.
    An endpoint that answers, but not JSON-RPC (a web page, another service on the port, not HTTP at all), is
    reported as such, with what it answered.
    """
    try:
        chain_id = (probe or rpc).chain_id()
    except (BackendUnavailableError, PermanentError) as exc:
        kind = getattr(exc, "rpc_kind", None)
        if kind in ("bad_response", "http_4xx"):
            got = redact_text(describe_reply(url), url)
            raise ConfigError(
                f"the node at {redact_url(url)} did not answer JSON-RPC (got {got})",
                hint="chain.rpc_url (CHRYSALIS_CHAIN__RPC_URL) must be the node's JSON-RPC endpoint (anvil: "
                "http://127.0.0.1:8545); this one answers something else: check the host, port and path",
            ) from None
        if not isinstance(exc, BackendUnavailableError):
            raise
        if kind == "timeout":
            raise BackendUnavailableError(
                f"the node at {redact_url(url)} accepted the connection but did not answer in time "
                f"({_cause(exc.message)})",
                hint="it is stuck or overloaded: check the node (its logs, its load), or point chain.rpc_url "
                "(CHRYSALIS_CHAIN__RPC_URL) at another; raise chain.rpc_timeout_s if it is only slow",
            ) from None
        raise BackendUnavailableError(
            f"cannot reach the node at {redact_url(url)}: {_cause(exc.message)}",
            hint="start it (a local chain: `anvil`), or point chain.rpc_url (CHRYSALIS_CHAIN__RPC_URL) at a "
            "running node",
        ) from None
    if chain_id != deployment.chain_id:
        raise ConfigError(
            f"the node at {redact_url(url)} serves chain {chain_id}, but deployment record {record} is for chain "
            f"{deployment.chain_id}",
            hint="point chain.rpc_url at the deployment's chain, or chain.deployment at this chain's record",
        )
    address = deployment.address()
    code = rpc.request("eth_getCode", [address, "latest"])
    if not code or code in ("0x", "0x0"):
        raise ConfigError(
            f"no contract at {address} on chain {chain_id} ({redact_url(url)}), where deployment record {record} "
            "puts the collection",
            hint="the chain was reset since the deployment (a restarted anvil?); deploy again with "
            "`chrysalis deploy`, or point chain.deployment at the current record",
        )
    return chain_id


def _cause(message: str) -> str:
    lowered = message.lower()
    for needle, short in (
        ("connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("name or service not known", "unknown host"),
        ("nodename nor servname", "unknown host"),
    ):
        if needle in lowered:
            return short
    return message if len(message) <= 160 else message[:157] + "..."


def _int(value: int | str) -> int:
    return value if isinstance(value, int) else int(value, 16)


def format_eth(wei: int) -> str:
    """``0.0005 ETH`` (up to 18 decimals, trailing zeros dropped)."""
    whole, frac = divmod(int(wei), _ETH)
    text = f"{whole}.{frac:018d}".rstrip("0").rstrip(".")
    return f"{text} ETH"
