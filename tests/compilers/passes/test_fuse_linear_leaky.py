import numpy as np

from edgert import ir
from edgert.compilers.passes import fuse_linear_leaky
from edgert.ops.spiking import Leaky, LinearLeaky

RNG = np.random.default_rng(0)


def _params(**shapes):
    return {k: RNG.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def test_linear_then_leaky_fuses_with_transposed_weight_and_zero_bias():
    p = _params(w=(3, 5), beta=(3,), thr=(3,))
    before = ir.Graph(inputs=(("x", ir.TensorSpec((None, 5))),),
                      nodes=(ir.Linear(name="l", inputs=("x", "w"), output="c"),
                             Leaky(name="n", inputs=("c", "beta", "thr"), output="s", reset="zero")),
                      outputs=("s",), params=p)
    expected = ir.Graph(inputs=before.inputs,
                        nodes=(LinearLeaky(name="n", inputs=("x", "w.t", "l.zero_bias", "beta", "thr"), output="s",
                                           reset="zero"),),
                        outputs=("s",), params={"w.t": p["w"].T, "l.zero_bias": np.zeros(3, np.float32),
                                                "beta": p["beta"], "thr": p["thr"]})
    assert fuse_linear_leaky(before) == expected


def test_linear_read_twice_stays_unfused():
    p = _params(w=(3, 5), b=(3,), beta=(3,), thr=(3,))
    g = ir.Graph(inputs=(("x", ir.TensorSpec((None, 5))),),
                 nodes=(ir.Linear(name="l", inputs=("x", "w", "b"), output="c"),
                        Leaky(name="n", inputs=("c", "beta", "thr"), output="s")),
                 outputs=("s", "c"), params=p)
    assert fuse_linear_leaky(g) == g
