"""Named, independent PRNG streams derived from one seed.

With JAX's partitionable threefry, ``split(key)[i]`` equals ``fold_in(key, i)``,
so deriving one stream by ``split`` and another by ``fold_in(key, 1)`` silently
gives the *same* key (we hit exactly this: the data batch and the noise of the
loss came out correlated). Every stream in jaxlab is therefore derived by
name: ``fold_in(root, crc32(name))`` — distinct names, independent streams.
"""

from __future__ import annotations

import zlib

import jax


def named_key(seed_or_key: int | jax.Array, name: str) -> jax.Array:
    """The typed key of stream ``name`` under a seed (or under a parent key)."""
    root = jax.random.key(seed_or_key) if isinstance(seed_or_key, int) else seed_or_key
    return jax.random.fold_in(root, zlib.crc32(name.encode()) & 0x7FFFFFFF)
