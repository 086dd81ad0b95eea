"""Reproducible random streams: every draw comes from a generator seeded by (seed, purpose, counter)."""

from __future__ import annotations

import hashlib

import torch

__all__ = ["derive_seed", "make_generator"]


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed that depends only on ``seed`` and ``keys`` (stable across runs and platforms)."""
    text = repr((int(seed),) + tuple(str(k) for k in keys)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def make_generator(device: torch.device | str, seed: int, *keys: object) -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``derive_seed(seed, *keys)``."""
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(derive_seed(seed, *keys))
    return generator
