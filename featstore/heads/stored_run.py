"""A stored head's outputs for contents already in the store, whatever its kind: a fine-tuned head reads their
stored cut activations (finetune.py), every other head their pooled vectors."""
from __future__ import annotations

import numpy as np

from featstore.heads.program import Program


def outputs_for(store, program: Program, record: dict, hashes: list[str], vectors: np.ndarray) -> np.ndarray:
    """`program`'s outputs for the contents `hashes`, whose pooled vectors are `vectors` (row for row)."""
    if record["kind"] == "finetune":
        from featstore.heads.finetune import run_stored

        return run_stored(store, program, record, list(hashes))
    return program.run(vectors)


def chunk_for(record: dict, pooled: int = 16_384) -> int:
    """How many contents to score at once: fewer for a fine-tuned head (its activations are ~100x a vector)."""
    return 512 if record["kind"] == "finetune" else pooled
