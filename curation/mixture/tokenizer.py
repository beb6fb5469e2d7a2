"""The search's stated tokenizer: a byte-level BPE trained on the corpus's train split.

Token counts (domain statistics, budgets, the proxy models' vocabulary) are stated
under this tokenizer and named with it, e.g. ``bytelevel-bpe-4096 trained on
3f2a9c01d4e5``; bits per byte are reported beside every loss so that results
compare across tokenizers.

It is Hugging Face `tokenizers`' BPE on GPT-2-style byte-level pre-tokenization
(no normaliser, no added prefix space, no special tokens): the 256 byte symbols plus
``vocab_size - 256`` merges learnt from the train split with ``min_frequency`` 2. Every
string encodes (no unknown token) and decodes back exactly, and the byte lengths of a
document's tokens add up to its UTF-8 bytes.

Determinism. Training counts pre-tokenized words (a sum, whatever the thread
order) and then merges the most frequent pair, ties broken by the pair's ids, so the
result depends on the multiset of training texts only. We still sort the texts
before training, and tests train twice (in this process and in a subprocess with
one thread) and compare the saved JSON byte for byte. The saved file is the
tokenizer's identity: `StatedTokenizer.id` holds the sha256 of its JSON.

Files in a run directory: ``tokenizer.json`` (Hugging Face format; loads with
``tokenizers.Tokenizer.from_file``) and ``tokenizer.meta.json`` (name, vocabulary
size, the data fingerprint it was trained on, the sha256 of tokenizer.json), both
written atomically, the meta file last.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Sequence

import numpy as np

from curation.fs import write_atomic

DEFAULT_VOCAB_SIZE = 4096
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "tokenizer.meta.json"
_BYTE_ALPHABET = 256


def _tokenizers():
    try:
        import tokenizers
    except ImportError as e:   # a dependency of the package; say what is missing
        raise ImportError("the mixture search's tokenizer needs the `tokenizers` package "
                          "(pip install 'tokenizers>=0.15')") from e
    return tokenizers


class StatedTokenizer:
    """A trained byte-level BPE with a name and an identity.

    - ``name``: ``bytelevel-bpe-<vocab>``; ``description``: ``<name> trained on <data[:12]>``;
    - ``id``: ``<name>@<sha256 of the JSON, 16 hex>``: what caches key on;
    - ``encode_batch(texts)``: token ids per text (int32 arrays);
    - ``token_bytes``: the UTF-8 bytes each token id stands for (int64, vocab_size).
    """

    def __init__(self, tokenizer_json: str, trained_on: str = "unknown data"):
        tk = _tokenizers()
        self._json = tokenizer_json
        self._tok = tk.Tokenizer.from_str(tokenizer_json)
        self.vocab_size = self._tok.get_vocab_size()
        self.name = f"bytelevel-bpe-{self.vocab_size}"
        self.trained_on = trained_on
        self.sha256 = hashlib.sha256(tokenizer_json.encode("utf-8")).hexdigest()
        self.id = f"{self.name}@{self.sha256[:16]}"
        self.description = f"{self.name} trained on {trained_on[:12]}"
        self._token_bytes: np.ndarray | None = None

    # ------------------------------------------------------------ training
    @classmethod
    def train(cls, texts: Sequence[str], *, vocab_size: int = DEFAULT_VOCAB_SIZE,
              trained_on: str | None = None, min_frequency: int = 2) -> "StatedTokenizer":
        """Train on `texts` (sorted first; the order does not matter to the result).
        `trained_on` names the data (a fingerprint); by default the sha256 of the texts."""
        if vocab_size < _BYTE_ALPHABET:
            raise ValueError(f"vocab_size must be at least {_BYTE_ALPHABET} (the byte alphabet), got {vocab_size}")
        tk = _tokenizers()
        ordered = sorted(texts)
        if trained_on is None:
            h = hashlib.sha256()
            for t in ordered:
                h.update(hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest())
            trained_on = h.hexdigest()
        tok = tk.Tokenizer(tk.models.BPE())
        tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                         initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
                                         special_tokens=[], show_progress=False)
        tok.train_from_iterator(ordered, trainer=trainer, length=len(ordered))
        return cls(tok.to_str(), trained_on=trained_on)

    # ------------------------------------------------------------ files
    def save(self, run_dir: str) -> str:
        """tokenizer.json then tokenizer.meta.json in `run_dir`; returns the first's path."""
        path = os.path.join(run_dir, TOKENIZER_FILE)
        write_atomic(path, self._json.encode("utf-8"))
        meta = {"name": self.name, "vocab_size": self.vocab_size, "trained_on": self.trained_on,
                "description": self.description, "id": self.id, "sha256": self.sha256}
        write_atomic(os.path.join(run_dir, META_FILE),
                     (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        return path

    @classmethod
    def load(cls, run_dir: str) -> "StatedTokenizer":
        """The tokenizer saved in `run_dir`; ValueError if its meta file is missing or
        names another tokenizer.json (a half-written or mixed-up directory)."""
        with open(os.path.join(run_dir, TOKENIZER_FILE), "rb") as f:
            raw = f.read()
        meta_path = os.path.join(run_dir, META_FILE)
        if not os.path.exists(meta_path):
            raise ValueError(f"{meta_path} is missing: the tokenizer in {run_dir} is incomplete")
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("sha256") != hashlib.sha256(raw).hexdigest():
            raise ValueError(f"{meta_path} describes another tokenizer.json (sha256 differs)")
        return cls(raw.decode("utf-8"), trained_on=meta.get("trained_on", "unknown data"))

    @classmethod
    def train_or_load(cls, run_dir: str, texts: Sequence[str], *, trained_on: str,
                      vocab_size: int = DEFAULT_VOCAB_SIZE) -> "StatedTokenizer":
        """The tokenizer of `run_dir` if it was trained on `trained_on` with `vocab_size`,
        else a new one trained on `texts` and saved there (a resumed search reuses it)."""
        meta_path = os.path.join(run_dir, META_FILE)
        if os.path.exists(meta_path):
            try:
                tok = cls.load(run_dir)
            except (ValueError, OSError):
                tok = None
            if tok is not None and tok.trained_on == trained_on and tok.vocab_size == vocab_size:
                return tok
        tok = cls.train(texts, vocab_size=vocab_size, trained_on=trained_on)
        tok.save(run_dir)
        return tok

    @classmethod
    def for_corpus(cls, splits, run_dir: str | None = None, *,
                   vocab_size: int = DEFAULT_VOCAB_SIZE) -> "StatedTokenizer":
        """The stated tokenizer of a `CorpusSplits`: trained on its train split and named
        by its fingerprint; saved in (or reused from) `run_dir` when one is given."""
        texts, fp = splits.train_texts(), splits.fingerprint()
        if run_dir is None:
            return cls.train(texts, vocab_size=vocab_size, trained_on=fp)
        return cls.train_or_load(run_dir, texts, trained_on=fp, vocab_size=vocab_size)

    # ------------------------------------------------------------ use
    def to_json(self) -> str:
        return self._json

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text).ids, dtype=np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int32) for e in self._tok.encode_batch(list(texts))]

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids])

    @property
    def token_bytes(self) -> np.ndarray:
        """Bytes per token id: the byte-level alphabet maps each byte to one character,
        so a token's byte length is its string's length."""
        if self._token_bytes is None:
            out = np.zeros(self.vocab_size, np.int64)
            for s, i in self._tok.get_vocab().items():
                out[i] = len(s)
            self._token_bytes = out
        return self._token_bytes

    def __repr__(self) -> str:
        return f"StatedTokenizer({self.description}, id={self.id})"
