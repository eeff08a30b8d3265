/* Elementwise gates of fastgrad, forward and backward, one pass each, no temporaries.
 *
 * Every kernel exists for float (suffix _f32) and double (_f64). Buffers are contiguous, of n
 * elements (the suffix __n); inputs are const; outputs do not alias inputs. No Python here: the
 * Cython layer validates before calling. Large inputs are split over threads (common.h).
 */
#ifndef FASTGRAD_ELEMENTWISE_H
#define FASTGRAD_ELEMENTWISE_H

#include <stddef.h>

#define FG_DECLARE_ELEMENTWISE(T, S)                                                           \
    /* y = max(x, 0), NaN for NaN */                                                   \
    void fg_relu_forward_##S(const T *x__n, T *y__n, ptrdiff_t n);                             \
    /* dx = dy * [y > 0]  (ReLU'(0) = 0; y is the saved output) */                             \
    void fg_relu_backward_##S(const T *dy__n, const T *y__n, T *dx__n, ptrdiff_t n);           \
    /* y = x if x > 0 else slope * x */                                                        \
    void fg_leaky_relu_forward_##S(const T *x__n, T *y__n, ptrdiff_t n, T slope);              \
    /* dx = dy if x > 0 else slope * dy  (the derivative at 0 is slope) */                     \
    void fg_leaky_relu_backward_##S(const T *dy__n, const T *x__n, T *dx__n, ptrdiff_t n,      \
                                    T slope);                                                  \
    /* y = x if x > 0 else alpha * (exp(x) - 1) */                                             \
    void fg_elu_forward_##S(const T *x__n, T *y__n, ptrdiff_t n, T alpha);                     \
    /* dx = dy if x > 0 else dy * alpha * exp(x)  (alpha at 0; from the input, not from       \
     * y + alpha, which loses the small exp(x) to cancellation in float) */                    \
    void fg_elu_backward_##S(const T *dy__n, const T *x__n, T *dx__n, ptrdiff_t n, T alpha);   \
    /* y = 1 / (1 + exp(-x)), without overflow for any x */                                    \
    void fg_sigmoid_forward_##S(const T *x__n, T *y__n, ptrdiff_t n);                          \
    /* dx = dy * y * (1 - y)  (y is the saved output) */                                       \
    void fg_sigmoid_backward_##S(const T *dy__n, const T *y__n, T *dx__n, ptrdiff_t n);        \
    /* y = tanh(x), without overflow for any x */                                              \
    void fg_tanh_forward_##S(const T *x__n, T *y__n, ptrdiff_t n);                             \
    /* dx = dy * (1 - y^2)  (y is the saved output) */                                         \
    void fg_tanh_backward_##S(const T *dy__n, const T *y__n, T *dx__n, ptrdiff_t n);           \
    /* y = max(a, b) (NaN if either is NaN) */                                                 \
    void fg_maximum_forward_##S(const T *a__n, const T *b__n, T *y__n, ptrdiff_t n);           \
    /* da = dy where a >= b or a is NaN, else 0; db = dy - da: the gradient goes to the        \
     * operand forward returned (ties to a, a NaN to the NaN operand, a if both are NaN) */    \
    void fg_maximum_backward_##S(const T *dy__n, const T *a__n, const T *b__n, T *da__n,       \
                                 T *db__n, ptrdiff_t n);                                   \
    /* the gate of activation code `act` (enum fg_activation, activations.h; p its parameter): \
     * y = f(x), and dx = f'(.) dy from s = y or x as the activation's row says (FROM); NONE   \
     * or an unknown code writes nothing (the callers validate codes) */                      \
    void fg_gate_forward_##S(int act, const T *x__n, T *y__n, ptrdiff_t n, T p);               \
    void fg_gate_backward_##S(int act, const T *dy__n, const T *s__n, T *dx__n, ptrdiff_t n,   \
                              T p);

FG_DECLARE_ELEMENTWISE(float, f32)
FG_DECLARE_ELEMENTWISE(double, f64)

#undef FG_DECLARE_ELEMENTWISE

#endif
