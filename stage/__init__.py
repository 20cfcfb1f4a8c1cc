"""STAGE: a streaming autoregressive diffusion world model for long driving videos (reimplementation)."""

__version__ = "0.1.0"
