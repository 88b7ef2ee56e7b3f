"""params.yaml validation: typed sections, unknown keys rejected, errors name the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.params import ParamsError, load_params
from tests.conftest import REPO


def test_repository_params_are_valid() -> None:
    p = load_params(REPO / "params.yaml")
    assert p.synth.active() == p.synth.presets[p.synth.preset]
    assert {"tiny", "default"} <= set(p.synth.presets)


def _write(tmp_path: Path, old: str, new: str) -> Path:
    text = (REPO / "params.yaml").read_text()
    assert old in text
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_unknown_key_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "  train_fraction:", "  train_fractoin:")
    with pytest.raises(ParamsError, match="params.yaml: invalid parameters") as err:
        load_params(path)
    assert "train_fractoin" in str(err.value)


def test_unknown_preset_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="preset 'huge'"):
        load_params(_write(tmp_path, "preset: default", "preset: huge"))


def test_none_preset_switches_generation_off(tmp_path: Path) -> None:
    assert load_params(_write(tmp_path, "preset: default", "preset: none")).synth.active() is None


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("base: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "absent.yaml")
