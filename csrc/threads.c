#include "common.h"

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
