"""Options of the verbs, one small dataclass each, shared by the Python API and the CLI (which fills them from
its flags). Every field has the CLI's default."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EmbedOptions:
    """How to embed a source. model: a catalogue name (NAME@SIZE: at another input size) or a path to your own
    .onnx (then input_size, mean and std say how to feed it); None: efficientnet-lite0 for images,
    all-minilm-l6-v2 for text."""

    model: str | None = None
    task: str | None = None                 # task of the labels found [default: the folder's or file's name]
    input_size: int | None = None
    mean: tuple | float = 127.0             # with model=path.onnx: per-channel mean on 0..255
    std: tuple | float = 128.0
    text_column: str = "text"               # text tables: the column holding the text ...
    label_column: str | None = None         # ... a column of labels [None: `label`, if any], and one of row ids
    id_column: str | None = None
    batch_size: int | None = None           # [default: 32 on the CPU, 128 on CUDA; 64 texts]
    device: str = "auto"                    # auto | cpu | cuda
    precision: str = "fp32"                 # fp32 | int8 (images, CPU) | fp16 (GPU)
    workers: int | None = None              # local engine: decode threads; Ray engine: actors
    decode: str = "auto"                    # auto | threads | processes | device
    engine: str = "local"                   # local | ray
    address: str | None = None              # Ray engine: an existing cluster
    shard_size: int = 1000                  # Ray engine: files per shard
    staging: str | None = None              # Ray engine: folder for finished shards [default: STORE/staging]
    retry_failed: bool = False
    wait: bool = False                      # wait for another process writing the store
    progress: bool = True
    cut: str | None = None                  # also store the activations at this cut point (models/cuts.py)
    views: int = 1                          # with cut: views per image (0: plain; 1..: seeded crop + flip)
    view_seed: int = 0                      # with cut and views > 1: the augmentation's seed


@dataclass
class FitOptions:
    """How to fit a head. head: logreg, svm, ridge, knn, linear, mlp, or 'all' for a leaderboard; shots: a
    few-shot learning curve (examples per class) instead of one head."""

    head: str = "logreg"                    # ... or 'zero-shot': from class-name prompts (a dual encoder's text
                                            # tower, or a text set's own model), no labels used to fit
    model: str | None = None                # embedding set: model name or set id [default: the newest for the task]
    name: str | None = None                 # stored under [default: the task; with head='all', TASK-KIND]
    force: bool = False                     # replace stored heads of the same name (refused without it)
    C: float | None = None                  # logreg only: a fixed C instead of choosing it by CV
    target: str = "auto"                    # auto | class | numeric
    shots: list[int] | None = None
    seeds: int | None = None                # with shots: draws per point [default: 5]
    plot: str | None = None                 # a figure (.png, .svg, .pdf): the held-out confusion matrix
                                            # (head='all': the best head's), the few-shot curve, or for a numeric
                                            # target predicted vs actual
    plot_normalize: bool = False            # the confusion matrix's rows divided by their totals (shares)
    prompts: str | list[str] | None = None  # zero-shot: templates with {label}, 'T1,T2' or a list
                                            # [default: "a photo of a {label}." for images, "{label}" for text]
    cut: str | None = None                  # finetune: the cut whose activations to tune on [default: the newest]


@dataclass
class SearchOptions:
    """How to rank stored items against queries."""

    k: int = 10
    model: str | None = None                # embedding set: model name or set id [default: the newest]
    task: str | None = None                 # whose labels to show and `where` reads
    where: str | None = None                # SQL condition over the stored items
