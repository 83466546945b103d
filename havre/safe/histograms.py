"""The library's histograms: the counts of the bins as a checked table, and the plot of exactly
those bins.

Each bin is a cell of a frequency table (:func:`havre.sdc.check_histogram`): it must reach the
threshold, empty bins are zero cells, and a histogram always goes to review (its outer bins
show the data's range). The plot is drawn from the checked counts, never recomputed, so the
PNG shows nothing the check did not see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
import pandas as pd

from havre.sdc import OutputCheck, SDCParams, check_histogram

from .records import MAX_CELLS_RECORDED, Draft, cell_outcomes, havre_block, label_text

__all__ = ["Histogram", "check", "draft", "plot"]


@dataclass
class Histogram:
    """A checked histogram: the check, the table of bins (one ``count`` column) and its
    properties (variable, number of bins, edges)."""

    check: OutputCheck
    table: pd.DataFrame
    properties: dict[str, Any]


def check(
    params: SDCParams,
    values: Any,
    bins: int | Sequence[float],
    range: tuple[float, float] | None,
) -> Histogram:
    """The bins of ``values`` (as :func:`numpy.histogram`), checked."""
    result = check_histogram(values, bins, params=params, range=range)
    table = result.table.copy()
    edges = [float(i.left) for i in table.index[:1]] + [float(i.right) for i in table.index]
    name = getattr(values, "name", None)
    properties = {
        "method": "histogram",
        "mitigation": "none",
        "variable": None if name is None else label_text(name),
        "bins": len(table),
        "edges": edges,
    }
    return Histogram(result, table, properties)


def plot(
    histogram: Histogram, values: Any, ax: Any, plot_kwargs: dict[str, Any]
) -> tuple[Any, bytes]:
    """Draw the checked bins (matplotlib, on ``ax`` or a new figure): the Axes and the PNG."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    edges = np.asarray(histogram.properties["edges"], dtype=float)
    counts = histogram.table["count"].to_numpy()
    ax.stairs(counts, edges, fill=True, **plot_kwargs)
    name = getattr(values, "name", None)
    if name is not None:
        ax.set_xlabel(str(name))
    ax.set_ylabel("count")
    buffer = BytesIO()
    # no "Software" tag: matplotlib writes its own, which the egress service flags as
    # metadata a checker must look at in every PNG
    ax.figure.savefig(buffer, format="png", metadata={"Software": None})
    return ax, buffer.getvalue()


def draft(histogram: Histogram, png: bytes | None) -> Draft:
    """The histogram's draft: the counts as CSV (and the plot as PNG, first, when drawn)."""
    result, table, properties = histogram.check, histogram.table, histogram.properties
    sdc = result.to_acro_sdc(max_positions=MAX_CELLS_RECORDED)
    outcome, recorded = cell_outcomes(result, table, None)
    files = [("csv", table.to_csv().encode("utf-8"), sdc)]
    if png is not None:
        files.insert(0, ("png", png, sdc))
    return Draft(
        output_type="histogram",
        properties=properties,
        files=files,
        status=result.verdict.label,
        summary=result.summary,
        outcome=outcome,
        fair={"dependent": "unknown", "independent": [properties.get("variable")]},
        havre=havre_block(result, {"recorded": recorded}),
        check=result,
    )
