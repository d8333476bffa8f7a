"""snntorch frontend: walk a live nn.Sequential of torch layers and snntorch neurons into an ir.Graph.

The model is read as it runs, not from its state_dict: beta and alpha are clamped to [0, 1] as
snntorch's forward clamps them, the reset applied while integrating comes from the module's bound
``state_function`` (fixed at construction), and the immediate reset of ``reset_delay=False`` from the
``reset_mechanism_val`` buffer that forward reads (the two differ when ``reset_mechanism`` was
assigned after construction). The graph takes one time step shaped [batch, ...] and returns the last
layer's spikes; membranes live in the Engine's node state.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgert import ir
from edgert.compilers.frontends._common import Names, Problems
from edgert.ops.spiking.nodes import Leaky, Reset, RLeaky, Synaptic

_STATE_FUNCTIONS = {"_base_sub": Reset.SUBTRACT, "_base_zero": Reset.ZERO, "_base_int": Reset.NONE}
_RESET_VALS = {0: Reset.SUBTRACT, 1: Reset.ZERO, 2: Reset.NONE}
SUPPORTED = ["Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten", "BatchNorm1d", "BatchNorm2d",
             "Dropout", "Identity", "Sequential", "snntorch.Leaky", "snntorch.Synaptic",
             "snntorch.RLeaky (linear or one-to-one recurrence)"]


def is_snntorch_model(model: object) -> bool:
    """True when ``model`` is an nn.Module holding at least one snntorch neuron."""
    return isinstance(model, nn.Module) and any(
        type(m).__module__.startswith("snntorch") for m in model.modules())


def _flat_layers(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    if isinstance(model, nn.Sequential):
        out = []
        for name, child in model.named_children():
            out += _flat_layers(child, f"{prefix}{name}.")
        return out
    return [(prefix.rstrip(".") or type(model).__name__.lower(), model)]


def _np(t: torch.Tensor | float) -> np.ndarray:
    return (t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)).astype(np.float32)


def _per_sample(value, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A scalar, per-neuron or per-channel value broadcast to the per-sample feature shape."""
    a = _np(value)
    try:
        return np.ascontiguousarray(np.broadcast_to(a, shape), dtype=np.float32)
    except ValueError:
        raise ValueError(f"{what} of shape {a.shape} does not broadcast to the layer's shape {shape}") from None


class _Walker:
    def __init__(self, example: torch.Tensor) -> None:
        self.names = Names(("x",))
        self.nodes: list[ir.Node] = []
        self.params: dict[str, np.ndarray] = {}
        self.problems = Problems("snntorch frontend")
        self.cur = "x"
        self.x = example  # a tensor of the current value's shape, for shape inference of torch layers

    def param(self, label: str, a: np.ndarray) -> str:
        name = self.names(label)
        self.params[name] = np.ascontiguousarray(a, dtype=np.float32)
        return name

    def emit(self, cls, where: str, inputs: tuple[str, ...], **attrs) -> None:
        out = self.names(where)
        self.nodes.append(cls(name=out, inputs=(self.cur,) + inputs, output=out, **attrs))
        self.cur = out

    def layer(self, where: str, m: nn.Module) -> None:
        shape = tuple(self.x.shape[1:])
        p = lambda suffix, t: self.param(f"{where}.{suffix}", _np(t))  # noqa: E731
        match m:
            case nn.Linear():
                self.emit(ir.Linear, where, (p("weight", m.weight),) + ((p("bias", m.bias),) if m.bias is not None else ()))
            case nn.Conv2d():
                if m.padding_mode != "zeros":
                    raise _Skip(f"padding_mode {m.padding_mode!r}; use zero padding")
                pad = m._reversed_padding_repeated_twice  # (left, right, top, bottom)
                self.emit(ir.Conv2d, where, (p("weight", m.weight),) + ((p("bias", m.bias),) if m.bias is not None else ()),
                          stride=m.stride, padding=(pad[2], pad[0], pad[3], pad[1]), dilation=m.dilation,
                          groups=m.groups)
            case nn.MaxPool2d():
                if m.return_indices:
                    raise _Skip("return_indices=True")
                self.emit(ir.MaxPool2d, where, (), kernel=m.kernel_size, stride=m.stride or m.kernel_size,
                          padding=m.padding, dilation=m.dilation, ceil_mode=m.ceil_mode)
            case nn.AvgPool2d():
                if m.divisor_override:
                    raise _Skip("divisor_override")
                self.emit(ir.AvgPool2d, where, (), kernel=m.kernel_size, stride=m.stride or m.kernel_size,
                          padding=m.padding, ceil_mode=m.ceil_mode, count_include_pad=m.count_include_pad)
            case nn.Flatten():
                if m.end_dim not in (-1, len(self.x.shape) - 1):
                    raise _Skip(f"end_dim={m.end_dim}; only flattening to the last axis is supported")
                self.emit(ir.Flatten, where, (), start_dim=m.start_dim % len(self.x.shape))
            case nn.BatchNorm1d() | nn.BatchNorm2d():
                if not m.track_running_stats or m.running_mean is None:
                    raise _Skip("track_running_stats=False (batch statistics at inference)")
                c = m.num_features
                gamma = m.weight if m.weight is not None else torch.ones(c)
                beta = m.bias if m.bias is not None else torch.zeros(c)
                self.emit(ir.BatchNorm, where, (p("gamma", gamma), p("beta", beta), p("mean", m.running_mean),
                                                p("var", m.running_var)), eps=float(m.eps))
            case nn.Dropout() | nn.Identity():
                return
            case _ if type(m).__module__.startswith("snntorch"):
                self.neuron(where, m, shape)
                return  # neurons keep the shape
            case _:
                raise _Skip("", unsupported=True)
        with torch.no_grad():
            self.x = m.eval()(self.x) if not isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) else self.x

    def neuron(self, where: str, m: nn.Module, shape: tuple[int, ...]) -> None:
        import snntorch as snn

        kind = type(m)
        if kind not in (snn.Leaky, snn.Synaptic, snn.RLeaky):
            raise _Skip("", unsupported=True)
        if m.inhibition:
            raise _Skip("inhibition=True (winner-take-all firing) is not supported")
        if m.state_quant:
            raise _Skip("state_quant is not supported; quantize after compiling")
        fn = getattr(m.state_function, "__func__", None)
        reset = _STATE_FUNCTIONS.get(getattr(fn, "__name__", ""))
        if reset is None:
            raise _Skip(f"unknown state function {m.state_function!r}")
        graded = _np(m.graded_spikes_factor)
        if graded.size != 1:
            raise _Skip("a per-neuron graded_spikes_factor is not supported (give a scalar)")
        attrs = dict(reset=reset.value, reset_delay=bool(m.reset_delay),
                     instant_reset=_RESET_VALS[int(m.reset_mechanism_val)].value, graded=float(graded.reshape(())))
        beta = self.param(f"{where}.beta", _per_sample(m.beta.detach().clamp(0, 1), shape, "beta"))
        thr = self.param(f"{where}.threshold", _per_sample(m.threshold, shape, "threshold"))
        if kind is snn.Leaky:
            self.emit(Leaky, where, (beta, thr), **attrs)
        elif kind is snn.Synaptic:
            alpha = self.param(f"{where}.alpha", _per_sample(m.alpha.detach().clamp(0, 1), shape, "alpha"))
            self.emit(Synaptic, where, (alpha, beta, thr), **attrs)
        else:
            rec = m.recurrent
            if isinstance(rec, nn.Linear):
                if len(shape) != 1 or rec.bias is None:
                    raise _Skip("recurrent Linear needs a flat layer and a bias")
                w = self.param(f"{where}.recurrent.weight", _np(rec.weight))
                b = self.param(f"{where}.recurrent.bias", _np(rec.bias))
                self.emit(RLeaky, where, (beta, thr, w, b), all_to_all=True, **attrs)
            elif type(rec).__name__ == "RecurrentOneToOne":
                v = self.param(f"{where}.V", _per_sample(rec.V, shape, "V"))
                self.emit(RLeaky, where, (beta, thr, v), all_to_all=False, **attrs)
            else:
                raise _Skip(f"recurrent {type(rec).__name__} (a conv recurrence) is not supported")


class _Skip(Exception):
    def __init__(self, reason: str, unsupported: bool = False) -> None:
        super().__init__(reason)
        self.unsupported = unsupported


def from_snntorch(model: nn.Module, example_input) -> ir.Graph:
    """One time step of ``model`` (nn.Sequential of torch layers and snntorch neurons) as a Graph.

    ``example_input`` is one time step, shaped [batch, ...]; the graph's batch axis is dynamic.
    """
    x = torch.as_tensor(np.asarray(example_input, dtype=np.float32) if not isinstance(example_input, torch.Tensor)
                        else example_input.detach().float())
    if x.ndim < 2:
        from edgert.errors import EdgertError
        raise EdgertError(f"example input has shape {tuple(x.shape)}; give one time step shaped [batch, ...]")
    walker = _Walker(x[:1].clone())
    for where, m in _flat_layers(model):
        try:
            walker.layer(where, m)
        except _Skip as e:
            walker.problems.add(type(m).__name__, where, str(e))
            if not e.unsupported:
                continue
            walker.problems.note("snntorch models are read as an nn.Sequential; a custom forward() "
                                 "cannot be walked — express the network as nn.Sequential with "
                                 "init_hidden=True neurons")
    walker.problems.raise_if_any(SUPPORTED, "Replace the listed layers, or compile the float part "
                                 "with the torch frontend.")
    spec = ir.TensorSpec((None,) + tuple(x.shape[1:]))
    return ir.Graph(inputs=(("x", spec),), nodes=tuple(walker.nodes), outputs=(walker.cur,),
                    params=walker.params).validate()
