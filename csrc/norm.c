#include "norm.h"

#include <math.h>

#include "common.h"

/* Column statistics walk the rows in order and accumulate a d-vector (vectorized along j);
 * row statistics are FG_SIMD reductions over one row. Everything is serial: these layers sit
 * between two BLAS products that dominate the time. */

#define FG_DEFINE_NORM(T, S)                                                                   \
    FG_TARGETS                                                                                 \
    void fg_batchnorm_forward_##S(const T *restrict x__nd, const T *restrict gamma__d,         \
                                  const T *restrict beta__d, ptrdiff_t n, ptrdiff_t d,         \
                                  double eps, T *restrict y__nd, T *restrict mean__d,          \
                                  T *restrict invstd__d, T *restrict running_mean__d,          \
                                  T *restrict running_var__d, double momentum,                 \
                                  double *restrict acc__d)                                     \
    {                                                                                          \
        for (ptrdiff_t j = 0; j < d; j++)                                                      \
            acc__d[j] = 0.0;                                                                   \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            const T *restrict xr = x__nd + i * d;                                              \
            for (ptrdiff_t j = 0; j < d; j++)                                                  \
                acc__d[j] += (double)xr[j];                                                    \
        }                                                                                      \
        for (ptrdiff_t j = 0; j < d; j++) {                                                    \
            mean__d[j] = (T)(acc__d[j] / (double)n);                                           \
            acc__d[j] = 0.0;                                                                   \
        }                                                                                      \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            const T *restrict xr = x__nd + i * d;                                              \
            for (ptrdiff_t j = 0; j < d; j++) {                                                \
                double c = (double)xr[j] - (double)mean__d[j];                                 \
                acc__d[j] += c * c;                                                            \
            }                                                                                  \
        }                                                                                      \
        for (ptrdiff_t j = 0; j < d; j++) {                                                    \
            double var = acc__d[j] / (double)n;                                                \
            invstd__d[j] = (T)(1.0 / sqrt(var + eps));                                         \
            if (running_mean__d) {                                                             \
                running_mean__d[j] = (T)((1.0 - momentum) * (double)running_mean__d[j] +       \
                                         momentum * (double)mean__d[j]);                       \
                running_var__d[j] = (T)((1.0 - momentum) * (double)running_var__d[j] +         \
                                        momentum * var * (double)n / (double)(n - 1));         \
            }                                                                                  \
        }                                                                                      \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            const T *restrict xr = x__nd + i * d;                                              \
            T *restrict yr = y__nd + i * d;                                                    \
            for (ptrdiff_t j = 0; j < d; j++)                                                  \
                yr[j] = gamma__d[j] * ((xr[j] - mean__d[j]) * invstd__d[j]) + beta__d[j];      \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_batchnorm_backward_##S(const T *restrict dy__nd, const T *restrict x__nd,          \
                                   const T *restrict mean__d, const T *restrict invstd__d,     \
                                   const T *restrict gamma__d, ptrdiff_t n, ptrdiff_t d,       \
                                   T *restrict dx__nd, T *restrict dgamma__d,                  \
                                   T *restrict dbeta__d, double *restrict acc__2d)             \
    {                                                                                          \
        double *restrict sdy = acc__2d, *restrict sdyx = acc__2d + d;                          \
        for (ptrdiff_t j = 0; j < d; j++)                                                      \
            sdy[j] = sdyx[j] = 0.0;                                                            \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            const T *restrict gr = dy__nd + i * d, *restrict xr = x__nd + i * d;               \
            for (ptrdiff_t j = 0; j < d; j++) {                                                \
                T xh = (xr[j] - mean__d[j]) * invstd__d[j];                                    \
                sdy[j] += (double)gr[j];                                                       \
                sdyx[j] += (double)(gr[j] * xh);                                               \
            }                                                                                  \
        }                                                                                      \
        for (ptrdiff_t j = 0; j < d; j++) {                                                    \
            dbeta__d[j] = (T)sdy[j];                                                           \
            dgamma__d[j] = (T)sdyx[j];                                                         \
        }                                                                                      \
        if (!dx__nd)                                                                           \
            return;                                                                            \
        const T tn = (T)n;                                                                     \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            const T *restrict gr = dy__nd + i * d, *restrict xr = x__nd + i * d;               \
            T *restrict dxr = dx__nd + i * d;                                                  \
            for (ptrdiff_t j = 0; j < d; j++) {                                                \
                T xh = (xr[j] - mean__d[j]) * invstd__d[j];                                    \
                dxr[j] = gamma__d[j] * invstd__d[j] / tn *                                     \
                         (tn * gr[j] - dbeta__d[j] - xh * dgamma__d[j]);                       \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_layernorm_forward_##S(const T *restrict x__nd, const T *restrict gamma__d,         \
                                  const T *restrict beta__d, ptrdiff_t n, ptrdiff_t d,         \
                                  double eps, T *restrict y__nd, T *restrict mean__n,          \
                                  T *restrict invstd__n)                                       \
    {                                                                                          \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            const T *restrict xr = x__nd + i * d;                                              \
            T *restrict yr = y__nd + i * d;                                                    \
            double s = 0.0, q = 0.0;                                                           \
            FG_SIMD(reduction(+ : s))                                                          \
            for (ptrdiff_t j = 0; j < d; j++)                                                  \
                s += (double)xr[j];                                                            \
            const T m = (T)(s / (double)d);                                                    \
            FG_SIMD(reduction(+ : q))                                                          \
            for (ptrdiff_t j = 0; j < d; j++) {                                                \
                double c = (double)xr[j] - (double)m;                                          \
                q += c * c;                                                                    \
            }                                                                                  \
            const T inv = (T)(1.0 / sqrt(q / (double)d + eps));                                \
            mean__n[i] = m;                                                                    \
            invstd__n[i] = inv;                                                                \
            for (ptrdiff_t j = 0; j < d; j++)                                                  \
                yr[j] = gamma__d[j] * ((xr[j] - m) * inv) + beta__d[j];                        \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_layernorm_backward_##S(const T *restrict dy__nd, const T *restrict x__nd,          \
                                   const T *restrict mean__n, const T *restrict invstd__n,     \
                                   const T *restrict gamma__d, ptrdiff_t n, ptrdiff_t d,       \
                                   T *restrict dx__nd, T *restrict dgamma__d,                  \
                                   T *restrict dbeta__d, double *restrict acc__2d)             \
    {                                                                                          \
        double *restrict sdy = acc__2d, *restrict sdyx = acc__2d + d;                          \
        for (ptrdiff_t j = 0; j < d; j++)                                                      \
            sdy[j] = sdyx[j] = 0.0;                                                            \
        const T td = (T)d;                                                                     \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            const T *restrict gr = dy__nd + i * d, *restrict xr = x__nd + i * d;               \
            const T m = mean__n[i], inv = invstd__n[i];                                        \
            T s1 = 0, s2 = 0;                                                                  \
            FG_SIMD(reduction(+ : s1, s2))                                                     \
            for (ptrdiff_t j = 0; j < d; j++) {                                                \
                T xh = (xr[j] - m) * inv;                                                      \
                T dxh = gr[j] * gamma__d[j];                                                   \
                s1 += dxh;                                                                     \
                s2 += dxh * xh;                                                                \
            }                                                                                  \
            for (ptrdiff_t j = 0; j < d; j++) {                                                \
                T xh = (xr[j] - m) * inv;                                                      \
                sdy[j] += (double)gr[j];                                                       \
                sdyx[j] += (double)(gr[j] * xh);                                               \
            }                                                                                  \
            if (dx__nd) {                                                                      \
                T *restrict dxr = dx__nd + i * d;                                              \
                for (ptrdiff_t j = 0; j < d; j++) {                                            \
                    T xh = (xr[j] - m) * inv, dxh = gr[j] * gamma__d[j];                       \
                    dxr[j] = inv / td * (td * dxh - s1 - xh * s2);                             \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        for (ptrdiff_t j = 0; j < d; j++) {                                                    \
            dbeta__d[j] = (T)sdy[j];                                                           \
            dgamma__d[j] = (T)sdyx[j];                                                         \
        }                                                                                      \
    }

FG_DEFINE_NORM(float, f32)
FG_DEFINE_NORM(double, f64)
