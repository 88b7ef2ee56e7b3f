"""Which kernel makes two machines train different weights: a trace of training's first tensor
operations, each with the digest of its inputs and outputs, and a comparison of two traces.

The data stages write the same bytes on any x86-64 machine with AVX2 (:mod:`pipeline.cpu_pin`),
but the same training run on an Intel and an AMD machine has given other weights from the first
epoch on (README, "Reproducibility across machines"). To find the kernel, record a trace on each
machine from the same data and code, then compare them::

    python -m pipeline.tool.kernel_trace record --method cid --out intel.json   # machine A
    python -m pipeline.tool.kernel_trace record --method cid --out amd.json     # machine B
    python -m pipeline.tool.kernel_trace compare intel.json amd.json

``record`` trains ``--method`` as the ``train`` stage does (the pins first, ``train.threads``,
deterministic kernels, the default corpus's ``data/manifest``, ``data/faces`` and
``data/voice``: run ``dvc repro voice`` first), and records every ATen operation it dispatches
(a :class:`~torch.utils._python_dispatch.TorchDispatchMode`) until ``--ops`` of them: its name,
the shapes and dtypes of its tensors, and the MD5 of its input and output bytes. Training stops
there; its checkpoints go to a temporary folder.

``compare`` walks both traces in step and names the first operation whose inputs agree and whose
outputs do not: that kernel computes other bits from the same bits. When inputs differ before any
output did, the data differ already (the trace starts after the clips are loaded), and it says so.
A trace whose name ends in ``.gz`` is gzipped: one machine's trace can be kept and sent, and the
other machine compares against it.
"""

from __future__ import annotations

# isort: off
import stages._pinned  # noqa: F401  (first: the stages' pins, before numpy or torch load)

# isort: on
import argparse
import gzip
import hashlib
import json
import platform
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_path

#: How many operations ``record`` keeps by default: model set-up and a few training steps.
DEFAULT_OPS = 3000


class _Enough(Exception):
    """Raised from inside training once the trace has its operations."""


#: The MD5 recorded for a tensor whose memory no operation has written yet (``torch.empty``).
UNWRITTEN = "unwritten"


def _storage(t: Any) -> int:
    return int(t.untyped_storage().data_ptr())


def describe(value: Any, unwritten: set[int] | frozenset[int] = frozenset()) -> list[list[Any]]:
    """``[shape, dtype, md5]`` of every tensor in ``value`` (nested lists, tuples and dicts),
    in order (other leaves are left out); :data:`UNWRITTEN` for a tensor whose storage is in
    ``unwritten`` (its bytes are whatever the allocator left there)."""
    import torch

    out = []
    for leaf in _tensors(value):
        if leaf.layout == torch.strided:
            digest = UNWRITTEN
            if _storage(leaf) not in unwritten:
                raw = leaf.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
                digest = hashlib.md5(raw.numpy().tobytes()).hexdigest()  # any dtype's bytes
            out.append([list(leaf.shape), str(leaf.dtype).removeprefix("torch."), digest])
    return out


def _tensors(value: Any) -> list[Any]:
    import torch
    from torch.utils._pytree import tree_leaves

    return [x for x in tree_leaves(value) if isinstance(x, torch.Tensor)]


def trace_mode(limit: int) -> Any:
    """A dispatch mode that records up to ``limit`` operations in its ``rows``, then raises
    :class:`_Enough` at the next one. The outputs of ``empty``-like operations are recorded
    as :data:`UNWRITTEN`, and so is such a tensor given to a later operation before an in-place
    or ``out=`` operation has written it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Trace(TorchDispatchMode):  # type: ignore[no-untyped-call]
        def __init__(self) -> None:
            super().__init__()  # type: ignore[no-untyped-call]
            self.rows: list[dict[str, Any]] = []
            self.unwritten: set[int] = set()

        def __torch_dispatch__(
            self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
        ) -> Any:
            if len(self.rows) >= limit:
                raise _Enough
            kwargs = kwargs or {}
            inputs = describe((args, kwargs), self.unwritten)
            out = func(*args, **kwargs)
            name = func.__name__  # e.g. "empty.memory_format", "add_.Tensor"
            written = _tensors(out)
            if name.split(".")[0].endswith("_") or "out" in kwargs:
                written += _tensors((args, kwargs))
            if "empty" in name.split(".")[0]:
                self.unwritten.update(_storage(x) for x in _tensors(out))
            else:
                self.unwritten.difference_update(_storage(x) for x in written)
            self.rows.append({"op": str(func), "in": inputs, "out": describe(out, self.unwritten)})
            return out

    return Trace()


def machine() -> dict[str, Any]:
    """What a trace was recorded on: CPU model and flags, package versions, pins."""
    import numpy
    import torch

    from pipeline.cpu_pin import _cpu_flags, kernel_settings

    cpu: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if not key:  # the first processor's block ends here
                    break
                if key in (
                    "vendor_id",
                    "model name",
                    "cpu family",
                    "model",
                    "stepping",
                    "cache size",
                ):
                    cpu[key] = value.strip()
    except OSError:
        pass
    return {
        "cpu": cpu.get("model name") or platform.processor(),
        "cpuinfo": cpu,  # vendor, family, model, stepping, cache size: what kernels may key on
        "cpu_flags": sorted(f for f in _cpu_flags() if f.startswith(("avx", "fma", "amx"))),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "kernels": kernel_settings(),
    }


def record(
    method: str, seed: int, params_file: Path, data: Path, ops: int, onednn: bool = True
) -> dict[str, Any]:
    """Train ``method`` (``seed``) as the ``train`` stage does, tracing its first ``ops``
    operations; returns the trace (``inputs``, ``machine``, ``rows``). ``onednn=False`` switches
    oneDNN off first (``torch.backends.mkldnn``: convolutions then run through MKL's GEMM), to
    tell its kernels from the rest."""
    import torch

    from pipeline.params import load_params
    from pipeline.train.methods.registry import train_method
    from pipeline.train.stream import open_pairs
    from stages._runtime import setup_torch

    params = load_params(params_file)
    setup_torch(params.train.threads)
    torch.backends.mkldnn.enabled = onednn  # type: ignore[assignment]
    pairs = open_pairs(
        data / "manifest/clips.parquet", data / "faces", data / "voice", ("train",), params.train
    )
    mode = trace_mode(ops)
    with tempfile.TemporaryDirectory() as state:
        try:
            with mode:
                train_method(method, params, pairs, seed, Path(state), torch.device("cpu"))
        except _Enough:
            pass
    return {
        "inputs": {**recipe(params_file, data), "method": method, "seed": seed, "onednn": onednn},
        "machine": machine(),
        "rows": mode.rows,
    }


def recipe(params_file: Path, data: Path) -> dict[str, str]:
    """What a trace depends on besides the machine: the training code (every project module the
    method registry runs), the params and the data folders' DVC hashes where ``dvc.lock`` is
    beside the params. Two traces are only comparable when these agree."""
    from pipeline.lineage import source_digest

    out = {
        "code": source_digest("pipeline.train.methods.registry")[:16],
        "params": hashlib.sha256(params_file.read_bytes()).hexdigest()[:16],
    }
    lock = params_file.parent / "dvc.lock"
    if lock.is_file():
        import yaml

        stages = yaml.safe_load(lock.read_text()).get("stages", {})
        for stage in ("faces", "voice"):
            for o in stages.get(stage, {}).get("outs", []):
                if Path(o["path"]).name == stage and (data / stage).exists():
                    out[f"data/{stage}"] = str(o.get("md5", ""))[:16]
    return out


def write_trace(trace: dict[str, Any], path: Path) -> None:
    """Write ``trace`` as JSON (gzipped when ``path`` ends in ``.gz``), never half-written."""
    data = (json.dumps(trace) + "\n").encode()
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def read_trace(path: Path) -> dict[str, Any]:
    """A trace written by :func:`write_trace`; ValueError naming the file when it is not one."""
    try:
        data = path.read_bytes()
        trace: dict[str, Any] = json.loads(
            gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        )
        trace["rows"], trace["machine"]  # both present
    except (OSError, EOFError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a trace ({type(e).__name__}: {e})") from e
    return trace


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Where two traces part: ``{"verdict": ..., "index": ..., "op": ..., ...}``.

    Verdicts: ``identical`` (every operation of the shorter trace agrees), ``kernel`` (the first
    operation whose outputs differ had the same inputs on both), ``inputs`` (an operation's
    inputs differ before any output did: the data or something outside torch),
    ``program`` (the two ran other operations: other code or settings)."""
    if a.get("inputs") != b.get("inputs"):
        return {
            "verdict": "program",
            "index": None,
            "op": None,
            "compared": 0,
            "differing_outputs": 0,
            "other_op": f"recorded from other code, params or data: {a.get('inputs')} against "
            f"{b.get('inputs')}",
        }
    rows_a, rows_b = a["rows"], b["rows"]
    n = min(len(rows_a), len(rows_b))
    differing = sum(ra["out"] != rb["out"] for ra, rb in zip(rows_a, rows_b, strict=False))
    for i in range(n):
        ra, rb = rows_a[i], rows_b[i]
        where = {"index": i, "op": ra["op"], "compared": n, "differing_outputs": differing}
        if ra["op"] != rb["op"]:
            return {"verdict": "program", **where, "other_op": rb["op"]}
        if ra["in"] != rb["in"]:
            return {"verdict": "inputs", **where, "inputs": _shapes(ra["in"])}
        if ra["out"] != rb["out"]:
            return {
                "verdict": "kernel",
                **where,
                "inputs": _shapes(ra["in"]),
                "outputs": _shapes(ra["out"]),
            }
    return {
        "verdict": "identical",
        "index": None,
        "op": None,
        "compared": n,
        "differing_outputs": 0,
    }


def _shapes(tensors: list[list[Any]]) -> list[str]:
    return [f"{dtype}{shape}" for shape, dtype, _ in tensors]


def explain(result: dict[str, Any], a: dict[str, Any], b: dict[str, Any]) -> str:
    """One paragraph for people: where the traces part and what that means."""
    ma, mb = a["machine"], b["machine"]
    head = f"A: {ma['cpu']} (torch {ma['torch']}); B: {mb['cpu']} (torch {mb['torch']})."
    v, n = result["verdict"], result["compared"]
    if v == "identical":
        return f"{head}\nidentical: all {n} operations compared have the same inputs and outputs."
    at = f"operation {result['index']} of {n} ({result['op']})"
    if v == "program" and result["index"] is None:
        return f"{head}\nprogram: {result['other_op']}."
    if v == "program":
        return f"{head}\nprogram: {at} is {result['other_op']} on B: other code or settings."
    if v == "inputs":
        return (
            f"{head}\ninputs: the inputs of {at} differ while no output before it did: the data "
            f"(or code outside torch) differ. Inputs: {', '.join(result['inputs'])}."
        )
    return (
        f"{head}\nkernel: {at} computed other outputs from the same inputs "
        f"({', '.join(result['inputs'])} -> {', '.join(result['outputs'])}); "
        f"{result['differing_outputs']} of the {n} operations compared have other outputs."
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.tool.kernel_trace", description=__doc__.split("\n\n")[0]
    )
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record", help="trace training's first operations on this machine")
    r.add_argument("--method", default="cid")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--params", type=Path, default=Path("params.yaml"))
    r.add_argument("--data", type=Path, default=Path("data"), help="holds manifest, faces, voice")
    r.add_argument("--ops", type=int, default=DEFAULT_OPS, help="operations to record")
    r.add_argument(
        "--no-onednn", action="store_true", help="switch oneDNN off (convolutions through MKL)"
    )
    r.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare", help="where two traces part")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    if args.command == "record":
        for folder in ("manifest", "faces", "voice"):
            if not (args.data / folder).exists():
                print(
                    f"{args.data / folder}: missing; run `dvc repro voice` first", file=sys.stderr
                )
                return 2
        trace = record(args.method, args.seed, args.params, args.data, args.ops, not args.no_onednn)
        write_trace(trace, args.out)
        print(f"{args.out}: {len(trace['rows'])} operations of {args.method} (seed {args.seed})")
        return 0
    try:
        traces = [read_trace(args.a), read_trace(args.b)]
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    result = compare(*traces)
    print(json.dumps(result, indent=2) if args.json else explain(result, *traces))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
