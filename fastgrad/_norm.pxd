# C-level entry points of fastgrad._norm for the captured step (fastgrad/_plan.pyx): batch and layer
# norm's forward and backward, the C the eager ops run. No validation here: the caller passes valid
# contiguous buffers (x, y, dy, dx (n, d); gamma, beta, dgamma, dbeta (d,); mean, invstd (n,);
# acc 2 d doubles of scratch; dx may be NULL).

cdef void layernorm_forward_f32(const float *x, const float *gamma, const float *beta, Py_ssize_t n,
                                Py_ssize_t d, double eps, float *y, float *mean,
                                float *invstd) noexcept nogil
cdef void layernorm_forward_f64(const double *x, const double *gamma, const double *beta,
                                Py_ssize_t n, Py_ssize_t d, double eps, double *y, double *mean,
                                double *invstd) noexcept nogil
cdef void layernorm_backward_f32(const float *dy, const float *x, const float *mean,
                                 const float *invstd, const float *gamma, Py_ssize_t n, Py_ssize_t d,
                                 float *dx, float *dgamma, float *dbeta, double *acc) noexcept nogil
cdef void layernorm_backward_f64(const double *dy, const double *x, const double *mean,
                                 const double *invstd, const double *gamma, Py_ssize_t n,
                                 Py_ssize_t d, double *dx, double *dgamma, double *dbeta,
                                 double *acc) noexcept nogil

# batch norm (training): mean, invstd (d,); rm, rv (d,) updated in place unless NULL; acc d doubles
# (forward) or 2 d (backward)
cdef void batchnorm_forward_f32(const float *x, const float *gamma, const float *beta, Py_ssize_t n,
                                Py_ssize_t d, double eps, float *y, float *mean, float *invstd,
                                float *rm, float *rv, double momentum, double *acc) noexcept nogil
cdef void batchnorm_forward_f64(const double *x, const double *gamma, const double *beta,
                                Py_ssize_t n, Py_ssize_t d, double eps, double *y, double *mean,
                                double *invstd, double *rm, double *rv, double momentum,
                                double *acc) noexcept nogil
cdef void batchnorm_backward_f32(const float *dy, const float *x, const float *mean,
                                 const float *invstd, const float *gamma, Py_ssize_t n, Py_ssize_t d,
                                 float *dx, float *dgamma, float *dbeta, double *acc) noexcept nogil
cdef void batchnorm_backward_f64(const double *dy, const double *x, const double *mean,
                                 const double *invstd, const double *gamma, Py_ssize_t n,
                                 Py_ssize_t d, double *dx, double *dgamma, double *dbeta,
                                 double *acc) noexcept nogil
