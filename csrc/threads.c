#include "common.h"
#include "adapt.h"

#ifdef _OPENMP
#include <omp.h>
#endif

int fg_num_threads = 1;

void fg_set_num_threads(int n)
{
    fg_num_threads = n > 0 ? n : 1;
}

int fg_get_num_threads(void)
{
    return fg_num_threads;
}

int fg_default_num_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads(); /* OMP_NUM_THREADS when set, else the number of cores */
#else
    return 1;
#endif
}

int fg_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

fg_team_t fg_team_begin(const char *site, int cond, ptrdiff_t work)
{
    fg_team_t team = {1, 1, 0, 0};
    if (cond && fg_num_threads > 1) {
        team.key = fg_adapt_key((int)((uintptr_t)site >> 4), work, 0, 0);
        team.threads = fg_adapt_threads(team.key, fg_num_threads);
        team.t0 = fg_now_ns();
    }
    return team;
}

void fg_team_end(fg_team_t *team)
{
    if (team->key)
        fg_adapt_record(team->key, team->threads, fg_now_ns() - team->t0);
    team->once = 0;
}
