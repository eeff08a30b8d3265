/* The passes around the BLAS products of a fully connected layer z = x W + b, y = act(z).
 *
 * The matrix products themselves are BLAS calls made from fastgrad/_linalg.pyx; these kernels are
 * the one pass over the (n, m) output that goes with each direction:
 *   forward:  z[i, j] = (x W)[i, j] + b[j], then y = act(z) with the activation's own function
 *             (activations.h, the one the elementwise gate uses): in place on z when act' reads the
 *             output, into a separate y (z kept) when it reads the input (leaky_relu, elu);
 *   backward: dz[i, j] = dy[i, j] act'(z[i, j]) from the saved y or z, and in the same pass
 *             db[j] = sum_i dz[i, j], summed row by row from +0 (the order of NumPy's sum over
 *             axis 0, which the unfused x @ W + b uses, for M >= 2).
 * The activation codes are enum fg_activation (activations.h). Every kernel exists for float
 * (suffix _f32) and double (_f64). Buffers are row-major and contiguous; inputs are const. No
 * Python here: the Cython layer validates before calling. Large passes split over threads
 * (common.h) so that every output is computed by one thread in a fixed order.
 */
#ifndef FASTGRAD_AFFINE_H
#define FASTGRAD_AFFINE_H

#include <stddef.h>

#define FG_DECLARE_AFFINE(T, S)                                                                \
    /* z__nm[i, j] += b__m[j]; then y = act(z): over z__nm in place when y__nm is NULL (act'     \
     * reads the output), else into y__nm (act' reads the input, z__nm keeps it) */            \
    void fg_bias_act_forward_##S(T *z__nm, const T *b__m, T *y__nm, ptrdiff_t n, ptrdiff_t m,   \
                                 int act, T param);                                            \
    /* dz__nm = dy__nm act'(s__nm), s the saved y or z as act needs; db__m = column sums of     \
     * dz__nm (skipped if NULL). With act == FG_ACT_NONE dz__nm is not written (dz = dy; it    \
     * may be NULL, and so may s__nm). */                                                      \
    void fg_act_backward_colsum_##S(const T *dy__nm, const T *s__nm, T *dz__nm, T *db__m,       \
                                    ptrdiff_t n, ptrdiff_t m, int act, T param);

FG_DECLARE_AFFINE(float, f32)
FG_DECLARE_AFFINE(double, f64)

#undef FG_DECLARE_AFFINE

#endif
