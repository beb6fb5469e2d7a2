"""Token counts for the report: the mix run's stated tokenizer when the run has one,
else an estimate of UTF-8 bytes / 4, and the report says which."""
from __future__ import annotations

import os
from typing import Iterable

import xxhash

ESTIMATE_BYTES_PER_TOKEN = 4
_BATCH = 256
# Kept documents repeat the texts of earlier stages: counting a text once saves half
# the encoding. The memo stops growing here, so memory stays bounded on a big corpus.
_MEMO_MAX = 2_000_000
AUTO_EXACT_MAX_BYTES = 1 << 30


class TokenCounter:
    """`count_many(texts)`: tokens per text. `kind` is "tokenizer" or "estimate"."""

    def __init__(self, tokenizer=None, description: str | None = None):
        self._tok = tokenizer
        self.kind = "tokenizer" if tokenizer is not None else "estimate"
        self.description = description or (
            f"estimated as UTF-8 bytes / {ESTIMATE_BYTES_PER_TOKEN}, rounded per document "
            f"(the run has no mix/tokenizer.json)")
        self._memo: dict[bytes, int] = {}

    @classmethod
    def for_run(cls, mix_dir: str, *, mode: str = "auto", input_bytes: int | None = None) -> "TokenCounter":
        """The mix run's tokenizer (mix/tokenizer.json) when it loads, else the estimate.
        ``mode`` "estimate" always estimates; "auto" estimates when the inputs exceed
        AUTO_EXACT_MAX_BYTES (the tokenizer encodes about 1 MB/s per core, and the
        report reads every stage's text on one machine)."""
        if mode not in ("auto", "exact", "estimate"):
            raise ValueError(f"token mode is auto, exact or estimate, got {mode!r}")
        if mode == "estimate":
            return cls(description=f"estimated as UTF-8 bytes / {ESTIMATE_BYTES_PER_TOKEN}, rounded "
                                   f"per document (asked for: --tokens estimate)")
        if mode == "auto" and input_bytes is not None and input_bytes > AUTO_EXACT_MAX_BYTES:
            return cls(description=f"estimated as UTF-8 bytes / {ESTIMATE_BYTES_PER_TOKEN}, rounded "
                                   f"per document: the inputs ({input_bytes / 2**30:.1f} GiB) are over "
                                   f"{AUTO_EXACT_MAX_BYTES / 2**30:.0f} GiB (--tokens exact counts "
                                   f"with the tokenizer anyway)")
        if not os.path.isfile(os.path.join(mix_dir, "tokenizer.json")):
            return cls()
        from curation.mixture.tokenizer import StatedTokenizer
        try:
            tok = StatedTokenizer.load(mix_dir)
        except (ValueError, OSError) as e:
            return cls(description=f"estimated as UTF-8 bytes / {ESTIMATE_BYTES_PER_TOKEN}, "
                                   f"rounded per document (mix/tokenizer.json unusable: {e})")
        return cls(tok, f"{tok.description} (the mix run's tokenizer, mix/tokenizer.json)")

    def _estimate(self, text: str) -> int:
        n = len(text.encode("utf-8", "surrogatepass"))
        return (n + ESTIMATE_BYTES_PER_TOKEN // 2) // ESTIMATE_BYTES_PER_TOKEN

    def count_many(self, texts: Iterable[str]) -> list[int]:
        texts = list(texts)
        if self._tok is None:
            return [self._estimate(t) for t in texts]
        keys = [xxhash.xxh3_128_digest(t.encode("utf-8", "surrogatepass")) for t in texts]
        local: dict[bytes, int] = {}
        missing = []
        for i, k in enumerate(keys):
            if k not in self._memo and k not in local:
                local[k] = 0
                missing.append(i)
        for start in range(0, len(missing), _BATCH):
            chunk = missing[start:start + _BATCH]
            for i, ids in zip(chunk, self._tok.encode_batch([texts[i] for i in chunk])):
                local[keys[i]] = len(ids)
                if len(self._memo) < _MEMO_MAX:
                    self._memo[keys[i]] = len(ids)
        return [self._memo[k] if k in self._memo else local[k] for k in keys]

    def info(self) -> dict:
        return {"kind": self.kind, "description": self.description}
