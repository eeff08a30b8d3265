/* The activations, each defined once: its forward y = f(x) and its derivative, as static inline
 * functions per dtype. The elementwise gates (elementwise.c: fg.relu, fg.tanh, ...) and the fused
 * bias + activation pass of the affine layer (affine.c: fg.affine(..., activation=...)) both call
 * these, inlined into their FG_TARGETS loops, so the two paths compute the same bits for the same
 * input, NaN and infinities included.
 *
 * Adding an activation: a row of FG_ACTIVATION_LIST, its two functions below (both dtypes come
 * from one template), its elementwise kernels (elementwise.{h,c}) and their bindings; the fused
 * path, the enum, the Python name -> code table (fastgrad._linalg.ACTIVATIONS, read from
 * fg_activations) and what the fused layer saves all follow from the row.
 */
#ifndef FASTGRAD_ACTIVATIONS_H
#define FASTGRAD_ACTIVATIONS_H

#include <math.h>
#include <stddef.h>

#include "common.h"
#include "fgmath.h"

/* X(CODE, name, param, FROM, omp_forward, omp_backward, ...): one row per activation.
 *   name        the Python name: fg.<name>(x) and fg.affine(..., activation="<name>"); the row
 *               NONE is activation=None (y = z)
 *   param       the keyword of its scalar parameter p in fg.affine ("" when it has none)
 *   FROM        what its derivative reads: OUTPUT (y, which is all the gate saves) or INPUT (x:
 *               the fused layer then keeps z = x W + b and writes y separately)
 *   omp_*       above how many elements a pass splits over threads (common.h): exp passes pay
 *               from FG_OMP_MIN_EXP, memory-bound ones from FG_OMP_MIN_CHEAP
 *   ...         passed on to X (e.g. the dtype of a template)
 * Codes are the row numbers (FG_ACT_NONE = 0); keep NONE first. */
#define FG_ACTIVATION_LIST(X, ...)                                                             \
    X(NONE, none, "", OUTPUT, FG_OMP_MIN_CHEAP, FG_OMP_MIN_CHEAP, __VA_ARGS__)                 \
    X(RELU, relu, "", OUTPUT, FG_OMP_MIN_CHEAP, FG_OMP_MIN_CHEAP, __VA_ARGS__)                 \
    X(LEAKY_RELU, leaky_relu, "negative_slope", INPUT, FG_OMP_MIN_CHEAP, FG_OMP_MIN_CHEAP,     \
      __VA_ARGS__)                                                                             \
    X(SIGMOID, sigmoid, "", OUTPUT, FG_OMP_MIN_EXP, FG_OMP_MIN_CHEAP, __VA_ARGS__)             \
    X(TANH, tanh, "", OUTPUT, FG_OMP_MIN_EXP, FG_OMP_MIN_CHEAP, __VA_ARGS__)                   \
    X(ELU, elu, "alpha", INPUT, FG_OMP_MIN_EXP, FG_OMP_MIN_EXP, __VA_ARGS__)

#define FG_ACT_FROM_OUTPUT 0
#define FG_ACT_FROM_INPUT 1

#define FG_ACT_ENUM_(CODE, name, param, FROM, fwd, bwd, ...) FG_ACT_##CODE,
enum fg_activation { FG_ACTIVATION_LIST(FG_ACT_ENUM_, ) FG_ACT_COUNT };
#undef FG_ACT_ENUM_

/* The rows as data, for the bindings (names, parameter keywords) and the kernels (thresholds). */
struct fg_activation_info {
    const char *name;
    const char *param;
    int grad_from_input; /* FG_ACT_FROM_INPUT or FG_ACT_FROM_OUTPUT */
    ptrdiff_t omp_min_forward, omp_min_backward;
};

#define FG_ACT_INFO_(CODE, name, param, FROM, fwd, bwd, ...) {#name, param, FG_ACT_FROM_##FROM, fwd, bwd},
static const struct fg_activation_info fg_activations[FG_ACT_COUNT] = {
    FG_ACTIVATION_LIST(FG_ACT_INFO_, )};
#undef FG_ACT_INFO_

/* Per dtype T (suffix S), for each activation `name`:
 *   T fg_<name>_S(T x, T p)            y = f(x)
 *   T fg_<name>_grad_S(T g, T s, T p)  g f'(x), where s is y or x as the row's FROM says
 * p is the parameter (ignored by those without one). Kinks (DESIGN.md): ReLU'(0) = 0, leaky'(0) = p,
 * ELU'(0) = p. NaN in gives NaN out in every forward; the derivatives read a NaN as "not > 0".
 * Arguments are loaded into locals before a select (`c ? a : b`), so that GCC if-converts it and
 * the loops calling these vectorize. EXP_NEG, EXPM1_NEG: exp and expm1 of arguments <= 0
 * (fgmath.h); ABS, COPYSIGN: fabsf/copysignf or fabs/copysign. */
#define FG_DEFINE_ACTIVATIONS(T, S, EXP_NEG, EXPM1_NEG, ABS, COPYSIGN)                         \
    FG_INLINE T fg_none_##S(T x, T p)                                                          \
    {                                                                                          \
        (void)p;                                                                               \
        return x;                                                                              \
    }                                                                                          \
    FG_INLINE T fg_none_grad_##S(T g, T y, T p)                                                \
    {                                                                                          \
        (void)y, (void)p;                                                                      \
        return g;                                                                              \
    }                                                                                          \
                                                                                               \
    /* max(x, 0); NaN stays NaN */                                                             \
    FG_INLINE T fg_relu_##S(T x, T p)                                                          \
    {                                                                                          \
        (void)p;                                                                               \
        return (x > (T)0 || x != x) ? x : (T)0;                                                \
    }                                                                                          \
    /* g [y > 0]: y > 0 exactly where x > 0 */                                                 \
    FG_INLINE T fg_relu_grad_##S(T g, T y, T p)                                                \
    {                                                                                          \
        (void)p;                                                                               \
        return y > (T)0 ? g : (T)0;                                                            \
    }                                                                                          \
                                                                                               \
    /* x if x > 0 else p x  (any p) */                                                         \
    FG_INLINE T fg_leaky_relu_##S(T x, T p)                                                    \
    {                                                                                          \
        return x > (T)0 ? x : p * x;                                                           \
    }                                                                                          \
    /* g if x > 0 else p g: from the input, so that any sign of p works */                     \
    FG_INLINE T fg_leaky_relu_grad_##S(T g, T x, T p)                                          \
    {                                                                                          \
        return x > (T)0 ? g : p * g;                                                           \
    }                                                                                          \
                                                                                               \
    /* 1 / (1 + e^-x) without overflow: e = exp(-|x|) <= 1; 1/(1+e) for x >= 0, e/(1+e) below */ \
    FG_INLINE T fg_sigmoid_##S(T x, T p)                                                       \
    {                                                                                          \
        (void)p;                                                                               \
        T e = EXP_NEG(-ABS(x));                                                                \
        T s = (T)1 / ((T)1 + e);                                                               \
        return x >= (T)0 ? s : e * s;                                                          \
    }                                                                                          \
    FG_INLINE T fg_sigmoid_grad_##S(T g, T y, T p)                                             \
    {                                                                                          \
        (void)p;                                                                               \
        return g * y * ((T)1 - y);                                                             \
    }                                                                                          \
                                                                                               \
    /* m = expm1(-2|x|) in [-1, 0]; tanh|x| = -m / (2 + m), exact near 0, never overflows */   \
    FG_INLINE T fg_tanh_##S(T x, T p)                                                          \
    {                                                                                          \
        (void)p;                                                                               \
        T m = EXPM1_NEG((T)-2 * ABS(x));                                                       \
        return COPYSIGN(-m / ((T)2 + m), x);                                                   \
    }                                                                                          \
    FG_INLINE T fg_tanh_grad_##S(T g, T y, T p)                                                \
    {                                                                                          \
        (void)p;                                                                               \
        return g * ((T)1 - y * y);                                                             \
    }                                                                                          \
                                                                                               \
    /* x if x > 0 else p (e^x - 1); NaN stays NaN */                                           \
    FG_INLINE T fg_elu_##S(T x, T p)                                                           \
    {                                                                                          \
        T e = p * EXPM1_NEG(x > (T)0 ? (T)0 : x);                                              \
        return x > (T)0 ? x : e;                                                               \
    }                                                                                          \
    /* g if x > 0 else g p e^x: from the input; y + p would lose the small p e^x to           \
     * cancellation (44% off at x = -17 in float32) */                                         \
    FG_INLINE T fg_elu_grad_##S(T g, T x, T p)                                                 \
    {                                                                                          \
        T slope = p * EXP_NEG(x > (T)0 ? (T)0 : x);                                            \
        return g * (x > (T)0 ? (T)1 : slope);                                                  \
    }

FG_DEFINE_ACTIVATIONS(float, f32, fg_exp_neg_f32, fg_expm1_neg_f32, fabsf, copysignf)
FG_DEFINE_ACTIVATIONS(double, f64, fg_exp_neg_f64, fg_expm1_neg_f64, fabs, copysign)

#undef FG_DEFINE_ACTIVATIONS

#endif
