"""PNG plots of publish -> visible latency, shared by bench/serve.py and bench/index.py.

A p50/p95 table cannot tell a queue that keeps up from one that fell behind and caught up: both
can give the same percentiles. The plots show the shape: latency against the moment of each
publish (flat when healthy; a ramp and a recovery when a backlog forms and drains) beside the
distribution (a steep ECDF when healthy; a long tail when backlogged).

matplotlib is imported inside the functions, only when a script is asked for plots, so the
benchmarks still run without it; the Agg backend is chosen first, so no display is needed.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Where the README's images live; ``--plots`` with no directory writes here.
DEFAULT_DIR = Path(__file__).resolve().parent / "plots"
HEALTHY = "tab:green"
BACKLOGGED = "tab:red"
# A log axis needs positive values; a latency read as 0 (seen on the first poll) is drawn here.
FLOOR_MS = 0.1


@dataclass
class Series:
    """One phase's publishes: when each was published (seconds since the phase began) and its
    latency (seconds), in the same order."""

    label: str
    published: Sequence[float]
    latency: Sequence[float]
    color: str | None = None


@dataclass
class Row:
    """One row of the figure (over time | distribution) for one kind of latency."""

    what: str
    series: Sequence[Series]


def add_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--plots [DIR]``, the same in every script: no flag, no plots (and no matplotlib)."""
    parser.add_argument(
        "--plots",
        type=Path,
        nargs="?",
        const=DEFAULT_DIR,
        metavar="DIR",
        help=f"{what} (DIR defaults to bench/plots)",
    )


def provenance(root: Path) -> str:
    """Commit (``-dirty`` with uncommitted changes), UTC date and load average, for a title: a
    plot read later must say what ran where, and how busy the shared machine was."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=7"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown commit"
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    return f"commit {commit}, {now}, {os.cpu_count()} CPUs, load average {load:.1f}"


def write_latency_png(path: Path, title: str, rows: Sequence[Row]) -> Path:
    """Two panels per row: latency against publish time with p50 (dashed) and p95 (dotted)
    lines, and the ECDF of the same latencies. Returns the path written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(
        len(rows),
        2,
        figsize=(12, max(6.0, 3.0 * len(rows))),
        dpi=100,
        squeeze=False,
        layout="constrained",
    )
    fig.suptitle(title, fontsize=11)
    for (over_time, distribution), row in zip(axes, rows, strict=True):
        values = [np.asarray(s.latency, dtype=float) * 1000 for s in row.series]
        low = min((float(v.min()) for v in values if v.size), default=1.0)
        high = max((float(v.max()) for v in values if v.size), default=1.0)
        log = high / max(low, FLOOR_MS) > 20
        for series, ms, color in zip(row.series, values, _colors(row.series), strict=True):
            if not ms.size:
                continue
            p50, p95 = np.percentile(ms, [50, 95])
            shown = np.maximum(ms, FLOOR_MS) if log else ms
            label = f"{series.label}: n={ms.size}, p50 {p50:.0f} ms, p95 {p95:.0f} ms"
            over_time.scatter(series.published, shown, s=9, alpha=0.7, color=color, label=label)
            ordered = np.sort(shown)
            fraction = np.arange(1, ordered.size + 1) / ordered.size
            distribution.step(ordered, fraction, where="post", color=color, label=series.label)
            for style, value in (("--", p50), (":", p95)):
                over_time.axhline(value, color=color, linestyle=style, linewidth=1)
                distribution.axvline(value, color=color, linestyle=style, linewidth=1)
        over_time.set_xlabel("seconds since the phase began (each point at its publish)")
        over_time.set_ylabel(f"{row.what} (ms)")
        over_time.legend(fontsize=8, loc="best", title="dashed p50, dotted p95")
        distribution.set_xlabel(f"{row.what} (ms)")
        distribution.set_ylabel("fraction of publishes")
        distribution.set_ylim(0, 1.02)
        distribution.legend(fontsize=8, loc="lower right")
        if log:
            over_time.set_yscale("log")
            distribution.set_xscale("log")
        for ax in (over_time, distribution):
            ax.grid(True, which="major", alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_small(buffer, path)
    return path


def _save_small(png: io.BytesIO, path: Path) -> None:
    """A palette of 64 colours: the README's images are committed, and a plot of a few colours
    needs no more (about a third of the RGBA file's size)."""
    from PIL import Image

    png.seek(0)
    with Image.open(png) as image:
        image.convert("RGB").quantize(colors=64).save(path, format="png", optimize=True)


def _colors(series: Sequence[Series]) -> list[str]:
    cycle = ["tab:blue", "tab:orange", "tab:purple", "tab:brown"]
    return [s.color or cycle[i % len(cycle)] for i, s in enumerate(series)]
