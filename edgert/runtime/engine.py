"""Engine: load a verified artifact and run it. Needs numpy and the TVM runtime, never torch."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Sequence

import numpy as np

from edgert import ir
from edgert.artifact import Artifact
from edgert.errors import ArtifactSchemaError, ArtifactTargetError, InputError

BACKENDS = ("tvm",)


class Engine:
    """A loaded artifact, ready to run; one Engine per stream of inputs."""

    def __init__(self, artifact: Artifact, expect_target: str | None = None):
        self.artifact = artifact
        m = artifact.manifest
        target = m["target"]
        if expect_target is not None and target["name"] != expect_target:
            raise ArtifactTargetError(f"artifact was compiled for target {target['name']!r}, not "
                                      f"{expect_target!r}; recompile with --target {expect_target}")
        unknown = sorted({b for b in m["backends"].values() if b not in BACKENDS})
        if unknown:
            raise ArtifactSchemaError(f"artifact uses backends {unknown} that this edgert does not have "
                                      f"(it has {list(BACKENDS)}); upgrade edgert on this device")
        if artifact.library is None:
            raise ArtifactTargetError(
                f"artifact for target {target['name']!r} holds no library (an estimate-only artifact); "
                "it can be profiled with `edgert profile` but not run")
        if target.get("arch") != platform.machine():
            raise ArtifactTargetError(
                f"artifact was compiled for target {target['name']!r} ({target.get('arch')}), but this "
                f"machine is {platform.machine()}; run it on that board, or recompile with a target "
                "for this machine (`edgert targets` lists them)")
        self.inputs = [(i["name"], ir.TensorSpec.from_json(i)) for i in m["inputs"]]
        self.outputs = [(o["name"], ir.TensorSpec.from_json(o)) for o in m["outputs"]]
        self.param_order: list[str] = list(m["param_order"])
        from edgert.runtime.tvm_runner import TvmRunner  # imports tvm: keep it off `import edgert`
        self._runner = TvmRunner(artifact.library, [artifact.params[k] for k in self.param_order])

    @property
    def params(self) -> dict[str, np.ndarray]:
        return dict(self.artifact.params)

    def _check(self, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(xs) != len(self.inputs):
            raise InputError(f"model takes {len(self.inputs)} inputs "
                             f"({', '.join(n for n, _ in self.inputs)}), got {len(xs)}")
        out = []
        batch = None
        for x, (name, spec) in zip(xs, self.inputs):
            want = "x".join("N" if d is None else str(d) for d in spec.shape)
            if not isinstance(x, np.ndarray):
                raise InputError(f"input {name!r} must be a numpy array, got {type(x).__name__}")
            if x.dtype != np.dtype(spec.dtype):
                raise InputError(f"input {name!r} has dtype {x.dtype}, the model expects {spec.dtype}; "
                                 f"convert it with x.astype(np.{spec.dtype})")
            ok = x.ndim == spec.rank and all(d is None or d == s for d, s in zip(spec.shape, x.shape))
            if not ok:
                raise InputError(f"input {name!r} has shape {'x'.join(map(str, x.shape))}, the model "
                                 f"expects {want} (N = any batch size >= 1)")
            if x.ndim and x.shape[0] == 0:
                raise InputError(f"input {name!r} has an empty batch; give at least one sample")
            if batch is not None and spec.shape[0] is None and x.shape[0] != batch:
                raise InputError(f"inputs disagree on the batch size: {batch} vs {x.shape[0]}")
            batch = x.shape[0] if spec.shape[0] is None else batch
            if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
                bad = np.argwhere(~np.isfinite(x))[0]
                raise InputError(f"input {name!r} holds NaN or Inf (first at index {tuple(bad.tolist())}); "
                                 "clean the sensor data before inference")
            out.append(np.ascontiguousarray(x))
        return out

    def run(self, *xs: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Run one batch; returns the output array, or a list when the model has several outputs."""
        ys = self._runner.run(self._check(xs))
        return ys[0] if len(ys) == 1 else ys

    def set_params(self, params: dict[str, np.ndarray]) -> None:
        """Replace some parameters (same shapes and dtypes), e.g. after an adaptation step."""
        new = dict(self.artifact.params)
        for k, v in params.items():
            if k not in new or new[k].shape != v.shape or new[k].dtype != v.dtype:
                raise InputError(f"parameter {k!r}: expected {new.get(k, np.empty(0)).shape} "
                                 f"{new.get(k, np.empty(0)).dtype}, got {v.shape} {v.dtype}")
            new[k] = v
        self._runner.set_params([new[k] for k in self.param_order])
        self.artifact = Artifact(self.artifact.manifest, new, self.artifact.library)

    def profile(self, *xs: np.ndarray, repeat: int = 20) -> list[tuple[str, float]]:
        """Per-kernel measured seconds (median over ``repeat`` runs) on this machine."""
        return self._runner.profile(self._check(xs), repeat)


def load(path: str | Path, expect_target: str | None = None) -> Engine:
    """Read, verify and load an .edgert artifact."""
    return Engine(Artifact.read(path), expect_target)
