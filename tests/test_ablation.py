"""The ablations: ``ablations.yaml`` against the params, the analysis on constructed results
(a component that clearly helps, one that changes nothing), and the report section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ruamel.yaml import YAML

from pipeline.ablate import _set_args, experiment_name
from pipeline.evaluate.ablation import (
    AblationError,
    analyse,
    load_ablations,
    markdown,
    tables,
)
from pipeline.params import Params, load_params
from tests.test_aggregate import _scored

ROOT = Path(__file__).resolve().parents[1]


def _apply(raw: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        assert leaf in node, f"{key}: not a key of params.yaml"
        node[leaf] = value
    return raw


def test_every_variant_is_a_valid_params_change_of_a_trained_model() -> None:
    ablations = load_ablations(ROOT / "ablations.yaml")
    assert set(ablations) == {"wen2021", "cmpc", "bipseudo"}
    params = load_params(ROOT / "params.yaml")
    models = {*params.methods, *(f"lowshot_{m}" for m in params.lowshot.methods)}
    for ab in ablations.values():
        assert any(v.experiment for v in ab.variants) and ab.effects
        for v in ab.variants:
            assert v.model in models, (ab.name, v.name)
            raw = YAML(typ="safe").load((ROOT / "params.yaml").read_text())
            changed = Params.model_validate(_apply(raw, v.overrides))  # valid after the change
            for key, value in v.overrides.items():
                section, field = key.split(".")
                assert getattr(getattr(changed, section), field) == value
                # every switch is on by default: the variant turns a part of the paper off
                assert getattr(getattr(params, section), field) is True


def test_an_effect_naming_an_unknown_variant_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "ablations.yaml"
    bad.write_text(
        "x:\n  variants:\n    full: {model: cid}\n  effects:\n"
        "    - {component: c, claim: k, with: full, without: nope}\n"
    )
    with pytest.raises(AblationError, match=r"ablations.yaml: ablation 'x': effect 'c' names"):
        load_ablations(bad)
    bad.write_text("x: [1, 2]\n")
    with pytest.raises(AblationError, match="malformed"):
        load_ablations(bad)


def test_experiment_names_and_set_arguments() -> None:
    ab = load_ablations(ROOT / "ablations.yaml")["wen2021"]
    v = ab.variant("local_only")
    assert experiment_name(ab, v) == "wen2021-local_only"
    assert _set_args(v) == [
        "-S", "wen2021.global_alignment=false", "-S", "wen2021.reweighting=false",
    ]  # fmt: skip


def test_analysis_finds_a_helping_component_and_a_neutral_one() -> None:
    ab = load_ablations(ROOT / "ablations.yaml")["wen2021"]
    rng = np.random.default_rng(3)
    seeds = (1, 2, 3)
    scored = {
        "full": _scored("wen2021", 0.80, seeds, rng),
        "no_reweighting": _scored("wen2021", 0.80, seeds, rng),  # re-weighting: no effect
        "no_global": _scored("wen2021", 0.80, seeds, rng),
        "local_only": _scored("wen2021", 0.60, seeds, rng),  # global: +20 points
    }
    result = analyse(ab, scored, n_boot=300, seed=0)
    assert result["seeds"] == [1, 2, 3]
    by = {(e["with"], e["without"]): e for e in result["effects"]}
    glob = by[("no_reweighting", "local_only")]["1:2 V->F"]
    assert glob["verdict"] == "better" and glob["claim"] == "supports"
    assert glob["difference"] == pytest.approx(0.2, abs=0.05) and glob["ci95_low"] > 0
    rew = by[("full", "no_reweighting")]["1:2 V->F"]
    assert rew["verdict"] == "not distinguishable" and rew["claim"] == "cannot tell"
    assert rew["ci95_low"] < 0 < rew["ci95_high"]
    full = result["variants"]["full"]["1:2 V->F"]
    assert full["mean"] == pytest.approx(0.8, abs=0.05) and full["half_width"] is not None
    # the report's tables and the markdown say the same
    (_, vhead, vrows), (_, ehead, erows) = tables(result)
    assert ehead[-2:] == ("paper's claim", "this run")
    assert vhead[:3] == ("variant", "model", "set") and len(vrows) == 4
    assert erows[0][-1] == "supports" and len(erows) == 3
    text = "\n".join(markdown(result))
    assert "wen2021.global_alignment=false" in text and "cannot tell" in text


def test_analysis_refuses_missing_variants_and_unequal_seeds() -> None:
    ab = load_ablations(ROOT / "ablations.yaml")["wen2021"]
    rng = np.random.default_rng(0)
    some = {"full": _scored("wen2021", 0.7, (1, 2), rng)}
    with pytest.raises(AblationError, match="no results for variants"):
        analyse(ab, some, 100, 0)
    mixed = {v.name: _scored("wen2021", 0.7, (1, 2), rng) for v in ab.variants}
    mixed["full"] = _scored("wen2021", 0.7, (1, 2, 3), rng)
    with pytest.raises(AblationError, match="different seeds"):
        analyse(ab, mixed, 100, 0)
