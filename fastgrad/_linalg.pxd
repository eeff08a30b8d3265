# C-level entry point of fastgrad._linalg for the other extension modules (`from fastgrad._linalg
# cimport gemm_f32`): the product every matmul and affine op runs, so that a captured step
# (fastgrad/_plan.pyx) computes each product with the same blocks, BLAS calls and thread choice
# as the eager op, bit for bit. No validation here: callers pass valid contiguous buffers.

# row-major C (m, n) := op(A) op(B), op(A) (m, k), op(B) (k, n), op(X) = X^T where the flag is
# set; A, B, C C-contiguous; m, n, k > 0 and below 2^31
cdef void gemm_f32(bint ta, bint tb, int m, int n, int k, const float *A, const float *B,
                   float *C) noexcept nogil
cdef void gemm_f64(bint ta, bint tb, int m, int n, int k, const double *A, const double *B,
                   double *C) noexcept nogil
