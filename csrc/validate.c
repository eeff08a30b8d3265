#include "common.h"

/* The first position k with idx[k] outside [0, stop), or -1 when every index is in range.
 * One vectorized pass (the common, valid case), then a scalar search only on failure. */
FG_TARGETS ptrdiff_t fg_first_out_of_range(const ptrdiff_t *restrict idx__n, ptrdiff_t n,
                                           ptrdiff_t stop)
{
    int bad = 0;
    FG_SIMD(reduction(| : bad))
    for (ptrdiff_t k = 0; k < n; k++)
        bad |= (idx__n[k] < 0) | (idx__n[k] >= stop);
    if (!bad)
        return -1;
    for (ptrdiff_t k = 0; k < n; k++)
        if (idx__n[k] < 0 || idx__n[k] >= stop)
            return k;
    return -1; /* not reached */
}
