/* Max routing: the forward pass records which entry won, the backward pass sends the gradient
 * there and nowhere else. Ties (and NaN) go to the first such entry, as numpy.argmax does.
 *
 * Shapes are named by suffix: o = outer, w = the reduced width, i = inner, n = batch, h = units,
 * p = pieces. Inputs are const, contiguous, non-empty along the reduced axis (w >= 1, p >= 1);
 * indices are ptrdiff_t (numpy.intp). Float (_f32) and double (_f64).
 */
#ifndef FASTGRAD_ROUTING_H
#define FASTGRAD_ROUTING_H

#include <stddef.h>

#define FG_DECLARE_ROUTING(T, S)                                                               \
    /* x viewed as (o, w, i): y[o, i] = max_k x[o, k, i], idx[o, i] = the first such k.        \
     * o = 1 is a reduction over the leading axes, i = 1 one over the trailing axes. */       \
    void fg_max_forward_##S(const T *x__owi, ptrdiff_t o, ptrdiff_t w, ptrdiff_t i, T *y__oi,  \
                            ptrdiff_t *idx__oi);                                               \
    /* dx[o, idx[o, i], i] = dy[o, i]; dx must hold zeros (e.g. from calloc) */              \
    void fg_max_backward_##S(const T *dy__oi, const ptrdiff_t *idx__oi, ptrdiff_t o,           \
                             ptrdiff_t w, ptrdiff_t i, T *dx__owi);                            \
    /* z viewed as (n, h, p): y[n, h] = max_k z[n, h, k], idx[n, h] = the first such k */      \
    void fg_maxout_forward_##S(const T *z__nhp, ptrdiff_t n, ptrdiff_t h, ptrdiff_t p,         \
                               T *y__nh, ptrdiff_t *idx__nh);                                  \
    /* dz[n, h, idx[n, h]] = dy[n, h]; dz must hold zeros (e.g. from calloc) */              \
    void fg_maxout_backward_##S(const T *dy__nh, const ptrdiff_t *idx__nh, ptrdiff_t n,        \
                                ptrdiff_t h, ptrdiff_t p, T *dz__nhp);

FG_DECLARE_ROUTING(float, f32)
FG_DECLARE_ROUTING(double, f64)

#undef FG_DECLARE_ROUTING

#endif
