/* Elementwise gates of fastgrad, forward and backward, one pass each, no temporaries.
 *
 * Every kernel exists for float (suffix _f32) and double (_f64). Buffers are
 * contiguous, of n elements; inputs are const; outputs may not alias inputs
 * unless stated. No Python here: the Cython layer validates before calling.
 */
#ifndef FASTGRAD_ELEMENTWISE_H
#define FASTGRAD_ELEMENTWISE_H

#include <stddef.h>

#define FG_DECLARE_ELEMENTWISE(T, S)                                                   \
    /* y = max(x, 0) */                                                                \
    void fg_relu_forward_##S(const T *x, T *y, ptrdiff_t n);                           \
    /* dx = dy * [y > 0]  (ReLU'(0) = 0; y is the saved output) */                     \
    void fg_relu_backward_##S(const T *dy, const T *y, T *dx, ptrdiff_t n);            \
    /* y = 1 / (1 + exp(-x)), without overflow for any finite x */                     \
    void fg_sigmoid_forward_##S(const T *x, T *y, ptrdiff_t n);                        \
    /* dx = dy * y * (1 - y)  (y is the saved output) */                               \
    void fg_sigmoid_backward_##S(const T *dy, const T *y, T *dx, ptrdiff_t n);

FG_DECLARE_ELEMENTWISE(float, f32)
FG_DECLARE_ELEMENTWISE(double, f64)

#undef FG_DECLARE_ELEMENTWISE

#endif
