"""Per-clip latent attributes: what a dataset says about each clip's speaker.

Gender and nationality come from the manifest (any dataset, as its metadata has them); age and
build exist only in the synthetic corpus's ground truth (``ground_truth/identities.parquet``,
joined to the clip through ``ground_truth/clips.parquet`` on the media path, as the oracle does).
A missing attribute is NaN: a real dataset has only what its metadata has. Nothing here is read by
a training stage of the association methods; the attribute probes and the media ceiling use it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.schema import MANIFEST, SYNTH_CLIPS, SYNTH_IDENTITIES, read_table

#: Categorical attributes (probed by classification) and continuous ones (probed by regression).
CATEGORICAL: tuple[str, ...] = ("gender", "nationality")
CONTINUOUS: tuple[str, ...] = ("age_years", "build")
ATTRIBUTES: tuple[str, ...] = (*CATEGORICAL, *CONTINUOUS)


def clip_attributes(manifest: Path, layout: str, corpus_root: Path | None) -> pd.DataFrame:
    """Attributes of every manifest clip, indexed by ``clip_key`` (sorted), columns
    :data:`ATTRIBUTES`: ``gender`` ("m" / "f" / NaN), ``nationality`` (str / NaN),
    ``age_years`` and ``build`` (float / NaN).

    ``layout == "synth"`` reads age and build from ``corpus_root``'s ground truth (ValueError
    when ``corpus_root`` is None or a clip has no ground truth); other layouts leave them NaN.
    """
    m = read_table(manifest, MANIFEST).sort_values("clip_key", kind="mergesort")
    out = pd.DataFrame(index=pd.Index(m["clip_key"].to_numpy(), name="clip_key"))
    for col in CATEGORICAL:
        values = m[col].to_numpy(dtype=object)
        out[col] = [v if isinstance(v, str) and v else np.nan for v in values]
    out["gender"] = out["gender"].where(out["gender"].isin(["m", "f"]), np.nan)
    for col in CONTINUOUS:
        out[col] = np.full(len(out), np.nan, dtype=np.float64)
    if layout != "synth":
        return out
    if corpus_root is None:
        raise ValueError("layout 'synth' needs the corpus root for its ground truth")
    ident = read_table(corpus_root / "ground_truth" / "identities.parquet", SYNTH_IDENTITIES)
    clips = read_table(corpus_root / "ground_truth" / "clips.parquet", SYNTH_CLIPS)
    who = clips.set_index("path")["identity"]
    missing = sorted(set(m["media_path"]) - set(who.index))
    if missing:
        raise ValueError(
            f"{corpus_root}: no ground truth for {len(missing)} clips, e.g. {missing[0]}"
        )
    by_id = ident.set_index("identity")
    ids = who.loc[m["media_path"].to_numpy()].to_numpy()
    for col in CONTINUOUS:
        out[col] = by_id.loc[ids, col].to_numpy(dtype=np.float64)
    return out
