"""The HTML profile report opens in headless Chromium and shows its plots (checked on a screenshot)."""

import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from edgert.compilers.compile import build_artifact
from edgert.runtime.profile import profile_artifact
from edgert.runtime.profile_html import write_html
from tests.runtime.test_profile import residual_graph

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_html_report_renders_its_plots(tmp_path):
    path = build_artifact(residual_graph(), "x86-host").save(tmp_path / "r.edgert")
    report = profile_artifact(path, repeat=3, targets=["x86-host", "rpi4", "stm32h7", "loihi"])
    page = write_html(report, tmp_path / "r.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3
    for text in ("Per-layer latency", "Energy", "Roofline", "estimated (roofline", "compute-only (per-op table)",
                 "memory-aware (per-op + per-byte)", "measured end to end"):
        assert text in page
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed; `make test` installs it (tools/board/setup_aarch64.sh)")
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile_dir:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "--window-size=1300,2600",
                        f"--screenshot={shot}", (tmp_path / "r.html").as_uri()],
                       capture_output=True, timeout=120, check=True)
    import matplotlib.image

    img = matplotlib.image.imread(shot)  # RGB(A) floats in [0, 1]
    assert img.shape[0] >= 2000 and img.shape[1] >= 1200
    # the plots are below the tables: their lower part must hold many colours (bars, lines), not a blank page
    lower = (img[img.shape[0] // 3:, :, :3] * 255).astype(np.uint8).reshape(-1, 3)
    colours = {tuple(c) for c in lower[:: 7]}
    assert len(colours) > 100, f"only {len(colours)} colours: the plots did not render"
