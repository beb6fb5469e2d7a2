"""Speed of `curate score`: fastText quality scoring, batched, against the naive loop.

(a) Inference on one core (the process pinned with sched_setaffinity, BLAS/OpenMP
    threads 1) for web-length documents (benchmarks/make_web_corpus.py: real text,
    median ~2.8 KB), all measured in this process, rounds interleaved:
      ours       QualityModel.score(batch of --batch-size texts): one predict call
      naive      the per-document loop of datatrove-style filters, with our
                 preprocessing: model.predict(preprocess(text), k=2) once per document
      datatrove  datatrove's FastTextClassifierFilter call, per document, whole text:
                 model.predict(text.strip().replace("\\n", " "), k=-1)
      read       parsing the same documents from JSONL.gz (read_documents): what a
                 second pass costs without the model (the --keep-top design choice)
    and printed as ratios: ours / naive, ours / the 3,000 docs/s/core target.
(b) The whole `curate score` pipeline on the local runner (FnApiRunner,
    multi_processing) with --direct_num_workers 1 and 2, one pass (--min-score) and
    two passes (--keep-top): documents in / wall seconds of run_score.

The model is trained here from SpamAssassin (ham = 1, spam = 0, threshold 1, dim 32,
max_chars 2000; ../shared/corpora/email_spamassassin.jsonl.gz), or from the tests'
synthetic labels with --synthetic-model (no corpora needed for training).

    python benchmarks/bench_score.py [--n 10000] [--docs 5000] [--rounds 3] [--core 0]
        [--batch-size 512] [--pipeline-n 100000] [--workers 1,2] [--skip-pipeline] [--synthetic-model]
"""
from __future__ import annotations

import os

# one thread everywhere, before NumPy loads (fastText's predict is single-threaded anyway)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

from classifiers.fasttext_train import QualityModel, preprocess, train_classifier  # noqa: E402
from curation.documents import Document  # noqa: E402
from curation.io import expand_inputs, read_documents  # noqa: E402

CORPORA = os.environ.get("CURATION_CORPORA", os.path.join(REPO, "..", "shared", "corpora"))
TARGET = 3000.0   # docs/s/core


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def web_corpus(n: int) -> str:
    out = os.path.join(HERE, "data", f"web_{n}")
    if not os.path.exists(os.path.join(out, "corpus_manifest.json")):
        import subprocess
        subprocess.run([sys.executable, os.path.join(HERE, "make_web_corpus.py"), "--n", str(n),
                        "--out", out], check=True)
    return out


def train_model(out: str, synthetic: bool) -> QualityModel:
    if os.path.exists(out):
        shutil.rmtree(out)
    t = time.perf_counter()
    if synthetic:
        sys.path.insert(0, os.path.join(REPO, "tests"))
        from test_fasttext_train import synthetic_labels
        labels, what = synthetic_labels(4000), "synthetic labels (tests/test_fasttext_train.py), threshold 3"
        res = train_classifier(labels, out, threshold=3, dim=32, max_chars=2000, seed=0)
    else:
        path = os.path.join(CORPORA, "email_spamassassin.jsonl.gz")
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        labels = [{"id": r["id"], "text": r["text"], "score": 1 if r["label"] == "ham" else 0} for r in rows]
        what = f"SpamAssassin {len(labels)} emails (ham=1, spam=0), threshold 1"
        res = train_classifier(labels, out, threshold=1, dim=32, max_chars=2000, seed=0)
    h, hp = res.metrics["held_out"], res.metrics["hyperparameters"]
    print(f"model: {what}; dim {hp['dim']}, bucket {hp['bucket']}, epoch {hp['epoch']}, lr {hp['lr']}, "
          f"wordNgrams {hp['wordNgrams']}, max_chars {hp['max_chars']}; {res.metrics['model']['size_bytes'] / 2**20:.1f} MiB; "
          f"held-out F1 {h['f1']:.4f}, ROC AUC {h['roc_auc']:.4f}; trained in {time.perf_counter() - t:.1f} s")
    return QualityModel.load(out)


def load_texts(corpus: str, limit: int) -> list[str]:
    texts = []
    for f in expand_inputs([corpus]):
        for rec in read_documents(f):
            if isinstance(rec, Document):
                texts.append(rec.text)
                if len(texts) >= limit:
                    return texts
    return texts


# ---------------------------------------------------------------- (a) one core

def run_ours(model: QualityModel, texts: list[str], batch: int) -> np.ndarray:
    return np.concatenate([model.score(texts[i:i + batch]) for i in range(0, len(texts), batch)])


def run_naive(model: QualityModel, texts: list[str]) -> np.ndarray:
    ft, mc = model._model, model.max_chars
    out = np.empty(len(texts))
    for i, t in enumerate(texts):
        labels, probs = ft.predict(preprocess(t, mc), k=2)
        d = dict(zip(labels, probs))
        out[i] = min(1.0, float(d["__label__hq"])) if "__label__hq" in d else 1.0 - float(d["__label__lq"])
    return out


def run_datatrove(model: QualityModel, texts: list[str]) -> None:
    ft = model._model
    for t in texts:
        ft.predict(t.strip().replace("\n", " "), k=-1)


def run_read(corpus: str, limit: int) -> int:
    n = 0
    for f in expand_inputs([corpus]):
        for rec in read_documents(f):
            n += 1
            if n >= limit:
                return n
    return n


def one_core(model, texts, corpus, rounds: int, batch: int, core: int) -> dict:
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
        print(f"\n(a) one core (cpu {core} of {sorted(before)}), {len(texts)} documents, {mb:.1f} MB, "
              f"median {int(np.median([len(t) for t in texts]))} chars, batch {batch}, {rounds} rounds interleaved")
        ref = run_ours(model, texts, batch)
        same = np.array_equal(ref, run_naive(model, texts))
        best: dict[str, float] = {}
        for _ in range(rounds):
            for name, fn in (("ours", lambda: run_ours(model, texts, batch)),
                             ("naive", lambda: run_naive(model, texts)),
                             ("datatrove", lambda: run_datatrove(model, texts)),
                             ("read", lambda: run_read(corpus, len(texts)))):
                t = time.perf_counter()
                fn()
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
    finally:
        os.sched_setaffinity(0, before)
    rate = {k: len(texts) / v for k, v in best.items()}
    for name in ("ours", "naive", "datatrove", "read"):
        print(f"  {name:<10} {rate[name]:>9,.0f} docs/s  {mb / best[name]:>7.1f} MB/s  (best of {rounds})")
    print(f"  ours / naive     = {rate['ours'] / rate['naive']:.2f}x   (same scores: {same})")
    print(f"  ours / datatrove = {rate['ours'] / rate['datatrove']:.2f}x   (datatrove predicts on the whole text)")
    print(f"  ours / target    = {rate['ours'] / TARGET:.2f}x   (target {TARGET:,.0f} docs/s/core)")
    print(f"  scoring / reading the file = {best['ours'] / best['read']:.2f}x the time: what re-scoring in "
          f"the --keep-top second pass would add, against 20 bytes/document of saved scores and tie keys")
    return rate


# ---------------------------------------------------------------- (b) the pipeline

def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the runner's workers):
    the cost of a run even when other jobs share the machine's cores."""
    import resource
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def pipeline(corpus: str, model_dir: str, out_root: str, workers: list[int], batch: int) -> list[dict]:
    from curation.config import ScoreRunConfig
    from pipelines.run_score import run_score
    print(f"\n(b) run_score on the local runner (FnApiRunner, multi_processing), {corpus}, "
          f"{os.cpu_count()} cores")
    rows = []
    for settings in ({"min_score": 0.5}, {"keep_top": 0.1}):
        label = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in settings.items())
        for w in workers:
            out = os.path.join(out_root, f"{next(iter(settings))}_w{w}")
            cfg = ScoreRunConfig(inputs=[corpus], output=out, model=model_dir, batch_size=batch, **settings)
            t, cpu0 = time.perf_counter(), cpu_seconds()
            m = run_score(cfg, [f"--direct_num_workers={w}", "--direct_running_mode=multi_processing"],
                          overwrite=True)
            wall, cpu = time.perf_counter() - t, cpu_seconds() - cpu0
            c = m["counts"]
            assert m["status"] == "complete" and m["balance"]["ok"], m["balance"]
            rows.append({"selection": label, "workers": w, "docs": c["input"], "wall_s": wall,
                         "cpu_s": cpu, "pipeline_s": m["timings_s"]["pipeline"], "kept": c["kept"]})
            print(f"  {label:<15} workers {w}: {c['input']} docs in {wall:6.1f} s wall "
                  f"(pipeline {m['timings_s']['pipeline']:.1f} s) = {c['input'] / wall:7,.0f} docs/s; "
                  f"{cpu:6.1f} CPU s = {c['input'] / cpu:7,.0f} docs per CPU second; kept {c['kept']}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10000, help="web corpus for the one-core measurement")
    ap.add_argument("--docs", type=int, default=5000, help="documents of it scored on one core")
    ap.add_argument("--pipeline-n", type=int, default=100000,
                    help="web corpus for the pipeline runs (the local runner's start-up, several "
                         "seconds per worker process, dominates small inputs)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--core", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--skip-pipeline", action="store_true")
    ap.add_argument("--synthetic-model", action="store_true")
    args = ap.parse_args(argv)
    print("command: python " + " ".join([os.path.relpath(__file__, REPO)] + (argv or sys.argv[1:])))
    import apache_beam
    from importlib.metadata import version
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; python {platform.python_version()}, "
          f"apache-beam {apache_beam.__version__}, {'fasttext-numpy2 ' + version('fasttext-numpy2') if _has('fasttext-numpy2') else 'fasttext'}, "
          f"numpy {np.__version__}")
    corpus = web_corpus(args.n)
    big = web_corpus(args.pipeline_n) if not args.skip_pipeline else None
    out_root = os.path.join(HERE, "out", "score")
    os.makedirs(out_root, exist_ok=True)
    model_dir = os.path.join(out_root, "model")
    model = train_model(model_dir, args.synthetic_model)
    texts = load_texts(corpus, args.docs)
    one_core(model, texts, corpus, args.rounds, args.batch_size, args.core)
    if not args.skip_pipeline:
        pipeline(big, model_dir, out_root, [int(w) for w in args.workers.split(",")], args.batch_size)
    return 0


def _has(dist: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version
    try:
        version(dist)
        return True
    except PackageNotFoundError:
        return False


if __name__ == "__main__":
    sys.exit(main())
