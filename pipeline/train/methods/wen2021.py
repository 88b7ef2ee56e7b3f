"""``wen2021``: Wen et al., CVPR 2021, "Seeking the Shape of Sound" (supervised).

Two-level modality alignment plus dynamic identity re-weighting:

- **Global alignment**: one bias-free linear classifier ``W ∈ R^{C×d}`` shared by both
  modalities over the C training identities, per sample ``CE(W f_i, y_i) + CE(W v_i, y_i)``.
- **Local alignment** (N-pair style): with ``S_ij = ⟨v_i, f̂_j⟩`` (anchor un-normalised, the
  other side normalised), ``l_i(v→f) = log(5.4 + Σ_{j≠i} exp(S_ij − S_ii))`` (the constant 3.4
  of the published code plus the j = i term, exp(0) = 1, plus 1), and ``l_i(f→v)`` with the roles
  swapped.
- **Identity weights** ``w_c`` (see :class:`IdentityReweighting`) scale each sample's terms:
  ``L = mean_i w_{y_i} · [CE_f,i + CE_v,i + ½ (l_i(v→f) + l_i(f→v))]`` (the paper, the default).

``published_code=True`` reproduces the loss of the code released with the paper instead. Its
identity-classifier terms are batch-mean cross-entropies scaled by the batch-mean weight, while
its local term keeps the per-sample weight, and a batch whose weights sum to less than 1e-3 (every
identity in it switched off) gets ``w_i + 1`` instead:
``L = mean_i(w_i) · [mean_i CE_f,i + mean_i CE_v,i] + mean_i w_i · ½ (l_i(v→f) + l_i(f→v))``.
The flag does not change the re-weighting schedule (:class:`IdentityReweighting`).

Training has two phases (:func:`phases`, the paper's two runs in one stage): the re-weighting run
(``reweight_epochs``, in ``state/reweight``), then the main run (``train.epochs``, in
``state/main``) of fresh encoders and classifier with the first run's final identity weights
frozen.

The paper's ablation switches (``wen2021`` params, default on), on the same code path:

- ``global_alignment`` off: the identity cross-entropies leave the encoders' loss. The
  re-weighting still needs a hardness per identity, so (choice, the paper is silent) the
  classifier then learns on *detached* embeddings during the re-weighting run, a probe whose
  cross-entropy measures hardness without shaping the encoders.
- ``local_alignment`` off: the N-pair term leaves the loss.
- ``reweighting`` off: no re-weighting run; every identity weighs 1 in the main run.

Global alignment and re-weighting off leave ``mean_i ½ (l_i(v→f) + l_i(f→v))``, the local-only
N-pair method.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.params import Wen2021Section
from pipeline.train.loop import PhaseResult, Run

if TYPE_CHECKING:
    from pipeline.params import TrainParams
    from pipeline.train.loop import TrainData

LOCAL_MARGIN = 3.4  # the published code's constant inside the log
PUBLISHED_EMPTY_BATCH = 1e-3  # the released code: batch weights summing below this get + 1


def local_alignment(anchor: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Per-anchor ``log(1 + 3.4 + Σ_j exp((1 − δ_ij)(S_ij − S_ii)))`` with ``S = anchor @ ôther.T``.

    anchor (un-normalised), other: (B, D) -> (B,). Equals ``log(5.4 + Σ_{j≠i} exp(S_ij − S_ii))``.
    """
    s = anchor @ F.normalize(other, dim=1).T  # (B, B)
    diff = s - s.diagonal()[:, None]  # S_ij − S_ii
    off = ~torch.eye(len(s), dtype=torch.bool, device=s.device)
    masked = torch.where(off, diff, torch.full_like(diff, float("-inf")))  # drop j = i
    # log(5.4 + Σ_{j≠i} e^{d_ij}) computed stably as logsumexp over [log 5.4, d_i1, ...].
    const = torch.full(
        (len(s), 1),
        math.log(2.0 + LOCAL_MARGIN),
        dtype=s.dtype,
        device=s.device,
    )
    return torch.logsumexp(torch.cat([const, masked], dim=1), dim=1)


def published_loss(
    terms: dict[str, torch.Tensor], w: torch.Tensor, ce: bool = True, local: bool = True
) -> torch.Tensor:
    """The released code's weighting of the per-sample terms (:meth:`Wen2021.per_sample`) by the
    batch's identity weights ``w`` (B,): the two cross-entropies' batch means times the batch-mean
    weight, plus the per-sample weighted mean of the local term; ``w + 1`` when ``Σ w < 1e-3``.
    ``ce`` / ``local``: whether each part is in the loss (the ablation switches)."""
    if float(w.sum()) < PUBLISHED_EMPTY_BATCH:
        w = w + 1.0
    loss = torch.zeros((), dtype=w.dtype, device=w.device)
    if ce:
        loss = loss + terms["ce_face"].mean() * w.mean() + terms["ce_voice"].mean() * w.mean()
    if local:
        loss = loss + (w * terms["local"]).mean()
    return loss


class Wen2021(nn.Module):
    """The loss, with its shared classifier and the identity weights.

    In training mode and while ``reweighting`` is on (the first phase), each batch updates the
    identities' hardness and the schedule, and ``weights`` follow it; in the main phase the
    weights are frozen at the first phase's final values (:meth:`freeze`).
    """

    def __init__(self, params: Wen2021Section, num_identities: int, dim: int) -> None:
        super().__init__()
        self.params = params
        self.classifier = nn.Linear(dim, num_identities, bias=False)  # W (C, d)
        self.schedule = IdentityReweighting(
            num_identities,
            params.warmup_steps,
            params.every_steps,
            params.initial_hardness,
            params.first_fraction,
            params.step_fraction,
            params.cap,
            params.decay,
            params.hardness_momentum,
        )
        self.weights: torch.Tensor
        self.register_buffer("weights", torch.ones(num_identities))  # w_c, mean 1
        self.reweighting = params.reweighting  # updates the weights (the first phase only)

    def freeze(self, weights: torch.Tensor) -> None:
        """Main phase: use these identity weights, never update them."""
        self.weights.copy_(weights)
        self.reweighting = False

    def per_sample(
        self, face: torch.Tensor, voice: torch.Tensor, identity: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The unweighted per-sample terms, each (B,). With ``global_alignment`` off the
        classifier sees detached embeddings (a hardness probe, module docstring)."""
        if not self.params.global_alignment:
            face_c, voice_c = face.detach(), voice.detach()
        else:
            face_c, voice_c = face, voice
        return {
            "ce_face": F.cross_entropy(self.classifier(face_c), identity, reduction="none"),
            "ce_voice": F.cross_entropy(self.classifier(voice_c), identity, reduction="none"),
            "local": 0.5 * (local_alignment(voice, face) + local_alignment(face, voice)),
        }

    def loss_terms(
        self, face: torch.Tensor, voice: torch.Tensor, identity: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """face, voice: (B, d); identity: (B,) in [0, C) -> loss terms (scalars)."""
        t = self.per_sample(face, voice, identity)
        if self.training and self.reweighting:
            self.schedule.observe(identity, t["ce_face"] + t["ce_voice"])
            if self.schedule.tick():
                self.weights.copy_(self.schedule.weights())
        w = self.weights[identity]  # (B,)
        p = self.params
        if p.published_code:
            loss = published_loss(t, w, p.global_alignment, p.local_alignment)
        else:
            total = torch.zeros_like(t["local"])
            if p.global_alignment:
                total = total + t["ce_face"] + t["ce_voice"]
            if p.local_alignment:
                total = total + t["local"]
            loss = (w * total).mean()
        if not p.global_alignment and self.training and self.reweighting:
            # the hardness probe learns on detached embeddings: no gradient reaches the encoders
            loss = loss + (t["ce_face"] + t["ce_voice"]).mean()
        return {
            "loss": loss,
            "identity_ce": (t["ce_face"] + t["ce_voice"]).mean().detach(),
            "local": t["local"].mean().detach(),
            "identities_on": (self.weights > 0).float().mean(),
        }

    def forward(
        self, face: torch.Tensor, voice: torch.Tensor, batch: Any
    ) -> dict[str, torch.Tensor]:
        """Training-loop entry: ``batch.identity`` (B,) are the labels."""
        return self.loss_terms(face, voice, batch.identity)


class IdentityReweighting(nn.Module):
    """Dynamic identity re-weighting: a running hardness per identity and the paper's schedule.

    ``h_c ← m h_c + (1 − m) (CE_face + CE_voice)`` (``momentum`` m = 0.9) for each sample of
    identity c (starting at ``initial_hardness``). After ``warmup`` steps, every ``every`` steps:
    the first time, weight 1 for the easiest ``first_fraction`` (half) of the identities and 0 for
    the rest; each later time, weights × ``decay`` (0.99) and the next ``step_fraction`` (2.4 %)
    easiest identities still at 0 switched on, until ``cap`` (90 %) are on. Weights are returned
    normalised to mean 1 over all identities. (Defaults: the paper's values, ``wen2021`` params.)
    """

    def __init__(
        self,
        num_identities: int,
        warmup: int,
        every: int,
        initial_hardness: float = 100.0,
        first_fraction: float = 0.5,
        step_fraction: float = 0.024,
        cap: float = 0.9,
        decay: float = 0.99,
        momentum: float = 0.9,
    ) -> None:
        super().__init__()
        self.hardness: torch.Tensor
        self.raw: torch.Tensor
        self.state: torch.Tensor
        self.register_buffer("hardness", torch.full((num_identities,), float(initial_hardness)))
        self.register_buffer("raw", torch.ones(num_identities))
        self.register_buffer("state", torch.zeros(2, dtype=torch.long))  # (steps, started)
        self.warmup, self.every, self.momentum = warmup, every, momentum
        self.rest = round(1.0 - momentum, 12)  # 1 - 0.9 as the literal 0.1, not 0.0999...98
        self.first_fraction, self.step_fraction, self.cap, self.decay = (
            first_fraction,
            step_fraction,
            cap,
            decay,
        )

    def observe(self, identity: torch.Tensor, ce_sum: torch.Tensor) -> None:
        """EMA update with per-sample ``CE_face + CE_voice`` (detached), in batch order."""
        for c, x in zip(identity.tolist(), ce_sum.detach().cpu().tolist(), strict=True):
            self.hardness[c] = self.momentum * self.hardness[c] + self.rest * x

    def tick(self) -> bool:
        """Count one training step and apply the schedule; True when the weights changed."""
        self.state[0] += 1
        return self.step(int(self.state[0]))

    def step(self, step: int) -> bool:
        """Apply the schedule at global ``step`` (1-based); True when the weights changed."""
        if step < self.warmup or (step - self.warmup) % self.every:
            return False
        n = len(self.raw)
        order = torch.argsort(self.hardness, stable=True)  # easiest first
        if not bool(self.state[1]):
            self.raw.zero_()
            self.raw[order[: round(self.first_fraction * n)]] = 1.0
            self.state[1] = 1
            return True
        self.raw *= self.decay
        on = int((self.raw > 0).sum())
        limit = round(self.cap * n)
        add = min(round(self.step_fraction * n), max(0, limit - on))
        if add:
            off = order[self.raw[order] == 0]
            self.raw[off[:add]] = 1.0
        return True

    def weights(self) -> torch.Tensor:
        """(C,) weights with mean 1 (all ones before the first re-weighting)."""
        return self.raw / self.raw.mean()


def build(params: Wen2021Section, train: TrainParams, data: TrainData, seed: int) -> Wen2021:
    """The registry's builder: a classifier over the training identities."""
    return Wen2021(params, len(data.identities), train.embed_dim)


def phases(run: Run, method: nn.Module, params: Wen2021Section) -> PhaseResult:
    """Phase 1, the re-weighting run; its final identity weights are frozen for phase 2, which
    trains fresh encoders and classifier (``run.rebuild()``). Reports ``identities_kept``, the
    fraction of identities with a non-zero weight. With ``reweighting`` off, phase 2 alone, every
    identity weighing 1."""
    assert isinstance(method, Wen2021)
    if params.reweighting:
        run.train(method, params, "reweight", replace(run.cfg, epochs=params.reweight_epochs))
    weights = method.weights.detach().clone()
    kept = round(float((weights > 0).float().mean()), 4)
    main = run.rebuild()
    assert isinstance(main, Wen2021)
    main.freeze(weights)
    encoders, history = run.train(main, (params, weights.tolist()), "main")
    return encoders, history, {"identities_kept": kept}
