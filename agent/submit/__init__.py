"""The submit stage: sign, price, send, replace when stuck, confirm, and batch the agent's transactions.

::

    Signer (keystore) --> Web3TxSender.send --> Submission --> Web3TxSender.wait --> Confirmation
                           |  FeeOracle (EIP-1559, cap)         |  ReceiptTracker (confirmations, reorgs)
                           |  NonceManager (chain-reconciled)   |  fee-bumped replacement of stuck txs
                           |  dry run (decoded custom errors)   |  TransactionRevertedError (decoded)

    FulfilmentBatcher / RefreshBatcher: pre-check on-chain, group under count and gas caps, send, report.

Every RPC goes through :class:`ChainRpc` (retries, ``RPC_ERRORS``).
"""

from agent.submit.batcher import (
    BatchReport,
    BatchResult,
    Dropped,
    Fulfilment,
    FulfilmentBatcher,
    Plan,
    Refresh,
    RefreshBatcher,
)
from agent.submit.errors import (
    DecodedError,
    DryRunRevertedError,
    ErrorDecoder,
    FeeCapExceededError,
    InsufficientFundsError,
    NonceConsumedError,
    NonceError,
    RevertError,
    SendRejectedError,
    StuckTransactionError,
    TransactionRevertedError,
)
from agent.submit.fees import FeeOracle, FeeQuote
from agent.submit.nonce import NonceManager
from agent.submit.receipts import ReceiptTracker, TxStatus
from agent.submit.rpc import ChainRpc
from agent.submit.sender import TxRequest, TxSender, Web3TxSender
from agent.submit.signer import KeystoreSigner, SignedTx, Signer

__all__ = [
    "BatchReport",
    "BatchResult",
    "ChainRpc",
    "DecodedError",
    "Dropped",
    "DryRunRevertedError",
    "ErrorDecoder",
    "FeeCapExceededError",
    "FeeOracle",
    "FeeQuote",
    "Fulfilment",
    "FulfilmentBatcher",
    "InsufficientFundsError",
    "KeystoreSigner",
    "NonceConsumedError",
    "NonceError",
    "NonceManager",
    "Plan",
    "ReceiptTracker",
    "Refresh",
    "RefreshBatcher",
    "RevertError",
    "SendRejectedError",
    "SignedTx",
    "Signer",
    "StuckTransactionError",
    "TransactionRevertedError",
    "TxRequest",
    "TxSender",
    "TxStatus",
    "Web3TxSender",
]
