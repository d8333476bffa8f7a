"""Side adapters at compile time: insert them, warm them up on the user's source data, plan their update.

``add_adapters(graph, data, steps)`` inserts a residual side block that starts as the identity after
every conv block (passes/insert_adapters.py: a 1x1 conv, or with ``rank`` a C->r->C bottleneck), so the
network computes exactly what it did. With source data (an .npz holding ``x`` [N, ...] shaped like the
model input and, optionally, integer labels ``y`` [N]) the blocks are warmed up in torch, everything
else frozen: Adam, batches of 64, on inputs with light noise and contrast jitter (so the blocks learn
something the frozen network has not), with cross-entropy to the labels when there are labels, else
the KL divergence to the frozen model's predictions on the clean inputs. Without data the blocks stay at identity.

The plan (manifest ``adapt.adapter``) names the blocks the device trains, their parameters, the logits,
and the taps the device's backward pass needs (``backprop.needed_values``) plus each trained block's
side output (for the self-distillation penalty). With a memory budget (``--adapt-memory``) only the
deepest blocks whose step fits are trained on the device (the backward then stops at the first of
them, so fewer values are kept); the others keep their warmed-up weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from edgert import ir
from edgert.compilers.passes.insert_adapters import Adapter, block_ends, insert_adapters
from edgert.errors import EdgertError, InputError

WARMUP_BATCH = 64


def check_classifier(g: ir.Graph) -> int:
    """Number of classes of a single-input model with one [N, classes] output; else one clear error."""
    specs = g.infer_specs()
    if len(g.inputs) != 1 or len(g.outputs) != 1 or specs[g.outputs[0]].rank != 2:
        raise EdgertError(f"--adapters needs a classifier with one input and one [N, classes] output; this "
                          f"model has inputs {[n for n, _ in g.inputs]} and outputs "
                          f"{[(o, specs[o].shape) for o in g.outputs]}")
    return int(specs[g.outputs[0]].shape[1])


def load_adapter_data(source: str | Path | Mapping[str, np.ndarray], spec: ir.TensorSpec,
                      classes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` as float32 and ``y`` (int64, or None) from an .npz path or a mapping; checked against the model."""
    fix = f"give an .npz with x shaped [N, {', '.join(map(str, spec.shape[1:]))}] and optionally integer labels y [N]"
    if isinstance(source, Mapping):
        arrays = dict(source)
    else:
        try:
            with np.load(source, allow_pickle=False) as z:
                if not hasattr(z, "files"):
                    raise ValueError("it holds one array (.npy), not named arrays")
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as e:
            raise InputError(f"cannot read adapter data {source}: {e}; {fix}") from None
    problems = []
    if "x" not in arrays:
        problems.append(f"no array 'x' (it has {sorted(arrays)})")
    if set(arrays) - {"x", "y"}:
        problems.append(f"unknown arrays {sorted(set(arrays) - {'x', 'y'})}")
    x, y = arrays.get("x"), arrays.get("y")
    if x is not None:
        x = np.asarray(x)
        if x.ndim != spec.rank or tuple(x.shape[1:]) != spec.shape[1:] or len(x) == 0:
            problems.append(f"x has shape {x.shape}, the model input is "
                            f"{'x'.join('N' if d is None else str(d) for d in spec.shape)}")
        elif not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
            problems.append(f"x must hold finite floats, got {x.dtype}"
                            + (" with NaN or Inf" if np.issubdtype(x.dtype, np.floating) else ""))
    if y is not None:
        y = np.asarray(y)
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
            problems.append(f"y must be integer class labels [N], got {y.dtype} {y.shape}")
        elif x is not None and len(y) != len(x):
            problems.append(f"y has {len(y)} labels for {len(x)} samples of x")
        elif len(y) and (y.min() < 0 or y.max() >= classes):
            problems.append(f"y holds labels in [{y.min()}, {y.max()}], the model has {classes} classes")
    if problems:
        raise InputError(f"adapter data {'(mapping)' if isinstance(source, Mapping) else source}: "
                         f"{'; '.join(problems)}; {fix}")
    return x.astype(np.float32), None if y is None else y.astype(np.int64)


def warm_up(g: ir.Graph, adapters: list[Adapter], x: np.ndarray, y: np.ndarray | None, steps: int,
            say: Callable[[str], None], lr: float = 1e-3, seed: int = 0) -> tuple[ir.Graph, dict[str, Any]]:
    """``g`` with its adapter parameters trained on (x, y) in torch; every other parameter unchanged."""
    import torch
    import torch.nn.functional as F

    from edgert.compilers.torch_graph import check_trainable, run_graph_torch

    check_trainable(g)
    gen = torch.Generator().manual_seed(seed)
    names = [p for a in adapters for p in a.params]
    params = {k: torch.from_numpy(np.array(v)) for k, v in g.params.items()}
    for k in names:
        params[k].requires_grad_(True)
    inp, out = g.inputs[0][0], g.outputs[0]

    def logits(xb: torch.Tensor) -> torch.Tensor:
        return run_graph_torch(g, {inp: xb}, params)[out]

    xt = torch.from_numpy(x)
    with torch.no_grad():
        before = torch.cat([logits(xt[i:i + 256]) for i in range(0, len(xt), 256)])
    teacher = before.softmax(1)
    labels = None if y is None else torch.from_numpy(y)
    scale = float(xt.std()) or 1.0
    opt = torch.optim.Adam([params[k] for k in names], lr=lr)
    kind = "cross-entropy to the labels" if labels is not None else "distillation to the frozen model"
    first = last = 0.0
    for step in range(1, steps + 1):
        idx = torch.randint(len(xt), (min(WARMUP_BATCH, len(xt)),), generator=gen)
        xb = xt[idx]
        shape = (len(xb),) + (1,) * (xb.ndim - 1)
        mean = xb.mean(dim=tuple(range(1, xb.ndim)), keepdim=True)
        contrast = 0.5 + torch.rand(shape, generator=gen)                  # in [0.5, 1.5)
        noise = 0.5 * scale * torch.rand(shape, generator=gen) * torch.randn(xb.shape, generator=gen)
        z = logits(mean + (xb - mean) * contrast + noise)
        if labels is not None:
            loss = F.cross_entropy(z, labels[idx])
        else:
            loss = F.kl_div(z.log_softmax(1), teacher[idx], reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        last = loss.item()
        first = last if step == 1 else first
        if step % 50 == 0 or step == steps:
            say(f"warming up {len(adapters)} adapters on {len(x)} samples ({kind}): step {step}/{steps}, "
                f"loss {last:.4f}")
    with torch.no_grad():
        after = torch.cat([logits(xt[i:i + 256]) for i in range(0, len(xt), 256)])
    ref = labels if labels is not None else before.argmax(1)
    summary = {"steps": steps, "samples": len(x), "loss": kind, "loss_first": first, "loss_last": last,
               "scored_against": "labels" if labels is not None else "frozen predictions",
               "clean_accuracy_before": float((before.argmax(1) == ref).float().mean()),
               "clean_accuracy_after": float((after.argmax(1) == ref).float().mean())}
    new = dict(g.params)
    new.update({k: params[k].detach().numpy().astype(np.float32) for k in names})
    return ir.Graph(g.inputs, g.nodes, g.outputs, new).validate(), summary


def step_walk(g: ir.Graph, blocks: list[Adapter]) -> tuple[list[str], list[str], tuple[str, ...], tuple[str, ...]]:
    """The device step's backward for these trained blocks: (seeds, wanted names, values kept besides
    what the walk reads, cheap values given rather than recomputed).

    One bottleneck block: the walk goes from the logits to the block's output only, and the block's
    own gradients come from its input h and bottleneck values (adapter.bottleneck_grads: the side
    output is recomputed per pixel, so it is neither kept nor seeded). Otherwise: seeds at the logits
    and at each side output (the L1 term), the walk to the blocks' parameters, each block's input given.
    """
    if len(blocks) == 1 and blocks[0].rank is not None:
        a = blocks[0]
        return [g.outputs[0]], [a.output], (a.after, a.mid), ()
    return ([g.outputs[0]] + [a.side for a in blocks], [p for a in blocks for p in a.params],
            tuple(a.side for a in blocks), tuple(a.after for a in blocks))


def plan_blocks(g: ir.Graph, rank: int | None, budget: int | None,
                batch: int) -> tuple[ir.Graph, list[Adapter], int, dict]:
    """``g`` with side blocks, the blocks, how many of the deepest the device trains and that step's
    estimate at ``batch`` samples: all without a budget, else as many as fit ``budget`` bytes (the
    trained ones at ``rank``, the others full 1x1 convs); an EdgertError naming a fix when none fits."""
    from edgert.compilers.adapt_memory import size_text, step_estimate

    count = len(block_ends(g))
    if not count:
        raise EdgertError("--adapters found no conv block to attach a side block to (it adds one after "
                          "each conv2d and its BatchNorm/ReLU); compile this model without --adapters")
    need = 0
    for k in range(count, 0, -1):
        gk, adapters = insert_adapters(g, [None] * (count - k) + [rank] * k)
        blocks = adapters[-k:]
        names = [p for a in blocks for p in a.params]
        seeds, wrt, kept, given = step_walk(gk, blocks)
        est = step_estimate(gk, seeds, wrt, sum(int(gk.params[p].size) for p in names), batch, kept, given)
        if budget is None or est["step_peak"] <= budget:
            return gk, adapters, k, est
        need = est["step_peak"]
    last = adapters[-1]
    raise EdgertError(f"--adapt-memory {size_text(budget)} is too small for the adapter step at batch {batch}: "
                      f"the last side block alone needs about {size_text(need)} ({last.channels} channels, "
                      f"{'a full 1x1 conv' if last.rank is None else f'rank {last.rank}'}); give a larger "
                      "budget or a smaller --adapter-rank" + (" or --adapt-batch" if batch > 1 else ""))


def add_adapters(g: ir.Graph, data: str | Path | Mapping[str, np.ndarray] | None = None, steps: int = 300,
                 progress: Callable[[str], None] | None = None, rank: int | None = None,
                 budget: int | None = None, batch: int = 1) -> tuple[ir.Graph, dict[str, Any]]:
    """``g`` with side adapters (warmed up on ``data`` when given) and the manifest plan for them.

    Every block is warmed up; the device trains the deepest ones whose step fits ``budget`` bytes at
    ``batch`` samples (all without a budget), the others keep their warmed-up weights. ``rank`` r makes
    the trained blocks C->r->C bottlenecks; untrained ones stay full 1x1 convs.
    """
    from edgert.runtime.adapt.backprop import needed_values

    say = progress or (lambda msg: None)
    classes = check_classifier(g)
    if steps < 1:
        raise EdgertError(f"adapter warm-up steps={steps} must be >= 1")
    if rank is not None and rank < 1:
        raise EdgertError(f"--adapter-rank {rank} must be >= 1 (leave it out for full 1x1 side blocks)")
    source = None if data is None else load_adapter_data(data, g.inputs[0][1], classes)
    g, adapters, k, est = plan_blocks(g, rank, budget, batch)
    trained = adapters[-k:]
    summary = None
    if source is not None:
        g, summary = warm_up(g, adapters, *source, steps, say)
    names = [p for a in trained for p in a.params]
    out = g.outputs[0]
    seeds, wrt, kept, given = step_walk(g, trained)
    needed = needed_values(g, seeds, wrt, given)
    inputs = {n for n, _ in g.inputs}
    taps = [t for t in needed if t not in g.params and t not in inputs and t != out]
    plan = {"blocks": [a.to_json() for a in trained], "frozen_blocks": [a.name for a in adapters[:-len(trained)]],
            "params": names, "logits": out, "taps": list(dict.fromkeys(taps + list(kept))),
            "walk": "bottleneck" if wrt == [trained[0].output] else "graph",
            "budget_bytes": budget, "batch": batch, "estimate_bytes": est, "warmup": summary}
    return g, plan
