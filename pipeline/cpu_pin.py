"""Pin the numeric code paths that libraries choose by CPU, so that the stages write the same
bytes on other x86-64 machines with AVX2 (README, "Reproducibility across machines"). Checked:
the data stages' media and features on Intel and AMD machines; the training stages' weights
(with the thread count fixed by ``train.threads``) across Intel machines, but not from an Intel
to an AMD machine, where training differs from its first epoch for a cause not found yet.

numpy, FFmpeg, PyTorch, oneDNN and MKL each pick SIMD kernels at run time from the CPU's
features (AVX2, FMA3, AVX-512 ...). The kernels agree to the last bit or two, not exactly: a
last-bit change in a sine or a filter tap flips a uint8 pixel's or an AAC quantiser's rounding,
and the files' hashes differ. What is pinned here:

- numpy: the portable x86-64-v2 baseline loops (``NPY_DISABLE_CPU_FEATURES``). Must be set
  before numpy is imported: :func:`pin_env` runs from ``stages/_pinned.py``, the first import
  of the data stages.
- numpy's BLAS (OpenBLAS): its Haswell kernels on every machine with AVX2 and FMA
  (``OPENBLAS_CORETYPE``). Left alone, OpenBLAS picks SkylakeX kernels on AVX-512 machines, whose
  dot product sums in another order: 11 % of 3-vector norms differed in the last bit.
- PyTorch / oneDNN: the AVX2 kernels on every machine that has AVX2 (``ATEN_CPU_CAPABILITY``,
  ``ONEDNN_MAX_CPU_ISA``), read when torch first runs a kernel.
- MKL (torch's FFT and GEMM on x86): the ``COMPATIBLE`` branch of its conditional numerical
  reproducibility (``MKL_CBWR``). Its ``AVX2`` branch is only reproducible across *Intel* CPUs:
  on other vendors' CPUs MKL ignores it and runs its automatic branch, so an Intel and an AMD
  machine wrote different log-mel features and face boxes. ``COMPATIBLE`` is the one branch MKL
  documents as the same on Intel and compatible processors; it measured no slower here (voice
  stage 6.6 vs 6.8 s, faces 22.5 vs 23.1 s on the default corpus).
- faiss (k-means of the clustering methods): its AVX2 kernels on every machine with AVX2
  (``FAISS_SIMD_LEVEL``; left alone it picks AVX-512 kernels where it can). Its bundled OpenBLAS
  reads ``OPENBLAS_CORETYPE`` like numpy's.
- FFmpeg (PyAV's and decord's own builds): the plain C code paths, via ``av_force_cpu_flags(0)``
  on their ``libavutil`` (what ``ffmpeg -cpuflags 0`` does), :func:`pin_ffmpeg`.

Every stage imports ``stages/_pinned.py`` first, so all of this holds from the first import on.
``VOXFACE_NATIVE_SIMD=1`` leaves every library on its own choice (faster, machine-dependent
bytes). Nothing here imports numpy, torch or faiss.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import platform

#: numpy's dispatch targets above the x86-64-v2 baseline (numpy >= 2.4 names).
NUMPY_DISABLED = "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"
#: torch and oneDNN on their AVX2 kernels (falling back below it), MKL on its vendor-neutral branch.
TORCH_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"}
#: OpenBLAS's kernel family for numpy's and faiss's BLAS calls, faiss's own SIMD level: on CPUs
#: that can run them (AVX2 and FMA).
OPENBLAS_ENV = {"OPENBLAS_CORETYPE": "Haswell", "FAISS_SIMD_LEVEL": "AVX2"}

_pinned_ffmpeg: set[str] = set()


def enabled() -> bool:
    """False when ``VOXFACE_NATIVE_SIMD=1`` asks for every library's own (fastest) kernels."""
    return os.environ.get("VOXFACE_NATIVE_SIMD", "0") != "1"


def _x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def pin_env() -> None:
    """Set the variables numpy and torch read when they load. Overrides values inherited from
    the environment: a pin that a variable can undo would not be one. Call before numpy loads."""
    if not enabled() or not _x86():
        return
    os.environ["NPY_DISABLE_CPU_FEATURES"] = NUMPY_DISABLED
    os.environ.update(TORCH_ENV)
    if _cpu_flags() >= {"avx2", "fma"}:  # a Haswell or AVX2 kernel on an older CPU would not run
        os.environ.update(OPENBLAS_ENV)


def _cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (empty where /proc/cpuinfo is not there)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def kernel_settings() -> dict[str, object]:
    """The kernel choices this process computes under: the pin switch and the variables
    :func:`pin_env` sets, and the CPU's own features where the pins are off
    (``VOXFACE_NATIVE_SIMD=1``: each CPU its own bytes). Part of the name of every preprocessing
    shard and of every training run's checkpoint digest, so neither is reused across kernels."""
    names = ("VOXFACE_NATIVE_SIMD", "NPY_DISABLE_CPU_FEATURES", *TORCH_ENV, *OPENBLAS_ENV)
    settings: dict[str, object] = {k: os.environ.get(k) for k in names}
    if not enabled():
        settings["cpu_flags"] = sorted(_cpu_flags())
    return settings


def numpy_pinned() -> bool:
    """Whether this process's numpy runs the baseline loops (False if it loaded before the pin)."""
    if not _x86():
        return True
    from numpy._core._multiarray_umath import __cpu_features__ as features

    return not any(features.get(f, False) for f in NUMPY_DISABLED.split())


def _libavutil(package: str) -> ctypes.CDLL | None:
    """``libavutil`` as loaded by ``package`` (``av`` or ``decord``): the copy its wheel
    bundles (``<package>.libs/``), else the system's that it links to (a source build)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    site = os.path.dirname(os.path.dirname(spec.origin))
    found = sorted(glob.glob(os.path.join(site, f"{package}.libs", "libavutil*.so*")))
    for name in [*found, "libavutil.so"]:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def pin_ffmpeg(package: str = "av", flags: int = 0) -> bool:
    """Make ``package``'s FFmpeg use the CPU-feature set ``flags`` (0: plain C, the same on every
    machine) for codecs opened from now on, once per process. Returns whether it is pinned."""
    if not enabled():
        return False
    if package in _pinned_ffmpeg:
        return True
    lib = _libavutil(package)
    if lib is None:
        return False
    lib.av_force_cpu_flags(ctypes.c_int(flags))
    _pinned_ffmpeg.add(package)
    return True


def force_ffmpeg_flags(package: str, flags: int) -> None:
    """Set ``package``'s FFmpeg CPU flags now, pinned or not (tests emulate other CPUs with it)."""
    lib = _libavutil(package)
    if lib is None:
        raise RuntimeError(f"libavutil of {package!r} not found")
    lib.av_force_cpu_flags(ctypes.c_int(flags))


def ffmpeg_flags(package: str = "av") -> int:
    """The CPU flags ``package``'s FFmpeg uses now (-1: unknown)."""
    lib = _libavutil(package)
    return -1 if lib is None else int(lib.av_get_cpu_flags())
