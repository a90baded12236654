"""The backbone catalogue: reads the declarative files in featstore.models.catalogue (models/ in the repository)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from featstore.errors import FeatstoreError, one_of
from featstore.hashing import file_sha256


MIN_SIZE, MAX_SIZE = 32, 1024       # the input sizes a catalogue image backbone may be run at (NAME@SIZE)


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the backbone's input tensor: the one spec shared by embed, search and predict."""

    size: int
    crop_fraction: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple = (127.0, 127.0, 127.0)
    std: tuple = (128.0, 128.0, 128.0)
    resize: str = "shorter-side"
    crop: str = "center"
    resize_to: int | None = None          # resize "shorter-side-then-crop": the shorter side before the crop

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        """From a catalogue [input] table or a stored set's preprocess JSON (defaults: the EfficientNet-Lite spec)."""
        return cls(size=int(d["size"]), crop_fraction=float(d.get("crop_fraction", 0.875)),
                   interpolation=d.get("interpolation", "bicubic"), mean=tuple(d.get("mean", (127.0,) * 3)),
                   std=tuple(d.get("std", (128.0,) * 3)), resize=d.get("resize", "shorter-side"),
                   crop=d.get("crop", "center"), resize_to=int(d["resize_to"]) if d.get("resize_to") else None)

    def as_dict(self) -> dict:
        d = {"size": self.size, "resize": self.resize, "crop": self.crop, "crop_fraction": self.crop_fraction,
             "interpolation": self.interpolation, "mean": list(self.mean), "std": list(self.std)}
        return d | ({"resize_to": self.resize_to} if self.resize_to else {})     # older sets' keys unchanged

    def describe(self) -> str:
        """One line saying what the preprocessing does (models list, fused-export metadata)."""
        if self.resize == "exact":
            how = f"whole image resized ({self.interpolation}) to {self.size} x {self.size}"
        elif self.resize == "shorter-side-then-crop":
            how = (f"shorter side resized ({self.interpolation}) to {self.resize_to}, centre crop "
                   f"{self.size} x {self.size}")
        else:
            how = (f"centre square of {self.crop_fraction} x the shorter side, resized ({self.interpolation}) to "
                   f"{self.size} x {self.size}")
        mean = ", ".join(f"{m:g}" for m in self.mean)
        std = ", ".join(f"{v:g}" for v in self.std)
        return f"RGB; {how}; (pixel - [{mean}]) / [{std}] per channel on 0..255"


@dataclass(frozen=True)
class ModelSpec:
    """One backbone: where its weights come from, its input and its pooled output."""

    name: str
    modality: str
    dim: int
    licence: str
    description: str = ""
    default: bool = False
    source: dict = field(default_factory=dict)
    input: dict = field(default_factory=dict)
    output: dict = field(default_factory=dict)
    onnx_path: str | None = None          # set for a user's own ONNX file

    @property
    def preprocess(self) -> Preprocess:
        if self.modality != "image":
            raise FeatstoreError(f"model {self.name!r} embeds {self.modality}, not images")
        return Preprocess.from_dict(self.input)

    def input_key(self) -> dict:
        """What turns an input into the backbone's tensors: part of the embedding-set key."""
        if self.modality == "image":
            return self.preprocess.as_dict()
        return {"modality": "text", "max_tokens": int(self.input["max_tokens"]),
                "tokenizer_sha256": file_sha256(spec_file(self, self.input["tokenizer"])),
                "pooling": self.output.get("pooling", "mean"), "normalise": True}

    @property
    def input_label(self) -> str:
        if self.modality == "image":
            return f"{self.input['size']}x{self.input['size']} RGB"
        return f"text <= {self.input.get('max_tokens')} tokens"

    def spec_hash(self) -> str:
        """Hash of everything in the spec that determines exported values."""
        blob = json.dumps({"source": self.source, "input": self.input, "output": self.output}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def _parse(text: str, origin: str) -> ModelSpec:
    try:
        d = tomllib.loads(text)
        return ModelSpec(name=d["name"], modality=d["modality"], dim=int(d["output"]["dim"]), licence=d["licence"],
                         description=d.get("description", ""), default=bool(d.get("default", False)),
                         source=d.get("source", {}), input=d.get("input", {}), output=d["output"])
    except (KeyError, ValueError, tomllib.TOMLDecodeError) as exc:
        raise FeatstoreError(f"{origin}: invalid catalogue file ({exc})") from exc


def builtin_models() -> dict[str, ModelSpec]:
    """All catalogue entries, by name."""
    specs = {}
    for entry in sorted(resources.files("featstore.models.catalogue").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            spec = _parse(entry.read_text(encoding="utf-8"), entry.name)
            specs[spec.name] = spec
    return specs


def imported_models() -> dict[str, ModelSpec]:
    """Entries written by `featstore models add` (catalogue files under the featstore home), by name."""
    specs = {}
    for path in sorted(imported_dir().glob("*.toml")):
        spec = _parse(path.read_text(encoding="utf-8"), str(path))
        specs[spec.name] = spec
    return specs


def all_models() -> dict[str, ModelSpec]:
    """The built-in catalogue and the imported entries (a built-in name is never shadowed)."""
    return imported_models() | builtin_models()


def imported_dir() -> Path:
    """Where imported catalogue files live: FEATSTORE_HOME/models."""
    from featstore.home import home_dir

    return home_dir() / "models"


def partner(spec: ModelSpec) -> ModelSpec | None:
    """The other tower of a dual encoder (the text entry of an image entry and back), or None."""
    name = spec.source.get("partner")
    return all_models().get(name) if name else None


def default_model(modality: str = "image") -> ModelSpec:
    """The default backbone of a modality: the one marked default, else the first of that modality."""
    specs = [s for s in builtin_models().values() if s.modality == modality]
    return next((s for s in specs if s.default), specs[0])


def custom_onnx_spec(path: str | Path, size: int, mean=(127.0,) * 3, std=(128.0,) * 3,
                     crop_fraction: float = 0.875, interpolation: str = "bicubic") -> ModelSpec:
    """A user's own ONNX file (NCHW float input, one pooled feature output) with its preprocessing."""
    from featstore.models.session import probe_dim

    path = Path(path)
    if not path.is_file():
        raise FeatstoreError(f"{path}: ONNX file not found")
    dim = probe_dim(path, size)
    return ModelSpec(name=f"onnx:{path.stem}", modality="image", dim=dim, licence="user-supplied",
                     description=f"user ONNX file {path}", source={"builder": "onnx-file", "path": str(path.resolve())},
                     input={"size": size, "resize": "shorter-side", "crop": "center", "crop_fraction": crop_fraction,
                            "interpolation": interpolation, "mean": list(mean), "std": list(std)},
                     output={"pooling": "as exported", "dim": dim}, onnx_path=str(path.resolve()))


def resolve(name: str | None, modality: str = "image") -> ModelSpec:
    """A catalogue entry by name (None: the default backbone of the modality); NAME@SIZE runs an image backbone at
    another square input size (see at_input_size)."""
    if name is None:
        return default_model(modality)
    models = all_models()
    base, at, size = name.partition("@")
    if base not in models:
        raise one_of("model", name, models)
    if not at:
        return models[base]
    if not size.isdigit():
        raise FeatstoreError(f"model {name!r}: after '@' comes the input size in pixels, e.g. {base}@320")
    return at_input_size(models[base], int(size))


def catalogue_spec(name: str) -> ModelSpec | None:
    """The catalogue spec a stored set's model name stands for (NAME or NAME@SIZE), or None (a user's ONNX file)."""
    try:
        return resolve(name)
    except FeatstoreError:
        return None


def at_input_size(spec: ModelSpec, size: int) -> ModelSpec:
    """A catalogue image backbone run at another square input size, named NAME@SIZE: the same weights, exported
    again for that size (its own ONNX file and embedding set). The catalogue's size is the one the backbone was
    trained and evaluated at; whether another serves a dataset better is for benchmarks/quality.py to say (on
    flowers, Lite0 at 320 gained 1.1 +- 0.4 points of logistic-regression accuracy over 20 paired splits and lost
    2.6 points of leave-one-out search agreement)."""
    if spec.modality != "image" or spec.source.get("builder") == "onnx-file":
        raise FeatstoreError(f"model {spec.name!r}: only a catalogue image backbone can run at another input size")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise FeatstoreError(f"model {spec.name!r}: input size {size} is outside {MIN_SIZE}..{MAX_SIZE} pixels")
    if size == int(spec.input["size"]):
        return spec
    resized = {**spec.input, "size": size}
    if spec.input.get("resize_to"):          # keep the crop's share of the shorter side
        resized["resize_to"] = int(int(spec.input["resize_to"]) * size / int(spec.input["size"]))
    return replace(spec, name=f"{spec.name}@{size}", default=False, input=resized)


def weights_path(spec: ModelSpec) -> Path:
    """The weights file shipped inside the spec's weights package (found without importing it), or inside an
    imported model's folder."""
    return spec_file(spec, spec.source["weights_file"])


def spec_file(spec: ModelSpec, relative: str) -> Path:
    """A file of the spec's weights (weights, tokenizer): in its weights package, or for an imported model in its
    folder (`[source] path`)."""
    if "path" not in spec.source:
        return package_file(spec, relative)
    path = Path(spec.source["path"]) / relative
    if not path.is_file():
        raise FeatstoreError(f"model {spec.name!r}: file {path} is missing (the imported folder moved or changed; "
                             "import it again: featstore models add FOLDER --name NAME --force)")
    return path


def package_file(spec: ModelSpec, relative: str) -> Path:
    """A file inside the spec's weights package (weights, tokenizer), located without importing the package."""
    module = spec.source["weights_module"]
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise FeatstoreError(f"model {spec.name!r}: package {spec.source['weights_package']} is not installed")
    path = Path(list(found.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FeatstoreError(f"model {spec.name!r}: file {path} is missing")
    return path
