#include "affine.h"

#include <string.h>

#include "activations.h"
#include "common.h"

/* The loops of one activation `name` (its functions in activations.h), for the switch statements
 * below that FG_ACTIVATION_LIST generates: one case per activation, so that each inner loop is
 * branch-free and vectorizes. The bias is added first, as its own rounding (v = z + b), exactly
 * as the unfused `x @ W + b` does before the gate sees v. */

/* act' reads the output: y = f(z + b) over z in place */
#define FG_FORWARD_OUTPUT(T, S, name)                                                          \
    for (ptrdiff_t i = 0; i < n; i++) {                                                        \
        T *restrict zi = z__nm + i * m;                                                        \
        for (ptrdiff_t j = 0; j < m; j++) {                                                    \
            T v = zi[j] + b__m[j];                                                             \
            zi[j] = fg_##name##_##S(v, param);                                                 \
        }                                                                                      \
    }

/* act' reads the input: z += b kept for backward, y = f(z) written beside it */
#define FG_FORWARD_INPUT(T, S, name)                                                           \
    for (ptrdiff_t i = 0; i < n; i++) {                                                        \
        T *restrict zi = z__nm + i * m;                                                        \
        T *restrict yi = y__nm + i * m;                                                        \
        for (ptrdiff_t j = 0; j < m; j++) {                                                    \
            T v = zi[j] + b__m[j];                                                             \
            zi[j] = v;                                                                         \
            yi[j] = fg_##name##_##S(v, param);                                                 \
        }                                                                                      \
    }

#define FG_FORWARD_CASE(CODE, name, param_name, FROM, omp_fwd, omp_bwd, T, S)                  \
    case FG_ACT_##CODE:                                                                        \
        FG_OMP_FOR(n * m > (omp_fwd), n * m)                                                   \
        FG_FORWARD_##FROM(T, S, name)                                                          \
        break;

/* rows [i0, i1) x columns [j0, j1): dz = act'(s) dy, and db[j] += dz[i, j] in row order */
#define FG_BACKWARD_CASE(CODE, name, param_name, FROM, omp_fwd, omp_bwd, T, S)                 \
    case FG_ACT_##CODE:                                                                        \
        for (ptrdiff_t i = i0; i < i1; i++) {                                                  \
            const T *restrict gi = dy__nm + i * m;                                             \
            const T *restrict si = s__nm + i * m;                                              \
            T *restrict di = dz__nm + i * m;                                                   \
            if (db__m)                                                                         \
                for (ptrdiff_t j = j0; j < j1; j++) {                                          \
                    T d = fg_##name##_grad_##S(gi[j], si[j], param);                           \
                    di[j] = d;                                                                 \
                    db__m[j] += d;                                                             \
                }                                                                              \
            else                                                                               \
                for (ptrdiff_t j = j0; j < j1; j++)                                            \
                    di[j] = fg_##name##_grad_##S(gi[j], si[j], param);                         \
        }                                                                                      \
        break;

#define FG_DEFINE_AFFINE(T, S)                                                                 \
    FG_TARGETS                                                                                 \
    void fg_bias_act_forward_##S(T *restrict z__nm, const T *restrict b__m, T *restrict y__nm, \
                                 ptrdiff_t n, ptrdiff_t m, int act, T param)                   \
    {                                                                                          \
        switch (act) {                                                                         \
            FG_ACTIVATION_LIST(FG_FORWARD_CASE, T, S)                                          \
        default:                                                                               \
            break;                                                                             \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_act_backward_colsum_##S(const T *restrict dy__nm, const T *restrict s__nm,         \
                                    T *restrict dz__nm, T *restrict db__m, ptrdiff_t n,        \
                                    ptrdiff_t m, int act, T param)                             \
    {                                                                                          \
        if (act < 0 || act >= FG_ACT_COUNT)                                                    \
            return;                                                                            \
        if (db__m)                                                                             \
            memset(db__m, 0, (size_t)m * sizeof(T));                                           \
        /* Threads take blocks: of columns when db is summed (each column summed by one thread \
         * in row order, as serially), else of rows. One block per thread. */                 \
        ptrdiff_t rows = n, cols = m, row_blocks = 1, col_blocks = 1;                          \
        int parallel = 0;                                                                      \
        if (n * m > fg_activations[act].omp_min_backward && fg_num_threads > 1) {              \
            if (db__m) {                                                                       \
                cols = (m + fg_num_threads - 1) / fg_num_threads;                              \
                cols = cols < 16 ? 16 : (cols + 15) / 16 * 16; /* whole vectors */             \
                col_blocks = (m + cols - 1) / cols;                                            \
            } else {                                                                           \
                rows = (n + fg_num_threads - 1) / fg_num_threads;                              \
                row_blocks = (n + rows - 1) / rows;                                            \
            }                                                                                  \
            parallel = row_blocks * col_blocks > 1;                                            \
        }                                                                                      \
        (void)parallel;                                                                        \
        FG_OMP_FOR(parallel, n * m)                                                            \
        for (ptrdiff_t k = 0; k < row_blocks * col_blocks; k++) {                              \
            ptrdiff_t i0 = k / col_blocks * rows, j0 = k % col_blocks * cols;                  \
            ptrdiff_t i1 = i0 + rows < n ? i0 + rows : n;                                      \
            ptrdiff_t j1 = j0 + cols < m ? j0 + cols : m;                                      \
            if (act == FG_ACT_NONE) { /* dz = dy: only the column sums */                      \
                if (db__m)                                                                     \
                    for (ptrdiff_t i = i0; i < i1; i++) {                                      \
                        const T *restrict gi = dy__nm + i * m;                                 \
                        for (ptrdiff_t j = j0; j < j1; j++)                                    \
                            db__m[j] += gi[j];                                                 \
                    }                                                                          \
                continue;                                                                      \
            }                                                                                  \
            switch (act) {                                                                     \
                FG_ACTIVATION_LIST(FG_BACKWARD_CASE, T, S)                                     \
            default:                                                                           \
                break;                                                                         \
            }                                                                                  \
        }                                                                                      \
    }

FG_DEFINE_AFFINE(float, f32)
FG_DEFINE_AFFINE(double, f64)
