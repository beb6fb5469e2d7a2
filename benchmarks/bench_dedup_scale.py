"""`curate dedup` as the corpus grows: wall time, documents per second per core, peak
PSS of the whole process tree, and the pipeline's throughput as a fraction of what the
machine can do with the same files.

    python benchmarks/bench_dedup_scale.py --sizes 300000,1000000,3000000

For each size N (benchmarks/data/web_<N/1000>k from make_web_corpus.py, built when
missing, 16 JSONL.gz shards; above a million documents, N/1M independent one-million
corpora in chunk<i>/ built with seeds 20240602+i and ids web<i>-NNNNNNN, since one
generator run holds its whole corpus in memory):

  pipeline  curate dedup --input 'DIR/*.jsonl.gz' --output OUT --overwrite
            (the defaults: threshold 0.8, 128 permutations, Parquet output, the local
            runner on every core), timed from spawn to exit, its process tree's PSS
            and CPU seconds sampled every 100 ms (memwatch.py)
  limit     one pass over the same files that does only the work no dedup can skip:
            read and parse every record, compute its MinHash signature, write the
            documents once as Parquet (one process per core, a file per task), timed
            and sampled the same way

Printed per size: documents per second per core (wall), documents per CPU-second for
both, and their ratio (pipeline / limit); then peak PSS at each size against the
smallest. Results also go to OUT_ROOT/results.json.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_dedup import ensure_corpus, measure  # noqa: E402



CHUNK = 1_000_000


def corpus_glob(data_dir: str, n: int) -> str:
    """The input pattern of the size-n corpus, built when missing."""
    if n <= CHUNK:
        return os.path.join(ensure_corpus(data_dir, n), "*.jsonl.gz")
    if n % CHUNK:
        raise SystemExit(f"sizes above {CHUNK:,} must be whole millions, got {n:,}")
    root = os.path.join(data_dir, f"web_{n // 1000}k")
    import make_web_corpus
    for i in range(n // CHUNK):
        d = os.path.join(root, f"chunk{i}")
        if not os.path.exists(os.path.join(d, "corpus_manifest.json")):
            make_web_corpus.main(["--n", str(CHUNK), "--seed", str(20240602 + i),
                                  "--id-prefix", f"web{i}-", "--out", d])
    return os.path.join(root, "chunk*", "*.jsonl.gz")


def limit_pass(files: list[str], out_dir: str, workers: int) -> None:
    """Read + parse, sign, write Parquet: the floor every dedup pays once."""
    from concurrent.futures import ProcessPoolExecutor
    os.makedirs(out_dir, exist_ok=True)
    with ProcessPoolExecutor(workers) as ex:
        list(ex.map(_limit_file, [(i, f, out_dir) for i, f in enumerate(files)]))


def _limit_file(args) -> int:
    i, path, out_dir = args
    from curation.documents import Document
    from curation.io import expand_inputs, read_documents, write_documents
    from curation.minhash import MinHasher
    mh = MinHasher(num_perm=128, seed=1, ngram=5)
    (f,) = expand_inputs([path])

    def docs():
        batch = []
        for rec in read_documents(f):
            if isinstance(rec, Document):
                batch.append(rec)
                if len(batch) >= 2048:
                    mh.sign_batch([d.text for d in batch])
                    yield from batch
                    batch = []
        if batch:
            mh.sign_batch([d.text for d in batch])
            yield from batch

    return write_documents(os.path.join(out_dir, f"part-{i:05d}.parquet"), docs())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="300000,1000000,3000000")
    ap.add_argument("--data-dir", default=os.path.join(HERE, "data"))
    ap.add_argument("--out", default=os.path.join(HERE, "out", "bench_dedup_scale"))
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--curate-args", default="", help="extra flags for curate dedup")
    ap.add_argument("--no-limit", action="store_true", help="skip the limit pass")
    ap.add_argument("--limit-worker", nargs=2, metavar=("GLOB", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.limit_worker:
        files = sorted(glob.glob(a.limit_worker[0]))
        limit_pass(files, a.limit_worker[1], a.cores)
        return 0

    results = []
    for n in [int(s) for s in a.sizes.split(",")]:
        d = corpus_glob(a.data_dir, n)
        out = os.path.join(a.out, f"dedup_{n}")
        cmd = [sys.executable, "-m", "pipelines.cli", "dedup", "--input", d,
               "--output", out, "--overwrite", f"--direct_num_workers={a.cores}",
               *shlex.split(a.curate_args)]
        r = {"n": n, "pipeline": measure(cmd, os.path.join(a.out, f"log_dedup_{n}"))}
        if r["pipeline"]["rc"] != 0:
            print(r["pipeline"]["stderr_tail"], file=sys.stderr)
            return 1
        with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
            man = json.load(f)
        r["docs"] = man["counts"]["input_documents"]
        r["removed"] = man["counts"]["removed_exact"] + man["counts"]["removed_near"]
        if not a.no_limit:
            lim_out = os.path.join(a.out, f"limit_{n}")
            r["limit"] = measure([sys.executable, __file__, "--cores", str(a.cores),
                                  "--limit-worker", d, lim_out], os.path.join(a.out, f"log_limit_{n}"))
            subprocess.run(["rm", "-rf", lim_out], check=False)
        p = r["pipeline"]
        r["docs_per_s_per_core"] = r["docs"] / p["wall_s"] / a.cores
        r["docs_per_cpu_s"] = r["docs"] / p["cpu_s"]
        if "limit" in r:
            r["limit_docs_per_cpu_s"] = r["docs"] / r["limit"]["cpu_s"]
            r["fraction_of_limit"] = r["docs_per_cpu_s"] / r["limit_docs_per_cpu_s"]
        results.append(r)
        print(f"{n:>9,} docs: wall {p['wall_s']:7.1f} s, {r['docs_per_s_per_core']:7,.0f} docs/s/core, "
              f"{r['docs_per_cpu_s']:7,.0f} docs/CPU-s, peak PSS {p['peak_pss_mib']:7,.0f} MiB"
              + (f"; limit pass {r['limit_docs_per_cpu_s']:7,.0f} docs/CPU-s, pipeline at "
                 f"{r['fraction_of_limit']:.2f} of it" if "limit" in r else ""), flush=True)
    base = results[0]
    for r in results[1:]:
        print(f"peak PSS at {r['n']:,} / at {base['n']:,}: "
              f"{r['pipeline']['peak_pss_mib'] / base['pipeline']['peak_pss_mib']:.2f}")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"cores": a.cores, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
