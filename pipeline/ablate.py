"""Run a paper's ablation as DVC experiments and write its report section.

``python -m pipeline.ablate run <paper>`` (``make ablation-<paper>``; papers: the entries of
``ablations.yaml``, ``wen2021``, ``cmpc``, ``bipseudo``):

1. each variant with params overrides becomes one DVC experiment named ``<paper>-<variant>``,
   run with ``dvc exp run --temp -S ... aggregate`` in a temporary copy of the repository, one
   after the other: ``dvc repro aggregate`` there restores what did not change from DVC's cache
   and reruns only the stages whose params or code the variant changes (that method's training,
   evaluation and, for CMPC, low-shot fine-tuning, for every seed of ``seeds``), then the
   aggregates over seeds, the figures ``dvc exp show`` and ``dvc metrics diff`` compare. The
   ``report`` stage is left out of the experiments: the report is rendered once, by the main
   pipeline, with every ablation in it (an experiment's commit keeps its parent's report, which
   ``dvc status`` there shows as stale); a rerun after an edit to one method reruns that
   method's variants only (an experiment of the same name on the same commit is replaced);
2. ``collect``: every variant's per-seed metrics and trial outcomes, from the experiments
   (``dvc.api``) or, for the variants that are the main pipeline's own models, from the
   workspace; :func:`pipeline.evaluate.ablation.analyse` turns them into each variant's mean and
   interval and each component's paired effect;
3. writes ``reports/ablation/<paper>.json`` and ``.md``; the report stage (``dvc repro``)
   includes them as its ablation section.

``--queue`` only queues the experiments (``dvc exp run --queue``), for ``dvc queue start -j N`` on a
machine with room for parallel runs; ``python -m pipeline.ablate collect <paper>`` afterwards.
Run ``dvc repro`` first: the main run's models are the ``full`` rows, and the experiments start from
its outputs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_path
from pipeline.dvc_run import command as dvc_command
from pipeline.evaluate.ablation import (
    Ablation,
    AblationError,
    Variant,
    analyse,
    load_ablations,
    markdown,
)
from pipeline.evaluate.aggregate import Scored, load_scored
from pipeline.params import load_params
from pipeline.schema import OUTCOMES, SchemaError, read_table

OUT = Path("reports/ablation")
#: The stage an experiment runs up to (with everything it depends on): the aggregates over seeds.
EXPERIMENT_TARGET = "aggregate"


def experiment_name(ablation: Ablation, variant: Variant) -> str:
    return f"{ablation.name}-{variant.name}"


def _set_args(variant: Variant) -> list[str]:
    args = []
    for key, value in variant.overrides.items():
        text = json.dumps(value) if not isinstance(value, str) else value
        args += ["-S", f"{key}={text}"]
    return args


def _dvc(args: list[str]) -> None:
    print("$ dvc " + " ".join(args), flush=True)
    res = subprocess.run(dvc_command(args), text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"error: dvc {' '.join(args)} failed (exit {res.returncode})")


def existing_experiments() -> dict[str, str]:
    """Experiments of the current commit: name -> experiment commit (``dvc exp show --json``)."""
    res = subprocess.run(
        ["dvc", "exp", "show", "--json", "--no-fetch"],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise SystemExit(f"error: dvc exp show failed: {res.stderr.strip()}")
    out: dict[str, str] = {}
    for base in json.loads(res.stdout or "[]"):
        for exp in base.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("name"):
                    out[str(rev["name"])] = str(rev["rev"])
    return out


def run_experiments(ablation: Ablation, queue: bool) -> None:
    """One DVC experiment per variant with overrides (module docstring)."""
    have = existing_experiments()
    for v in ablation.variants:
        if not v.experiment:
            continue
        name = experiment_name(ablation, v)
        if name in have:  # same commit, maybe other code or params in the workspace: redo it
            _dvc(["exp", "remove", name])
        mode = ["--queue"] if queue else ["--temp"]
        _dvc(["exp", "run", *mode, "-n", name, *_set_args(v), EXPERIMENT_TARGET])


def _read_from(rev: str, path: str) -> bytes:
    import dvc.api

    with dvc.api.open(path, rev=rev, mode="rb") as f:
        data: bytes = f.read()
    return data


def scored_from_experiment(model: str, seeds: list[int], rev: str) -> Scored:
    """Per-seed metrics and trial outcomes of ``model`` in the experiment commit ``rev``."""
    mets, outs = [], []
    for seed in sorted(seeds):
        m = f"reports/metrics/seeds/{model}-s{seed}.json"
        o = f"reports/eval/{model}/s{seed}/outcomes.parquet"
        try:
            mets.append(json.loads(_read_from(rev, m)))
            data = _read_from(rev, o)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"experiment {rev[:7]}: {e}") from e
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "outcomes.parquet"
            path.write_bytes(data)
            try:
                outs.append(read_table(path, OUTCOMES))
            except SchemaError as e:
                raise SchemaError(f"experiment {rev[:7]}: {o}: {e}") from e
    return Scored(model, tuple(sorted(seeds)), tuple(mets), tuple(outs))


def collect(ablation: Ablation, params_path: str = "params.yaml") -> dict[str, Any]:
    """Analyse the ablation from the workspace and its experiments; write its report files."""
    params = load_params(params_path)
    seeds = list(params.seeds)
    exps = existing_experiments()
    scored: dict[str, Scored] = {}
    for v in ablation.variants:
        if v.experiment:
            name = experiment_name(ablation, v)
            if name not in exps:
                raise SystemExit(
                    f"error: no experiment {name!r} on this commit: "
                    f"python -m pipeline.ablate run {ablation.name}"
                )
            scored[v.name] = scored_from_experiment(v.model, seeds, exps[name])
        else:
            try:
                scored[v.name] = load_scored(
                    v.model, seeds, Path("reports/metrics"), Path("reports/eval")
                )
            except FileNotFoundError as e:
                raise SystemExit(f"error: {e} (run `dvc repro` first)") from e
    result = analyse(ablation, scored, params.compare.bootstrap, params.base.seed)
    result["experiments"] = {
        v.name: exps.get(experiment_name(ablation, v)) for v in ablation.variants if v.experiment
    }
    OUT.mkdir(parents=True, exist_ok=True)
    with atomic_path(OUT / f"{ablation.name}.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    with atomic_path(OUT / f"{ablation.name}.md") as tmp:
        tmp.write_text("\n".join(markdown(result)) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("action", choices=["run", "collect"])
    ap.add_argument("paper", help="an entry of ablations.yaml (wen2021, cmpc, bipseudo)")
    ap.add_argument("--queue", action="store_true", help="run: only queue the experiments")
    ap.add_argument("--ablations", default="ablations.yaml")
    args = ap.parse_args(argv)
    try:
        ablations = load_ablations(args.ablations)
    except AblationError as e:
        raise SystemExit(f"error: {e}") from e
    if args.paper not in ablations:
        known = ", ".join(ablations)
        raise SystemExit(f"error: no ablation {args.paper!r} in {args.ablations} ({known})")
    ablation = ablations[args.paper]
    if args.action == "run":
        run_experiments(ablation, args.queue)
        if args.queue:
            print(f"queued; then: dvc queue start; python -m pipeline.ablate collect {args.paper}")
            return
    result = collect(ablation)
    print("\n".join(markdown(result)))
    print(f"wrote {OUT / args.paper}.json and .md; `dvc repro report` puts them in the report")


if __name__ == "__main__":
    main()
