"""The comparison report: load the stages' outputs (``loading``), draw the figures (``figures``)
and lay out and write ``summary.md`` / ``summary.html`` (``document``)."""
