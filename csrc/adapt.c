#define _GNU_SOURCE
#include "adapt.h"

#include <dlfcn.h>
#include <stddef.h>
#include <time.h>

#define SLOTS 256

typedef struct {
    uint64_t key;
    int64_t best1;    /* fastest call seen on one thread, ns (0: none yet) */
    int64_t lastn;    /* last call on n threads, ns (0: none yet) */
    int64_t probe_at; /* when the losing choice is tried again */
    int64_t backoff;  /* the current interval between such tries */
    int probing;      /* the call in flight runs the losing choice */
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
        s->best1 = s->lastn = 0;
        s->probe_at = 0;
        s->backoff = FG_ADAPT_REPROBE_NS;
        s->probing = 0;
    }
    return s;
}

int fg_adapt_threads(uint64_t key, int n)
{
    if (n <= 1)
        return 1;
    slot_t *s = lookup(key);
    if (s->lastn == 0)
        return n; /* measure n threads first, */
    if (s->best1 == 0)
        return 1; /* then one */
    int winner = s->lastn < s->best1 ? n : 1;
    int64_t now = fg_now_ns();
    if (now >= s->probe_at) {
        s->probe_at = now + s->backoff;
        s->probing = 1;
        return winner == n ? 1 : n;
    }
    return winner;
}

void fg_adapt_record(uint64_t key, int threads, int64_t ns)
{
    slot_t *s = lookup(key);
    int had_both = s->lastn && s->best1;
    int before = had_both && s->lastn < s->best1;
    if (ns < 1)
        ns = 1;
    if (threads == 1) {
        n_serial++;
        if (s->best1 == 0 || ns < s->best1)
            s->best1 = ns;
    } else {
        n_parallel++;
        s->lastn = ns;
    }
    if (!had_both) {
        if (s->lastn && s->best1)
            s->probe_at = fg_now_ns() + s->backoff; /* both measured: the first choice is made */
    } else if (s->probing) {
        /* a probe that confirmed the winner: try less often; one that changed it: watch closely */
        if ((s->lastn < s->best1) == before) {
            if (s->backoff < 16 * FG_ADAPT_REPROBE_NS)
                s->backoff *= 2;
        } else {
            s->backoff = FG_ADAPT_REPROBE_NS;
        }
        s->probe_at = fg_now_ns() + s->backoff;
    }
    s->probing = 0;
}

void fg_adapt_reset(void)
{
    for (int i = 0; i < SLOTS; i++)
        slots[i].key = 0;
    n_serial = n_parallel = 0;
}

void fg_adapt_counts(int64_t *serial, int64_t *parallel)
{
    *serial = n_serial;
    *parallel = n_parallel;
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
