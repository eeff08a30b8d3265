#include "losses.h"

#include <math.h>

#include "common.h"
#include "fgmath.h"

/* Row reductions keep FG_LANES partial results (one per vector lane) and fold them in a fixed
 * order at the end: they vectorize without -ffast-math and do not depend on the thread count. */
#define FG_LANES 16

static double fg_sum_in_order(const double *x__n, ptrdiff_t n)
{
    double total = 0.0;
    for (ptrdiff_t r = 0; r < n; r++)
        total += x__n[r];
    return total;
}

#define FG_DEFINE_LOSSES(T, S, EXP_NEG)                                                        \
    static inline T fg_row_max_##S(const T *restrict s__c, ptrdiff_t c)                        \
    {                                                                                          \
        T lane[FG_LANES];                                                                      \
        for (int l = 0; l < FG_LANES; l++)                                                     \
            lane[l] = s__c[0];                                                                 \
        ptrdiff_t k = 0;                                                                       \
        for (; k + FG_LANES <= c; k += FG_LANES)                                               \
            for (int l = 0; l < FG_LANES; l++) {                                               \
                T v = s__c[k + l], b = lane[l];                                                \
                lane[l] = v > b ? v : b;                                                       \
            }                                                                                  \
        T m = lane[0];                                                                         \
        for (int l = 1; l < FG_LANES; l++)                                                     \
            m = lane[l] > m ? lane[l] : m;                                                     \
        for (; k < c; k++)                                                                     \
            m = s__c[k] > m ? s__c[k] : m;                                                     \
        return m;                                                                              \
    }                                                                                          \
                                                                                               \
    /* sum_k exp(s[k] - m), storing each term in e__c unless it is NULL */                     \
    static inline double fg_row_expsum_##S(const T *restrict s__c, ptrdiff_t c, T m,           \
                                           T *restrict e__c)                                   \
    {                                                                                          \
        T lane[FG_LANES] = {0};                                                                \
        ptrdiff_t k = 0;                                                                       \
        if (e__c) {                                                                            \
            for (; k + FG_LANES <= c; k += FG_LANES)                                           \
                for (int l = 0; l < FG_LANES; l++) {                                           \
                    T e = EXP_NEG(s__c[k + l] - m);                                            \
                    e__c[k + l] = e;                                                           \
                    lane[l] += e;                                                              \
                }                                                                              \
        } else {                                                                               \
            for (; k + FG_LANES <= c; k += FG_LANES)                                           \
                for (int l = 0; l < FG_LANES; l++)                                             \
                    lane[l] += EXP_NEG(s__c[k + l] - m);                                       \
        }                                                                                      \
        double sum = 0.0;                                                                      \
        for (int l = 0; l < FG_LANES; l++)                                                     \
            sum += lane[l];                                                                    \
        for (; k < c; k++) {                                                                   \
            T e = EXP_NEG(s__c[k] - m);                                                        \
            if (e__c)                                                                          \
                e__c[k] = e;                                                                   \
            sum += e;                                                                          \
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
        FG_OMP_FOR(n > 1 && n * c > FG_OMP_MIN_EXP)                                            \
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
    FG_TARGETS double fg_svm_##S(const T *restrict scores__nc,                                 \
                                 const ptrdiff_t *restrict labels__n, ptrdiff_t n,             \
                                 ptrdiff_t c, T delta, T *restrict grad__nc,                   \
                                 double *restrict loss__n)                                     \
    {                                                                                          \
        const T inv_n = (T)(1.0 / (double)n);                                                  \
        FG_OMP_FOR(n > 1 && n * c > FG_OMP_MIN_CHEAP)                                          \
        for (ptrdiff_t r = 0; r < n; r++) {                                                    \
            const T *s = scores__nc + r * c;                                                   \
            ptrdiff_t y = labels__n[r];                                                        \
            T sy = s[y];                                                                       \
            T lane[FG_LANES] = {0};                                                            \
            ptrdiff_t count = 0;                                                               \
            ptrdiff_t k = 0;                                                                   \
            for (; k + FG_LANES <= c; k += FG_LANES)                                           \
                for (int l = 0; l < FG_LANES; l++) {                                           \
                    T margin = s[k + l] - sy + delta;                                          \
                    int active = margin > (T)0 && k + l != y;                                  \
                    lane[l] += active ? margin : (T)0;                                         \
                    count += active;                                                           \
                    if (grad__nc)                                                              \
                        grad__nc[r * c + k + l] = active ? inv_n : (T)0;                       \
                }                                                                              \
            double loss = 0.0;                                                                 \
            for (int l = 0; l < FG_LANES; l++)                                                 \
                loss += lane[l];                                                               \
            for (; k < c; k++) {                                                               \
                T margin = s[k] - sy + delta;                                                  \
                int active = margin > (T)0 && k != y;                                          \
                loss += active ? margin : (T)0;                                                \
                count += active;                                                               \
                if (grad__nc)                                                                  \
                    grad__nc[r * c + k] = active ? inv_n : (T)0;                               \
            }                                                                                  \
            if (grad__nc)                                                                      \
                grad__nc[r * c + y] = -(T)count * inv_n;                                       \
            loss__n[r] = loss;                                                                 \
        }                                                                                      \
        return fg_sum_in_order(loss__n, n) / (double)n;                                        \
    }

FG_DEFINE_LOSSES(float, f32, fg_exp_neg_f32)
FG_DEFINE_LOSSES(double, f64, fg_exp_neg_f64)
