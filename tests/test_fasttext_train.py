"""fastText quality classifier training: real fastText, small synthetic labels, SpamAssassin."""
from __future__ import annotations

import json
import os
import random
import stat
import time

import numpy as np
import pytest

from classifiers.fasttext_train import (NEGATIVE, POSITIVE, QualityModel, preprocess, roc_auc,
                                        spearman, split_of, train_classifier)
from tests.conftest import read_jsonl_gz, shared_corpus

GOOD = ("the study measured results across several experiments and the analysis explains "
        "methods evidence careful reasoning history science library research report data "
        "evaluation theory published review chapter").split()
BAD = ("click here buy now cheap free winner casino offer deal unsubscribe viagra hot "
       "limited discount prize lol omg subscribe bonus").split()
COMMON = "a an of to in and is it for on with this that".split()
# A realistic vocabulary size matters: with only the ~55 words above, fastText diverges
# ("Encountered NaN.") at lr 0.1 with thread=1, as every update hits the same few rows.
_VOCAB_RNG = random.Random(42)
GOOD_V = GOOD + ["".join(_VOCAB_RNG.choice("aeioulmnrst") for _ in range(7)) for _ in range(400)]
BAD_V = BAD + ["".join(_VOCAB_RNG.choice("bcdfgkpvxz") for _ in range(5)) for _ in range(400)]
COMMON_V = COMMON + ["".join(_VOCAB_RNG.choice("hjqwy") for _ in range(4)) for _ in range(200)]

# Small and fast: tiny embedding table, same grid as the default.
SMALL = {"dim": 16, "bucket": 2**12, "seed": 7}


def synthetic_labels(n: int = 800, seed: int = 0) -> list[dict]:
    """Graded 0-5 documents: higher grades draw more words from GOOD, lower from BAD."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        grade = rng.randint(0, 5)
        p_good = 0.15 + 0.14 * grade  # 0.15 .. 0.85
        words = []
        for _ in range(rng.randint(20, 60)):
            r = rng.random()
            if r < 0.3:
                words.append(rng.choice(COMMON_V))
            elif rng.random() < p_good:
                w = rng.choice(GOOD_V)
                words.append(w.upper() if rng.random() < 0.1 else w)
            else:
                words.append(rng.choice(BAD_V))
        text = " ".join(words[:15]) + "\n\n" + " ".join(words[15:])
        rows.append({"id": f"doc-{i:04d}", "text": text, "domain": ["web", "news"][i % 2],
                     "score": grade, "label": "x", "reasoning": "...", "model": "m",
                     "rubric": "r", "input_tokens": 10, "output_tokens": 5})
    return rows


@pytest.fixture(scope="module")
def labels():
    rows = synthetic_labels()
    # labeller failures: skipped and counted
    rows.append({"id": "err-1", "text": "whatever", "domain": "web", "score": None,
                 "error": "overloaded"})
    rows.append({"id": "err-2", "text": "whatever", "domain": "web", "error": "timeout"})
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory, labels):
    out = tmp_path_factory.mktemp("model")
    return train_classifier(labels, out, threshold=3, **SMALL)


# ----------------------------------------------------------------------------- preprocessing


def test_preprocess_one_line_lowercase_normalised():
    assert preprocess("  Hello\tWORLD\n\nnew\r\nline\x00x\u00a0y  ") == "hello world new line x y"
    assert "\n" not in preprocess("a\nb\n")
    # a literal label token in the text must not become a label
    assert "__label__" not in preprocess("spam __label__hq more")
    assert preprocess("abcdef", max_chars=3) == "abc"
    assert preprocess("") == ""


def test_split_is_deterministic_and_near_fraction():
    ids = [f"id{i}" for i in range(5000)]
    a = [split_of(i, seed=3) for i in ids]
    assert a == [split_of(i, seed=3) for i in ids]
    assert a != [split_of(i, seed=4) for i in ids]
    share = a.count("test") / len(a)
    assert 0.17 < share < 0.23
    inner = a.count("valid") / (len(a) - a.count("test"))
    assert 0.17 < inner < 0.23


# ----------------------------------------------------------------------------- metric helpers


def test_roc_auc_and_spearman_match_hand_values():
    # 3 positives, 2 negatives; pairs (pos > neg): 0.9>0.3,0.9>0.6, 0.6=0.6 (half), 0.6>0.3,
    # 0.2 beats none -> (2 + 1.5 + 0) / 6
    assert roc_auc([1, 1, 0, 0, 1], [0.9, 0.6, 0.6, 0.3, 0.2]) == pytest.approx(3.5 / 6)
    assert roc_auc([1, 1], [0.1, 0.2]) is None
    assert roc_auc([1, 0], [0.9, 0.1]) == 1.0
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # with ties: ranks a=(1.5,1.5,3,4), b=(1,2,3,4); Pearson of those
    ra, rb = np.array([1.5, 1.5, 3, 4]), np.array([1, 2, 3, 4.0])
    expected = np.corrcoef(ra, rb)[0, 1]
    assert spearman([5, 5, 7, 9], [1, 2, 3, 4]) == pytest.approx(expected)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


# ----------------------------------------------------------------------------- training


def test_writes_model_metrics_and_card(trained):
    d = trained.model_dir
    names = sorted(p.name for p in d.iterdir())
    assert names == ["MODEL_CARD.md", "metrics.json", "model.bin"]  # no temp files left over
    umask = os.umask(0)
    os.umask(umask)
    for name in names:              # readable by other users, as any file the user writes
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o666 & ~umask
    m = json.loads((d / "metrics.json").read_text())
    assert m == json.loads(json.dumps(trained.metrics))
    h = m["held_out"]
    for key in ("precision", "recall", "f1", "accuracy", "roc_auc", "spearman_prob_vs_score",
                "confusion_matrix"):
        assert key in h
    c = m["counts"]
    assert c["skipped_error"] == 2 and c["skipped_no_score"] == 0
    assert c["labels_used"] == 800 == c["fit"] + c["test"]
    assert c["fit"] == c["inner_train"] + c["inner_valid"]
    assert sum(h["confusion_matrix"].values()) == c["test"]
    assert 120 < c["test"] < 200
    # grades 2 and 3 overlap by design; a working classifier still separates most
    assert h["f1"] > 0.8 and h["roc_auc"] > 0.88
    assert h["spearman_prob_vs_score"] > 0.6
    dist = m["label_distribution"]
    assert dist["all"][POSITIVE] + dist["all"][NEGATIVE] == 800
    assert sum(dist["score_histogram"].values()) == 800
    assert set(dist["domains"]) == {"news", "web"}
    hp = m["hyperparameters"]
    assert hp["wordNgrams"] == 2 and hp["bucket"] == 2**12 and hp["thread"] == 1
    cands = m["selection"]["candidates"]
    assert [(x["epoch"], x["lr"]) for x in cands] == [(5, 0.1), (5, 0.5), (25, 0.1), (25, 0.5)]
    best = max(x["valid_f1"] for x in cands)
    chosen = [x for x in cands if x["epoch"] == hp["epoch"] and x["lr"] == hp["lr"]][0]
    assert chosen["valid_f1"] == best
    card = (d / "MODEL_CARD.md").read_text()
    assert "score >= 3" in card and "Held-out" in card and "Intended use" in card
    assert m["model"]["size_bytes"] == (d / "model.bin").stat().st_size


def test_model_is_small_with_bucket_set(trained):
    # (vocab + 2**12 buckets) x dim 16 x 4 bytes: well under 1 MB, not fastText's ~800 MB
    assert trained.model_path.stat().st_size < 1_000_000


def test_quality_model_scores(trained):
    qm = QualityModel.load(trained.model_dir)
    good = " ".join(GOOD)
    bad = " ".join(BAD)
    s = qm.score([good, bad, "", "Line one\nLine two"])
    assert s.dtype == np.float64 and s.shape == (4,)
    assert np.all((s >= 0) & (s <= 1))
    assert s[0] > 0.8 > 0.2 > s[1]
    assert qm.score([]).shape == (0,)
    # the scorer applies the training preprocessing: case and newlines do not matter
    assert qm.score([good.upper().replace(" ", "\n")])[0] == pytest.approx(s[0])


def test_deterministic_across_runs_and_input_order(tmp_path, labels):
    shuffled = list(labels)
    random.Random(1).shuffle(shuffled)
    a = train_classifier(labels, tmp_path / "a", threshold=3, **SMALL)
    b = train_classifier(shuffled, tmp_path / "b", threshold=3, **SMALL)
    assert (tmp_path / "a" / "metrics.json").read_bytes() == \
        (tmp_path / "b" / "metrics.json").read_bytes()
    assert (tmp_path / "a" / "model.bin").read_bytes() == \
        (tmp_path / "b" / "model.bin").read_bytes()
    texts = [r["text"] for r in labels[:100]]
    pa = QualityModel.load(a.model_dir).score(texts)
    pb = QualityModel.load(b.model_dir).score(texts)
    assert np.array_equal(pa, pb)


def test_fixed_hyperparameters_skip_the_grid(tmp_path, labels):
    r = train_classifier(labels, tmp_path, threshold=3, epoch=25, lr=0.5, word_ngrams=2, **SMALL)
    hp = r.metrics["hyperparameters"]
    assert (hp["epoch"], hp["lr"], hp["wordNgrams"]) == (25, 0.5, 2)
    assert len(r.metrics["selection"]["candidates"]) == 1
    assert r.metrics["selection"]["fixed_by_caller"] == {"epoch": 25, "lr": 0.5, "wordNgrams": 2}


def test_quantised_model_loads_and_scores(tmp_path, labels, trained):
    r = train_classifier(labels, tmp_path, threshold=3, quantize=True, **SMALL)
    assert r.model_path.name == "model.ftz"
    assert not (tmp_path / "model.bin").exists()
    assert r.model_path.stat().st_size < trained.model_path.stat().st_size
    assert r.metrics["hyperparameters"]["quantized"] is True
    assert r.metrics["held_out"]["roc_auc"] > 0.9
    qm = QualityModel.load(tmp_path)
    s = qm.score([" ".join(GOOD), " ".join(BAD)])
    assert s[0] > 0.5 > s[1]


def test_retraining_unquantised_removes_a_stale_ftz(tmp_path, labels):
    train_classifier(labels, tmp_path, threshold=3, quantize=True, epoch=5, lr=0.1, **SMALL)
    train_classifier(labels, tmp_path, threshold=3, epoch=5, lr=0.1, **SMALL)
    assert (tmp_path / "model.bin").exists() and not (tmp_path / "model.ftz").exists()
    QualityModel.load(tmp_path)


# ----------------------------------------------------------------------------- errors


def test_error_no_labels(tmp_path):
    with pytest.raises(ValueError, match="no labels"):
        train_classifier([], tmp_path, threshold=3)
    with pytest.raises(ValueError, match="no labels.*1 with an error"):
        train_classifier([{"id": "a", "text": "t", "error": "boom"}], tmp_path, threshold=3)


def test_error_single_class(tmp_path):
    rows = [{"id": str(i), "text": "same text", "score": 4} for i in range(50)]
    with pytest.raises(ValueError, match="single class"):
        train_classifier(rows, tmp_path, threshold=4)


def test_error_threshold_outside_scores(tmp_path, labels):
    with pytest.raises(ValueError, match=r"threshold 6 is outside .*\[0\.0, 5\.0\]"):
        train_classifier(labels, tmp_path, threshold=6)
    with pytest.raises(ValueError, match="outside"):
        train_classifier(labels, tmp_path, threshold=-1)
    assert not (tmp_path / "metrics.json").exists()


def test_error_malformed_rows(tmp_path):
    with pytest.raises(ValueError, match="score must be a finite number"):
        train_classifier([{"id": "a", "text": "t", "score": "high"}], tmp_path, threshold=1)
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        train_classifier([{"id": "a", "text": "t", "score": 1},
                          {"id": "a", "text": "u", "score": 0}], tmp_path, threshold=1)
    with pytest.raises(ValueError, match="'text' must be a string"):
        train_classifier([{"id": "a", "text": None, "score": 1}], tmp_path, threshold=1)


def test_error_too_few_labels_for_the_splits(tmp_path):
    rows = [{"id": "a", "text": "good", "score": 1}, {"id": "b", "text": "bad", "score": 0}]
    with pytest.raises(ValueError, match="split is empty"):
        train_classifier(rows, tmp_path, threshold=1)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.bin or model.ftz"):
        QualityModel.load(tmp_path)


# ----------------------------------------------------------------------------- real data


def test_spamassassin_held_out_f1(tmp_path):
    """Ham is the positive class (score 1, __label__hq), spam score 0, threshold 1.

    All 6,046 messages, each truncated to its first 2,000 characters (headers included) and a
    dim-32 model: the full default grid takes ~20 s on one thread (~55 s untruncated, for the
    same F1). The held-out split is ~1,200 messages.
    """
    rows = read_jsonl_gz(shared_corpus("email_spamassassin.jsonl.gz"))
    labels = [{"id": r["id"], "text": r["text"], "domain": r.get("group"),
               "score": 1.0 if r["label"] == "ham" else 0.0} for r in rows]
    t0 = time.perf_counter()
    res = train_classifier(labels, tmp_path, threshold=1, dim=32, bucket=2**18,
                           max_chars=2000, seed=0,
                           data_description="SpamAssassin public corpus (ham = hq, spam = lq)")
    elapsed = time.perf_counter() - t0
    m = res.metrics
    print(f"\nspamassassin: {elapsed:.1f}s, chosen {m['hyperparameters']}, "
          f"held-out {m['held_out']}, size {m['model']['size_bytes']} bytes")
    assert m["counts"]["labels_used"] == len(rows)
    assert m["held_out"]["f1"] >= 0.95
    assert m["held_out"]["roc_auc"] >= 0.98
    qm = QualityModel.load(tmp_path)
    test_ids = {r["id"] for r in labels if split_of(r["id"], 0, 0.2, 0.2) == "test"}
    test_rows = [r for r in labels if r["id"] in test_ids]
    p = qm.score([r["text"] for r in test_rows])
    assert roc_auc([r["score"] == 1.0 for r in test_rows], p) == \
        pytest.approx(m["held_out"]["roc_auc"])
