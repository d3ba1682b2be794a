"""Oracles: values read at a given block (wallet data, Chainlink feeds, HTTP JSON, eth_call)."""
