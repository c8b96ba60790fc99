"""Exact integer matrix products on float32 BLAS (the CPU backend's GEMM).

numpy's integer matmul does not use BLAS (a few GOP/s); float32 matmul does (about
100x faster). It is exact on integer operands under a bound, whatever the BLAS does:

  Claim. Let A, W hold integers with |A| <= a_max, and split the reduction axis into
  chunks such that a_max * sum_{k in chunk} |W[m, k]| <= 2^24 for every row m.
  Then the float32 matmul of each chunk is the exact integer result.
  Proof. Every value a float32 GEMM forms for output (m, p) (a product, a partial sum,
  an FMA a*b+c) is, exactly, a sum of a subset of the terms A[k, p] * W[m, k] of the
  chunk, given exact inputs (GEMMs form sums of products; a Strassen-like scheme
  would not, and no BLAS uses one for sgemm). Such a value is an integer of magnitude at most
  sum_k |A[k, p]| |W[m, k]| <= a_max * sum_k |W[m, k]| <= 2^24, and float32 represents
  every integer up to 2^24 exactly, so the rounding of each operation returns its
  exact value; by induction every operation is exact. This holds in any summation
  order, blocking, vectorisation or thread split, with or without FMA.
The chunk results are then added in float64, exact below 2^53 (the load-time
overflow proof gives |acc| < 2^31).

Why not one float64 GEMM (exact without chunks, since |acc| < 2^31 < 2^53)? Measured
on ResNet-50's shapes (2-core AVX-512 EPYC, OpenBLAS): float32 in 1 to 5 chunks ran
2.0x to 2.7x faster than a single float64 GEMM.

The bound uses the weights' actual per-row sums sum_k |W[m, k]| (not K * max|W|), so
chunks are as long as the layer allows: one chunk for most layers, a few for the
longest reductions. a_max is the int8 range around the zero point,
max(|-128 - z|, |127 - z|) <= 255, fixed per layer at load.
"""
import numpy as np

F32_EXACT = 1 << 24  # float32 holds every integer of magnitude <= 2^24


def chunk_splits(w, a_max, slab=1024):
    """Split points [0, k_1, ..., K] of the reduction (last) axis of integer W (..., K):
    greedy longest chunks with a_max * sum_{k in chunk} |W[r, k]| <= 2^24 for every row r
    (all leading axes are rows). Reads W in slabs of ``slab`` columns: little memory.
    """
    w = np.asarray(w)
    w = w.reshape(-1, w.shape[-1])
    K = w.shape[1]
    if a_max == 0:
        return [0, K]
    limit = F32_EXACT // int(a_max)
    splits, run, k = [0], np.zeros(w.shape[0], np.int64), 0  # run: row sums of the chunk
    while k < K:
        sums = run + np.cumsum(np.abs(w[:, k:k + slab].astype(np.int64)), axis=1).T
        # the largest row sum of the chunk grows with its end: the first one beyond the
        # limit ends the chunk
        n = int(np.searchsorted(sums.max(axis=1), limit, side="right"))
        if n == len(sums):
            run, k = sums[-1], k + n
            continue
        if n == 0 and k == splits[-1]:
            raise ValueError(f"a single term {a_max} * {sums[0].max()} exceeds 2^24: "
                             "no exact float32 chunk")
        splits.append(k + n)
        run, k = np.zeros_like(run), k + n
    if splits[-1] != K:
        splits.append(K)
    return splits


class ExactGemm:
    """A constant integer matrix W (G, M, K), prepared once for exact products W @ A.

    A holds integers with |A| <= a_max, given as float32 (..., G, K, P); the result
    is rounded to float32 exactly once: f32(bias + W @ A), the value the
    requantization rule starts from (docs/SPEC.md, step 1).
    """

    def __init__(self, w, a_max, bias=None):
        w = np.asarray(w)
        self.w = np.ascontiguousarray(w, dtype=np.float32)
        G, M, K = w.shape
        self.splits = chunk_splits(w, a_max)
        self.bias = None if bias is None else np.asarray(bias, np.int64).reshape(G, M, 1)
        # a bias exact in float32 joins a one-chunk result in a single float32 addition
        self.bias32 = None
        if self.bias is not None and np.all(np.abs(self.bias) <= F32_EXACT):
            self.bias32 = self.bias.astype(np.float32)

    def _chunk(self, a, i, out=None):
        k0, k1 = self.splits[i], self.splits[i + 1]
        return np.matmul(self.w[..., k0:k1], a[..., k0:k1, :], out=out)

    def exact(self, a):
        """The exact integers bias + W @ A, float64 (float32 when a single chunk and no bias)."""
        acc = self._chunk(a, 0)
        if len(self.splits) == 2 and self.bias is None:
            return acc
        total = acc.astype(np.float64)
        for i in range(1, len(self.splits) - 1):
            total += self._chunk(a, i, out=acc)
        if self.bias is not None:
            total += self.bias
        return total

    def rounded(self, a):
        """f32(bias + W @ A): the exact integer rounded once to float32 (ties to even)."""
        if len(self.splits) == 2 and (self.bias is None or self.bias32 is not None):
            acc = self._chunk(a, 0)  # exact, |acc| <= 2^24
            if self.bias32 is not None:
                acc += self.bias32  # one IEEE addition of two exact values: f32(acc + bias)
            return acc
        return self.exact(a).astype(np.float32)  # float64 is exact: a single rounding


def exact_matmul(a, b, a_max=None):
    """Exact int64 a @ b for integer a (..., M, K) and b (K, N), through float32 BLAS.

    ``a_max`` bounds |a| (computed from ``a`` when None); |a|, |b| <= 2^24.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a_max is None:
        a_max = int(np.abs(a.astype(np.int64)).max(initial=0))
    gemm = ExactGemm(b.T[None], a_max)  # W = b^T as the left operand: (a @ b)^T = b^T @ a^T
    at = np.swapaxes(a, -1, -2).astype(np.float32)[..., None, :, :]
    return np.swapaxes(gemm.exact(at)[..., 0, :, :], -1, -2).astype(np.int64)
