"""Oracles: values read at a given block (wallet data, Chainlink feeds, HTTP JSON, eth_call).

One implementation per module: :mod:`oracles.wallet`, :mod:`oracles.chainlink`, :mod:`oracles.http_json`,
:mod:`oracles.eth_call`. :func:`oracles.snapshot.take_snapshot` bundles their readings at one block;
:class:`oracles.guard.OracleGuard` does the same but leaves stale, missing or absurd data out (logged, counted).
"""
