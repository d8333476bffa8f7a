"""The four MLPerf Tiny reference models, rebuilt in torch with random weights.

    python -m tools.models.mlperf_tiny      # each model's input, output, parameters and multiply-adds

Where each architecture comes from (github.com/mlcommons/tiny, the Keras reference models of the
closed division; layer for layer, written here in torch, not copied):

- ``kws_dscnn``: keyword spotting, ``benchmark/training/keyword_spotting/keras_model.py`` (``ds_cnn``;
  the DS-CNN of Zhang et al., "Hello Edge", arXiv:1711.07128). 49x10 MFCCs, Conv 64 10x4 stride 2
  'same' + BN + ReLU + Dropout(0.2), 4 x (depthwise 3x3 'same' + BN + ReLU, pointwise 64 + BN + ReLU),
  Dropout(0.4), AveragePooling2D(pool_size=(24, 5)), Dense 12 softmax.
- ``vww_mobilenet``: visual wake words, ``benchmark/training/visual_wake_words/vww_model.py`` (the
  Silicon Labs MobileNetV1 for EEMBC): alpha 0.25 at 96x96x3, 13 depthwise-separable blocks, ReLU (not
  ReLU6), biases on every conv, 3x3 average pool, Dense 2 softmax.
- ``ic_resnet8``: image classification on CIFAR-10, ``benchmark/training/image_classification/
  keras_model.py`` (``resnet_v1_eembc`` with 16 filters): a 3x3 stem, three stacks of two 3x3 convs
  at 16/32/64 filters, stacks 2 and 3 downsample by 2 with a bare strided 1x1 conv shortcut (no BN);
  8x8 average pool, Dense 10 softmax.
- ``ad_autoencoder``: anomaly detection (ToyCar), ``benchmark/training/anomaly_detection/
  keras_model.py`` (the DCASE 2020 baseline of Hitachi): 640 -> 4 x 128 -> 8 -> 4 x 128 -> 640, each
  hidden Dense followed by BN and ReLU, the last Dense linear.

Reproduced exactly, beyond the layer list:

- Keras' BatchNormalization eps is 1e-3 (torch's default is 1e-5); every conv and dense has a bias.
- Keras' 'same' padding puts the odd pixel at the bottom/right: a strided 3x3 conv on an even input
  pads (top 0, bottom 1), the KWS 10x4 stride-2 conv on 49x10 pads rows (4, 5) and columns (1, 1).
  torch's ``padding=`` is symmetric and edgert's frontends do not take a pad op (aten.pad, ONNX Pad),
  so such a conv is a ``TFSameConv2d``: its kernel is one larger along each asymmetric axis, that
  leading row/column is zero, and it is padded symmetrically by the larger amount; the output is the
  Keras conv's, value for value, at the cost of the zero taps (3x3 -> 4x4 on the strided convs,
  10x4 -> 11x4 on the KWS input conv). ``reference_weight`` gives the Keras-shaped kernel,
  ``load_reference_weight`` takes one.
- KWS pools 24x5 windows over its 25x5 map (``final_pool_size = (int(49/2), int(10/2))``), so the last
  time step is not averaged; this is not a global average pool.
- The classifiers end in softmax, as the reference does (``logits=True`` leaves it out).

Weights are torch's default initialization under a fixed seed. BatchNorm gets random affine
parameters (gamma in [0.5, 1.5], beta ~ N(0, 0.2)) and running statistics measured by a float64
forward pass over standard-normal inputs (layer by layer, as in training), so each folded layer has
the scale a trained one would. ``MODELS`` maps each name to ``(builder, input shape of one sample)``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # Keras BatchNormalization default


def _bn2d(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS)


def _tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of one axis under TensorFlow's 'same' rule."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class TFSameConv2d(nn.Conv2d):
    """A conv with TensorFlow 'same' padding for a fixed input size, with only symmetric torch padding.

    Along an axis where TF pads one more pixel after than before, the kernel gets one extra leading
    tap that is zero and both sides get the larger padding: each window then sees exactly the TF
    window. ``lead`` = (rows, cols) of leading zero taps.
    """

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int], stride: int, in_hw: tuple[int, int],
                 groups: int = 1) -> None:
        pads = [_tf_same_pads(s, k, stride) for s, k in zip(in_hw, kernel)]
        self.lead = tuple(after - before for before, after in pads)
        if any(d not in (0, 1) for d in self.lead):
            raise ValueError(f"TF padding {pads} is not within one pixel of symmetric")
        super().__init__(cin, cout, tuple(k + d for k, d in zip(kernel, self.lead)), stride,
                         tuple(after for _, after in pads), groups=groups)
        self.reference_kernel = tuple(kernel)
        with torch.no_grad():
            self.weight[:, :, :self.lead[0], :] = 0
            self.weight[:, :, :, :self.lead[1]] = 0

    @property
    def reference_weight(self) -> torch.Tensor:
        """The kernel as the Keras layer holds it (leading zero taps removed), [O, C/groups, kh, kw]."""
        return self.weight[:, :, self.lead[0]:, self.lead[1]:]

    def load_reference_weight(self, w: torch.Tensor) -> None:
        with torch.no_grad():
            self.weight.copy_(F.pad(w, (self.lead[1], 0, self.lead[0], 0)))


# ---- keyword spotting: DS-CNN ----

class DSCNN(nn.Module):
    """DS-CNN for 49x10 MFCCs, 12 keywords."""

    def __init__(self, filters: int = 64, classes: int = 12, logits: bool = False) -> None:
        super().__init__()
        self.logits = logits
        self.conv1 = TFSameConv2d(1, filters, (10, 4), 2, (49, 10))  # 25x5; pads rows (4, 5), cols (1, 1)
        self.bn1 = _bn2d(filters)
        self.drop1 = nn.Dropout(0.2)
        self.blocks = nn.Sequential(*[nn.Sequential(
            nn.Conv2d(filters, filters, 3, padding=1, groups=filters), _bn2d(filters), nn.ReLU(),
            nn.Conv2d(filters, filters, 1), _bn2d(filters), nn.ReLU()) for _ in range(4)])
        self.drop2 = nn.Dropout(0.4)
        self.pool = nn.AvgPool2d((24, 5))  # over 25x5: one window, the last row left out, as in Keras
        self.fc = nn.Linear(filters, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(self.drop2(self.blocks(x))).flatten(1)
        x = self.fc(x)
        return x if self.logits else torch.softmax(x, dim=1)


# ---- visual wake words: MobileNetV1, alpha 0.25 ----

def _separable(cin: int, cout: int, stride: int, hw: int) -> nn.Sequential:
    dw = (nn.Conv2d(cin, cin, 3, padding=1, groups=cin) if stride == 1 else
          TFSameConv2d(cin, cin, (3, 3), stride, (hw, hw), groups=cin))
    return nn.Sequential(dw, _bn2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1), _bn2d(cout), nn.ReLU())


class MobileNetV1(nn.Module):
    """MobileNetV1 at alpha 0.25 on 96x96x3, 2 classes (person / no person)."""

    # (input channels, output channels, stride) of the 13 depthwise-separable blocks
    BLOCKS = [(8, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2),
              *[(128, 128, 1)] * 5, (128, 256, 2), (256, 256, 1)]

    def __init__(self, classes: int = 2, logits: bool = False) -> None:
        super().__init__()
        self.logits = logits
        self.stem = nn.Sequential(TFSameConv2d(3, 8, (3, 3), 2, (96, 96)), _bn2d(8), nn.ReLU())
        blocks, hw = [], 48
        for cin, cout, stride in self.BLOCKS:
            blocks.append(_separable(cin, cout, stride, hw))
            hw //= stride
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AvgPool2d(hw)  # 3x3
        self.fc = nn.Linear(256, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))
        return x if self.logits else torch.softmax(x, dim=1)


# ---- image classification: ResNet-8 ----

class ResNetStack(nn.Module):
    """Two 3x3 conv-BN (ReLU between), added to the input or to its strided 1x1 conv, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, hw: int) -> None:
        super().__init__()
        self.conv1 = (nn.Conv2d(cin, cout, 3, padding=1) if stride == 1 else
                      TFSameConv2d(cin, cout, (3, 3), stride, (hw, hw)))
        self.bn1 = _bn2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = _bn2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(self.shortcut(x) + y)


class ResNet8(nn.Module):
    """ResNet-8 for CIFAR-10 (32x32x3), 10 classes."""

    def __init__(self, classes: int = 10, logits: bool = False) -> None:
        super().__init__()
        self.logits = logits
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), _bn2d(16), nn.ReLU())
        self.stack1 = ResNetStack(16, 16, 1, 32)
        self.stack2 = ResNetStack(16, 32, 2, 32)
        self.stack3 = ResNetStack(32, 64, 2, 16)
        self.pool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stack3(self.stack2(self.stack1(self.stem(x))))
        x = self.fc(self.pool(x).flatten(1))
        return x if self.logits else torch.softmax(x, dim=1)


# ---- anomaly detection: FC autoencoder ----

class AutoEncoder(nn.Module):
    """Dense autoencoder over 640 features (5 frames x 128 log-mel bands)."""

    WIDTHS = [640, 128, 128, 128, 128, 8, 128, 128, 128, 128]

    def __init__(self) -> None:
        super().__init__()
        w = self.WIDTHS
        self.hidden = nn.Sequential(*[nn.Sequential(nn.Linear(a, b), nn.BatchNorm1d(b, eps=BN_EPS), nn.ReLU())
                                      for a, b in zip(w[:-1], w[1:])])
        self.out = nn.Linear(w[-1], w[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x))


# ---- random weights with measured BatchNorm statistics ----

def _with_calibrated_batchnorm(model: nn.Module, shape: tuple[int, ...], seed: int,
                               batch: int = 32) -> nn.Module:
    """Random BN affine parameters, running statistics from one float64 pass over N(0, 1) inputs."""
    gen = torch.Generator().manual_seed(seed + 1)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in bns:
            c = m.num_features
            m.weight.copy_(0.5 + torch.rand(c, generator=gen))
            m.bias.copy_(0.2 * torch.randn(c, generator=gen))
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch gives its own statistics
        x = torch.randn((batch, *shape), generator=gen, dtype=torch.float64)
        model.double().eval()
        for m in bns:
            m.train()  # normalize by batch statistics and record them; dropout stays off
        model(x)
        for m in bns:
            m.momentum = 0.1
    return model.float().eval()


def _build(seed: int, make: Callable[[], nn.Module], shape: tuple[int, ...]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
    return _with_calibrated_batchnorm(model, shape, seed)


def kws_dscnn(logits: bool = False) -> nn.Module:
    return _build(100, lambda: DSCNN(logits=logits), (1, 49, 10))


def vww_mobilenet(logits: bool = False) -> nn.Module:
    return _build(101, lambda: MobileNetV1(logits=logits), (3, 96, 96))


def ic_resnet8(logits: bool = False) -> nn.Module:
    return _build(102, lambda: ResNet8(logits=logits), (3, 32, 32))


def ad_autoencoder() -> nn.Module:
    return _build(103, AutoEncoder, (640,))


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "kws_dscnn": (kws_dscnn, (1, 49, 10)),
    "vww_mobilenet": (vww_mobilenet, (3, 96, 96)),
    "ic_resnet8": (ic_resnet8, (3, 32, 32)),
    "ad_autoencoder": (ad_autoencoder, (640,)),
}
"""name -> (builder, input shape of one sample: the model takes [N, *shape])."""


def _macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-adds of one sample, zero taps of a TFSameConv2d included."""
    total = 0

    def hook(m: nn.Module, _inp, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out[0].numel() * m.weight[0].numel()
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros((1, *shape)))
    for h in handles:
        h.remove()
    return total


if __name__ == "__main__":
    for name, (build, shape) in MODELS.items():
        m = build()
        with torch.no_grad():
            y = m(torch.randn((2, *shape), generator=torch.Generator().manual_seed(0)))
        params = sum(p.numel() for p in m.parameters())
        print(f"{name}: input [N, {', '.join(map(str, shape))}] -> {list(y.shape[1:])}, "
              f"{params} parameters, {_macs(m, shape) / 1e6:.2f} M multiply-adds")
