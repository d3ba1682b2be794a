"""Genesis: a whole collection prepared before mint, with exact rarity and a commit-reveal provenance.

- :mod:`agent.genesis.traits`: the trait table (TOML), validated; exact counts by largest remainder.
- :mod:`agent.genesis.assign`: a deterministic, documented shuffle from a seed; optional uniqueness.
- :mod:`agent.genesis.run`: images and lore in batches, a receipt per item, resumable (a SQLite ledger).
- :mod:`agent.genesis.provenance`: the provenance hash published before reveal, the offset from a later block.
- :mod:`agent.genesis.reveal`: metadata files in a UnixFS directory (HAMT-sharded when large), pinned; the
  collection's base URI.
- :mod:`agent.genesis.report`: the rarity report and a contact sheet.
- :mod:`agent.genesis.cli`: ``chrysalis genesis``.
"""
