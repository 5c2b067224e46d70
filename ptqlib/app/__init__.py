"""The application: the command line (``cli``: argparse over library calls), the jobs behind it
(``jobs``: the reproduction table, the sensitivity table, evaluating a saved model), the
end-to-end run of one method (``pipeline``), the per-layer table (``sensitivity``) and the README's
results table made from the committed reference results, which each fresh run is compared with
(``report``).
Uses ``ptqlib.io`` and below; never ``ptqlib.lab``."""
