"""Trial lists: split purity, candidate rules, constraints, balance, determinism, I/O, import."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.evaluate.trials import (
    GENERATOR_VERSION,
    TrialSpec,
    generate_trials,
    import_trials,
    read_trials,
    write_trials,
)
from pipeline.schema import SchemaError
from stages.trials import enough_clips, trial_warnings

NATIONS = ("USA", "UK", "India")


def _clips(age: bool = False) -> pd.DataFrame:
    """12 identities x 2 videos x 2 clips per split; in test_unseen also one identity with a
    single video (2 clips) and one with a single clip. Identity 10 has no nationality and 11 a
    nationality nobody else has."""
    rows = []

    def add(split: str, ident: str, i: int, videos: int, utts: int) -> None:
        for v in range(videos):
            for u in range(utts):
                nat = None if i == 10 else "Iceland" if i == 11 else NATIONS[i % 3]
                rows.append(
                    {
                        "clip_key": f"{ident}/vid{v}/{u + 1:05d}",
                        "identity": ident,
                        "video_id": f"vid{v}",
                        "split": split,
                        "gender": "m" if i % 2 == 0 else "f",
                        "nationality": nat,
                        "age_group": "20s" if i < 6 else "40s",
                    }
                )

    for split, prefix in (("test_unseen", "idu"), ("test_seen", "ids")):
        for i in range(12):
            add(split, f"{prefix}{i:03d}", i, 2, 2)
    add("test_unseen", "idu900", 0, 1, 2)  # single video
    add("test_unseen", "idu901", 1, 1, 1)  # single clip
    frame = pd.DataFrame(rows)
    return frame if age else frame.drop(columns="age_group")


SPEC = TrialSpec(n_match=200, n_verify=100, seed=7, candidates=10)
ATTRS = {"G": ("gender",), "N": ("nationality",), "A": ("age_group",)}
ATTRS["GNA"] = ("gender", "nationality", "age_group")


def _ident(key: str) -> str:
    return key.split("/")[0]


def _video(key: str) -> str:
    return key.split("/")[1]


@pytest.fixture(scope="module")
def generated() -> tuple[pd.DataFrame, dict[str, object], pd.DataFrame]:
    clips = _clips(age=True)
    table, summary = generate_trials(clips, SPEC)
    return table, summary, clips


def _partners(clips: pd.DataFrame, split: str, constraint: str) -> dict[str, set[str]]:
    ids = clips[clips.split == split].groupby("identity").first()
    attrs = ATTRS.get(constraint, ())
    out = {}
    for ident, row in ids.iterrows():
        out[ident] = {
            o
            for o, r in ids.iterrows()
            if o != ident and all(pd.notna(row[a]) and row[a] == r[a] for a in attrs)
        }
    return out


def test_splits_never_mix(generated: tuple[pd.DataFrame, dict[str, object], pd.DataFrame]) -> None:
    table, _, clips = generated
    assert set(table.split) == {"test_unseen", "test_seen"}
    for split, rows in table.groupby("split"):
        own = set(clips.loc[clips.split == split, "clip_key"])
        used = set(rows.probe) | {c for cands in rows.candidates for c in cands}
        assert used <= own, f"{split} trials use clips of another split"
    unseen = {_ident(k) for k in table[table.split == "test_unseen"].probe}
    seen = {_ident(k) for k in table[table.split == "test_seen"].probe}
    assert unseen and seen and not unseen & seen


def test_unseen_identity_elsewhere_is_refused() -> None:
    clips = _clips()
    leak = clips[clips.identity == "idu000"].assign(split="test_seen", video_id="vid9")
    leak = leak.assign(clip_key=leak.clip_key.str.replace("vid", "vix"))
    with pytest.raises(ValueError, match=r"test_unseen identities also appear.*idu000"):
        generate_trials(pd.concat([clips, leak]), SPEC)


def test_true_candidate_rule(
    generated: tuple[pd.DataFrame, dict[str, object], pd.DataFrame],
) -> None:
    table, summary, clips = generated
    match = table[table.protocol == "match"]
    videos = clips.groupby("identity").video_id.nunique()
    n_clips = clips.groupby("identity").size()
    kinds = {"other": 0, "same": 0, "own": 0}
    for probe, cands in zip(match.probe, match.candidates, strict=True):
        true = cands[0]
        assert _ident(true) == _ident(probe)
        if videos[_ident(probe)] > 1:
            assert _video(true) != _video(probe)
            kinds["other"] += 1
        elif n_clips[_ident(probe)] > 1:
            assert true != probe and _video(true) == _video(probe)
            kinds["same"] += 1
        else:
            assert true == probe
            kinds["own"] += 1
    assert min(kinds.values()) > 0, f"every fallback must be exercised: {kinds}"
    u = summary["splits"]["test_unseen"]["constraints"]["U"]["match"]  # type: ignore[index]
    rows = match[(match.split == "test_unseen") & (match.constraint == "U")]
    single = sum(_ident(p) == "idu901" for p in rows.probe)
    assert single > 0
    assert u["v2f"]["true_is_probe_clip"] + u["f2v"]["true_is_probe_clip"] == single


@pytest.mark.parametrize("constraint", ["U", "G", "N", "A", "GNA"])
def test_impostors_and_constraints(
    generated: tuple[pd.DataFrame, dict[str, object], pd.DataFrame], constraint: str
) -> None:
    table, _, clips = generated
    rows = table[(table.protocol == "match") & (table.constraint == constraint)]
    assert set(rows.direction) == {"v2f", "f2v"}
    assert (rows.groupby(["split", "direction"]).size() == SPEC.n_match).all()
    for split in ("test_unseen", "test_seen"):
        partners = _partners(clips, split, constraint)
        for probe, cands in zip(
            rows[rows.split == split].probe, rows[rows.split == split].candidates, strict=True
        ):
            me = _ident(probe)
            imp = [_ident(c) for c in cands[1:]]
            assert len(set(imp)) == len(imp), "impostors are distinct identities"
            assert me not in imp
            assert set(imp) <= partners[me], f"{constraint}: impostor off the constraint"
            assert len(cands) == 1 + min(SPEC.candidates - 1, len(partners[me])) >= 2


def test_constraint_attributes_directly(
    generated: tuple[pd.DataFrame, dict[str, object], pd.DataFrame],
) -> None:
    table, _, clips = generated
    attr = clips.groupby("identity").first()
    g = table[(table.protocol == "match") & (table.constraint == "G")]
    for probe, cands in zip(g.probe, g.candidates, strict=True):
        assert {attr.gender[_ident(c)] for c in cands} == {attr.gender[_ident(probe)]}
    gna = table[(table.protocol == "match") & (table.constraint == "GNA")]
    assert len(gna)
    for probe, cands in zip(gna.probe, gna.candidates, strict=True):
        want = tuple(attr.loc[_ident(probe), ["gender", "nationality", "age_group"]])
        for c in cands[1:]:
            assert tuple(attr.loc[_ident(c), ["gender", "nationality", "age_group"]]) == want


def test_identities_without_partner_drop_out(
    generated: tuple[pd.DataFrame, dict[str, object], pd.DataFrame],
) -> None:
    table, summary, clips = generated
    splits = summary["splits"]  # type: ignore[index]
    n = splits["test_seen"]["constraints"]["N"]
    assert n["identities_dropped"] == 2 and set(n["dropped"]) == {"ids010", "ids011"}
    assert splits["test_seen"]["constraints"]["U"]["identities_dropped"] == 0
    for split in ("test_unseen", "test_seen"):
        for c, entry in splits[split]["constraints"].items():
            partners = _partners(clips, split, c)
            lonely = {i for i, p in partners.items() if not p}
            assert entry["identities_dropped"] == len(lonely) and set(entry["dropped"]) == lonely
            rows = table[(table.split == split) & (table.constraint == c)]
            used = {_ident(k) for k in rows.probe} | {
                _ident(k) for cands in rows.candidates for k in cands
            }
            assert not used & lonely, f"{split}/{c}: a dropped identity is still used"
    # U has 13 partners per identity in test_unseen: full lists; G has 6-7: short ones
    u = splits["test_unseen"]["constraints"]["U"]["match"]["v2f"]
    g = splits["test_unseen"]["constraints"]["G"]["match"]["v2f"]
    assert u["trials_fewer_than_k_candidates"] == 0 and u["min_candidates"] == 10
    assert g["trials_fewer_than_k_candidates"] == SPEC.n_match and g["min_candidates"] < 10


def test_verification_balanced_and_labelled(
    generated: tuple[pd.DataFrame, dict[str, object], pd.DataFrame],
) -> None:
    table, _, clips = generated
    verify = table[table.protocol == "verify"]
    assert set(verify.direction) == {"vf"}
    videos = clips.groupby("identity").video_id.nunique()
    for (split, c), rows in verify.groupby(["split", "constraint"]):
        assert len(rows) == SPEC.n_verify and int(rows.label.sum()) == SPEC.n_verify // 2
        assert list(rows.trial) == list(range(SPEC.n_verify))
        partners = _partners(clips, split, c)
        for voice, cands, label in zip(rows.probe, rows.candidates, rows.label, strict=True):
            assert len(cands) == 1
            face = cands[0]
            assert label == (_ident(voice) == _ident(face))
            if label and videos[_ident(voice)] > 1:
                assert _video(face) != _video(voice)
            if not label:
                assert _ident(face) in partners[_ident(voice)]
    labels = verify[(verify.constraint == "U") & (verify.split == "test_seen")].label.tolist()
    half = SPEC.n_verify // 2
    assert 0 < sum(labels[:half]) < half, "positives and negatives are interleaved"


def test_retrieval_gallery(
    generated: tuple[pd.DataFrame, dict[str, object], pd.DataFrame],
) -> None:
    table, summary, clips = generated
    gal = table[table.protocol == "retrieve"]
    assert set(gal.constraint) == {"U"} and set(gal.direction) == {"all"}
    for split, rows in gal.groupby("split"):
        assert list(rows.probe) == sorted(clips.loc[clips.split == split, "clip_key"])
        assert all(len(c) == 0 for c in rows.candidates) and rows.label.isna().all()
        assert summary["splits"][split]["retrieve"]["gallery_clips"] == len(rows)  # type: ignore[index]


def test_deterministic_under_seed(tmp_path: Path) -> None:
    clips = _clips()
    a, sa = generate_trials(clips, SPEC)
    b, sb = generate_trials(clips.sample(frac=1.0, random_state=3), SPEC)  # row order is moot
    pd.testing.assert_frame_equal(a, b)
    assert sa == sb
    write_trials(tmp_path / "a.parquet", a)
    write_trials(tmp_path / "b.parquet", b)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    other, _ = generate_trials(clips, TrialSpec(n_match=200, n_verify=100, seed=8))
    m = a.protocol == "match"
    assert a[m].probe.tolist() != other[m].probe.tolist()
    assert (other.seed == 8).all() and (a.seed == 7).all()
    # every group has its own stream: the two directions and two constraints do not coincide
    u = a[m & (a.split == "test_seen") & (a.constraint == "U")]
    g = a[m & (a.split == "test_seen") & (a.constraint == "G")]
    assert u[u.direction == "v2f"].probe.tolist() != u[u.direction == "f2v"].probe.tolist()
    assert u[u.direction == "v2f"].probe.tolist() != g[g.direction == "v2f"].probe.tolist()


def test_adding_a_constraint_keeps_other_groups() -> None:
    without, _ = generate_trials(_clips(age=False), SPEC)
    with_age, _ = generate_trials(_clips(age=True), SPEC)
    assert set(without.constraint) == {"U", "G", "N"}
    assert set(with_age.constraint) == {"U", "G", "N", "A", "GNA"}
    kept = with_age[with_age.constraint.isin(["U", "G", "N"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, without)
    only_unseen, _ = generate_trials(_clips(), SPEC, splits=("test_unseen",))
    pd.testing.assert_frame_equal(
        only_unseen, without[without.split == "test_unseen"].reset_index(drop=True)
    )


def test_schema_round_trip(
    tmp_path: Path, generated: tuple[pd.DataFrame, dict[str, object], pd.DataFrame]
) -> None:
    table, _, _ = generated
    path = write_trials(tmp_path / "trials.parquet", table)
    back = read_trials(path)
    pd.testing.assert_frame_equal(back, table)
    assert (back.generator_version == GENERATOR_VERSION).all() and (back.seed == SPEC.seed).all()
    assert isinstance(back.candidates[0], list)
    with pytest.raises(SchemaError, match="missing columns"):
        write_trials(tmp_path / "bad.parquet", table.drop(columns="seed"))


def test_input_and_spec_errors() -> None:
    clips = _clips()
    with pytest.raises(ValueError, match=r"lacks columns \['nationality'\]"):
        generate_trials(clips.drop(columns="nationality"), SPEC)
    one = clips[~((clips.split == "test_seen") & (clips.identity != "ids000"))]
    with pytest.raises(ValueError, match="split 'test_seen' has 1 identities"):
        generate_trials(one, SPEC)
    with pytest.raises(ValueError, match="duplicate clip_key"):
        generate_trials(pd.concat([clips, clips.head(1)]), SPEC)
    assert len(clips) % 2 == 1
    with pytest.raises(ValueError, match=r"identity 'id\w+' has several values of \['gender'\]"):
        generate_trials(clips.assign(gender=["m", "f"] * (len(clips) // 2) + ["m"]), SPEC)
    with pytest.raises(ValueError, match="candidates must be >= 2"):
        TrialSpec(n_match=1, n_verify=2, seed=0, candidates=1)
    with pytest.raises(ValueError, match="even"):
        TrialSpec(n_match=1, n_verify=3, seed=0)
    with pytest.raises(ValueError, match="n_match must be positive"):
        TrialSpec(n_match=0, n_verify=2, seed=0)


def test_import_good_lists(tmp_path: Path) -> None:
    m = tmp_path / "match.csv"
    m.write_text("probe,positive,negative\r\na/v/1,a/w/1,b/v/1\r\nc/v/1,c/v/2,a/v/1\r\n")
    table = import_trials(m, "match", direction="f2v")
    assert list(table.direction) == ["f2v", "f2v"] and list(table.trial) == [0, 1]
    assert table.candidates[0] == ["a/w/1", "b/v/1"] and table.probe[1] == "c/v/1"
    assert (table.seed == -1).all() and (table.generator_version == 0).all()
    v = tmp_path / "verify.csv"
    v.write_text("voice,face,label\na/v/1,a/w/1,1\na/v/1,b/v/1,0\nc/v/1,c/v/2,True\n")
    ver = import_trials(v, "verify", split="test_seen", constraint="G")
    assert ver.label.tolist() == [True, False, True] and set(ver.constraint) == {"G"}
    assert set(ver.split) == {"test_seen"} and ver.candidates[1] == ["b/v/1"]
    write_trials(tmp_path / "imported.parquet", ver)
    pd.testing.assert_frame_equal(read_trials(tmp_path / "imported.parquet"), ver)


def test_import_malformed_lists(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("voice,face\na,b\n")
    with pytest.raises(ValueError, match=r"bad\.csv: line 1: .*lacks columns \['label'\]"):
        import_trials(bad, "verify")
    bad.write_text("voice,face,label\na,b,1\nc,d,maybe\n")
    with pytest.raises(ValueError, match=r"bad\.csv: line 3: label 'maybe'"):
        import_trials(bad, "verify")
    bad.write_text("probe,positive,negative\na,b,c\n")
    with pytest.raises(ValueError, match=r"lacks columns \['direction'\]"):
        import_trials(bad, "match")
    bad.write_text("probe,positive,negative,direction\na,b,c,v2f\na,b,c,sideways\n")
    with pytest.raises(ValueError, match=r"bad\.csv: line 3: direction"):
        import_trials(bad, "match")


def test_enough_clips_leaves_out_identities_with_fewer() -> None:
    clips = _clips()
    kept, left_out = enough_clips(clips, 2)
    assert left_out == {"test_unseen": 1}  # idu901, the single-clip identity
    assert set(clips.identity) - set(kept.identity) == {"idu901"}
    assert len(kept) == len(clips) - 1
    all_kept, none_left = enough_clips(clips, 1)
    pd.testing.assert_frame_equal(all_kept, clips)
    assert none_left == {}
    # Per split: 4 clips each, except idu900 (2) and idu901 (1).
    assert enough_clips(clips, 3)[1] == {"test_unseen": 2}
    assert enough_clips(clips, 5)[1] == {"test_seen": 12, "test_unseen": 14}


def test_trial_warnings_count_own_clip_positives_and_a_missing_seen_split(
    generated: tuple[pd.DataFrame, dict[str, object], pd.DataFrame],
) -> None:
    _, summary, _ = generated
    u = summary["splits"]["test_unseen"]["constraints"]["U"]["match"]["v2f"]  # type: ignore[index]
    assert u["true_is_probe_clip"] > 0
    assert trial_warnings(summary) == [
        f"test_unseen: {u['true_is_probe_clip']} of {SPEC.n_match} 1:N V->F trials have the "
        "probe's own clip as the true candidate (identities with one clip)"
    ]
    clips, _ = enough_clips(_clips(), 2)
    _, only_unseen = generate_trials(clips, SPEC, splits=("test_unseen",))
    assert trial_warnings(only_unseen) == [
        "no seen-heard test split (manifest.seen_heard_fraction): test_seen unavailable"
    ]
