"""Same bytes on another machine: the stages' outputs (media, features, trained weights) must not
depend on the CPU features the libraries find or the machine's thread settings (README,
"Reproducibility across machines").

Each test runs ``tests/repro_probe.py`` in two child processes that see different CPUs: numpy
without its AVX2 loops (``NPY_DISABLE_CPU_FEATURES``) and its BLAS on other kernels
(``OPENBLAS_CORETYPE``), FFmpeg without any SIMD (``-cpuflags 0``), torch on its portable kernels
(``ATEN_CPU_CAPABILITY=default``, oneDNN below AVX2), MKL on its automatic branch (what it runs on
a non-Intel CPU), faiss without SIMD, other thread counts; and asserts that every file written
(or every model's weights) is byte-identical. Without the pins of :mod:`pipeline.cpu_pin`
(``VOXFACE_NATIVE_SIMD=1``) the MP4s, the face boxes, the fbank features and the weights of all
four methods differ.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.cpu_pin import _cpu_flags as cpu_flags
from tests.conftest import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        platform.machine().lower() not in ("x86_64", "amd64"), reason="pins x86-64 features"
    ),
]

#: Another machine: older SIMD for numpy and its BLAS, none for FFmpeg, torch's portable kernels,
#: MKL's automatic branch (what MKL runs on a non-Intel CPU whatever MKL_CBWR says), 2 threads.
OTHER_CPU = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4",
    "ATEN_CPU_CAPABILITY": "default",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    "MKL_CBWR": "AUTO",
    "OPENBLAS_CORETYPE": "Sandybridge",
    "FAISS_SIMD_LEVEL": "NONE",
    "VOXFACE_THREADS": "2",
    "OMP_NUM_THREADS": "2",
}


def _probe(args: list[str], env: dict[str, str]) -> Any:
    return _child_json(["-m", "tests.repro_probe", *args], env)


def _child_json(argv: list[str], env: dict[str, str]) -> Any:
    """The JSON last printed by ``python <argv>`` run with ``env`` over this environment (less
    the variables :data:`OTHER_CPU` sets)."""
    full = {k: v for k, v in os.environ.items() if k not in OTHER_CPU}
    out = subprocess.run(
        [sys.executable, *argv],
        cwd=REPO,
        env={**full, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_renders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    """The same three clips rendered on 'this machine' and on 'another' (root of the first)."""
    a, b = tmp_path_factory.mktemp("render-a"), tmp_path_factory.mktemp("render-b")
    here = _probe(["synth", str(a)], {})
    other = _probe(["synth", str(b), "--ffmpeg-flags", "0"], OTHER_CPU)
    return a, here, other


def test_synth_mp4s_identical_under_other_cpu_features(
    two_renders: tuple[Path, Any, Any],
) -> None:
    _, here, other = two_renders
    assert len([k for k in here if k.endswith(".mp4")]) == 3
    assert here == other


def test_faces_and_voice_shards_identical_under_other_cpu_kernels(
    two_renders: tuple[Path, Any, Any], tmp_path: Path
) -> None:
    root = two_renders[0]
    here = _probe(["shards", str(root), "--out", str(tmp_path / "a")], {})
    other = _probe(["shards", str(root), "--out", str(tmp_path / "b")], OTHER_CPU)
    assert sorted(here) == ["faces.parquet", "voice.parquet"]
    assert here == other


def test_trained_weights_identical_under_other_cpu_kernels_and_thread_settings(
    tmp_path: Path,
) -> None:
    """Training (k-means and identity re-weighting included) with its thread count from the
    params: one thread in the environment here, two and older kernels there, same weights."""
    one_thread = {"VOXFACE_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    here = _probe(["train", str(tmp_path / "a")], one_thread)
    other = _probe(["train", str(tmp_path / "b")], OTHER_CPU)
    assert sorted(here) == ["bipseudo", "cid", "cmpc", "wen2021"]
    assert here == other


def test_pinned_process_runs_the_pinned_blas_kernels() -> None:
    """What the pins promise, read back from a pinned child that inherits other settings: numpy's
    OpenBLAS on its Haswell kernels (where the CPU has AVX2 and FMA), MKL on its vendor-neutral
    branch, torch on AVX2 kernels."""
    code = (
        "import stages._pinned, os, json, numpy, threadpoolctl, torch;"
        "blas = [i['architecture'] for i in threadpoolctl.threadpool_info()"
        " if i.get('internal_api') == 'openblas'];"
        "print(json.dumps({'blas': blas, 'mkl': os.environ['MKL_CBWR'],"
        " 'aten': torch.backends.cpu.get_cpu_capability()}))"
    )
    got = _child_json(["-c", code], OTHER_CPU)
    if cpu_flags() >= {"avx2", "fma"}:
        assert got["blas"] and set(got["blas"]) == {"Haswell"}
        assert got["aten"] == "AVX2"
    assert got["mkl"] == "COMPATIBLE"
