"""The CUDA path: the host normalises (cpu.normalize_batch, the same compiled
tokenizer as the CPU path), then CUDA kernels find the tokens, hash the tokens and
the shingles and take the permutation minima on the device; only the signatures
and shingle counts come back.

The kernels are plain CUDA C with grid-stride loops and no shared memory or block
synchronisation. One uses an atomic: mh_oph_bins takes each OPH bin's minimum with
atomicMin (and sets the bin's `filled` flag, which every writer sets to 1). A
minimum does not depend on the order of its updates, so any launch shape gives the
same result. That lets the tests also compile this very source as C++ (atomicMin
as a plain compare-and-store, the emulation running one thread at a time) and run
`device_signatures` with NumPy arrays and an emulated launch on a machine without
a GPU; on a machine with one, the same function runs on CuPy arrays and
`cupy.RawModule`, and the tests compare both with reference.py bit for bit.

Because a user's GPU is not the test machine, the first use of each device in a
process runs a self-check (`device_problem`): the reference on NumPy and the kernels
on a small fixed batch, compared bit for bit. `choose_backend` falls back to the
compiled CPU path with a warning when they differ (backend "auto") or refuses
(backend "cupy"); docs/gpu.md describes it.
"""
from __future__ import annotations

import threading
import warnings

import numpy as np

from curation.minhash import reference as ref

KERNEL_SOURCE = r"""
typedef unsigned long long u64;
typedef unsigned int u32;
typedef long long i64;

#define MH_P1 0x9E3779B97F4A7C15ULL
#define MH_P2 0xC2B2AE3D27D4EB4FULL
#define MH_M1 0xFF51AFD7ED558CCDULL
#define MH_M2 0xC4CEB9FE1A85EC53ULL

__device__ __forceinline__ u64 mh_fmix64(u64 x) {
    x ^= x >> 33;
    x *= MH_M1;
    x ^= x >> 33;
    x *= MH_M2;
    x ^= x >> 33;
    return x;
}

/* is byte i part of a token: word mode, any byte but the separating space */
__device__ __forceinline__ int mh_is_tok(const unsigned char* norm, i64 i, int char_mode) {
    return char_mode ? 1 : (norm[i] != 0x20);
}

/* does a token start at byte i (first[i]: a document starts at i) */
__device__ __forceinline__ int mh_starts(const unsigned char* norm, const unsigned char* first,
                                         i64 i, int char_mode) {
    if (char_mode) return (norm[i] & 0xC0) != 0x80;
    if (norm[i] == 0x20) return 0;
    return i == 0 || first[i] || norm[i - 1] == 0x20;
}

/* flags: 1 where a token starts, 2 where one ends (both for a one-byte token) */
extern "C" __global__ void mh_mark_tokens(const unsigned char* __restrict__ norm,
                                          const unsigned char* __restrict__ first,
                                          i64 size, int char_mode,
                                          unsigned char* __restrict__ starts,
                                          unsigned char* __restrict__ ends) {
    i64 stride = (i64)blockDim.x * gridDim.x;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < size; i += stride) {
        int tok = mh_is_tok(norm, i, char_mode);
        starts[i] = (unsigned char)mh_starts(norm, first, i, char_mode);
        int last = i + 1 == size || first[i + 1] || !mh_is_tok(norm, i + 1, char_mode)
                   || mh_starts(norm, first, i + 1, char_mode);
        ends[i] = (unsigned char)(tok && last);
    }
}

/* one thread per token: w = fmix64(sum_j fmix64(((c_j+1)*P1) ^ ((j+1)*P2))) */
extern "C" __global__ void mh_token_hashes(const unsigned char* __restrict__ norm,
                                           const i64* __restrict__ starts,
                                           const i64* __restrict__ ends,
                                           i64 ntok, u64* __restrict__ wh) {
    i64 stride = (i64)blockDim.x * gridDim.x;
    for (i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x; t < ntok; t += stride) {
        i64 s = starts[t];
        i64 len = ends[t] - s + 1;
        u64 acc = 0;
        for (i64 j = 0; j < len; ++j) {
            u64 c = (u64)norm[s + j];
            acc += mh_fmix64(((c + 1ULL) * MH_P1) ^ (((u64)j + 1ULL) * MH_P2));
        }
        wh[t] = mh_fmix64(acc);
    }
}

/* the document of shingle s: the d with sh_off[d] <= s < sh_off[d + 1] */
__device__ __forceinline__ i64 mh_doc_of(const i64* sh_off, i64 ndocs, i64 s) {
    i64 lo = 0, hi = ndocs;
    while (lo < hi) {
        i64 mid = (lo + hi) >> 1;
        if (sh_off[mid + 1] <= s) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* one thread per shingle: s = fmix64(sum_{k<m} w_{start+k} * C_k) >> 32 */
extern "C" __global__ void mh_shingle_hashes(const u64* __restrict__ wh,
                                             const i64* __restrict__ tok_off,
                                             const i64* __restrict__ sh_off,
                                             i64 ndocs, i64 nsh, int ngram,
                                             const u64* __restrict__ coef,
                                             u32* __restrict__ sh) {
    i64 stride = (i64)blockDim.x * gridDim.x;
    for (i64 s = (i64)blockIdx.x * blockDim.x + threadIdx.x; s < nsh; s += stride) {
        i64 lo = mh_doc_of(sh_off, ndocs, s);
        i64 cnt = tok_off[lo + 1] - tok_off[lo];
        i64 m = cnt < (i64)ngram ? cnt : (i64)ngram;
        i64 first = tok_off[lo] + (s - sh_off[lo]);
        u64 acc = 0;
        for (i64 k = 0; k < m; ++k) acc += wh[first + k] * coef[k];
        sh[s] = (u32)(mh_fmix64(acc) >> 32);
    }
}

/* blocks over documents, threads over permutations:
   out[d, p] = min over the document's shingles of a[p] * s + b[p] (mod 2^32) */
extern "C" __global__ void mh_perm_min(const u32* __restrict__ sh,
                                       const i64* __restrict__ sh_off,
                                       i64 ndocs, const u32* __restrict__ a,
                                       const u32* __restrict__ b, int k,
                                       u32* __restrict__ out) {
    for (i64 d = blockIdx.x; d < ndocs; d += gridDim.x) {
        i64 s0 = sh_off[d], s1 = sh_off[d + 1];
        for (int p = threadIdx.x; p < k; p += blockDim.x) {
            u32 ap = a[p], bp = b[p], best = 0xFFFFFFFFu;
            for (i64 t = s0; t < s1; ++t) {
                u32 v = ap * sh[t] + bp;        /* unsigned: wraps mod 2^32 */
                best = v < best ? v : best;
            }
            out[d * (i64)k + p] = best;
        }
    }
}

/* "oph", step 1, one thread per shingle: v = a * s + b falls in bin v * k >> 32 of
   its document; raw[d, bin] = min of its v (raw starts all 0xFFFFFFFF) */
extern "C" __global__ void mh_oph_bins(const u32* __restrict__ sh,
                                       const i64* __restrict__ sh_off,
                                       i64 ndocs, i64 nsh, u32 a, u32 b, int k,
                                       u32* __restrict__ raw,
                                       unsigned char* __restrict__ filled) {
    i64 stride = (i64)blockDim.x * gridDim.x;
    for (i64 s = (i64)blockIdx.x * blockDim.x + threadIdx.x; s < nsh; s += stride) {
        i64 d = mh_doc_of(sh_off, ndocs, s);
        u32 v = a * sh[s] + b;                  /* unsigned: wraps mod 2^32 */
        i64 cell = d * (i64)k + (i64)(((u64)v * (u64)k) >> 32);
        atomicMin(raw + cell, v);
        filled[cell] = 1;
    }
}

/* "oph", step 2, one thread per (document, bin): an empty bin copies the first
   filled bin among its probes, then among the next bins (mod k) */
extern "C" __global__ void mh_oph_densify(const u32* __restrict__ raw,
                                          const unsigned char* __restrict__ filled,
                                          i64 ndocs, int k, const i64* __restrict__ probes,
                                          int nprobes, u32* __restrict__ out) {
    i64 cells = ndocs * (i64)k;
    i64 stride = (i64)blockDim.x * gridDim.x;
    for (i64 c = (i64)blockIdx.x * blockDim.x + threadIdx.x; c < cells; c += stride) {
        i64 base = c - c % k;
        i64 p = c - base;
        if (filled[c]) { out[c] = raw[c]; continue; }
        i64 src = -1;
        for (int t = 0; t < nprobes && src < 0; ++t) {
            i64 j = probes[p * nprobes + t];
            if (filled[base + j]) src = j;
        }
        for (i64 dd = 1; dd < k && src < 0; ++dd) {
            i64 j = (p + dd) % k;
            if (filled[base + j]) src = j;
        }
        out[c] = src < 0 ? 0xFFFFFFFFu : raw[base + src];
    }
}
"""

KERNEL_NAMES = ("mh_mark_tokens", "mh_token_hashes", "mh_shingle_hashes", "mh_perm_min", "mh_oph_bins",
                "mh_oph_densify")
_THREADS = 256
_MAX_BLOCKS = 8192


def _blocks(items: int) -> int:
    return max(1, min(_MAX_BLOCKS, -(-items // _THREADS)))


def device_signatures(xp, launch, norm, doc_offsets, ngram: int, char_ngrams: bool, a, b,
                      family: str = "minhash", probes=None):
    """Signatures of the normalised bytes `norm` (n+1 `doc_offsets`), with the
    kernels launched by `launch(name, grid, block, args)`; `xp` is CuPy on a GPU
    (NumPy in the CPU emulation of the tests). a, b (and probes for "oph") are the
    host arrays of reference.permutation_params / oph_params. Returns (sig (n, K)
    uint32, shingle counts (n,) int64), on `xp`."""
    oph = family == "oph"
    a_host, b_host = np.asarray(a, dtype=np.uint32), np.asarray(b, dtype=np.uint32)
    norm = xp.asarray(norm, dtype=xp.uint8)
    doc_offsets = xp.asarray(doc_offsets, dtype=xp.int64)
    a = xp.asarray(a_host)
    b = xp.asarray(b_host)
    k = int(probes.shape[0]) if oph else int(a.shape[0])
    n, size = int(doc_offsets.shape[0]) - 1, int(norm.shape[0])
    out = xp.full((n, k), ref.EMPTY, dtype=xp.uint32)
    if size == 0 or n == 0:
        return out, xp.zeros(n, dtype=xp.int64)
    first = xp.zeros(size + 1, dtype=xp.uint8)
    first[doc_offsets] = 1
    starts_f = xp.empty(size, dtype=xp.uint8)
    ends_f = xp.empty(size, dtype=xp.uint8)
    launch("mh_mark_tokens", _blocks(size), _THREADS,
           (norm, first, np.int64(size), np.int32(bool(char_ngrams)), starts_f, ends_f))
    starts = xp.flatnonzero(starts_f).astype(xp.int64)
    ends = xp.flatnonzero(ends_f).astype(xp.int64)
    ntok = int(starts.shape[0])
    tok_off = xp.searchsorted(starts, doc_offsets, side="left").astype(xp.int64)
    counts = tok_off[1:] - tok_off[:-1]
    per_doc = xp.where(counts >= ngram, counts - (ngram - 1), xp.minimum(counts, 1)).astype(xp.int64)
    sh_off = xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(per_doc).astype(xp.int64)])
    nsh = int(sh_off[-1])
    if nsh == 0:
        return out, per_doc
    wh = xp.empty(ntok, dtype=xp.uint64)
    launch("mh_token_hashes", _blocks(ntok), _THREADS, (norm, starts, ends, np.int64(ntok), wh))
    sh = xp.empty(nsh, dtype=xp.uint32)
    coef = xp.asarray(ref.SHINGLE_C)
    launch("mh_shingle_hashes", _blocks(nsh), _THREADS,
           (wh, tok_off, sh_off, np.int64(n), np.int64(nsh), np.int32(ngram), coef, sh))
    if oph:
        raw = xp.full((n, k), ref.EMPTY, dtype=xp.uint32)
        filled = xp.zeros((n, k), dtype=xp.uint8)
        launch("mh_oph_bins", _blocks(nsh), _THREADS,
               (sh, sh_off, np.int64(n), np.int64(nsh), np.uint32(a_host[0]), np.uint32(b_host[0]),
                np.int32(k), raw, filled))
        probes = xp.asarray(np.ascontiguousarray(probes, dtype=np.int64))
        launch("mh_oph_densify", _blocks(n * k), _THREADS,
               (raw, filled, np.int64(n), np.int32(k), probes, np.int32(probes.shape[1]), out))
        return out, per_doc
    threads = min(_THREADS, max(32, -(-k // 32) * 32))
    launch("mh_perm_min", max(1, min(n, 65535)), threads,
           (sh, sh_off, np.int64(n), a, b, np.int32(k), out))
    return out, per_doc


_MODULE = None


def cupy_available() -> bool:
    """CuPy importable and at least one CUDA device visible."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _cupy_launch(name, grid, block, args):
    global _MODULE
    import cupy
    if _MODULE is None:
        _MODULE = cupy.RawModule(code=KERNEL_SOURCE)
    _MODULE.get_function(name)((int(grid),), (int(block),), args)


def signatures(norm, doc_offsets, ngram: int, char_ngrams: bool, a, b, family="minhash", probes=None):
    """Host arrays in, host (signatures, shingle counts) out; the work on the GPU."""
    import cupy
    sig, counts = device_signatures(cupy, _cupy_launch, cupy.asarray(norm), cupy.asarray(doc_offsets),
                                    ngram, char_ngrams, a, b, family, probes)
    return cupy.asnumpy(sig), cupy.asnumpy(counts)


# -- the self-check on first use of a device

class GpuSelfCheckError(RuntimeError):
    """The CUDA kernels disagree with the reference on this device (backend "cupy")."""


# Each mode the kernels have, all six kernels: word and character shingles, n-grams
# shorter than, equal to and longer than some documents, both families; "oph" with
# more bins than a short document has shingles (densification) and many shingles
# per bin in the long documents (atomicMin under contention).
SELF_CHECK_MODES = (
    dict(family="minhash", ngram=5, char_ngrams=False, num_perm=64, seed=1),
    dict(family="minhash", ngram=1, char_ngrams=False, num_perm=16, seed=2),
    dict(family="minhash", ngram=3, char_ngrams=True, num_perm=32, seed=3),
    dict(family="oph", ngram=2, char_ngrams=False, num_perm=256, seed=4),
    dict(family="oph", ngram=4, char_ngrams=True, num_perm=64, seed=5),
)
_WORDS = ("the", "a", "of", "quick", "brown", "fox", "straße", "naïve", "über", "ǆemal", "σας", "日本語",
          "テキスト", "한국어", "😀", "x_y", "42", "data", "ﬃ", "i̇stanbul")


def self_check_texts() -> list[str]:
    """The fixed batch: edge cases, then pseudo-random documents (a fixed LCG over a
    mixed-script vocabulary) long enough to span many thread blocks."""
    from curation.minhash.text import normalize
    texts = ["", " ", "!!!", "one", "two words", "a b c d", "a b c d e", "Straße ǅemal ΣΑΣ İstanbul",
             "emoji 😀 🎉🎉 ok", "日本語のテキスト 中文 한국어", "x" * 700]
    state = 0x2545F4914F6CDD1D
    for n in (3, 9, 40, 300, 2500):
        words = []
        for _ in range(n):
            state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            words.append(_WORDS[(state >> 33) % len(_WORDS)])
        texts.append(" ".join(words))
    texts.append(texts[-2] + " and a tail")          # a near duplicate
    return [normalize(t) for t in texts]


def _mode_label(mode: dict) -> str:
    unit = "character" if mode["char_ngrams"] else "word"
    return f"{mode['family']}, {unit} {mode['ngram']}-grams, num_perm={mode['num_perm']}"


def compare_outputs(name: str, got, want) -> str | None:
    """None when `got` (the kernels') equals `want` (the reference's) bit for bit,
    else which positions differ: how many, the first index, both values there."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or got.dtype != want.dtype:
        return (f"{name}: the kernels gave {got.dtype} {tuple(got.shape)}, "
                f"the reference {want.dtype} {tuple(want.shape)}")
    diff = got != want
    count = int(np.count_nonzero(diff))
    if count == 0:
        return None
    first = tuple(int(i) for i in np.argwhere(diff)[0])
    return (f"{name}: {count} of {diff.size} positions differ, first at index {list(first)}: "
            f"kernels {got[first].item()!r}, reference {want[first].item()!r}")


def self_check(run_kernels=None) -> str | None:
    """Run the NumPy reference and the kernels on the fixed batch in every mode of
    SELF_CHECK_MODES. None when they agree bit for bit, else what differs (or how the
    kernels failed). `run_kernels` has the signature of `signatures` (the CuPy path,
    the default); the tests pass others to check this decision on a CPU."""
    run = signatures if run_kernels is None else run_kernels
    parts = [t.encode("utf-8") for t in self_check_texts()]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    norm = np.frombuffer(b"".join(parts), dtype=np.uint8)
    problems = []
    for mode in SELF_CHECK_MODES:
        k, seed = mode["num_perm"], mode["seed"]
        if mode["family"] == "oph":
            a, b, probes = ref.oph_params(k, seed)
        else:
            (a, b), probes = ref.permutation_params(k, seed), np.zeros((k, 0), dtype=np.int64)
        args = (mode["ngram"], mode["char_ngrams"], a, b, mode["family"], probes)
        want_sig, want_counts = ref.signatures(np, norm, offsets, *args)
        label = _mode_label(mode)
        try:
            got_sig, got_counts = run(norm.copy(), offsets.copy(), *args)
        except Exception as e:          # a compile or launch failure is a failed check too
            problems.append(f"{label}: the kernels failed: {type(e).__name__}: {e}")
            continue
        for name, got, want in (("signatures", got_sig, want_sig), ("shingle counts", got_counts, want_counts)):
            found = compare_outputs(f"{name} ({label})", got, want)
            if found:
                problems.append(found)
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more outputs differ)" if len(problems) > 1 else ""
    return problems[0] + more


_CHECKED: dict = {}          # CUDA device id -> self_check()'s verdict, for this process
_CHECK_LOCK = threading.Lock()


def current_device() -> int:
    import cupy
    return int(cupy.cuda.runtime.getDevice())


def device_problem(device: int | None = None, run_kernels=None, cache: dict | None = None) -> str | None:
    """The self-check's verdict for `device` (default: the current CUDA device, on
    which the check runs), computed on its first use and remembered per process."""
    cache = _CHECKED if cache is None else cache
    device = current_device() if device is None else device
    with _CHECK_LOCK:
        if device not in cache:
            cache[device] = self_check(run_kernels)
        return cache[device]


def choose_backend(requested: str, available: bool | None = None, device: int | None = None,
                   run_kernels=None, cache: dict | None = None) -> str:
    """"cupy" or "numba" for a requested "auto" or "cupy": the CUDA path when CuPy
    sees a device and the device passed its self-check; under "auto" otherwise the
    compiled CPU path (with a warning when the self-check failed); under "cupy" an
    error. `available` (default: cupy_available()), `device`, `run_kernels` and
    `cache` are there so the tests can run this decision on a CPU."""
    if not (cupy_available() if available is None else available):
        if requested == "cupy":
            raise RuntimeError("backend='cupy' needs CuPy and a CUDA device, and none was found "
                               "(install the 'gpu' extra on a machine with a GPU, or use "
                               "backend='numba' or 'auto')")
        return "numba"
    device = current_device() if device is None else device
    problem = device_problem(device, run_kernels, cache)
    if problem is None:
        return "cupy"
    what = (f"the CUDA kernels disagree with the NumPy reference on CUDA device {device} "
            f"in the self-check: {problem}")
    if requested == "cupy":
        raise GpuSelfCheckError(f"backend='cupy': {what}; use backend='numba' (or 'auto', "
                                "which falls back to it)")
    warnings.warn(f"{what}; using the compiled CPU path (backend 'numba') instead", RuntimeWarning,
                  stacklevel=3)
    return "numba"


def require_checked_device() -> None:
    """Before a batch goes to the GPU: the current device passed its self-check (it
    may not be the device the MinHasher was made on)."""
    problem = device_problem()
    if problem is not None:
        raise GpuSelfCheckError(f"the CUDA kernels disagree with the NumPy reference on CUDA device "
                                f"{current_device()} in the self-check: {problem}; use backend='numba'")
