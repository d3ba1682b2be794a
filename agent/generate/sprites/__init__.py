"""Procedural sprites, the embedded sprite diffusion model's training and quality metrics."""
