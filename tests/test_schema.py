"""The schema module: validation, ordering, versions, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.atomic import atomic_path
from pipeline.schema import MANIFEST_SKIPPED, SYNTH_IDENTITIES, SchemaError, read_table, write_table


def _skipped() -> pd.DataFrame:
    return pd.DataFrame({"path": ["b", "a", "c"], "reason": ["x", "y", "z"]})


def test_roundtrip_sorted_with_metadata(tmp_path: Path) -> None:
    path = write_table(_skipped(), tmp_path / "s.parquet", MANIFEST_SKIPPED)
    back = read_table(path, MANIFEST_SKIPPED)
    assert list(back.path) == ["a", "b", "c"]
    meta = pq.read_schema(path).metadata
    assert meta[b"voxface.table"] == b"manifest_skipped" and meta[b"voxface.version"] == b"1"


def test_wrong_table_or_version_names_the_file(tmp_path: Path) -> None:
    path = write_table(_skipped(), tmp_path / "s.parquet", MANIFEST_SKIPPED)
    with pytest.raises(
        SchemaError,
        match=r"s\.parquet: holds table 'manifest_skipped' v1, expected 'synth_identities'",
    ):
        read_table(path, SYNTH_IDENTITIES)


def test_columns_and_nulls_are_checked(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"missing columns \['reason'\]"):
        write_table(_skipped().drop(columns="reason"), tmp_path / "x.parquet", MANIFEST_SKIPPED)
    with pytest.raises(SchemaError, match="unexpected columns"):
        write_table(_skipped().assign(extra=1), tmp_path / "x.parquet", MANIFEST_SKIPPED)
    with pytest.raises(SchemaError, match="has nulls"):
        write_table(
            _skipped().assign(reason=[None, "a", "b"]), tmp_path / "x.parquet", MANIFEST_SKIPPED
        )
    assert not list(tmp_path.iterdir()), "nothing written for invalid tables"


def test_unreadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(SchemaError, match="bad.parquet: not a readable Parquet file"):
        read_table(bad, MANIFEST_SKIPPED)
    with pytest.raises(SchemaError, match="not found"):
        read_table(tmp_path / "none.parquet", MANIFEST_SKIPPED)


def test_failed_atomic_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
