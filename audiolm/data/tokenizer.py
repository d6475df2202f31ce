"""Text tokenizers: UTF-8 bytes (default), characters of an alphabet, or a sentencepiece model.

Every tokenizer shares the same specials at the bottom of the id range: pad=0, bos=1, eos=2
(and unk=3 for characters). Byte b is id b + 3; alphabet character i is id i + 4; sentencepiece
piece p is id p + 3. `encode` returns the ids without specials; `decode` drops specials.
"""

from __future__ import annotations

import abc
import os
from typing import Any, Sequence

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2

# Lowercase English, digits, space and a little punctuation: enough for the synthetic set.
DEFAULT_ALPHABET = " abcdefghijklmnopqrstuvwxyz0123456789'.,?!-"


class Tokenizer(abc.ABC):
    """Base class: `encode(text) -> list[int]`, `decode(ids) -> str`, `vocab_size`, specials."""

    pad_id = PAD_ID
    bos_id = BOS_ID
    eos_id = EOS_ID
    num_specials = 3
    vocab_size: int

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids of `text`, without bos/eos."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; pad/bos/eos (and out-of-range ids) are dropped."""

    def unknown_chars(self, text: str) -> list[str]:
        """Characters of `text` this tokenizer cannot represent (mapped to unk); [] for
        tokenizers that cover every string."""
        return []

    def encode_with_specials(self, text: str) -> list[int]:
        """[bos] + encode(text) + [eos]."""
        return [self.bos_id, *self.encode(text), self.eos_id]

    @property
    def specials(self) -> dict[str, int]:
        return {"pad": self.pad_id, "bos": self.bos_id, "eos": self.eos_id}


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes; vocab 259 (3 specials + 256 bytes). Round-trips any string."""

    vocab_size = 256 + 3

    def encode(self, text: str) -> list[int]:
        return [b + self.num_specials for b in text.encode("utf-8")]

    def decode(self, ids: Sequence[int]) -> str:
        data = bytes(int(i) - self.num_specials for i in ids
                     if self.num_specials <= int(i) < self.vocab_size)
        return data.decode("utf-8", errors="replace")


class CharTokenizer(Tokenizer):
    """Characters of `alphabet`; anything else maps to unk (id 3) and decodes as "?"."""

    unk_id = 3

    def __init__(self, alphabet: str = DEFAULT_ALPHABET):
        if not alphabet:
            raise ValueError("alphabet='': the character tokenizer needs at least one character")
        if len(set(alphabet)) != len(alphabet):
            raise ValueError(f"alphabet={alphabet!r}: characters must be distinct")
        self.alphabet = alphabet
        self.num_specials = 4
        self._ids = {c: i + self.num_specials for i, c in enumerate(alphabet)}
        self.vocab_size = len(alphabet) + self.num_specials

    def encode(self, text: str) -> list[int]:
        return [self._ids.get(c, self.unk_id) for c in text]

    def unknown_chars(self, text: str) -> list[str]:
        return [c for c in text if c not in self._ids]

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == self.unk_id:
                out.append("?")
            elif self.num_specials <= i < self.vocab_size:
                out.append(self.alphabet[i - self.num_specials])
        return "".join(out)

    @property
    def specials(self) -> dict[str, int]:
        return {**super().specials, "unk": self.unk_id}


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece model file; piece ids are shifted up by 3 to make room for the specials."""

    def __init__(self, path: str):
        try:
            import sentencepiece
        except ImportError:
            raise ImportError("data.tokenizer='sentencepiece' needs the sentencepiece package "
                              "(pip install sentencepiece)") from None
        if not os.path.isfile(path):
            raise FileNotFoundError(f"data.spm_path={path!r}: no such sentencepiece model file")
        self.processor = sentencepiece.SentencePieceProcessor(model_file=path)
        self.vocab_size = int(self.processor.get_piece_size()) + self.num_specials

    def encode(self, text: str) -> list[int]:
        return [int(i) + self.num_specials for i in self.processor.encode(text)]

    def decode(self, ids: Sequence[int]) -> str:
        pieces = [int(i) - self.num_specials for i in ids
                  if self.num_specials <= int(i) < self.vocab_size]
        return self.processor.decode(pieces)


TOKENIZERS = ("bytes", "chars", "sentencepiece")


def make_tokenizer(data_config: Any) -> Tokenizer:
    """The tokenizer named by `data.tokenizer` (with `data.alphabet` / `data.spm_path`)."""
    from audiolm.config import ConfigError

    name = data_config.get("tokenizer", "bytes")
    if name == "bytes":
        return ByteTokenizer()
    if name == "chars":
        alphabet = data_config.get("alphabet", "") or DEFAULT_ALPHABET
        try:
            return CharTokenizer(alphabet)
        except ValueError as e:
            raise ConfigError(f"data.alphabet: {e}") from None
    if name == "sentencepiece":
        path = data_config.get("spm_path", "")
        if not path:
            raise ConfigError("data.spm_path='': data.tokenizer='sentencepiece' needs the path "
                              "of a sentencepiece .model file")
        return SentencePieceTokenizer(os.path.expanduser(path))
    raise ConfigError(f"data.tokenizer={name!r}: must be one of {list(TOKENIZERS)}")
