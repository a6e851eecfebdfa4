"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

CI_SAMPLE_EVENTS = 200
CI_SAMPLE_SEED = 20261122


@pytest.fixture(scope="session")
def ci_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded ttbar sample (Pythia8 + detector simulation + PF + targets), generated once per session; its
    seed differs from every sample the zoo releases were trained, selected or gated on."""
    from hepzoo.datasets.generate import GenerationConfig, generate
    from hepzoo.datasets.sources import SourceSpec

    path = tmp_path_factory.mktemp("physics") / "ttbar_ci.root"
    config = GenerationConfig(SourceSpec("ttbar"), n_events=CI_SAMPLE_EVENTS, seed=CI_SAMPLE_SEED, chunk_size=50)
    assert generate(config, path, workers=2, progress=False) == CI_SAMPLE_EVENTS
    return path
