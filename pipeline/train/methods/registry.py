"""The methods by name: each one's params section, module, training phases and head.

The training stage (and the benchmarks) look a method up here and nowhere else. A method is one
module (its loss as a ``torch.nn.Module`` and a ``build`` function; optionally ``phases`` and
``head``), one section in ``pipeline/params.py`` (and ``params.yaml``) and one :class:`Method`
entry in :data:`METHODS` (see the README's "Adding a method").

The modules are imported by name when a method is used, never all at once: ``train@<method>``
runs only its own method's module, so ``dvc.yaml`` lists only that module among its deps and an
edit to one method reruns that method's stages alone (``tests/test_lineage.py`` checks the deps
with :data:`METHODS`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.params import Params, TrainParams
from pipeline.train.loop import PhaseResult, Run, TrainConfig, TrainData, single_phase


@dataclass(frozen=True)
class Method:
    """``name``: as in ``params.yaml``'s ``methods`` and the stage names; ``section``: the
    attribute of :class:`~pipeline.params.Params` holding its params (the model the builder
    takes); ``module``: the module (a dotted name, imported on first use, or the module object)
    that defines

    - ``build(section, train params, training data, seed)``: the loss module;
    - optionally ``phases(run, loss module, section)``: its training (default one run in
      ``state/main``);
    - optionally ``head(section)``: the name of the head both encoders end in
      (:func:`pipeline.train.encoders.build_head`; default ``"none"``)."""

    name: str
    section: str
    module: Any

    def resolve(self) -> Any:
        """The method's module (imported here when given by name)."""
        return importlib.import_module(self.module) if isinstance(self.module, str) else self.module

    def build(self, section: Any, train: TrainParams, data: TrainData, seed: int) -> nn.Module:
        built: nn.Module = self.resolve().build(section, train, data, seed)
        return built

    def phases(self) -> Callable[[Run, nn.Module, Any], PhaseResult]:
        found: Callable[[Run, nn.Module, Any], PhaseResult] = getattr(
            self.resolve(), "phases", single_phase
        )
        return found

    def head(self, section: Any) -> str:
        head = getattr(self.resolve(), "head", None)
        return "none" if head is None else str(head(section))


#: Every method the pipeline trains (``pipeline/train/methods/<name>.py``).
METHODS: list[Method] = [
    Method(name, name, f"pipeline.train.methods.{name}")
    for name in ("cid", "wen2021", "cmpc", "bipseudo")
]


class UnknownMethodError(KeyError):
    """A method name with no registry entry; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


class MethodSetupError(ValueError):
    """A method's section does not fit the training data (e.g. more clusters than clips)."""


def lookup(name: str, methods: list[Method] | None = None) -> Method:
    """The entry called ``name`` (of ``methods``, default :data:`METHODS`)."""
    for m in METHODS if methods is None else methods:
        if m.name == name:
            return m
    known = ", ".join(m.name for m in (METHODS if methods is None else methods))
    raise UnknownMethodError(f"unknown method {name!r}; known methods: {known}")


def build_method(
    name: str, params: Params, data: TrainData, seed: int, methods: list[Method] | None = None
) -> tuple[nn.Module, Any]:
    """The method's loss module, seeded (so a classifier's init is reproducible), and its params
    section. ValueError when the section does not fit the data (e.g. more clusters than clips)."""
    entry = lookup(name, methods)
    section = getattr(params, entry.section)
    torch.manual_seed(seed)
    return entry.build(section, params.train, data, seed), section


def train_method(
    name: str,
    params: Params,
    data: TrainData,
    seed: int,
    state: Path,
    device: torch.device,
    progress: Callable[[dict[str, float]], None] | None = None,
    methods: list[Method] | None = None,
) -> tuple[TrainConfig, PhaseResult]:
    """Build ``name`` and run its phases on ``data`` with ``params.train`` and ``seed``,
    checkpointing in ``state/<phase>``. Returns the config (for ``model.pt``) and the phases'
    result. MethodSetupError when the method cannot be built for ``data``."""
    entry = lookup(name, methods)
    try:
        method, section = build_method(name, params, data, seed, methods)
    except ValueError as e:
        raise MethodSetupError(str(e)) from e
    cfg = TrainConfig.of(params.train, seed, head=entry.head(section))

    def rebuild() -> nn.Module:
        return build_method(name, params, data, seed, methods)[0]

    run = Run(data, cfg, state, device, rebuild, progress)
    return cfg, entry.phases()(run, method, section)
