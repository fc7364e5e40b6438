"""Fixtures of the trainer tests."""

import pytest

from tests.train.tiny import tiny_setup


@pytest.fixture(scope="session")
def tiny():
    """One shared (method, optimizer, batches, config): its jitted step compiles once per layout."""
    return tiny_setup()
