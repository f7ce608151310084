"""Torch modules only: backbones, integral pose heads, the refinement unit."""
