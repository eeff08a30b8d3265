/* What every fastgrad kernel shares: the thread setting, the OpenMP loop macro and the
 * multi-versioning attribute. Plain C99, no Python.
 *
 * Threads. A kernel whose work is large enough splits its outer loop over fg_num_threads OpenMP
 * threads with schedule(static), so results never depend on the thread count (each output is
 * computed by one thread in one fixed order). Below the thresholds it runs on the calling thread
 * alone: starting the team costs more than it saves. Without OpenMP (the build falls back when
 * the compiler lacks -fopenmp) FG_OMP_FOR expands to nothing and every kernel is serial.
 *
 * Thresholds, measured on the 2-core AMD EPYC (Zen 4, KVM) this was built on: float32, kernels
 * built with both thresholds 0, time with 2 threads / time with 1 thread, median of 31
 * interleaved rounds (min in brackets), by input size:
 *                   8k           16k          32k          64k          128k         1M
 *   relu forward    1.76 (1.22)  1.25 (1.04)  1.08 (0.94)  0.83 (0.76)  0.68 (0.71)  0.62 (0.85)
 *   relu backward   1.53 (1.23)  1.24 (1.14)  0.75 (0.74)  0.69 (0.66)  0.63 (0.60)  0.58 (1.03)
 *   max, last axis  1.02 (0.79)  0.92 (0.72)  0.83 (0.60)  0.62 (0.56)  0.62 (0.52)  0.65 (0.55)
 *   svm, C = 100    0.88 (0.77)  0.80 (0.67)  0.73 (0.62)  0.64 (0.59)  0.64 (0.60)  0.58 (0.59)
 *   sigmoid fwd     1.10 (1.00)  0.78 (0.74)  0.70 (0.63)  0.62 (0.60)  0.56 (0.53)  0.54 (0.54)
 *   tanh forward    1.04 (1.07)  0.87 (0.79)  0.70 (0.66)  0.63 (0.60)  0.56 (0.54)  0.54 (0.53)
 *   softmax, C=100  0.80 (0.78)  0.75 (0.68)  0.65 (0.65)  0.64 (0.60)  0.61 (0.56)  0.54 (0.54)
 * so a second thread pays from about 32k elements for memory-bound passes and 16k for exp
 * passes. A later, quieter run (after the omp simd rewrite of max and svm) put the crossovers
 * lower: relu 16k (0.74), max and svm 8-16k (0.80, 0.74 at 8k), sigmoid/tanh/softmax 4k (0.8).
 * The thresholds sit one step above the first run, since the machine is shared and a second thread
 * that has to wait for a busy core costs far more than it saves (medians of 2 to 30 times the
 * serial time were seen under load, which no threshold avoids: use fg.set_num_threads(1)).
 *   FG_OMP_MIN_CHEAP  elements of a memory-bound pass (relu, masks, routing, svm, backward rules);
 *   FG_OMP_MIN_EXP    elements of a pass that evaluates exp/expm1 per element (sigmoid, tanh, elu,
 *                     the softmax loss; for the losses the count is N*C).
 */
#ifndef FASTGRAD_COMMON_H
#define FASTGRAD_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifndef FG_OMP_MIN_CHEAP /* overridable (-D) only to re-measure */
#define FG_OMP_MIN_CHEAP 65536
#endif
#ifndef FG_OMP_MIN_EXP
#define FG_OMP_MIN_EXP 32768
#endif

/* The number of threads a parallel kernel uses; >= 1. Set from Python (fg.set_num_threads). */
extern int fg_num_threads;
void fg_set_num_threads(int n);
int fg_get_num_threads(void);
/* OpenMP's default team size (respects OMP_NUM_THREADS); 1 without OpenMP. */
int fg_default_num_threads(void);
/* Validation helper: the first k with idx[k] outside [0, stop), or -1 if there is none. */
ptrdiff_t fg_first_out_of_range(const ptrdiff_t *idx__n, ptrdiff_t n, ptrdiff_t stop);
/* 1 when the kernels were compiled with OpenMP, else 0 (and they are serial). */
int fg_openmp_enabled(void);

/* FG_TARGETS before a kernel's definition: GCC compiles it for AVX-512 (x86-64-v4), AVX2+FMA
 * (x86-64-v3) and the baseline, and the loader picks the best the CPU runs (ifunc). The exp
 * polynomial loops are 3-5x faster with AVX2 than with the SSE2 baseline. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) &&         \
    defined(__linux__) && !defined(FG_NO_TARGET_CLONES)
#define FG_TARGETS __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FG_TARGETS
#endif

#define FG_STR_(x) #x
#define FG_STR(x) FG_STR_(x)

/* FG_OMP_FOR(cond, work) placed right before a for loop: split it over the threads when `cond`
 * holds (the work is large enough) and, for work of that size at that kernel, a team has been
 * measured to beat one thread (csrc/adapt.h: a team that has to wait for a core another process
 * holds is 10-40 times slower, whatever the size). `work` (the element count `cond` compares) keys
 * the measurement. The loop is wrapped in a one-pass `for` that times it. */
typedef struct {
    int threads;  /* the team size of this call */
    int once;     /* the wrapping loop's condition: 1, then 0 */
    uint64_t key; /* 0: not measured (serial by setting or by size) */
    int64_t t0;
} fg_team_t;
fg_team_t fg_team_begin(const char *site, int cond, ptrdiff_t work);
void fg_team_end(fg_team_t *team);

#ifdef _OPENMP
#define FG_OMP_FOR(cond, work)                                                                 \
    for (fg_team_t fg_team_ = fg_team_begin(__func__, (cond), (work)); fg_team_.once;            \
         fg_team_end(&fg_team_))                                                               \
    _Pragma(FG_STR(omp parallel for schedule(static) num_threads(fg_team_.threads)              \
                   if (fg_team_.threads > 1)))
#else
#define FG_OMP_FOR(cond, work)
#endif

/* FG_SIMD(clauses) placed right before a for loop: `omp simd` with those clauses, e.g.
 * FG_SIMD(reduction(max : m)). GCC does not vectorize a float reduction (sum, max) without
 * leave to reorder it, which this gives for that loop alone; the order is then fixed by the
 * compiled code, so results are still reproducible. Active with -fopenmp or -fopenmp-simd
 * (setup.py defines FG_OPENMP_SIMD for the latter); otherwise the loop is scalar. */
#if defined(_OPENMP) || defined(FG_OPENMP_SIMD)
#define FG_SIMD(clauses) _Pragma(FG_STR(omp simd clauses))
#else
#define FG_SIMD(clauses)
#endif

/* Rows shorter than this take plain loops: an omp simd reduction over a handful of entries runs
 * in its scalar epilogue, which is 2-4x slower than a plain loop (softmax over 10 classes:
 * 23 us vs 10 us for 256 rows). */
#define FG_SIMD_MIN_ROW 32

/* Row helpers called from FG_TARGETS kernels must be inlined into each clone, or they run as
 * baseline code. */
#if defined(__GNUC__)
#define FG_INLINE static inline __attribute__((always_inline))
#else
#define FG_INLINE static inline
#endif

#endif
