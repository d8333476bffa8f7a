"""The reference digits SNN: trained briefly, compiled, and run by edgert spike for spike with snntorch."""

import numpy as np
import pytest
import torch
from snntorch import utils

import edgert
from edgert.runtime.parity import parity_report


@pytest.mark.slow
def test_trained_digits_snn_compiles_to_the_same_spikes(tmp_path):
    from tools.models.digits_cnn import digits_split
    from tools.models.digits_snn import rate_code, train

    net, acc = train("fc", epochs=2)
    assert acc > 0.8
    x = rate_code(digits_split()[2][:64], seed=7)  # [T, 64, 1, 8, 8]
    utils.reset(net)
    with torch.no_grad():
        outs = [net(torch.from_numpy(x[t])) for t in range(x.shape[0])]
    want = torch.stack([o[0] for o in outs]).numpy()
    mem = torch.stack([o[1] for o in outs]).numpy()
    engine = edgert.load(edgert.compile(net, x[0]).save(tmp_path / "d.edgert"))
    report = parity_report(want, engine.run(x), mem, 1.0)
    assert len(report.flips) <= 2 and report.max_distance < 1e-5, str(report)
    counts = engine.node_state()
    assert {s["path"] for s in counts.values() if "path" in s} <= {"event", "dense"}
