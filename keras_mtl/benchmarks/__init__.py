"""The `keras-mtl bench` benchmarks: training cost (`throughput`) and model quality (`quality`).

- `presets`: architectures and balancer specs by name, shared by the CLI and every benchmark.
- `throughput`: examples/s, peak memory and first-step seconds of each balancer relative to `ew`,
  and the floor of parameter-level balancing.
- `quality`: test AUC/MSE of architectures and balancers over seeds.
- `parallel`: the quality experiments in several processes (`python -m
  keras_mtl.benchmarks.parallel` is one of them).
- `report`: JSON output, the machine description and table-cell formatting.

Nothing is imported here: `python -m keras_mtl.benchmarks.parallel` must find its module not yet
imported (runpy warns otherwise), and the CLI imports only the benchmark it runs.
"""
