/* What every fastgrad kernel shares: the thread setting, the OpenMP loop macro and the
 * multi-versioning attribute. Plain C99, no Python.
 *
 * Threads. A kernel whose work is large enough splits its outer loop over fg_num_threads OpenMP
 * threads with schedule(static), so results never depend on the thread count (each output is
 * computed by one thread in one fixed order). Below the thresholds it runs on the calling thread
 * alone: starting the team costs more than it saves. Without OpenMP (the build falls back when
 * the compiler lacks -fopenmp) FG_OMP_FOR expands to nothing and every kernel is serial.
 *
 * Thresholds, measured on the 2-core AMD EPYC (Zen 4, KVM) this was built on, float32, median of
 * interleaved runs, 1 vs 2 threads (see docs/ARCHITECTURE.md):
 *   FG_OMP_MIN_CHEAP  elements of a memory-bound pass (relu, masks, routing, backward rules);
 *   FG_OMP_MIN_EXP    elements of a pass that evaluates exp/expm1 per element (sigmoid, tanh, elu,
 *                     the softmax loss; for the losses the count is N*C).
 */
#ifndef FASTGRAD_COMMON_H
#define FASTGRAD_COMMON_H

#include <stddef.h>

#define FG_OMP_MIN_CHEAP 200000
#define FG_OMP_MIN_EXP 50000

/* The number of threads a parallel kernel uses; >= 1. Set from Python (fg.set_num_threads). */
extern int fg_num_threads;
void fg_set_num_threads(int n);
int fg_get_num_threads(void);
/* OpenMP's default team size (respects OMP_NUM_THREADS); 1 without OpenMP. */
int fg_default_num_threads(void);
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

/* FG_OMP_FOR(cond) placed right before a for loop: split it over the threads when cond holds. */
#ifdef _OPENMP
#define FG_OMP_FOR(cond)                                                                       \
    _Pragma(FG_STR(omp parallel for schedule(static) num_threads(fg_num_threads) if (cond)))
#else
#define FG_OMP_FOR(cond)
#endif

#endif
