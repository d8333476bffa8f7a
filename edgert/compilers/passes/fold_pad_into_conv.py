"""Fold a zero Pad of H and W that only feeds convolutions into their padding.

Keras-'same' models exported to PyTorch or ONNX pad explicitly (often asymmetrically, (0, 1) on each
side of a strided conv) and then convolve without padding. The conv's own (top, left, bottom, right)
padding computes the same values without materializing the padded copy; the frontends run this pass.
"""

from __future__ import annotations

from edgert import ir


def fold_pad_into_conv(g: ir.Graph) -> ir.Graph:
    """Drop each zero Pad of the last two axes of an NCHW value read only by conv2d (as its input)."""
    readers = g.consumers()
    folded: dict[str, ir.Pad] = {}  # pad output -> the pad it came from
    for n in g.nodes:
        if (isinstance(n, ir.Pad) and n.value == 0.0 and len(n.before) == 4 and n.before[:2] == (0, 0)
                and n.after[:2] == (0, 0) and n.output not in g.outputs and readers.get(n.output)
                and all(isinstance(r, ir.Conv2d) and r.inputs[0] == n.output and n.output not in r.inputs[1:]
                        for r in readers[n.output])):
            folded[n.output] = n
    if not folded:
        return g
    nodes = []
    for n in g.nodes:
        if n.output in folded:
            continue
        if isinstance(n, ir.Conv2d) and n.inputs[0] in folded:
            pad = folded[n.inputs[0]]
            t, l, b, r = n.padding
            padding = (t + pad.before[2], l + pad.before[3], b + pad.after[2], r + pad.after[3])
            attrs = {**n.attrs(), "padding": padding}
            n = ir.Conv2d(name=n.name, inputs=(pad.inputs[0],) + n.inputs[1:], output=n.output, **attrs)
        nodes.append(n)
    return g.with_nodes(nodes).validate()
