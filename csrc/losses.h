/* Losses over a batch of class scores, the loss and its gradient in one pass over the scores.
 *
 * scores (n, c) and the gradient are contiguous, labels are n ptrdiff_t (numpy.intp) in [0, c)
 * (the caller checks), n >= 1, c >= 1. The per-example losses go to loss__n (n doubles, scratch
 * the caller provides) and the mean loss is returned, summed in a fixed order so that it does not
 * depend on the thread count. grad__nc may be NULL: then only the loss is computed.
 * Float (_f32) and double (_f64); row sums are vectorized in the scores' type, the per-example
 * losses and their total are double.
 */
#ifndef FASTGRAD_LOSSES_H
#define FASTGRAD_LOSSES_H

#include <stddef.h>

#define FG_DECLARE_LOSSES(T, S)                                                                \
    /* L = mean_r [log sum_k exp(s[r, k]) - s[r, y_r]], via the row max (stable);              \
     * grad[r, k] = (softmax(s[r])[k] - [k == y_r]) / n */                                     \
    double fg_softmax_ce_##S(const T *scores__nc, const ptrdiff_t *labels__n, ptrdiff_t n,     \
                             ptrdiff_t c, T *grad__nc, double *loss__n);                       \
    /* L = mean_r sum_{k != y_r} max(0, s[r, k] - s[r, y_r] + delta);                          \
     * grad[r, k] = [margin > 0] / n for k != y_r, grad[r, y_r] = -(count of margins > 0) / n */ \
    double fg_svm_##S(const T *scores__nc, const ptrdiff_t *labels__n, ptrdiff_t n,            \
                      ptrdiff_t c, T delta, T *grad__nc, double *loss__n);

FG_DECLARE_LOSSES(float, f32)
FG_DECLARE_LOSSES(double, f64)

#undef FG_DECLARE_LOSSES

#endif
