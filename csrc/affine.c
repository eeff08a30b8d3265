#include "affine.h"

#include <math.h>
#include <string.h>

/* for each row i: v = z[i, j] + b[j]; z[i, j] = EXPR(v). The switch on the activation sits outside
 * the loops so that each inner loop is branch-free and vectorizable. */
#define FG_FORWARD_ROWS(T, EXPR)                                                               \
    for (ptrdiff_t i = 0; i < n; i++) {                                                        \
        T *restrict zi = z__nm + i * m;                                                        \
        for (ptrdiff_t j = 0; j < m; j++) {                                                    \
            T v = zi[j] + b__m[j];                                                             \
            zi[j] = (EXPR);                                                                    \
        }                                                                                      \
    }

/* for each row i: dz[i, j] = EXPR(g = dy[i, j], y = y[i, j]); then db += that row (still in L1). */
#define FG_BACKWARD_ROWS(T, EXPR)                                                              \
    for (ptrdiff_t i = 0; i < n; i++) {                                                        \
        const T *restrict gi = dy__nm + i * m;                                                 \
        const T *restrict yi = y__nm + i * m;                                                  \
        T *restrict di = dz__nm + i * m;                                                       \
        for (ptrdiff_t j = 0; j < m; j++) {                                                    \
            T g = gi[j], y = yi[j];                                                            \
            di[j] = (EXPR);                                                                    \
        }                                                                                      \
        if (db__m)                                                                             \
            for (ptrdiff_t j = 0; j < m; j++)                                                  \
                db__m[j] += di[j];                                                             \
    }

#define FG_DEFINE_AFFINE(T, S, EXP, EXPM1, ABS, TANH)                                          \
    static inline T fg_sigmoid_##S(T v)                                                        \
    {                                                                                          \
        T e = EXP(-ABS(v)); /* never overflows */                                              \
        T s = (T)1 / ((T)1 + e);                                                               \
        return v >= (T)0 ? s : e * s;                                                          \
    }                                                                                          \
                                                                                               \
    void fg_bias_act_forward_##S(T *restrict z__nm, const T *restrict b__m, ptrdiff_t n,       \
                                 ptrdiff_t m, int act, T param)                                \
    {                                                                                          \
        switch (act) {                                                                         \
        case FG_ACT_RELU:                                                                      \
            FG_FORWARD_ROWS(T, v > (T)0 ? v : (T)0)                                            \
            break;                                                                             \
        case FG_ACT_LEAKY_RELU:                                                                \
            FG_FORWARD_ROWS(T, v > (T)0 ? v : param * v)                                       \
            break;                                                                             \
        case FG_ACT_SIGMOID:                                                                  \
            FG_FORWARD_ROWS(T, fg_sigmoid_##S(v))                                              \
            break;                                                                             \
        case FG_ACT_TANH:                                                                      \
            FG_FORWARD_ROWS(T, TANH(v))                                                        \
            break;                                                                             \
        case FG_ACT_ELU:                                                                       \
            FG_FORWARD_ROWS(T, v > (T)0 ? v : param * EXPM1(v))                                \
            break;                                                                             \
        default:                                                                               \
            FG_FORWARD_ROWS(T, v)                                                              \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    void fg_act_backward_colsum_##S(const T *restrict dy__nm, const T *restrict y__nm,         \
                                    T *restrict dz__nm, T *restrict db__m, ptrdiff_t n,        \
                                    ptrdiff_t m, int act, T param)                             \
    {                                                                                          \
        if (db__m)                                                                             \
            memset(db__m, 0, (size_t)m * sizeof(T));                                           \
        switch (act) {                                                                         \
        case FG_ACT_RELU:                                                                      \
            FG_BACKWARD_ROWS(T, y > (T)0 ? g : (T)0)                                           \
            break;                                                                             \
        case FG_ACT_LEAKY_RELU:                                                                \
            FG_BACKWARD_ROWS(T, y > (T)0 ? g : param * g)                                      \
            break;                                                                             \
        case FG_ACT_SIGMOID:                                                                   \
            FG_BACKWARD_ROWS(T, g * y * ((T)1 - y))                                            \
            break;                                                                             \
        case FG_ACT_TANH:                                                                      \
            FG_BACKWARD_ROWS(T, g * ((T)1 - y * y))                                            \
            break;                                                                             \
        case FG_ACT_ELU:                                                                       \
            FG_BACKWARD_ROWS(T, y > (T)0 ? g : g * (y + param))                                \
            break;                                                                             \
        default: /* dz = dy: only the column sums */                                           \
            if (db__m)                                                                         \
                for (ptrdiff_t i = 0; i < n; i++) {                                            \
                    const T *restrict gi = dy__nm + i * m;                                     \
                    for (ptrdiff_t j = 0; j < m; j++)                                          \
                        db__m[j] += gi[j];                                                     \
                }                                                                              \
        }                                                                                      \
    }

FG_DEFINE_AFFINE(float, f32, expf, expm1f, fabsf, tanhf)
FG_DEFINE_AFFINE(double, f64, exp, expm1, fabs, tanh)
