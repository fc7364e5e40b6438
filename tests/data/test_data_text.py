"""Tests for jaxlab.data.text: the corpus, the split, the window sampler."""

from pydoc_data.topics import topics

import numpy as np
import pytest

from jaxlab.data import VOCAB_SIZE, load_text_corpus, random_windows, text_split


def test_corpus_is_the_sorted_help_topics():
    corpus = load_text_corpus()
    assert corpus.dtype == np.uint8 and corpus.ndim == 1 and corpus.size > 100_000
    assert corpus.tobytes().decode("utf-8") == "".join(topics[name] for name in sorted(topics))
    assert load_text_corpus() is corpus
    assert VOCAB_SIZE == 256


def test_split_is_contiguous():
    corpus = load_text_corpus()
    train, test = text_split(test_fraction=0.25)
    np.testing.assert_array_equal(np.concatenate([train, test]), corpus)
    assert test.size == round(0.25 * corpus.size)
    with pytest.raises(ValueError, match="`test_fraction`"):
        text_split(test_fraction=1.0)


def test_windows_are_a_pure_function_of_seed_and_step():
    tokens = np.arange(1000, dtype=np.int32)
    a = random_windows(tokens, seed=7, step=3, batch=16, length=9)
    assert a.shape == (16, 10) and a.dtype == np.int32
    np.testing.assert_array_equal(a, random_windows(tokens, seed=7, step=3, batch=16, length=9))
    assert not np.array_equal(a, random_windows(tokens, seed=7, step=4, batch=16, length=9))
    assert not np.array_equal(a, random_windows(tokens, seed=8, step=3, batch=16, length=9))
    np.testing.assert_array_equal(np.diff(a, axis=1), 1)  # consecutive tokens


def test_windows_reach_both_ends():
    tokens = np.arange(12, dtype=np.uint8)
    windows = random_windows(tokens, seed=0, step=0, batch=200, length=10)  # starts 0 or 1 only
    assert windows.dtype == np.uint8
    assert set(windows[:, 0]) == {0, 1} and windows.max() == 11


def test_windows_on_the_corpus():
    train, _ = text_split()
    windows = random_windows(train, seed=0, step=5, batch=4, length=32)
    assert windows.shape == (4, 33) and windows.dtype == np.uint8


@pytest.mark.parametrize(
    ("tokens", "kwargs", "name"),
    [
        (np.zeros((4, 4)), {}, "`tokens`"),
        (np.zeros(8), {"length": 8}, "`tokens`"),
        (np.zeros(100), {"step": -1}, "`step`"),
        (np.zeros(100), {"batch": 0}, "`batch`"),
    ],
)
def test_windows_reject_bad_arguments(tokens, kwargs, name):
    arguments = {"seed": 0, "step": 0, "batch": 2, "length": 4} | kwargs
    with pytest.raises(ValueError, match=name):
        random_windows(tokens, **arguments)
