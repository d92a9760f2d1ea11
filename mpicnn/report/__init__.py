"""``python -m mpicnn.report RUN_DIR``: where a run's time went, from ``--trace DIR``
(the per-rank traces) and ``--metrics FILE``.

``traces``: reading, nesting checks, merging the ranks into one trace; ``analyse``:
the breakdown, straggler, allreduce overlap, pipeline bubble, halo and weight-age
figures; ``plots``: the PNGs (matplotlib, optional); ``html``: ``report.html``.
"""
