/* Normalisation layers: batch norm over the rows of an (n, d) batch, layer norm over the columns
 * of each row.
 *
 * All buffers are contiguous and row-major; the caller (fastgrad/_norm.pyx) checks shapes and
 * dtypes. Statistics are accumulated in double (acc__* scratch of the size named, from the
 * caller), so float32 batches keep their mean and variance to double precision before rounding.
 * Float (_f32) and double (_f64). Serial, vectorized along the contiguous axis.
 *
 * Batch norm (CS231n assignment 2), per column j over the n rows:
 *   mean_j = sum_i x_ij / n,  var_j = sum_i (x_ij - mean_j)^2 / n,  invstd_j = 1/sqrt(var_j + eps)
 *   xhat = (x - mean) invstd,  y = gamma xhat + beta
 *   running stats (when running_mean__d is not NULL; needs n >= 2):
 *   rm = (1 - momentum) rm + momentum mean,  rv = (1 - momentum) rv + momentum var n / (n - 1)
 *   backward (the "fast" formula): dbeta = sum_i dy, dgamma = sum_i dy xhat,
 *   dx = gamma invstd / n (n dy - dbeta - xhat dgamma)
 * Layer norm, per row i over its d columns, with the same formulas transposed:
 *   dxhat = dy gamma,  dx = invstd_i / d (d dxhat - sum_j dxhat - xhat sum_j dxhat xhat)
 */
#ifndef FASTGRAD_NORM_H
#define FASTGRAD_NORM_H

#include <stddef.h>

#define FG_DECLARE_NORM(T, S)                                                                  \
    void fg_batchnorm_forward_##S(const T *x__nd, const T *gamma__d, const T *beta__d,         \
                                  ptrdiff_t n, ptrdiff_t d, double eps, T *y__nd, T *mean__d,  \
                                  T *invstd__d, T *running_mean__d, T *running_var__d,         \
                                  double momentum, double *acc__d);                            \
    /* dx__nd may be NULL (x needs no gradient); dgamma and dbeta are always written */        \
    void fg_batchnorm_backward_##S(const T *dy__nd, const T *x__nd, const T *mean__d,          \
                                   const T *invstd__d, const T *gamma__d, ptrdiff_t n,         \
                                   ptrdiff_t d, T *dx__nd, T *dgamma__d, T *dbeta__d,          \
                                   double *acc__2d);                                           \
    void fg_layernorm_forward_##S(const T *x__nd, const T *gamma__d, const T *beta__d,         \
                                  ptrdiff_t n, ptrdiff_t d, double eps, T *y__nd, T *mean__n,  \
                                  T *invstd__n);                                               \
    void fg_layernorm_backward_##S(const T *dy__nd, const T *x__nd, const T *mean__n,          \
                                   const T *invstd__n, const T *gamma__d, ptrdiff_t n,         \
                                   ptrdiff_t d, T *dx__nd, T *dgamma__d, T *dbeta__d,          \
                                   double *acc__2d);

FG_DECLARE_NORM(float, f32)
FG_DECLARE_NORM(double, f64)

#undef FG_DECLARE_NORM

#endif
