"""hepzoo.benchmarks: speed, latency, memory and FLOPs of every zoo model on every backend (``hepzoo bench``),
next to the references, and the scripts that time generation and flash-sim.

``hepzoo bench`` (:mod:`hepzoo.cli`) runs :func:`hepzoo.benchmarks.matrix.run_benchmarks`, writes the results
file and, with ``--markdown``, its section of BENCHMARKS.md. One module per job:

* :mod:`~hepzoo.benchmarks.points`: what a point is (release x implementation x backend x size) and how hard
  it is measured (``BenchSettings``);
* :mod:`~hepzoo.benchmarks.matrix`: the backend x size matrix: which points, in which order, skip prediction,
  parity against PyTorch eager, the run;
* :mod:`~hepzoo.benchmarks.isolation`: one point in a fresh process (forkserver), its memory;
* :mod:`~hepzoo.benchmarks.timing`: the timing loop, its stopping rule (95% CI), means, percentiles;
* :mod:`~hepzoo.benchmarks.flops`: FLOPs on the ONNX graph, or by torch's flop counter;
* :mod:`~hepzoo.benchmarks.machine`: CPU, memory, GPUs, library versions, the nominal FP32 peak;
* :mod:`~hepzoo.benchmarks.peak`: the float32 GEMM peak measured in the same run (1 thread, the run's threads,
  all cores): the 100 % of the % peak columns;
* :mod:`~hepzoo.benchmarks.results`: the results file: schema, validation, atomic writes;
* :mod:`~hepzoo.benchmarks.e2e`: ``hepzoo run`` vs the sum of its parts;
* :mod:`~hepzoo.benchmarks.report`: the BENCHMARKS.md section and the plots, from the results file;
* :mod:`~hepzoo.benchmarks.reference`: jpata/particleflow's MLPF built at a release's size.

Scripts, run from the repository root (``make bench-generation``)::

    python benchmarks/bench_generation.py --out BENCHMARKS.md   # Pythia8 + detector + PF throughput
    python benchmarks/bench_flashsim.py --events 200            # flash-sim vs the full chain it replaces
    python -m hepzoo.benchmarks.padding_waste data/v2/ttbar_test.root  # size buckets: padded / real elements

The results files (``results_*.json``) and plots (``*.png``) of all of them are kept in this folder.
Importing this package imports nothing else: each module is imported on its own.
"""
