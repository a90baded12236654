"""Torch modules for imported Hugging Face models (export time only: nothing else imports torch or transformers).

One module per tower, with the pooling its catalogue entry names, so the exported graph outputs the pooled vector:
  image   cls (the first token of the last hidden state), mean (of the patch tokens), pooler (the model's own
          pooled output: global average for ConvNeXt/ResNet/Swin/EfficientNet), projection (a dual encoder's
          image embedding: CLIP/SigLIP get_image_features)
  text    mean (masked, over tokens), cls, pooler, projection (get_text_features); L2-normalised, as
          sentence-transformers' Normalize and CLIP's cosine space.
"""
from __future__ import annotations

import functools

import torch

from featstore.errors import FeatstoreError
from featstore.models.catalog import ModelSpec


@functools.lru_cache(maxsize=4)
def load_model(folder: str):
    """The folder's AutoModel in eval mode, eager attention where the model has attention (exports cleanly)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()          # its load report lists unused heads (pooler, classifier): expected
    hf_logging.disable_progress_bar()
    try:
        try:
            model = AutoModel.from_pretrained(folder, attn_implementation="eager")
        except (ValueError, TypeError):       # convolutional models have no attention implementation to choose
            model = AutoModel.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as exc:
        raise FeatstoreError(f"{folder}: transformers cannot load this model ({str(exc).splitlines()[0]})") from None
    return model.eval()


def _tensor(out, what: str) -> torch.Tensor:
    """A pooled output: get_*_features returns a tensor (transformers 4) or an output with pooler_output (5)."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise FeatstoreError(f"{what}: the model returns no pooled output; choose --pooling cls or mean")
    return pooled


class ImageTower(torch.nn.Module):
    def __init__(self, model, pooling: str, interpolate: bool):
        super().__init__()
        self.model, self.pooling, self.interpolate = model, pooling, interpolate

    def forward(self, image):
        extra = {"interpolate_pos_encoding": True} if self.interpolate else {}
        if self.pooling == "projection":
            return _tensor(self.model.get_image_features(pixel_values=image, **extra), "image tower").flatten(1)
        out = self.model(pixel_values=image, **extra)
        if self.pooling == "pooler":
            return _tensor(out, "image model").flatten(1)
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        return hidden[:, 1:].mean(dim=1)                  # mean of the patch tokens (the class token left out)


class TextTower(torch.nn.Module):
    def __init__(self, model, pooling: str, uses_type_ids: bool):
        super().__init__()
        self.model, self.pooling, self.uses_type_ids = model, pooling, uses_type_ids

    def forward(self, input_ids, attention_mask, token_type_ids):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.uses_type_ids:
            kwargs["token_type_ids"] = token_type_ids
        if self.pooling == "projection":
            pooled = _tensor(self.model.get_text_features(**kwargs), "text tower")
        else:
            out = self.model(**kwargs)
            if self.pooling == "pooler":
                pooled = _tensor(out, "text model")
            elif self.pooling == "cls":
                pooled = out.last_hidden_state[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
                pooled = (out.last_hidden_state * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


def load_image_tower(spec: ModelSpec) -> torch.nn.Module:
    model = load_model(spec.source["path"])
    trained = spec.source.get("image_size")
    interpolate = bool(trained) and int(trained) != int(spec.input["size"]) and spec.source.get("interpolate", False)
    return ImageTower(model, spec.output["pooling"], interpolate).eval()


def load_text_tower(spec: ModelSpec) -> torch.nn.Module:
    model = load_model(spec.source["path"])
    return TextTower(model, spec.output["pooling"], bool(spec.source.get("token_type_ids", True))).eval()
