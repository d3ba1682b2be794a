"""Chrysalis: an on-chain dynamic NFT agent.

Contracts emit evolution requests; the agent reads wallet and oracle data at the event's block, runs
per-token inference (diffusers + transformers), pins the results to IPFS and updates the token on-chain,
recording every step so anyone can verify which model made which asset from which inputs.
"""

__version__ = "0.1.0"
