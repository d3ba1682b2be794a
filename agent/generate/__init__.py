"""Per-token inference: images through diffusers, lore through transformers, with verifiable receipts."""
