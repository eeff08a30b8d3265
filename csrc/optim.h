/* The optimizer updates (fastgrad/optim.py), each one pass over a parameter buffer.
 *
 * w (n, updated in place), dw (n, const) and the state buffers (n each, updated in place) are
 * contiguous, aligned and do not overlap (the caller checks: fastgrad/_optim.pyx); n >= 0.
 * Float (_f32) and double (_f64).
 *
 * Bit-identical to the NumPy `out=` sequence each rule replaced: every operation below is one
 * rounding in the buffers' type, in the order written, and each scalar argument is the
 * hyperparameter expression optim.py computed in Python (double) rounded once to that type, as
 * NumPy rounds a Python float that meets a float32 array. So: no FMA contraction (optim.c is
 * compiled with -ffp-contract=off), sqrt and division correctly rounded (IEEE), and a
 * weight_decay of exactly 0 skips the decay (w * 0 + dw is not dw for dw = -0 or w = inf).
 *
 *   g = dw                                     (weight_decay == 0)
 *   g = w * weight_decay + dw                  (L2 decay, the rules but AdamW)
 *
 *   sgd:           w = w - g * lr
 *   sgd_momentum:  v = v * momentum + g ;  w = w - v * lr
 *   rmsprop:       c = c * decay + (g * g) * one_minus_decay
 *                  w = w - (g / (sqrt(c) + eps)) * lr
 *   adam:          m = m * beta1 + g * one_minus_beta1
 *                  v = v * beta2 + (g * g) * one_minus_beta2
 *                  w = w - (m / (sqrt(v) / bias_sqrt2 + eps)) * step_size
 *   adamw:         w = w * w_scale (when weight_decay != 0), then adam with g = dw
 *
 * with, from the group's Python floats and the parameter's step t >= 1 (fastgrad/_optim.pyx):
 *   one_minus_decay = 1.0 - decay, one_minus_beta1 = 1.0 - beta1, one_minus_beta2 = 1.0 - beta2,
 *   bias_sqrt2 = sqrt(1.0 - beta2**t), step_size = lr / (1.0 - beta1**t),
 *   w_scale = 1.0 - lr * weight_decay.
 */
#ifndef FASTGRAD_OPTIM_H
#define FASTGRAD_OPTIM_H

#include <stddef.h>

#define FG_DECLARE_OPTIM(T, S)                                                                 \
    void fg_sgd_##S(T *w__n, const T *dw__n, ptrdiff_t n, T lr, T weight_decay);              \
    void fg_sgd_momentum_##S(T *w__n, const T *dw__n, T *v__n, ptrdiff_t n, T lr, T momentum,  \
                             T weight_decay);                                                  \
    void fg_rmsprop_##S(T *w__n, const T *dw__n, T *c__n, ptrdiff_t n, T lr, T decay,          \
                        T one_minus_decay, T eps, T weight_decay);                             \
    void fg_adam_##S(T *w__n, const T *dw__n, T *m__n, T *v__n, ptrdiff_t n, T step_size,      \
                     T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T bias_sqrt2,     \
                     T eps, T weight_decay);                                                   \
    void fg_adamw_##S(T *w__n, const T *dw__n, T *m__n, T *v__n, ptrdiff_t n, T step_size,     \
                      T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T bias_sqrt2,    \
                      T eps, T weight_decay, T w_scale);

FG_DECLARE_OPTIM(float, f32)
FG_DECLARE_OPTIM(double, f64)

#undef FG_DECLARE_OPTIM

#endif
