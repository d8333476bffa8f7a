"""Run a microcontroller artifact: its firmware image on an emulated Cortex-M (QEMU), numpy in and out.

The firmware runs batch 1, so a batch of N samples is N records; a spiking model's records are its
time steps (inputs [T, 1, ...], reset first, state kept between steps as on the board). Results and
instruction counts are emulated: QEMU executes the board's instructions, it does not time them.
"""

from __future__ import annotations

import math

import numpy as np

from edgert import ir
from edgert.artifact import Artifact
from edgert.errors import InputError

ELF = "firmware/model.elf"


def is_mcu(artifact: Artifact) -> bool:
    return "firmware" in artifact.manifest


class McuRunner:
    """The firmware of an MCU artifact, run on the emulated board its target names."""

    def __init__(self, artifact: Artifact):
        from edgert.runtime.emulated import EmulatedBoard

        m = artifact.manifest
        fw = m["firmware"]
        self.artifact = artifact
        self.machine = fw["machine"]
        self.inputs = [(i["name"], ir.TensorSpec.from_json(i)) for i in m["inputs"]]
        self.outputs = [(o["name"], ir.TensorSpec.from_json(o)) for o in m["outputs"]]
        self.stateful = bool(fw["stateful"])
        self.board = EmulatedBoard(artifact.libraries[ELF], fw["c"], fw["input_size"], fw["output_size"])
        self.stats: dict = {}

    def _per_sample(self, spec: ir.TensorSpec) -> tuple[int, ...]:
        return tuple(1 if d is None else d for d in spec.shape[1:])

    def run(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Outputs for a batch [N, ...] (a spiking model: [T, 1, ...], one record per time step)."""
        if len(self.inputs) != 1:
            raise InputError(f"the model takes {len(self.inputs)} inputs; run its firmware from your own "
                             "main (edgert export-c), which passes them one after another")
        name, spec = self.inputs[0]
        per = self._per_sample(spec)
        if not isinstance(x, np.ndarray) or x.dtype != np.float32:
            raise InputError(f"input {name!r} must be a float32 numpy array")
        if self.stateful:
            if x.ndim != len(per) + 2 or x.shape[1] != 1 or x.shape[2:] != per:
                raise InputError(f"a spiking model on a microcontroller takes [T, 1, {', '.join(map(str, per))}] "
                                 f"(batch 1, T time steps), got {x.shape}")
            lead = x.shape[:2]
        else:
            if x.ndim != len(per) + 1 or x.shape[1:] != per:
                raise InputError(f"input {name!r} has shape {x.shape}, the model expects [N, "
                                 f"{', '.join(map(str, per))}]")
            lead = x.shape[:1]
        if not np.isfinite(x).all():
            raise InputError(f"input {name!r} holds NaN or Inf; clean the sensor data before inference")
        if x.size == 0:
            raise InputError(f"input {name!r} is empty; give at least one sample")
        flat = self.board.run(x.reshape(-1, math.prod(per)))
        self.stats = dict(self.board.stats)
        ys, off = [], 0
        for _, ospec in self.outputs:
            shape = self._per_sample(ospec)
            size = math.prod(shape)
            ys.append(flat[:, off:off + size].reshape(lead + shape))
            off += size
        return ys[0] if len(ys) == 1 else ys
