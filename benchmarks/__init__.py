"""hepzoo.benchmarks: benchmark code (``hepzoo bench``'s report and particleflow reference) and scripts.

* :mod:`~hepzoo.benchmarks.report`: the BENCHMARKS.md section and the plots, from the results file;
* :mod:`~hepzoo.benchmarks.reference`: jpata/particleflow's MLPF built at a release's size.
"""
