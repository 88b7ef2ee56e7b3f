"""The commands that print the pipeline's figures: the report's headline (``make demo``'s last
step) and the oracle stage's figures (``make oracle``), on copies of real output files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.evaluate import headline, oracle

HEADLINE = {
    "cid": {
        "f2v_1to2": 0.6565,
        "v2f_1to2": 0.6557,
        "v2f_1to2_hw": 0.0276,
        "v2f_map": 0.1227,
        "verify_auc": 0.6539,
    },
    "oracle": {"f2v_1to2": 0.9042, "v2f_1to2": 0.8858, "v2f_map": 0.3355, "verify_auc": 0.884},
    "wen2021": {
        "f2v_1to2": 0.6942,
        "v2f_1to2": 0.6961,
        "v2f_1to2_hw": 0.0197,
        "v2f_map": 0.1349,
        "verify_auc": 0.6937,
    },
}
_PAIR = {"ci95_high": -0.006, "ci95_low": -0.075, "difference": -0.0405, "verdict": "worse"}
VERDICTS = {
    "methods": ["cid", "wen2021"],
    "metrics": {
        "match_1to2": {
            "v2f": {
                "U": {
                    "test_unseen": {
                        "means": {"cid": 0.6557, "wen2021": 0.6961},
                        "tied_for_first": ["wen2021"],
                        "top": "wen2021",
                        "vs_top": {"cid": _PAIR},
                    }
                }
            }
        }
    },
}


def test_headline_prints_means_half_widths_and_verdicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "headline.json").write_text(json.dumps(HEADLINE))
    (tmp_path / "verdicts.json").write_text(json.dumps(VERDICTS))
    headline.main(["--dir", str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    cid = next(line for line in out if line.startswith("cid "))
    assert cid.split()[1:] == ["65.6", "±", "2.8", "65.6", "65.4", "12.3"]
    assert "88.6" in next(line for line in out if line.startswith("oracle "))
    assert "tied for first: wen2021" in out[-2] and "highest mean, wen2021" in out[-2]
    assert out[-1].strip() == "cid vs wen2021: -4.0 [-7.5, -0.6] worse"


def test_headline_without_verdicts_or_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "headline.json").write_text(json.dumps(HEADLINE))
    headline.main(["--dir", str(tmp_path)])
    assert "Verdicts: none" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        headline.main(["--dir", str(tmp_path / "absent")])
    assert e.value.code == 2
    assert "run `dvc repro` first" in capsys.readouterr().err


def _oracle_files(tmp_path: Path, metrics: dict[str, object]) -> list[str]:
    m, t = tmp_path / "oracle.json", tmp_path / "trials.json"
    m.write_text(json.dumps(metrics))
    t.write_text(json.dumps({"n_match": 5000, "splits": {"test_unseen": {"identities": 40}}}))
    return ["--metrics", str(m), "--trials-summary", str(t)]


def test_oracle_command_prints_the_oracle_stage_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    split = {"test_seen": 0.7, "test_unseen": 0.8858}
    metrics = {"match_1to2": {"v2f": {"U": split, "G": {"test_unseen": 0.7802}}}}
    oracle.main(_oracle_files(tmp_path, metrics))
    out = json.loads(capsys.readouterr().out)
    assert out["oracle_1to2_v2f_U"] == 0.8858 and out["oracle_1to2_v2f_G"] == 0.7802
    assert out["test_identities"] == 40 and out["oracle_1to2_f2v_U"] is None


def test_oracle_command_unavailable_and_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    oracle.main(_oracle_files(tmp_path, {"available": False, "reason": "no ground truth"}))
    assert json.loads(capsys.readouterr().out) == {"available": False, "reason": "no ground truth"}
    with pytest.raises(SystemExit) as e:
        oracle.main(["--metrics", str(tmp_path / "absent.json")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "absent.json: not found" in err and "dvc repro" in err
