"""The CUDA path: word boundaries are found on the host (the compiled tokenizer),
then word hashes, shingle hashes (the reference's own xp code on CuPy arrays) and
the permutation-min kernel run on the device; only signatures come back."""
from __future__ import annotations

import numpy as np

from curation.minhash import reference as ref

_KERNEL_SRC = r"""
extern "C" __global__
void perm_min(const unsigned int* sh, const long long* offs, const unsigned int* a,
              const unsigned int* b, unsigned int* out, int k) {
    int d = blockIdx.x;
    long long s = offs[d], e = offs[d + 1];
    for (int p = threadIdx.x; p < k; p += blockDim.x) {
        unsigned int ap = a[p], bp = b[p], m = 0xFFFFFFFFu;
        for (long long i = s; i < e; ++i) {
            unsigned int v = ap * sh[i] + bp;   // wraps mod 2^32, as in the reference
            m = v < m ? v : m;
        }
        out[(long long)d * k + p] = m;
    }
}
"""

_kernel = None


def cupy_available() -> bool:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _perm_kernel():
    global _kernel
    if _kernel is None:
        import cupy
        _kernel = cupy.RawKernel(_KERNEL_SRC, "perm_min")
    return _kernel


def signatures_device(word_bytes, starts, lens, doc_word_offsets, ngram, a, b):
    """Host arrays in, host (n, K) uint32 signatures and shingle counts out."""
    import cupy as cp
    n, k = len(doc_word_offsets) - 1, len(a)
    wh = ref.word_hashes(cp, cp.asarray(word_bytes), cp.asarray(starts), cp.asarray(lens))
    start, length, _, per_doc = ref.shingle_layout(np.asarray(doc_word_offsets), ngram)
    sh = ref.shingle_hashes(cp, wh, cp.asarray(start), cp.asarray(length), ngram)
    offs = cp.asarray(np.concatenate([[0], np.cumsum(per_doc)]).astype(np.int64))
    out = cp.empty((n, k), dtype=cp.uint32)
    if n:
        threads = min(256, max(32, k))
        _perm_kernel()((n,), (threads,), (sh, offs, cp.asarray(a), cp.asarray(b), out, np.int32(k)))
    return cp.asnumpy(out), per_doc
