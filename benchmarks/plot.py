"""The PNG chart: one panel per scenario, shmkit beside the anchors.

Horizontal bars (median, with a whisker from min to max), shmkit in orange, anchors in
blue, yardsticks (references) in grey; a log scale when the figures span more than 30x;
rows that did not run are listed with their status instead of a bar, so nothing is
dropped from the picture either.  Needs matplotlib (``pip install matplotlib``).
"""

from __future__ import annotations

import math

from .harness import ANCHOR, OK, REFERENCE, SHMKIT, ScenarioResult
from .report import fmt, fmt_ratio

COLORS = {SHMKIT: "#e8710a", ANCHOR: "#4a7fb5", REFERENCE: "#a0a0a0"}
HATCHES = ["", "//", ".."]


def plot(results: list[ScenarioResult], path: str, doc: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in results if r.rows]
    if not results:
        raise ValueError("nothing to plot")
    ncols = 2 if len(results) > 1 else 1
    nrows = math.ceil(len(results) / ncols)
    heights = []
    for i in range(nrows):
        row = results[i * ncols:(i + 1) * ncols]
        heights.append(max(_panel_height(r) for r in row))
    fig = plt.figure(figsize=(8.5 * ncols, sum(heights) + 1.2), dpi=80)
    gs = fig.add_gridspec(nrows, ncols, height_ratios=heights)
    for k, res in enumerate(results):
        ax = fig.add_subplot(gs[k // ncols, k % ncols])
        _panel(ax, res)
    title = "shmkit bench: shmkit (orange) beside the anchors (blue) and yardsticks (grey)"
    if doc:
        m = doc.get("machine", {})
        title += (f"\n{m.get('cpu_model', '?')}, {m.get('cores_usable', '?')} cores, "
                  f"{m.get('kernel', '?')}, Python {m.get('python', '?')}; "
                  f"median of {doc.get('options', {}).get('reps', '?')} runs, whiskers min–max; "
                  f"{doc.get('started_at', '')}")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.9 / (sum(heights) + 1.2)))
    _save_small(fig, path)
    plt.close(fig)


def _save_small(fig, path: str) -> None:
    """A PNG with a 64-colour palette: a third of the size, the same to the eye (the
    chart lives in the repository)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    try:
        from PIL import Image

        buf.seek(0)
        Image.open(buf).convert("RGB").quantize(colors=64).save(path, optimize=True)
    except ImportError:
        with open(path, "wb") as f:
            f.write(buf.getvalue())


def _panel_height(res: ScenarioResult) -> float:
    return 0.9 + 0.32 * len(res.rows) * max(1, min(len(res.scenario.metrics), 3)) ** 0.6


def _panel(ax, res: ScenarioResult) -> None:
    sc = res.scenario
    metrics = sc.metrics[:3]
    rows = list(reversed(res.rows))         # first row at the top
    nm = len(metrics)
    bar_h = 0.8 / nm
    values = [r.figures[m.name].median for r in rows if r.status == OK
              for m in metrics if m.name in r.figures]
    positive = [v for v in values if v > 0]
    log = bool(positive) and max(positive) / min(positive) > 30
    # the axis follows the medians; a wild max (a run hit by a neighbour's load) gets a
    # clipped whisker rather than squashing every bar
    top = max(values) if values else 1.0
    xmax = top * 30 if log else top * 1.5
    label_x_max = xmax / 6 if log else xmax * 0.8
    for y, r in enumerate(rows):
        if r.status != OK:
            ax.text(0.01, y, f"{r.status}", transform=ax.get_yaxis_transform(), va="center",
                    fontsize=8, color="#b00020" if r.status == "error" else "#666666", style="italic")
            continue
        for j, m in enumerate(metrics):
            f = r.figures.get(m.name)
            if f is None:
                continue
            yy = y + ((nm - 1) / 2 - j) * bar_h   # first metric on top
            ax.barh(yy, f.median, height=bar_h * 0.9, color=COLORS[r.kind],
                    hatch=HATCHES[j % len(HATCHES)], edgecolor="white" if j == 0 else "#333333",
                    linewidth=0.0 if j == 0 else 0.3,
                    xerr=[[max(f.median - f.min, 0)], [max(f.max - f.median, 0)]],
                    error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#222222"})
            label = fmt(f.median, m.unit)
            if r.kind != ANCHOR and m.name in r.ratios:
                label += f"  ({fmt_ratio(r.ratios[m.name])})"
            ax.text(min(f.max, max(label_x_max, f.median)), yy, "  " + label, va="center", fontsize=7.5,
                    fontweight="bold" if r.kind == SHMKIT else "normal",
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 0.3})
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r.label for r in rows], fontsize=8)
    for tick, r in zip(ax.get_yticklabels(), rows):
        if r.kind == SHMKIT:
            tick.set_fontweight("bold")
    unit = metrics[0].unit
    better = "higher is better" if metrics[0].higher_is_better else "lower is better"
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(positive) / 3, xmax)
    else:
        ax.set_xlim(0, xmax)
    ax.set_xlabel(f"{unit} ({better}{', log scale' if log else ''})", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt(v, unit) if v > 0 else "0"))
    ax.set_title(f"{sc.name}: {sc.title}", fontsize=9, loc="left")
    ax.grid(axis="x", alpha=0.3, which="both" if log else "major")
    ax.set_ylim(-0.6, len(rows) - 0.4)
    if nm > 1:
        from matplotlib.patches import Patch

        handles = [Patch(facecolor="#bbbbbb", hatch=HATCHES[j % len(HATCHES)], edgecolor="#333333",
                         label=m.name) for j, m in enumerate(metrics)]
        ax.legend(handles=handles, fontsize=7, loc="lower right", framealpha=0.8)
