"""Scoring trained models: draw trials, embed clips, compute every protocol's metrics, the oracle
and media ceilings, attribute probes, seed aggregation and the paired comparisons."""
