"""Run a library built by edgert's TVM backend: numpy in, numpy out, never torch.

The library holds a Relax VM executable. ``main(<inputs>, <params>)`` returns a tuple of outputs;
when some convolution weights are packed for vector code it also holds
``transform_params(<params>) -> (<packed>)`` and ``main_run(<inputs>, <params>, <packed>)``, and the
runner packs once per parameter set instead of once per call (see tvm_lower.lower_graph).
Parameters are converted to TVM tensors once, so ``set_params`` swaps weights without recompiling.
"""

from __future__ import annotations

import os
import tempfile
from typing import Sequence

import numpy as np

from edgert._tvm import import_tvm
from edgert.errors import InputError

# Calls the profiler does not report: VM bookkeeping and the shape functions VMShapeLower adds.
_NOT_KERNELS = ("vm.", "shape_func")
_ALIGN = 64  # TVM kernels assume 64-byte aligned buffers; other inputs are copied


class TvmRunner:
    """A loaded TVM library plus its parameters, ready to run on the CPU.

    ``num_threads`` sizes TVM's thread pool. Left as None TVM picks its own default, which on x86 is
    half the logical CPUs (it assumes hyper-threading): one thread on a 2-vCPU machine. TVM reads
    the size once, when the pool starts, so set it before the first run in the process.
    """

    def __init__(self, library: bytes, params: Sequence[np.ndarray], num_threads: int | None = None):
        if num_threads is not None:
            os.environ["TVM_NUM_THREADS"] = str(int(num_threads))
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
                raw = np.empty(x.nbytes + _ALIGN, np.uint8)
                start = -raw.ctypes.data % _ALIGN
                buf = raw[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
                self._staging[i] = buf
            np.copyto(buf, x)
            x = buf
        return self._tvm.runtime.from_dlpack(x)

    def _args(self, inputs: Sequence[np.ndarray]) -> list:
        return [self._input(i, x) for i, x in enumerate(inputs)] + self._params

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run on ``inputs`` (graph inputs in order) and return the outputs as numpy arrays.

        Not thread-safe: one runner serves one caller at a time (inputs may be staged in buffers
        the runner reuses).
        """
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
        calls: list[tuple[str, tuple]] = []

        def record(func, symbol, before_run, ret_value, *args):  # noqa: ARG001 (VM's signature)
            if before_run and not str(symbol).startswith(_NOT_KERNELS):
                calls.append((str(symbol), args))
            return 0  # VMInstrumentReturnKind.NO_OP

        args = self._args(inputs)
        self._vm.set_instrument(self._tvm.runtime.convert(record))
        try:
            self._main(*args)
        finally:
            self._vm.set_instrument(None)
        out = []
        for symbol, call_args in calls:
            timer = self._module_of(symbol).time_evaluator(symbol, self._dev, number=1,
                                                           repeat=max(1, repeat), min_repeat_ms=1)
            results = timer(*call_args).results
            out.append((symbol, float(min(results) if best else np.median(results))))
        return out

    def _module_of(self, symbol: str):
        """The (imported) module that defines kernel ``symbol``; time_evaluator does not search imports."""
        todo = [self._lib]
        while todo:
            m = todo.pop()
            if m.implements_function(symbol, False):
                return m
            todo.extend(m.imports)
        raise KeyError(symbol)
