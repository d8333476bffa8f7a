"""Peak memory of a PyTorch gradient step, by the same parts as edgert's (edgert/runtime/adapt/memory.py).

    kept       tensors autograd saves for the backward (saved_tensors_hooks), counted once per storage,
               parameters and buffers left out (edgert does not count the model's weights either)
    optimizer  the optimizer's state tensors before the step (Adam: exp_avg, exp_avg_sq, step)
    transient  peak increase of allocated CPU memory during backward() and optimizer.step(), from the
               profiler's allocation events (torch allocations are invisible to tracemalloc);
               the gradients, allocated there, are part of it
    step_peak  kept + optimizer + transient
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Callable

import torch


def profiled_peak(fn: Callable[[], object]) -> int:
    """Peak bytes of CPU memory ``fn()`` allocates above what was allocated when it started."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    finally:
        os.remove(path)
    level = peak = 0
    for e in sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"]):
        if e["args"].get("Device Type", 0) == 0:  # CPU
            level += e["args"]["Bytes"]
            peak = max(peak, level)
    return peak


def saved_bytes(fn: Callable[[], torch.Tensor], model: torch.nn.Module) -> tuple[torch.Tensor, int]:
    """``fn()`` (a forward building a graph) and the bytes of what autograd saved, once per storage."""
    weights = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in weights:
            saved[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(saved.values())


def step_memory(loss_fn: Callable[[], torch.Tensor], model: torch.nn.Module,
                opt: torch.optim.Optimizer) -> dict[str, int]:
    """One step (forward, backward, optimizer step) of ``loss_fn`` measured by parts.

    Run a step first so the optimizer's state exists (it is persistent; the measured step keeps it).
    """
    loss, kept = saved_bytes(loss_fn, model)
    optimizer = sum(t.untyped_storage().nbytes() for st in opt.state.values() for t in st.values()
                    if isinstance(t, torch.Tensor))

    def update() -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    transient = profiled_peak(update)
    grads = sum(p.grad.untyped_storage().nbytes() for g in opt.param_groups for p in g["params"]
                if p.grad is not None)
    return {"kept": kept, "optimizer": optimizer, "gradients": grads, "transient": transient,
            "step_peak": kept + optimizer + transient}
