"""Worker settings read from SHOPSYNTH_* variables: generator folders."""

from __future__ import annotations

import pytest

from streams.settings import Settings


def test_generator_dir_zh_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPSYNTH_GENERATOR_DIR_ZH", str(tmp_path))
    settings = Settings.from_env()
    assert settings.generator_dir_zh == str(tmp_path)
    assert settings.generator_dir is None


@pytest.mark.parametrize("name", ["generator_dir", "generator_dir_zh"])
def test_missing_generator_dir_rejected(name, tmp_path):
    with pytest.raises(ValueError, match=f"{name} .*is not a directory.*SHOPSYNTH_{name.upper()}"):
        Settings(**{name: str(tmp_path / "missing")}).validate()
