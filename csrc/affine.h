/* The passes around the BLAS products of a fully connected layer z = x W + b, y = act(z).
 *
 * The matrix products themselves are BLAS calls made from fastgrad/_linalg.pyx; these kernels are
 * the one pass over the (n, m) output that goes with each direction:
 *   forward:  y[i, j] = act(z[i, j] + b[j]), in place on the product z = x W;
 *   backward: dz[i, j] = dy[i, j] act'(z[i, j]), computed from the saved output y, and in the same
 *             pass db[j] = sum_i dz[i, j].
 * Every kernel exists for float (suffix _f32) and double (_f64). Buffers are row-major and
 * contiguous; inputs are const. No Python here: the Cython layer validates before calling.
 */
#ifndef FASTGRAD_AFFINE_H
#define FASTGRAD_AFFINE_H

#include <stddef.h>

/* The activations that can be fused into an affine layer. `param` is the negative slope of
 * leaky_relu and the alpha of elu; both must be >= 0, so that act'(z) is a function of y = act(z)
 * (y > 0 exactly where z > 0). */
enum fg_activation {
    FG_ACT_NONE = 0,       /* y = z */
    FG_ACT_RELU = 1,       /* y = max(z, 0);            dy/dz = [y > 0]           (ReLU'(0) = 0) */
    FG_ACT_LEAKY_RELU = 2, /* y = z > 0 ? z : param z;  dy/dz = y > 0 ? 1 : param (at 0: param) */
    FG_ACT_SIGMOID = 3,    /* y = 1 / (1 + e^-z);       dy/dz = y (1 - y) */
    FG_ACT_TANH = 4,       /* y = tanh z;               dy/dz = 1 - y^2 */
    FG_ACT_ELU = 5         /* y = z > 0 ? z : param (e^z - 1); dy/dz = y > 0 ? 1 : y + param */
};

#define FG_DECLARE_AFFINE(T, S)                                                                \
    /* z__nm[i, j] = act(z__nm[i, j] + b__m[j]), in place */                                  \
    void fg_bias_act_forward_##S(T *z__nm, const T *b__m, ptrdiff_t n, ptrdiff_t m, int act,   \
                                 T param);                                                     \
    /* dz__nm = dy__nm * act'(from y__nm); db__m = column sums of dz__nm (skipped if NULL).     \
     * With act == FG_ACT_NONE dz__nm is not written (dz = dy; it may be NULL). */             \
    void fg_act_backward_colsum_##S(const T *dy__nm, const T *y__nm, T *dz__nm, T *db__m,       \
                                    ptrdiff_t n, ptrdiff_t m, int act, T param);

FG_DECLARE_AFFINE(float, f32)
FG_DECLARE_AFFINE(double, f64)

#undef FG_DECLARE_AFFINE

#endif
