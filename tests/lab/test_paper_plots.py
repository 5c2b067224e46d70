"""ptqlib.lab.paper_plots: notebook 04's figures drawn from the committed reference tables."""
from __future__ import annotations

from pathlib import Path

from ptqlib.io import experiments as ex
from ptqlib.lab import paper_plots, plots

ROOT = Path(__file__).resolve().parents[2]


def test_the_draw_figure_shows_every_method_of_the_statistics_tables(tmp_path: Path) -> None:
    t = ex.load_tables(ROOT / "results" / "reference")
    long = ex.draws_long(t)
    fig = paper_plots.plot_draws(t)
    assert len(fig.axes) == long.bits.nunique() == 2  # W8A8 and W6A6
    for ax in fig.axes:
        labels = [label.get_text() for label in ax.get_xticklabels()]
        assert sorted(label.replace("\n", " ") for label in labels) == sorted(long.method.unique())
        assert "BasePTQ\n(whole-output cosine)" in labels  # long names wrapped under their column
        assert len(ax.collections[0].get_offsets()) == 10  # the first method's ten draws
    path = plots.save_figure(fig, "draws", tmp_path)
    assert 0 < path.stat().st_size < 300_000
