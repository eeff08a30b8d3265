# C-level entry points of fastgrad._kernels for the other extension modules (`from
# fastgrad._kernels cimport ...`). The fused passes of the affine layer (csrc/affine.c) are
# compiled into this module, beside the thread setting (fg_num_threads) and the elementwise
# gates they share their activations with; fastgrad._linalg calls them around its BLAS products.
# No validation here: callers pass valid contiguous buffers (see csrc/affine.h).

cdef void bias_act_forward_f32(float *z, const float *b, float *y, Py_ssize_t n, Py_ssize_t m,
                               int act, float param) noexcept nogil
cdef void bias_act_forward_f64(double *z, const double *b, double *y, Py_ssize_t n, Py_ssize_t m,
                               int act, double param) noexcept nogil
cdef void act_backward_colsum_f32(const float *dy, const float *s, float *dz, float *db,
                                  Py_ssize_t n, Py_ssize_t m, int act, float param) noexcept nogil
cdef void act_backward_colsum_f64(const double *dy, const double *s, double *dz, double *db,
                                  Py_ssize_t n, Py_ssize_t m, int act, double param) noexcept nogil

# the losses of csrc/losses.h (the same C the eager ops run), for the captured step: the mean loss
# returned, the gradient into grad__nc unless NULL, per-example losses into loss__n (n doubles)
cdef double softmax_ce_f32(const float *scores, const Py_ssize_t *labels, Py_ssize_t n, Py_ssize_t c,
                           float *grad, double *loss_n) noexcept nogil
cdef double softmax_ce_f64(const double *scores, const Py_ssize_t *labels, Py_ssize_t n, Py_ssize_t c,
                           double *grad, double *loss_n) noexcept nogil
cdef double svm_f32(const float *scores, const Py_ssize_t *labels, Py_ssize_t n, Py_ssize_t c,
                    float delta, float *grad, double *loss_n) noexcept nogil
# maxout (csrc/routing.h): y (n, h) and idx (n, h) from z (n, h p); dz (n, h p), zeroed first,
# gets dy where idx points
cdef void maxout_forward_f32(const float *z, Py_ssize_t n, Py_ssize_t h, Py_ssize_t p, float *y,
                             Py_ssize_t *idx) noexcept nogil
cdef void maxout_forward_f64(const double *z, Py_ssize_t n, Py_ssize_t h, Py_ssize_t p, double *y,
                             Py_ssize_t *idx) noexcept nogil
cdef void maxout_backward_f32(const float *dy, const Py_ssize_t *idx, Py_ssize_t n, Py_ssize_t h,
                              Py_ssize_t p, float *dz) noexcept nogil
cdef void maxout_backward_f64(const double *dy, const Py_ssize_t *idx, Py_ssize_t n, Py_ssize_t h,
                              Py_ssize_t p, double *dz) noexcept nogil
cdef double svm_f64(const double *scores, const Py_ssize_t *labels, Py_ssize_t n, Py_ssize_t c,
                    double delta, double *grad, double *loss_n) noexcept nogil

# the elementwise gates (csrc/elementwise.h) by number: 0 relu, 1 leaky_relu (param the slope),
# 2 elu (param alpha), 3 sigmoid, 4 tanh; backward reads s = y (relu, sigmoid, tanh) or x
cdef void gate_forward_f32(int gate, const float *x, float *y, Py_ssize_t n, float param) noexcept nogil
cdef void gate_forward_f64(int gate, const double *x, double *y, Py_ssize_t n, double param) noexcept nogil
cdef void gate_backward_f32(int gate, const float *dy, const float *s, float *dx, Py_ssize_t n,
                            float param) noexcept nogil
cdef void gate_backward_f64(int gate, const double *dy, const double *s, double *dx, Py_ssize_t n,
                            double param) noexcept nogil
