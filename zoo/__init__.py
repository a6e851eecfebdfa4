"""The releases shipped with hepzoo (data only): ``<name>/<version>/`` with ``card.json``, ``model.onnx``,
``config.yaml``, ``weights.pt``, ``dataset.json`` and ``metrics.json``. Installed as package data, so
``Session.load("mlpf-gnnlsh")`` finds them outside any checkout; see ``hepzoo.export.zoo.zoo_roots``."""
