"""Torch modules for the catalogue's backbones (export time only: nothing else imports torch)."""
from __future__ import annotations

import torch

from featstore.models.catalog import ModelSpec, weights_path
from featstore.errors import FeatstoreError


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
        # image_size: the package pads its convolutions "same" for one input size fixed at construction; at any
        # other size (NAME@SIZE) those pads would be wrong, so the module is built for the size it will run at
        net = EfficientNet.from_pretrained(spec.source["arch"], weights_path=str(weights_path(spec)),
                                           image_size=int(spec.input["size"]))
    return net.eval()


def load_features(spec: ModelSpec) -> torch.nn.Module:
    """The pooled-feature extractor for a catalogue backbone (or an imported Hugging Face model), in eval mode."""
    if spec.source.get("builder") == "transformers":
        from featstore.models.hf_backbones import load_image_tower

        return load_image_tower(spec)
    return PooledFeatures(load_classifier(spec)).eval()


class MeanPooledText(torch.nn.Module):
    """A BERT encoder + masked mean pooling + L2 normalisation: what sentence-transformers' encode returns for
    all-MiniLM-L6-v2 (Transformer -> Pooling(mean) -> Normalize)."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


def load_text_features(spec: ModelSpec) -> torch.nn.Module:
    """The sentence-embedding module for a text catalogue entry (weights read from the installed package, or an
    imported Hugging Face folder)."""
    if spec.source.get("builder") == "transformers":
        from featstore.models.hf_backbones import load_text_tower

        return load_text_tower(spec)
    if spec.source.get("builder") != "sentence_transformer":
        raise FeatstoreError(f"model {spec.name!r}: no torch builder for {spec.source.get('builder')!r}")
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()       # its load report lists the unused pooler weights: expected here
    hf_logging.disable_progress_bar()
    bert = BertModel.from_pretrained(str(weights_path(spec).parent), attn_implementation="eager",
                                     add_pooling_layer=False)
    return MeanPooledText(bert).eval()
