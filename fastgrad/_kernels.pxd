# C-level entry points of fastgrad._kernels for the other extension modules (`from
# fastgrad._kernels cimport ...`): the tape (fastgrad/_tape.pyx) calls the gates on small tensors,
# fastgrad._linalg the fused passes of the affine layer around its products, and the captured
# step (fastgrad/_plan.pyx) all of them. Each is one function over Cython's fused `floating`
# (float or double: the call's pointer types pick the C kernel), writing into the buffers it is
# given. No validation here: callers pass valid contiguous buffers of n elements (the Python
# bindings in _kernels.pyx check theirs once, then call these same functions).
from cython cimport floating

# the gates (csrc/elementwise.h) by activation code (enum fg_activation, `_linalg.ACTIVATIONS`):
# y = f(x); dx = f'(.) dy from s = y (relu, sigmoid, tanh) or s = x (leaky_relu, elu), p the
# activation's parameter (the slope, alpha) or 0; dx must not alias dy or s
cdef void gate_forward(int act, const floating *x, floating *y, Py_ssize_t n,
                       floating p) noexcept nogil
cdef void gate_backward(int act, const floating *dy, const floating *s, floating *dx, Py_ssize_t n,
                        floating p) noexcept nogil

# the fused passes of the affine layer (csrc/affine.h): y = act(z + b) (z (n, m) updated to
# z + b when the activation's derivative reads its input), and dz = act'(.) dy with db the column
# sums of dz
cdef void bias_act_forward(floating *z, const floating *b, floating *y, Py_ssize_t n, Py_ssize_t m,
                           int act, floating p) noexcept nogil
cdef void act_backward_colsum(const floating *dy, const floating *s, floating *dz, floating *db,
                              Py_ssize_t n, Py_ssize_t m, int act, floating p) noexcept nogil

# the losses of csrc/losses.h: the mean loss returned, the gradient into grad (n, c) unless NULL,
# per-example losses into loss_n (n doubles); labels n values in [0, c)
cdef double softmax_ce(const floating *scores, const Py_ssize_t *labels, Py_ssize_t n, Py_ssize_t c,
                       floating *grad, double *loss_n) noexcept nogil
cdef double svm(const floating *scores, const Py_ssize_t *labels, Py_ssize_t n, Py_ssize_t c,
                floating delta, floating *grad, double *loss_n) noexcept nogil

# maxout (csrc/routing.h; `_into` as the bindings have the plain names): y (n, h) and idx (n, h)
# from z (n, h p); dz (n, h p), zeroed first, gets dy where idx points
cdef void maxout_forward_into(const floating *z, Py_ssize_t n, Py_ssize_t h, Py_ssize_t p,
                              floating *y, Py_ssize_t *idx) noexcept nogil
cdef void maxout_backward_into(const floating *dy, const Py_ssize_t *idx, Py_ssize_t n,
                               Py_ssize_t h, Py_ssize_t p, floating *dz) noexcept nogil
