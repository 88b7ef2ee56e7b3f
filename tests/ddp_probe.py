"""Child process of ``tests/test_distributed.py``: train one method on the toy pairs of
``tests/test_train.py``, in one process or as one rank of ``torchrun``, and print (rank 0) the
first step's loss, the per-epoch history and every rank's digest of its encoders and method state.

``python -m tests.ddp_probe cmpc OUT EPOCHS`` or
``python -m torch.distributed.run --standalone --nproc-per-node 2 -m tests.ddp_probe ...``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.optim.optimizer import register_optimizer_step_pre_hook

from pipeline.train import distributed
from pipeline.train.loop import train
from tests.test_train import CFG, _method, toy_pairs


def _digest(state: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for k, v in state.items():
        h.update(k.encode() + v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    name, out, epochs = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(int(os.environ.get("PROBE_THREADS", "1")))
    torch.set_default_dtype(getattr(torch, os.environ.get("PROBE_DTYPE", "float32")))
    distributed.init_from_env()
    data = toy_pairs()
    method, params = _method(name, data)
    cfg = replace(CFG, epochs=epochs, head=getattr(method, "head", "none"))
    first: list[float] = []
    forward = method.forward

    def spy(*args: Any) -> Any:
        terms = forward(*args)
        if not first:
            first.append(float(terms["loss"]))
        return terms

    method.forward = spy  # type: ignore[method-assign]
    grads: list[torch.Tensor] = []

    def keep_grads(opt: torch.optim.Optimizer, *_: Any) -> None:
        if not grads:  # the first step's gradients, as the optimiser receives them
            grads.extend(p.grad.clone() for g in opt.param_groups for p in g["params"])

    register_optimizer_step_pre_hook(keep_grads)
    enc, history = train(data, method, params, cfg, out, torch.device("cpu"))
    mine = [_digest(enc.state_dict()), _digest(method.state_dict())]
    ranks = [mine]
    if distributed.active():
        ranks = [[] for _ in range(distributed.world_size())]
        dist.all_gather_object(ranks, mine)
    if distributed.rank() == 0:
        torch.save(grads, out / "first_grads.pt")
        print(json.dumps({"first_loss": first[0], "history": history, "ranks": ranks}))
    if distributed.active():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
