"""Token files for trainers: what `curate export --format megatron|olmo` writes.

**The tokenizer.** By default the mix run's stated tokenizer (a byte-level BPE with
no special tokens): its end-of-document (EOD) id is its vocabulary size, one past its
last token, so the vocabulary the files need is ``vocab_size + 1`` (Megatron-LM's
``--tokenizer-type NullTokenizer --vocab-size V+1`` gives that EOD). With
``--tokenizer`` a Hugging Face `tokenizers` JSON file, or a directory holding
``tokenizer.json``; its EOD is ``--eod-id``, else the ``eos_token`` of the directory's
``tokenizer_config.json``, else the first of ``EOS_NAMES`` that is one of its special
tokens, else an error saying to give ``--eod-id``. An EOD id must be a special token
or lie past the vocabulary: a plain token could also come out of a text, and OLMo-core
finds documents by the EOD. Texts are encoded with special tokens read as plain text
(``encode_special_tokens``) and without a post-processor's additions (BOS), so the
EOD appears only where a document ends.

**Megatron-LM** (an ``IndexedDataset``, the MMap layout of
megatron/core/datasets/indexed_dataset.py): ``PREFIX.bin`` holds the token ids of
every sequence back to back; ``PREFIX.idx`` holds, little-endian, the magic
``MMIDIDX\\x00\\x00``, the version (u64 1), the dtype code (u8: 8 for uint16, 4 for
int32), the sequence count and the document-index count (u64 each), then the
sequence lengths (int32), the byte offset of each sequence in the .bin (int64) and the
document indices (int64: 0, then the number of sequences up to the end of each
document). A document is one sequence: its ids then the EOD. The dtype is uint16
when the vocabulary (EOD included) is under 65,500, else int32, Megatron's own rule.

**OLMo-core** (``NumpyFSLDataset`` and the source mixture): ``part-00000.npy`` holds
the ids as a flat array with no header (OLMo-core memory-maps it with the dtype of its
config: uint16 while the largest id fits, else uint32), each document followed by
the EOD; ``part-00000.csv.gz`` has one ``start,end`` line per document (what
OLMo-core reads to find documents without the EOD, e.g. on an object store).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from curation.config import ConfigError
from curation.fs import write_atomic, writing

MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
MEGATRON_VERSION = 1
# Megatron's DType codes (only the two its rule picks are written)
MEGATRON_DTYPE_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}
# special tokens taken for the EOD, in this order: GPT-2/NeoX/dolma2/Qwen, Llama 3,
# Llama 2/Mistral/T5, Gemma
EOS_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")
FORMATS = ("jsonl", "megatron", "olmo")


def megatron_dtype(vocab_size: int) -> np.dtype:
    """Megatron's DType.optimal_dtype: uint16 below 65,500 entries, else int32."""
    return np.dtype("<u2") if vocab_size < 65500 else np.dtype("<i4")


def olmo_dtype(vocab_size: int) -> np.dtype:
    """The narrowest of OLMo-core's unsigned dtypes that holds the largest id (uint8 is
    left out: no real vocabulary fits it)."""
    return np.dtype("<u2") if vocab_size - 1 <= 0xFFFF else np.dtype("<u4")


def file_dtype(fmt: str, vocab_size: int) -> np.dtype:
    return megatron_dtype(vocab_size) if fmt == "megatron" else olmo_dtype(vocab_size)


class ExportTokenizer:
    """A tokenizer with an EOD id, as the token files need it.

    - ``vocab_size``: ids the files may hold (EOD included: the largest id + 1);
    - ``eod_id``; ``description`` (for the manifest);
    - ``encode_batch(texts)``: ids per text (int64 arrays), EOD not appended."""

    def __init__(self, tok, eod_id: int, description: str, sha256: str):
        self._tok = tok
        tok.encode_special_tokens = True      # "<|endoftext|>" in a text is text, not the EOD
        self.eod_id = int(eod_id)
        ids = list(tok.get_vocab(with_added_tokens=True).values())
        self.vocab_size = max(max(ids, default=-1), self.eod_id) + 1
        self.description = description
        self.sha256 = sha256

    @classmethod
    def stated(cls, stated, eod_id: int | None = None) -> "ExportTokenizer":
        """The mix run's tokenizer (curation.mixture.tokenizer.StatedTokenizer)."""
        import tokenizers
        tok = tokenizers.Tokenizer.from_str(stated.to_json())
        eod = stated.vocab_size if eod_id is None else eod_id
        _check_eod(tok, eod, f"the mix run's tokenizer ({stated.description})")
        return cls(tok, eod, f"{stated.description}, EOD {eod}", stated.sha256)

    @classmethod
    def from_path(cls, path: str, eod_id: int | None = None) -> "ExportTokenizer":
        """A `tokenizers` JSON file, or a directory holding tokenizer.json (and perhaps a
        tokenizer_config.json naming its eos_token)."""
        import tokenizers
        p = Path(path)
        file = p / "tokenizer.json" if p.is_dir() else p
        try:
            raw = file.read_bytes()
            tok = tokenizers.Tokenizer.from_str(raw.decode("utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"--tokenizer {path}: {file} not found (give a tokenizer.json "
                              f"or a directory holding one)") from None
        except Exception as e:   # tokenizers raises its own Exception type on a bad file
            raise ConfigError(f"--tokenizer {path}: {file} is not a Hugging Face tokenizers "
                              f"file ({e})") from None
        if eod_id is None:
            eod_id = _find_eod(tok, p if p.is_dir() else None, path)
        _check_eod(tok, eod_id, f"--tokenizer {path}")
        sha = hashlib.sha256(raw).hexdigest()
        return cls(tok, eod_id, f"{file} (sha256 {sha[:16]}), EOD {eod_id}", sha)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int64)
                for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]


def _special_tokens(tok) -> dict[str, int]:
    return {t.content: i for i, t in tok.get_added_tokens_decoder().items() if t.special}


def _find_eod(tok, directory: Path | None, named: str) -> int:
    special = _special_tokens(tok)
    if directory is not None and (directory / "tokenizer_config.json").exists():
        cfg = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
        eos = cfg.get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        if isinstance(eos, str) and tok.token_to_id(eos) is not None:
            return int(tok.token_to_id(eos))
    for name in EOS_NAMES:
        if name in special:
            return special[name]
    raise ConfigError(f"--tokenizer {named} has no end-of-document token (no eos_token in a "
                      f"tokenizer_config.json, none of {', '.join(EOS_NAMES)} among its special "
                      f"tokens {sorted(special) or '(none)'}): give its id with --eod-id")


def _check_eod(tok, eod: int, named: str) -> None:
    vocab = tok.get_vocab(with_added_tokens=True)
    size = max(vocab.values(), default=-1) + 1
    if eod < 0:
        raise ConfigError(f"--eod-id must be >= 0, got {eod}")
    if eod < size and eod not in _special_tokens(tok).values():
        raise ConfigError(f"--eod-id {eod} is an ordinary token of {named} "
                          f"({tok.id_to_token(eod)!r}): a text could produce it, and OLMo-core "
                          f"finds documents by it. Give a special token's id, or one of "
                          f"{size} or more (past the vocabulary)")


# ---------------------------------------------------------------- writers

def with_eod(ids: Iterable[np.ndarray], eod: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """The documents' ids back to back, each followed by the EOD, in `dtype`; and each
    one's length with its EOD."""
    parts, lens = [], []
    tail = np.array([eod], dtype)
    for a in ids:
        parts.append(a.astype(dtype, copy=False))
        parts.append(tail)
        lens.append(len(a) + 1)
    if not parts:
        return np.zeros(0, dtype), np.zeros(0, np.int64)
    return np.concatenate(parts), np.asarray(lens, np.int64)


def megatron_index(lengths: np.ndarray, dtype: np.dtype) -> bytes:
    """The .idx of an IndexedDataset whose every document is one sequence of `lengths[i]`
    tokens of `dtype`."""
    dtype = np.dtype(dtype)
    lengths = np.asarray(lengths, np.int64)
    if lengths.size and lengths.max() > np.iinfo(np.int32).max:
        raise ValueError("a document longer than 2**31 - 1 tokens does not fit Megatron's index")
    n = len(lengths)
    pointers = np.zeros(n, np.int64)
    if n > 1:
        pointers[1:] = np.cumsum(lengths[:-1]) * dtype.itemsize
    head = (MEGATRON_MAGIC + struct.pack("<Q", MEGATRON_VERSION)
            + struct.pack("<B", MEGATRON_DTYPE_CODES[dtype]) + struct.pack("<QQ", n, n + 1))
    return (head + lengths.astype("<i4").tobytes() + pointers.astype("<i8").tobytes()
            + np.arange(n + 1, dtype="<i8").tobytes())


def write_tokens(data_path: str, chunks: Iterator[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Stream the chunks' tokens to `data_path` (temporary name, then rename); returns
    every document's length, EOD included."""
    lens = []
    with writing(None, data_path) as f:
        for tokens, n in chunks:
            f.write(tokens.tobytes())
            lens.append(n)
    return np.concatenate(lens) if lens else np.zeros(0, np.int64)


def write_megatron(prefix: str, chunks: Iterator[tuple[np.ndarray, np.ndarray]], dtype) -> np.ndarray:
    """PREFIX.bin, then PREFIX.idx; returns the lengths."""
    lengths = write_tokens(prefix + ".bin", chunks)
    write_atomic(prefix + ".idx", megatron_index(lengths, dtype))
    return lengths


def write_olmo(npy: str, chunks: Iterator[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The flat array, then its ``start,end`` metadata (.csv.gz beside it)."""
    lengths = write_tokens(npy, chunks)
    ends = np.cumsum(lengths)
    text = "".join(f"{e - n},{e}\n" for e, n in zip(ends.tolist(), lengths.tolist()))
    path = os.path.splitext(npy)[0] + ".csv.gz"
    with writing(None, path) as raw:
        # no name or time in the gzip header: byte-identical reruns
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as f:
            f.write(text.encode("ascii"))
    return lengths


def megatron_data_path(shares: dict[str, float], prefixes: dict[str, str]) -> str:
    """Megatron-LM's ``--data-path``: weight then path prefix, per domain."""
    return " ".join(f"{shares[d]:.10g} {prefixes[d]}" for d in shares)


def olmo_source_mixture(shares: dict[str, float], paths: dict[str, str], *, tokens: int,
                        tok: ExportTokenizer, dtype: np.dtype) -> str:
    """An OLMo-core source mixture (``SourceMixtureList.from_yaml``): each source one file
    that already holds its share, so it is read once (``max_repetition_ratio`` 1)."""
    import yaml
    body = {"sources": [{"source_name": d, "target_ratio": shares[d], "paths": [paths[d]],
                         "max_repetition_ratio": 1.0} for d in shares]}
    head = ("# OLMo-core source mixture written by curate export (SourceMixtureList.from_yaml).\n"
            f"# The files hold {tokens} tokens: use requested_tokens <= {tokens}.\n"
            f"# Tokenizer: {tok.description}; TokenizerConfig(vocab_size={tok.vocab_size}, "
            f"eos_token_id={tok.eod_id}, ...); dtype {np.dtype(dtype).name}.\n")
    return head + yaml.safe_dump(body, sort_keys=False)
