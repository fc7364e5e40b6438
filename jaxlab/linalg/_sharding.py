"""Output shardings for matmuls under explicit sharding (``jax.make_mesh`` defaults to Explicit axes)."""

from __future__ import annotations

import jax


def explicit_spec(x: jax.Array):
    """``(mesh, spec padded to x.ndim)`` if ``x`` lives on a mesh with Explicit axes, else ``None``.

    Under explicit sharding a ``dot_general`` whose contracted axes are sharded
    needs an ``out_sharding``; callers use this to give one. Without explicit
    axes (no mesh, or ``Auto`` axes) XLA's partitioner decides and they pass
    ``None``.
    """
    sharding = getattr(jax.typeof(x), "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    if sharding is None or mesh is None or not mesh.axis_names:
        return None
    if not any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types):
        return None
    spec = tuple(sharding.spec)
    return mesh, spec + (None,) * (x.ndim - len(spec))


def sharding_like(x: jax.Array, axes_spec) -> jax.sharding.NamedSharding | None:
    """``NamedSharding`` on ``x``'s explicit mesh built by ``axes_spec(spec)``; ``None`` if not explicit."""
    explicit = explicit_spec(x)
    if explicit is None:
        return None
    mesh, spec = explicit
    return jax.sharding.NamedSharding(mesh, jax.P(*axes_spec(spec)))
