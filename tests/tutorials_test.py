"""Every tutorial notebook is the builder's, stores a full run, and runs top to bottom in quick
mode with every figure drawn with data in it."""

import base64
import glob
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from tests import figure_probe
from tests.helpers import CENSUS_FILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIALS = os.path.join(ROOT, "tutorials")
NOTEBOOKS = sorted(glob.glob(os.path.join(TUTORIALS, "*.ipynb")))
WITHOUT_FIGURES = {"05_serving.ipynb"}


def load_builder():
    spec = importlib.util.spec_from_file_location(
        "build_notebooks", os.path.join(TUTORIALS, "build_notebooks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_eight_tutorials_and_they_are_generated_from_the_builder(tmp_path):
    assert [os.path.basename(p) for p in NOTEBOOKS] == [
        "01_quickstart.ipynb", "02_choosing_a_balancer.ipynb", "03_sample_spaces_funnel.ipynb",
        "04_movielens_tfds.ipynb", "05_serving.ipynb", "06_own_ranker.ipynb",
        "07_objectives.ipynb", "08_architectures.ipynb"]
    # The committed notebooks are what the builder writes from them: its sources (no hand edits
    # that drift), the stored outputs of the cells whose source did not change, and a first cell
    # that names the stored run.
    copy = tmp_path / "tutorials"
    copy.mkdir()
    shutil.copy(os.path.join(TUTORIALS, "build_notebooks.py"), copy)
    for path in NOTEBOOKS:
        shutil.copy(path, copy)
    subprocess.run([sys.executable, str(copy / "build_notebooks.py")], check=True)
    for path in NOTEBOOKS:
        assert (copy / os.path.basename(path)).read_text() == open(path).read(), path


def test_the_builder_keeps_outputs_of_unchanged_cells_only(tmp_path, monkeypatch):
    builder = load_builder()
    monkeypatch.setattr(builder, "HERE", str(tmp_path))
    cells = [("code", "x = 1"), ("md", "text"), ("code", "x")]
    builder.notebook("t.ipynb", "T", "intro", cells)
    book = nbformat.read(tmp_path / "t.ipynb", as_version=4)
    assert "No outputs are stored" in book.cells[0].source
    run = {"mode": "full", "machine": "a test machine", "date": "2026-12-01", "keras_mtl": "0.1.0",
           "tensorflow": "2.21.0", "keras": "3.15.1", "python": "3.12.0", "minutes": 1.5}
    book.metadata["keras_mtl"] = {"stored_run": run}
    for count, cell in enumerate([c for c in book.cells if c.cell_type == "code"], start=1):
        cell.execution_count = count
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"out {count}\n")]
    nbformat.write(book, tmp_path / "t.ipynb")
    builder.notebook("t.ipynb", "T", "intro", cells)  # unchanged: every output stays
    kept = nbformat.read(tmp_path / "t.ipynb", as_version=4)
    assert kept.cells[1:] == book.cells[1:] and kept.metadata["keras_mtl"]["stored_run"] == run
    assert "Outputs stored from a full run** on a test machine, 2026-12-01" in kept.cells[0].source
    assert "changed since" not in kept.cells[0].source
    builder.notebook("t.ipynb", "T", "intro", [("code", "x = 2"), *cells[1:]])
    edited = nbformat.read(tmp_path / "t.ipynb", as_version=4)
    last = [c for c in edited.cells if c.cell_type == "code"][-2:]
    assert last[0].outputs == [] and last[0].execution_count is None
    assert last[1].outputs[0].text == "out 4\n"
    assert "1 code cell changed since that run" in edited.cells[0].source


@pytest.mark.parametrize("inside_clone", [True, False], ids=["clone", "elsewhere"])
def test_the_install_cell_installs_the_clone_or_the_repository(inside_clone, tmp_path,
                                                               monkeypatch):
    builder = load_builder()
    calls = []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(subprocess, "check_call", lambda command: calls.append(command))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(TUTORIALS if inside_clone else tmp_path)
    exec(builder.INSTALL, {})
    (command,) = calls
    assert command[:5] == [sys.executable, "-m", "pip", "install", "-q"]
    if inside_clone:
        assert command[5:] == ["-e", f"{ROOT}[serving,tutorials]"]
        assert sys.path[0] == ROOT
    else:
        url = f"git+https://github.com/{builder.REPOSITORY}"
        assert command[5:] == [f"keras-mtl[serving,tutorials] @ {url}"]
    # One place names the repository: the builder's REPOSITORY (badges and install cell).
    assert builder.REPOSITORY in builder.badge("x.ipynb")
    source = open(os.path.join(TUTORIALS, "build_notebooks.py")).read()
    assert source.count(builder.REPOSITORY) == 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_stores_the_outputs_of_a_full_run(path):
    book = nbformat.read(path, as_version=4)
    run = book.metadata.get("keras_mtl", {}).get("stored_run")
    assert run is not None and run["mode"] == "full", "run python tutorials/run_notebooks.py"
    assert f"Outputs stored from a full run** on {run['machine']}, {run['date']}, keras_mtl " \
           f"{run['keras_mtl']}" in book.cells[0].source
    code = [c for c in book.cells if c.cell_type == "code"]
    # One top-to-bottom run, every code cell of it (none edited since).
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    texts = [o.get("text", "") for o in outputs] + [
        v for o in outputs for m, v in o.get("data", {}).items() if m.startswith("text/")]
    assert not [t for t in texts if re.search(r"(/work/|/tmp/|/home/)", t)]
    images = [base64.b64decode(o.data["image/png"]) for o in outputs
              if "image/png" in o.get("data", {})]
    assert (len(images) > 0) == (os.path.basename(path) not in WITHOUT_FIGURES)
    assert all(len(image) < 120_000 for image in images)


def with_probes(book):
    """The notebook with a probe cell after every code cell (see `tests/figure_probe.py`)."""
    load = (f"import importlib.util as _util\n"
            f"_spec = _util.spec_from_file_location('_figure_probe', {figure_probe.__file__!r})\n"
            f"_probe = _util.module_from_spec(_spec)\n_spec.loader.exec_module(_probe)")
    cells = [nbformat.v4.new_code_cell(load)]
    for index, cell in enumerate(book.cells):
        cells.append(cell)
        if cell.cell_type == "code":
            cells.append(nbformat.v4.new_code_cell(f"print({index}); _probe.report()"))
    book.cells = cells
    return book


def probed_figures(book) -> list[tuple[int, dict]]:
    """(index of the cell that drew it, description) for every figure the probes saw."""
    figures = []
    for cell in book.cells:
        if cell.cell_type != "code" or "_probe.report()" not in cell.source:
            continue
        lines = "".join(o.get("text", "") for o in cell.outputs).splitlines()
        index = int(lines[0])
        figures += [(index, json.loads(line[len(figure_probe.MARKER):])) for line in lines[1:]
                    if line.startswith(figure_probe.MARKER)]
    return figures


def test_the_figure_check_fails_on_an_empty_axes_a_single_dot_and_a_missing_label():
    from matplotlib.figure import Figure

    bad = Figure()
    empty, dot = bad.subplots(1, 2)
    dot.plot([1.0], [0.5], marker="o")
    dot.plot([1.0, 2.0], [float("nan"), float("nan")])
    found = figure_probe.problems(figure_probe.describe(bad), quick=True)
    assert any("axes 0" in p and "empty" in p for p in found), found
    assert any("line of 1 finite point" in p for p in found), found
    assert any("line of 0 finite points" in p for p in found), found
    assert any("smoke-run label" in p for p in found), found

    good = Figure()
    curve, bars, image = good.subplots(1, 3)
    curve.plot([1, 2, 3], [0.3, 0.2, 0.1], marker="o")
    bars.bar(["a", "b"], [1.0, 2.0])
    good.colorbar(image.imshow([[0.0, 1.0], [1.0, 0.0]]), ax=image)
    good.suptitle(figure_probe.SMOKE + ": not the tutorial's result")
    assert figure_probe.problems(figure_probe.describe(good), quick=True) == []
    scatter = Figure()
    scatter.subplots().scatter([1.0], [2.0])
    assert figure_probe.problems(figure_probe.describe(scatter)) == [
        "axes 0 ('') has a scatter of 1 point"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_in_quick_mode_and_every_figure_has_data(path, tmp_path, monkeypatch):
    if "quickstart" in path and not os.path.exists(CENSUS_FILE):
        pytest.skip("the quickstart reads the shared census file, absent here (no internet)")
    monkeypatch.setenv("KERAS_MTL_QUICK", "1")
    monkeypatch.setenv("KERAS_MTL_DATA", os.path.dirname(CENSUS_FILE))
    monkeypatch.setenv("MPLBACKEND", "Agg")  # figures stay open until the probe closes them
    book = nbformat.read(path, as_version=4)
    first = book.cells[0].source
    assert "colab-badge.svg" in first and "KERAS_MTL_QUICK" in first
    book = with_probes(book)
    NotebookClient(book, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    figures = probed_figures(book)
    assert (len(figures) > 0) == (os.path.basename(path) not in WITHOUT_FIGURES)
    found = {f"cell {index}: {problem}" for index, figure in figures
             for problem in figure_probe.problems(figure, quick=True)}
    assert not found, sorted(found)
