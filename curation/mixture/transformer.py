"""The small-transformer proxy backend (PyTorch, an optional extra): issue 5's second backend.

``pip install 'curation[transformer]'`` installs PyTorch; the rest of the library never
imports it (this module imports it inside `TransformerBackend`, and
``TransformerBackend(...)`` without it is an ImportError naming the extra).

A proxy run (`TransformerBackend.run`), behind the same `ProxyBackend` protocol as
`curation.mixture.proxy.NGramBackend`:

1. **Sample**: the same training tokens as the n-gram backend for the same
   (weights, seed, budget, sampling): `curation.mixture.proxy.sample_mixture`.
2. **Pack**: the sampled documents, in an order shuffled by the seed, each as
   ``[BOS] + tokens`` (``BOS = vocab_size``, an extra embedding row the model never
   predicts), concatenated into one stream and cut into rows of ``context`` positions
   (no padding but the last row's tail). Attention is causal *within a document*: a
   position sees the earlier positions of its own document in its row, never the
   document before it; positions are counted from the document's start in the row (a
   document cut by a row boundary continues in the next row from position 0, without
   its earlier context). Every sampled token is a target exactly once; BOS is never a
   target, so the loss is over the documents' own tokens, as the n-gram backend's.
3. **Train** one pass over the rows (``batch_size`` rows a step): AdamW (betas 0.9/0.95,
   weight decay 0.1 on matrices and embeddings, not on biases and norms), linear
   warm-up over the first 5% of the steps (at least one), cosine decay to 10% of ``lr``,
   gradients clipped at norm 1; float32.
4. **Evaluate** every domain's `split` whole: each document as ``[BOS] + tokens`` cut
   into windows of ``context`` positions from the document's start (a window starts
   with BOS or, in a long document, mid-document without earlier context), the
   windows packed into rows in document order (several short documents to a row, the
   same document mask), nats per token = mean negative log-likelihood of the domain's
   tokens, bits per byte = total bits / the domain's UTF-8 bytes (`loss_and_bpb`, the
   n-gram backend's convention: exact sums, independent of how the text was
   tokenised). The target is the backend's `Target` over the per-domain bits per byte.

The model: a pre-LayerNorm GPT (learned positional embeddings, multi-head attention,
4x GELU MLP, final LayerNorm) whose output layer is tied to the token embedding (its
first ``vocab_size`` rows). The defaults (d_model 128, 4 layers, 4 heads, context 128)
over the 4096-entry stated tokenizer have 1,334,144 parameters, 524,416 of them the
tied embedding (4097 x 128) and 16,384 the positions.

Determinism. The initialisation is seeded from the run's seed (``torch.manual_seed``
inside `torch.random.fork_rng`, so the caller's generator is untouched) on the CPU and
then moved to the device; the data order comes from NumPy generators seeded by the run's
seed; nothing else is random (no dropout). On the CPU, `torch.use_deterministic_algorithms`
is on for the run and the intra-op thread count is ``threads`` (default 1; it is set
for the run and restored after). Same inputs, seed and settings give bit-identical
floats: the tests check it. Measured on the demo corpus (PyTorch 2.13 CPU, 2 cores):
1 thread and 2 threads each repeat to the bit, but they differ from each other by
about 3e-9 bits per byte (another summation order), and 2 threads are about 1.8x
faster. So the thread count and the device are part of `identity()` (other cache
keys), and so is the PyTorch version. On a GPU, determinism is asked for
(``CUBLAS_WORKSPACE_CONFIG``, deterministic algorithms with warnings only where an op
has no deterministic kernel) but has not been tested here.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from typing import Any, Mapping

import numpy as np

from curation.mixture.data import CorpusSplits, EncodedDomain
from curation.mixture.ngram import loss_and_bpb
from curation.mixture.proxy import EVAL_SPLITS, SAMPLING, Target, check_weights, sample_mixture
from curation.mixture.types import ProxyResult, mixture_key, normalise

INSTALL_HINT = "pip install 'curation[transformer]'"
IGNORE = -1                       # target of a position with nothing to predict
WARMUP_FRACTION = 0.05
FINAL_LR_FRACTION = 0.1
WEIGHT_DECAY = 0.1
BETAS = (0.9, 0.95)
CLIP_NORM = 1.0
EVAL_BATCH_ROWS = 64


def _torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"the transformer proxy backend needs PyTorch, an optional extra: "
                          f"{INSTALL_HINT} (or pip install 'torch>=2.2'); the n-gram backend "
                          f"needs nothing more") from e
    return torch


# ---------------------------------------------------------------- packing (NumPy)

def _positions(x: np.ndarray, bos: int, context: int) -> np.ndarray:
    """Position of each stream element within its document's part of its row."""
    idx = np.arange(len(x), dtype=np.int64)
    starts = np.where((x == bos) | (idx % context == 0), idx, 0)
    return idx - np.maximum.accumulate(starts)


def pack_training(tokens: np.ndarray, offsets: np.ndarray, order: np.ndarray, bos: int,
                  context: int) -> dict[str, np.ndarray]:
    """The training rows: documents ``order[0], order[1], ...`` of (tokens, offsets), each
    as ``[BOS] + tokens``, as one stream cut into rows of `context`; the last row's tail
    padded (input BOS, target IGNORE). Returns int64 arrays of shape (rows, context):
    ``inputs``, ``targets`` (the next stream element, IGNORE where it is BOS or past the
    end), ``segments`` (a document id per position, for the attention mask) and
    ``positions`` (within the document's part of the row)."""
    offsets = np.asarray(offsets, np.int64)
    lens = np.diff(offsets)[order]
    starts = offsets[:-1][order]
    n, ndocs = int(lens.sum()), len(order)
    seg_off = np.zeros(ndocs + 1, np.int64)
    np.cumsum(lens + 1, out=seg_off[1:])
    tok_cum = np.zeros(ndocs + 1, np.int64)
    np.cumsum(lens, out=tok_cum[1:])
    total = int(seg_off[-1])
    rows = max(1, -(-total // context))
    x = np.full(rows * context, bos, np.int64)
    ar = np.arange(n, dtype=np.int64)
    x[np.repeat(seg_off[:-1] + 1 - tok_cum[:-1], lens) + ar] = \
        np.asarray(tokens)[np.repeat(starts - tok_cum[:-1], lens) + ar]
    y = np.full_like(x, IGNORE)
    y[:total - 1] = x[1:total]
    y[y == bos] = IGNORE
    seg = np.cumsum(x == bos)                       # the tail's pads: one segment each
    pos = _positions(x, bos, context)
    return {"inputs": x.reshape(rows, context), "targets": y.reshape(rows, context),
            "segments": seg.reshape(rows, context), "positions": pos.reshape(rows, context)}


def pack_evaluation(enc: EncodedDomain, bos: int, context: int) -> dict[str, np.ndarray]:
    """The evaluation rows of one domain split: each document ``[BOS] + tokens`` cut into
    windows of `context` positions from its start, the windows placed in document order,
    a window that does not fit in what is left of a row starting the next row (the
    rest padded). Same arrays as `pack_training`; every token of the split is a target
    exactly once."""
    lens = enc.lengths
    x_parts, y_parts, seg_parts = [], [], []
    row_fill, seg_id = 0, 0
    toks = enc.tokens
    for i, n in enumerate(lens.tolist()):
        s = np.empty(n + 1, np.int64)
        s[0] = bos
        s[1:] = toks[enc.offsets[i]:enc.offsets[i + 1]]
        t = np.empty(n + 1, np.int64)
        t[:n] = s[1:]
        t[n] = IGNORE
        for a in range(0, n + 1, context):
            w = min(context, n + 1 - a)
            if row_fill + w > context:                 # pad out the row
                pad = context - row_fill
                x_parts.append(np.full(pad, bos, np.int64))
                y_parts.append(np.full(pad, IGNORE, np.int64))
                seg_parts.append(-1 - np.arange(pad, dtype=np.int64) - seg_id * context)
                row_fill = 0
            x_parts.append(s[a:a + w])
            y_parts.append(t[a:a + w])
            seg_parts.append(np.full(w, seg_id, np.int64))
            seg_id += 1
            row_fill = (row_fill + w) % context
    if row_fill:
        pad = context - row_fill
        x_parts.append(np.full(pad, bos, np.int64))
        y_parts.append(np.full(pad, IGNORE, np.int64))
        seg_parts.append(-1 - np.arange(pad, dtype=np.int64) - seg_id * context)
    if not x_parts:
        raise ValueError("no documents to evaluate")
    x, y, seg = np.concatenate(x_parts), np.concatenate(y_parts), np.concatenate(seg_parts)
    # positions: from the start of each window (a window never spans rows)
    idx = np.arange(len(x), dtype=np.int64)
    starts = np.where(np.r_[True, seg[1:] != seg[:-1]] | (idx % context == 0), idx, 0)
    pos = idx - np.maximum.accumulate(starts)
    rows = len(x) // context
    return {"inputs": x.reshape(rows, context), "targets": y.reshape(rows, context),
            "segments": seg.reshape(rows, context), "positions": pos.reshape(rows, context)}


def lr_at(step: int, steps: int, lr: float) -> float:
    """Linear warm-up over the first 5% of the steps (at least one), then cosine decay
    from `lr` to 10% of it at the last step."""
    warm = max(1, math.ceil(WARMUP_FRACTION * steps))
    if step < warm:
        return lr * (step + 1) / warm
    p = (step - warm) / max(1, steps - 1 - warm)
    return lr * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


# ---------------------------------------------------------------- the model (PyTorch)

_MODEL_CLASS = None


def _model_class():
    """The nn.Module class, defined on first use (so this module imports without torch)."""
    global _MODEL_CLASS
    if _MODEL_CLASS is not None:
        return _MODEL_CLASS
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self, d: int, heads: int):
            super().__init__()
            self.heads = heads
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x, mask):
            b, t, d = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
            q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
            return x + self.out(F.gelu(self.fc(self.ln2(x))))

    class TinyGPT(nn.Module):
        """Pre-LN GPT with a document-causal attention mask and a tied output layer."""

        def __init__(self, vocab: int, d: int, layers: int, heads: int, context: int):
            super().__init__()
            self.vocab = vocab
            self.tok = nn.Embedding(vocab + 1, d)          # + BOS, never predicted
            self.pos = nn.Embedding(context, d)
            self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
            self.ln = nn.LayerNorm(d)
            for name, p in self.named_parameters():        # GPT-2's initialisation
                if p.dim() >= 2:
                    residual = name.endswith(("proj.weight", "out.weight"))
                    std = 0.02 / math.sqrt(2 * layers) if residual else 0.02
                    nn.init.normal_(p, 0.0, std)
                elif name.endswith("bias"):
                    nn.init.zeros_(p)

        def forward(self, inputs, positions, segments):
            t = inputs.shape[1]
            causal = torch.ones(t, t, dtype=torch.bool, device=inputs.device).tril()
            mask = ((segments[:, :, None] == segments[:, None, :]) & causal)[:, None]
            x = self.tok(inputs) + self.pos(positions)
            for blk in self.blocks:
                x = blk(x, mask)
            return self.ln(x) @ self.tok.weight[:self.vocab].T

    _MODEL_CLASS = TinyGPT
    return TinyGPT


# ---------------------------------------------------------------- the backend

class TransformerBackend:
    """A ~1M-parameter GPT trained for one pass over the mixture's sample (see the module
    docstring); a GPU when one is there (``device="auto"``).

    Cost, measured on the demo corpus on 2 CPU cores (``threads=2``): training about
    8k tokens/s, scoring about 16k tokens/s, so a run at 300k tokens takes about 55 s
    (36 s training, 18 s scoring the 296k validation tokens, a fixed cost per run) and
    one at 1M about 3 minutes. At such budgets the number of optimiser steps limits the
    loss: on the uniform mixture at 300k tokens the model reaches 3.31 bits per byte
    with ``batch_size=8`` (a unigram model: 3.38, the trigram n-gram backend: 2.37),
    and at 1M tokens 2.99 with ``batch_size=8`` against 3.09 with 32: so 8, more steps,
    is the default, as in the rank-agreement benchmark (benchmarks/bench_backends.py)."""

    name = "transformer"
    version = "tiny-gpt-doc-causal/1"

    def __init__(self, splits: CorpusSplits, tokenizer, *,
                 target: Target | Mapping[str, Any] | str | None = None,
                 d_model: int = 128, n_layers: int = 4, n_heads: int = 4, context: int = 128,
                 batch_size: int = 8, lr: float = 3e-3, device: str = "auto",
                 threads: int | None = None, sampling: str = "epochs"):
        torch = _torch()
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
        for nm, v, lo in (("d_model", d_model, 1), ("n_layers", n_layers, 1), ("n_heads", n_heads, 1),
                          ("context", context, 2), ("batch_size", batch_size, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{nm} must be an integer >= {lo}, got {v!r}")
        if d_model % n_heads:
            raise ValueError(f"n_heads ({n_heads}) must divide d_model ({d_model})")
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from None
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device {device!r} asked for, but PyTorch sees no CUDA GPU")
            # deterministic cuBLAS: read when cuBLAS starts, so set before the first run
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        self.torch, self.device = torch, dev
        self.splits, self.tokenizer = splits, tokenizer
        self.d_model, self.n_layers, self.n_heads = d_model, n_layers, n_heads
        self.context, self.batch_size, self.lr = context, batch_size, float(lr)
        self.threads = int(threads or 1)
        self.sampling = sampling
        self.target = Target.parse(target)
        self.domains = splits.domains
        self.target.check(self.domains)
        self.vocab = int(tokenizer.vocab_size)
        self.encoded = splits.encoded(tokenizer)
        self._eval_rows: dict[str, dict[str, dict[str, np.ndarray]]] = {}

    def identity(self) -> dict:
        return {"backend": self.name, "version": self.version,
                "params": {"d_model": self.d_model, "n_layers": self.n_layers,
                           "n_heads": self.n_heads, "context": self.context,
                           "batch_size": self.batch_size, "lr": self.lr,
                           "schedule": f"warmup {WARMUP_FRACTION:g} cosine to {FINAL_LR_FRACTION:g}",
                           "weight_decay": WEIGHT_DECAY, "sampling": self.sampling,
                           "device": self.device.type, "threads": self.threads,
                           "torch": self.torch.__version__},
                "target": self.target.spec(), "tokenizer": self.tokenizer.id,
                "data": self.splits.fingerprint()}

    def parameter_count(self) -> int:
        v, d, l, c = self.vocab, self.d_model, self.n_layers, self.context
        per_layer = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
        return (v + 1) * d + c * d + l * per_layer + 2 * d

    # ------------------------------------------------------------ running

    @contextmanager
    def _settings(self):
        """Threads and deterministic algorithms for one run, restored after."""
        torch = self.torch
        threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        warn = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(True, warn_only=self.device.type == "cuda")
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(det, warn_only=warn)

    def _rows(self, split: str) -> dict[str, dict[str, np.ndarray]]:
        if split not in EVAL_SPLITS:
            raise ValueError(f"split must be one of {EVAL_SPLITS}, got {split!r}")
        if split not in self._eval_rows:
            out = {}
            for d in self.domains:
                enc = self.encoded[split][d]
                if enc.n_tokens == 0:
                    raise ValueError(f"domain {d!r} has no {split} tokens to evaluate on")
                out[d] = pack_evaluation(enc, self.vocab, self.context)
            self._eval_rows[split] = out
        return self._eval_rows[split]

    def _tensors(self, rows: dict[str, np.ndarray], sl: slice):
        t = self.torch
        return tuple(t.from_numpy(np.ascontiguousarray(rows[k][sl])).to(self.device)
                     for k in ("inputs", "positions", "segments", "targets"))

    def _train(self, model, rows: dict[str, np.ndarray]) -> dict:
        torch, F = self.torch, self.torch.nn.functional
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        rest = [p for n, p in model.named_parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                 {"params": rest, "weight_decay": 0.0}],
                                lr=self.lr, betas=BETAS, eps=1e-8, foreach=False)
        n_rows = len(rows["inputs"])
        steps = -(-n_rows // self.batch_size)
        losses = []
        model.train()
        for s in range(steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(s, steps, self.lr)
            x, pos, seg, y = self._tensors(rows, slice(s * self.batch_size, (s + 1) * self.batch_size))
            logits = model(x, pos, seg)
            loss = F.cross_entropy(logits.reshape(-1, self.vocab), y.reshape(-1), ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
            opt.step()
            losses.append(float(loss.detach()))
        if not all(math.isfinite(x) for x in losses):
            raise RuntimeError(f"the transformer proxy diverged (a non-finite training loss at "
                               f"lr={self.lr:g}); lower lr")
        tenths = [losses[len(losses) * i // 10:max(len(losses) * (i + 1) // 10, len(losses) * i // 10 + 1)]
                  for i in range(10)]
        return {"steps": steps, "rows": n_rows,
                "train_loss_by_tenth": [round(math.fsum(t) / len(t), 4) for t in tenths]}

    def _logprobs(self, model, rows: dict[str, np.ndarray]) -> np.ndarray:
        torch, F = self.torch, self.torch.nn.functional
        out = []
        model.eval()
        with torch.inference_mode():
            for a in range(0, len(rows["inputs"]), EVAL_BATCH_ROWS):
                x, pos, seg, y = self._tensors(rows, slice(a, a + EVAL_BATCH_ROWS))
                logits = model(x, pos, seg)
                keep = y.reshape(-1) != IGNORE
                nll = F.cross_entropy(logits.reshape(-1, self.vocab)[keep], y.reshape(-1)[keep],
                                      reduction="none")
                out.append(nll.double().cpu().numpy())
        return -np.concatenate(out)

    def sample(self, weights: Mapping[str, float], seed: int, budget_tokens: int):
        """The run's training tokens: exactly `NGramBackend.sample`'s."""
        return sample_mixture(self.encoded["train"], weights, seed, budget_tokens, self.sampling)

    def run(self, weights: Mapping[str, float], seed: int, budget_tokens: int,
            split: str = "valid") -> ProxyResult:
        t0 = time.perf_counter()
        torch = self.torch
        w = check_weights(self.domains, weights)
        eval_rows = self._rows(split)
        tokens, offsets, drawn = self.sample(w, seed, budget_tokens)
        order = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [int(seed), 0x7472616E73666F72]))).permutation(len(offsets) - 1)   # "transfor"
        train_rows = pack_training(tokens, offsets, order, self.vocab, self.context)
        with self._settings():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                model = _model_class()(self.vocab, self.d_model, self.n_layers, self.n_heads,
                                       self.context)
            model = model.to(self.device)
            t_train = time.perf_counter()
            trained = self._train(model, train_rows)
            t_eval = time.perf_counter()
            loss, bpb = {}, {}
            for d in self.domains:
                lp = self._logprobs(model, eval_rows[d])
                enc = self.encoded[split][d]
                if len(lp) != enc.n_tokens:
                    raise AssertionError(f"evaluated {len(lp)} tokens of {d!r}, expected {enc.n_tokens}")
                if not np.isfinite(lp).all():
                    raise RuntimeError(f"non-finite log probabilities on {d!r}")
                loss[d], bpb[d] = loss_and_bpb(lp, enc.n_bytes)
            t_end = time.perf_counter()
        n_params = sum(p.numel() for p in model.parameters())
        detail = {"drawn": drawn, "tokenizer": self.tokenizer.description,
                  "parameters": int(n_params), **trained,
                  "device": str(self.device), "threads": self.threads,
                  "seconds_train": t_eval - t_train, "seconds_eval": t_end - t_eval,
                  "eval_tokens": {d: self.encoded[split][d].n_tokens for d in self.domains}}
        return ProxyResult(mixture_key=mixture_key(normalise(weights)), backend=self.name,
                           seed=int(seed), budget_tokens=int(budget_tokens), split=split,
                           loss=loss, bpb=bpb, target=self.target.value(bpb),
                           seconds=time.perf_counter() - t0, detail=detail)
