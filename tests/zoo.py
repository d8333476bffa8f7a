"""Small float CNNs used across the test suite, each built from a fixed seed.

Every builder returns ``(model, example)``: the model in eval mode with non-trivial batch-norm
running statistics, and a float32 example input of batch 1. ``ZOO`` maps each name to its builder.

The ``mlperf_*`` entries are the MLPerf Tiny reference models (tools/models/mlperf_tiny.py; batch-norm
statistics measured there). The classifiers are taken without their final softmax: on random
weights the probabilities are near uniform and the softmax would shrink the logits' errors four-
(2 classes) to twelvefold (``multibranch`` covers softmax). ``SLOW`` names the entries whose end-to-end
compile takes more than about ten seconds.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _randomize_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Give every BatchNorm1d/2d random affine parameters and running statistics."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            with torch.no_grad():
                m.weight.copy_(1.0 + 0.2 * torch.randn(c, generator=gen))
                m.bias.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.5 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))


def _build(seed: int, make: Callable[[], nn.Module], shape: tuple[int, ...]) -> tuple[nn.Module, torch.Tensor]:
    """Build ``make()`` under ``seed`` without touching the global RNG; return it with an example."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
    gen = torch.Generator().manual_seed(seed + 1)
    _randomize_batchnorm(model, gen)
    example = torch.randn(shape, generator=gen)
    return model.eval(), example


def _conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, padding: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Plain(nn.Module):
    """Conv-BN-ReLU stack, global average pool, linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(_conv_bn_relu(3, 8), _conv_bn_relu(8, 16, stride=2), nn.Conv2d(16, 16, 3),
                                      nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and a shortcut, downsampled by a strided 1x1 conv."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.downsample(x)
        return self.relu(out)


class Residual(nn.Module):
    """Stem, one downsampling basic block, one identity basic block, pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(3, 8)
        self.layer1 = BasicBlock(8, 16, stride=2)
        self.layer2 = BasicBlock(16, 16, stride=1)
        self.layer2.downsample = nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(self.avgpool(x).flatten(1))


class Depthwise(nn.Module):
    """MobileNet-style depthwise-separable blocks with ReLU6 and a mean-pooled head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True))
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.pw = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.dw2 = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1, groups=16), nn.BatchNorm2d(32), nn.ReLU6())
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw2(self.pw(self.dw(self.stem(x))))
        return self.classifier(x.mean((2, 3)))


class Strided(nn.Module):
    """Strided, dilated and rectangular convs on an odd, non-square single-channel input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, (3, 2), stride=(2, 1), padding=(1, 0))
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=2, dilation=2)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 4, (1, 2), stride=(1, 2))
        self.fc = nn.Linear(4 * 3 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = self.conv3(x)
        return self.fc(x.view(x.size(0), -1))


class Pooled(nn.Module):
    """Max pool with padding and ceil_mode, average pools, adaptive pool to 2x2, sigmoid and tanh."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)  # 15x13 -> 8x7
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.avgpool = nn.AvgPool2d(2, stride=2, ceil_mode=True)  # 8x7 -> 4x4, a partial last column
        self.avgpool2 = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)  # 4x4 -> 4x4
        self.adaptive = nn.AdaptiveAvgPool2d((2, 2))  # divisible, so ONNX export gives an AveragePool
        self.fc = nn.Linear(8 * 2 * 2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.sigmoid(self.bn1(self.conv1(x))))
        x = self.avgpool2(self.avgpool(torch.tanh(self.conv2(x))))
        return self.fc(torch.flatten(self.adaptive(x), 1))


class Inception(nn.Module):
    """Four parallel branches joined along channels."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.b1 = _conv_bn_relu(cin, 4, 1, padding=0)
        self.b2 = nn.Sequential(_conv_bn_relu(cin, 4, 1, padding=0), _conv_bn_relu(4, 6))
        self.b3 = nn.Sequential(_conv_bn_relu(cin, 2, 1, padding=0), _conv_bn_relu(2, 4, 5, padding=2))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), _conv_bn_relu(cin, 2, 1, padding=0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class Multibranch(nn.Module):
    """Stem, inception block, max pool, pool and linear with a softmax at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(3, 8)
        self.mixed = Inception(8)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.pool(self.mixed(self.stem(x)))), dim=1)


class SqueezeExcite(nn.Module):
    """MobileNetV3's gate: global mean, 1x1 conv down, ReLU, 1x1 conv up, hardsigmoid, times the input."""

    def __init__(self, c: int, squeezed: int) -> None:
        super().__init__()
        self.down, self.up = nn.Conv2d(c, squeezed, 1), nn.Conv2d(squeezed, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.hardsigmoid(self.up(F.relu(self.down(x.mean((2, 3), keepdim=True)))))
        return x * gate


class MobileNetV3Block(nn.Module):
    """Hardswish stem, an inverted residual (1x1 expand, depthwise 3x3, squeeze-excite, 1x1 project,
    shortcut), a strided one without shortcut, mean-pooled linear head."""

    def __init__(self) -> None:
        super().__init__()
        def bn(c): return nn.BatchNorm2d(c)
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), bn(16), nn.Hardswish())
        self.block1 = nn.Sequential(
            nn.Conv2d(16, 48, 1, bias=False), bn(48), nn.Hardswish(),
            nn.Conv2d(48, 48, 3, 1, 1, groups=48, bias=False), bn(48), nn.Hardswish(),
            SqueezeExcite(48, 12), nn.Conv2d(48, 16, 1, bias=False), bn(16))
        self.block2 = nn.Sequential(
            nn.Conv2d(16, 64, 1, bias=False), bn(64), nn.Hardswish(),
            nn.Conv2d(64, 64, 5, 2, 2, groups=64, bias=False), bn(64), nn.Hardswish(),
            SqueezeExcite(64, 16), nn.Conv2d(64, 24, 1, bias=False), bn(24))
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.block2(x + self.block1(x))
        return self.head(x.mean((2, 3)))


class TemporalConvNet(nn.Module):
    """Audio TCN on [N, 40 mel bands, 100 frames]: 1x1 conv in, three residual blocks of dilated
    conv1d (dilation 1, 2, 4) with BatchNorm1d and ReLU, a strided conv1d, mean over time, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Conv1d(40, 32, 1)
        self.blocks = nn.ModuleList(nn.Sequential(
            nn.Conv1d(32, 32, 3, padding=d, dilation=d, bias=False), nn.BatchNorm1d(32), nn.ReLU(),
            nn.Conv1d(32, 32, 3, padding=d, dilation=d)) for d in (1, 2, 4))
        self.down = nn.Conv1d(32, 48, 5, stride=2, padding=2)
        self.head = nn.Linear(48, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = F.relu(x + block(x))
        return self.head(F.relu(self.down(x)).mean(2))


class TinyUNet(nn.Module):
    """Encoder-decoder on 3x16x16: strided convs down to 4x4; up by ConvTranspose2d (to 8x8) and by
    nearest upsampling (to 16x16), each concatenated with its encoder skip; a 1x1 head, bilinearly
    upsampled to 32x32."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = _conv_bn_relu(3, 8)
        self.enc2 = _conv_bn_relu(8, 16, stride=2)
        self.enc3 = _conv_bn_relu(16, 32, stride=2)
        self.up3 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec2 = _conv_bn_relu(32, 16)
        self.dec1 = _conv_bn_relu(16 + 8, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        d2 = self.dec2(torch.cat([self.up3(self.enc3(e2)), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2, mode="nearest"), e1], 1))
        return F.interpolate(self.head(d1), scale_factor=2, mode="bilinear", align_corners=False)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block on [N, L, C]: single-head attention (q k^T / sqrt(C), softmax, times v,
    output projection) and a GELU MLP, each with a LayerNorm before and a residual add after."""

    def __init__(self, c: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.q, self.k, self.v, self.proj = (nn.Linear(c, c) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(c, hidden), nn.GELU(), nn.Linear(hidden, c))
        self.scale = c ** -0.5
        with torch.no_grad():  # LayerNorm weights off 1 and 0, as a trained model's are
            for m in (self.norm1, self.norm2):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        scores = (self.q(h) * self.scale) @ self.k(h).transpose(1, 2)
        x = x + self.proj(torch.softmax(scores, dim=-1) @ self.v(h))
        return x + self.mlp(self.norm2(x))


def plain() -> tuple[nn.Module, torch.Tensor]:
    return _build(10, Plain, (1, 3, 16, 16))


def residual() -> tuple[nn.Module, torch.Tensor]:
    return _build(11, Residual, (1, 3, 16, 16))


def depthwise() -> tuple[nn.Module, torch.Tensor]:
    return _build(12, Depthwise, (1, 3, 16, 16))


def strided() -> tuple[nn.Module, torch.Tensor]:
    return _build(13, Strided, (1, 1, 11, 9))


def pooled() -> tuple[nn.Module, torch.Tensor]:
    return _build(14, Pooled, (1, 3, 15, 13))


def multibranch() -> tuple[nn.Module, torch.Tensor]:
    return _build(15, Multibranch, (1, 3, 12, 12))


def _mlperf(name: str, seed: int, **kwargs: bool) -> tuple[nn.Module, torch.Tensor]:
    from tools.models.mlperf_tiny import MODELS

    build, shape = MODELS[name]
    return build(**kwargs), torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed))


def mlperf_kws() -> tuple[nn.Module, torch.Tensor]:
    return _mlperf("kws_dscnn", 16, logits=True)


def mlperf_vww() -> tuple[nn.Module, torch.Tensor]:
    return _mlperf("vww_mobilenet", 17, logits=True)


def mlperf_ic() -> tuple[nn.Module, torch.Tensor]:
    return _mlperf("ic_resnet8", 18, logits=True)


def mlperf_ad() -> tuple[nn.Module, torch.Tensor]:
    return _mlperf("ad_autoencoder", 19)


def mobilenet_v3_block() -> tuple[nn.Module, torch.Tensor]:
    return _build(20, MobileNetV3Block, (1, 3, 16, 16))


def temporal_conv() -> tuple[nn.Module, torch.Tensor]:
    return _build(21, TemporalConvNet, (1, 40, 100))


def tiny_unet() -> tuple[nn.Module, torch.Tensor]:
    return _build(22, TinyUNet, (1, 3, 16, 16))


def transformer_block() -> tuple[nn.Module, torch.Tensor]:
    return _build(23, TransformerBlock, (1, 16, 32))


ZOO: dict[str, Callable[[], tuple[nn.Module, torch.Tensor]]] = {
    "plain": plain, "residual": residual, "depthwise": depthwise, "strided": strided,
    "pooled": pooled, "multibranch": multibranch,
    "mlperf_kws": mlperf_kws, "mlperf_vww": mlperf_vww, "mlperf_ic": mlperf_ic, "mlperf_ad": mlperf_ad,
    "mobilenet_v3_block": mobilenet_v3_block, "temporal_conv": temporal_conv, "tiny_unet": tiny_unet,
    "transformer_block": transformer_block}

SLOW: frozenset[str] = frozenset({"mlperf_vww"})  # 12-17 s per frontend through TVM
