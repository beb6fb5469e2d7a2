"""Peer: datatrove's four-stage MinHash deduplication, run locally.

Runs with the interpreter of the separate virtual environment (datatrove must not
enter the project's environment):

    benchmarks/.venv-datatrove/bin/python benchmarks/bench_datatrove_dedup.py \\
        --input benchmarks/data/web_10k [--workers 1] [--tasks N] [--work DIR]
    benchmarks/.venv-datatrove/bin/python benchmarks/bench_datatrove_dedup.py --neardup

Stages (datatrove's own example, examples/minhash_deduplication.py, is the model):
  1 signatures  JsonlReader -> MinhashDedupSignature         tasks = --tasks
  2 buckets     MinhashDedupBuckets                          tasks = num_buckets (14)
  3 clustering  MinhashDedupCluster(save_cluster_id=True)    tasks = 1 (datatrove requires it)
  4 filter      JsonlReader -> MinhashDedupFilter(load_cluster_ids=True,
                exclusion_writer=JsonlWriter(removed/)) -> JsonlWriter(output/)
with datatrove's default MinhashConfig (word 5-grams after its simplify_text
normalisation and spaCy word tokenisation, 14 buckets x 8 hashes, 64-bit xxhash,
seed 1; no Jaccard check). Every stage runs through LocalPipelineExecutor with
workers = --workers (default 1: tasks run one after another in this process, so
one core). --tasks defaults to the number of input files.

Cluster ids are asked for (save_cluster_id / load_cluster_ids) only so that the
clusters can be scored; datatrove writes them as small binary files next to the
removal lists, and the filter puts them into each document's metadata.

Prints one JSON object on stdout: docs, seconds per stage and total, the seconds spent
in spaCy's word tokeniser within them (timed in the same run, one worker only), docs/s,
docs/s per core, peak memory (memwatch.py: PSS and RSS summed over this process and
its children, sampled every 100 ms; and getrusage's ru_maxrss of self and of the
largest child; peak_mem_mib is the PSS sum), kept/removed
counts, and with --neardup (or --score) the neardup_score result. Writes the
predicted clusters (doc id -> cluster id, docs in clusters of size >= 2) as
WORK/clusters.jsonl, which neardup_score.py --clusters can read (--no-clusters skips
that untimed step, which reads every output document back).
datatrove's logs go to WORK/datatrove.log unless --verbose.

--profile-steps runs no pipeline: it times, document by document on the same input,
the four steps of MinhashDedupSignature.get_shingles/get_signature (simplify_text,
spaCy word tokenisation, n-gram hashing, the signature) and prints their CPU seconds, so
that the caller can say what share of datatrove's time its tokeniser takes (reading
the JSON is not timed there).
"""
from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import resource
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from memwatch import TreeMemory  # noqa: E402
from neardup_score import DEFAULT_CORPUS, DEFAULT_TRUTH, load_truth, score_clusters  # noqa: E402


def run_datatrove(input_path: str, work: str, *, workers: int, tasks: int | None,
                  glob_pattern: str, collect_clusters: bool = True) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets,
                                                  MinhashDedupCluster, MinhashDedupFilter,
                                                  MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.word_tokenizers import SpaCyTokenizer

    # With one worker datatrove runs every task in this process, so the spaCy tokeniser's
    # share of the run can be timed inside the timed run itself (two clock reads per
    # document; the wrapper calls the same method).
    tokenize_s = [0.0]
    if workers == 1 and not getattr(SpaCyTokenizer.word_tokenize, "_timed", False):
        inner_tokenize = SpaCyTokenizer.word_tokenize

        def timed_tokenize(self, text):
            t = time.perf_counter()
            try:
                return inner_tokenize(self, text)
            finally:
                tokenize_s[0] += time.perf_counter() - t
        timed_tokenize._timed = True
        SpaCyTokenizer.word_tokenize = timed_tokenize

    if os.path.isfile(input_path):
        data_folder, glob_pattern = os.path.dirname(os.path.abspath(input_path)), os.path.basename(input_path)
    else:
        data_folder = os.path.abspath(input_path)
    files = sorted(glob.glob(os.path.join(data_folder, glob_pattern)))
    if not files:
        raise SystemExit(f"no input files {glob_pattern} in {data_folder}")
    tasks = tasks or len(files)
    config = MinhashConfig()
    if os.path.exists(work):
        shutil.rmtree(work)   # datatrove skips tasks it finds completed: start clean
    os.makedirs(work)
    d = lambda *p: os.path.join(work, *p)  # noqa: E731

    def reader():
        return JsonlReader(data_folder, glob_pattern=glob_pattern, text_key="text", id_key="id")

    stages = [
        ("signatures", dict(pipeline=[reader(), MinhashDedupSignature(output_folder=d("signatures"),
                                                                      config=config)],
                            tasks=tasks)),
        ("buckets", dict(pipeline=[MinhashDedupBuckets(input_folder=d("signatures"),
                                                       output_folder=d("buckets"), config=config)],
                         tasks=config.num_buckets)),
        ("clustering", dict(pipeline=[MinhashDedupCluster(input_folder=d("buckets"),
                                                          output_folder=d("remove_ids"),
                                                          config=config, save_cluster_id=True)],
                            tasks=1)),
        ("filter", dict(pipeline=[reader(),
                                  MinhashDedupFilter(input_folder=d("remove_ids"),
                                                     exclusion_writer=JsonlWriter(d("removed")),
                                                     load_cluster_ids=True),
                                  JsonlWriter(d("output"))],
                        tasks=tasks)),
    ]
    seconds, peaks = {}, {}
    with TreeMemory() as whole:
        for name, kw in stages:
            ex = LocalPipelineExecutor(workers=min(workers, kw["tasks"]),
                                       logging_dir=d("logs", name), **kw)
            with TreeMemory() as mem:
                t0 = time.perf_counter()
                ex.run()
                seconds[name] = time.perf_counter() - t0
            peaks[name] = mem.peak_pss
    ru_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ru_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024

    # Counts from the filter stage's own statistics.
    with open(d("logs", "filter", "stats.json"), encoding="utf-8") as fh:
        fstats = next(st["stats"] for st in json.load(fh) if "MinHash stage 4" in st["name"])
    _total = lambda v: v["total"] if isinstance(v, dict) else v  # noqa: E731
    kept, removed = _total(fstats.get("forwarded", 0)), _total(fstats.get("dropped", 0))

    # Untimed: the clusters, from the cluster ids the filter put into the documents.
    cluster_of = None
    if collect_clusters:
        cluster_of = {}
        for sub in ("output", "removed"):
            for f in sorted(glob.glob(d(sub, "*.jsonl.gz"))):
                with gzip.open(f, "rt", encoding="utf-8") as fh:
                    for line in fh:
                        doc = json.loads(line)
                        cid = doc.get("metadata", {}).get("minhash_cluster_id", -1)
                        if cid != -1:
                            cluster_of[str(doc["id"])] = str(cid)
        with open(d("clusters.jsonl"), "w", encoding="utf-8") as fh:
            for doc_id in sorted(cluster_of):
                fh.write(json.dumps({"id": doc_id, "cluster_id": cluster_of[doc_id]}) + "\n")

    from importlib.metadata import version
    docs = kept + removed
    total = sum(seconds.values())
    cores = max(1, min(workers, os.cpu_count() or 1))
    return {
        "tool": f"datatrove {version('datatrove')} MinHash "
                f"({config}, default MinhashConfig)",
        "input": input_path, "files": len(files), "tasks": tasks, "workers": workers,
        "cores": cores, "docs": docs, "kept": kept, "removed": removed,
        "seconds": {k: round(v, 3) for k, v in seconds.items()} | {"total": round(total, 3)},
        # None with several workers (the tasks run in other processes)
        "spacy_word_tokenize_s": round(tokenize_s[0], 3) if workers == 1 else None,
        "spacy_share_of_total": round(tokenize_s[0] / total, 3) if workers == 1 else None,
        "docs_per_s": round(docs / total, 1),
        "docs_per_s_per_core": round(docs / total / cores, 1),
        "peak_mem_mib": round(whole.peak_pss / 2**20, 1),
        "memory": whole.as_dict() | {
            "peak_pss_mib_by_stage": {k: round(v / 2**20, 1) for k, v in peaks.items()}},
        "ru_maxrss_mib": {"self": round(ru_self / 2**20, 1),
                          "largest_child": round(ru_children / 2**20, 1)},
        "clusters_file": d("clusters.jsonl") if collect_clusters else None,
        "docs_in_clusters": len(cluster_of) if collect_clusters else None,
        "_cluster_of": cluster_of,
    }


def profile_steps(input_path: str, glob_pattern: str) -> dict:
    """Seconds spent in each step of datatrove's signature computation, on every document."""
    import numpy as np
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.utils.text import ngrams, simplify_text

    files = ([input_path] if os.path.isfile(input_path)
             else sorted(glob.glob(os.path.join(input_path, glob_pattern))))
    if not files:
        raise SystemExit(f"no input files {glob_pattern} in {input_path}")
    config = MinhashConfig()
    with __import__("tempfile").TemporaryDirectory() as tmp:
        step = MinhashDedupSignature(output_folder=tmp, config=config)   # writes nothing here
    tok, hash_func = step.word_tokenizer, step._hash_func
    tok.word_tokenize("Load spaCy's blank English pipeline before timing.")
    secs = dict.fromkeys(("simplify_text", "word_tokenize", "ngram_hash", "signature"), 0.0)
    docs, clock = 0, time.process_time   # CPU seconds: the machines are shared
    for f in files:
        opener = gzip.open if f.endswith(".gz") else open
        with opener(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                text = json.loads(line)["text"]
                t0 = clock()
                simple = simplify_text(text, config.norm_config)
                t1 = clock()
                words = tok.word_tokenize(simple)
                t2 = clock()
                shingles = np.fromiter([hash_func(" ".join(x)) for x in ngrams(words, config.n_grams)],
                                       dtype=np.uint64).reshape((-1, 1))
                t3 = clock()
                if shingles.size:
                    step.get_signature(shingles)
                t4 = clock()
                for k, a, b in (("simplify_text", t0, t1), ("word_tokenize", t1, t2),
                                ("ngram_hash", t2, t3), ("signature", t3, t4)):
                    secs[k] += b - a
                docs += 1
    return {"docs": docs, "steps_cpu_s": {k: round(v, 3) for k, v in secs.items()},
            "steps_total_cpu_s": round(sum(secs.values()), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="datatrove MinHash dedup peer benchmark")
    ap.add_argument("--input", help="directory of JSONL(.gz) shards with id and text, or one file")
    ap.add_argument("--glob", default="*.jsonl.gz", help="file pattern inside --input")
    ap.add_argument("--neardup", action="store_true",
                    help="run on the near-duplicate benchmark corpus and score it")
    ap.add_argument("--score", action="store_true", help="score the clusters against the neardup truth")
    ap.add_argument("--work", help="working directory (default benchmarks/out/datatrove/<input name>)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--tasks", type=int, help="tasks of the reading stages (default: one per file)")
    ap.add_argument("--no-clusters", action="store_true",
                    help="skip collecting the clusters after the run (speed runs)")
    ap.add_argument("--verbose", action="store_true", help="leave datatrove's logs on stderr")
    ap.add_argument("--profile-steps", action="store_true",
                    help="run no pipeline; time the signature's steps (spaCy tokenisation among "
                         "them) on every input document and print their seconds")
    a = ap.parse_args(argv)
    if a.neardup:
        a.input, a.score = a.input or DEFAULT_CORPUS, True
    if not a.input:
        ap.error("--input or --neardup is required")
    if a.profile_steps:
        print(json.dumps(profile_steps(a.input, a.glob), indent=2))
        return 0
    name = os.path.basename(os.path.normpath(a.input)).split(".")[0]
    work = os.path.abspath(a.work or os.path.join(HERE, "out", "datatrove", name))
    os.makedirs(work, exist_ok=True)

    saved_err = None
    if not a.verbose:   # datatrove logs every task at INFO to stderr; keep them in a file
        sys.stderr.flush()
        saved_err = os.dup(2)
        log = os.open(os.path.join(os.path.dirname(work), f"{name}.datatrove.log"),
                      os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 2)
        os.close(log)
    try:
        res = run_datatrove(a.input, work, workers=a.workers, tasks=a.tasks, glob_pattern=a.glob,
                            collect_clusters=not (a.no_clusters and not a.score))
    finally:
        if saved_err is not None:
            sys.stderr.flush()
            os.dup2(saved_err, 2)
            os.close(saved_err)
    cluster_of = res.pop("_cluster_of")
    if a.score:
        truth = load_truth(DEFAULT_TRUTH, DEFAULT_CORPUS)
        res["neardup_score"] = score_clusters(cluster_of, truth)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
