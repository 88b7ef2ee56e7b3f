"""Each paper's ablation: its variants' figures over seeds and each component's paired effect.

The definitions live in ``ablations.yaml`` (one entry per paper): *variants*, each a model name
and optionally params overrides (a DVC experiment), and *effects*, each a claimed component
measured as ``with`` minus ``without``. :func:`analyse` takes every variant's per-seed metrics
and trial outcomes (:class:`~pipeline.evaluate.aggregate.Scored`, read by ``pipeline.ablate``
from the workspace or from the experiments) and returns, on the headline protocols
(:data:`PROTOCOLS`: test_unseen, no constraint):

- per variant: the mean over seeds with its 95 % t-interval, and the 95 % identity bootstrap;
- per effect: the paired difference on the same trials, its 95 % interval (identity bootstrap
  and seeds, :func:`pipeline.evaluate.stats.paired_difference`, the aggregate stage's verdicts)
  and what it says of the paper's claim: ``supports`` (the component helps: the interval lies
  above 0), ``contradicts`` (it hurts: below 0) or ``cannot tell`` (the interval holds 0).

:func:`markdown` renders that as the report's ablation section.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.evaluate.aggregate import Key, Scored, TrialStats
from pipeline.evaluate.stats import identity_bootstrap, paired_difference, seed_interval
from pipeline.params import read_yaml_mapping

#: The protocols every ablation is scored on: label -> (metric, direction, constraint, split).
PROTOCOLS: dict[str, Key] = {
    "1:2 V->F": ("match_1to2", "v2f", "U", "test_unseen"),
    "1:2 F->V": ("match_1to2", "f2v", "U", "test_unseen"),
    "verify AUC": ("verify_auc", "vf", "U", "test_unseen"),
}

#: What an effect's verdict says of the paper's claim that the component helps.
CLAIM = {"better": "supports", "worse": "contradicts", "not distinguishable": "cannot tell"}


class AblationError(ValueError):
    """An ``ablations.yaml`` that does not define a usable ablation; the message names it."""


@dataclass(frozen=True)
class Variant:
    """``model``: the model name whose metrics are read (``reports/metrics/seeds/<model>-s<seed>
    .json``); ``overrides``: params.yaml keys set for this variant's experiment (empty: the main
    pipeline's own run of ``model``)."""

    name: str
    model: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def experiment(self) -> bool:
        return bool(self.overrides)


@dataclass(frozen=True)
class Effect:
    component: str
    claim: str
    with_: str
    without: str


@dataclass(frozen=True)
class Ablation:
    """One paper's ablation (an entry of ``ablations.yaml``)."""

    name: str
    paper: str
    variants: tuple[Variant, ...]
    effects: tuple[Effect, ...]

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)


def load_ablations(path: Path | str = "ablations.yaml") -> dict[str, Ablation]:
    """Every paper's ablation in ``path``, checked: each effect names two variants, each variant a
    model; AblationError naming the file and the entry otherwise."""
    p = Path(path)
    raw = read_yaml_mapping(p, AblationError, "each paper to its ablation")
    out = {}
    for name, entry in raw.items():
        try:
            variants = tuple(
                Variant(str(v), str(spec["model"]), dict(spec.get("set") or {}))
                for v, spec in entry["variants"].items()
            )
            names = {v.name for v in variants}
            effects = tuple(
                Effect(str(e["component"]), str(e["claim"]), str(e["with"]), str(e["without"]))
                for e in entry["effects"]
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise AblationError(f"{p}: ablation {name!r}: malformed entry ({err!r})") from err
        for eff in effects:
            for side in (eff.with_, eff.without):
                if side not in names:
                    raise AblationError(
                        f"{p}: ablation {name!r}: effect {eff.component!r} names variant "
                        f"{side!r}, not one of {sorted(names)}"
                    )
        out[str(name)] = Ablation(str(name), str(entry.get("paper", name)), variants, effects)
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def analyse(
    ablation: Ablation, scored: dict[str, Scored], n_boot: int, seed: int
) -> dict[str, Any]:
    """The ablation's figures from each variant's :class:`Scored` (keyed by variant name, all on
    the same trials and seeds); see the module docstring. JSON-ready."""
    missing = [v.name for v in ablation.variants if v.name not in scored]
    if missing:
        raise AblationError(f"ablation {ablation.name!r}: no results for variants {missing}")
    seeds = {name: sc.seeds for name, sc in scored.items()}
    if len(set(seeds.values())) != 1:
        raise AblationError(f"ablation {ablation.name!r}: variants ran different seeds {seeds}")
    ts = TrialStats([replace(sc, name=name) for name, sc in scored.items()])
    out: dict[str, Any] = {
        "ablation": ablation.name,
        "paper": ablation.paper,
        "seeds": list(next(iter(seeds.values()))),
        "protocols": {label: list(key) for label, key in PROTOCOLS.items()},
        "variants": {},
        "effects": [],
    }
    for v in ablation.variants:
        row: dict[str, Any] = {"model": v.model, "set": v.overrides}
        for label, key in PROTOCOLS.items():
            stats = ts.stats[v.name].get(key)
            if not stats:
                continue
            iv = seed_interval([float(s.value()) for s in stats])
            boot = identity_bootstrap(stats, ts.draws(key[3], n_boot, seed))
            row[label] = {
                "mean": _r(iv.mean), "half_width": _r(iv.half_width), "boot95_low": _r(boot.low),
                "boot95_high": _r(boot.high),
            }  # fmt: skip
        out["variants"][v.name] = row
    for e in ablation.effects:
        entry: dict[str, Any] = {
            "component": e.component, "claim": e.claim, "with": e.with_, "without": e.without,
        }  # fmt: skip
        for label, key in PROTOCOLS.items():
            a, b = ts.stats[e.with_].get(key), ts.stats[e.without].get(key)
            if not a or not b:
                continue
            d = paired_difference(a, b, ts.draws(key[3], n_boot, seed))
            entry[label] = {
                "difference": _r(d.difference), "ci95_low": _r(d.low), "ci95_high": _r(d.high),
                "verdict": d.verdict, "claim": CLAIM[d.verdict],
            }  # fmt: skip
        out["effects"].append(entry)
    return out


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


Table = tuple[str, tuple[str, ...], list[tuple[str, ...]]]  # (caption, header, rows)


def tables(result: dict[str, Any]) -> list[Table]:
    """The ablation's two tables as text cells: each variant's figures (mean over seeds ± 95 %
    half-width, in %), and each effect's paired difference with its interval and what it says of
    the paper's claim. Used by :func:`markdown` and the report stage."""
    labels = tuple(result["protocols"])
    seeds = ", ".join(map(str, result["seeds"]))
    rows = []
    for name, row in result["variants"].items():
        overrides = ", ".join(f"{k}={json.dumps(v)}" for k, v in row["set"].items())
        cells = []
        for label in labels:
            leaf = row.get(label)
            if not leaf:
                cells.append("-")
                continue
            hw = leaf["half_width"]
            cells.append(_pct(leaf["mean"]) + ("" if hw is None else f" ± {100 * hw:.1f}"))
        rows.append((name, row["model"], overrides or "(main run)", *cells))
    effects = []
    for e in result["effects"]:
        cells = []
        for label in labels:
            leaf = e.get(label)
            cells.append(
                "-"
                if not leaf
                else f"{100 * leaf['difference']:+.1f} [{100 * leaf['ci95_low']:+.1f}, "
                f"{100 * leaf['ci95_high']:+.1f}]"
            )
        verdict = e.get(labels[0], {}).get("claim", "-")
        sides = f"{e['with']} − {e['without']}"
        effects.append((e["component"], sides, *cells, e["claim"], verdict))
    return [
        (
            f"Variants: seeds {seeds}; test_unseen, no constraint; in %, mean over seeds ± 95 % "
            "half-width.",
            ("variant", "model", "set", *labels),
            rows,
        ),
        (
            "Paired effects: with minus without, on the same trials and seeds, in points, with "
            "the 95 % interval over test identities and seeds; the last column is what this run "
            f"says of the paper's claim on {labels[0]} (supports / contradicts / cannot tell).",
            ("component", "with − without", *labels, "paper's claim", "this run"),
            effects,
        ),
    ]


def markdown(result: dict[str, Any]) -> list[str]:
    """The ablation as markdown lines (``reports/ablation/<paper>.md``)."""
    lines = [f"### {result['paper']}", ""]
    for caption, header, rows in tables(result):
        lines += [
            caption,
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows),
            "",
        ]
    return lines
