"""Which Hugging Face models `featstore models add` imports, and what their folder must hold: decided from
config.json and the file names alone, before torch or transformers is imported, so a refusal comes at once.
"""
from __future__ import annotations

import re
from pathlib import Path

from featstore.errors import FeatstoreError

# The model types featstore imports: each is exported to ONNX and checked against torch (tests/test_hf_models.py
# and tests/test_newuser_models.py build tiny ones); docs/backbones.md lists them. Anything else is refused.
DUAL = {"clip", "siglip"}
CLS_POOLED = {"vit", "dinov2", "deit", "beit", "data2vec-vision", "vit_msn", "dinov3_vit"}
POOLER_POOLED = {"convnext", "convnextv2", "resnet", "swin", "swinv2", "regnet", "bit", "mobilenet_v2",
                 "clip_vision_model", "siglip_vision_model", "dinov3_convnext"}
IMAGE_TYPES = CLS_POOLED | POOLER_POOLED
TEXT_TYPES = {"bert", "roberta", "xlm-roberta", "camembert", "mpnet", "distilbert", "electra", "albert",
              "deberta-v2", "modernbert"}
ROBERTA_LIKE = {"roberta", "xlm-roberta", "camembert", "mpnet"}     # position ids start after the padding index
ENCODER_DECODER = {"t5", "mt5", "umt5", "longt5", "bart", "mbart", "pegasus", "marian", "blenderbot", "led",
                   "prophetnet"}
AUDIO = {"wav2vec2", "wav2vec2-bert", "wav2vec2-conformer", "hubert", "wavlm", "whisper", "data2vec-audio",
         "unispeech", "unispeech-sat", "sew", "sew-d", "audio-spectrogram-transformer", "clap", "encodec", "mimi"}
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def supported_types() -> str:
    """The model types featstore imports, as one line."""
    return (f"image: {', '.join(sorted(IMAGE_TYPES))}; text: {', '.join(sorted(TEXT_TYPES))}; "
            f"dual encoders: {', '.join(sorted(DUAL))}")


def model_kind(config: dict, origin: str, modality: str | None = None, pooling: str | None = None) -> str:
    """"image", "text" or "dual" for a supported model type; else one line saying why not and what is."""
    model_type = config.get("model_type", "")
    kind = "dual" if model_type in DUAL else "image" if model_type in IMAGE_TYPES else \
        "text" if model_type in TEXT_TYPES else None
    if kind is None:
        arch = (config.get("architectures") or [""])[0]
        what = f"model type {model_type!r}" + (f" ({arch})" if arch else "")
        raise FeatstoreError(f"{origin}: {what} is not supported: {_why_not(config)}; featstore imports "
                             f"{supported_types()}")
    if kind == "dual" and (modality is not None or pooling is not None):
        raise FeatstoreError(f"{origin} is a dual encoder ({model_type}): both towers are imported, pooled by "
                             "its own projections (no --modality or --pooling)")
    if kind != "dual" and modality not in (None, kind):
        raise FeatstoreError(f"{origin}: model type {model_type!r} is {'an' if kind == 'image' else 'a'} {kind} "
                             f"model; it cannot embed {modality} (leave out --modality)")
    return kind


def _why_not(config: dict) -> str:
    """Why a model type is not imported, as a clause."""
    model_type = config.get("model_type", "")
    arch = " ".join(config.get("architectures") or [])
    if not model_type:
        return "its config.json names no model_type"
    if config.get("is_encoder_decoder") or model_type in ENCODER_DECODER:
        return "it is an encoder-decoder (sequence-to-sequence) model, and featstore imports encoders only"
    if model_type in AUDIO or "num_mel_bins" in config or "feat_extract_norm" in config:
        return "it is a speech/audio model, and featstore embeds images and texts"
    if model_type == "efficientnet":
        return ("its image processor has steps of its own (a rescale offset and a second normalisation) that "
                "featstore cannot reproduce exactly; the built-in efficientnet-lite0..2 run that family")
    if model_type == "dinov2_with_registers":
        return "its position-embedding interpolation (antialiased bicubic) does not export to ONNX"
    if config.get("is_decoder") or re.search(r"(CausalLM|LMHeadModel)\b", arch):
        return "it is a decoder (causal language model), whose token states are not trained as sentence embeddings"
    return "featstore has not checked that it exports exactly"


def check_folder(folder: Path, kind: str) -> None:
    """The files an import of `kind` needs (image processor, tokenizer, weights), checked without importing torch."""
    from featstore.models.hf_preprocess import require_image_processor

    if kind in ("image", "dual"):
        require_image_processor(folder)
    if kind in ("text", "dual") and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise FeatstoreError(f"{folder}: no tokenizer ({', '.join(TOKENIZER_FILES)}); save the model's tokenizer "
                             "into the folder too: tokenizer.save_pretrained(folder)")
    weights(folder)


def weights(folder: Path) -> dict:
    """The folder's weight files (safetensors preferred), or one line saying there are none."""
    files = sorted(p.name for p in folder.iterdir() if p.name.endswith(WEIGHT_SUFFIXES) and p.is_file())
    safetensors = [f for f in files if f.endswith(".safetensors")]
    files = safetensors or files
    if not files:
        raise FeatstoreError(f"{folder}: no weights (*.safetensors or *.bin) in the folder")
    return {"weights_file": files[0], "weights_files": files}
