"""Runs tutorials top to bottom and stores a full run's outputs in them.

    python tutorials/run_notebooks.py 03_sample_spaces_funnel.ipynb      # full run, outputs stored
    python tutorials/run_notebooks.py --quick --output-dir /tmp/smoke    # smoke run, copies only

A full run (`KERAS_MTL_QUICK` unset) executes the notebook as `build_notebooks.py` writes it, in a
scratch folder (what the notebook saves lands there, not in the repository), removes the machine's
paths from the outputs, writes the outputs and a record of the run (`metadata["keras_mtl"]
["stored_run"]`: machine, date, versions, minutes, `--note`) into the committed notebook, and
runs the builder again so that the notebook's first cell names the run. The builder keeps a cell's
outputs for as long as its source is unchanged (`build_notebooks.py`). `--quick` writes executed
copies into `--output-dir` and leaves the committed notebooks alone (to look at smoke figures).

`--env NAME=VALUE` sets a variable for the run (e.g. `KERAS_MTL_MOCK_DATA=1` for MovieLens on a
machine without internet; say so with `--note`). `KERAS_MTL_DATA` is passed through.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import re
import shutil
import sys
import sysconfig
import tempfile
import time

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import build_notebooks  # noqa: E402  (the builder beside this file)


def package_version() -> str:
    with open(os.path.join(ROOT, "keras_mtl", "__init__.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def describe_machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass
    cpu = f"{os.cpu_count()} CPU cores" + (f" ({model})" if model else "")
    gpu = "an NVIDIA GPU present" if os.path.exists("/dev/nvidia0") else "no GPU"
    return f"{platform.system()} {platform.machine()}, {cpu}, {gpu}"


def scrub(text: str, replacements: list[tuple[str, str]]) -> str:
    for old, new in replacements:
        text = text.replace(old, new)
    return text


# TensorFlow's C++ log lines (absl/glog format), which the kernel captures from the process's
# stderr: about this machine (no CUDA driver, CPU instructions), not about the tutorial.
NATIVE_LOG = re.compile(r"^([IWEF]\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\] .*"
                        r"|WARNING: All log messages before absl::InitializeLog\(\) is called.*)\n?",
                        re.M)


def scrub_outputs(book, replacements: list[tuple[str, str]]) -> list[str]:
    """Replaces this machine's paths in every text output and drops TensorFlow's C++ log lines;
    returns what still looks like a path."""
    leftovers = []
    for cell in book.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = [o for o in cell.outputs if not (
            o.output_type == "stream" and o.name == "stderr"
            and not NATIVE_LOG.sub("", o.text).strip())]
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stderr":
                output["text"] = NATIVE_LOG.sub("", output["text"])
            if "text" in output:
                output["text"] = scrub(output["text"], replacements)
            for mime, value in output.get("data", {}).items():
                if mime.startswith("text/") and isinstance(value, str):
                    output["data"][mime] = scrub(value, replacements)
            if "traceback" in output:
                output["traceback"] = [scrub(line, replacements) for line in output["traceback"]]
            texts = [output.get("text", "")] + [v for m, v in output.get("data", {}).items()
                                                if m.startswith("text/") and isinstance(v, str)]
            leftovers += [m.group(0) for t in texts
                          for m in re.finditer(r"(/work/|/tmp/|/home/)\S*", t)]
    return leftovers


def run(filename: str, quick: bool, output_dir: str | None, note: str | None,
        timeout: int) -> float:
    path = os.path.join(HERE, filename)
    book = nbformat.read(path, as_version=4)
    for cell in book.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    scratch = tempfile.mkdtemp(prefix="keras_mtl_tutorial_")
    os.makedirs(os.path.join(scratch, "tmp"))
    environment = dict(os.environ)
    os.environ.pop("MPLBACKEND", None)  # the inline backend: figures become PNG outputs
    os.environ["TMPDIR"] = os.path.join(scratch, "tmp")  # the notebook's temporary folders
    if quick:
        os.environ["KERAS_MTL_QUICK"] = "1"
    else:
        os.environ.pop("KERAS_MTL_QUICK", None)
    began = time.perf_counter()
    try:
        NotebookClient(book, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": scratch}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(environment)
    seconds = time.perf_counter() - began
    replacements = [(os.path.join(scratch, "tmp"), "<tmp>"), (scratch + os.sep, ""),
                    (scratch, "."),
                    (sysconfig.get_paths()["purelib"] + os.sep, ""),
                    (ROOT + os.sep, ""), (sys.prefix + os.sep, ""),
                    (os.path.expanduser("~") + os.sep, "~/")]
    leftovers = scrub_outputs(book, replacements)
    shutil.rmtree(scratch, ignore_errors=True)
    if leftovers:
        print(f"  {filename}: outputs still name paths: {sorted(set(leftovers))[:5]}")
    if quick or output_dir:
        os.makedirs(output_dir, exist_ok=True)
        nbformat.write(book, os.path.join(output_dir, filename))
        return seconds
    book.metadata["keras_mtl"] = {"stored_run": {
        "mode": "full",
        "machine": describe_machine(),
        "date": datetime.date.today().isoformat(),
        "keras_mtl": package_version(),
        "tensorflow": importlib.metadata.version("tensorflow"),
        "keras": importlib.metadata.version("keras"),
        "python": platform.python_version(),
        "minutes": round(seconds / 60, 1),
        **({"note": note} if note else {}),
    }}
    nbformat.write(book, path)
    build_notebooks.main()  # the first cell names the run; every output is kept
    return seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", help="file names in tutorials/ (default: all)")
    parser.add_argument("--quick", action="store_true", help="KERAS_MTL_QUICK=1 (smoke run)")
    parser.add_argument("--output-dir", help="write executed copies here, not into tutorials/")
    parser.add_argument("--note", help="a sentence about the run, shown in the first cell")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)
    if args.quick and not args.output_dir:
        parser.error("--quick needs --output-dir: a smoke run's outputs are never stored")
    names = args.notebooks or sorted(n for n in os.listdir(HERE) if n.endswith(".ipynb"))
    for pair in args.env:
        name, _, value = pair.partition("=")
        os.environ[name] = value
    for name in names:
        seconds = run(os.path.basename(name), args.quick, args.output_dir, args.note, args.timeout)
        print(f"{name}: {seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
