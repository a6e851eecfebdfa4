"""The size buckets a card records (contract 2), and re-carding existing releases with them. Torch-free.

New exports write :func:`export_buckets` into the card: :func:`hepzoo.datasets.ragged.bucket_policy` for the
model's element granularity, up to 32 768 elements or the card's ``max_elements`` if that is smaller (a
bucket above the largest event a model may run is never used). Existing cards keep the list they were
exported with (the power-of-two ``DEFAULT_BUCKETS``) until they are re-carded:

    python -m hepzoo.export.buckets zoo/mlpf-gnnlsh/3 zoo/mlpf-transformer/3          # show old -> new
    python -m hepzoo.export.buckets --write zoo/mlpf-gnnlsh/3 zoo/mlpf-transformer/3  # rewrite card.json
    python -m hepzoo.export.buckets --write --max-elements 32768 zoo/mlpf-transformer/5   # and the element limit

Re-carding changes ``size_buckets`` (and ``max_elements`` when asked) only (the ONNX graph has a dynamic element axis, so every multiple of the
granularity is a valid input; the card's sha256s cover the model files, not the card); the card is validated
and written atomically by :func:`hepzoo.export.card.write_card`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from hepzoo.datasets.ragged import BUCKET_LARGEST, BUCKET_SMALLEST, bucket_policy
from hepzoo.export.card import ModelCard, load_card, write_card

__all__ = ["export_buckets", "rebucket"]


def export_buckets(granularity: int, max_elements: int | None = None) -> list[int]:
    """The size buckets a new export records: the bucket policy up to ``min(32768, max_elements)``."""
    largest = BUCKET_LARGEST if max_elements is None else min(BUCKET_LARGEST, int(max_elements))
    return list(bucket_policy(granularity, smallest=min(BUCKET_SMALLEST, largest), largest=largest))


def rebucket(
    folder: str | os.PathLike, write: bool = False, max_elements: int | None = None
) -> tuple[list[int], list[int]]:
    """(old, new) size buckets of the release in ``folder`` (its files verified first); with ``write`` its
    ``card.json`` is rewritten with the new list. ``max_elements`` also sets the card's per-event element limit
    (the buckets then follow it), e.g. once a model's memory has been measured to grow linearly. A card without an
    element axis (flash-sim) is unchanged and refuses a limit."""
    card = load_card(folder)
    old = list(card.size_buckets)
    if not old:
        if max_elements is not None:
            raise ValueError(f"{folder}: {card.name} has no element axis, so no element limit to set")
        return old, old
    if max_elements is not None and (isinstance(max_elements, bool) or int(max_elements) < 1):
        raise ValueError(f"max_elements {max_elements!r}: must be a positive number of elements")
    limit = card.max_elements if max_elements is None else int(max_elements)
    new = export_buckets(card.element_granularity, limit)
    if write and (new != old or limit != card.max_elements):
        data = card.model_dump()
        data["size_buckets"] = new
        data["max_elements"] = limit
        write_card(ModelCard.model_validate(data), folder)
    return old, new


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hepzoo.export.buckets", description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", help="release folders (zoo/<name>/<version>)")
    parser.add_argument("--write", action="store_true", help="rewrite each card.json (default: only show)")
    parser.add_argument("--max-elements", type=int, default=None, help="also set the per-event element limit")
    args = parser.parse_args(argv)
    for folder in args.folders:
        try:
            old, new = rebucket(folder, write=args.write, max_elements=args.max_elements)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        state = "unchanged" if old == new else ("rewritten" if args.write else "would change")
        print(f"{folder}: {state}: {len(old)} buckets {old} -> {len(new)} buckets {new}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
