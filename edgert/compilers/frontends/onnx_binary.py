"""ONNX converters for the binary family: Sign becomes ``binary_sign`` (sign(0) = +1, see below).

ONNX's Sign maps 0 to 0; edgert's binary layers (like larq and edgert.nn) map it to +1. The two agree
everywhere except on inputs that are exactly 0. The ``binarize_sign_layers`` pass then turns
Sign -> Conv/MatMul with +-1 weights into XNOR-popcount layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

from edgert.ops.binary.nodes import BinarySign

if TYPE_CHECKING:
    from edgert.compilers.frontends.onnx import OnnxImporter


def _sign(c: OnnxImporter, node: onnx.NodeProto) -> None:
    c.emit(BinarySign, node, (c.act(node.input[0]),))


BINARY_CONVERTERS = {"Sign": _sign}
