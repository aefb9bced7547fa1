"""What each matplotlib figure holds, and whether that is a figure with data in it.

`tests/tutorials_test.py` runs a notebook with a probe cell after every code cell (the `Agg`
backend keeps figures open until the probe closes them, so each figure is told apart by the cell
that drew it): `report()` renders every open figure, prints one JSON line describing it, and
closes it. `problems()` reads those descriptions: an axes with nothing drawn on it, a line of
fewer than two finite points (a curve that is a single dot, or all NaN), a scatter of fewer than
two, and — in a quick run — a figure without the smoke-run label.

Kept free of test-framework imports: the notebook's kernel loads this file by path.
"""

from __future__ import annotations

import io
import json
import sys

import numpy as np

MARKER = "FIGURE-PROBE "
SMOKE = "smoke run (KERAS_MTL_QUICK=1)"


def _finite_rows(values) -> int:
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return 0
    values = values.reshape(len(values), -1)
    return int(np.isfinite(values).all(axis=1).sum())


def _collection(collection) -> dict:
    kind = type(collection).__name__
    if kind == "PathCollection":  # scatter: one marker path, a point per offset
        count = _finite_rows(collection.get_offsets())
    elif kind == "LineCollection":
        count = sum(_finite_rows(segment) >= 2 for segment in collection.get_segments())
    elif kind == "QuadMesh":
        count = int(np.size(collection.get_array()))
    else:
        count = len(collection.get_paths())
    return {"kind": kind, "points": count}


def _patch_has_data(patch) -> bool:
    if type(patch).__name__ == "Rectangle":
        width, height = patch.get_width(), patch.get_height()
        return bool(np.isfinite([width, height]).all() and width != 0 and height != 0)
    vertices = patch.get_path().vertices
    return bool(len(vertices) and np.isfinite(vertices).all())


def describe(fig) -> dict:
    """Renders `fig` (so a figure that cannot be drawn fails here) and describes its axes."""
    fig.savefig(io.BytesIO(), format="png", dpi=20)
    axes = []
    for ax in fig.axes:
        axes.append({
            "title": ax.get_title(),
            "colorbar": getattr(ax, "_colorbar", None) is not None,
            "lines": [_finite_rows(line.get_xydata()) for line in ax.get_lines()],
            "collections": [_collection(c) for c in ax.collections],
            "images": [int(np.size(image.get_array())) for image in ax.get_images()],
            "patches": sum(_patch_has_data(p) for p in ax.patches),
        })
    return {"suptitle": fig.get_suptitle(), "axes": axes}


def report(close: bool = True) -> None:
    """Prints one line per open pyplot figure (`MARKER` + JSON), then closes them."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    for number in pyplot.get_fignums():
        print(MARKER + json.dumps(describe(pyplot.figure(number))))
    if close:
        pyplot.close("all")


def problems(figure: dict, quick: bool = False) -> list[str]:
    """What is wrong with a described figure (empty: nothing)."""
    found = []
    if not figure["axes"]:
        found.append("a figure without axes")
    for index, ax in enumerate(figure["axes"]):
        name = f"axes {index} ({ax['title']!r})"
        drawn = (any(n > 0 for n in ax["lines"]) or any(c["points"] > 0 for c in ax["collections"])
                 or any(n > 0 for n in ax["images"]) or ax["patches"] > 0)
        if not drawn:
            found.append(f"{name} is empty")
        found += [f"{name} has a line of {n} finite point{'s' * (n != 1)}"
                  for n in ax["lines"] if n < 2]
        found += [f"{name} has a scatter of {c['points']} point{'s' * (c['points'] != 1)}"
                  for c in ax["collections"] if c["kind"] == "PathCollection" and c["points"] < 2]
    titles = [figure["suptitle"], *(ax["title"] for ax in figure["axes"])]
    if quick and not any(SMOKE in title for title in titles):
        found.append("a quick-mode figure without the smoke-run label")
    return found
