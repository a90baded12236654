"""`featstore models add`: a Hugging Face model (a local save_pretrained / hub snapshot folder, or hf:ID from the
HF cache or the hub) -> catalogue entries under the featstore home, exported and parity-checked before they are
written.

Vision models become one image entry; text encoders one text entry; a dual encoder (CLIP, SigLIP) two entries in
one space: NAME (image tower) and NAME-text (text tower), each naming the other as its `partner`. The entries use
builder "transformers": the torch module is built from the folder at export time only; embedding afterwards runs
the ONNX file with ONNX Runtime, and text is tokenized with the folder's tokenizer.json by `tokenizers`.

Only the model types hf_support.py lists are imported; anything else is refused with one line saying why and naming
them. The folder's files are checked before torch or transformers is imported.
`remove_model` deletes an imported entry and its exports.
"""
from __future__ import annotations

import inspect
import json
import re
from dataclasses import replace
from pathlib import Path

from featstore.errors import FeatstoreError, one_of
from featstore.models.catalog import ModelSpec, builtin_models, imported_dir, imported_models
from featstore.models.hf_support import POOLER_POOLED, ROBERTA_LIKE, check_folder, model_kind
from featstore.models.hf_support import weights as _weights

POOLINGS = ("cls", "mean", "pooler")


def add_model(source: str, name: str | None = None, pooling: str | None = None, modality: str | None = None,
              force: bool = False, log=print) -> list[ModelSpec]:
    """Import, export (parity-checked on real photos or sentences) and write the catalogue entries."""
    if pooling is not None and pooling not in POOLINGS:
        raise one_of("pooling", pooling, POOLINGS)
    if modality is not None and modality not in ("image", "text"):
        raise one_of("modality", modality, ["image", "text"])
    if name is not None:
        _name(name)                          # a bad or built-in name refused before anything is read
    folder, origin = locate(source, log)
    config = _json(folder / "config.json", "config.json (not a transformers model folder?)")
    model_type = config.get("model_type", "")
    kind = model_kind(config, origin, modality, pooling)
    base = _name(name or origin.removeprefix("hf:").rstrip("/").split("/")[-1])
    _check_free([base, f"{base}-text"] if kind == "dual" else [base], force)
    check_folder(folder, kind)               # what the folder lacks, said before torch is imported
    common = {"builder": "transformers", "path": str(folder), "origin": origin, "model_type": model_type,
              "architecture": (config.get("architectures") or [""])[0], **_weights(folder)}
    licence = _licence(folder)
    if kind == "dual":
        vision = config.get("vision_config", {})
        specs = [_image_spec(base, folder, origin, licence, {**common, "partner": f"{base}-text"}, "projection",
                             vision.get("image_size")),
                 _text_spec(f"{base}-text", folder, origin, licence, {**common, "partner": base}, "projection",
                            config.get("text_config", {}), model_type)]
    elif kind == "image":
        specs = [_image_spec(base, folder, origin, licence, common, pooling or _image_pooling(model_type),
                             config.get("image_size"))]
    else:
        specs = [_text_spec(base, folder, origin, licence, common, pooling or _st_pooling(folder), config,
                            model_type)]
    specs = [_with_dim(s) for s in specs]
    from featstore.models.export import ensure_exported

    for spec in specs:                       # every tower exported and checked before any entry is written
        ensure_exported(spec, log=log)
    imported_dir().mkdir(parents=True, exist_ok=True)
    for spec in specs:
        (imported_dir() / f"{spec.name}.toml").write_text(to_toml(spec), encoding="utf-8")
    return specs


def _check_free(names: list[str], force: bool) -> None:
    """Refuse a name a built-in or (without force) an imported entry already has."""
    for n in names:
        if n in builtin_models():
            raise FeatstoreError(f"{n!r} is a built-in backbone; give the import another --name")
    taken = [n for n in names if n in imported_models()] if not force else []
    if taken:
        origin = imported_models()[taken[0]].source.get("origin", "?")
        raise FeatstoreError(f"a model named {taken[0]!r} exists already (imported from {origin}); pass --force to "
                             "replace it, or give this one another --name")


def locate(source: str, log=print) -> tuple[Path, str]:
    """(the model's folder, where it came from): a local folder, or hf:ID from the HF cache, else the hub."""
    if source.startswith("hf:"):
        return _hub_snapshot(source[3:], log), source
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise FeatstoreError(f"{source}: no such folder (a local model folder, or hf:ORG/NAME for the Hugging "
                             "Face hub)")
    folder = folder.resolve()
    modules = folder / "modules.json"            # a sentence-transformers folder: the transformer in a subfolder?
    if not (folder / "config.json").is_file() and modules.is_file():
        for m in _json(modules, "modules.json"):
            if m.get("type", "").endswith("Transformer") and m.get("path"):
                folder = folder / m["path"]
    return folder, str(folder)


def _hub_snapshot(repo_id: str, log) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE

    patterns = ["*.json", "*.txt", "*.safetensors", "*/*.json", "*.model"]
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns))
    except Exception:       # noqa: BLE001  (not in the cache, whatever the hub library calls that)
        pass
    log(f"hf:{repo_id}: not in the Hugging Face cache ({HF_HUB_CACHE}); downloading it from the hub ...")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # noqa: BLE001  (offline, unknown repo, gated: one line says which)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise FeatstoreError(f"hf:{repo_id}: not in the Hugging Face cache and the hub cannot be reached or has no "
                             f"such model ({reason}); download it where there is a network (huggingface-cli "
                             "download) and pass the folder") from None


def _image_spec(name, folder, origin, licence, source, pooling, image_size) -> ModelSpec:
    from featstore.models.hf_backbones import load_model
    from featstore.models.hf_preprocess import input_spec, load_processor

    inp = input_spec(load_processor(folder), origin)
    model = load_model(str(folder))
    forward = model.get_image_features if pooling == "projection" else model.forward
    source = {**source, "image_size": int(image_size or inp["size"]),
              "interpolate": "interpolate_pos_encoding" in inspect.signature(forward).parameters}
    return ModelSpec(name=name, modality="image", dim=0, licence=licence,
                     description=f"{source['architecture'] or source['model_type']} imported from {origin}",
                     source=source, input=inp, output={"pooling": pooling, "dim": 0})


def _text_spec(name, folder, origin, licence, source, pooling, config, model_type) -> ModelSpec:
    from featstore.models.hf_backbones import load_model

    if pooling not in POOLINGS + ("projection",):
        raise FeatstoreError(f"{origin}: sentence-transformers pooling {pooling!r} is not supported (cls or mean)")
    tokenizer = _tokenizer_file(folder, name)
    model = load_model(str(folder))
    forward = model.get_text_features if pooling == "projection" else model.forward
    source = {**source, "token_type_ids": "token_type_ids" in inspect.signature(forward).parameters}
    limits = [config.get("max_position_embeddings", 512) - (2 if model_type in ROBERTA_LIKE else 0)]
    tok_config = folder / "tokenizer_config.json"
    if tok_config.is_file():
        limits.append(int(_json(tok_config, "tokenizer_config.json").get("model_max_length", 1e9)))
    st = folder / "sentence_bert_config.json"
    if st.is_file():
        limits.append(int(_json(st, "sentence_bert_config.json").get("max_seq_length", 1e9)))
    return ModelSpec(name=name, modality="text", dim=0, licence=licence,
                     description=f"{source['architecture'] or model_type} imported from {origin}", source=source,
                     input={"max_tokens": int(min(limits)), "tokenizer": tokenizer},
                     output={"pooling": pooling, "dim": 0})


def _tokenizer_file(folder: Path, name: str) -> str:
    """The folder's tokenizer.json, or one converted from its other tokenizer files (written beside the entry)."""
    if (folder / "tokenizer.json").is_file():
        return "tokenizer.json"
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    except (OSError, ValueError) as exc:
        raise FeatstoreError(f"{folder}: no tokenizer featstore can use ({str(exc).splitlines()[0]})") from None
    if not getattr(tok, "is_fast", False):
        raise FeatstoreError(f"{folder}: its tokenizer has no fast (tokenizers) version; featstore needs one")
    imported_dir().mkdir(parents=True, exist_ok=True)
    target = imported_dir() / f"{name}.tokenizer.json"
    tok.backend_tokenizer.save(str(target))
    return str(target)                           # absolute: spec_file joins it unchanged


def _with_dim(spec: ModelSpec) -> ModelSpec:
    """The spec with its output dimension, measured by running the torch module once."""
    import torch

    from featstore.models.torch_backbones import load_features, load_text_features

    with torch.no_grad():
        if spec.modality == "image":
            size = int(spec.input["size"])
            dim = load_features(spec)(torch.zeros(1, 3, size, size)).shape[-1]
        else:
            from featstore.models.tokenize import TEXT_INPUTS, TextTokenizer

            feeds = TextTokenizer(spec).encode(["a sentence"]).feeds
            dim = load_text_features(spec)(*[torch.from_numpy(feeds[k]) for k in TEXT_INPUTS]).shape[-1]
    return replace(spec, dim=int(dim), output={**spec.output, "dim": int(dim)})


def _image_pooling(model_type: str) -> str:
    return "pooler" if model_type in POOLER_POOLED else "cls"


def _st_pooling(folder: Path) -> str:
    """A sentence-transformers folder's pooling (1_Pooling/config.json), else mean."""
    for cfg in (folder / "1_Pooling" / "config.json", folder.parent / "1_Pooling" / "config.json"):
        if cfg.is_file():
            d = _json(cfg, "1_Pooling/config.json")
            for key, mode in (("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls")):
                if d.get(key):
                    return mode
            return next((k for k, v in d.items() if k.startswith("pooling_mode") and v), "mean")
    return "mean"


def _licence(folder: Path) -> str:
    readme = folder / "README.md"
    if readme.is_file():
        found = re.search(r"^license:\s*(\S+)", readme.read_text(encoding="utf-8", errors="replace")[:4000], re.M)
        if found:
            return found.group(1)
    return "see the model card"


def _name(raw: str) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", raw.lower()).strip("-.")
    if not name:
        raise FeatstoreError(f"{raw!r}: give the model a --name (letters, digits, . _ -)")
    if name in builtin_models():
        raise FeatstoreError(f"{name!r} is a built-in backbone; give the import another --name")
    return name


def _json(path: Path, what: str):
    if not path.is_file():
        raise FeatstoreError(f"{path.parent}: no {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FeatstoreError(f"{path}: not valid JSON ({exc})") from None


def to_toml(spec: ModelSpec) -> str:
    """The entry as a catalogue file (the format of models/*.toml)."""
    head = [f"# Imported by `featstore models add` from {spec.source.get('origin')}.",
            f"name = {_value(spec.name)}", f"modality = {_value(spec.modality)}", f"licence = {_value(spec.licence)}",
            f"description = {_value(spec.description)}"]
    tables = [(t, getattr(spec, t)) for t in ("source", "input", "output")]
    body = [f"\n[{t}]\n" + "\n".join(f"{k} = {_value(v)}" for k, v in d.items()) for t, d in tables]
    return "\n".join(head) + "\n" + "\n".join(body) + "\n"


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return json.dumps(str(v))            # a JSON string is a TOML basic string


def remove_model(name: str) -> dict:
    """Delete an imported entry (a dual encoder: both towers), its converted tokenizer and its exported ONNX files;
    stores embedded with it keep their vectors. Returns {"removed": names, "files": paths deleted}."""
    if name in builtin_models():
        raise FeatstoreError(f"{name!r} is a built-in backbone; only models imported with `featstore models add` "
                             "can be removed")
    imported = imported_models()
    if name not in imported:
        raise one_of("imported model", name, imported)
    partner = imported[name].source.get("partner")
    names = [name] + ([partner] if partner in imported else [])
    files = []
    for n in names:                         # the entry itself last: a failure midway leaves it to remove again
        for path in [*_exports_of(n), imported_dir() / f"{n}.tokenizer.json", imported_dir() / f"{n}.toml"]:
            if path.is_file():
                path.unlink()
                files.append(str(path))
    return {"removed": names, "files": files}


def _exports_of(name: str) -> list[Path]:
    """The ONNX files exported for entry `name` in the featstore home (NAME and NAME@SIZE, their fp16 and
    pixel-input versions, the graphs below its cut points with their records)."""
    from featstore.home import exports_dir

    own = re.compile(re.escape(name) + r"(@\d+)?-[0-9a-f]{16}((-fp16)?(-[0-9a-f]{16})?(-gather)?\.onnx"
                     r"|-cut\d+-[a-z0-9-]+\.(onnx|json))")           # ... and the parts below its cut points
    folders = [exports_dir(), exports_dir() / "pixel-input"]
    return [p for f in folders if f.is_dir() for p in sorted(f.iterdir()) if own.fullmatch(p.name)]
