# C-level entry points of fastgrad._norm for the captured step (fastgrad/_plan.pyx): batch and layer
# norm's forward and backward, the C the eager ops run, one function over Cython's fused `floating`
# each (`_into`: the Python bindings have the plain names). No validation here: the caller passes
# valid contiguous buffers (x, y, dy, dx (n, d); gamma, beta, dgamma, dbeta (d,); layer norm's
# mean, invstd (n,), batch norm's (d,); acc 2 d doubles of scratch; dx may be NULL).
from cython cimport floating

cdef void layernorm_forward_into(const floating *x, const floating *gamma, const floating *beta,
                                 Py_ssize_t n, Py_ssize_t d, double eps, floating *y,
                                 floating *mean, floating *invstd) noexcept nogil
# batch norm (training): rm, rv (d,) updated in place unless NULL; acc d doubles
cdef void batchnorm_forward_into(const floating *x, const floating *gamma, const floating *beta,
                                 Py_ssize_t n, Py_ssize_t d, double eps, floating *y,
                                 floating *mean, floating *invstd, floating *rm, floating *rv,
                                 double momentum, double *acc) noexcept nogil
# the backward of batch norm (batch) or layer norm
cdef void norm_backward_into(bint batch, const floating *dy, const floating *x,
                             const floating *mean, const floating *invstd, const floating *gamma,
                             Py_ssize_t n, Py_ssize_t d, floating *dx, floating *dgamma,
                             floating *dbeta, double *acc) noexcept nogil
