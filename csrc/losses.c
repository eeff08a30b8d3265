#include "losses.h"

#include <math.h>

#include "common.h"
#include "fgmath.h"

/* The SVM counts active margins in an int (it vectorizes better than a 64-bit counter), over
 * chunks of at most this many classes, so rows of any length are counted exactly. */
#ifndef FG_SVM_CHUNK /* overridable (-D) only to test the chunking on small rows */
#define FG_SVM_CHUNK ((ptrdiff_t)1 << 30)
#endif

/* Row reductions are FG_SIMD loops (common.h): vectorized, in an order fixed by the compiled code,
 * so the results do not depend on the thread count. */

static double fg_sum_in_order(const double *x__n, ptrdiff_t n)
{
    double total = 0.0;
    for (ptrdiff_t r = 0; r < n; r++)
        total += x__n[r];
    return total;
}

#define FG_DEFINE_LOSSES(T, S, EXP_NEG)                                                        \
    FG_INLINE T fg_row_max_##S(const T *restrict s__c, ptrdiff_t c)                            \
    {                                                                                          \
        T m = s__c[0];                                                                         \
        if (c < FG_SIMD_MIN_ROW) {                                                             \
            for (ptrdiff_t k = 1; k < c; k++)                                                  \
                m = s__c[k] > m ? s__c[k] : m;                                                 \
        } else {                                                                               \
            FG_SIMD(reduction(max : m))                                                        \
            for (ptrdiff_t k = 0; k < c; k++)                                                  \
                m = s__c[k] > m ? s__c[k] : m;                                                 \
        }                                                                                      \
        return m;                                                                              \
    }                                                                                          \
                                                                                               \
    /* sum_k exp(s[k] - m), storing each term in e__c unless it is NULL */                     \
    FG_INLINE double fg_row_expsum_##S(const T *restrict s__c, ptrdiff_t c, T m,               \
                                       T *restrict e__c)                                       \
    {                                                                                          \
        T sum = 0;                                                                             \
        if (e__c) { /* a vectorized pass that stores, then the sum over the stored terms */    \
            for (ptrdiff_t k = 0; k < c; k++)                                                  \
                e__c[k] = EXP_NEG(s__c[k] - m);                                                \
            if (c < FG_SIMD_MIN_ROW) {                                                         \
                for (ptrdiff_t k = 0; k < c; k++)                                              \
                    sum += e__c[k];                                                            \
            } else {                                                                           \
                FG_SIMD(reduction(+ : sum))                                                    \
                for (ptrdiff_t k = 0; k < c; k++)                                              \
                    sum += e__c[k];                                                            \
            }                                                                                  \
        } else if (c < FG_SIMD_MIN_ROW) {                                                      \
            for (ptrdiff_t k = 0; k < c; k++)                                                  \
                sum += EXP_NEG(s__c[k] - m);                                                   \
        } else {                                                                               \
            FG_SIMD(reduction(+ : sum))                                                        \
            for (ptrdiff_t k = 0; k < c; k++)                                                  \
                sum += EXP_NEG(s__c[k] - m);                                                   \
        }                                                                                      \
        return sum;                                                                            \
    }                                                                                          \
                                                                                               \
    FG_TARGETS double fg_softmax_ce_##S(const T *restrict scores__nc,                          \
                                        const ptrdiff_t *restrict labels__n, ptrdiff_t n,      \
                                        ptrdiff_t c, T *restrict grad__nc,                     \
                                        double *restrict loss__n)                              \
    {                                                                                          \
        const T inv_n = (T)(1.0 / (double)n);                                                  \
        FG_OMP_FOR(n > 1 && n * c > FG_OMP_MIN_EXP, n * c)                                            \
        for (ptrdiff_t r = 0; r < n; r++) {                                                    \
            const T *s = scores__nc + r * c;                                                   \
            T *restrict g = grad__nc ? grad__nc + r * c : NULL;                                \
            ptrdiff_t y = labels__n[r];                                                        \
            T m = fg_row_max_##S(s, c);                                                        \
            double sum = fg_row_expsum_##S(s, c, m, g);                                        \
            loss__n[r] = log(sum) - (double)(s[y] - m);                                        \
            if (g) { /* g holds exp(s - m): scale to probabilities / n, subtract the one-hot */ \
                T scale = (T)(1.0 / (sum * (double)n));                                        \
                for (ptrdiff_t k = 0; k < c; k++)                                              \
                    g[k] *= scale;                                                             \
                g[y] -= inv_n;                                                                 \
            }                                                                                  \
        }                                                                                      \
        return fg_sum_in_order(loss__n, n) / (double)n;                                        \
    }                                                                                          \
                                                                                               \
    /* Over s[lo:hi] (not holding the label, hi - lo <= FG_SVM_CHUNK): the sum of the active   \
     * margins s[k] - sy + delta, their count in *count, and g[k] = [active] / n unless g is   \
     * NULL. A margin is active when it is > 0 or NaN (max(0, NaN) is NaN, and its gradient    \
     * goes to the NaN operand, as in fg_maximum): NaN scores or delta give a NaN loss. */     \
    FG_INLINE T fg_svm_chunk_##S(const T *restrict s, ptrdiff_t lo, ptrdiff_t hi, T sy,        \
                                 T delta, T inv_n, T *restrict g, ptrdiff_t *count)            \
    {                                                                                          \
        T loss = 0;                                                                            \
        int active = 0;                                                                        \
        if (hi - lo < FG_SIMD_MIN_ROW) {                                                       \
            for (ptrdiff_t k = lo; k < hi; k++) {                                              \
                T margin = s[k] - sy + delta;                                                  \
                int on = !(margin <= (T)0); /* > 0 or NaN */                                   \
                loss += on ? margin : (T)0;                                                    \
                active += on;                                                                  \
                if (g)                                                                         \
                    g[k] = on ? inv_n : (T)0;                                                  \
            }                                                                                  \
        } else if (g) {                                                                        \
            FG_SIMD(reduction(+ : loss, active))                                               \
            for (ptrdiff_t k = lo; k < hi; k++) {                                              \
                T margin = s[k] - sy + delta;                                                  \
                int on = !(margin <= (T)0); /* > 0 or NaN */                                   \
                loss += on ? margin : (T)0;                                                    \
                active += on;                                                                  \
                g[k] = on ? inv_n : (T)0;                                                      \
            }                                                                                  \
        } else {                                                                               \
            FG_SIMD(reduction(+ : loss, active))                                               \
            for (ptrdiff_t k = lo; k < hi; k++) {                                              \
                T margin = s[k] - sy + delta;                                                  \
                int on = !(margin <= (T)0); /* > 0 or NaN */                                   \
                loss += on ? margin : (T)0;                                                    \
                active += on;                                                                  \
            }                                                                                  \
        }                                                                                      \
        *count += active;                                                                      \
        return loss;                                                                           \
    }                                                                                          \
                                                                                               \
    /* fg_svm_chunk over s[lo:hi], in chunks whose count fits its int counter */               \
    FG_INLINE double fg_svm_range_##S(const T *restrict s, ptrdiff_t lo, ptrdiff_t hi, T sy,   \
                                      T delta, T inv_n, T *restrict g, ptrdiff_t *count)       \
    {                                                                                          \
        double loss = 0;                                                                       \
        for (ptrdiff_t a = lo; a < hi; a += FG_SVM_CHUNK) {                                    \
            ptrdiff_t b = hi - a > FG_SVM_CHUNK ? a + FG_SVM_CHUNK : hi;                       \
            loss += fg_svm_chunk_##S(s, a, b, sy, delta, inv_n, g, count);                     \
        }                                                                                      \
        return loss;                                                                           \
    }                                                                                          \
                                                                                               \
    FG_TARGETS double fg_svm_##S(const T *restrict scores__nc,                                 \
                                 const ptrdiff_t *restrict labels__n, ptrdiff_t n,             \
                                 ptrdiff_t c, T delta, T *restrict grad__nc,                   \
                                 double *restrict loss__n)                                     \
    {                                                                                          \
        const T inv_n = (T)(1.0 / (double)n);                                                  \
        FG_OMP_FOR(n > 1 && n * c > FG_OMP_MIN_CHEAP, n * c)                                          \
        for (ptrdiff_t r = 0; r < n; r++) {                                                    \
            const T *s = scores__nc + r * c;                                                   \
            T *restrict g = grad__nc ? grad__nc + r * c : NULL;                                \
            ptrdiff_t y = labels__n[r], count = 0;                                             \
            /* the classes before and after the label: no per-entry test of k != y */          \
            double loss = fg_svm_range_##S(s, 0, y, s[y], delta, inv_n, g, &count);            \
            loss += fg_svm_range_##S(s, y + 1, c, s[y], delta, inv_n, g, &count);              \
            if (g)                                                                             \
                g[y] = -(T)count * inv_n;                                                      \
            loss__n[r] = loss;                                                                 \
        }                                                                                      \
        return fg_sum_in_order(loss__n, n) / (double)n;                                        \
    }

FG_DEFINE_LOSSES(float, f32, fg_exp_neg_f32)
FG_DEFINE_LOSSES(double, f64, fg_exp_neg_f64)
