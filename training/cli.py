"""``hepzoo train CONFIG.yaml --set key=value ...``: the CLI side of training.

The lead wires :func:`train_command` into ``hepzoo/cli.py``. For several processes or GPUs::

    torchrun --nproc_per_node=4 -m hepzoo.training.cli configs/mlpf-gnnlsh.yaml --set data.batch_size=8

(``python -m hepzoo.training.cli`` works the same for one process.)
"""

from __future__ import annotations

import sys
from pathlib import Path

from hepzoo.training.config import load_config


def train_command(config_path: Path, overrides: list[str]) -> None:
    """Load and validate the config (``--set a.b=c`` overrides), train, print where the results are.

    Raises ``ValueError``/``FileNotFoundError`` with a message naming the file or key at fault.
    Example: hepzoo train configs/mlpf-gnnlsh.yaml --set optim.lr=3e-4 --set data.batch_size=8
    """
    from hepzoo.training.loop import train

    cfg = load_config(config_path, overrides)
    result = train(cfg)
    if result is not None and _is_main():
        best = result["best_val"]
        msg = f"trained {result['step']} steps ({result['epoch']} epochs); last checkpoint {result['last']}"
        if best is not None:
            msg += f"; best validation loss {best:.5g} in {result['best']}"
        print(msg)


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") in ("", "0")


def main(argv: list[str] | None = None) -> int:
    """``python -m hepzoo.training.cli CONFIG.yaml [--set key=value ...]`` (torchrun-friendly)."""
    import argparse

    parser = argparse.ArgumentParser(prog="hepzoo-train", description="Train a hepzoo model (MLPF or flash-sim).")
    parser.add_argument("config", type=Path, help="training config (YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        train_command(args.config, args.overrides)
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
