#include "elementwise.h"

#include "common.h"
#include "fgmath.h"

/* Loops load every input into a local before a select (`c ? a : b`): a load or an arithmetic
 * operation that appears in one arm only is not if-converted, and the loop stays scalar.
 *
 * One template, instantiated for float and double. EXP_NEG, EXPM1_NEG: exp and expm1 of
 * arguments <= 0 (fgmath.h); ABS, COPYSIGN: fabsf/copysignf or fabs/copysign. */
#define FG_DEFINE_ELEMENTWISE(T, S, EXP_NEG, EXPM1_NEG, ABS, COPYSIGN)                         \
    FG_TARGETS                                                                                 \
    void fg_relu_forward_##S(const T *restrict x__n, T *restrict y__n, ptrdiff_t n)            \
    {                                                                                          \
        FG_OMP_FOR(n > FG_OMP_MIN_CHEAP)                                                       \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            T x = x__n[i];                                                                     \
            y__n[i] = (x > (T)0 || x != x) ? x : (T)0; /* NaN stays NaN */                     \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_relu_backward_##S(const T *restrict dy__n, const T *restrict y__n,                 \
                              T *restrict dx__n, ptrdiff_t n)                                  \
    {                                                                                          \
        FG_OMP_FOR(n > FG_OMP_MIN_CHEAP)                                                       \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            T dy = dy__n[i];                                                                   \
            dx__n[i] = y__n[i] > (T)0 ? dy : (T)0;                                             \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_leaky_relu_forward_##S(const T *restrict x__n, T *restrict y__n, ptrdiff_t n,      \
                                   T slope)                                                    \
    {                                                                                          \
        FG_OMP_FOR(n > FG_OMP_MIN_CHEAP)                                                       \
        for (ptrdiff_t i = 0; i < n; i++)                                                      \
            y__n[i] = x__n[i] > (T)0 ? x__n[i] : slope * x__n[i];                              \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_leaky_relu_backward_##S(const T *restrict dy__n, const T *restrict x__n,           \
                                    T *restrict dx__n, ptrdiff_t n, T slope)                   \
    {                                                                                          \
        FG_OMP_FOR(n > FG_OMP_MIN_CHEAP)                                                       \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            T dy = dy__n[i];                                                                   \
            dx__n[i] = x__n[i] > (T)0 ? dy : slope * dy;                                       \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_elu_forward_##S(const T *restrict x__n, T *restrict y__n, ptrdiff_t n, T alpha)    \
    {                                                                                          \
        FG_OMP_FOR(n > FG_OMP_MIN_EXP)                                                         \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            T x = x__n[i];                                                                     \
            T e = alpha * EXPM1_NEG(x > (T)0 ? (T)0 : x); /* NaN stays NaN */                  \
            y__n[i] = x > (T)0 ? x : e;                                                        \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_elu_backward_##S(const T *restrict dy__n, const T *restrict x__n,                  \
                             T *restrict dx__n, ptrdiff_t n, T alpha)                          \
    {                                                                                          \
        FG_OMP_FOR(n > FG_OMP_MIN_EXP)                                                         \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            T x = x__n[i];                                                                     \
            T slope = alpha * EXP_NEG(x > (T)0 ? (T)0 : x);                                    \
            dx__n[i] = dy__n[i] * (x > (T)0 ? (T)1 : slope);                                   \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_sigmoid_forward_##S(const T *restrict x__n, T *restrict y__n, ptrdiff_t n)         \
    {                                                                                          \
        /* e = exp(-|x|) <= 1; sigma(x) = 1/(1+e) for x >= 0 and e/(1+e) below */              \
        FG_OMP_FOR(n > FG_OMP_MIN_EXP)                                                         \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            T e = EXP_NEG(-ABS(x__n[i]));                                                      \
            T s = (T)1 / ((T)1 + e);                                                           \
            y__n[i] = x__n[i] >= (T)0 ? s : e * s;                                             \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_sigmoid_backward_##S(const T *restrict dy__n, const T *restrict y__n,              \
                                 T *restrict dx__n, ptrdiff_t n)                               \
    {                                                                                          \
        FG_OMP_FOR(n > FG_OMP_MIN_CHEAP)                                                       \
        for (ptrdiff_t i = 0; i < n; i++)                                                      \
            dx__n[i] = dy__n[i] * y__n[i] * ((T)1 - y__n[i]);                                  \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_tanh_forward_##S(const T *restrict x__n, T *restrict y__n, ptrdiff_t n)            \
    {                                                                                          \
        /* m = expm1(-2|x|) in (-1, 0]; tanh|x| = -m / (2 + m), exact near 0 too */            \
        FG_OMP_FOR(n > FG_OMP_MIN_EXP)                                                         \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            T m = EXPM1_NEG((T)-2 * ABS(x__n[i]));                                             \
            y__n[i] = COPYSIGN(-m / ((T)2 + m), x__n[i]);                                      \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_tanh_backward_##S(const T *restrict dy__n, const T *restrict y__n,                 \
                              T *restrict dx__n, ptrdiff_t n)                                  \
    {                                                                                          \
        FG_OMP_FOR(n > FG_OMP_MIN_CHEAP)                                                       \
        for (ptrdiff_t i = 0; i < n; i++)                                                      \
            dx__n[i] = dy__n[i] * ((T)1 - y__n[i] * y__n[i]);                                  \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_maximum_forward_##S(const T *restrict a__n, const T *restrict b__n,                \
                                T *restrict y__n, ptrdiff_t n)                                 \
    {                                                                                          \
        FG_OMP_FOR(n > FG_OMP_MIN_CHEAP)                                                       \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            T a = a__n[i], b = b__n[i];                                                        \
            y__n[i] = (a >= b || a != a) ? a : b;                                              \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_maximum_backward_##S(const T *restrict dy__n, const T *restrict a__n,              \
                                 const T *restrict b__n, T *restrict da__n,                    \
                                 T *restrict db__n, ptrdiff_t n)                               \
    {                                                                                          \
        FG_OMP_FOR(n > FG_OMP_MIN_CHEAP)                                                       \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            T dy = dy__n[i];                                                                   \
            T a = a__n[i], b = b__n[i];                                                        \
            int a_wins = a >= b || a != a; /* the operand forward returned (ties, NaN) */      \
            da__n[i] = a_wins ? dy : (T)0;                                                     \
            db__n[i] = a_wins ? (T)0 : dy;                                                     \
        }                                                                                      \
    }

FG_DEFINE_ELEMENTWISE(float, f32, fg_exp_neg_f32, fg_expm1_neg_f32, fabsf, copysignf)
FG_DEFINE_ELEMENTWISE(double, f64, fg_exp_neg_f64, fg_expm1_neg_f64, fabs, copysign)
