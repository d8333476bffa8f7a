"""Engine: load a verified artifact and run it. Needs numpy and the TVM runtime, never torch."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgert import ir
from edgert.artifact import Artifact, aligned
from edgert.errors import ArtifactSchemaError, ArtifactTargetError, EdgertError, InputError
from edgert.runtime.kernels import CHAIN_KERNELS, CHECKS_FINITE, NonFinite

BACKENDS = ("tvm", "numba")
# Left to edgert, a run uses 1 + (its MACs in TVM stages) // MACS_PER_THREAD threads, at most the cores.
# Measured on 2 cores (AMD EPYC, digits CNN at 0.6 M MACs a sample): a second TVM thread costs more than
# it saves below about 2.4 M MACs a call (batch 4: a tie; batch 1: 61 us on one thread, 90 us on two)
# and halves the time at 19 M (batch 32: 857 vs 436 us; the ResNet block, 75 M at batch 1: 2.0 vs 1.15 ms).
MACS_PER_THREAD = 3_000_000
_FAST_SHAPES = 8  # input shapes (batch sizes) given a staged fast path; the TVM runner binds as many


def _thread_setting(threads: int | None) -> int | None:
    """The asked-for number of TVM threads: ``threads``, else $EDGERT_THREADS, else TVM_NUM_THREADS set
    outside edgert; None when none is given (edgert then picks per run, see MACS_PER_THREAD)."""
    from edgert.runtime.tvm_runner import tvm_num_threads_setting

    name, value = "threads", threads
    if value is None:
        name, value = "EDGERT_THREADS", os.environ.get("EDGERT_THREADS")
    if value is None:
        name, value = "TVM_NUM_THREADS", tvm_num_threads_setting()
    if value is None:
        return None
    n = value
    if isinstance(value, str) and name != "threads":
        try:
            n = int(value.strip())
        except ValueError:
            n = None
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        fix = ("pass threads=N with N >= 1 (e.g. threads=1), or threads=None for edgert's choice" if name == "threads"
               else f"set {name} to a whole number >= 1 (e.g. {name}=1), or unset it for edgert's choice")
        raise EdgertError(f"{name}={value!r} is not a number of threads: {fix}")
    return n


def _finite_dot(x: np.ndarray) -> bool:
    """Whether x . x is finite: always when every value is, unless the sum overflows."""
    v = x.reshape(-1)
    return math.isfinite(np.dot(v, v)) if x.dtype.char in "fd" else bool(np.isfinite(x).all())  # float32, float64


def _macs_per_sample(graph: ir.Graph, names: Sequence[str]) -> int:
    """Multiply-accumulates of nodes ``names`` for one sample (the profiler's counts)."""
    from edgert.runtime.profile import count_ops

    specs = graph.infer_specs()
    nodes = {n.name: n for n in graph.nodes}
    total = 0
    for name in names:
        node = nodes[name]
        ops = count_ops(node, [specs[i] for i in node.inputs], specs[node.output], 1)
        total += sum(v for k, v in ops.items() if k not in ("elementwise", "accumulate"))
    return total


class _TvmStage:
    """One TVM library computing a subgraph: named inputs in, named outputs out.

    A stage with adaptation taps has a second library that also returns them; it is loaded on first
    use. Each library gets new parameter values when it next runs, so a policy that only runs with
    taps never pays for re-packing the other library's weights.
    """

    def __init__(self, entry: dict, artifact: Artifact):
        self.entry = entry
        self.inputs, self.outputs, self.params = entry["inputs"], entry["outputs"], entry["params"]
        self.taps_outputs = entry.get("taps", {}).get("outputs", [])  # the taps library's outputs, in order
        self._libraries = artifact.libraries
        self._values = [artifact.params[k] for k in self.params]
        self._runners: dict[bool, Any] = {}
        self._stale: dict[bool, set[int]] = {}
        self._runner(False)  # load the inference library now: a bad library fails at load, not at first run

    def _runner(self, taps: bool):
        runner = self._runners.get(taps)
        if runner is None:
            from edgert.runtime.tvm_runner import TvmRunner  # imports tvm: keep it off `import edgert`

            lib = self.entry["taps"]["library"] if taps else self.entry["library"]
            runner = self._runners[taps] = TvmRunner(self._libraries[lib], self._values)
            self._stale[taps] = set()
        elif self._stale[taps]:
            runner.update_params({i: self._values[i] for i in self._stale[taps]})
            self._stale[taps] = set()
        return runner

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        changed = {i for i, k in enumerate(self.params) if k in params}
        for i in changed:
            self._values[i] = params[self.params[i]]
        for stale in self._stale.values():
            stale |= changed

    def profile(self, inputs: list[np.ndarray], repeat: int, best: bool = False) -> list[tuple[str, float]]:
        return self._runner(False).profile(inputs, repeat, best)

    def run(self, inputs: list[np.ndarray], taps: bool = False) -> list[np.ndarray]:
        return self._runner(taps and bool(self.taps_outputs)).run(inputs)

    def __call__(self, env: dict[str, np.ndarray], taps: bool = False) -> None:
        names = self.taps_outputs if taps and self.taps_outputs else self.outputs
        env.update(zip(names, self.run([env[i] for i in self.inputs], taps)))


class _KernelStage:
    """One node run by a kernel backend (Numba), with its own state across steps."""

    def __init__(self, node: ir.Node, params: dict[str, np.ndarray]):
        from edgert.runtime.kernels import SEQUENCE_KERNELS, kernel_for

        self.node, self.fn, self.params, self.state = node, kernel_for(node), params, {}
        self.seq = SEQUENCE_KERNELS.get(node.op)

    def __call__(self, env: dict[str, np.ndarray], taps: bool = False) -> None:
        args = [env[i] if i in env else self.params[i] for i in self.node.inputs]
        env[self.node.output] = self.fn(self.node, args, self.state)

    def run_sequence(self, env: dict[str, np.ndarray], steps: int) -> None:
        """All ``steps`` time steps at once; activations in ``env`` are shaped [T, batch, ...]."""
        if self.seq is not None:
            env[self.node.output] = self.seq(self.node, [env[i] if i in env else self.params[i]
                                                         for i in self.node.inputs], self.state)
            return
        acts = [i in env for i in self.node.inputs]
        args = [env[i] if a else self.params[i] for i, a in zip(self.node.inputs, acts)]
        if not self.node.stateful:  # a stateless kernel node: time folds into the batch
            y = self.fn(self.node, [x.reshape((-1,) + x.shape[2:]) if a else x for x, a in zip(args, acts)],
                        self.state)
            y = y.reshape((steps, -1) + y.shape[1:])
        else:
            y = np.stack([self.fn(self.node, [x[t] if a else x for x, a in zip(args, acts)], self.state)
                          for t in range(steps)])
        env[self.node.output] = y


class Engine:
    """A loaded artifact, ready to run; one Engine per stream of inputs (it holds spiking state).

    ``threads``: how many threads TVM kernels run on (``threads_for``). None: $EDGERT_THREADS, else
    TVM_NUM_THREADS when set outside edgert, else edgert's choice per run (one thread for small work,
    see MACS_PER_THREAD). TVM's thread settings are per process, so the last engine to run sets them.
    """

    def __init__(self, artifact: Artifact, expect_target: str | None = None, threads: int | None = None):
        self.threads = _thread_setting(threads)
        self.artifact = artifact
        m = artifact.manifest
        target = m["target"]
        if expect_target is not None and target["name"] != expect_target:
            raise ArtifactTargetError(f"artifact was compiled for target {target['name']!r}, not "
                                      f"{expect_target!r}; recompile with --target {expect_target}")
        unknown = sorted({s["backend"] for s in m["stages"] if s["backend"] not in BACKENDS})
        if unknown:
            raise ArtifactSchemaError(f"artifact uses backends {unknown} that this edgert does not have "
                                      f"(it has {list(BACKENDS)}); upgrade edgert on this device")
        if "firmware" in m:
            raise ArtifactTargetError(
                f"artifact for target {target['name']!r} is microcontroller firmware, not code for this "
                f"machine; run it on the emulated board ({m['firmware']['machine']}) with `edgert run` or "
                "edgert.runtime.mcu.McuRunner, or take its C sources with `edgert export-c`")
        if not artifact.runnable:
            raise ArtifactTargetError(
                f"artifact for target {target['name']!r} holds no compiled code (an estimate-only "
                "artifact); it can be profiled with `edgert profile` but not run")
        if target.get("arch") != platform.machine():
            raise ArtifactTargetError(
                f"artifact was compiled for target {target['name']!r} ({target.get('arch')}), but this "
                f"machine is {platform.machine()}; run it on that board, or recompile with a target "
                "for this machine (`edgert targets` lists them)")
        self.inputs = [(i["name"], ir.TensorSpec.from_json(i)) for i in m["inputs"]]
        self.outputs = [(o["name"], ir.TensorSpec.from_json(o)) for o in m["outputs"]]
        self._input_dtypes = [np.dtype(spec.dtype) for _, spec in self.inputs]
        graph = artifact.graph
        nodes = {n.name: n for n in graph.nodes}
        self.stateful = any(n.stateful for n in graph.nodes)
        self._stages: list = [
            _TvmStage(s, artifact) if s["backend"] == "tvm" else _KernelStage(nodes[s["nodes"][0]], artifact.params)
            for s in m["stages"]]
        self._kernel_checked = self._inputs_checked_by_kernel()
        self._chain, self._chain_args = self._chain_kernel(), None
        self._use_threads = None
        if any(isinstance(s, _TvmStage) for s in self._stages):
            from edgert.runtime.tvm_runner import cpu_cores, use_threads

            self._use_threads, self._cores = use_threads, cpu_cores()
            self._macs = 0 if self.threads is not None else _macs_per_sample(
                graph, [n for s in m["stages"] if s["backend"] == "tvm" for n in s["nodes"]])
        # a graph that is one TVM stage taking the graph's inputs and giving its outputs, in order, runs
        # that stage without the dict of named values
        first = self._stages[0] if self._stages else None
        self._whole = first if (len(self._stages) == 1 and isinstance(first, _TvmStage)
                                and first.inputs == [n for n, _ in self.inputs]
                                and first.outputs == [n for n, _ in self.outputs]) else None
        self._fast: dict[tuple, Any] = {}  # input shape -> run for that shape (see _fast_call), or None
        # the input whose first axis is the batch (None: every input has a fixed size)
        self._batch_input = next((i for i, (_, spec) in enumerate(self.inputs)
                                  if spec.rank and spec.shape[0] is None), None)

    def _inputs_checked_by_kernel(self) -> tuple[bool, ...]:
        """Per model input: whether only the first stage reads it, as the current of a sequence kernel
        that checks it for NaN and Inf itself (runtime.kernels.CHECKS_FINITE); run skips its own pass."""
        first = self._stages[0] if self._stages else None
        if not (isinstance(first, _KernelStage) and first.seq is not None and first.node.op in CHECKS_FINITE):
            return (False,) * len(self.inputs)
        read = [i for s in self._stages[1:] for i in (s.node.inputs if isinstance(s, _KernelStage) else s.inputs)]
        read += list(first.node.inputs[1:]) + [n for n, _ in self.outputs]
        return tuple(name == first.node.inputs[0] and name not in read for name, _ in self.inputs)

    def _chain_kernel(self):
        """The chain kernel (runtime.kernels.CHAIN_KERNELS) when the model is one input through stages of
        one op, each reading only the one before (the rest parameters), to one output; else None."""
        stages = self._stages
        if (len(self.inputs) != 1 or len(self.outputs) != 1 or not stages
                or not all(isinstance(s, _KernelStage) for s in stages)
                or stages[0].node.op not in CHAIN_KERNELS or self.inputs[0][1].rank != 2):
            return None
        names = [self.inputs[0][0]] + [s.node.output for s in stages]
        for s, before in zip(stages, names):
            if (s.node.op != stages[0].node.op or s.node.inputs[0] != before
                    or not all(i in s.params for i in s.node.inputs[1:])):
                return None
        return CHAIN_KERNELS[stages[0].node.op] if names[-1] == self.outputs[0][0] else None

    def _run_chain(self, xs: Sequence[np.ndarray]) -> np.ndarray | None:
        """``run`` through the chain kernel, or None when it does not take this input (the node-by-node
        path then validates it and runs)."""
        x = xs[0] if len(xs) == 1 else None
        if not (type(x) is np.ndarray and x.dtype == self._input_dtypes[0] and x.ndim == 3  # noqa: E721
                and x.shape[0] and x.shape[1] and x.shape[2] == self.inputs[0][1].shape[1]
                and x.flags.c_contiguous):
            return None
        stages = self._stages
        if self._chain_args is None:  # made again after set_params
            self._chain_args = [s.node for s in stages], [[s.params[i] for i in s.node.inputs[1:]] for s in stages]
        return self._chain(*self._chain_args, [s.state for s in stages], x)  # profile swaps the state dicts

    def threads_for(self, samples: int = 1) -> int:
        """TVM threads for a run on ``samples`` samples: the setting, else one per MACS_PER_THREAD MACs
        in TVM stages (and one more), at most this machine's physical cores."""
        if self.threads is not None:
            return self.threads
        if self._use_threads is None:
            return 1
        return min(self._cores, 1 + self._macs * samples // MACS_PER_THREAD)

    def _set_threads(self, xs: Sequence[np.ndarray]) -> None:
        if self._use_threads is not None:
            i = self._batch_input
            self._use_threads(self.threads_for(xs[i].shape[0] if i is not None else 1))

    @property
    def params(self) -> dict[str, np.ndarray]:
        return dict(self.artifact.params)

    def _check(self, xs: Sequence[np.ndarray], unchecked: Sequence[bool] = ()) -> list[np.ndarray]:
        """xs validated against the model's inputs (contiguous); the finite check is left to the kernel
        for inputs flagged in ``unchecked``."""
        if len(xs) != len(self.inputs):
            raise InputError(f"model takes {len(self.inputs)} inputs "
                             f"({', '.join(n for n, _ in self.inputs)}), got {len(xs)}")
        out = []
        batch = None
        for j, (x, (name, spec), dtype) in enumerate(zip(xs, self.inputs, self._input_dtypes)):
            if not isinstance(x, np.ndarray):
                raise InputError(f"input {name!r} must be a numpy array, got {type(x).__name__}")
            if x.dtype != dtype:
                raise InputError(f"input {name!r} has dtype {x.dtype}, the model expects {spec.dtype}; "
                                 f"convert it with x.astype(np.{spec.dtype})")
            ok = x.ndim == spec.rank and all(d is None or d == s for d, s in zip(spec.shape, x.shape))
            if not ok:
                want = "x".join("N" if d is None else str(d) for d in spec.shape)
                raise InputError(f"input {name!r} has shape {'x'.join(map(str, x.shape))}, the model "
                                 f"expects {want} (N = any batch size >= 1)")
            if x.ndim and x.shape[0] == 0:
                raise InputError(f"input {name!r} has an empty batch; give at least one sample")
            if batch is not None and spec.shape[0] is None and x.shape[0] != batch:
                raise InputError(f"inputs disagree on the batch size: {batch} vs {x.shape[0]}")
            batch = x.shape[0] if spec.shape[0] is None else batch
            # a sum of squares is NaN or Inf when any value is; one BLAS dot, no temporary array and no
            # ufunc reduction (each costs microseconds at batch 1). Only when it is not finite (or
            # finite values overflow it) look value by value
            skip = j < len(unchecked) and unchecked[j]
            if dtype.kind == "f" and not skip and not _finite_dot(x) and not np.isfinite(x).all():
                bad = np.argwhere(~np.isfinite(x))[0]
                raise InputError(f"input {name!r} holds NaN or Inf (first at index {tuple(bad.tolist())}); "
                                 "clean the sensor data before inference")
            out.append(np.ascontiguousarray(x))
        return out

    def _forward(self, xs: list[np.ndarray], taps: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
        self._set_threads(xs)
        if taps is None and self._whole is not None:
            return self._whole.run(xs)
        env = dict(zip((n for n, _ in self.inputs), xs))
        for stage in self._stages:
            stage(env, taps is not None)
        if taps is not None:
            taps.update((t, env[t]) for t in self.artifact.manifest.get("adapt", {}).get("taps", ()))
        return [env[n] for n, _ in self.outputs]

    def run_with_taps(self, *xs: np.ndarray) -> tuple[np.ndarray | list[np.ndarray], dict[str, np.ndarray]]:
        """``run`` one batch and also return the adaptation taps the manifest names (BatchNorm inputs or
        outputs, classifier features) that the compiler kept as stage outputs. A stateful model runs
        as in ``run`` (inputs [T, batch, ...], reset first) and its taps are shaped [T, batch, ...]."""
        taps: dict[str, np.ndarray] = {}
        if self.stateful:
            return self._run_stateful(xs, taps), taps
        return self._single(self._forward(self._check(xs), taps)), taps

    @staticmethod
    def _single(ys: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        return ys[0] if len(ys) == 1 else ys

    def run(self, *xs: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Run one batch; returns the output array, or a list when the model has several outputs.

        A stateful (spiking) model takes inputs shaped [T, batch, ...]: it is reset, stepped through
        the T time steps, and the outputs of every step are stacked along a new first axis.
        """
        if self.stateful:
            return self._run_stateful(xs)
        if len(xs) == 1 and type(xs[0]) is np.ndarray:  # noqa: E721 (a subclass takes the checked path)
            fast = self._fast.get(xs[0].shape)
            if fast is not None and xs[0].dtype == self._input_dtypes[0]:
                return fast(xs[0])
        ys = self._single(self._forward(self._check(xs)))
        if (self._whole is not None and len(xs) == 1 and len(self.outputs) == 1
                and xs[0].shape not in self._fast and len(self._fast) < _FAST_SHAPES):
            self._fast[xs[0].shape] = self._fast_call(xs[0])
        return ys

    def _fast_call(self, x: np.ndarray):
        """``run`` for one input of ``x``'s shape and dtype, checked once already: copy it into the
        staging buffer of the runner's bound VM closure, check finiteness there (one BLAS dot), call.
        None when the input is too large to stage. Dropped by set_params (parameters may be repacked)."""
        runner = self._whole._runner(False)
        bound = runner.bound([x])
        if bound is None:
            return None
        if isinstance(bound[2], set):  # the runner finds which outputs alias on its first call
            runner.run([x])
        copy = bound[2] == [True]  # the output is an input or parameter passed through: never share it
        buf, call = bound[0][0], bound[1]
        floating = buf.dtype.kind == "f"
        threads = self.threads_for(x.shape[0] if self._batch_input is not None else 1)
        use_threads = self._use_threads

        def fast(x: np.ndarray) -> np.ndarray:
            buf[...] = x
            if floating and not _finite_dot(buf):  # the checked path names the first bad value
                return self._single(self._forward(self._check((x,))))
            use_threads(threads)
            y = np.from_dlpack(call()[0])
            return y.copy() if copy else y

        return fast

    def _run_stateful(self, xs: Sequence[np.ndarray], taps: dict[str, np.ndarray] | None = None):
        """``run`` of a stateful model; fills ``taps`` (each [T, batch, ...]) when given."""
        if self._chain is not None and taps is None:
            y = self._run_chain(xs)
            if y is not None:
                return y
        if any(not isinstance(x, np.ndarray) or x.ndim == 0 for x in xs):
            raise InputError("a spiking model takes numpy arrays shaped [T, batch, ...]")
        steps = {x.shape[0] for x in xs}
        if len(steps) != 1:
            raise InputError(f"inputs disagree on the number of time steps: {sorted(steps)}")
        self.reset()
        if all(spec.shape[0] is None for _, spec in self.inputs) and all(x.ndim >= 2 for x in xs):
            return self._single(self._run_layerwise(xs, steps.pop(), taps))
        n = steps.pop()
        per_taps = [{} if taps is not None else None for _ in range(n)]
        per_step = [self._forward(self._check([x[t] for x in xs]), per_taps[t]) for t in range(n)]
        if taps is not None:
            taps.update((k, np.stack([tp[k] for tp in per_taps])) for k in per_taps[0])
        return self._single([np.stack([ys[k] for ys in per_step]) for k in range(len(self.outputs))])

    def _run_layerwise(self, xs: Sequence[np.ndarray], steps: int,
                       taps: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
        """Stage by stage over all time steps: state lives inside nodes and stages are in topological
        order, so this equals stepping; stateless stages see time folded into the batch."""
        flat = self._check([x.reshape((-1,) + x.shape[2:]) for x in xs], self._kernel_checked)
        self._set_threads(flat)
        env = {n: x.reshape((steps, -1) + x.shape[1:]) for (n, _), x in zip(self.inputs, flat)}
        with_taps = taps is not None
        for stage in self._stages:
            if isinstance(stage, _TvmStage):
                names = stage.taps_outputs if with_taps and stage.taps_outputs else stage.outputs
                ys = stage.run([env[i].reshape((-1,) + env[i].shape[2:]) for i in stage.inputs], with_taps)
                env.update((o, y.reshape((steps, -1) + y.shape[1:])) for o, y in zip(names, ys))
            else:
                try:
                    stage.run_sequence(env, steps)
                except NonFinite:
                    if stage is self._stages[0]:  # a model input it checked itself: name the bad value
                        self._check(flat)
                    raise
        if with_taps:
            taps.update((t, env[t]) for t in self.artifact.manifest.get("adapt", {}).get("taps", ()))
        return [env[n] for n, _ in self.outputs]

    def node_state(self) -> dict[str, dict]:
        """State of each stateful node after the last run or step: arrays (e.g. "mem") and counts."""
        return {s.node.name: s.state for s in self._stages if isinstance(s, _KernelStage) and s.node.stateful}

    def step(self, *xs: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Advance a stateful model by one time step (inputs shaped [batch, ...]); keeps state."""
        return self._single(self._forward(self._check(xs)))

    def reset(self) -> None:
        """Forget the state of stateful nodes (membranes, synaptic currents)."""
        for stage in self._stages:
            if isinstance(stage, _KernelStage):
                stage.state.clear()

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        """Replace some parameters (same shapes and dtypes), e.g. after an adaptation step."""
        new = dict(self.artifact.params)
        for k, v in params.items():
            if k not in new or new[k].shape != v.shape or new[k].dtype != v.dtype:
                raise InputError(f"parameter {k!r}: expected {new.get(k, np.empty(0)).shape} "
                                 f"{new.get(k, np.empty(0)).dtype}, got {v.shape} {v.dtype}")
            new[k] = aligned(v)
        self._fast.clear()
        self._chain_args = None
        for stage in self._stages:
            if isinstance(stage, _TvmStage):
                stage.set_params(params)
            elif isinstance(stage, _KernelStage):
                stage.params = new
        self.artifact = Artifact(self.artifact.manifest, new, self.artifact.libraries)

    def profile(self, *xs: np.ndarray, repeat: int = 20, best: bool = False) -> list[tuple[str, float]]:
        """Measured seconds per kernel on this machine (median of ``repeat``; with ``best``, the
        least), in execution order.

        TVM kernels are timed alone by TVM's time evaluator; a kernel-backend node is timed as one
        call of its kernel (state is saved and restored around the timing).
        """
        import statistics
        import time

        xs = self._check(xs)
        self._set_threads(xs)
        env = dict(zip((n for n, _ in self.inputs), xs))
        out: list[tuple[str, float]] = []
        for stage in self._stages:
            if isinstance(stage, _TvmStage):
                out += stage.profile([env[i] for i in stage.inputs], repeat, best)
                stage(env)
            else:
                saved = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in stage.state.items()}
                times = []
                for _ in range(repeat):
                    stage.state = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in saved.items()}
                    t0 = time.perf_counter()
                    stage(env)
                    times.append(time.perf_counter() - t0)
                stage.state = saved
                stage(env)
                out.append((stage.node.name, min(times) if best else statistics.median(times)))
        return out

    def kernel_nodes(self) -> dict[str, list[str]]:
        """Kernel name -> the IR nodes it computes (for attributing profile times)."""
        out: dict[str, list[str]] = {}
        for s in self.artifact.manifest["stages"]:
            out.update(s.get("kernels", {}) if s["backend"] == "tvm" else {s["nodes"][0]: s["nodes"]})
        return out


def load(path: str | Path, expect_target: str | None = None, threads: int | None = None) -> Engine:
    """Read, verify and load an .edgert artifact (``threads``: see Engine)."""
    return Engine(Artifact.read(path), expect_target, threads)
