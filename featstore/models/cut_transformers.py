"""Transformer encoders split before their last 1 or 2 blocks (torch, export and fine-tuning time only): MiniLM
(the catalogue's text model), imported ViT / DeiT / DINOv2 and the vision tower of CLIP / SigLIP, BERT-like text.

Both halves are copies of the pooled-feature module (torch_backbones / hf_backbones) with the block list cut:
  bottom  the blocks below the cut, final layer norms switched off: its last_hidden_state is the input of the
          first block above the cut (N, T, D);
  top     the blocks above the cut, with the embeddings (and CLIP's pre-layernorm) replaced by the activation
          given: the model's own forward then runs the rest (attention mask, final norm, pooling, projection,
          normalisation), so the pooled output is the backbone's by construction.
"""
from __future__ import annotations

import copy
import types

import torch

from featstore.errors import FeatstoreError

TRANSFORMER_CUTS = {"last-block": "before the last transformer block",
                    "last-2-blocks": "before the last 2 transformer blocks"}
VISION_TYPES = {"vit", "deit", "dinov2", "vit_msn", "clip", "siglip", "clip_vision_model", "siglip_vision_model"}
TEXT_TYPES = {"bert", "roberta", "xlm-roberta", "camembert", "electra"}
FINAL_NORMS = ("layernorm", "post_layernorm")      # ViT / DINOv2; CLIP / SigLIP vision


def core_of(model, modality: str):
    """The encoder holding embeddings + encoder: the model itself, or a dual encoder's tower."""
    tower = "vision_model" if modality == "image" else "text_model"
    return getattr(model, tower, model)


def layers_of(core) -> tuple[object, str]:
    """(the module holding the block list, the list's attribute name)."""
    for holder in (getattr(core, "encoder", None), core):        # ViT in transformers 5 holds its layers itself
        for attr in ("layer", "layers"):
            if holder is not None and isinstance(getattr(holder, attr, None), torch.nn.ModuleList):
                return holder, attr
    raise FeatstoreError(f"{type(core).__name__}: no list of transformer blocks found to cut")


def n_blocks(model, modality: str) -> int:
    enc, attr = layers_of(core_of(model, modality))
    return len(getattr(enc, attr))


def _keep(core, blocks: slice) -> None:
    enc, attr = layers_of(core)
    setattr(enc, attr, torch.nn.ModuleList(list(getattr(enc, attr))[blocks]))


class _Given(torch.nn.Module):
    """Stands in for the embeddings: returns the activation the top module was given."""

    def __init__(self):
        super().__init__()
        self.x = None

    def forward(self, *args, **kwargs):
        return self.x


def _replace_embeddings(core, given: _Given) -> None:
    emb = core.embeddings
    emb.forward = types.MethodType(lambda _self, *a, **k: given.x, emb)   # the module stays (dtype checks read it)
    if hasattr(core, "pre_layrnorm"):             # CLIP: normalised before the first block, i.e. below any cut
        core.pre_layrnorm = torch.nn.Identity()


class TransformerBottom(torch.nn.Module):
    """Image: pixel_values -> (N, T, D). Text: (input_ids, attention_mask, token_type_ids) -> ((N, T, D), mask)."""

    def __init__(self, tower, modality: str, keep: int):
        super().__init__()
        self.tower = copy.deepcopy(tower)
        self.modality = modality
        core = core_of(self._model(), modality)
        _keep(core, slice(0, keep))
        for name in FINAL_NORMS:
            if hasattr(core, name):
                setattr(core, name, torch.nn.Identity())
        self.core = core

    def _model(self):
        return getattr(self.tower, "model", None) or self.tower.bert

    def forward(self, *inputs):
        if self.modality == "image":
            (image,) = inputs
            extra = {"interpolate_pos_encoding": True} if getattr(self.tower, "interpolate", False) else {}
            return self.core(pixel_values=image, **extra).last_hidden_state
        input_ids, attention_mask, token_type_ids = inputs
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if getattr(self.tower, "uses_type_ids", True):
            kwargs["token_type_ids"] = token_type_ids
        return self.core(**kwargs).last_hidden_state, attention_mask


class TransformerTop(torch.nn.Module):
    """(activation (N, T, D), mask (N, T) or None) -> the pooled features of the whole backbone."""

    def __init__(self, tower, modality: str, keep: int):
        super().__init__()
        self.tower = copy.deepcopy(tower)
        self.modality = modality
        self.given = _Given()
        model = getattr(self.tower, "model", None) or self.tower.bert
        core = core_of(model, modality)
        _keep(core, slice(keep, None))
        _replace_embeddings(core, self.given)

    def forward(self, x, mask=None):
        self.given.x = x
        n = x.shape[0]
        try:
            if self.modality == "image":
                return self.tower(x.new_zeros((n, 3, 1, 1)))
            if mask is None:
                mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device)
            zeros = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
            return self.tower(zeros, mask.to(torch.long), zeros)
        finally:
            self.given.x = None


def split(tower, modality: str, blocks_above: int) -> tuple[TransformerBottom, TransformerTop]:
    model = getattr(tower, "model", None) or tower.bert
    keep = n_blocks(model, modality) - blocks_above
    return TransformerBottom(tower, modality, keep).eval(), TransformerTop(tower, modality, keep).eval()
