"""Tokenize: texts -> the text backbone's input tensors, with the `tokenizers` library only (no transformers).

Truncation at the model's limit is reported per text (the store flags truncated texts). Padding is to the
longest text of each batch; the embed pipeline sorts texts by length first, so there is little of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featstore.models.catalog import ModelSpec, spec_file

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class Encoded:
    feeds: dict[str, np.ndarray]     # int64 (batch, tokens) per TEXT_INPUTS name
    lengths: np.ndarray              # tokens per text, special tokens included
    truncated: np.ndarray            # bool per text


class TextTokenizer:
    def __init__(self, spec: ModelSpec):
        from tokenizers import Tokenizer

        self._setup(Tokenizer.from_file(str(spec_file(spec, spec.input["tokenizer"]))), spec.input["max_tokens"])

    @classmethod
    def from_json(cls, tokenizer_json: str, max_tokens: int) -> "TextTokenizer":
        """The tokenizer a tokenizer.json text describes (an export carries its model's), cut at max_tokens."""
        from tokenizers import Tokenizer

        self = cls.__new__(cls)
        self._setup(Tokenizer.from_str(tokenizer_json), max_tokens)
        return self

    def _setup(self, tok, max_tokens) -> None:
        self.max_tokens = int(max_tokens)
        self.tok = tok
        self.tok.enable_truncation(max_length=self.max_tokens)
        self.tok.no_padding()

    def lengths(self, texts: list[str]) -> np.ndarray:
        """Token counts after truncation (for sorting by length)."""
        return np.array([len(e.ids) for e in self._encode_batch(texts)], dtype=np.int64)

    def encode(self, texts: list[str]) -> Encoded:
        encs = self._encode_batch(texts)
        lengths = np.array([len(e.ids) for e in encs], dtype=np.int64)
        width = int(lengths.max()) if len(encs) else 0
        feeds = {k: np.zeros((len(encs), width), dtype=np.int64) for k in TEXT_INPUTS}
        for i, e in enumerate(encs):
            n = len(e.ids)
            feeds["input_ids"][i, :n] = e.ids
            feeds["attention_mask"][i, :n] = e.attention_mask
            feeds["token_type_ids"][i, :n] = e.type_ids
        return Encoded(feeds, lengths, np.array([bool(e.overflowing) for e in encs]))

    def _encode_batch(self, texts: list[str]) -> list:
        """encode_batch, with a long text (a 10 MB cell) tokenized from a prefix: when the prefix already overflows
        the limit and every kept token ends before a space in it, the kept tokens are those of the whole text."""
        cut = 32 * self.max_tokens
        prefixes = [t if len(t) <= cut else t[:cut] for t in texts]
        encs = self.tok.encode_batch(prefixes)
        for i, (text, prefix, e) in enumerate(zip(texts, prefixes, encs)):
            if len(text) > len(prefix) and not (e.overflowing and _ends_before_a_space(e, prefix)):
                encs[i] = self.tok.encode(text)
        return encs


def _ends_before_a_space(e, prefix: str) -> bool:
    ends = [end for (_, end), special in zip(e.offsets, e.special_tokens_mask) if not special]
    return bool(ends) and any(c.isspace() for c in prefix[ends[-1]:])
