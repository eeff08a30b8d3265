# C-level entry point of fastgrad._linalg for the other extension modules (`from fastgrad._linalg
# cimport gemm`): the product every matmul and affine op runs, so that a captured step
# (fastgrad/_plan.pyx) computes each product with the same blocks, BLAS calls and thread choice
# as the eager op, bit for bit. No validation here: callers pass valid contiguous buffers.
from cython cimport floating

# row-major C (m, n) := op(A) op(B), op(A) (m, k), op(B) (k, n), op(X) = X^T where the flag is
# set; A, B, C C-contiguous; m, n, k > 0 and below 2^31; float or double (Cython's fused type)
cdef void gemm(bint ta, bint tb, int m, int n, int k, const floating *A, const floating *B,
               floating *C) noexcept nogil
