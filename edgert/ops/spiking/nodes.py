"""Spiking neuron nodes: snntorch's Leaky, Synaptic, RLeaky and RSynaptic, and Linear fused with Leaky.

All share snntorch 1.0's discrete-time update (float32, in this order of operations):

.. math::

    r_t = [U_{t-1} > \\theta], \\quad U_t = \\beta U_{t-1} + I_t - r_t \\theta, \\quad
    S_t = g \\, [U_t > \\theta]

with beta already clamped to [0, 1]; ``reset`` picks how ``r_t`` acts ("subtract" as above, "zero",
"none"), and with ``reset_delay=False`` the membrane is reset again at once by
``(S_t / g - r_t)`` times theta (subtract) or times U_t (zero), as snntorch does. The mechanism of that
second reset is ``instant_reset`` (empty: the same as ``reset``): a live snntorch module whose
``reset_mechanism`` was changed after construction keeps its old state function but uses the new
value here, so the two can differ.

Parameters (beta, alpha, threshold, recurrent V) are graph parameters with the per-sample feature
shape of the current, so per-neuron and scalar values look alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar, Sequence

from edgert import ir


class Reset(str, Enum):
    """How a neuron's membrane is reset after it spikes (snntorch's ``reset_mechanism``)."""

    SUBTRACT = "subtract"
    ZERO = "zero"
    NONE = "none"


RESET_CODE = {Reset.SUBTRACT: 0, Reset.ZERO: 1, Reset.NONE: 2}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Neuron(ir.Node):
    """Shared attributes and checks of the neuron nodes (input 0 is the current)."""

    family: ClassVar[str] = "spiking"
    backends: ClassVar[tuple[str, ...]] = ("numba",)
    stateful: ClassVar[bool] = True
    param_names: ClassVar[tuple[str, ...]] = ()  # inputs after the current, in order
    reset: str = "subtract"
    reset_delay: bool = True
    instant_reset: str = ""  # mechanism of the reset_delay=False branch; "" = same as reset
    graded: float = 1.0  # graded spike factor: a spike has this value

    def check(self) -> None:
        valid = [r.value for r in Reset]
        for what in ("reset", "instant_reset"):
            v = getattr(self, what)
            v = v.value if isinstance(v, Reset) else v
            if v not in valid and not (what == "instant_reset" and v == ""):
                self._fail(f"{what}={v!r}; valid values are {valid}")
            object.__setattr__(self, what, v)
        if not self.instant_reset:
            object.__setattr__(self, "instant_reset", self.reset)
        object.__setattr__(self, "graded", float(self.graded))
        object.__setattr__(self, "reset_delay", bool(self.reset_delay))
        if self.graded == 0.0:
            self._fail("graded=0 makes every spike zero (snntorch would divide by it); pass the "
                       "graded spike factor, 1.0 for plain spikes")

    def infer(self, ins: Sequence[ir.TensorSpec]) -> ir.TensorSpec:
        return _check(self, ins, self.param_names)


@ir.register_op
@dataclass(frozen=True, slots=True, kw_only=True)
class Leaky(_Neuron):
    """snntorch.Leaky: inputs (current, beta, threshold); output spikes (membrane kept as state).

    "zero" reset zeroes the old membrane before the input is added: U_t = beta (1 - r_t) U_{t-1} + I_t.
    """

    op: ClassVar[str] = "leaky"
    n_inputs: ClassVar[tuple[int, ...]] = (3,)
    param_names: ClassVar[tuple[str, ...]] = ("beta", "threshold")


@ir.register_op
@dataclass(frozen=True, slots=True, kw_only=True)
class Synaptic(_Neuron):
    """snntorch.Synaptic: inputs (current, alpha, beta, threshold); state: synaptic current and membrane.

    I_syn,t = alpha I_syn,t-1 + I_t; U_t = beta U_{t-1} + I_syn,t, then reset. "zero" reset zeroes the
    whole new membrane (U_t = 0 when r_t); the synaptic current is never reset.
    """

    op: ClassVar[str] = "synaptic"
    n_inputs: ClassVar[tuple[int, ...]] = (4,)
    param_names: ClassVar[tuple[str, ...]] = ("alpha", "beta", "threshold")


@ir.register_op
@dataclass(frozen=True, slots=True, kw_only=True)
class RLeaky(_Neuron):
    """snntorch.RLeaky: inputs (current, beta, threshold, V) or (current, beta, threshold, W, b).

    U_t = (beta U_{t-1} + I_t) + R(S_{t-1}), with R(s) = s @ W.T + b when ``all_to_all`` (a Linear
    with bias) and R(s) = s * V otherwise; "zero" reset zeroes the whole new membrane.
    """

    op: ClassVar[str] = "rleaky"
    n_inputs: ClassVar[tuple[int, ...]] = (4, 5)
    all_to_all: bool = False

    def infer(self, ins: Sequence[ir.TensorSpec]) -> ir.TensorSpec:
        x = ins[0]
        if not self.all_to_all:
            return _check(self, ins, ("beta", "threshold", "V"))
        if len(ins) != 5 or x.rank != 2:
            self._fail(f"all_to_all needs inputs (current [N, F], beta, threshold, W [F, F], b [F]); got "
                       f"{len(ins)} inputs and current {x.shape} (a conv recurrence is not supported)")
        _check(self, ins[:3], ("beta", "threshold"))
        f = x.shape[1]
        if ins[3].shape != (f, f) or ins[4].shape != (f,):
            self._fail(f"recurrent weight must be ({f}, {f}) and bias ({f},), got {ins[3].shape} and "
                       f"{ins[4].shape}")
        return x


@ir.register_op
@dataclass(frozen=True, slots=True, kw_only=True)
class RSynaptic(_Neuron):
    """snntorch.RSynaptic with an all-to-all recurrence: inputs (current, alpha, beta, threshold, W, b).

    I_syn,t = (alpha I_syn,t-1 + I_t) + R(S_t-1) with R(s) = s @ W.T + b; U_t = beta U_{t-1} + I_syn,t,
    then reset as Synaptic (the recurrent spikes reach the synaptic current one step late).
    """

    op: ClassVar[str] = "rsynaptic"
    n_inputs: ClassVar[tuple[int, ...]] = (6,)

    def infer(self, ins: Sequence[ir.TensorSpec]) -> ir.TensorSpec:
        x = ins[0]
        if x.rank != 2:
            self._fail(f"the current must be [N, F] (a conv recurrence is not supported), got {x.shape}")
        _check(self, ins[:4], ("alpha", "beta", "threshold"))
        f = x.shape[1]
        if ins[4].shape != (f, f) or ins[5].shape != (f,):
            self._fail(f"recurrent weight must be ({f}, {f}) and bias ({f},), got {ins[4].shape} and "
                       f"{ins[5].shape}")
        return x


@ir.register_op
@dataclass(frozen=True, slots=True, kw_only=True)
class LeakyIntegrator(ir.Node):
    """A leaky integrator without spikes (NIR's LI): inputs (current, beta, scale); output the membrane
    U_t = beta U_{t-1} + scale I_t (kept as state), in float32 in that order."""

    op: ClassVar[str] = "leaky_integrator"
    family: ClassVar[str] = "spiking"
    backends: ClassVar[tuple[str, ...]] = ("numba",)
    stateful: ClassVar[bool] = True
    n_inputs: ClassVar[tuple[int, ...]] = (3,)

    def infer(self, ins: Sequence[ir.TensorSpec]) -> ir.TensorSpec:
        return _check(self, ins, ("beta", "scale"))


@ir.register_op
@dataclass(frozen=True, slots=True, kw_only=True)
class Delay(ir.Node):
    """y_t = x_{t - steps} (zero before the first input), the last ``steps`` inputs kept as state."""

    op: ClassVar[str] = "delay"
    family: ClassVar[str] = "spiking"
    backends: ClassVar[tuple[str, ...]] = ("numba",)
    stateful: ClassVar[bool] = True
    steps: int = 1

    def check(self) -> None:
        object.__setattr__(self, "steps", int(self.steps))
        if self.steps < 1:
            self._fail(f"steps={self.steps}; a delay holds at least one step (leave the node out for none)")

    def infer(self, ins: Sequence[ir.TensorSpec]) -> ir.TensorSpec:
        if ins[0].rank < 2:
            self._fail(f"the input needs a batch axis and features, got shape {ins[0].shape}")
        return ins[0]


def _check(node: _Neuron, ins: Sequence[ir.TensorSpec], names: tuple[str, ...]) -> ir.TensorSpec:
    x = ins[0]
    if x.rank < 2:
        node._fail(f"the current needs a batch axis and features, got shape {x.shape}")
    for name, spec in zip(names, ins[1:]):
        if spec.shape != x.shape[1:]:
            node._fail(f"{name} must have the per-sample shape {x.shape[1:]} of the current, got "
                       f"{spec.shape}; broadcast scalars and per-channel values to it")
    return x


@ir.register_op
@dataclass(frozen=True, slots=True, kw_only=True)
class LinearLeaky(_Neuron):
    """Linear fused with Leaky: inputs (x [N, K], weight_t [K, O], bias [O], beta [O], threshold [O]).

    The current is I_t = x_t @ weight_t + bias (the weight stored transposed, so the event-driven path
    reads one contiguous row per input that spiked). Inputs sparser than ``event_below`` (fraction of
    nonzero entries, measured per step) take the event-driven path; denser ones the dense path.
    """

    op: ClassVar[str] = "linear_leaky"
    n_inputs: ClassVar[tuple[int, ...]] = (5,)
    event_below: float = 0.15  # measured crossover here: 700x256, one thread, batch 1 and 64

    def infer(self, ins: Sequence[ir.TensorSpec]) -> ir.TensorSpec:
        x, wt, b, beta, thr = ins
        if x.rank != 2 or wt.rank != 2 or wt.shape[0] != x.shape[1]:
            self._fail(f"input {x.shape} and transposed weight {wt.shape} do not fit; the weight must be "
                       f"({x.shape[-1]}, out_features)")
        o = wt.shape[1]
        for name, spec in (("bias", b), ("beta", beta), ("threshold", thr)):
            if spec.shape != (o,):
                self._fail(f"{name} must have shape ({o},), got {spec.shape}")
        return ir.TensorSpec((x.shape[0], o), x.dtype)


NEURON_OPS = (Leaky, Synaptic, RLeaky, RSynaptic, LinearLeaky)
