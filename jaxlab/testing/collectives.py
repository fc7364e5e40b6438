"""What a compiled program moves between devices, read from its optimized HLO text.

``compiled.as_text()`` of a ``jax.jit(...).lower(...).compile()`` lists each
collective with its result's shapes; :func:`collectives` returns one
:class:`Collective` per op, so a test can assert, say, that an FSDP step
moves no batch-sized activation::

    moved = collectives(compiled.as_text())
    assert not [c for c in moved if c.carries_batch(16)]

and :func:`collective_bytes` sums what one device receives per kind.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re

_OP = re.compile(r"\b(all-gather|all-reduce|all-to-all|reduce-scatter|collective-permute)(-start)?\(")
_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")


@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective op: its kind (``"all-gather"``, …) and its result arrays as ``(dtype, shape)``."""

    kind: str
    results: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def num_bytes(self) -> int:
        """Bytes of the results (``f32``, ``bf16``, ``s32``, ``pred`` …): what one device receives."""
        return sum(math.prod(shape) * _itemsize(dtype) for dtype, shape in self.results)

    def carries_batch(self, batch: int) -> bool:
        """Whether a result is a floating array of rank >= 2 whose leading axis is ``batch`` (an activation)."""
        return any(dtype.startswith(("f", "bf")) and len(shape) >= 2 and shape[0] == batch for dtype, shape in self.results)


def collectives(hlo: str) -> list[Collective]:
    """Every collective op of an HLO module's text, in order (``-start`` halves of async pairs counted once)."""
    found = []
    for line in hlo.splitlines():
        match = _OP.search(line)
        if not match or "=" not in line[: match.start()]:
            continue
        result = line[line.index("=") + 1 : match.start()]
        arrays = tuple((dtype, tuple(int(d) for d in dims.split(",") if d)) for dtype, dims in _ARRAY.findall(result))
        found.append(Collective(match.group(1), arrays))
    return found


def collective_bytes(hlo: str) -> collections.Counter:
    """Result bytes of an HLO module's collectives, by kind (``"all-gather"``, …): what one device receives per run."""
    by_kind: collections.Counter = collections.Counter()
    for c in collectives(hlo):
        by_kind[c.kind] += c.num_bytes
    return by_kind


def _itemsize(dtype: str) -> int:
    bits = re.search(r"\d+", dtype)
    return int(bits.group()) // 8 if bits else 1  # pred is one byte
