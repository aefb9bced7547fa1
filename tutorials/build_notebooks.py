"""Writes the tutorials' `.ipynb` files from the cells below (run: `python tutorials/build_notebooks.py`).

The notebooks are generated so that every one shares the same first cells (Colab badge, install,
quick-mode switch, plotting helper) and stays reviewable as Python. `tests/tutorials_test.py`
executes each one in quick mode; `tutorials/README.md` explains the switch.

The committed notebooks carry the outputs of a full run (`run_notebooks.py` stores them, with a
record of the run in `metadata["keras_mtl"]["stored_run"]`). Rebuilding keeps a code cell's stored
outputs as long as its source is unchanged, and the first cell names the run — and how many code
cells changed since, which then show no output until the next full run.
"""

from __future__ import annotations

import difflib
import os

import nbformat

# Where the repository is published: the one place to change it. The Colab badges open the
# notebooks there, and the install cell installs from it when the notebook runs outside a clone.
REPOSITORY = "keras-mtl/keras-mtl"
HERE = os.path.dirname(os.path.abspath(__file__))


def badge(filename: str) -> str:
    url = f"https://colab.research.google.com/github/{REPOSITORY}/blob/main/tutorials/{filename}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


INSTALL = f'''# Installs keras_mtl where it is missing: from this clone when the notebook runs inside one
# (editable), else from the repository (on Colab). In an environment that has it, nothing happens.
import importlib.util
import pathlib
import subprocess
import sys

REPOSITORY_URL = "https://github.com/{REPOSITORY}"

if importlib.util.find_spec("keras_mtl") is None:
    here = pathlib.Path.cwd().resolve()
    clone = next((folder for folder in (here, *here.parents)
                  if (folder / "pyproject.toml").is_file()
                  and (folder / "keras_mtl" / "__init__.py").is_file()), None)
    if clone is not None:
        source = ["-e", f"{{clone}}[serving,tutorials]"]
    else:
        source = [f"keras-mtl[serving,tutorials] @ git+{{REPOSITORY_URL}}"]
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *source])
    if clone is not None:  # an editable install reaches sys.path at the next start only
        sys.path.insert(0, str(clone))
    importlib.invalidate_caches()'''

SMOKE_LABEL = "smoke run (KERAS_MTL_QUICK=1): not the tutorial's result"


def setup(plots: bool = True) -> str:
    plotting = "import matplotlib.pyplot as plt\n" if plots else ""
    helper = f'''
plt.rcParams["figure.dpi"] = 80  # modest images in the stored notebooks
SMOKE_LABEL = "{SMOKE_LABEL}"


def finish(fig, caveat=None):
    """Lays a figure out. A quick run labels it a smoke run: its numbers are not the tutorial's."""
    labels = ([SMOKE_LABEL] if QUICK else []) + ([caveat] if caveat else [])
    if labels:
        fig.suptitle("; ".join(labels), color="firebrick", fontsize=9)
    fig.tight_layout()''' if plots else ""
    return f"""import os

# keras_mtl before keras: it imports TensorFlow without TensorFlow's C++ start-up log lines.
import keras_mtl as km  # isort: skip

import keras
{plotting}import numpy as np
import pandas as pd

# KERAS_MTL_QUICK=1 (what CI sets) runs every cell on a small sample for a few steps, so the whole
# notebook takes about a minute on a laptop CPU; leave it unset for the real run.
QUICK = os.environ.get("KERAS_MTL_QUICK") == "1"
# A folder holding already-downloaded data files (CI has no internet); None downloads them.
DATA_PATH = os.environ.get("KERAS_MTL_DATA")
keras.utils.set_random_seed(0){helper}"""


def stored_run_note(filename: str, run: dict | None, changed: int) -> str:
    """The first cell's line about the stored outputs."""
    if run is None:
        return ("No outputs are stored in this copy: `python tutorials/run_notebooks.py "
                f"{filename}` runs it in full and stores them.")
    note = (f"**Outputs stored from a full run** on {run['machine']}, {run['date']}, keras_mtl "
            f"{run['keras_mtl']} (TensorFlow {run['tensorflow']}, Keras {run['keras']}, Python "
            f"{run['python']}; {run['minutes']:g} min).")
    if run.get("note"):
        note += f" {run['note']}"
    if changed:
        note += (f" {changed} code cell{'s' if changed > 1 else ''} changed since that run and "
                 f"show{'' if changed > 1 else 's'} no output until `python "
                 f"tutorials/run_notebooks.py {filename}` runs it again.")
    return note


def _key(cell) -> tuple[str, str]:
    return cell.cell_type, cell.source


def keep_outputs(cells: list, old) -> tuple[dict | None, int]:
    """Copies the stored outputs of `old` (the committed notebook, or None) onto the `cells` whose
    type and source are unchanged; returns the stored run and how many code cells have none."""
    run = old.metadata.get("keras_mtl", {}).get("stored_run") if old is not None else None
    code = [cell for cell in cells if cell.cell_type == "code"]
    if run is None:
        return None, len(code)
    matcher = difflib.SequenceMatcher(a=[_key(c) for c in old.cells], b=[_key(c) for c in cells],
                                      autojunk=False)
    for block in matcher.get_matching_blocks():
        for offset in range(block.size):
            before, after = old.cells[block.a + offset], cells[block.b + offset]
            if after.cell_type == "code" and before.get("execution_count") is not None:
                after.outputs = before.outputs
                after.execution_count = before.execution_count
    changed = sum(cell.execution_count is None for cell in code)
    return (run, changed) if changed < len(code) else (None, len(code))


def notebook(filename: str, title: str, intro: str, cells: list[tuple[str, str]],
             plots: bool = True) -> None:
    path = os.path.join(HERE, filename)
    old = nbformat.read(path, as_version=4) if os.path.exists(path) else None
    book = nbformat.v4.new_notebook()
    book.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    body = [nbformat.v4.new_code_cell(INSTALL), nbformat.v4.new_code_cell(setup(plots))]
    for kind, source in cells:
        source = source.strip("\n")
        make = nbformat.v4.new_markdown_cell if kind == "md" else nbformat.v4.new_code_cell
        body.append(make(source))
    run, changed = keep_outputs(body, old)
    if run is not None:
        book.metadata["keras_mtl"] = {"stored_run": run}
    book.cells = [nbformat.v4.new_markdown_cell(
        f"# {title}\n\n{badge(filename)}\n\n{intro}\n\n"
        f"> {stored_run_note(filename, run, changed)}\n\n"
        "Set `KERAS_MTL_QUICK=1` in the environment for a one-minute smoke run (small sample, "
        "a few steps; its figures say so) — CI runs every tutorial that way."), *body]
    for cell in book.cells:  # deterministic files: no random cell ids
        cell.pop("id", None)
    book.nbformat_minor = 4
    nbformat.write(book, path)


QUICKSTART = [
    ("md", """
## The data

UCI's Census-Income (KDD) file, with the two tasks of the MMoE paper (Ma et al., KDD 2018):
**income** above 50K, and **never married**. `load_census_income` downloads the file once (checksum
verified, cached by Keras) and returns train/validation/test splits with a feature spec whose
vocabularies and normalisation statistics come from the training split only."""),
    ("code", """
data = km.datasets.load_census_income(path=DATA_PATH)
if QUICK:
    data = data.head(4_000)
# Quick mode: three short epochs, so the loss curves below are curves (of a smoke run).
EPOCHS = 3 if QUICK else 5
BATCH_SIZE = 256 if QUICK else 512
print(data.description)
print(f"{len(data.train):,} training rows, {len(data.features)} features, tasks:",
      [t.name for t in data.tasks])
data.train[[t.name for t in data.tasks]].mean().rename("positive rate").to_frame()"""),
    ("md", """
## MMoE and PLE, same everything else

Both backbones are Keras layers; the model adds one tower per task. `fit` trains with equal
weighting (`balancer="ew"`) unless told otherwise."""),
    ("code", """
def train(backbone):
    model = km.MultiTaskModel(features=data.features, tasks=data.tasks, backbone=backbone,
                              tower_units=[8])
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(data.as_tf_dataset("train", batch_size=BATCH_SIZE), epochs=EPOCHS,
                        validation_data=data.as_tf_dataset("validation", batch_size=4096),
                        verbose=0)
    return model, history


backbones = {
    "MMoE": km.layers.MMoE(num_experts=8, expert_units=[16]),
    "PLE": km.layers.PLE(num_levels=2, shared_experts=4, task_experts=2, expert_units=[16]),
}
models, histories = {}, {}
for name, backbone in backbones.items():
    models[name], histories[name] = train(backbone)"""),
    ("code", """
results = {}
for name, model in models.items():
    logs = model.evaluate(data.as_tf_dataset("test", batch_size=4096), return_dict=True, verbose=0)
    results[name] = {f"{t.name} AUC": logs[f"{t.name}_auc"] for t in data.tasks}
pd.DataFrame(results).T.round(4)"""),
    ("md", """
With the full data and 5 epochs both land where the README's benchmark puts them (income /
never-married test AUC over 5 seeds, at its own budget: MMoE 0.9430 / 0.9944, PLE 0.9434 /
0.9944) — one seed cannot separate the two. The loss curves show how the two tasks train side
by side:"""),
    ("code", """
fig, axes = plt.subplots(1, len(data.tasks), figsize=(11, 3.5))
epochs = range(1, EPOCHS + 1)
for ax, task in zip(axes, data.tasks, strict=True):
    for name, history in histories.items():
        ax.plot(epochs, history.history[f"{task.name}_loss"], marker="o", label=f"{name} train")
        ax.plot(epochs, history.history[f"val_{task.name}_loss"], marker="o", linestyle="--",
                label=f"{name} validation")
    ax.set_title(task.name)
    ax.set_xlabel("epoch")
    ax.set_xticks(list(epochs))
    ax.set_ylabel("log loss")
    ax.legend()
finish(fig)"""),
    ("md", """
## What the gates learned

Each task's gate mixes the experts per example. Averaged over the test rows, MMoE's gates show
how much the two tasks share:"""),
    ("code", """
x_test, _ = next(iter(data.as_tf_dataset("test", batch_size=2048)))
gates = models["MMoE"].gate_weights(x_test)
fig, ax = plt.subplots(figsize=(7, 3))
width = 0.8 / len(gates)
for i, (name, weights) in enumerate(gates.items()):
    mean = np.asarray(weights).reshape(-1, np.shape(weights)[-1]).mean(axis=0)
    ax.bar(np.arange(len(mean)) + i * width, mean, width=width, label=name)
ax.set_xlabel("expert")
ax.set_ylabel("mean gate weight")
ax.legend()
finish(fig)"""),
    ("md", """
## Save, reload, predict

A `.keras` file holds the weights, the optimizer and the balancer state; predictions come back
as one array per task."""),
    ("code", """
os.makedirs("saved_models", exist_ok=True)
models["PLE"].save("saved_models/quickstart_ple.keras")
restored = keras.models.load_model("saved_models/quickstart_ple.keras")
predictions = restored.predict(x_test, verbose=0)
np.testing.assert_allclose(predictions["income"], models["PLE"].predict(x_test, verbose=0)["income"],
                           rtol=1e-5, atol=1e-6)
pd.DataFrame({name: np.asarray(p)[:5] for name, p in predictions.items()})"""),
    ("md", """
Next: `02_choosing_a_balancer.ipynb` (when tasks fight), `03_sample_spaces_funnel.ipynb`
(conditional tasks), `05_serving.ipynb` (TF Serving)."""),
]

BALANCERS = [
    ("md", """
## Tasks that pull in different directions

A balancer decides how the tasks' gradients combine into one update. To see why that matters we
build three regression tasks from the MMoE paper's generator and make them disagree in the two
ways real ranking tasks do: their losses live on **different scales** (task 3's labels are 10×
larger, like watch time next to a click), and their gradients point in **different directions**
(low task correlation)."""),
    ("code", """
data = km.datasets.make_synthetic(num_examples=4_000 if QUICK else 25_000, num_tasks=3,
                                  correlation=0.1, dim=32, seed=0)
for frame in (data.train, data.validation, data.test):
    frame["y3"] = 10 * frame["y3"]
# Quick mode: three short epochs, so the weights plotted per epoch below form curves.
EPOCHS = 3 if QUICK else 5
BATCH_SIZE = 256 if QUICK else 512


def build(balancer="ew"):
    model = km.MultiTaskModel(features=data.features, tasks=data.tasks,
                              backbone=km.layers.MMoE(num_experts=4, expert_units=[32]),
                              tower_units=[16], balancer=balancer)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


probe_x, probe_y = next(iter(data.as_tf_dataset("validation", batch_size=1024)))"""),
    ("md", """
## Gradient conflicts, made visible

`km.diagnostics.gradient_cosines` gives the cosine between every pair of task gradients w.r.t.
the shared parameters — what a balancer sees. Negative entries are conflicts; the norms show the
scale imbalance."""),
    ("code", """
def show_conflicts(model, title):
    cosines = km.diagnostics.gradient_cosines(model, probe_x, probe_y)
    norms = np.linalg.norm(km.diagnostics.task_gradients(model, probe_x, probe_y).numpy(), axis=1)
    names = [t.name for t in data.tasks]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    image = left.imshow(cosines, vmin=-1, vmax=1, cmap="RdBu")
    left.set_xticks(range(len(names)), names)
    left.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            left.text(j, i, f"{cosines[i, j]:.2f}", ha="center", va="center")
    fig.colorbar(image, ax=left)
    left.set_title(f"gradient cosines, {title}")
    right.bar(names, norms)
    right.set_yscale("log")
    right.set_title("gradient norms")
    finish(fig)


show_conflicts(build(), "at initialisation")"""),
    ("md", """
Task 3's gradient is an order of magnitude longer: with equal weighting it dominates the shared
layers. Now train with several balancers — loss-level ones (`uw`, `dwa`, `famo`), magnitude
ones (`gradnorm`) and direction ones (`mgda`, `pcgrad`, `cagrad`, `nash_mtl`, `upgrad`) — on the
same data and seed."""),
    ("code", """
candidates = (["ew", "uw", "mgda", "nash_mtl"] if QUICK else
              ["ew", "uw", "dwa", "famo", "gradnorm", "mgda", "pcgrad", "cagrad", "nash_mtl",
               "upgrad"])
histories, scores = {}, {}
for name in candidates:
    keras.utils.set_random_seed(0)
    model = build(name)
    histories[name] = model.fit(data.as_tf_dataset("train", batch_size=BATCH_SIZE),
                                epochs=EPOCHS, verbose=0)
    logs = model.evaluate(data.as_tf_dataset("test", batch_size=4096), return_dict=True, verbose=0)
    scores[name] = {f"{t.name} RMSE": logs[f"{t.name}_rmse"] for t in data.tasks}
    if name == "ew":
        show_conflicts(model, "after training (ew)")

table = pd.DataFrame(scores).T
# Δm: the mean relative change of the per-task errors against ew (negative is better), the usual
# single-number summary in the multi-task literature.
table["Δm vs ew (%)"] = 100 * ((table - table.loc["ew"]) / table.loc["ew"]).mean(axis=1)
table.round(4)"""),
    ("md", """
Every training log carries each task's weight as the balancer set it (`<task>_weight`, the mean
over the epoch), so how a method reacts to the imbalance is one plot away:"""),
    ("code", """
fig, axes = plt.subplots(1, len(data.tasks), figsize=(12, 3.2), sharey=True)
for ax, task in zip(axes, data.tasks, strict=True):
    for name, history in histories.items():
        ax.plot(range(1, EPOCHS + 1), history.history[f"{task.name}_weight"], marker="o",
                label=name)
    ax.set_title(f"weight of {task.name}")
    ax.set_xlabel("epoch")
    ax.set_xticks(range(1, EPOCHS + 1))
    ax.set_yscale("log")
axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
finish(fig)"""),
    ("md", """
How to read this (full run): FAMO down-weights task 3 at once because its loss is large;
uncertainty weighting learns its log-variances with Keras' default learning rate (1e-3) and has
barely moved in so short a run — pass `learning_rate=` to let it react faster. GradNorm lowers task
3 gently. The direction methods (MGDA, Nash-MTL, CAGrad) give task 3 the smallest weight because
its gradient is the longest, and trade its error for the other two tasks' — Δm averages relative
errors, so read it beside the per-task columns. Which trade you want depends on your tasks; this
notebook is the experiment to run on a sample of your own data. Methods that look at gradients
cost more per step: see `keras-mtl bench` in the README for the ratios, and
`km.balancers.get(name, every=10)` to recompute weights only every 10 steps."""),
]

FUNNEL = [
    ("md", """
## A conversion funnel

`make_funnel` simulates impressions → clicks → purchases like Ali-CCP (the ESMM paper's data):
a purchase can only be observed after a click, so the purchase label is **missing** (NaN) on
unclicked rows. It also records the true probabilities, so we can check models against the
truth."""),
    ("code", """
data = km.datasets.make_funnel(num_examples=20_000 if QUICK else 300_000, seed=0)
# Quick mode: small batches for a few hundred steps, enough for the heads to leave their start.
EPOCHS = 3 if QUICK else 4
BATCH_SIZE = 256 if QUICK else 1024
frame = data.train
print(f"CTR {frame.click.mean():.3f}, CVR on clicks {frame.purchase.mean():.3f}, "
      f"purchases per impression {frame.purchase.fillna(0).mean():.4f}")
frame.head()"""),
    ("md", """
## Three ways to train the purchase head

1. **naive**: treat a missing purchase as "no purchase" — the bug this package refuses to make by
   default (we fill the NaNs with 0 by hand here to show its effect);
2. **sample space** (PLE, Tang et al. 2020): the purchase loss only counts clicked rows —
   `Task("purchase", sample_space="click")`;
3. **ESMM** (Ma et al., SIGIR 2018): pCTCVR = pCTR × pCVR is trained on every impression —
   `Task("purchase", esmm_parent="click")`."""),
    ("code", """
variants = {
    "naive": ([km.Task("click"), km.Task("purchase")], True),
    "sample space": ([km.Task("click"), km.Task("purchase", sample_space="click")], False),
    "ESMM": ([km.Task("click"), km.Task("purchase", esmm_parent="click")], False),
}


def dataset(split, tasks, fill_missing, batch_size=BATCH_SIZE):
    frame = data.split(split)
    if fill_missing:
        frame = frame.assign(purchase=frame.purchase.fillna(0.0))
    return km.data.from_dataframe(frame, data.features, tasks, batch_size=batch_size,
                                  shuffle=split == "train")


test = data.test
x_test = {name: test[name].to_numpy() for name in data.features.names}
predictions = {}
for name, (tasks, fill_missing) in variants.items():
    keras.utils.set_random_seed(0)
    model = km.MultiTaskModel(features=data.features, tasks=tasks,
                              backbone=km.layers.MMoE(num_experts=4, expert_units=[32]),
                              tower_units=[16])
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    model.fit(dataset("train", tasks, fill_missing), epochs=EPOCHS, verbose=0)
    predictions[name] = model.predict(x_test, batch_size=8192, verbose=0)"""),
    ("md", """
A ranker serves pCVR (or pCTR·pCVR) on **every** impression, clicked or not. So the question is
how well each model knows the conversion probability on the whole population, including the rows
it never saw a purchase label for:"""),
    ("code", """
clicked = test.click.to_numpy() == 1
rows = {}
for name, output in predictions.items():
    cvr = np.asarray(output["purchase"])
    rows[name] = {
        "mean pCVR, clicked rows": cvr[clicked].mean(),
        "mean pCVR, unclicked rows": cvr[~clicked].mean(),
        "corr(pCVR, true CVR), all rows": np.corrcoef(cvr, test.true_purchase)[0, 1],
        "corr(pCTCVR, true CTCVR)": np.corrcoef(cvr * np.asarray(output["click"]),
                                                 test.true_ctcvr)[0, 1],
    }
rows["truth"] = {"mean pCVR, clicked rows": test.true_purchase[clicked].mean(),
                 "mean pCVR, unclicked rows": test.true_purchase[~clicked].mean()}
pd.DataFrame(rows).T.round(4)"""),
    ("md", """
What to look for (full run): the naive head learned P(click **and** purchase), so its pCVR is
several times too low even on clicked rows — ranking by it would bury every item that converts
well. The sample-space and ESMM heads match the observed CVR on clicked rows. On unclicked
impressions — rows whose conversion was never observed — both still overestimate: that is the
sample-selection bias, and no loss on observed labels removes all of it; ESMM, trained over every
impression, tracks the true CVR and CTCVR a little more closely. The calibration plot on unclicked
rows shows the gap:"""),
    ("code", """
NUM_BINS = 5 if QUICK else 10  # deciles; quintiles of the quick run's 2,000 test rows
true_cvr = test.true_purchase[~clicked].to_numpy()
bins = np.quantile(true_cvr, np.linspace(0, 1, NUM_BINS + 1))
which = np.clip(np.digitize(true_cvr, bins[1:-1]), 0, NUM_BINS - 1)
fig, ax = plt.subplots(figsize=(5, 4))
truth = np.array([true_cvr[which == b].mean() for b in range(NUM_BINS)])
for name, output in predictions.items():
    cvr = np.asarray(output["purchase"])[~clicked]
    ax.plot(truth, [cvr[which == b].mean() for b in range(NUM_BINS)], marker="o", label=name)
ax.plot(truth, truth, "k--", label="perfect")
ax.set_xlabel(f"true CVR (mean of each of {NUM_BINS} quantile bins)")
ax.set_ylabel("predicted pCVR")
ax.set_title("unclicked impressions")
ax.legend()
finish(fig)"""),
]

MOVIELENS = [
    ("md", """
## MovieLens through TensorFlow Datasets

`load_movielens("100k")` reads `movielens/100k-ratings` with `tensorflow_datasets` (downloaded
from GroupLens into `data_dir` on first use; research licence) and turns it into two tasks:
**rating** (regression on the stars) and **liked** (rating ≥ 4), with user, movie and context
features.

In quick mode — and in CI, and wherever `KERAS_MTL_MOCK_DATA=1` says there is no internet — the
data come from TFDS's own mock generator (`tfds.testing.mock_data`): MovieLens' schema, random
values (every id different, ratings uniform in [0, 1), so nobody "likes" anything). The numbers
and figures then mean nothing, and say so; the code path is the real one."""),
    ("code", """
import contextlib
import logging

import tensorflow_datasets as tfds

MOCK = QUICK or os.environ.get("KERAS_MTL_MOCK_DATA") == "1"
if MOCK:  # TFDS' mock generator warns about its own deprecated calls, once per feature
    logging.getLogger("absl").setLevel(logging.ERROR)
mock = (tfds.testing.mock_data(num_examples=3_000 if QUICK else 20_000,
                               policy=tfds.testing.MockPolicy.USE_CODE)
        if MOCK else contextlib.nullcontext())
with mock:
    data = km.datasets.load_movielens("100k", data_dir=None if MOCK else DATA_PATH)
CAVEAT = "TFDS mock data (random values): not MovieLens' result" if MOCK else None
if MOCK:
    print(f"MOCK DATA — {CAVEAT}.")
# Quick mode: three short epochs, so the weights plotted per epoch below form curves.
EPOCHS = 3 if QUICK else 5
print(data.description)
data.train.head()"""),
    ("md", """
Ranking metrics are per user: GAUC averages each user's AUC weighted by their rows (the metric
industrial rankers report). Tasks take metric objects as well as names:"""),
    ("code", """
tasks = [km.Task("rating", kind="regression"),
         km.Task("liked", metrics=["auc", km.metrics.GAUC(group_feature="user_id")])]
model = km.MultiTaskModel(features=data.features, tasks=tasks,
                          backbone=km.layers.MMoE(num_experts=4, expert_units=[32]),
                          tower_units=[16], balancer="uw")
model.compile(optimizer=keras.optimizers.Adam(1e-3))
history = model.fit(data.as_tf_dataset("train", batch_size=512), epochs=EPOCHS,
                    validation_data=data.as_tf_dataset("validation", batch_size=4096), verbose=0)
logs = model.evaluate(data.as_tf_dataset("test", batch_size=4096), return_dict=True, verbose=0)
pd.Series({k: v for k, v in logs.items() if k != "loss"}).round(4).to_frame("test")"""),
    ("code", """
x_test = {name: data.test[name].to_numpy() for name in data.features.names}
predicted = model.predict(x_test, batch_size=4096, verbose=0)
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
stars = np.rint(data.test.rating.to_numpy())  # MovieLens' stars are whole already
for star in np.unique(stars):
    left.hist(np.asarray(predicted["rating"])[stars == star], bins=30, alpha=0.5,
              label=f"{star:g}★")
left.set_xlabel("predicted rating")
left.set_title("predictions by true rating")
left.legend(fontsize=7)
epochs = range(1, EPOCHS + 1)
right.plot(epochs, history.history["rating_weight"], marker="o", label="rating")
right.plot(epochs, history.history["liked_weight"], marker="o", label="liked")
right.set_title("uncertainty weights over epochs")
right.set_xlabel("epoch")
right.set_xticks(list(epochs))
right.legend()
finish(fig, CAVEAT)"""),
]

SERVING = [
    ("md", """
## From a trained model to TF Serving

We train a small funnel model with ESMM, export it, and query the export the way TF Serving's REST
and gRPC APIs are queried. The ranking score is PLE's fused score
`score = Π_k p_k^{w_k}` (Tang et al. 2020, §5.3.1), here `pCTR^1 · pCVR^2`."""),
    ("code", """
import tempfile

data = km.datasets.make_funnel(num_examples=10_000 if QUICK else 100_000, esmm=True, seed=0)
model = km.MultiTaskModel(features=data.features, tasks=data.tasks,
                          backbone=km.layers.CGC(shared_experts=2, task_experts=1,
                                                 expert_units=[16]),
                          tower_units=[8])
model.compile(optimizer=keras.optimizers.Adam(2e-3))
model.fit(data.as_tf_dataset("train", batch_size=1024), epochs=1 if QUICK else 3, verbose=0)

base_path = os.path.join(tempfile.mkdtemp(), "funnel")
version_path = km.serving.export(model, base_path,
                                 score=km.serving.ScoreSpec(exponents={"click": 1.0,
                                                                       "purchase": 2.0}))
print("<base_path>/" + os.path.relpath(version_path, base_path))
sorted(os.listdir(version_path))"""),
    ("md", """
The version folder is what `tensorflow_model_server --model_base_path=<base_path>` loads. With
Docker:

```bash
docker run -p 8501:8501 -p 8500:8500 \\
  -v "<base_path>:/models/funnel" -e MODEL_NAME=funnel tensorflow/serving
curl -d @request.json http://localhost:8501/v1/models/funnel:predict
```

Here we load the same SavedModel in-process and call the signature TF Serving would call:"""),
    ("code", """
import tensorflow as tf

rows = data.test.head(4)
request = km.serving.rest_body(rows[data.features.names])
print(str(request)[:300], "...")
loaded = tf.saved_model.load(version_path)
serving = loaded.signatures["serving_default"]
inputs = {name: tf.constant(values)
          for name, values in km.data.feature_arrays(rows, data.features).items()}
outputs = {k: v.numpy() for k, v in serving(**inputs).items()}
served = pd.DataFrame(outputs)
served"""),
    ("code", """
# Same numbers as the Keras model, and the score is the fused product.
expected = model.predict({n: rows[n].to_numpy() for n in data.features.names}, verbose=0)
np.testing.assert_allclose(served["click"], expected["click"], rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(served["score"], served["click"] * served["purchase"] ** 2,
                           rtol=1e-4)
print("exported predictions match the model")"""),
    ("md", """
For gRPC, `km.serving.grpc_request` builds the `PredictRequest` proto (from
`tensorflow-serving-api`) and `parse_grpc_response` turns the reply into a DataFrame:"""),
    ("code", """
proto = km.serving.grpc_request(rows[data.features.names], model_name="funnel")
print(proto.model_spec, sorted(proto.inputs))"""),
]


OWN_RANKER = [
    ("md", """
## A ranker with a user history

Production rankers read what the user did before: the last items clicked, attended against the
candidate (DIN, Zhou et al. KDD'18). We simulate such data: items and users have hidden tastes,
each user's history holds items close to their taste, and a click depends on how well the
candidate matches the **history** (which the model sees) more than on anything else it sees.
A like (the second task) happens after a click, more often for cheap items."""),
    ("code", """
rng = np.random.default_rng(0)
num_items, num_users, dim = 2_000, 500, 8
item_taste = rng.normal(size=(num_items, dim))
user_taste = rng.normal(size=(num_users, dim))
rows = 6_000 if QUICK else 60_000

users = rng.integers(0, num_users, rows)
# The history: up to 20 items near the user's taste, most recent first, of varying length.
closeness = user_taste @ item_taste.T                                  # users × items
favourites = np.argsort(-closeness, axis=1)[:, :200]
lengths = rng.integers(0, 21, rows)
history = [list(rng.choice(favourites[u], size=n, replace=False))
           for u, n in zip(users, lengths, strict=True)]
candidates = rng.integers(0, num_items, rows)
price = rng.lognormal(3.0, 1.0, rows)
match = np.array([item_taste[h].mean(0) @ item_taste[c] if len(h) else 0.0
                  for h, c in zip(history, candidates, strict=True)])
click = rng.random(rows) < 1 / (1 + np.exp(-(1.5 * match - 1.0)))
like = click & (rng.random(rows) < 1 / (1 + np.exp(np.log(price) - 3.0)))
frame = pd.DataFrame({
    "item_id": candidates, "hist_item_ids": history,
    "country": rng.choice(["de", "fr", "us", "br", "jp"], rows),       # a string feature
    "user_vec": list(user_taste[users] + rng.normal(0, 2.0, (rows, dim))),  # a noisy pretrained vector
    "price": price, "click": click.astype(float), "like": like.astype(float),
})
train, test = frame.iloc[: rows * 4 // 5], frame.iloc[rows * 4 // 5:]
frame.head()"""),
    ("md", """
## Features: a shared table, target attention, a string, a vector

`Sequence("hist_item_ids", shares_embedding_with="item_id", pooling="attention",
query="item_id")` looks the history up in the candidate's own table (one variable, sparse
gradients) and pools it with DIN's activation unit against the candidate. Lists arrive as
DataFrame cells; `from_dataframe` pads them with `-1` and cuts them to `max_length` (most recent
first). The string feature is looked up in the input pipeline, so the training step still compiles
with XLA."""),
    ("code", """
def make_spec(with_history=True):
    features = [
        km.IntegerId("item_id", num_ids=num_items, embedding_dim=8),
        km.Categorical("country", embedding_dim=8),
        km.Vector("user_vec", dim=dim),
        km.Numeric("price", log1p=True),
    ]
    if with_history:
        features.insert(1, km.Sequence("hist_item_ids", max_length=20, pooling="attention",
                                       shares_embedding_with="item_id", query="item_id"))
    return km.FeatureSpec(features).adapt(train)


tasks = [km.Task("click"), km.Task("like", sample_space="click")]
list(make_spec())"""),
    ("md", """
## Your trunk, our balancers

Any Keras layer can be the shared trunk, and any layer can sit before our experts as a
`bottom=`: here DCN-v2's cross network (keras-rs `FeatureCross`) under PLE. A balancer at the
representation level balances at the trunk's output; one at the parameter level over the trunk's
own variables."""),
    ("code", """
EPOCHS = 1 if QUICK else 4


def train_ranker(with_history=True, balancer="multibalance"):
    spec = make_spec(with_history)
    keras.utils.set_random_seed(0)
    model = km.MultiTaskModel(
        spec, tasks, tower_units=[16], balancer=balancer,
        backbone=km.layers.PLE(num_levels=2, shared_experts=2, task_experts=1, expert_units=[32],
                               bottom=km.layers.CrossNetwork(2, projection_dim=8)))
    # XLA (string lookups run in the input pipeline); a quick smoke run skips the compilation.
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=not QUICK)
    model.fit(km.data.from_dataframe(train, spec, tasks, batch_size=256, shuffle=True, seed=0),
              epochs=EPOCHS, verbose=0)
    metrics = model.evaluate(km.data.from_dataframe(test, spec, tasks, batch_size=2048),
                             return_dict=True, verbose=0)
    return model, metrics


results = {}
for label, with_history, balancer in [("no history, multibalance", False, "multibalance"),
                                      ("history, multibalance", True, "multibalance"),
                                      ("history, upgrad (parameters)", True, "upgrad")]:
    model, metrics = train_ranker(with_history, balancer)
    results[label] = {"click AUC": metrics["click_auc"], "like AUC": metrics["like_auc"],
                      "XLA": model.jit_compile}
    if with_history and balancer == "multibalance":
        ranker = model
pd.DataFrame(results).T.round(3)"""),
    ("code", """
table = pd.DataFrame(results).T
ax = table[["click AUC", "like AUC"]].plot.bar(figsize=(7, 3.5), rot=0, ylim=(0.45, 1.0))
ax.set_ylabel("test AUC")
ax.set_title("what the history adds")
finish(ax.figure)"""),
    ("md", """
What to look for (full run): less than this data allows. The simulator's own click probabilities
rank the clicks at an AUC of about 0.91, yet every ranker here stays near 0.5 on click, and the
history adds under 0.01 (12 epochs did not change that). What the notebook shows that holds is
the code path — one table for candidate and history, attention, a string and a vector feature,
XLA, balancers at two levels, export. The next section looks at why the click signal is missed."""),
    ("md", """
## Why the ranker misses the click signal

A click here depends on the inner product of the candidate's and the history's hidden tastes. An
MLP, or a cross network, over concatenated embeddings has to discover that product, and
DLRM's dot-product bottom (keras-rs `DotInteraction`, `km.layers.DotInteraction`) hands it to the
trunk directly. Below, a small Shared-Bottom over those products, with `ew`, for three epochs on
three seeds: first with the candidate and its history alone, then with two more inputs, then
with the like task as well. Train AUC is measured on the first 12,000 training rows."""),
    ("code", """
SEEDS = [0] if QUICK else [0, 1, 2]


def click_ranker(names, with_like=False, seed=0):
    \"\"\"Shared-Bottom over DLRM's pairwise dot products of the named features.\"\"\"
    spec = km.FeatureSpec([feature for feature in make_spec() if feature.name in names])
    ranker_tasks = tasks if with_like else tasks[:1]
    keras.utils.set_random_seed(seed)
    model = km.MultiTaskModel(
        spec, ranker_tasks, tower_units=[16], balancer="ew",
        backbone=km.layers.SharedBottom(units=[64, 32], bottom=km.layers.DotInteraction(spec)))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=not QUICK)
    model.fit(km.data.from_dataframe(train, spec, ranker_tasks, batch_size=256, shuffle=True,
                                     seed=0), epochs=1 if QUICK else 3, verbose=0)
    return {f"{split} click AUC": model.evaluate(
                km.data.from_dataframe(rows, spec, ranker_tasks, batch_size=2048),
                return_dict=True, verbose=0)["click_auc"]
            for split, rows in [("train", train.iloc[:12_000]), ("test", test)]}


ids = ["item_id", "hist_item_ids"]
runs = {"candidate and history": (ids, False),
        "+ country, price": (ids + ["country", "price"], False),
        "+ country, price, like task": (ids + ["country", "price"], True)}
diagnosis = pd.DataFrame({(label, seed): click_ranker(names, with_like, seed)
                          for label, (names, with_like) in runs.items() for seed in SEEDS}).T
diagnosis.index.names = ["inputs", "seed"]
diagnosis.round(3)"""),
    ("md", """
What to look for (full run): with the candidate and its history alone, the dot-product trunk
finds the match on every seed (test click AUC 0.70–0.73, where the PLE rankers above stay near
0.51). Add two inputs the click does not depend on, and on one seed of three the test AUC stays
at 0.50 while the train AUC climbs to 0.68: the trunk memorises training rows instead. Our
reading: the new inputs give it more to memorise through (a price is close to unique per row),
and memorising wins the race against the product of two small, freshly initialised embeddings;
the run does not leave that path. Add the like task,
whose gradients reach the same table and bottom, and two seeds of three end at 0.50–0.51 (the
third at 0.63). The PLE rankers above meet all of this at once — every input, the like task, and
a trunk that has to form the product itself. Two habits follow: read train and test AUC
together, over several seeds, before trusting one run of a ranker on new inputs; and hand a
match the trunk cannot easily form to it as a product (`DotInteraction`) rather than hoping an
MLP finds it. Not tried here: more data per item, dropout or an L2 penalty on the embeddings,
a learning rate per group of variables — a recipe that makes the full ranker learn the match
reliably is not in this notebook yet."""),
    ("md", """
## Serve it

The export takes the history as a padded `[batch, 20]` int64 input (`-1` is padding) and the
vector as `[batch, 8]`; `ServingClient` pads, truncates and checks raw rows the way training
did, and the SavedModel, loaded without keras_mtl, returns `model.predict`'s numbers."""),
    ("code", """
import tempfile

import tensorflow as tf

path = km.serving.export(ranker, os.path.join(tempfile.mkdtemp(), "ranker"))
client = km.serving.ServingClient.from_export(path)
rows = test.drop(columns=["click", "like"]).head(5)
inputs = client.prepare(rows)
print({name: value.shape for name, value in inputs.items()})
served = tf.saved_model.load(path).signatures["serving_default"](
    **{name: tf.constant(value.astype(str) if value.dtype == object else value)
       for name, value in inputs.items()})
np.testing.assert_allclose(served["click"].numpy(), ranker.predict(rows, verbose=0)["click"],
                           rtol=1e-5, atol=1e-6)
print("served predictions match model.predict")"""),
]


OBJECTIVES = [
    ("md", """
## A funnel with watch time, lifetime value and a rating

`make_funnel(watch_time=True)` adds the seconds watched after a click (0 without one) to the
simulated impressions → clicks → purchases, and the oracle's expected watch time. We add a
lifetime value (zero for most users, log-normal for those who spend) and a 1–5 rating (stored as
0–4) to have one task of every kind a production ranker trains."""),
    ("code", """
data = km.datasets.make_funnel(num_examples=20_000 if QUICK else 200_000, watch_time=True, seed=0)
EPOCHS = 1 if QUICK else 4
rng = np.random.default_rng(0)


def with_ltv_and_rating(frame):
    # A customer value: non-zero for about a third of the users, larger where clicks are likely.
    spends = rng.random(len(frame)) < np.clip(0.2 + 2 * frame.true_click, 0, 0.9)
    ltv = np.where(spends, rng.lognormal(2.5 + 8 * frame.true_click, 0.8), 0.0)
    rating = np.clip(np.round(frame.true_click * 12 + rng.normal(size=len(frame))), 0, 4)
    return frame.assign(ltv=ltv, rating=rating)


train, test = with_ltv_and_rating(data.train), with_ltv_and_rating(data.test)
watched = train.watch_time[train.watch_time > 0]
print(f"CTR {train.click.mean():.3f}; watched rows: mean {watched.mean():.0f} s, "
      f"99th percentile {watched.quantile(0.99):.0f} s")
train[["click", "purchase", "watch_time", "ltv", "rating"]].describe().round(2)"""),
    ("md", """
## One task per kind

Each kind has its own head, link and loss (`keras_mtl/tasks/kinds.py` has the equations):
`pos_weight` up-weights the rare positive clicks; the watch time is a **weighted logistic
regression** (YouTube's, Covington et al. 2016): watched rows are positives weighted by their
seconds, so `exp(logit)` estimates the expected watch time. `label_scale` trains it in units of
the mean watched time, so its loss — and gradient — is on a click's scale. Lifetime value is
zero-inflated log-normal (ZILN); the rating is a 5-class softmax."""),
    ("code", """
scale = float(watched.mean())
tasks = [
    km.Task("click", pos_weight=2.0),
    km.Task("purchase", sample_space="click"),
    km.Task("watch_time", kind="watch_time", label_scale=scale),
    km.Task("ltv", kind="ziln"),
    km.Task("rating", kind="multiclass", num_classes=5),
]


def train_model(tasks, balancer="ew"):
    keras.utils.set_random_seed(0)
    model = km.MultiTaskModel(data.features, tasks, backbone=km.layers.MMoE(4, [32]),
                              tower_units=[16], balancer=balancer)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    model.fit(train, batch_size=1024, epochs=EPOCHS, verbose=0)
    return model


model = train_model(tasks, balancer="upgrad")
logs = model.evaluate(test, batch_size=8192, verbose=0, return_dict=True)
pd.Series({k: v for k, v in logs.items() if not k.endswith("_loss")}).round(4).to_frame("test")"""),
    ("md", """
Every binary task reports **log loss, PCOC** (predicted over observed positives; 1 is calibrated)
and **ECE** beside AUC and NE: a fused score multiplies the probabilities themselves, so a task
that over-predicts by 2× moves every candidate's score. `pos_weight=2` trades calibration for
recall on rare positives — its PCOC shows by how much. Counts and amounts report PCOC too (here:
predicted over observed total seconds); lifetime value the normalised Gini and decile MAPE of the
ZILN paper; the rating accuracy and top-2 accuracy.

## Raw seconds against weighted logistic

A watch-time task trained as squared error on raw seconds has errors of hundreds of seconds,
against a click's cross-entropy below one: its gradient dominates the shared layers. Same model,
three declarations of the watch-time task, click and purchase AUC on the test rows:"""),
    ("code", """
funnel = [km.Task("click"), km.Task("purchase", sample_space="click")]
declarations = {
    "no watch-time task": None,
    "MSE on raw seconds": km.Task("watch_time", kind="regression", metrics=["rmse", "pcoc"]),
    "weighted logistic, label_scale": km.Task("watch_time", kind="watch_time", label_scale=scale),
}
rows = {}
for name, watch_task in declarations.items():
    tasks_here = funnel + ([watch_task] if watch_task is not None else [])
    logs = train_model(tasks_here).evaluate(test, batch_size=8192, verbose=0, return_dict=True)
    rows[name] = {"click AUC": logs["click_auc"], "purchase AUC": logs["purchase_auc"],
                  "watch-time PCOC": logs.get("watch_time_pcoc", np.nan)}
table = pd.DataFrame(rows).T
table.round(4)"""),
    ("code", """
fig, ax = plt.subplots(figsize=(6, 3.5))
table[["click AUC", "purchase AUC"]].plot.bar(ax=ax, rot=0)
low = table[["click AUC", "purchase AUC"]].to_numpy().min()
ax.set_ylim(max(0.0, low - 0.05), 1.0)
ax.set_title("what the watch-time task does to the funnel")
finish(fig)"""),
    ("md", """
What to look for (full run): squared error on raw seconds costs the click and purchase tasks
AUC; the weighted logistic task with `label_scale` leaves them where they are without it, and
predicts the expected watch time with a PCOC within about 20 % of 1. `keras-mtl bench --quality --experiments
watch-time` measures the same over 5 seeds (the table is in the README).

## Lifetime value: a ranking that is right, a mean that is not

The test metrics above read a lifetime-value Gini near 0.7 — the model orders customers by value
well — and a PCOC far above 1: the predicted values add up to many times the observed ones. ZILN
predicts the mean of a log-normal, `p · exp(μ + σ²/2)`, exponential in σ².
`km.diagnostics.calibration_table` cuts the test rows into ten buckets of equal size by
prediction and sets, in each, the mean prediction against the mean label — and, for a ZILN task,
each parameter against what it estimates: `p` against the share of non-zero values (`nonzero`),
`mu` and `sigma` against the mean and spread of those values' logs (`log_mean`, `log_std`), the
log-normal's mean against the mean non-zero value (`predicted_nonzero`, `observed_nonzero`)."""),
    ("code", """
calibration = km.diagnostics.calibration_table(model, test, task="ltv")
calibration.drop(columns=["rows", "weight"]).round(2)"""),
    ("md", """
Read it bucket by bucket (full run): `p` matches the share of non-zero values and `mu` the mean
of their logs in every bucket, and over all rows `sigma` matches their spread; by bucket it is a
little low in the lower buckets and high in the top one. The means disagree far more — below the
observed mean in the lower eight buckets (PCOC 0.2–0.8), above it in the top two, 87 times in the
last. The logs of the values are not normal given the features. The simulator draws a log-value
of 2.5 + 8 × the click propensity + noise, and the features reveal the propensity only in part,
so each bucket holds a mixture: a longer upper tail than a log-normal's in the lower buckets, a
cut-off one at the top (a propensity is at most 1). The log-normal's mean is exponential in σ²:
e^(σ²/2) is about 280 at the top bucket's σ of 3.4 and 3,000 at σ = 4, so that bucket's mean is
carried by its rows with the largest σ, for an upper tail the data do not have. One PCOC mixes
buckets too low with a bucket far too high.

A Tweedie task (`kind="tweedie"`, log link) fits the mean itself instead of a distribution. The
same model with the lifetime value declared both ways:"""),
    ("code", """
ltv_declarations = {
    "ZILN": km.Task("ltv", kind="ziln"),
    "Tweedie, label_scale": km.Task("ltv", kind="tweedie", label_scale=float(train.ltv.mean()),
                                    metrics=["gini", "decile_mape", "pcoc"]),
}
rows = {}
for name, ltv_task in ltv_declarations.items():
    logs = train_model([*funnel, ltv_task]).evaluate(test, batch_size=8192, verbose=0,
                                                      return_dict=True)
    rows[name] = {"Gini": logs["ltv_gini"], "decile MAPE": logs["ltv_decile_mape"],
                  "PCOC": logs["ltv_pcoc"]}
pd.DataFrame(rows).T.round(3)"""),
    ("md", """
What to take from it (full run): the two declarations order customers alike (Gini); the
Tweedie task's mean is calibrated overall (PCOC near 1) with a decile MAPE several times smaller,
while ZILN's PCOC is far off and moves between two trainings of similar models (compare the
first table): it hangs on the top bucket's σ. Read `calibration_table` before serving an
expected value. ZILN is the choice when you need the distribution itself — the chance of a
non-zero value, quantiles from μ and σ — and its mean where the table's columns agree bucket by
bucket.

## Serve expected values

The export returns each task's served value — a probability, the expected watch time, the
expected lifetime value, the five class probabilities — and fuses them into one score. Here:
p(click) · E[watch time]^0.5 · p(rating = 5)."""),
    ("code", """
import tempfile

import tensorflow as tf

score = km.serving.ScoreSpec(exponents={"click": 1.0, "purchase": 0.0, "watch_time": 0.5,
                                        "rating": 1.0}, classes={"rating": 4})
path = km.serving.export(model, os.path.join(tempfile.mkdtemp(), "ranker"), score=score)
rows = test.head(5)
inputs = {name: rows[name].to_numpy() for name in data.features.names}
served = tf.saved_model.load(path).signatures["serving_default"](
    **{name: tf.constant(value.astype(str) if value.dtype == object else value)
       for name, value in inputs.items()})
pd.DataFrame({"p(click)": served["click"].numpy(), "E[watch time] s": served["watch_time"].numpy(),
              "E[ltv]": served["ltv"].numpy(), "p(rating 5)": served["rating"].numpy()[:, 4],
              "score": served["score"].numpy()}).round(4)"""),
]


# The decision guide: (architecture, how to build it, when to choose it, its cut).
GUIDE = [
    ('Shared-Bottom',
     '`km.layers.SharedBottom(units=[64])`',
     'the tasks are closely related; and as the baseline any other row must beat '
     '(cheapest)',
     "the bottom MLP's output"),
    ('OMoE',
     '`km.layers.OMoE(num_experts, expert_units)`',
     'as a check: experts under one gate for all tasks; if MMoE is no better, per-task '
     'gates buy nothing on your data',
     "the one gate's mixture"),
    ('MMoE',
     '`km.layers.MMoE(num_experts, expert_units)`',
     "related tasks that need different things: each task's gate picks its own mix of "
     'shared experts — the first thing to try',
     "every expert's output and the gates' input"),
    ('MMoE, DSelect-k gates',
     '`km.layers.MMoE(..., gate="dselect")`',
     'many experts, and you want each task to route to a few (k) of them: sparse, readable'
     ' gates',
     'as MMoE'),
    ('CGC',
     '`km.layers.CGC(shared_experts, task_experts, expert_units)`',
     'negative transfer — a task gains only at another\'s cost (the "seesaw"): '
     'task-specific experts give each task capacity no other task pulls on',
     "the shared experts' outputs and the gates' input"),
    ('PLE',
     '`km.layers.PLE(num_levels, shared_experts, task_experts, expert_units)`',
     'as CGC, separated progressively over stacked levels; the strongest default in its '
     "paper (and first, within noise, in this package's Census benchmark)",
     "the last level's shared experts and each task's input to that level"),
    ('HoME',
     '`km.layers.HoME(task_groups, shared_experts, group_experts, task_experts, '
     'expert_units)`',
     'many tasks that fall into groups (engagement, conversion, …): group experts between '
     'the shared and the task ones; normalised experts and feature gates against experts '
     'that collapse',
     "the level-2 shared and group experts' outputs, each group's level-1 representation"),
    ('PEPNet',
     '`km.layers.PEPNet(domain_features, prior_features, tower_units)`',
     'one model for several domains or scenarios, with strong personal signals (user and '
     'item ids): gates scale the embeddings by domain (EPNet) and each tower layer by the '
     'priors (PPNet)',
     "EPNet's personalised features and the PPNet gates"),
    ('STEM',
     '`km.layers.STEM(num_shared_experts, num_task_experts, expert_units)`',
     'tasks that disagree down at the embeddings (an id means something else to each '
     'task): every task gets its own embedding tables — memory grows with the task count',
     "the shared experts, the shared embeddings and every task's own embeddings"),
    ('ESMM',
     '`km.Task("purchase", esmm_parent="click")`',
     'a task observed only after another (purchase after click): pCTR · pCVR is trained on'
     ' every impression, against sample-selection bias',
     "the trunk's"),
    ('ESCM²',
     '`km.Task("purchase", esmm_parent="click", counterfactual="ips")` (or `"dr"`)',
     "ESMM's pCVR still drifts on rows never clicked: a counterfactual "
     '(inverse-propensity, or doubly robust) regulariser on the CVR head',
     "the trunk's"),
    ('AITM',
     '`task_graph=km.layers.AITM(["click", "purchase"], calibrator_weight=0.6)`',
     'a multi-step funnel with end-to-end labels (no purchase without a click): each step '
     'attends over its own tower and what the step before passes on; predicts p(click ∧ '
     'purchase)',
     "the trunk's"),
    ('DBMTL',
     '`task_graph=km.layers.DBMTL({"purchase": ["click"]}, relation_units=[32])`',
     "known dependencies between tasks (a DAG): a child task's head reads its parents'",
     "the trunk's"),
]


def guide_table() -> str:
    rows = ["| architecture | build it with | choose it when | its cut |", "|---|---|---|---|"]
    rows += ["| " + " | ".join(row) + " |" for row in GUIDE]
    return "\n".join(rows)


ARCHITECTURES = [
    ("md", f"""
## Which architecture, when

Every architecture here is a **trunk** (a `backbone=` layer: what the tasks share and how each
task reads it) or a **task structure** (an option on the tasks or a `task_graph=`: how the task
heads relate), and the two combine. The *cut* is where the shared part ends and the task heads
begin: representation-level balancers weigh the tasks' gradients there, so it is also where two
tasks compete for the shared layers (README, *Architectures and their cut*).

{guide_table()}

The task structures add head parameters only, so their cut is the trunk's they sit on. Below,
each trunk trains on the same conversion funnel (`03_sample_spaces_funnel.ipynb` explains it)
with the same budget, and the task structures on MMoE."""),
    ("code", """
data = km.datasets.make_funnel(num_examples=10_000 if QUICK else 100_000, seed=0)
EPOCHS = 2 if QUICK else 4
BATCH_SIZE = 256 if QUICK else 1024
UNITS = [32]  # every expert (and PEPNet's tower layer): one layer of 32

trunks = {
    "Shared-Bottom": lambda: km.layers.SharedBottom(units=[64]),
    "OMoE": lambda: km.layers.OMoE(num_experts=4, expert_units=UNITS),
    "MMoE": lambda: km.layers.MMoE(num_experts=4, expert_units=UNITS),
    "MMoE (DSelect-k)": lambda: km.layers.MMoE(num_experts=4, expert_units=UNITS,
                                               gate="dselect"),
    "CGC": lambda: km.layers.CGC(shared_experts=2, task_experts=1, expert_units=UNITS),
    "PLE": lambda: km.layers.PLE(num_levels=2, shared_experts=2, task_experts=1,
                                 expert_units=UNITS),
    # Two tasks make one group here; with more, task_groups=[[0, 2], [1]] names them.
    "HoME": lambda: km.layers.HoME(shared_experts=2, group_experts=1, task_experts=1,
                                   expert_units=UNITS),
    # The funnel has no domain feature, so EPNet stays off; the towers are gated by the ids.
    "PEPNet": lambda: km.layers.PEPNet(prior_features=["user_id", "item_id"],
                                       tower_units=UNITS),
    "STEM": lambda: km.layers.STEM(num_shared_experts=2, num_task_experts=1,
                                   expert_units=UNITS),
}
# Purchases are observed on clicked rows only (NaN elsewhere): the sample-space tasks train
# on those rows, ESMM and ESCM² on every impression; AITM wants end-to-end labels instead
# (purchase = 0 without a click).
in_sample_space = [km.Task("click"), km.Task("purchase", sample_space="click")]
end_to_end = data.train.assign(purchase=data.train.purchase.fillna(0.0))
structures = {
    "ESMM": ([km.Task("click"), km.Task("purchase", esmm_parent="click")], None, data.train),
    "ESCM²-DR": ([km.Task("click"),
                  km.Task("purchase", esmm_parent="click", counterfactual="dr")],
                 None, data.train),
    "DBMTL": (in_sample_space,
              lambda: km.layers.DBMTL({"purchase": ["click"]}, relation_units=[32]), data.train),
    "AITM": ([km.Task("click"), km.Task("purchase")],
             lambda: km.layers.AITM(["click", "purchase"], calibrator_weight=0.6), end_to_end),
}
print(data.description)"""),
    ("md", """
## Same data, same budget

One seed and a few epochs: enough to see what each costs and roughly where it lands, not to
rank rows that differ in the third decimal — `keras-mtl bench --quality` repeats such rows over
five seeds (README). The scores are computed the same way for every row: click AUC over all test
impressions, purchase AUC on the clicked test rows (pCVR; for AITM, which predicts
p(click ∧ purchase), its ratio to pCTR), and CTCVR AUC over all impressions (pCTR · pCVR, or
AITM's own output)."""),
    ("code", """
import time

test = data.test
x_test = {name: test[name].to_numpy() for name in data.features.names}
clicked = test.click.to_numpy() == 1
bought = (test.purchase.fillna(0.0).to_numpy() == 1)


def auc(labels, scores):
    # The Mann-Whitney statistic: how often a positive outranks a negative.
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores, kind="stable")] = np.arange(1, len(scores) + 1)
    positives = labels.astype(bool)
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return (ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def train(backbone, tasks, task_graph=None, frame=data.train):
    keras.utils.set_random_seed(0)
    model = km.MultiTaskModel(data.features, tasks, backbone=backbone, tower_units=[16],
                              task_graph=task_graph)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    began = time.perf_counter()
    model.fit(km.data.from_dataframe(frame, data.features, tasks, batch_size=BATCH_SIZE,
                                     shuffle=True, seed=0), epochs=EPOCHS, verbose=0)
    seconds = time.perf_counter() - began
    predicted = model.predict(x_test, batch_size=8192, verbose=0)
    p_click = np.asarray(predicted["click"])
    if isinstance(task_graph, km.layers.AITM):  # p(click and purchase), end to end
        p_ctcvr = np.asarray(predicted["purchase"])
        p_cvr = p_ctcvr / np.maximum(p_click, 1e-7)
    else:
        p_cvr = np.asarray(predicted["purchase"])
        p_ctcvr = p_click * p_cvr
    return model, {"click AUC": auc(test.click.to_numpy(), p_click),
                   "purchase AUC (clicked)": auc(bought[clicked], p_cvr[clicked]),
                   "CTCVR AUC": auc(bought, p_ctcvr),
                   "parameters": model.count_params(), "train s": seconds}


models, results = {}, {}
for name, make in trunks.items():
    models[name], results[name] = train(make(), in_sample_space)
for name, (tasks, graph, frame) in structures.items():
    label = f"MMoE + {name}"
    models[label], results[label] = train(km.layers.MMoE(num_experts=4, expert_units=UNITS),
                                          tasks, None if graph is None else graph(), frame)
table = pd.DataFrame(results).T
table["parameters"] = table["parameters"].astype(int)
table.round({"click AUC": 4, "purchase AUC (clicked)": 4, "CTCVR AUC": 4, "train s": 1})"""),
    ("code", """
fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), sharey=True)
order = table.index[::-1]
for ax, column in zip(axes, ["click AUC", "purchase AUC (clicked)", "CTCVR AUC"], strict=True):
    values = table.loc[order, column]
    colors = ["tab:orange" if "+" in name else "tab:blue" for name in order]
    ax.barh(order, values, color=colors)
    ax.set_xlim(max(0.0, values.min() - 0.02), min(1.0, values.max() + 0.01))
    ax.set_title(column)
axes[0].set_ylabel("trunk (blue) or MMoE + task structure (orange)")
finish(fig)"""),
    ("md", """
What to look for (full run; one seed, so read differences below about 0.01 AUC as noise):

- **The task structure moves CTCVR more than the trunk does.** The three entire-space rows —
  ESMM, AITM and ESCM²-DR, trained over every impression — rank purchases among all impressions
  best (CTCVR AUC 0.69–0.70), ahead of every sample-space row (0.62–0.67), whichever trunk it
  has. That is the ranking a funnel serves (pCTR · pCVR). DBMTL, on the sample space, stays with
  the sample-space rows.
- **The trunks sit close together.** Eight of the nine trunks are within about 0.015 click AUC
  and 0.015 purchase AUC of one another: on two related tasks and this little data, start with
  MMoE or PLE and spend the effort on the task declarations. HoME trails (0.62 click AUC) and
  trains several times slower here: its normalised experts and feature gates are built for many
  tasks and far more data than four epochs of 80,000 rows — not its verdict.
- **Parameters are mostly embeddings.** Every model but STEM has 53–63 thousand, most of them in
  the id tables; STEM, with its own tables per task, has 2.7× as many for its small click gain."""),
    ("md", """
## What the gates learned

`model.gate_weights(features)` returns every gate's weights per row. Averaged over test rows: an
MMoE gate gives every expert some weight, DSelect-k's routes each task to at most k = 2 of them once
its selectors binarise, a PLE task gate weighs its own expert against the shared ones, and a
STEM gate mixes every task's experts (the other task's under stop-gradient) with the shared
ones."""),
    ("code", """
probe = {name: values[:4096] for name, values in x_test.items()}
four = [f"expert {i}" for i in range(1, 5)]
panels = {
    "MMoE": (["click", "purchase"], four),
    "MMoE (DSelect-k)": (["click", "purchase"], four),
    "PLE": (["level_1/click", "level_1/purchase"], ["own", "shared 1", "shared 2"]),
    "STEM": (["click", "purchase"], ["click's", "purchase's", "shared 1", "shared 2"]),
}
fig, axes = plt.subplots(1, len(panels), figsize=(13, 2.8))
in_use = {}
for ax, (name, (keys, experts)) in zip(axes, panels.items(), strict=True):
    gates = models[name].gate_weights(probe)
    weights = np.array([np.asarray(gates[key]).mean(axis=0) for key in keys])
    in_use[name] = {key.split("/")[-1]: (np.asarray(gates[key]) > 0.01).sum(axis=1).mean()
                    for key in keys}
    ax.imshow(weights, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(experts)), experts, rotation=30, fontsize=8)
    ax.set_yticks(range(len(keys)), ["click", "purchase"])
    for (i, j), weight in np.ndenumerate(weights):
        ax.text(j, i, f"{weight:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(name)
finish(fig)
pd.DataFrame(in_use).T.round(2).rename_axis("experts above 0.01 per row (mean)")"""),
    ("md", """
AITM's attention is a gate too: for the purchase step, how much it reads its own tower against
what the click step passes on (mean over the test rows):"""),
    ("code", """
attention = np.asarray(models["MMoE + AITM"].gate_weights(probe)["ait_purchase"]).mean(axis=0)
pd.Series(attention, index=["own tower", "transferred from click"]).round(3).to_frame("weight")"""),
    ("md", """
What to look for (full run): the gates split the work between the tasks. MMoE's two gates lean
on different experts (click on expert 1, purchase on expert 2) without being told to; DSelect-k
makes that split hard — about two experts in use per row, click's and purchase's disjoint. Each
PLE task gate puts about 0.9 on one shared expert (not the same one) and little on its own
task expert. STEM's click gate reads mostly click's own expert, while purchase — labelled on the
clicked rows only — leans on a shared one. AITM's purchase step takes about a fifth of its
representation from the click step.

## Choosing, in short

Start with MMoE or PLE and `ew`. If a conditional task is observed only after another, declare
it (sample space, or ESMM / ESCM² / AITM over the entire space) before trying another trunk. If
the tasks pull against each other (one gains only as another loses), try CGC or PLE's
task experts, then a balancer (`02_choosing_a_balancer.ipynb`). Reach for HoME with many tasks in
groups, PEPNet with several domains or scenarios in one model, STEM when the tasks disagree about
the ids themselves — and check each against the plain MMoE row on your own data, over several
seeds (`keras-mtl bench --quality` does that)."""),
]

def main() -> None:
    notebook("01_quickstart.ipynb", "Quickstart: MMoE vs PLE on Census-Income",
             "Train two multi-task rankers on a real public data set, compare their per-task AUC, "
             "look at what the gates learned, and save the model.", QUICKSTART)
    notebook("02_choosing_a_balancer.ipynb", "Choosing a balancer",
             "Make gradient conflicts and scale imbalance visible, then compare loss-level, "
             "magnitude and direction balancers on the same model and data.", BALANCERS)
    notebook("03_sample_spaces_funnel.ipynb", "Sample spaces and conditional tasks",
             "Purchases are only observed after clicks. Compare treating them as negatives with "
             "PLE's sample spaces and ESMM on a simulated funnel with known truth.", FUNNEL)
    notebook("04_movielens_tfds.ipynb", "MovieLens through TensorFlow Datasets",
             "Rating regression and a 'liked' classifier on MovieLens 100K from TFDS, evaluated "
             "with per-user GAUC.", MOVIELENS)
    notebook("05_serving.ipynb", "Export to TF Serving and query it",
             "Export a trained model as a versioned SavedModel with the fused ranking score and "
             "call it the way TF Serving's REST and gRPC APIs are called.", SERVING, plots=False)
    notebook("06_own_ranker.ipynb", "Your own ranker: histories, crosses, any trunk",
             "A DIN-attended user history sharing the candidate's embedding table, a string and "
             "a vector feature, a DCN-v2 bottom under PLE, trained with XLA and a balancer at two "
             "levels, then exported and served.", OWN_RANKER)
    notebook("07_objectives.ipynb", "Objectives: calibration, watch time, lifetime value, classes",
             "Train one ranker on every task kind — binary with pos_weight, a sample space, "
             "weighted-logistic watch time, ZILN lifetime value and a 5-class rating — read its "
             "calibration metrics, trace a lifetime value's far-off mean bucket by bucket, see what "
             "raw-seconds regression does to the funnel, and serve expected values in one fused "
             "score.", OBJECTIVES)
    notebook("08_architectures.ipynb", "Architectures: which one, when",
             "A decision guide to every architecture in the package — nine trunks and four task "
             "structures — then each trained on the same conversion funnel with the same budget: "
             "per-task AUC, parameters and training time side by side, and what the gates "
             "learned.", ARCHITECTURES)


if __name__ == "__main__":
    main()
