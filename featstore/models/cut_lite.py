"""EfficientNet-Lite split at a cut point (torch, export and fine-tuning time only): the layers below the cut
(stem + the first MBConv blocks) and those above it (the remaining blocks, conv_head, ReLU6, global average).

Cut points: `conv-head` = the input of the 1x1 conv head (the last MBConv block's output, e.g. 320 x 7 x 7 for
Lite0); `last-block` = the input of the last MBConv stage (a stage starts where a block changes the channel count;
192 x 7 x 7 for Lite0, whose last stage is one block).
"""
from __future__ import annotations

import torch

LITE_CUTS = {"conv-head": "before conv_head: the last MBConv block's output",
             "last-block": "before the last MBConv stage"}


def cut_index(net, cut: str) -> int:
    """How many of net._blocks lie below the cut."""
    blocks = net._blocks
    if cut == "conv-head":
        return len(blocks)
    starts = [i for i, b in enumerate(blocks) if b._block_args.input_filters != b._block_args.output_filters
              or b._block_args.stride not in (1, [1], [1, 1])]
    return starts[-1]


def _rate(net, idx: int) -> float | None:
    """The drop-connect rate extract_features gives block idx (only used in training mode)."""
    rate = net._global_params.drop_connect_rate
    return rate * float(idx) / len(net._blocks) if rate else rate


class LiteBottom(torch.nn.Module):
    """image (N, 3, S, S) -> the activation at the cut (N, C, H, W)."""

    def __init__(self, net, start: int):
        super().__init__()
        self.conv_stem, self.bn0, self.act = net._conv_stem, net._bn0, net._swish
        self.blocks = torch.nn.ModuleList(net._blocks[:start])
        self.rates = [_rate(net, i) for i in range(start)]

    def forward(self, image):
        x = self.act(self.bn0(self.conv_stem(image)))
        for block, rate in zip(self.blocks, self.rates):
            x = block(x, drop_connect_rate=rate)
        return x


class LiteTop(torch.nn.Module):
    """activation (N, C, H, W) -> the pooled features (N, 1280): exactly PooledFeatures above the cut."""

    def __init__(self, net, start: int):
        super().__init__()
        self.blocks = torch.nn.ModuleList(net._blocks[start:])
        self.rates = [_rate(net, i) for i in range(start, len(net._blocks))]
        self.conv_head, self.bn1, self.act, self.pool = net._conv_head, net._bn1, net._swish, net._avg_pooling

    def forward(self, x, mask=None):
        for block, rate in zip(self.blocks, self.rates):
            x = block(x, drop_connect_rate=rate)
        return self.pool(self.act(self.bn1(self.conv_head(x)))).flatten(1)


def split(net, cut: str) -> tuple[LiteBottom, LiteTop]:
    start = cut_index(net, cut)
    return LiteBottom(net, start).eval(), LiteTop(net, start).eval()
