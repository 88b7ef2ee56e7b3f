"""The methods by name: each one's params section, builder, training phases and head.

The training stage (and the benchmarks) look a method up here and nowhere else. A method is one
module (its loss as a ``torch.nn.Module`` and a ``build`` function), one section in
``pipeline/params.py`` (and ``params.yaml``) and one :class:`Method` entry in :data:`METHODS`
(see the README's "Adding a method").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.params import Params, TrainParams
from pipeline.train.loop import PhaseResult, Run, TrainConfig, single_phase
from pipeline.train.methods import bipseudo, cid, cmpc, wen2021
from pipeline.train.pairs import PairData


@dataclass(frozen=True)
class Method:
    """``name``: as in ``params.yaml``'s ``methods`` and the stage names; ``section``: the
    attribute of :class:`~pipeline.params.Params` holding its params (the model the builder
    takes); ``build(section, train params, training data, seed)``: the loss module; ``phases(run,
    module, section)``: its training (default one run in ``state/main``); ``head``: the head both
    encoders end in (:func:`pipeline.train.encoders.build_head`)."""

    name: str
    section: str
    build: Callable[[Any, TrainParams, PairData, int], nn.Module]
    phases: Callable[[Run, nn.Module, Any], PhaseResult] = single_phase
    head: str = "none"


#: Every method the pipeline trains.
METHODS: list[Method] = [
    Method("cid", "cid", cid.build),
    Method("wen2021", "wen2021", wen2021.build, wen2021.phases),
    Method("cmpc", "cmpc", cmpc.build),
    Method("bipseudo", "bipseudo", bipseudo.build, head=bipseudo.BiPseudo.head),
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
    name: str, params: Params, data: PairData, seed: int, methods: list[Method] | None = None
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
    data: PairData,
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
    t = params.train
    cfg = TrainConfig(
        t.epochs,
        t.batch_size,
        t.lr,
        t.weight_decay,
        t.embed_dim,
        t.face_encoder,
        t.voice_encoder,
        t.voice_frames,
        seed,
        head=entry.head,
        mirror_flip=t.mirror_flip,
    )

    def rebuild() -> nn.Module:
        return build_method(name, params, data, seed, methods)[0]

    run = Run(data, cfg, state, device, rebuild, progress)
    return cfg, entry.phases(run, method, section)
