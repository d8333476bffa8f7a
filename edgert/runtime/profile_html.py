"""The profile report as one self-contained HTML page with matplotlib plots (PNG, inlined).

Plots: per-layer latency (measured here, estimated per board), energy by op kind and by memory
level per board (both energy models), and a roofline chart per board with the model's layers on it.
Every figure's title says whether it is measured or which model estimated it.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

OP_COLOURS = {"fp32_mac": "#4c72b0", "int8_mac": "#55a868", "binary_mac": "#c44e52", "shift_add": "#8172b2",
              "accumulate": "#ccb974", "elementwise": "#64b5cd", "neuron_update": "#937860",
              "sram": "#da8bc3", "dram": "#8c8c8c"}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _latency_plot(report: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    names = [n["name"] for n in report["nodes"]]
    series = []
    if report["total"]["latency_s"] is not None:
        series.append(("measured here", [n["latency_s"] for n in report["nodes"]]))
    for tname, est in report["estimates"].items():
        series.append((f"{tname}: estimated (roofline)", [n["latency_s"] for n in est["nodes"]]))
    fig, ax = plt.subplots(figsize=(max(8, len(names) * 0.9), 4.5))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(names))
    for i, (label, vals) in enumerate(series):
        ax.bar(x + i * width, [v * 1e3 if v else 0 for v in vals], width, label=label)
    ax.set_xticks(x + 0.4 - width / 2, names, rotation=40, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms per batch (log)")
    ax.set_title("Per-layer latency: measured on this machine vs estimated (roofline) per board")
    ax.legend(fontsize=7)
    return fig


def _energy_plot(report: dict):
    import matplotlib.pyplot as plt

    ests = report["estimates"]
    boards = [b if ests[b]["total"]["energy_compute_j"] is not None else f"{b} (cannot run it)" for b in ests]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(boards) + 2.5), sharey=True)
    for ax, memory in zip(axes, (False, True)):
        left = [0.0] * len(boards)
        kinds = [k for k in OP_COLOURS if (memory or k not in ("sram", "dram"))]
        for k in kinds:
            vals = [e["total"]["energy_by_kind_j"].get(k, 0.0) * 1e6 if e["total"]["energy_compute_j"] is not None
                    else 0.0 for e in ests.values()]
            if any(vals):
                ax.barh(boards, vals, left=left, color=OP_COLOURS[k], label=k)
                left = [a + v for a, v in zip(left, vals)]
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlabel("µJ per batch (symlog)")
        ax.set_title("memory-aware (per-op + per-byte)" if memory else "compute-only (per-op table)", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Estimated energy by op kind and memory level (no bar: the board cannot run the model)")
    return fig


def _roofline_plot(report: dict):
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 5.5))
    intensity = np.logspace(-2, 3, 100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (tname, est) in enumerate(report["estimates"].items()):
        peaks, bw = est["roofline"]["peak_ops_per_s"], est["roofline"]["bandwidth_bytes_per_s"]
        peak = peaks.get("fp32_mac") or max(peaks.values(), default=0)
        if not peak or not bw:
            continue
        c = colours[i % len(colours)]
        ax.plot(intensity, np.minimum(peak, bw * intensity), color=c, label=f"{tname} roof (fp32 MAC)")
        pts = [(sum(c_["ops"].values()) / c_["bytes_moved"], sum(c_["ops"].values()) / e["latency_s"])
               for c_, e in zip(report["nodes"], est["nodes"])
               if e["latency_s"] and c_["bytes_moved"] and c_["ops"]]
        if pts:
            ax.scatter(*zip(*pts), color=c, s=18)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("operational intensity (ops per byte moved)")
    ax.set_ylabel("ops per second")
    ax.set_title("Roofline per board; dots: layers at their estimated (roofline) speed")
    ax.legend(fontsize=7)
    return fig


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v, scale: float = 1.0, digits: int = 4) -> str:
    return "-" if v is None else f"{v * scale:.{digits}g}"


def write_html(report: dict, path: str | Path) -> Path:
    """Write the report with its plots to ``path``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    path = Path(path)
    t = report["total"]
    nodes = _table(["node", "op", "ops by kind", "bytes moved", "param B", "measured here ms", "how"],
                   [[n["name"], n["op"], ", ".join(f"{k} {v:,}" for k, v in n["ops"].items()),
                     f"{n['bytes_moved']:,}", f"{n['param_bytes']:,}", _fmt(n["latency_s"], 1e3),
                     n["latency_label"]] for n in report["nodes"]])
    boards = _table(["board", "latency ms, estimated (roofline)", "µJ compute-only (per-op table)",
                     "µJ memory-aware (per-op + per-byte)", "RAM", "flash", "notes"],
                    [[b, _fmt(e["total"]["latency_s"], 1e3), _fmt(e["total"]["energy_compute_j"], 1e6),
                      _fmt(e["total"]["energy_memory_j"], 1e6),
                      f"{e['fit']['ram']['verdict']} ({e['fit']['ram']['need_bytes']:,} B)",
                      f"{e['fit']['flash']['verdict']} ({e['fit']['flash']['need_bytes']:,} B)",
                      "; ".join(e["total"]["not_estimated"])] for b, e in report["estimates"].items()])
    figs = [("Per-layer latency", _latency_plot(report)), ("Energy", _energy_plot(report)),
            ("Roofline", _roofline_plot(report))]
    imgs = "".join(f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="data:image/png;base64,{_png(f)}">'
                   for title, f in figs)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgert profile: {html.escape(Path(report['artifact']).name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}} th{{background:#eee}} img{{max-width:100%}}</style>
</head><body>
<h1>edgert profile: {html.escape(Path(report['artifact']).name)}</h1>
<p>Compiled for <b>{html.escape(report['target'])}</b>, batch {report['batch']}; every figure is per {report['per']}.
Measured here: {_fmt(t['latency_s'], 1e3)} ms ({html.escape(t['latency_label'])}).
{t['macs']:,} MACs, {t['param_bytes']:,} parameter bytes, {t['bytes_moved']:,} bytes moved,
peak live activations {t['peak_activation_bytes']:,} B (at {html.escape(t['peak_activation_at'])}).</p>
<p>Latency on a board is <i>estimated (roofline, 1 core)</i>, scaled by the board's kernel tables where its
file has them (the host's, measured by <code>python -m tools.bench calibrate</code>); energy is estimated by two labelled models,
<i>compute-only (per-op table)</i> and <i>memory-aware (per-op + per-byte)</i>, from the board files in
targets/ (each figure there cites its source). Nothing for a board is a measurement.</p>
<h2>Boards</h2>{boards}
<h2>Layers</h2>{nodes}
{imgs}
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path
