"""Run a library built by edgert's TVM backend: numpy in, numpy out, never torch.

The library holds a Relax VM executable. ``main(<inputs>, <params>)`` returns a tuple of outputs;
when some convolution weights are packed for vector code it also holds
``transform_params(<params>) -> (<packed>)`` and ``main_run(<inputs>, <params>, <packed>)``, and the
runner packs once per parameter set instead of once per call (see tvm_lower.lower_graph).
Parameters are converted to TVM tensors once, so ``set_params`` swaps weights without recompiling.
Small inputs run through a VM closure saved with its arguments bound (staging buffers and parameters),
so a call converts no arguments; when its outputs are small too, the kernels that closure ran once are
replayed on the same tensors, without the VM (its argument checks and allocations cost ~0.5 us each).
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
import warnings
from typing import Sequence

import numpy as np

from edgert._tvm import import_tvm
from edgert.errors import InputError

# Calls the profiler does not report: VM bookkeeping and the shape functions VMShapeLower adds.
_NOT_KERNELS = ("vm.", "shape_func")
_ALIGN = 64  # TVM kernels assume 64-byte aligned buffers; other inputs are copied
# Inputs up to this size are copied into staging buffers bound, with the parameters, to a saved VM
# closure per input shape: the call then converts no arguments (about 1 us per tensor otherwise, and a
# DLPack export per input); a copy of a few KB costs far less. Larger inputs are passed zero-copy.
_BOUND_BYTES = 1 << 18
_BOUND_SHAPES = 8  # saved closures kept (one per input shape: batch sizes seen)
# A bound call whose outputs total at most this many bytes replays its kernels instead (see _replay).
_REPLAY_OUT_BYTES = 1 << 16
# VM builtins that only check arguments, compute shapes or make views and tuples: a call sequence with
# nothing else besides the kernels can be replayed on the tensors one call recorded
_BOOKKEEPING = {"vm.builtin." + b for b in ("alloc_shape_heap", "check_tensor_info", "match_shape", "make_shape",
                                            "alloc_storage", "alloc_tensor", "null_value", "reshape",
                                            "make_tuple", "tuple_getitem")} | {"shape_func"}

# TVM's thread pool (src/runtime/thread_pool.cc) is per OS thread and sized once, when it starts; every
# parallel kernel call asks MaxConcurrency(), which reads TVM_NUM_THREADS anew each time and, when it is
# unset, std::thread::hardware_concurrency() (on Linux an open and read of /sys/devices/system/cpu/online:
# about 9 us per kernel call). At 1 it runs the kernel inline on the calling thread; above 1 the pool runs
# as many tasks as "runtime.config_threadpool" last allowed (at most the pool's size).
_KBIG = 1                      # config_threadpool's affinity mode kBig: TVM's own default
_local = threading.local()     # .pool: the thread count edgert configured this thread's pool for
_written: str | None = None    # the TVM_NUM_THREADS value edgert last wrote
_outside: str | None = None    # TVM_NUM_THREADS as it was before edgert first changed it


def tvm_num_threads_setting() -> str | None:
    """TVM_NUM_THREADS as set outside edgert (None: unset); the values edgert writes do not count."""
    value = os.environ.get("TVM_NUM_THREADS")
    return _outside if _written is not None and value == _written else value


def use_threads(n: int) -> None:
    """Run the TVM kernels this thread calls on ``n`` threads, from the next kernel call on.

    Sets TVM_NUM_THREADS (process-wide; TVM reads it at every parallel call, so 1 takes effect at once,
    thread pool started or not, and starts no pool) and, above 1, sizes this thread's pool with
    "runtime.config_threadpool". A pool cannot grow past the size it started with: if it is already
    smaller than ``n`` this warns and runs on what it has.
    """
    global _written, _outside
    value = str(n)
    if os.environ.get("TVM_NUM_THREADS") != value:
        _outside = tvm_num_threads_setting()
        os.environ["TVM_NUM_THREADS"] = _written = value
    if n > 1 and getattr(_local, "pool", None) != n:
        tvm = import_tvm()
        tvm.get_global_func("runtime.config_threadpool")(_KBIG, n)  # starts the pool (n threads) if need be
        _local.pool = n
        have = tvm.get_global_func("runtime.NumThreads")()
        if have < n:
            warnings.warn(f"TVM's thread pool in this thread started with {have} threads and cannot grow to "
                          f"{n}; set EDGERT_THREADS={n} before the first inference in the process",
                          RuntimeWarning, stacklevel=2)


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start:start + nbytes].view(dtype).reshape(shape)


@functools.lru_cache(maxsize=None)
def cpu_cores() -> int:
    """Physical cores this process may run on (hyper-threads of one core count once)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    try:
        cores = {open(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list").read().strip()
                 for c in cpus}
    except OSError:  # no sysfs topology: count logical CPUs
        return max(1, len(cpus))
    return max(1, len(cores))


class TvmRunner:
    """A loaded TVM library plus its parameters, ready to run on the CPU.

    ``num_threads``: each ``run`` and ``profile`` first calls ``use_threads(num_threads)``. Left as
    None the runner leaves TVM's threads as they are (``Engine`` sets them per run).
    """

    def __init__(self, library: bytes, params: Sequence[np.ndarray], num_threads: int | None = None):
        if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int)
                                        or num_threads < 1):
            raise InputError(f"num_threads={num_threads!r}: give a whole number >= 1, or None")
        self.num_threads = num_threads
        self._tvm = tvm = import_tvm()
        fd, path = tempfile.mkstemp(prefix="edgert-", suffix=".so")  # private: mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(library)
            self._lib = tvm.runtime.load_module(path)
        finally:
            os.unlink(path)  # the loaded code stays mapped; nothing is left behind on disk
        self._dev = tvm.cpu()
        self._vm = tvm.runtime.vm.VirtualMachine(self._lib, self._dev)
        try:
            self._main, self._transform = self._vm["main_run"], self._vm["transform_params"]
        except Exception:  # TVM raises its generic error for a missing function: no packing
            self._main, self._transform = self._vm["main"], None
        self._specs: list[tuple[tuple[int, ...], np.dtype]] = []
        self._params: list = []
        self._staging: dict[int, np.ndarray] = {}
        self._aliased: list[bool] | None = None  # per output: a view of an input or parameter
        self._main_name = "main" if self._transform is None else "main_run"
        # input shapes and dtypes -> [staging arrays, saved VM closure over their tensors and the
        # parameters, which outputs alias an input or parameter (before the first call: the addresses
        # of those)]; rebuilt when the parameter tensors change
        self._bound: dict[tuple, list] = {}
        self.set_params(params, _first=True)

    def set_params(self, params: Sequence[np.ndarray], _first: bool = False) -> None:
        """Replace all parameters (same order, shapes and dtypes as at construction)."""
        params = [np.ascontiguousarray(p) for p in params]
        if not _first:
            if len(params) != len(self._specs):
                raise InputError(f"set_params: the library takes {len(self._specs)} parameters, "
                                 f"got {len(params)}")
            for i, (p, (shape, dtype)) in enumerate(zip(params, self._specs)):
                if p.shape != shape or p.dtype != dtype:
                    raise InputError(f"set_params: parameter {i} must be {shape} {dtype}, got "
                                     f"{p.shape} {p.dtype}")
        self._specs = [(p.shape, p.dtype) for p in params]
        tensors = [self._tvm.runtime.tensor(p, self._dev) for p in params]  # copies: caller may mutate
        self._views = [np.from_dlpack(t) for t in tensors]  # writeable views: update_params copies in
        self._params = tensors
        self._repack()

    def _repack(self) -> None:
        n = len(self._specs)
        packed = list(self._transform(*self._params[:n])) if self._transform is not None else []
        self._params = self._params[:n] + packed
        self._bound.clear()

    def update_params(self, changed: dict[int, np.ndarray]) -> None:
        """Copy new values into some parameters in place (by position; same shapes and dtypes), then
        repack once: cheaper than set_params for the small per-step changes of adaptation."""
        n = len(self._specs)
        for i, p in changed.items():
            if not 0 <= i < n or (np.shape(p), np.asarray(p).dtype) != self._specs[i]:
                raise InputError(f"update_params: parameter {i} must be one of {n}, with its shape and dtype")
            np.copyto(self._views[i], p)  # TVM's copyfrom costs ~20 us of Python per small array
        if changed and self._transform is not None:
            self._repack()

    def _input(self, i: int, x: np.ndarray):
        """Zero-copy view of an aligned writeable array, else a copy into an aligned staging buffer."""
        x = np.ascontiguousarray(x)
        if not (x.flags.writeable and x.ctypes.data % _ALIGN == 0):
            buf = self._staging.get(i)
            if buf is None or buf.shape != x.shape or buf.dtype != x.dtype:
                buf = self._staging[i] = _aligned_empty(x.shape, x.dtype)
            np.copyto(buf, x)
            x = buf
        return self._tvm.runtime.from_dlpack(x)

    def _bind(self, inputs: Sequence[np.ndarray]):
        """Staging buffers for inputs shaped like ``inputs`` and a call that runs the library on them
        and the current parameters: the kernel replay of _replay, else a saved VM closure
        (vm.save_function)."""
        staging = [_aligned_empty(x.shape, x.dtype) for x in inputs]
        for b in staging:
            b.fill(0)
        args = [self._tvm.runtime.from_dlpack(b) for b in staging] + self._params
        name = f"edgert_bound_{len(self._bound)}"
        self._vm.save_function(self._main_name, name, *args)
        if len(self._bound) >= _BOUND_SHAPES:
            self._bound.clear()
        closure = self._vm[name]
        replay = self._replay(closure)
        if replay is not None:
            return [staging, replay[0], [True] * replay[1]]  # outputs are reused buffers: copy each out
        shared = {np.from_dlpack(a).ctypes.data for a in args if a.shape and 0 not in a.shape}
        return [staging, closure, shared]

    def _replay(self, closure):
        """(call, number of outputs): run the kernels ``closure`` ran, in order, on the tensors it ran
        them on (its intermediates and outputs, kept), without the VM's per-call argument checks and
        allocations (~0.5 us per argument and per kernel). None when the VM did anything besides
        kernels and bookkeeping, or the outputs are too large to copy out on every call."""
        calls, outs = self._record_calls(closure)
        if any(s.startswith("vm.") and s not in _BOOKKEEPING for s, _, _ in calls):
            return None
        if sum(np.from_dlpack(y).nbytes for y in outs) > _REPLAY_OUT_BYTES:
            return None
        kernels = tuple((func, args) for s, func, args in calls if s not in _BOOKKEEPING)

        def call():
            for func, args in kernels:
                func(*args)
            return outs

        return call, len(outs)

    def bound(self, inputs: Sequence[np.ndarray]) -> list | None:
        """[staging arrays, saved VM closure, aliasing] for inputs shaped like ``inputs`` (see run), or
        None when they are too large to stage. Valid until the parameters are repacked (set_params)."""
        if sum(x.nbytes for x in inputs) > _BOUND_BYTES:
            return None
        key = tuple((x.shape, x.dtype) for x in inputs)
        bound = self._bound.get(key)
        if bound is None:
            bound = self._bound[key] = self._bind(inputs)
        return bound

    def _args(self, inputs: Sequence[np.ndarray]) -> list:
        return [self._input(i, x) for i, x in enumerate(inputs)] + self._params

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run on ``inputs`` (graph inputs in order) and return the outputs as numpy arrays.

        Not thread-safe: one runner serves one caller at a time (inputs may be staged in buffers
        the runner reuses).
        """
        if self.num_threads is not None:
            use_threads(self.num_threads)
        bound = self.bound(inputs)
        if bound is not None:
            staging, call, aliased = bound
            for buf, x in zip(staging, inputs):
                np.copyto(buf, x)
            outs = [np.from_dlpack(y) for y in call()[:]]
            if isinstance(aliased, set):  # first call: the addresses of inputs and parameters
                aliased = bound[2] = [bool(a.size) and a.ctypes.data in aliased for a in outs]
            return [a.copy() if alias else a for a, alias in zip(outs, aliased)]
        args = self._args(inputs)
        # outputs are fresh VM allocations, handed out without a copy, except an output that is an
        # input or parameter passed straight through (or a view of one): copy that so no caller shares
        # our buffers. Which outputs alias is fixed by the compiled code, so it is found once.
        outs = [np.from_dlpack(y) for y in self._main(*args)[:]]  # a slice: iterating asks the size per item
        if self._aliased is None:
            shared = {np.from_dlpack(a).ctypes.data for a in args if a.shape and 0 not in a.shape}
            self._aliased = [bool(a.size) and a.ctypes.data in shared for a in outs]
        return [a.copy() if alias else a for a, alias in zip(outs, self._aliased)]

    def profile(self, inputs: Sequence[np.ndarray], repeat: int = 20, best: bool = False) -> list[tuple[str, float]]:
        """Seconds per kernel call, in execution order: the median over ``repeat`` timings (with
        ``best``, the least: on a shared core another process only ever adds time).

        One instrumented run records each kernel call and its argument tensors; then each kernel is
        timed alone on those arguments with TVM's time evaluator (at least 1 ms of calls per timing),
        so Python never sits inside the measured interval. Kernels of ``transform_params`` (weight
        packing) run at set_params time, not per inference, and are not reported.
        """
        if self.num_threads is not None:
            use_threads(self.num_threads)
        calls, _ = self._record_calls(lambda: self._main(*self._args(inputs)))
        calls = [(symbol, args) for symbol, _, args in calls if not symbol.startswith(_NOT_KERNELS)]
        out = []
        for symbol, call_args in calls:
            timer = self._module_of(symbol).time_evaluator(symbol, self._dev, number=1,
                                                           repeat=max(1, repeat), min_repeat_ms=1)
            results = timer(*call_args).results
            out.append((symbol, float(min(results) if best else np.median(results))))
        return out

    def _record_calls(self, call):
        """([(symbol, function, argument tensors)] of every packed call the VM made while running
        ``call()``, in order; the outputs of that call)."""
        calls: list[tuple[str, object, tuple]] = []

        def record(func, symbol, before_run, ret_value, *args):  # noqa: ARG001 (VM's signature)
            if before_run:
                calls.append((str(symbol), func, args))
            return 0  # VMInstrumentReturnKind.NO_OP

        self._vm.set_instrument(self._tvm.runtime.convert(record))
        try:
            outs = tuple(call()[:])
        finally:
            self._vm.set_instrument(None)
        return calls, outs

    def _module_of(self, symbol: str):
        """The (imported) module that defines kernel ``symbol``; time_evaluator does not search imports."""
        todo = [self._lib]
        while todo:
            m = todo.pop()
            if m.implements_function(symbol, False):
                return m
            todo.extend(m.imports)
        raise KeyError(symbol)
