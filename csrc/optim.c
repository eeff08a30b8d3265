/* The optimizer updates, one pass per parameter buffer (see optim.h for the formulas).
 *
 * Each element is computed by the same operations, in the same order and type, as the NumPy
 * `out=` sequence of fastgrad/optim.py before this file existed, so the two agree bit for bit
 * (tests/test_optim_fused.py). That needs every operation rounded on its own: this file is
 * compiled with -ffp-contract=off (setup.py; the x86-64-v3/v4 clones of FG_TARGETS have FMA and
 * GCC contracts by default), and in a type that evaluates float in float.
 * Single-threaded: these passes are memory-bound and short (a parameter buffer).
 */
#include "optim.h"

#include <float.h>
#include <math.h>

#include "common.h"

#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0 && FLT_EVAL_METHOD != -1
#error "optim.c needs float arithmetic evaluated in float (FLT_EVAL_METHOD 0), for bit-identical updates"
#endif
#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

/* the decayed gradient, as NumPy computed it: buf = w * wd; buf += dw */
#define FG_L2(w, dw, wd) ((w) * (wd) + (dw))

#define FG_DEFINE_OPTIM(T, S, SQRT)                                                            \
    /* w -= g * lr */                                                                          \
    FG_TARGETS void fg_sgd_##S(T *restrict w__n, const T *restrict dw__n, ptrdiff_t n, T lr,   \
                               T weight_decay)                                                 \
    {                                                                                          \
        if (weight_decay != 0) {                                                               \
            for (ptrdiff_t i = 0; i < n; i++) {                                                \
                T g = FG_L2(w__n[i], dw__n[i], weight_decay);                                  \
                T step = g * lr;                                                               \
                w__n[i] = w__n[i] - step;                                                      \
            }                                                                                  \
        } else {                                                                               \
            for (ptrdiff_t i = 0; i < n; i++) {                                                \
                T step = dw__n[i] * lr;                                                        \
                w__n[i] = w__n[i] - step;                                                      \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    /* v = v * momentum + g; w -= v * lr */                                                    \
    FG_TARGETS void fg_sgd_momentum_##S(T *restrict w__n, const T *restrict dw__n,             \
                                        T *restrict v__n, ptrdiff_t n, T lr, T momentum,       \
                                        T weight_decay)                                        \
    {                                                                                          \
        if (weight_decay != 0) {                                                               \
            for (ptrdiff_t i = 0; i < n; i++) {                                                \
                T g = FG_L2(w__n[i], dw__n[i], weight_decay);                                  \
                T v = v__n[i] * momentum;                                                      \
                v = v + g;                                                                     \
                v__n[i] = v;                                                                   \
                T step = v * lr;                                                               \
                w__n[i] = w__n[i] - step;                                                      \
            }                                                                                  \
        } else {                                                                               \
            for (ptrdiff_t i = 0; i < n; i++) {                                                \
                T v = v__n[i] * momentum;                                                      \
                v = v + dw__n[i];                                                              \
                v__n[i] = v;                                                                   \
                T step = v * lr;                                                               \
                w__n[i] = w__n[i] - step;                                                      \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    /* c = c * decay + (g * g) * (1 - decay); w -= (g / (sqrt(c) + eps)) * lr */               \
    FG_INLINE void fg_rmsprop_elem_##S(T *restrict w, T g, T *restrict c, T lr, T decay,       \
                                       T one_minus_decay, T eps)                               \
    {                                                                                          \
        T cache = *c * decay;                                                                  \
        T sq = g * g;                                                                          \
        sq = sq * one_minus_decay;                                                             \
        cache = cache + sq;                                                                    \
        *c = cache;                                                                            \
        T den = SQRT(cache);                                                                   \
        den = den + eps;                                                                       \
        T step = g / den;                                                                      \
        step = step * lr;                                                                      \
        *w = *w - step;                                                                        \
    }                                                                                          \
                                                                                               \
    FG_TARGETS void fg_rmsprop_##S(T *restrict w__n, const T *restrict dw__n,                  \
                                   T *restrict c__n, ptrdiff_t n, T lr, T decay,               \
                                   T one_minus_decay, T eps, T weight_decay)                   \
    {                                                                                          \
        if (weight_decay != 0) {                                                               \
            for (ptrdiff_t i = 0; i < n; i++)                                                  \
                fg_rmsprop_elem_##S(&w__n[i], FG_L2(w__n[i], dw__n[i], weight_decay),          \
                                    &c__n[i], lr, decay, one_minus_decay, eps);                \
        } else {                                                                               \
            for (ptrdiff_t i = 0; i < n; i++)                                                  \
                fg_rmsprop_elem_##S(&w__n[i], dw__n[i], &c__n[i], lr, decay, one_minus_decay,  \
                                    eps);                                                      \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    /* m = m b1 + g (1 - b1); v = v b2 + (g g)(1 - b2);                                        \
     * w -= (m / (sqrt(v) / bias_sqrt2 + eps)) * step_size */                                  \
    FG_INLINE void fg_adam_elem_##S(T *restrict w, T g, T *restrict m, T *restrict v,          \
                                    T step_size, T beta1, T one_minus_beta1, T beta2,          \
                                    T one_minus_beta2, T bias_sqrt2, T eps)                    \
    {                                                                                          \
        T mean = *m * beta1;                                                                   \
        T gm = g * one_minus_beta1;                                                            \
        mean = mean + gm;                                                                      \
        *m = mean;                                                                             \
        T var = *v * beta2;                                                                    \
        T sq = g * g;                                                                          \
        sq = sq * one_minus_beta2;                                                             \
        var = var + sq;                                                                        \
        *v = var;                                                                              \
        T den = SQRT(var);                                                                     \
        den = den / bias_sqrt2;                                                                \
        den = den + eps;                                                                       \
        T step = mean / den;                                                                   \
        step = step * step_size;                                                               \
        *w = *w - step;                                                                        \
    }                                                                                          \
                                                                                               \
    FG_TARGETS void fg_adam_##S(T *restrict w__n, const T *restrict dw__n, T *restrict m__n,   \
                                T *restrict v__n, ptrdiff_t n, T step_size, T beta1,           \
                                T one_minus_beta1, T beta2, T one_minus_beta2, T bias_sqrt2,   \
                                T eps, T weight_decay)                                         \
    {                                                                                          \
        if (weight_decay != 0) {                                                               \
            for (ptrdiff_t i = 0; i < n; i++)                                                  \
                fg_adam_elem_##S(&w__n[i], FG_L2(w__n[i], dw__n[i], weight_decay), &m__n[i],   \
                                 &v__n[i], step_size, beta1, one_minus_beta1, beta2,           \
                                 one_minus_beta2, bias_sqrt2, eps);                            \
        } else {                                                                               \
            for (ptrdiff_t i = 0; i < n; i++)                                                  \
                fg_adam_elem_##S(&w__n[i], dw__n[i], &m__n[i], &v__n[i], step_size, beta1,     \
                                 one_minus_beta1, beta2, one_minus_beta2, bias_sqrt2, eps);    \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    /* decoupled decay: w = w * w_scale first, then Adam on dw itself */                       \
    FG_TARGETS void fg_adamw_##S(T *restrict w__n, const T *restrict dw__n, T *restrict m__n,  \
                                 T *restrict v__n, ptrdiff_t n, T step_size, T beta1,          \
                                 T one_minus_beta1, T beta2, T one_minus_beta2, T bias_sqrt2,  \
                                 T eps, T weight_decay, T w_scale)                             \
    {                                                                                          \
        if (weight_decay != 0) {                                                               \
            for (ptrdiff_t i = 0; i < n; i++) {                                                \
                w__n[i] = w__n[i] * w_scale;                                                   \
                fg_adam_elem_##S(&w__n[i], dw__n[i], &m__n[i], &v__n[i], step_size, beta1,     \
                                 one_minus_beta1, beta2, one_minus_beta2, bias_sqrt2, eps);    \
            }                                                                                  \
        } else {                                                                               \
            for (ptrdiff_t i = 0; i < n; i++)                                                  \
                fg_adam_elem_##S(&w__n[i], dw__n[i], &m__n[i], &v__n[i], step_size, beta1,     \
                                 one_minus_beta1, beta2, one_minus_beta2, bias_sqrt2, eps);    \
        }                                                                                      \
    }

FG_DEFINE_OPTIM(float, f32, sqrtf)
FG_DEFINE_OPTIM(double, f64, sqrt)
