"""One model of each kind compiled for both microcontroller targets, run on the emulated core
(edgert.runtime.mcu over QEMU) and checked against its framework: torch, onnxruntime, snntorch."""

import shutil

import numpy as np
import onnxruntime
import pytest
import snntorch as snn
import torch
from torch import nn

import edgert
from edgert.artifact import Artifact
from edgert.runtime.mcu import McuRunner
from edgert.runtime.parity import parity_report
from tests.compilers.frontends.test_onnx_binary import _model as binary_onnx
from tests.zoo import _randomize_batchnorm
from tools.models.digits_cnn import DigitsCNN
from tools.models.shift_digits import ShiftDigitsCNN, calibrated

pytestmark = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                                reason="needs the ARM toolchain and QEMU (tools/board/setup_mcu.sh)")
TARGETS = ("stm32h7", "nrf52840")


def _on_board(model, example, target, tmp_path) -> McuRunner:
    path = edgert.compile(model, example, target=target).save(tmp_path / f"m-{target}.edgert")
    return McuRunner(Artifact.read(path))


@pytest.mark.parametrize("target", TARGETS)
def test_float_cnn(target, tmp_path):
    torch.manual_seed(0)
    model = DigitsCNN()
    _randomize_batchnorm(model, torch.Generator().manual_seed(1))
    model.eval()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    runner = _on_board(model, x[:1].numpy(), target, tmp_path)
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(runner.run(x.numpy()), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("target", TARGETS)
def test_onnx_bnn_is_exact(target, tmp_path):
    binary_onnx(tmp_path / "b.onnx")
    x = np.random.default_rng(1).standard_normal((3, 3, 6, 6)).astype(np.float32)
    want = onnxruntime.InferenceSession(str(tmp_path / "b.onnx")).run(None, {"x": x})[0]
    np.testing.assert_array_equal(_on_board(tmp_path / "b.onnx", None, target, tmp_path).run(x), want)


@pytest.mark.parametrize("target", TARGETS)
def test_shift_cnn(target, tmp_path):
    torch.manual_seed(0)
    model = calibrated(ShiftDigitsCNN(bits=3), (1, 8, 8))
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x).numpy()
    got = _on_board(model, x[:1].numpy(), target, tmp_path).run(x.numpy())
    # shift layers are integer-exact; the float BatchNorms between them agree with torch to ~1e-6
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", TARGETS)
def test_snntorch_snn_spike_for_spike(target, tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 48), snn.Leaky(beta=0.9, init_hidden=True),
                        nn.Linear(48, 10), snn.Leaky(beta=0.8, init_hidden=True, output=True))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(2.5)
    net.eval()
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(25, 1, 64, generator=gen) < 0.3).float()  # rate-coded spikes [T, 1, 64]
    from snntorch import utils

    utils.reset(net)
    with torch.no_grad():
        want_spk, want_mem = zip(*[net(x[t]) for t in range(x.shape[0])])
    want_spk, want_mem = torch.stack(want_spk).numpy(), torch.stack(want_mem).numpy()
    got = _on_board(net, x[0].numpy(), target, tmp_path).run(x.numpy())
    report = parity_report(want_spk, got, want_mem, net[-1].threshold.detach().numpy())
    assert report.expected_spikes > 20, "the network must spike to test anything"
    assert len(report.flips) <= 0.001 * report.compared, str(report)


@pytest.mark.slow
def test_kws_dscnn_matches_tflite_micro(tmp_path):
    """The MLPerf Tiny KWS model against TF Lite Micro's outputs on the same weights (stored by
    tools/bench/tflm_kws.md), with no more activation memory than TFLM's arena (which holds the input
    and output tensors too)."""
    from pathlib import Path

    from tools.models.mlperf_tiny import kws_dscnn

    ref = np.load(Path(__file__).parents[4] / "tools/bench/data/kws_tflm.npz", allow_pickle=False)
    runner = _on_board(kws_dscnn(), ref["x"][:1], "stm32h7", tmp_path)
    np.testing.assert_allclose(runner.run(ref["x"]), ref["y_tflm"], rtol=0, atol=1e-4)
    fw = runner.artifact.manifest["firmware"]
    assert fw["arena_bytes"] + 4 * (fw["input_size"] + fw["output_size"]) <= int(ref["arena_bytes"])
