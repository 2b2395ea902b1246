"""A home's settings are one typed, validated object: defaults when none are recorded, updates
written whole, a hand-broken settings.json named instead of a KeyError deep in a command."""

from __future__ import annotations

import json

import pytest

from jewelrec.errors import JewelrecError
from jewelrec.home import DEFAULT_SETTINGS, Home, Settings


def test_a_new_home_has_the_defaults(tmp_path):
    assert Home(tmp_path / "new").settings() == DEFAULT_SETTINGS == Settings()
    assert DEFAULT_SETTINGS.embedder == "efficientnet" and DEFAULT_SETTINGS.auto_crop is True


def test_updates_are_recorded_and_none_changes_nothing(tmp_path):
    home = Home(tmp_path / "home")
    updated = home.update_settings(embedder="autoencoder", backend=None)
    assert updated.embedder == "autoencoder" and updated.backend == "exact"
    assert home.settings() == updated
    assert json.loads(home.settings_path.read_text())["embedder"] == "autoencoder"


def test_unknown_keys_from_a_newer_version_are_ignored(tmp_path):
    home = Home(tmp_path / "home").ensure()
    home.settings_path.write_text(json.dumps({"embedder": "efficientnet-gap", "later": 1}))
    assert home.settings().embedder == "efficientnet-gap"


@pytest.mark.parametrize("text", ['{"auto_crop": "yes"}', '{"embedder": 3}', "[1]", "{broken",
                                  # names no command knows: index published a 'nonsense' backend
                                  # and every query after it was an unexpected ValueError
                                  '{"backend": "nonsense"}', '{"embedder": "clip"}',
                                  '{"classifier": "resnet"}', '{"precision": "int4"}'])
def test_a_broken_settings_file_is_named(tmp_path, text):
    home = Home(tmp_path / "home").ensure()
    home.settings_path.write_text(text)
    with pytest.raises(JewelrecError, match="settings.json"):
        home.settings()
