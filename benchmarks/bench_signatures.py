"""MinHash signatures: speed per core and Jaccard-estimation error, curation's
MinHasher against datasketch 2.x, measured in one process on the same real documents.

  python benchmarks/bench_signatures.py [--docs 2000] [--rounds 5] [--seeds 1,2,...,10]

Speed: signatures per second on one thread, shingling included on both sides.
datasketch is fed what its users feed it: per document, the word 5-grams of the
normalised text as UTF-8 bytes, through `MinHash(num_perm=128).update_batch(...)`
(and, as a second, faster baseline, with the permutations built once and passed in).
Ours: `MinHasher(backend="numba").signatures(docs)` on the same documents (the
documents go in as Python str; normalisation, shingling, exact keys all count).
Every side signs the same documents (the first --docs of each corpus) with one timed
call per round; the order of the sides flips every round, the ratio is taken per
round, and the median over --rounds rounds is reported for every side alike, since
the machines are shared and noisy.

Accuracy: mean absolute error |J_est - J| over every pair listed in
neardup_dev_truth.json.gz (exact word-5-gram Jaccard, J >= 0.3), for several seeds,
ours and datasketch's (real datasketch MinHash objects), all at the same num_perm.

Compile time: a fresh interpreter importing the module and signing one document,
with an empty Numba cache (cold) and then with the cache it wrote (warm).

The corpora are read from ../shared/corpora (or $CURATION_CORPORA); the script
skips, with exit status 0, when they are absent.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPORA = Path(os.environ.get("CURATION_CORPORA", REPO.parent / "shared" / "corpora"))
WEB = ("web_cc_dolma_fixtures.jsonl.gz", "web_noisy.jsonl.gz", "neardup_dev.jsonl.gz")

import numpy as np  # noqa: E402


def load(name, limit=None):
    rows = []
    with gzip.open(CORPORA / name, "rt", encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if limit and len(rows) >= limit:
                break
    return rows


def time_sides(sides: dict, docs: list, rounds: int) -> dict[str, list[float]]:
    """Seconds of one call of every side on the same docs, per round. The order of the
    sides flips every round so that drift in the machine's load falls on all alike."""
    order, out = list(sides), {key: [] for key in sides}
    for rnd in range(rounds):
        for key in (order if rnd % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            sides[key](docs)
            out[key].append(time.perf_counter() - t0)
    return out


def selftest() -> int:
    """Every side gets the same documents, as often, and the order flips."""
    calls = []
    sides = {k: (lambda docs, k=k: calls.append((k, id(docs), len(docs)))) for k in ("a", "b", "c")}
    docs = ["one", "two", "three"]
    t = time_sides(sides, docs, 4)
    assert all(len(v) == 4 for v in t.values()), t
    assert {(i, n) for _, i, n in calls} == {(id(docs), 3)}, calls
    assert [k for k, _, _ in calls] == list("abccbaabccba"), calls
    print("selftest: ok")
    return 0


def compile_times():
    code = ("import time; t = time.perf_counter(); from curation.minhash import MinHasher; "
            "MinHasher(backend='numba').signatures(['one two three four five six']); "
            "MinHasher(backend='numba', family='oph').signatures(['one two three four five six']); "
            "print(time.perf_counter() - t)")
    out = []
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(REPO))
        for _ in range(2):
            r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                               cwd=REPO, check=True)
            out.append(float(r.stdout.strip().splitlines()[-1]))
    return out


def speed(args):
    import datasketch
    from curation.minhash import MinHasher

    k = args.num_perm
    compat = MinHasher.datasketch_compatible(num_perm=k, seed=1)
    perms = datasketch.MinHash(num_perm=k, seed=1).permutations
    ours = MinHasher(num_perm=k, seed=1, backend="numba")
    oph = MinHasher(num_perm=k, seed=1, backend="numba", family="oph")
    ours.signatures(["warm up the compiled loop"])
    oph.signatures(["warm up the compiled loop"])

    def ds_plain(docs):
        for t in docs:
            m = datasketch.MinHash(num_perm=k, seed=1)
            m.update_batch(compat.shingles(t))

    def ds_reused(docs):
        for t in docs:
            m = datasketch.MinHash(num_perm=k, seed=1, permutations=perms, scheme="affine32")
            m.update_batch(compat.shingles(t))

    sides = {"ds": ds_plain, "dsr": ds_reused, "ours": ours.signatures, "oph": oph.signatures}
    print(f"\n## Speed: signatures per second, one thread, num_perm={k}; every side signs the same "
          f"documents once per round, {args.rounds} rounds, median\n")
    print("| corpus | docs | mean chars | datasketch | datasketch, perms reused | ours (numba) "
          "| ratio (min-max over rounds) | ratio vs reused | ours, oph | oph ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for name in WEB:
        texts = [r["text"] for r in load(name, args.docs)]
        t = time_sides(sides, texts, args.rounds)
        rows = {key: [len(texts) / x for x in v] for key, v in t.items()}
        rows["r"] = [a / b for a, b in zip(t["ds"], t["ours"])]
        rows["rr"] = [a / b for a, b in zip(t["dsr"], t["ours"])]
        rows["ro"] = [a / b for a, b in zip(t["ds"], t["oph"])]
        med = {key: statistics.median(v) for key, v in rows.items()}
        summary[name] = med
        chars = sum(map(len, texts)) / len(texts)
        print(f"| {name.split('.')[0]} | {len(texts)} | {chars:.0f} | {med['ds']:,.0f} | {med['dsr']:,.0f} "
              f"| {med['ours']:,.0f} | **{med['r']:.1f}x** ({min(rows['r']):.0f}-{max(rows['r']):.0f}) "
              f"| {med['rr']:.1f}x | {med['oph']:,.0f} "
              f"| {med['ro']:.1f}x |")
    return summary


def accuracy(args):
    import datasketch
    from curation.minhash import MinHasher, estimate_jaccard

    k = args.num_perm
    truth = json.load(gzip.open(CORPORA / "neardup_dev_truth.json.gz"))
    texts = {r["id"]: r["text"] for r in load("neardup_dev.jsonl.gz")}
    pairs = [(a, b, j) for a, b, j in truth["pairs"] if a in texts and b in texts]
    ids = sorted({x for a, b, _ in pairs for x in (a, b)})
    pos = {d: i for i, d in enumerate(ids)}
    ia = np.array([pos[a] for a, _, _ in pairs])
    ib = np.array([pos[b] for _, b, _ in pairs])
    exact = np.array([j for _, _, j in pairs])
    docs = [texts[i] for i in ids]

    # our shingle sets reproduce the truth file's exact Jaccard (same definition)
    mh = MinHasher(num_perm=k)
    sets = [mh.shingle_hashes(t) for t in docs]
    ours_exact = np.array([np.intersect1d(sets[a], sets[b]).size / np.union1d(sets[a], sets[b]).size
                           for a, b in zip(ia, ib)])
    print(f"\n## Jaccard estimation: {len(pairs)} pairs of neardup_dev (exact J >= 0.3), "
          f"{len(ids)} documents, num_perm={k}\n")
    print(f"exact Jaccard of our 32-bit shingle-hash sets vs the truth file: "
          f"mean |diff| {np.abs(ours_exact - exact).mean():.2e}, max {np.abs(ours_exact - exact).max():.4f}\n")
    print("| seed | ours (minhash) MAE | ours (oph) MAE | datasketch MAE | ours - datasketch | "
          "oph - datasketch |")
    print("|---:|---:|---:|---:|---:|---:|")
    res = {"ours": [], "oph": [], "ds": []}
    bias = {"ours": [], "oph": [], "ds": []}
    sizes = np.array([s.size for s in sets])
    small = np.minimum(sizes[ia], sizes[ib]) < k          # OPH densifies these documents' bins
    small_res = {"ours": [], "oph": [], "ds": []}
    compat_checked = 0
    for seed in args.seeds:
        so = MinHasher(num_perm=k, seed=seed, backend="numba").signatures(docs)
        sp = MinHasher(num_perm=k, seed=seed, backend="numba", family="oph").signatures(docs)
        compat = MinHasher.datasketch_compatible(num_perm=k, seed=seed)
        perms = datasketch.MinHash(num_perm=k, seed=seed).permutations
        sd = np.empty((len(docs), k), dtype=np.uint32)
        for i, t in enumerate(docs):
            m = datasketch.MinHash(num_perm=k, seed=seed, permutations=perms, scheme="affine32")
            m.update_batch(compat.shingles(t))
            sd[i] = m.hashvalues
        # our datasketch-compatible signatures are datasketch's, bit for bit
        sample = docs[:200]
        assert np.array_equal(compat.signatures(sample), sd[:200]), "datasketch compatibility broke"
        compat_checked = len(sample)
        for key, sig in (("ours", so), ("oph", sp), ("ds", sd)):
            err = estimate_jaccard(sig[ia], sig[ib]) - exact
            res[key].append(np.abs(err).mean())
            bias[key].append(err.mean())
            small_res[key].append(np.abs(err[small]).mean() if small.any() else float("nan"))
        print(f"| {seed} | {res['ours'][-1]:.4f} | {res['oph'][-1]:.4f} | {res['ds'][-1]:.4f} "
              f"| {res['ours'][-1] - res['ds'][-1]:+.4f} | {res['oph'][-1] - res['ds'][-1]:+.4f} |")

    def ms(v):
        v = np.asarray(v)
        se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
        return f"{v.mean():.4f} ± {se:.4f}"
    d_ours = np.array(res["ours"]) - np.array(res["ds"])
    d_oph = np.array(res["oph"]) - np.array(res["ds"])
    print(f"| mean ± s.e. | {ms(res['ours'])} | {ms(res['oph'])} | {ms(res['ds'])} | {ms(d_ours)} "
          f"| {ms(d_oph)} |")
    print(f"\n{int(small.sum())} of the pairs have a document with fewer than {k} shingles (OPH fills "
          f"empty bins there); their MAE: ours {np.mean(small_res['ours']):.4f}, oph "
          f"{np.mean(small_res['oph']):.4f}, datasketch {np.mean(small_res['ds']):.4f}")
    print(f"mean signed error (bias): ours {np.mean(bias['ours']):+.4f}, oph {np.mean(bias['oph']):+.4f}, "
          f"datasketch {np.mean(bias['ds']):+.4f}; datasketch-compatible signatures checked bit for bit "
          f"against datasketch on the first {compat_checked} documents under each of the "
          f"{len(args.seeds)} seeds")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000,
                    help="documents per corpus (the first N), signed by every side (speed)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=list(range(1, 11)))
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--selftest", action="store_true", help="check the timing harness and exit")
    args = ap.parse_args()
    if args.selftest:
        return selftest()
    missing = [n for n in WEB + ("neardup_dev_truth.json.gz",) if not (CORPORA / n).exists()]
    if missing:
        print(f"skipped: {CORPORA} lacks {', '.join(missing)} (put ../shared/corpora beside the "
              f"repository or set CURATION_CORPORA)")
        return 0
    import datasketch
    import numba
    print(f"# bench_signatures: python {sys.version.split()[0]}, numpy {np.__version__}, "
          f"numba {numba.__version__}, datasketch {datasketch.__version__}; one thread")
    if not args.skip_speed:
        cold, warm = compile_times()
        print(f"\nfirst call in a fresh interpreter (import + tables + compiled loop): "
              f"{cold:.1f} s with an empty Numba cache, {warm:.1f} s with the cache written")
        speed(args)
    if not args.skip_accuracy:
        accuracy(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
