#define _GNU_SOURCE
#include "adapt.h"

#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 256
#define SAMPLES 2 /* calls per measurement: the faster counts (the first call of a team is cold) */

enum { MEASURE_N, MEASURE_1, DECIDED, PROBING };

typedef struct {
    uint64_t key;
    int64_t best1;    /* the faster of the last SAMPLES calls on one thread, ns */
    int64_t prev1;    /* the last call on one thread */
    int64_t lastn;    /* the faster of the last SAMPLES calls on n threads, ns */
    int64_t prevn;    /* the last call on n threads */
    int64_t probe_at; /* when the losing choice is tried again */
    int64_t backoff;  /* the current interval between such tries */
    int64_t sample;   /* the fastest call of the measurement in progress */
    int phase;        /* MEASURE_N, MEASURE_1 (first measurements), DECIDED, PROBING (the loser) */
    int left;         /* calls left in the measurement in progress */
    int winner_was_n; /* the choice before the probe began */
} slot_t;

static slot_t slots[SLOTS];
static int64_t n_serial, n_parallel;

int64_t fg_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

uint64_t fg_adapt_key(int site, int64_t a, int64_t b, int64_t c)
{
    uint64_t h = (uint64_t)site * 0x9E3779B97F4A7C15ULL;
    h ^= (uint64_t)a + 0x632BE59BD9B4E019ULL + (h << 6) + (h >> 2);
    h ^= (uint64_t)b + 0x8CB92BA72F3D8DD7ULL + (h << 6) + (h >> 2);
    h ^= (uint64_t)c + 0xD6E8FEB86659FD93ULL + (h << 6) + (h >> 2);
    return h | 1; /* never 0, the empty slot */
}

static slot_t *lookup(uint64_t key)
{
    slot_t *s = &slots[(key >> 7) % SLOTS];
    if (s->key != key) {
        s->key = key;
        s->best1 = s->prev1 = s->lastn = s->prevn = 0;
        s->probe_at = 0;
        s->backoff = FG_ADAPT_REPROBE_NS;
        s->phase = MEASURE_N;
        s->left = SAMPLES;
        s->sample = 0;
    }
    return s;
}

static int n_wins(const slot_t *s)
{
    return s->lastn < s->best1;
}

static void stalled(int64_t now);
static int64_t since_stall;

/* --- cores other processes are using: a team is not even tried on a core that is not free ---- */

#define OTHERS_WINDOW_NS 200000000LL /* how often the machine's CPU time is read again (0.2 s) */

static double others_forced = -1;  /* a test's value (>= 0), else measured */
static double others_cores = 0;    /* cores used by other processes over the last window */
static int64_t others_wall = 0;    /* when the window began */
static double others_busy = -1;    /* the machine's busy CPU seconds then (-1: not yet read) */
static double others_self = 0;     /* this process's CPU seconds then */
static int others_known = 0;       /* whether others_cores holds a measurement yet */
static long online_cpus = 0;       /* cores; sysconf reads a file, so once per window */

/* A team call that took far longer than this call site's known time waited for a core that another
 * process took since the last estimate (the estimate lags by up to a window). One such stall alone
 * may be an interrupt or another process's burst of a few milliseconds (on the quiet 2-core VM,
 * about one in 5000 team calls of two-thread mnist steps); a second one within STALL_CONFIRM team
 * calls (at any call site; beside a process that holds a core, 2-4% of them stalled) stops every
 * team until a new window, opened at that moment, has been read; for twice as long (up to 8 windows) when it happens again within a
 * window of the last stop's end (the estimate keeps missing a load, e.g. one forced for tests).
 * After that a core counts as taken from 0.25 of a core (else 0.5) for 4 s: a load
 * that comes and goes makes a team wait often, and one wait costs more (a time slice of the other
 * process, 1-40 ms) than a second thread saves in many calls. */
#define STALL_MIN_NS 1000000LL /* a stall: slower than twice the known time, and by at least 1 ms */
#define STALL_CONFIRM 64       /* team calls (with a known time) within which a second stall counts */
#define STALL_FORGET_NS (20 * OTHERS_WINDOW_NS) /* how long the lower threshold holds after */
static int64_t stall_until = 0;     /* no team before this */
static int64_t stop_ns = OTHERS_WINDOW_NS; /* how long the last stop lasted */
static int64_t since_stall = -1;    /* team calls with a known time since the last stall (-1: none) */
static int64_t stall_confirmed = 0; /* when a second stall in a row last stopped the teams */
static int64_t n_stalls = 0;        /* stalls since reset (statistics) */

/* The machine's busy CPU time in seconds (the first line of /proc/stat, in USER_HZ ticks), or -1
 * where there is no such file (not Linux): then nothing is capped. */
static double machine_busy_seconds(void)
{
    static long hz = 0;
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return -1;
    int got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                     &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (got < 4)
        return -1;
    if (hz <= 0)
        hz = sysconf(_SC_CLK_TCK) > 0 ? sysconf(_SC_CLK_TCK) : 100;
    /* user nice system [idle iowait] irq softirq steal */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)hz;
}

static double self_seconds(void)
{
    struct rusage r;
    if (getrusage(RUSAGE_SELF, &r) != 0)
        return 0;
    return (double)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) + 1e-6 * (double)(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

/* The machine's busy CPU time less this process's own since the window began, read now, and a
 * new window opened (called only when a window is over, or on a stall). */
static void read_window(int64_t now)
{
    double busy = machine_busy_seconds();
    double self = self_seconds();
    online_cpus = 0; /* read again at the next team call (a core may have gone offline) */
    if (busy < 0)
        return;
    if (others_busy >= 0 && now > others_wall) {
        double others = (busy - others_busy) - (self - others_self);
        double cores = others / ((double)(now - others_wall) * 1e-9);
        others_cores = cores > 0 ? cores : 0;
        others_known = 1;
    }
    others_busy = busy;
    others_self = self;
    others_wall = now;
}

double fg_adapt_others(void)
{
    if (others_forced >= 0)
        return others_forced;
    int64_t now = fg_now_ns();
    /* a new estimate once a window is over; the first one as soon as 50 ms have passed (the window
     * opened at import), so that the first products already know the load */
    int64_t window = others_known ? OTHERS_WINDOW_NS : OTHERS_WINDOW_NS / 4;
    if (others_busy >= 0 && now - others_wall < window)
        return others_cores;
    read_window(now);
    return others_cores;
}

void fg_adapt_force_others(double cores)
{
    others_forced = cores;
}

static void stalled(int64_t now)
{
    n_stalls++;
    int confirmed = since_stall >= 0 && since_stall < STALL_CONFIRM;
    since_stall = confirmed ? -1 : 0; /* after a stop, a new one takes two stalls again */
    if (!confirmed)
        return;
    stall_confirmed = now;
    if (stall_until != 0 && now - stall_until < OTHERS_WINDOW_NS)
        stop_ns = stop_ns < 8 * OTHERS_WINDOW_NS ? 2 * stop_ns : stop_ns;
    else
        stop_ns = OTHERS_WINDOW_NS;
    stall_until = now + stop_ns;
    if (others_forced < 0) { /* what came before the stall no longer describes the load */
        others_busy = -1;
        read_window(now);
    }
}

/* The team size the free cores allow: n less the cores other processes keep busy (at least 1). */
static int free_cores(int n)
{
    if (online_cpus == 0)
        online_cpus = sysconf(_SC_NPROCESSORS_ONLN);
    long cpus = online_cpus;
    if (cpus < 1)
        return n;
    int64_t now = fg_now_ns();
    if (now < stall_until)
        return 1;
    double others = fg_adapt_others();
    if (others_forced < 0 && !others_known && others_busy >= 0)
        return 1; /* the first estimate is not in yet (50 ms after import): do not guess "free" */
    int lowered = stall_confirmed != 0 && now - stall_confirmed < STALL_FORGET_NS;
    int taken = (int)(others + (lowered ? 0.75 : 0.5));
    if (taken == 0)
        return n; /* the setting rules (even above the core count, if asked for) */
    int free = (int)cpus - taken;
    if (free < 1)
        free = 1;
    return n < free ? n : free;
}

int fg_adapt_threads(uint64_t key, int n)
{
    if (n <= 1)
        return 1;
    n = free_cores(n);
    if (n <= 1)
        return 1;
    slot_t *s = lookup(key);
    switch (s->phase) {
    case MEASURE_N:
        return n;
    case MEASURE_1:
        return 1;
    case PROBING:
        return s->winner_was_n ? 1 : n;
    default:
        break;
    }
    int64_t now = fg_now_ns();
    if (now >= s->probe_at) { /* try the losing choice again */
        s->winner_was_n = n_wins(s);
        s->phase = PROBING;
        s->left = SAMPLES;
        s->sample = 0;
        return s->winner_was_n ? 1 : n;
    }
    return n_wins(s) ? n : 1;
}

void fg_adapt_record(uint64_t key, int threads, int64_t ns)
{
    slot_t *s = lookup(key);
    if (ns < 1)
        ns = 1;
    if (threads == 1)
        n_serial++;
    else
        n_parallel++;
    if (threads > 1 && (s->phase == DECIDED || s->phase == PROBING)) {
        int64_t ref = s->lastn; /* what a team call here is known to take (or one thread, if less) */
        if (s->best1 > 0 && (ref <= 0 || s->best1 < ref))
            ref = s->best1;
        if (ref > 0 && ns > 2 * ref && ns - ref > STALL_MIN_NS)
            stalled(fg_now_ns());
        else if (ref > 0 && since_stall >= 0)
            since_stall++;
    }
    if (s->phase == DECIDED) {
        /* both choices are judged alike, by the faster of their last two calls: two slow team
         * calls in a row (a busy core) switch to one thread at once */
        if (threads == 1) {
            s->best1 = ns > s->prev1 ? s->prev1 : ns;
            s->prev1 = ns;
        } else {
            s->lastn = ns > s->prevn ? s->prevn : ns;
            s->prevn = ns;
        }
        return;
    }
    if (s->sample == 0 || ns < s->sample)
        s->sample = ns;
    if (--s->left > 0)
        return;
    /* a measurement is complete: the faster of its calls counts */
    if (threads == 1)
        s->best1 = s->prev1 = s->sample;
    else
        s->lastn = s->prevn = s->sample;
    if (s->phase == MEASURE_N) {
        s->phase = MEASURE_1;
        s->left = SAMPLES;
        s->sample = 0;
        return;
    }
    if (s->phase == PROBING) { /* confirmed: try less often; overturned: watch closely */
        if (n_wins(s) == s->winner_was_n) {
            if (s->backoff < 16 * FG_ADAPT_REPROBE_NS)
                s->backoff *= 2;
        } else {
            s->backoff = FG_ADAPT_REPROBE_NS;
        }
    }
    s->phase = DECIDED;
    s->probe_at = fg_now_ns() + s->backoff;
}

void fg_adapt_reset(void)
{
    for (int i = 0; i < SLOTS; i++)
        slots[i].key = 0;
    n_serial = n_parallel = 0;
    stall_until = stall_confirmed = 0;
    stop_ns = OTHERS_WINDOW_NS;
    since_stall = -1;
    n_stalls = 0;
}

void fg_adapt_counts(int64_t *serial, int64_t *parallel)
{
    *serial = n_serial;
    *parallel = n_parallel;
}

int64_t fg_adapt_stalls(void)
{
    return n_stalls;
}

/* ---- BLAS's thread count ---------------------------------------------------------------------- */

static void (*blas_set)(int) = NULL;
static int blas_current = -1;

int fg_blas_bind(void *symbol_in_caller)
{
    static const char *names[] = {"scipy_openblas_set_num_threads", "openblas_set_num_threads",
                                  "scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
                                  NULL};
    Dl_info info;
    if (!dladdr(symbol_in_caller, &info) || !info.dli_fname)
        return 0;
    void *lib = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (!lib)
        return 0;
    for (int i = 0; names[i] && !blas_set; i++)
        *(void **)&blas_set = dlsym(lib, names[i]); /* searches lib's dependencies too */
    dlclose(lib); /* NOLOAD took a reference; the library stays loaded by its importer */
    blas_current = -1;
    return blas_set != NULL;
}

int fg_blas_bound(void)
{
    return blas_set != NULL;
}

void fg_blas_set_threads(int n)
{
    if (blas_set && n != blas_current) {
        blas_set(n);
        blas_current = n;
    }
}

void fg_blas_forget(void)
{
    blas_current = -1;
}
