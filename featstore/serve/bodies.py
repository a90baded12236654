"""The request bodies the API takes, as schemas: a JSON body (or a form's text fields) that does not fit is refused
with 400/422 and one line naming the field, never passed on to become a 500."""
from __future__ import annotations

import json

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from featstore.errors import FeatstoreError
from featstore.store.where_guard import MAX_LENGTH

MAX_K = 200
MAX_TEXTS = 256
MAX_DEPTH = 8              # nesting of a JSON body (ours are flat)
MAX_DIM = 16_384           # values of a query vector


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def parse(cls, data, strict: bool = True):
        """The body as this model, or FeatstoreError naming the first field that does not fit."""
        try:
            return cls.model_validate(data, strict=strict)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(map(str, first.get("loc", ()))) or "body"
            raise FeatstoreError(f"{field}: {first.get('msg', 'invalid')}") from None


class SearchBody(_Body):
    """A search: JSON {text | id | vector, k, where, model, task}, or a multipart form's fields beside its image."""

    text: str | None = Field(None, max_length=10_000)
    id: int | None = Field(None, ge=0)
    vector: list[float] | None = Field(None, min_length=1, max_length=MAX_DIM)
    k: int = Field(10, ge=1, le=MAX_K)
    where: str | None = Field(None, max_length=MAX_LENGTH)
    model: str | None = Field(None, max_length=200)
    task: str | None = Field(None, max_length=200)

    @classmethod
    def from_form(cls, fields: dict) -> "SearchBody":
        """A form's text fields (k as text: whole numbers only)."""
        known = {k: v for k, v in fields.items() if k in ("k", "where", "model", "task") and v != ""}
        if "k" in known and not known["k"].strip().isdigit():
            raise FeatstoreError(f"k: expected a whole number, got {known['k'][:40]!r}")
        return cls.parse(known, strict=False)

    def query_given(self) -> str:
        given = [key for key in ("text", "id", "vector") if getattr(self, key) is not None]
        if len(given) != 1:
            raise FeatstoreError("give exactly one of 'text', 'id' or 'vector' (or upload an image as 'file')")
        return given[0]


class PredictBody(_Body):
    """A prediction on texts: JSON {head, texts} (images go as multipart)."""

    head: str = Field(min_length=1, max_length=200)
    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS)


async def read_json(request: Request) -> dict:
    """The body as a JSON object (at most MAX_DEPTH deep), or FeatstoreError saying why not."""
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}", parse_constant=_no_constant)
    except RecursionError:
        raise FeatstoreError("the JSON body is nested too deep") from None
    except ValueError as exc:
        raise FeatstoreError(f"the body is not JSON ({str(exc).splitlines()[0][:80]}); or upload an image as "
                             "multipart field 'file'") from None
    if not isinstance(body, dict):
        raise FeatstoreError("the JSON body must be an object")
    if _depth(body) > MAX_DEPTH:
        raise FeatstoreError("the JSON body is nested too deep")
    return body


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _depth(value, level: int = 0) -> int:
    if level > MAX_DEPTH or not isinstance(value, (dict, list)):
        return level
    items = value.values() if isinstance(value, dict) else value
    return max((_depth(v, level + 1) for v in items), default=level + 1)
