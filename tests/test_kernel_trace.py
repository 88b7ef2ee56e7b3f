"""The kernel trace (pipeline/tool/kernel_trace.py): what it records of each operation, and where
a comparison of two traces says they part."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from pipeline.tool import kernel_trace as kt
from tests.conftest import REPO


def _toy_trace(ops: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Two steps of a small network trained with Adam, traced."""
    torch.manual_seed(seed)
    mode = kt.trace_mode(ops)
    try:
        with mode:
            net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
            opt = torch.optim.Adam(net.parameters(), lr=0.1)
            x = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 24
            for _ in range(2):
                opt.zero_grad()
                net(x).square().mean().backward()
                opt.step()
    except kt._Enough:
        pass
    return {"machine": {"cpu": "toy", "torch": torch.__version__}, "rows": mode.rows}


def test_a_trace_records_each_operation_with_its_tensors() -> None:
    trace = _toy_trace()
    ops = [r["op"] for r in trace["rows"]]
    assert "aten.addmm.default" in ops and "aten.relu.default" in ops
    row = trace["rows"][ops.index("aten.addmm.default")]
    assert [shape for shape, _, _ in row["in"]] == [[5], [4, 6], [6, 5]]
    assert row["out"][0][:2] == [[4, 5], "float32"] and len(row["out"][0][2]) == 32


def test_the_same_run_traced_twice_is_identical_and_another_seed_is_not() -> None:
    a, b, c = _toy_trace(), _toy_trace(), _toy_trace(seed=1)
    assert kt.compare(a, b)["verdict"] == "identical"
    other = kt.compare(a, c)  # other initial weights: the random draws differ from the start
    assert other["verdict"] == "kernel" and other["op"] == "aten.uniform_.default"


def test_unwritten_memory_is_not_hashed_until_written() -> None:
    mode = kt.trace_mode(100)
    with mode:
        t = torch.empty(3)
        t.fill_(2.0)
        t + 1
    empty, fill, add = mode.rows
    assert empty["out"][0][2] == kt.UNWRITTEN and fill["in"][0][2] == kt.UNWRITTEN
    assert fill["out"][0][2] == add["in"][0][2] != kt.UNWRITTEN


def test_traces_of_other_code_params_or_data_are_not_compared() -> None:
    a = _toy_trace()
    b = copy.deepcopy(a)
    a["inputs"], b["inputs"] = {"code": "1", "params": "2"}, {"code": "1", "params": "3"}
    result = kt.compare(a, b)
    assert result["verdict"] == "program" and result["compared"] == 0
    assert "other code, params or data" in kt.explain(result, a, b)


def test_tensors_of_any_dtype_are_hashed_by_their_bytes() -> None:
    x = torch.tensor([1.5, -2.0])
    rows = kt.describe([x, x.to(torch.bfloat16), x > 0, 3])
    assert [dtype for _, dtype, _ in rows] == ["float32", "bfloat16", "bool"]
    assert rows[0][2] == hashlib.md5(x.numpy().tobytes()).hexdigest()
    assert len({digest for _, _, digest in rows}) == 3


def test_a_trace_stops_at_its_operation_count() -> None:
    assert len(_toy_trace(ops=7)["rows"]) == 7


@pytest.mark.parametrize(
    ("field", "verdict"), [("out", "kernel"), ("in", "inputs"), ("op", "program")]
)
def test_compare_names_the_first_operation_that_parts(field: str, verdict: str) -> None:
    a = _toy_trace()
    b = copy.deepcopy(a)
    i = next(i for i, r in enumerate(a["rows"]) if r["op"] == "aten.addmm.default" and r[field])
    if field == "op":
        b["rows"][i]["op"] = "aten.mm.default"
    else:
        b["rows"][i][field][0][2] = "0" * 32
    for row in b["rows"][i + 1 :]:  # everything after it differs too: only the first counts
        row["out"] = [[s, d, "f" * 32] for s, d, _ in row["out"]]
    result = kt.compare(a, b)
    assert result["verdict"] == verdict and result["index"] == i
    text = kt.explain(result, a, b)
    line = text.splitlines()[1]
    assert line.startswith(f"{verdict}: ") and f"operation {i} of " in line


@pytest.mark.parametrize("onednn", [True, False])
def test_record_traces_the_registry_training_under_the_oneDNN_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, onednn: bool
) -> None:
    """``record`` wiring, with the data loading and the method's training stood in for: the
    registry's ``train_method`` runs inside the trace, under the oneDNN setting asked for, and
    the trace carries what it depends on."""
    import stages._runtime as runtime
    from pipeline.params import load_params
    from pipeline.train import stream
    from pipeline.train.methods import registry

    seen: list[bool] = []

    def fake_train(name: str, params: Any, data: Any, seed: int, state: Path, dev: Any) -> None:
        seen.append(torch.backends.mkldnn.enabled)
        w = torch.ones(2, 1, 3, 3)
        for _ in range(100):
            torch.nn.functional.conv2d(torch.ones(1, 1, 5, 5), w)

    threads: list[int] = []
    monkeypatch.setattr(registry, "train_method", fake_train)
    monkeypatch.setattr(stream, "open_pairs", lambda *a: None)
    monkeypatch.setattr(runtime, "setup_torch", threads.append)  # no global torch settings here
    before = torch.backends.mkldnn.enabled
    try:
        trace = kt.record("cid", 2, REPO / "params.yaml", tmp_path, 5, onednn=onednn)
    finally:
        torch.backends.mkldnn.enabled = before
    assert seen == [onednn] and len(trace["rows"]) == 5
    assert threads == [load_params(REPO / "params.yaml").train.threads]
    assert "convolution" in trace["rows"][-1]["op"]
    inputs = trace["inputs"]
    assert (inputs["method"], inputs["seed"], inputs["onednn"]) == ("cid", 2, onednn)
    assert len(inputs["code"]) == len(inputs["params"]) == 16
    assert trace["machine"]["threads"] >= 1 and "kernels" in trace["machine"]


def test_record_refuses_a_folder_without_the_data(tmp_path: Path, capsys: Any) -> None:
    code = kt.main(["record", "--data", str(tmp_path), "--out", str(tmp_path / "t.json.gz")])
    assert code == 2 and f"{tmp_path / 'manifest'}: missing" in capsys.readouterr().err
    assert not (tmp_path / "t.json.gz").exists()


def test_compare_reads_gzipped_traces_and_names_a_file_that_is_not_one(
    tmp_path: Path, capsys: Any
) -> None:
    trace = _toy_trace()
    kt.write_trace(trace, tmp_path / "a.json.gz")
    (tmp_path / "b.json").write_text(json.dumps(trace))
    with gzip.open(tmp_path / "a.json.gz", "rt") as f:
        assert json.load(f)["rows"] == trace["rows"]
    assert kt.main(["compare", str(tmp_path / "a.json.gz"), str(tmp_path / "b.json")]) == 0
    assert "identical: all" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{")
    assert kt.main(["compare", str(tmp_path / "a.json.gz"), str(tmp_path / "bad.json")]) == 2
    assert f"{tmp_path / 'bad.json'}: not a trace" in capsys.readouterr().err
