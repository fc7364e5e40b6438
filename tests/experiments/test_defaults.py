"""Every experiment's default configuration is what ``defaults.json`` records.

Moving code between experiments and the library must not change a default by
accident. A default changed on purpose is changed in ``defaults.json`` too,
with the reason in CHANGELOG.md.
"""

import json
from pathlib import Path

import pytest

from jaxlab import cli
from jaxlab.train.experiment import flat_fields

RECORDED = json.loads((Path(__file__).with_name("defaults.json")).read_text())


def as_json(config) -> dict:
    """Every field by its ``--set`` name (``sid.alpha``), tuples as lists."""
    return json.loads(json.dumps(flat_fields(config), default=str))


@pytest.fixture(scope="module")
def experiments():
    return cli.discover()


def test_the_registered_experiments_are_the_recorded_ones(experiments):
    assert sorted(experiments) == sorted(RECORDED)


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_defaults_are_unchanged(experiments, name):
    current = as_json(experiments[name].config)
    changed = {
        key: (RECORDED[name].get(key), current.get(key)) for key in RECORDED[name].keys() | current.keys() if RECORDED[name].get(key) != current.get(key)
    }
    assert not changed, f"{name}: (recorded, now) per changed field: {changed}"
