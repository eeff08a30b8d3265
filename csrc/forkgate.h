/* A gate that makes os.fork() wait until no fastgrad BLAS call is running in another thread.
 *
 * Why: OpenBLAS (pthreads build, as in scipy's wheels) shuts its thread pool down in a
 * pthread_atfork "prepare" handler. If another thread is inside sgemm/dgemm at that moment, the
 * shutdown races with the running call and the forking thread (or later the child) waits for ever:
 * 8 of 8 trials hung here before this gate (a thread doing 400x400 products while the main thread
 * forked 5 times).
 *
 * How: every BLAS call of fastgrad/_linalg.pyx is bracketed by fg_gemm_enter/fg_gemm_exit, which
 * count the calls in flight. fastgrad/threads.py registers Python at-fork hooks, which run before
 * libc's fork() and so before OpenBLAS's handler: fg_fork_prepare closes the gate (new calls wait at
 * fg_gemm_enter) and waits until the count is 0; fg_fork_parent reopens it in the parent and
 * fg_fork_child resets it in the child (whose only thread is the one that forked). Enter and exit
 * are two atomic operations, nothing next to a matrix product. Waiting sleeps 50 us at a time.
 * Included by _linalg.pyx only (one copy of the counters). Header-only, no Python.
 */
#ifndef FASTGRAD_FORKGATE_H
#define FASTGRAD_FORKGATE_H

#if (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32)
#include <time.h>

static int fg_gemm_active = 0; /* BLAS calls in flight */
static int fg_gemm_closed = 0; /* forks being prepared (more than one if threads fork at once) */

static void fg_gate_pause(void)
{
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
}

static inline void fg_gemm_enter(void)
{
    for (;;) {
        while (__atomic_load_n(&fg_gemm_closed, __ATOMIC_SEQ_CST))
            fg_gate_pause();
        __atomic_add_fetch(&fg_gemm_active, 1, __ATOMIC_SEQ_CST);
        /* a fork that closed the gate between the two lines has not seen our count: step back */
        if (!__atomic_load_n(&fg_gemm_closed, __ATOMIC_SEQ_CST))
            return;
        __atomic_sub_fetch(&fg_gemm_active, 1, __ATOMIC_SEQ_CST);
    }
}

static inline void fg_gemm_exit(void)
{
    __atomic_sub_fetch(&fg_gemm_active, 1, __ATOMIC_SEQ_CST);
}

static inline void fg_fork_prepare(void)
{
    __atomic_add_fetch(&fg_gemm_closed, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&fg_gemm_active, __ATOMIC_SEQ_CST))
        fg_gate_pause();
}

static inline void fg_fork_parent(void)
{
    __atomic_sub_fetch(&fg_gemm_closed, 1, __ATOMIC_SEQ_CST);
}

static inline void fg_fork_child(void)
{
    __atomic_store_n(&fg_gemm_active, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&fg_gemm_closed, 0, __ATOMIC_SEQ_CST);
}

static inline int fg_fork_gate_enabled(void) { return 1; }

#else /* no GCC-style atomics, or Windows (which has no fork): no gate */
static inline void fg_gemm_enter(void) {}
static inline void fg_gemm_exit(void) {}
static inline void fg_fork_prepare(void) {}
static inline void fg_fork_parent(void) {}
static inline void fg_fork_child(void) {}
static inline int fg_fork_gate_enabled(void) { return 0; }
#endif

#endif
