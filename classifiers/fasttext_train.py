"""Train a fastText quality classifier from graded labels (library half of `curate train-classifier`).

Plain functions and one small class, no Beam:

- :func:`preprocess` turns a document into one fastText line (deterministic).
- :func:`split_of` assigns a document to ``"test"``, ``"valid"`` or ``"train"`` from a seeded
  hash of its id, so the split does not depend on input order or on the other rows.
- :func:`train_classifier` reads labelled rows (``id``, ``text``, ``score``, optional
  ``domain``; rows with ``error`` set and no score are skipped and counted), binarises the
  score at ``threshold`` (``score >= threshold`` -> ``__label__hq``), picks hyperparameters on
  an inner validation split by F1, retrains on the whole training part, evaluates on the
  held-out test split and writes ``model.bin`` (or ``model.ftz`` when quantised),
  ``metrics.json`` and ``MODEL_CARD.md`` to the model directory, each atomically.
- :class:`QualityModel` loads a model directory and scores texts with the probability of the
  positive class; the scoring pipeline uses it (load once per worker, in ``setup()``).

Defaults. DCLM's quality classifier is a bigram fastText model (its name says
``bigram_200k_train``), so ``wordNgrams=2``; the other starting values are fastText's supervised
defaults (``dim=100``, ``lr=0.1``, ``epoch=5``, ``minCount=1``, softmax loss), except
``bucket``: fastText's 2,000,000 hash buckets make a ``dim=100`` model ~800 MB, so we default
to 2**18 and let callers pick a smaller ``dim`` and/or quantise.

Determinism. fastText is only deterministic with ``thread=1`` and a fixed ``seed`` (threads
race on shared weights), so we always train with ``thread=1`` and order the training file by
the seeded id hash: the same labels in any order give the same inputs to fastText. One more
thing is needed with fasttext-numpy2: its matrices are ``posix_memalign`` buffers that are
never cleared, and ``uniform()`` with one thread fills only the first tenth of the input
matrix (upstream fastText has the same partial fill but zero-initialised storage). The rest
of the matrix held whatever the allocator handed back, so in-process reruns gave other
models and sometimes "Encountered NaN.". :func:`_zeroed_allocations` has glibc fill every
allocation with zeros while fastText trains (``mallopt(M_PERTURB)``), which gives upstream's
starting point and byte-identical models.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import math
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from curation.documents import NO_DOMAIN
from curation.fs import atomic_path, write_atomic
from curation.outputs import claim_output, locked_output

POSITIVE = "__label__hq"
NEGATIVE = "__label__lq"
MODEL_BIN = "model.bin"
MODEL_FTZ = "model.ftz"
METRICS_JSON = "metrics.json"
MODEL_CARD = "MODEL_CARD.md"

DEFAULT_EPOCHS = (5, 25)
DEFAULT_LRS = (0.1, 0.5)
DEFAULT_WORD_NGRAMS = (2,)

# fastText splits tokens on these bytes; we also fold every Unicode whitespace (str.split()).
_FASTTEXT_SPACE = "\0"


# --------------------------------------------------------------------------- preprocessing


def preprocess(text: str, max_chars: int | None = None) -> str:
    """One fastText input line for ``text``: lower-cased, whitespace runs (newlines included)
    collapsed to one space, stripped. ``__label__`` inside the text is defused (it would be
    read as a label). ``max_chars`` truncates *before* normalising (None: whole text)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    if max_chars is not None:
        text = text[:max_chars]
    text = text.replace(_FASTTEXT_SPACE, " ").lower()
    text = " ".join(text.split())
    return text.replace("__label__", "_label_")


def _unit_hash(key: str, seed: int, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}\x1f{seed}\x1f{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(doc_id: str, seed: int = 0, valid_fraction: float = 0.2,
             inner_valid_fraction: float = 0.2) -> str:
    """``"test"`` (held out, a ``valid_fraction`` share), ``"valid"`` (inner validation for the
    hyperparameter choice, ``inner_valid_fraction`` of the rest) or ``"train"``; a pure
    function of the id and seed, so adding rows never moves existing ones."""
    if _unit_hash(str(doc_id), seed, "test") < valid_fraction:
        return "test"
    if _unit_hash(str(doc_id), seed, "valid") < inner_valid_fraction:
        return "valid"
    return "train"


# --------------------------------------------------------------------------- metrics (scikit-learn, SciPy)


def roc_auc(y_true: Sequence[int], y_score: Sequence[float]) -> float | None:
    """ROC AUC (ties count one half); None if one class."""
    from sklearn.metrics import roc_auc_score
    y = np.asarray(y_true, dtype=bool)
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, np.asarray(y_score, dtype=np.float64)))


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho (ties at their average rank); None if either side is constant or
    there are fewer than two values."""
    from scipy.stats import spearmanr
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return None
    return float(spearmanr(a, b).statistic)


def binary_metrics(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, Any]:
    """Precision, recall, F1 and accuracy of the positive class, with the confusion
    matrix (0 where undefined)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
    y = np.asarray(y_true, dtype=bool)
    p = np.asarray(y_pred, dtype=bool)
    if not len(y):
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0,
                "confusion_matrix": {"tp": 0, "fp": 0, "fn": 0, "tn": 0}}
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, p, labels=[False, True]).ravel())
    precision, recall, f1, _ = precision_recall_fscore_support(
        y, p, labels=[True], average=None, zero_division=0.0)
    return {
        "precision": float(precision[0]), "recall": float(recall[0]), "f1": float(f1[0]),
        "accuracy": float(accuracy_score(y, p)),
        "confusion_matrix": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


# --------------------------------------------------------------------------- fastText helpers


def _import_fasttext():
    try:
        import fasttext  # fasttext-numpy2 (or fasttext) distribution
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("classifiers.fasttext_train needs fastText: "
                          "pip install fasttext-numpy2") from exc
    return fasttext


def _positive_probability(model, lines: list[str]) -> np.ndarray:
    """P(__label__hq) for each line, via one batched ``predict(lines, k=2)`` call."""
    if not lines:
        return np.zeros(0, dtype=np.float64)
    labels, probs = model.predict(lines, k=2)
    out = np.empty(len(lines), dtype=np.float64)
    for i, (labs, ps) in enumerate(zip(labels, probs)):
        d = dict(zip(labs, (float(p) for p in ps)))
        if POSITIVE in d:
            out[i] = d[POSITIVE]
        elif NEGATIVE in d:
            out[i] = 1.0 - d[NEGATIVE]
        else:  # pragma: no cover - a model with other labels
            raise ValueError(f"model has neither {POSITIVE} nor {NEGATIVE}: {labs}")
    # fastText adds 1e-5 inside its softmax output; keep probabilities in [0, 1]
    return np.clip(out, 0.0, 1.0)


def _write_lines(path: Path, rows: list["_Row"]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(f"{POSITIVE if r.positive else NEGATIVE} {r.line}\n")


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class _Row:
    id: str
    line: str
    score: float
    positive: bool
    domain: str | None
    order: float  # seeded hash: training-file order, independent of input order


@dataclass
class TrainResult:
    model_dir: Path
    model_path: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def _read_labels(labels: Iterable[Mapping[str, Any]]) -> tuple[list[dict], dict[str, int]]:
    rows, skipped = [], {"error": 0, "no_score": 0}
    seen: set[str] = set()
    for i, rec in enumerate(labels):
        if not isinstance(rec, Mapping):
            raise ValueError(f"label row {i}: expected a mapping, got {type(rec).__name__}")
        score = rec.get("score")
        if score is None:
            skipped["error" if rec.get("error") else "no_score"] += 1
            continue
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise ValueError(f"label row {i} (id={rec.get('id')!r}): score must be a finite "
                             f"number, got {score!r}")
        doc_id, text = rec.get("id"), rec.get("text")
        if doc_id is None or str(doc_id) == "":
            raise ValueError(f"label row {i}: missing 'id'")
        if not isinstance(text, str):
            raise ValueError(f"label row {i} (id={doc_id!r}): 'text' must be a string, "
                             f"got {type(text).__name__}")
        if str(doc_id) in seen:
            raise ValueError(f"label row {i}: duplicate id {doc_id!r} (ids must be unique: "
                             f"the split is a hash of the id)")
        seen.add(str(doc_id))
        rows.append({"id": str(doc_id), "text": text, "score": float(score),
                     "domain": rec.get("domain")})
    return rows, skipped


def _grid(values, fixed, name) -> tuple:
    if fixed is not None:
        return (fixed,)
    vals = tuple(values)
    if not vals:
        raise ValueError(f"the {name} grid is empty")
    return vals


_M_PERTURB = -6  # glibc mallopt parameter
_TRAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def _zeroed_allocations():
    """While active, glibc fills each new allocation with zeros (M_PERTURB 0xff: the fill byte
    is perturb ^ 0xff); see the module docstring for why fastText needs it. Yields whether
    it is in force. Process-wide, so trainings are serialised; the previous setting (from
    MALLOC_PERTURB_) is put back."""
    with _TRAIN_LOCK:
        try:
            libc = ctypes.CDLL(None)
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # not glibc
            yield False
            return
        try:
            previous = int(os.environ.get("MALLOC_PERTURB_", "0") or 0) & 0xFF
        except ValueError:
            previous = 0
        ok = bool(mallopt(_M_PERTURB, 0xFF))
        try:
            yield ok
        finally:
            mallopt(_M_PERTURB, previous)


def _train(fasttext, path: Path, *, epoch, lr, word_ngrams, dim, bucket, min_count, seed):
    """One fastText run with thread=1 from a zero-filled heap; RuntimeError("Encountered
    NaN.") when it diverges (too high an lr for the data)."""
    with _zeroed_allocations() as zeroed:
        if not zeroed:
            warnings.warn("fastText training is not reproducible on this platform: its "
                          "input matrix is partly uninitialised and only glibc's "
                          "M_PERTURB can clear it", RuntimeWarning, stacklevel=3)
        return fasttext.train_supervised(
            input=str(path), epoch=int(epoch), lr=float(lr), wordNgrams=int(word_ngrams),
            dim=int(dim), bucket=int(bucket), minCount=int(min_count), loss="softmax",
            thread=1, seed=int(seed), verbose=0,
        )


def _distribution(rows: list[_Row]) -> dict[str, Any]:
    pos = sum(r.positive for r in rows)
    return {"n": len(rows), POSITIVE: pos, NEGATIVE: len(rows) - pos}


@locked_output("train-classifier", arg="model_dir")   # one run at a time per directory
def train_classifier(
    labels: Iterable[Mapping[str, Any]],
    model_dir: str | os.PathLike,
    *,
    threshold: float,
    valid_fraction: float = 0.2,
    inner_valid_fraction: float = 0.2,
    seed: int = 0,
    epoch: int | None = None,
    lr: float | None = None,
    word_ngrams: int | None = None,
    epochs: Sequence[int] = DEFAULT_EPOCHS,
    lrs: Sequence[float] = DEFAULT_LRS,
    word_ngrams_grid: Sequence[int] = DEFAULT_WORD_NGRAMS,
    dim: int = 100,
    bucket: int = 2**18,
    min_count: int = 1,
    max_chars: int | None = None,
    quantize: bool = False,
    cutoff: int = 0,
    data_description: str = "",
) -> TrainResult:
    """Train, evaluate and save a fastText quality classifier; see the module docstring.

    ``epoch``/``lr``/``word_ngrams`` fix a hyperparameter (the grid for it collapses to that
    value); with a single candidate no inner validation model is needed but its validation F1
    is still reported. ``quantize`` writes ``model.ftz`` (product quantisation without
    retraining; ``cutoff`` > 0 also keeps only that many embedding rows). Returns the
    paths and the metrics dict also written to ``metrics.json``.
    """
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    if not 0.0 < inner_valid_fraction < 1.0:
        raise ValueError(f"inner_valid_fraction must be in (0, 1), got {inner_valid_fraction}")
    if bucket <= 0 or dim <= 0:
        raise ValueError(f"bucket and dim must be positive, got bucket={bucket}, dim={dim}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")

    raw, skipped = _read_labels(labels)
    if not raw:
        raise ValueError(f"no labels with a score to train on (skipped: {skipped['error']} "
                         f"with an error, {skipped['no_score']} without a score)")
    scores = np.array([r["score"] for r in raw])
    lo, hi = float(scores.min()), float(scores.max())
    if threshold < lo or threshold > hi:
        raise ValueError(f"threshold {threshold} is outside the labels' score range "
                         f"[{lo}, {hi}]: every document would fall in one class")
    n_pos = int((scores >= threshold).sum())
    if n_pos == 0 or n_pos == len(raw):
        only = POSITIVE if n_pos else NEGATIVE
        raise ValueError(f"a single class: all {len(raw)} labels are {only} at threshold "
                         f"{threshold} (scores span [{lo}, {hi}]); need both classes")

    rows = sorted(
        (_Row(id=r["id"], line=preprocess(r["text"], max_chars), score=r["score"],
              positive=r["score"] >= threshold, domain=r["domain"],
              order=_unit_hash(r["id"], seed, "order")) for r in raw),
        key=lambda r: (r.order, r.id),
    )
    parts: dict[str, list[_Row]] = {"train": [], "valid": [], "test": []}
    for r in rows:
        parts[split_of(r.id, seed, valid_fraction, inner_valid_fraction)].append(r)
    fit = parts["train"] + parts["valid"]
    fit.sort(key=lambda r: (r.order, r.id))
    for name, part in (("held-out test", parts["test"]), ("inner train", parts["train"]),
                       ("inner validation", parts["valid"])):
        if not part:
            raise ValueError(f"too few labels ({len(rows)}): the {name} split is empty; "
                             f"add labels or change valid_fraction/inner_valid_fraction")
    if len({r.positive for r in fit}) < 2:
        raise ValueError("a single class in the training split; add labels of both classes")

    candidates_grid = [
        {"epoch": int(e), "lr": float(l), "wordNgrams": int(w)}
        for w in _grid(word_ngrams_grid, word_ngrams, "wordNgrams")
        for e in _grid(epochs, epoch, "epoch")
        for l in _grid(lrs, lr, "lr")
    ]
    fasttext = _import_fasttext()
    common = {"dim": dim, "bucket": bucket, "min_count": min_count, "seed": seed}
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    claim_output(str(model_dir), (MODEL_BIN, MODEL_FTZ, METRICS_JSON, MODEL_CARD), METRICS_JSON,
                 "train-classifier")   # never overwrite someone else's model

    with tempfile.TemporaryDirectory(prefix="ft-train-") as tmp:
        tmp = Path(tmp)
        inner_path, fit_path = tmp / "inner.train", tmp / "fit.train"
        _write_lines(inner_path, parts["train"])
        _write_lines(fit_path, fit)

        valid_lines = [r.line for r in parts["valid"]]
        valid_y = [r.positive for r in parts["valid"]]
        candidates = []
        for c in candidates_grid:
            try:
                m = _train(fasttext, inner_path, epoch=c["epoch"], lr=c["lr"],
                                 word_ngrams=c["wordNgrams"], **common)
            except RuntimeError as exc:  # fastText aborts with "Encountered NaN." when lr diverges
                candidates.append({**c, "valid_f1": None, "valid_auc": None,
                                   "failed": str(exc)})
                continue
            p = _positive_probability(m, valid_lines)
            vm = binary_metrics(valid_y, p >= 0.5)
            candidates.append({**c, "valid_f1": vm["f1"], "valid_auc": roc_auc(valid_y, p)})
            del m
        # highest F1; ties go to the earlier (cheaper) candidate in grid order
        ok = [i for i, x in enumerate(candidates) if x["valid_f1"] is not None]
        if not ok:
            raise ValueError("every hyperparameter candidate failed to train "
                             f"({candidates[0]['failed']}); lower lr or raise dim")
        # highest F1 first; if the retrain on train + validation diverges (fastText
        # aborts on NaN at a high lr), the next best candidate is trained instead
        ranked = sorted(ok, key=lambda i: (-candidates[i]["valid_f1"], i))
        failures = []
        for best in ranked:
            chosen = {k: candidates_grid[best][k] for k in ("epoch", "lr", "wordNgrams")}
            try:
                model = _train(fasttext, fit_path, epoch=chosen["epoch"],
                                           lr=chosen["lr"], word_ngrams=chosen["wordNgrams"],
                                           **common)
                break
            except RuntimeError as exc:
                failures.append(f"{chosen}: {exc}")
        else:
            raise ValueError(f"every final model failed to train ({'; '.join(failures)}); "
                             "lower lr or raise dim")
        if quantize:
            with _zeroed_allocations():  # its buffers are uninitialised too
                model.quantize(input=str(fit_path), retrain=False, cutoff=int(cutoff),
                               qnorm=False)
        model_name = MODEL_FTZ if quantize else MODEL_BIN
        model_path = model_dir / model_name
        with atomic_path(model_path) as partial:   # fastText saves by name
            model.save_model(partial)
        stale = model_dir / (MODEL_BIN if quantize else MODEL_FTZ)
        if stale.exists():  # a previous run's other format would be ambiguous to load()
            stale.unlink()

    test = parts["test"]
    prob = _positive_probability(model, [r.line for r in test])
    test_y = [r.positive for r in test]
    held = binary_metrics(test_y, prob >= 0.5)
    grades = [r.score for r in test]
    metrics = {
        "threshold": float(threshold),
        "positive_label": POSITIVE,
        "decision_probability": 0.5,
        "held_out": {
            **held,
            "roc_auc": roc_auc(test_y, prob),
            "spearman_prob_vs_score": spearman(prob, grades),
        },
        "counts": {
            "labels_used": len(rows),
            "skipped_error": skipped["error"],
            "skipped_no_score": skipped["no_score"],
            "inner_train": len(parts["train"]),
            "inner_valid": len(parts["valid"]),
            "fit": len(fit),
            "test": len(test),
        },
        "label_distribution": {
            "all": _distribution(rows), "fit": _distribution(fit),
            "test": _distribution(test),
            "score_histogram": {
                str(s): int(n) for s, n in zip(*np.unique(scores, return_counts=True))
            },
            "domains": _domain_counts(rows),
        },
        "hyperparameters": {
            **chosen, "dim": dim, "bucket": bucket, "minCount": min_count,
            "loss": "softmax", "thread": 1, "seed": seed,
            "valid_fraction": valid_fraction, "inner_valid_fraction": inner_valid_fraction,
            "max_chars": max_chars, "quantized": bool(quantize),
            "cutoff": int(cutoff) if quantize else None,
        },
        "selection": {"metric": "valid_f1", "candidates": candidates,
                      "final_retrain_failures": failures,
                      "fixed_by_caller": {k: v for k, v in (("epoch", epoch), ("lr", lr),
                                                           ("wordNgrams", word_ngrams))
                                          if v is not None}},
        "model": {"file": model_name, "size_bytes": model_path.stat().st_size},
    }
    write_atomic(model_dir / MODEL_CARD, _model_card(metrics, data_description).encode("utf-8"))
    # metrics.json last: its presence marks a complete model directory
    write_atomic(model_dir / METRICS_JSON,
                 (json.dumps(metrics, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return TrainResult(model_dir=model_dir, model_path=model_path, metrics=metrics)


def _domain_counts(rows: list[_Row]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        d = out.setdefault(str(r.domain) if r.domain is not None else NO_DOMAIN,
                           {POSITIVE: 0, NEGATIVE: 0})
        d[POSITIVE if r.positive else NEGATIVE] += 1
    return dict(sorted(out.items()))


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _model_card(m: dict[str, Any], data_description: str) -> str:
    h, c, hp, dist = m["held_out"], m["counts"], m["hyperparameters"], m["label_distribution"]
    cm = h["confusion_matrix"]
    size = m["model"]["size_bytes"]
    cands = "\n".join(
        f"| {x['epoch']} | {x['lr']} | {x['wordNgrams']} | "
        f"{_fmt(x['valid_f1']) if 'failed' not in x else 'failed: ' + x['failed']} |"
        for x in m["selection"]["candidates"])
    return f"""# fastText quality classifier

## Data
{data_description or "Graded labels (id, text, domain, score), e.g. the labels.jsonl of a Claude labelling run."}

- Labels used: {c['labels_used']} (skipped: {c['skipped_error']} with an error, {c['skipped_no_score']} without a score)
- Split (seeded hash of the id, seed {hp['seed']}): fit {c['fit']} (inner train {c['inner_train']} + inner validation {c['inner_valid']}), held-out test {c['test']}
- Class balance: all {dist['all'][POSITIVE]} hq / {dist['all'][NEGATIVE]} lq; test {dist['test'][POSITIVE]} hq / {dist['test'][NEGATIVE]} lq

## Labels
`{POSITIVE}` when score >= {m['threshold']}, else `{NEGATIVE}`. Text is lower-cased, whitespace
(newlines included) collapsed to single spaces{f", truncated to {hp['max_chars']} characters" if hp['max_chars'] else ""}.

## Hyperparameters
epoch {hp['epoch']}, lr {hp['lr']}, wordNgrams {hp['wordNgrams']}, dim {hp['dim']}, bucket {hp['bucket']},
minCount {hp['minCount']}, loss {hp['loss']}, thread 1, seed {hp['seed']}, quantised: {hp['quantized']}.
Chosen by F1 on the inner validation split, then retrained on train + validation:

| epoch | lr | wordNgrams | validation F1 |
|---|---|---|---|
{cands}

## Held-out metrics (decision: P(hq) >= 0.5)
- Precision {_fmt(h['precision'])}, recall {_fmt(h['recall'])}, F1 {_fmt(h['f1'])}, accuracy {_fmt(h['accuracy'])}
- ROC AUC {_fmt(h['roc_auc'])}; Spearman(P(hq), score) {_fmt(h['spearman_prob_vs_score'])}
- Confusion: tp {cm['tp']}, fp {cm['fp']}, fn {cm['fn']}, tn {cm['tn']}

## Size
`{m['model']['file']}`: {size} bytes ({size / 2**20:.1f} MiB).

## Intended use and limits
Scores documents for the quality filter: `QualityModel.load(dir).score(texts)` gives P(hq).
It learns whatever the labels encode, on the label set's domains; outside them (other languages,
code, very short texts) scores are unreliable. A bag of word and bigram hashes: it sees
vocabulary, not meaning, and can be gamed by keyword stuffing. Check the held-out metrics and
the label distribution before using it as a filter; pick the filtering cut-off on P(hq) from data.
"""


# --------------------------------------------------------------------------- scoring


class QualityModel:
    """A trained classifier: ``QualityModel.load(model_dir).score(texts)`` -> P(hq) per text."""

    def __init__(self, model, path: Path, max_chars: int | None = None,
                 metrics: dict[str, Any] | None = None):
        self._model = model
        self.path = path
        self.max_chars = max_chars
        self.metrics = metrics or {}

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> "QualityModel":
        model_dir = Path(model_dir)
        candidates = [model_dir / n for n in (MODEL_BIN, MODEL_FTZ) if (model_dir / n).exists()]
        if not candidates:
            raise FileNotFoundError(f"no {MODEL_BIN} or {MODEL_FTZ} in {model_dir}")
        if len(candidates) > 1:
            raise ValueError(f"both {MODEL_BIN} and {MODEL_FTZ} in {model_dir}; keep one")
        metrics: dict[str, Any] = {}
        if (model_dir / METRICS_JSON).exists():
            metrics = json.loads((model_dir / METRICS_JSON).read_text(encoding="utf-8"))
        max_chars = metrics.get("hyperparameters", {}).get("max_chars")
        model = _import_fasttext().load_model(str(candidates[0]))
        labels = set(model.get_labels())
        if not labels <= {POSITIVE, NEGATIVE} or POSITIVE not in labels and NEGATIVE not in labels:
            raise ValueError(f"{candidates[0]} is not a quality model: labels {sorted(labels)}")
        return cls(model, candidates[0], max_chars=max_chars, metrics=metrics)

    def score(self, texts: Iterable[str]) -> np.ndarray:
        """Probability of ``__label__hq`` for each text (float64, in [0, 1]), one batch call;
        texts get the same preprocessing as in training."""
        lines = [preprocess(t, self.max_chars) for t in texts]
        return _positive_probability(self._model, lines)
