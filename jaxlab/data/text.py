"""A byte-level text corpus that ships with Python, and a window sampler.

The corpus is the text of Python's interactive help topics
(``pydoc_data.topics.topics``, about 0.5 MB of English prose and code), so a
language model can be trained with no download. The topics are regenerated
for each Python release, so the corpus, and every split and batch drawn from
it, is reproducible for a given Python version only.

Batches are drawn on the host with NumPy and are a pure function of
``(seed, step)``: a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import functools

import numpy as np

from jaxlab._checks import check_fraction, check_int

VOCAB_SIZE = 256  # one token per byte


@functools.cache
def load_text_corpus() -> np.ndarray:
    """Loads the help-topics corpus as UTF-8 bytes (built once, then cached).

    The topic texts are joined in sorted order of their names.

    Returns:
      read-only uint8 array (num_bytes,).
    """
    from pydoc_data.topics import topics  # standard library, imported lazily

    text = "".join(topics[name] for name in sorted(topics))
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)  # (num_bytes,), read-only


def text_split(*, test_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Splits the corpus into a leading train part and a trailing test part.

    The split is contiguous (no shuffling), so windows drawn from the two
    parts never share a byte.

    Args:
      test_fraction: share of the bytes held out, strictly between 0 and 1.

    Returns:
      ``(train, test)``: read-only uint8 arrays whose concatenation is the
      corpus; ``test`` has ``round(test_fraction * num_bytes)`` bytes.

    Raises:
      ValueError: if ``test_fraction`` is not in (0, 1).
    """
    test_fraction = check_fraction("test_fraction", test_fraction)
    corpus = load_text_corpus()
    num_train = corpus.size - round(test_fraction * corpus.size)
    return corpus[:num_train], corpus[num_train:]


def random_windows(tokens: np.ndarray, *, seed: int, step: int, batch: int, length: int) -> np.ndarray:
    """Draws ``batch`` random windows of ``length + 1`` consecutive tokens.

    Window starts are uniform over all valid positions and drawn with a NumPy
    generator seeded by ``(seed, step)``, so the batch is a pure function of
    ``(tokens, seed, step, batch, length)``: nothing is carried between calls.
    Inputs and targets of next-token prediction are ``w[:, :-1]`` and
    ``w[:, 1:]``.

    Args:
      tokens: 1-D array (num_tokens,), num_tokens >= length + 1.
      seed: non-negative integer seed.
      step: non-negative training step.
      batch: number of windows.
      length: context length; each window holds ``length + 1`` tokens.

    Returns:
      array (batch, length + 1) of the dtype of ``tokens``.

    Raises:
      ValueError: if ``tokens`` is not 1-D or is shorter than ``length + 1``,
        or an integer argument is out of range.
    """
    seed = check_int("seed", seed, minimum=0)
    step = check_int("step", step, minimum=0)
    batch = check_int("batch", batch, minimum=1)
    length = check_int("length", length, minimum=1)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or tokens.size < length + 1:
        raise ValueError(f"`tokens` must be a 1-D array of at least length + 1 = {length + 1} tokens; got shape {tokens.shape}.")
    rng = np.random.default_rng((seed, step))
    starts = rng.integers(0, tokens.size - length, size=batch)  # (batch,), last start = size - length - 1
    return tokens[starts[:, None] + np.arange(length + 1)]  # (batch, length + 1)
