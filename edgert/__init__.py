"""edgert: compile trained PyTorch models into artifacts that run, adapt and profile on edge boards.

``import edgert`` stays light (no torch, no TVM): the heavy parts load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from edgert.artifact import Artifact
    from edgert.runtime.engine import Engine


def compile(model: Any, example_input: Any = None, target: str = "x86-host", fold_bn: bool = True,
            adapt_memory: str | int | None = None, adapt_batch: int = 1, adapters: bool = False,
            adapter_data: Any = None, adapter_steps: int = 300, adapter_rank: int | None = None,
            dt: float | None = None) -> "Artifact":
    """Compile an nn.Module, a .pt2, .onnx or .nir file for ``target``; returns an Artifact (``.save(path)``).

    ``dt`` is the time step in seconds of a .nir file (not needed for edgert's own NIR exports).

    ``adapt_memory`` ("32MB") bounds the entropy adaptation step's memory at ``adapt_batch`` samples
    (with ``adapters``: the adapter step's).
    ``adapters=True`` adds side blocks for the opt-in ``adapter`` policy, warmed up on ``adapter_data``
    (an .npz path, or a mapping with ``x`` and optional labels ``y``) when given; ``adapter_rank`` r
    makes them C->r->C bottlenecks.
    """
    from edgert.compilers.compile import compile_model
    return compile_model(model, example_input, target, fold_bn, adapt_memory=adapt_memory,
                         adapt_batch=adapt_batch, adapters=adapters, adapter_data=adapter_data,
                         adapter_steps=adapter_steps, adapter_rank=adapter_rank, dt=dt)


def load(path: Any, expect_target: str | None = None) -> "Engine":
    """Load a verified .edgert file; ``.run(x)`` runs it."""
    from edgert.runtime.engine import load as _load
    return _load(path, expect_target)
