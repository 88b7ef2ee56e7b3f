"""Data-parallel training over processes with ``torch.distributed`` (launched by ``torchrun``).

``torchrun --nproc-per-node N -m stages.train --method cid --seed 1`` (or ``VOXFACE_NPROC=N``
with the usual command, which relaunches itself so) trains one model with N processes: gloo on
CPUs, NCCL on GPUs (one per process, ``LOCAL_RANK``). What keeps N processes equal to one process
at the same global batch (``train.batch_size``):

- **Batches**: every rank draws the same global batch from the same generator (the single-process
  epoch, clips and random crops alike) and embeds its contiguous block of ``batch / N`` rows.
- **Embeddings**: each rank gathers every rank's embeddings (:func:`gather_rows`: its own rows
  keep their gradient, the others' are constants) and computes the method's loss on the whole
  global batch, so in-batch negatives, CMPC's per-video memory, bipseudo's per-clip memory and
  Wen's identity hardness see the same batch on every rank and stay equal without messages.
- **BatchNorm**: the encoders' BatchNorm layers use the global batch's statistics
  (:class:`SyncBatchNorm`, differentiable all-reduces; PyTorch's own needs a GPU).
- **Gradients** (:func:`sync_grads`): an encoder parameter's gradient on one rank is its own
  rows' part of the global loss's gradient, so the parts are summed; a loss module's parameter
  (Wen's classifier) already has the whole gradient on every rank, so those are averaged.
- **Clustering**: after each epoch-start hook (k-means of CMPC and bipseudo) rank 0's method
  state is broadcast (:func:`broadcast_state`): one clustering for all.
- **Checkpoints** are written by rank 0; every rank resumes from the same file.

Numerically a 2-process run equals a 1-process run up to float summation order (BatchNorm's
statistics and the gradients are summed in another order), so the first step's losses agree to
about 1e-6 and trained models agree in distribution, as another thread count would.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


def active() -> bool:
    """Whether this process is one of several in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank_from_env() -> int:
    """This process's rank as ``torchrun`` sets it (``RANK``), before the group is joined."""
    return int(os.environ.get("RANK", "0"))


def init_from_env() -> torch.device | None:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment):
    NCCL and this rank's GPU when CUDA is present, else gloo. Returns the rank's device, or None
    when not launched by torchrun (one process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    cuda = torch.cuda.is_available() and os.environ.get("VOXFACE_DEVICE", "cuda") != "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def local_rows(n: int) -> slice:
    """This rank's contiguous block of a global batch of ``n`` rows (``n`` divisible by the world
    size): gathering the blocks in rank order rebuilds the batch in its order."""
    size = world_size()
    if n % size:
        raise ValueError(f"a global batch of {n} rows does not split over {size} processes")
    per = n // size
    return slice(rank() * per, (rank() + 1) * per)


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` (equal shapes) concatenated in rank order; this rank's block keeps its
    gradient, the others' are constants (their ranks back-propagate through them)."""
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank()] = x
    return torch.cat(parts)


def sync_grads(summed: Iterable[nn.Parameter], averaged: Iterable[nn.Parameter]) -> None:
    """All-reduce gradients: ``summed`` (the encoders': each rank holds its rows' part) are
    summed, ``averaged`` (loss modules' parameters: each rank holds the whole gradient) are
    averaged. Missing gradients count as zeros, so every rank makes the same calls."""
    size = world_size()
    for params, scale in ((summed, 1.0), (averaged, 1.0 / size)):
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            if scale != 1.0:
                p.grad.mul_(scale)


@torch.no_grad()
def broadcast_state(module: nn.Module) -> None:
    """Rank 0's parameters and buffers, copied into every rank's ``module`` in place."""
    for t in module.state_dict().values():
        if isinstance(t, torch.Tensor):
            dist.broadcast(t, 0)


def _all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks (its gradient is the sum of the ranks' gradients)."""
    out: torch.Tensor = dist_fn.all_reduce(x)  # type: ignore[no-untyped-call]  # (deprecated name)
    return out


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all ranks, on any device (gloo included): in training,
    the mean and then the biased variance are all-reduced (differentiably,
    ``torch.distributed.nn``), the running statistics updated from them as BatchNorm does (the
    unbiased variance, ``momentum``). Outside a process group, or in eval mode, plain BatchNorm.
    The state dict is BatchNorm's, so models load into the single-process encoders."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        total = _all_reduce(torch.cat([x.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        centred = x - mean.reshape(shape)
        var = _all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None and self.num_batches_tracked is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum
                if m is None:  # a cumulative average, as BatchNorm's momentum=None
                    m = 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * n / (n - 1).clamp(min=1)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        y = centred / torch.sqrt(var + self.eps).reshape(shape)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm1d/2d replaced by a :class:`SyncBatchNorm` holding the same
    parameters and statistics (in place for children; returns the converted module)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, SyncBatchNorm
    ):
        out = SyncBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        out.load_state_dict(module.state_dict())
        out.train(module.training)
        device = next(iter(module.state_dict().values())).device
        converted: nn.Module = out.to(device)
        return converted
    for name, child in module.named_children():
        setattr(module, name, convert_batchnorm(child))
    return module
