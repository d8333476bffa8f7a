"""Engine: runs compiled artifacts like the NumPy reference, and rejects bad input and wrong targets."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import edgert
from edgert import ir
from edgert.artifact import Artifact
from edgert.compilers.compile import build_artifact, compile_model
from edgert.errors import ArtifactTargetError, InputError
from edgert.ops.reference import run_graph_ref
from edgert.runtime.engine import Engine


def _graph() -> ir.Graph:
    rng = np.random.default_rng(0)
    p = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return ir.Graph(
        inputs=(("x", ir.TensorSpec((None, 2, 6, 6))),),
        nodes=(ir.Conv2d(name="c", inputs=("x", "w", "b"), output="y", padding=1),
               ir.Relu(name="r", inputs=("y",), output="z"),
               ir.Flatten(name="f", inputs=("z",), output="f"),
               ir.Linear(name="l", inputs=("f", "lw", "lb"), output="out")),
        outputs=("out",), params={"w": p(4, 2, 3, 3), "b": p(4), "lw": p(3, 144), "lb": p(3)})


@pytest.fixture(scope="module")
def artifact_path(tmp_path_factory):
    return build_artifact(_graph(), "x86-host").save(tmp_path_factory.mktemp("art") / "m.edgert")


@pytest.fixture(scope="module")
def engine(artifact_path):
    return edgert.load(artifact_path)


@pytest.mark.parametrize("batch", [1, 4])
def test_run_matches_reference(engine, batch):
    x = np.random.default_rng(batch).standard_normal((batch, 2, 6, 6)).astype(np.float32)
    want = run_graph_ref(_graph(), {"x": x})[0]
    np.testing.assert_allclose(engine.run(x), want, rtol=1e-5, atol=1e-5)


def test_repeated_runs_of_one_shape(engine):
    """From the second run of a shape on, run takes the staged fast path: same values, fresh arrays,
    non-contiguous inputs, bad values still caught, and new parameters seen."""
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((1, 2, 6, 6)).astype(np.float32) for _ in range(3)]
    ys = [engine.run(x) for x in xs]
    for x, y in zip(xs, ys):  # an earlier result is not overwritten by a later run
        np.testing.assert_allclose(y, run_graph_ref(_graph(), {"x": x})[0], rtol=1e-5, atol=1e-5)
    wide = rng.standard_normal((1, 2, 6, 12)).astype(np.float32)[..., ::2]
    np.testing.assert_allclose(engine.run(wide), run_graph_ref(_graph(), {"x": np.ascontiguousarray(wide)})[0],
                               rtol=1e-5, atol=1e-5)
    bad = xs[0].copy()
    bad[0, 1, 2, 3] = np.inf
    with pytest.raises(InputError, match=r"NaN or Inf \(first at index \(0, 1, 2, 3\)\)"):
        engine.run(bad)
    g = _graph()
    new_lb = np.arange(3, dtype=np.float32)
    engine.set_params({"lb": new_lb})
    moved = ir.Graph(inputs=g.inputs, nodes=g.nodes, outputs=g.outputs, params={**g.params, "lb": new_lb})
    np.testing.assert_allclose(engine.run(xs[0]), run_graph_ref(moved, {"x": xs[0]})[0], rtol=1e-5, atol=1e-5)
    engine.set_params({"lb": g.params["lb"]})
    np.testing.assert_allclose(engine.run(xs[0]), ys[0], rtol=1e-6, atol=1e-6)


def test_set_params_changes_the_computation(engine):
    g = _graph()
    new_lb = np.arange(3, dtype=np.float32)
    engine.set_params({"lb": new_lb})
    x = np.ones((2, 2, 6, 6), np.float32)
    moved = ir.Graph(inputs=g.inputs, nodes=g.nodes, outputs=g.outputs, params={**g.params, "lb": new_lb})
    np.testing.assert_allclose(engine.run(x), run_graph_ref(moved, {"x": x})[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="parameter 'lb'"):
        engine.set_params({"lb": np.zeros(4, np.float32)})
    engine.set_params({"lb": g.params["lb"]})


X = np.zeros((1, 2, 6, 6), np.float32)


@pytest.mark.parametrize("bad, message", [
    (X.astype(np.float64), "dtype float64, the model expects float32; convert it with x.astype"),
    (X.astype(np.int32), "dtype int32"),
    (X[:, :1], "shape 1x1x6x6, the model expects Nx2x6x6"),
    (X[0], "shape 2x6x6"),
    (np.zeros((0, 2, 6, 6), np.float32), "empty batch"),
    (np.where(np.arange(72).reshape(1, 2, 6, 6) == 7, np.nan, X).astype(np.float32), r"NaN or Inf \(first at index \(0, 0, 1, 1\)\)"),
    (np.full((1, 2, 6, 6), np.inf, np.float32), "NaN or Inf"),
    (X.tolist(), "must be a numpy array, got list"),
])
def test_bad_input_gets_a_clear_error(engine, bad, message):
    with pytest.raises(InputError, match=message):
        engine.run(bad)
    assert engine.run(X).shape == (1, 3)  # the engine still serves the next request


def test_wrong_number_of_inputs(engine):
    with pytest.raises(InputError, match="takes 1 inputs"):
        engine.run(X, X)


def test_artifact_for_another_machine_is_refused(artifact_path, tmp_path):
    art = Artifact.read(artifact_path)
    other = Artifact({**art.manifest, "target": {"name": "rpi4", "arch": "aarch64", "tvm": {}}},
                     art.params, art.libraries).save(tmp_path / "rpi4.edgert")
    with pytest.raises(ArtifactTargetError, match="compiled for target 'rpi4' \\(aarch64\\).*recompile"):
        edgert.load(other)
    with pytest.raises(ArtifactTargetError, match="not 'x86-host'"):
        edgert.load(other, expect_target="x86-host")


def test_estimate_only_artifact_cannot_run(artifact_path):
    art = Artifact.read(artifact_path)
    with pytest.raises(ArtifactTargetError, match="holds no compiled code"):
        Engine(Artifact({**art.manifest, "stages": []}, art.params, {}))


def test_runtime_never_imports_torch(artifact_path):
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import edgert.runtime
        e = edgert.runtime.load({str(artifact_path)!r})
        y = e.run(np.ones((3, 2, 6, 6), np.float32))
        assert y.shape == (3, 3), y.shape
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not loaded, loaded
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_compile_model_keeps_batchnorm_when_asked(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    x = np.zeros((1, 1, 5, 5), np.float32)
    kept = compile_model(model, x, fold_bn=False)
    assert "batch_norm" in [n["op"] for n in kept.manifest["graph"]["nodes"]]
    folded = compile_model(model, x)
    assert "batch_norm" not in [n["op"] for n in folded.manifest["graph"]["nodes"]]
