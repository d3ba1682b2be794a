"""The embedded 32x32 sprite diffusion model (weights, configs, manifest, model card)."""
