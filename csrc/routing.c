#include "routing.h"

#include "common.h"

/* Columns of the (o, w, i) view are reduced in strips of FG_STRIP: the strip's running maxima and
 * indices (the outputs themselves) stay in L1 while the w rows stream past. */
#define FG_STRIP 512
/* A row's first maximum is found in two vectorized passes: its max (and whether it holds a NaN),
 * then the first block of FG_BLOCK entries that contains it. */
#define FG_BLOCK 16

/* `v` replaces the running max `b`: larger, or the first NaN (NaN wins, as in numpy.max). */
#define FG_TAKES(v, b) ((v) > (b) || ((v) != (v) && (b) == (b)))

#define FG_DEFINE_ROUTING(T, S)                                                                \
    /* The first k with x[k] = max x, or the first NaN, for w >= 1. */                         \
    FG_INLINE ptrdiff_t fg_argmax_##S(const T *restrict x__w, ptrdiff_t w)                     \
    {                                                                                          \
        if (w < FG_SIMD_MIN_ROW) {                                                             \
            ptrdiff_t best = 0;                                                                \
            for (ptrdiff_t k = 1; k < w; k++)                                                  \
                best = FG_TAKES(x__w[k], x__w[best]) ? k : best;                               \
            return best;                                                                       \
        }                                                                                      \
        T m = x__w[0];                                                                         \
        int nan = 0;                                                                           \
        FG_SIMD(reduction(max : m) reduction(| : nan))                                         \
        for (ptrdiff_t k = 0; k < w; k++) {                                                    \
            T v = x__w[k];                                                                     \
            m = v > m ? v : m;                                                                 \
            nan |= v != v;                                                                     \
        }                                                                                      \
        ptrdiff_t k = 0;                                                                       \
        if (nan) {                                                                             \
            while (x__w[k] == x__w[k])                                                         \
                k++;                                                                           \
            return k;                                                                          \
        }                                                                                      \
        for (; k + FG_BLOCK <= w; k += FG_BLOCK) {                                             \
            int hit = 0;                                                                       \
            FG_SIMD(reduction(| : hit))                                                        \
            for (int l = 0; l < FG_BLOCK; l++)                                                 \
                hit |= x__w[k + l] == m;                                                       \
            if (hit)                                                                           \
                break;                                                                         \
        }                                                                                      \
        while (x__w[k] != m) /* m is in x[k:], so this stops within the block or tail */       \
            k++;                                                                               \
        return k;                                                                              \
    }                                                                                          \
                                                                                               \
    FG_TARGETS void fg_max_forward_##S(const T *restrict x__owi, ptrdiff_t o, ptrdiff_t w,     \
                                       ptrdiff_t i, T *restrict y__oi,                         \
                                       ptrdiff_t *restrict idx__oi)                            \
    {                                                                                          \
        if (i == 1) {                                                                          \
            FG_OMP_FOR(o > 1 && o * w > FG_OMP_MIN_CHEAP, o * w)                                      \
            for (ptrdiff_t r = 0; r < o; r++) {                                                \
                ptrdiff_t k = fg_argmax_##S(x__owi + r * w, w);                                \
                y__oi[r] = x__owi[r * w + k];                                                  \
                idx__oi[r] = k;                                                                \
            }                                                                                  \
            return;                                                                            \
        }                                                                                      \
        ptrdiff_t strips = (i + FG_STRIP - 1) / FG_STRIP;                                      \
        FG_OMP_FOR(o * strips > 1 && o * w * i > FG_OMP_MIN_CHEAP, o * w * i)                             \
        for (ptrdiff_t t = 0; t < o * strips; t++) {                                           \
            ptrdiff_t r = t / strips, lo = (t % strips) * FG_STRIP;                            \
            ptrdiff_t hi = lo + FG_STRIP < i ? lo + FG_STRIP : i;                              \
            const T *x = x__owi + r * w * i;                                                   \
            T *restrict y = y__oi + r * i;                                                     \
            ptrdiff_t *restrict idx = idx__oi + r * i;                                         \
            for (ptrdiff_t j = lo; j < hi; j++) {                                              \
                y[j] = x[j];                                                                   \
                idx[j] = 0;                                                                    \
            }                                                                                  \
            for (ptrdiff_t k = 1; k < w; k++)                                                  \
                for (ptrdiff_t j = lo; j < hi; j++) {                                          \
                    T v = x[k * i + j], b = y[j];                                              \
                    ptrdiff_t c = idx[j];                                                      \
                    int take = FG_TAKES(v, b);                                                 \
                    y[j] = take ? v : b;                                                       \
                    idx[j] = take ? k : c;                                                     \
                }                                                                              \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    FG_TARGETS void fg_max_backward_##S(const T *restrict dy__oi,                              \
                                        const ptrdiff_t *restrict idx__oi, ptrdiff_t o,        \
                                        ptrdiff_t w, ptrdiff_t i, T *restrict dx__owi)         \
    {                                                                                          \
        FG_OMP_FOR(o > 1 && o * i > FG_OMP_MIN_CHEAP, o * i)                                          \
        for (ptrdiff_t r = 0; r < o; r++)                                                      \
            for (ptrdiff_t j = 0; j < i; j++)                                                  \
                dx__owi[(r * w + idx__oi[r * i + j]) * i + j] = dy__oi[r * i + j];             \
    }                                                                                          \
                                                                                               \
    /* One row of maxout: h groups of p. Inlined with p a constant for the common p = 2, 3, 4, \
     * so that the strided loads become shuffles instead of gathers. */                        \
    FG_INLINE void fg_maxout_row_##S(const T *restrict z__hp, ptrdiff_t h, ptrdiff_t p,        \
                                     T *restrict y__h, ptrdiff_t *restrict idx__h)             \
    {                                                                                          \
        for (ptrdiff_t u = 0; u < h; u++) {                                                    \
            y__h[u] = z__hp[u * p];                                                            \
            idx__h[u] = 0;                                                                     \
        }                                                                                      \
        for (ptrdiff_t k = 1; k < p; k++)                                                      \
            for (ptrdiff_t u = 0; u < h; u++) {                                                \
                T v = z__hp[u * p + k], b = y__h[u];                                           \
                ptrdiff_t c = idx__h[u];                                                       \
                int take = FG_TAKES(v, b);                                                     \
                y__h[u] = take ? v : b;                                                        \
                idx__h[u] = take ? k : c;                                                      \
            }                                                                                  \
    }                                                                                          \
                                                                                               \
    FG_TARGETS void fg_maxout_forward_##S(const T *restrict z__nhp, ptrdiff_t n, ptrdiff_t h,  \
                                          ptrdiff_t p, T *restrict y__nh,                      \
                                          ptrdiff_t *restrict idx__nh)                         \
    {                                                                                          \
        FG_OMP_FOR(n > 1 && n * h * p > FG_OMP_MIN_CHEAP, n * h * p)                                      \
        for (ptrdiff_t r = 0; r < n; r++) {                                                    \
            const T *z = z__nhp + r * h * p;                                                   \
            T *y = y__nh + r * h;                                                              \
            ptrdiff_t *idx = idx__nh + r * h;                                                  \
            switch (p) {                                                                       \
            case 2: fg_maxout_row_##S(z, h, 2, y, idx); break;                                 \
            case 3: fg_maxout_row_##S(z, h, 3, y, idx); break;                                 \
            case 4: fg_maxout_row_##S(z, h, 4, y, idx); break;                                 \
            default: fg_maxout_row_##S(z, h, p, y, idx);                                       \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    FG_TARGETS void fg_maxout_backward_##S(const T *restrict dy__nh,                           \
                                           const ptrdiff_t *restrict idx__nh, ptrdiff_t n,     \
                                           ptrdiff_t h, ptrdiff_t p, T *restrict dz__nhp)      \
    {                                                                                          \
        FG_OMP_FOR(n > 1 && n * h * p > FG_OMP_MIN_CHEAP, n * h * p)                                      \
        for (ptrdiff_t r = 0; r < n; r++)                                                      \
            for (ptrdiff_t u = 0; u < h; u++)                                                  \
                dz__nhp[(r * h + u) * p + idx__nh[r * h + u]] = dy__nh[r * h + u];             \
    }

FG_DEFINE_ROUTING(float, f32)
FG_DEFINE_ROUTING(double, f64)
