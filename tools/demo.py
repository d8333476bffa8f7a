"""`make demo`: train the digits CNN (if missing), compile it, run the held-out split, profile it.

Each step is the real command a user would type; accuracy and parity are computed here from the
artifact's outputs and the torch model's.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

OUT = Path("build/demo")
EDGERT = [sys.executable, "-m", "edgert.cli"]


def sh(*args: str) -> None:
    print(f"\n$ edgert {shlex.join(args)}", flush=True)
    subprocess.run(EDGERT + list(args), check=True)


def main() -> None:
    import torch

    from tools.models.digits_cnn import digits_split

    OUT.mkdir(parents=True, exist_ok=True)
    pt2, art, x_path, y_path = (OUT / "digits_cnn.pt2", OUT / "digits_cnn.edgert", OUT / "test_x.npy",
                                OUT / "edgert_out.npy")
    if not pt2.exists():
        print("$ python -m tools.models.digits_cnn", flush=True)
        subprocess.run([sys.executable, "-m", "tools.models.digits_cnn", "--out", str(pt2)], check=True)
    _, _, x_test, y_test = digits_split()
    np.save(x_path, x_test)

    sh("compile", str(pt2), "--target", "x86-host", "-o", str(art))
    sh("run", str(art), "--input", str(x_path), "--output", str(y_path))
    logits = np.load(y_path)
    with torch.no_grad():
        ref = torch.export.load(pt2).module()(torch.from_numpy(x_test)).numpy()
    acc = (logits.argmax(1) == y_test).mean()
    print(f"\nheld-out accuracy (edgert artifact): {acc:.4f} on {len(y_test)} digits")
    print(f"max |edgert - torch| = {np.abs(logits - ref).max():.2e}  "
          f"(relative {np.abs(logits - ref).max() / np.abs(ref).max():.2e}); "
          f"same predictions: {(logits.argmax(1) == ref.argmax(1)).mean():.4f}")
    sh("profile", str(art))


if __name__ == "__main__":
    main()
