"""DVC stages ``evaluate@<method>-<seed>`` and ``oracle``: score embeddings on the stored trials.

``--method NAME --seed S`` embeds the test clips with ``models/NAME/sS/model.pt`` and writes
``reports/metrics/seeds/NAME-sS.json`` (nested protocol -> direction -> constraint -> split, and
each value as a fraction of the oracle's margin over chance) and ``reports/eval/NAME/sS/``: the
1:N curve and the ROC for ``dvc plots``, a few ranked retrievals for the report, and every trial's
outcome (``outcomes.parquet``) for the identity bootstrap of the ``aggregate`` stage.
``--oracle`` uses the synthetic corpus's ground truth instead (the ceiling; on a dataset without
ground truth it writes ``{"available": false}``) and writes ``reports/metrics/oracle.json`` and
``reports/eval/oracle/``.
"""

from __future__ import annotations

# isort: off
import stages._pinned  # noqa: F401  (first: pins numpy's and torch's kernels before they load)

# isort: on

import argparse
from pathlib import Path
from typing import Any

from prefect import flow

from pipeline.evaluate.scoring import model_embeddings, oracle_embeddings
from pipeline.evaluate.trials import read_trials
from pipeline.params import Params
from pipeline.train.loop import load_model
from stages._runtime import device, model_dir, prefect_api, run_main, setup_torch, stage_params
from stages._scoring import (
    add_eval_arguments,
    probe_figures,
    score_and_write,
    seed_outputs,
    write_unavailable,
)


@flow(name="evaluate")
def evaluate_flow(
    name: str, seed: int | None, params: Params, args: argparse.Namespace
) -> dict[str, Any]:
    """Score the oracle (``seed`` None) or the model of ``name`` trained with ``seed``."""
    oracle = seed is None
    setup_torch(params.train.threads)  # the embeddings' and probes' floats depend on it
    manifest, trials_path = Path(args.manifest), Path(args.trials)
    trials = read_trials(trials_path)
    keys = sorted(set(trials["probe"]))
    if oracle:
        metrics_file, eval_out = Path(args.metrics) / "oracle.json", Path(args.eval) / "oracle"
        if params.data.layout != "synth":
            reason = "no ground truth: only the synthetic corpus has its rendering parameters"
            return write_unavailable("oracle", reason, metrics_file, eval_out)
        emb = oracle_embeddings(Path(params.data.root), manifest, keys, params.oracle.ridge)
    else:
        assert seed is not None
        dev = device()
        enc, _ = load_model(Path(model_dir(name, seed, args.models)) / "model.pt", dev)
        metrics_file, eval_out = seed_outputs(name, seed, Path(args.metrics), Path(args.eval))
        emb = model_embeddings(
            enc,
            manifest,
            Path(args.faces),
            Path(args.voice),
            params.train,
            dev,
        )
    if oracle:
        return score_and_write(name, emb, trials, manifest, metrics_file, eval_out, None)
    probes = probe_figures(enc, params, args, emb)
    ref = Path(args.metrics) / "oracle.json"
    return score_and_write(
        name, emb, trials, manifest, metrics_file, eval_out, ref, {"probes": probes}
    )


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--method", help="score models/<method>/s<seed>/model.pt")
    ap.add_argument("--seed", type=int, help="the training seed of --method")
    ap.add_argument("--oracle", action="store_true", help="score the ground-truth oracle")
    add_eval_arguments(ap)
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if bool(args.method) == args.oracle:
        raise SystemExit("give exactly one of --method NAME and --oracle")
    if bool(args.method) != (args.seed is not None):
        raise SystemExit("--method NAME needs --seed S (and --oracle takes none)")
    name = "oracle" if args.oracle else args.method
    params = stage_params(args.params)
    with prefect_api():
        res = evaluate_flow(name, args.seed, params, args)
    stage = name if args.seed is None else f"{name}-{args.seed}"
    if res.get("available", True):
        u = res["match_1to2"]
        print(
            f"evaluate@{stage}: 1:2 U test_unseen V->F {u['v2f']['U']['test_unseen']:.4f} "
            f"F->V {u['f2v']['U']['test_unseen']:.4f}; AUC "
            f"{res['verify_auc']['vf']['U']['test_unseen']:.4f}; mAP V->F "
            f"{res['retrieve_map']['v2f']['U']['test_unseen']:.4f}"
        )
    else:
        print(f"evaluate@{stage}: {res['reason']}")


if __name__ == "__main__":
    run_main(main)
