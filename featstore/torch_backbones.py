"""Torch modules for the catalogue's backbones (export time only: nothing else imports torch)."""
from __future__ import annotations

import torch

from .catalog import ModelSpec, weights_path
from .errors import FeatstoreError


class PooledFeatures(torch.nn.Module):
    """EfficientNet-Lite without its classifier: global-average-pooled output of the conv head."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net._avg_pooling(self.net.extract_features(x)).flatten(1)


def load_classifier(spec: ModelSpec):
    """The full pretrained network with its ImageNet classifier, in eval mode."""
    if spec.source.get("builder") != "efficientnet_lite":
        raise FeatstoreError(f"model {spec.name!r}: no torch builder for {spec.source.get('builder')!r}")
    import contextlib
    import io

    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
        net = EfficientNet.from_pretrained(spec.source["arch"], weights_path=str(weights_path(spec)))
    return net.eval()


def load_features(spec: ModelSpec) -> torch.nn.Module:
    """The pooled-feature extractor for a catalogue backbone, in eval mode."""
    return PooledFeatures(load_classifier(spec)).eval()
