/* Thread counts chosen by measurement, so that a second thread is used only while it pays.
 *
 * A parallel call that has to wait for a core another process holds can take 10-40 times as long as
 * the same call on one thread (the operating system gives the waiting thread a core only at its next
 * time slice). No size threshold avoids that, since it depends on the machine's load, not on the
 * problem. So every call site large enough to run in parallel keeps, per call site and shape (a
 * `key`), the time of its recent calls on one thread and on n threads (each the faster of the last
 * two: the first call of a team is cold, and one interrupted call should not decide), and runs on n
 * threads only while that is faster. The losing choice is tried again after a while
 * (FG_ADAPT_REPROBE_NS, doubling up to 16 times that while it keeps losing), so a machine that becomes
 * free (or busy) is noticed within about a second, at the price of one call in the losing mode.
 *
 * The table is small and direct-mapped; a key that collides with another evicts it (it is measured
 * again). Calls from several threads may race on a slot: that can only cost a wrong choice of thread
 * count for a while, never a wrong result (the kernels' results do not depend on the thread count).
 */
#ifndef FASTGRAD_ADAPT_H
#define FASTGRAD_ADAPT_H

#include <stdint.h>

#define FG_ADAPT_REPROBE_NS 250000000LL /* 0.25 s */

/* A key for call site `site` (a small constant per kernel) and the sizes of one call. */
uint64_t fg_adapt_key(int site, int64_t a, int64_t b, int64_t c);
/* How many threads (1 or n) the next call with `key` should use, given the setting n >= 1. */
int fg_adapt_threads(uint64_t key, int n);
/* fg_adapt_threads never gives more threads than the cores other processes leave free: the CPU
 * time of the whole machine (/proc/stat) less this process's own (getrusage), over the last 0.2 s,
 * rounded to cores. (A team on a core that another process holds waits for that core's time slices.)
 * fg_adapt_others returns that estimate; fg_adapt_force_others(c >= 0) fixes it for tests (c < 0:
 * measure again). Where /proc/stat is missing nothing is capped. Until the first estimate is in
 * (50 ms after import) no team is tried. A team call far slower than the call site's known time
 * (twice it, and by 1 ms: it waited for a core taken since the estimate) is a stall; a second one
 * within 64 team calls stops every team at once for a new window. fg_adapt_stalls counts them (reset by
 * fg_adapt_reset, which also lifts a stop). */
double fg_adapt_others(void);
void fg_adapt_force_others(double cores);
int64_t fg_adapt_stalls(void);
/* Record that a call with `key` on `threads` threads took `ns` nanoseconds. */
void fg_adapt_record(uint64_t key, int threads, int64_t ns);
/* Monotonic clock in nanoseconds. */
int64_t fg_now_ns(void);
/* Forget every measurement (after fg.set_num_threads, or for tests). */
void fg_adapt_reset(void);
/* Statistics for tests and the benchmark report: calls run on one thread / on n threads. */
void fg_adapt_counts(int64_t *serial, int64_t *parallel);

/* BLAS's own thread count, set per call. fg_blas_bind finds the BLAS library's
 * openblas_set_num_threads (under any of the names OpenBLAS builds use) in the dependency tree of the
 * shared object that contains `symbol_in_caller` (scipy's cython_blas module); returns 1 when found.
 * Without it (another BLAS) fg_blas_set_threads does nothing and BLAS keeps its own setting. */
int fg_blas_bind(void *symbol_in_caller);
void fg_blas_set_threads(int n); /* cached: calls BLAS only when n changes */
void fg_blas_forget(void);       /* someone else (threadpoolctl) changed BLAS's count */
int fg_blas_bound(void);

#endif
