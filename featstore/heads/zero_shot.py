"""Zero-shot heads: a classifier built from the text embeddings of the task's class names, no labels used to fit.

Each class name is put into every prompt template ("a photo of a {label}"), the prompts are embedded by the text
tower that shares the features' space (a dual encoder's other tower, such as CLIP's; or the text model itself for
a text set), L2-normalised and averaged over the templates, then normalised again: the prompt ensembling of the
CLIP paper (Radford et al. 2021, section 3.1.4). The head is the Program l2norm -> dense -> softmax: the argmax is
the class whose prompt embedding is most cosine-similar to the item; the probabilities are softmax(LOGIT_SCALE x
cosine), CLIP's temperature.
"""
from __future__ import annotations

import numpy as np

from ..errors import FeatstoreError
from .program import Program, Step, dense

LOGIT_SCALE = 100.0
IMAGE_TEMPLATES = ("a photo of a {label}.",)
TEXT_TEMPLATES = ("{label}",)


def parse_templates(prompts: str | list[str] | None, modality: str) -> list[str]:
    """Templates from 'T1,T2' (or a list); the default for the features' modality when none are given."""
    if prompts is None:
        return list(IMAGE_TEMPLATES if modality == "image" else TEXT_TEMPLATES)
    items = prompts.split(",") if isinstance(prompts, str) else list(prompts)
    templates = [t.strip() for t in items if t.strip()]
    missing = [t for t in templates if "{label}" not in t]
    if not templates or missing:
        raise FeatstoreError("--prompts: each template must contain {label}, e.g. \"a photo of a {label}\""
                             + (f" (not: {missing[0]!r})" if missing else ""))
    return templates


def prompts_for(label: str, templates: list[str]) -> list[str]:
    name = label.replace("_", " ")
    return [t.replace("{label}", name) for t in templates]


def class_embeddings(classes: list[str], templates: list[str], embed) -> np.ndarray:
    """(n_classes, dim): per class, the normalised mean of its normalised prompt embeddings. `embed` maps a list
    of texts to their vectors."""
    rows = []
    for c in classes:
        v = np.asarray(embed(prompts_for(c, templates)), dtype=np.float64)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        mean = v.mean(axis=0)
        rows.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
    return np.stack(rows).astype(np.float32)


def zero_shot_program(class_vectors: np.ndarray, classes: list[str], scale: float = LOGIT_SCALE) -> Program:
    steps = [Step("l2norm"), dense(class_vectors.T * scale, np.zeros(len(classes))), Step("softmax")]
    return Program(steps, [str(c) for c in classes], "classification")
