"""The chain watcher: a contract's logs as ``block | reorg | finalize`` events, across restarts and reorgs.

Wiring, in short::

    db = Database.open(settings.database.url)        # agent.store: the agent's database, migrated
    rpc = RpcClient.from_settings(settings.chain)
    config = WatchConfig.from_settings(settings.chain, address=..., abi=..., start_block=deployment.deploy_block,
                                       chain_id=deployment.chain_id)
    watcher = Watcher(rpc, SqlCursorStore(db), config)
    watcher.run(handle)    # handle(event) switches on event.kind: "block" | "reorg" | "finalize"

See :mod:`agent.watch.watcher` for the model and the delivery guarantees.
"""

from agent.watch.cursor import CursorState, CursorStore
from agent.watch.cursor_sql import SqlCursorStore
from agent.watch.errors import (
    ChainResetError,
    DeepReorgError,
    LogDecodeError,
    RangeTooLargeError,
    RpcError,
    RpcRateLimitedError,
    UnsplittableRangeError,
)
from agent.watch.events import BlockRef, Finalize, NewBlock, Reorg, WatchEvent
from agent.watch.logs import AdaptiveRange, LogDecoder
from agent.watch.rpc import RpcClient
from agent.watch.watcher import WatchConfig, Watcher

__all__ = [
    "AdaptiveRange",
    "BlockRef",
    "CursorState",
    "CursorStore",
    "ChainResetError",
    "DeepReorgError",
    "Finalize",
    "LogDecodeError",
    "LogDecoder",
    "NewBlock",
    "RangeTooLargeError",
    "Reorg",
    "RpcClient",
    "RpcError",
    "RpcRateLimitedError",
    "SqlCursorStore",
    "UnsplittableRangeError",
    "WatchConfig",
    "WatchEvent",
    "Watcher",
]
