#include "elementwise.h"

#include "activations.h"
#include "common.h"
#include "fgmath.h"

/* The gates' forward and derivative are the functions of activations.h, shared with the fused
 * affine pass (affine.c); here each is one loop over n elements, split over threads above the
 * activation's threshold (its row in FG_ACTIVATION_LIST).
 *
 * Loops load every input into a local before a select (`c ? a : b`): a load or an arithmetic
 * operation that appears in one arm only is not if-converted, and the loop stays scalar.
 *
 * One template, instantiated for float and double. EXP_NEG, EXPM1_NEG: exp and expm1 of
 * arguments <= 0 (fgmath.h); ABS, COPYSIGN: fabsf/copysignf or fabs/copysign (the gates get
 * theirs through activations.h). */

/* y = f(x) and dx = f'(x) dy (from s = y or x) of activation `name`, p its parameter or 0.
 * Below the threshold the loop runs outside any OpenMP region: a region that its `if` clause
 * makes serial still costs ~400 instructions in libgomp, more than the gate itself on the tape's
 * one-element tensors. Both loops compute each element with the same inline function. */
#define FG_GATE_FORWARD(T, S, name, CODE, x__n, y__n, n, p)                                    \
    if (n <= fg_activations[FG_ACT_##CODE].omp_min_forward) {                                  \
        for (ptrdiff_t i = 0; i < n; i++)                                                      \
            y__n[i] = fg_##name##_##S(x__n[i], p);                                             \
        return;                                                                                \
    }                                                                                          \
    FG_OMP_FOR(1, n)                                                                           \
    for (ptrdiff_t i = 0; i < n; i++)                                                          \
        y__n[i] = fg_##name##_##S(x__n[i], p);
#define FG_GATE_BACKWARD(T, S, name, CODE, dy__n, s__n, dx__n, n, p)                           \
    if (n <= fg_activations[FG_ACT_##CODE].omp_min_backward) {                                 \
        for (ptrdiff_t i = 0; i < n; i++)                                                      \
            dx__n[i] = fg_##name##_grad_##S(dy__n[i], s__n[i], p);                             \
        return;                                                                                \
    }                                                                                          \
    FG_OMP_FOR(1, n)                                                                           \
    for (ptrdiff_t i = 0; i < n; i++)                                                          \
        dx__n[i] = fg_##name##_grad_##S(dy__n[i], s__n[i], p);

#define FG_DEFINE_ELEMENTWISE(T, S, EXP_NEG, EXPM1_NEG, ABS, COPYSIGN)                         \
    FG_TARGETS                                                                                 \
    void fg_relu_forward_##S(const T *restrict x__n, T *restrict y__n, ptrdiff_t n)            \
    {                                                                                          \
        FG_GATE_FORWARD(T, S, relu, RELU, x__n, y__n, n, (T)0)                                 \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_relu_backward_##S(const T *restrict dy__n, const T *restrict y__n,                 \
                              T *restrict dx__n, ptrdiff_t n)                                  \
    {                                                                                          \
        FG_GATE_BACKWARD(T, S, relu, RELU, dy__n, y__n, dx__n, n, (T)0)                        \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_leaky_relu_forward_##S(const T *restrict x__n, T *restrict y__n, ptrdiff_t n,      \
                                   T slope)                                                    \
    {                                                                                          \
        FG_GATE_FORWARD(T, S, leaky_relu, LEAKY_RELU, x__n, y__n, n, slope)                    \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_leaky_relu_backward_##S(const T *restrict dy__n, const T *restrict x__n,           \
                                    T *restrict dx__n, ptrdiff_t n, T slope)                   \
    {                                                                                          \
        FG_GATE_BACKWARD(T, S, leaky_relu, LEAKY_RELU, dy__n, x__n, dx__n, n, slope)           \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_elu_forward_##S(const T *restrict x__n, T *restrict y__n, ptrdiff_t n, T alpha)    \
    {                                                                                          \
        FG_GATE_FORWARD(T, S, elu, ELU, x__n, y__n, n, alpha)                                  \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_elu_backward_##S(const T *restrict dy__n, const T *restrict x__n,                  \
                             T *restrict dx__n, ptrdiff_t n, T alpha)                          \
    {                                                                                          \
        FG_GATE_BACKWARD(T, S, elu, ELU, dy__n, x__n, dx__n, n, alpha)                         \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_sigmoid_forward_##S(const T *restrict x__n, T *restrict y__n, ptrdiff_t n)         \
    {                                                                                          \
        FG_GATE_FORWARD(T, S, sigmoid, SIGMOID, x__n, y__n, n, (T)0)                           \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_sigmoid_backward_##S(const T *restrict dy__n, const T *restrict y__n,              \
                                 T *restrict dx__n, ptrdiff_t n)                               \
    {                                                                                          \
        FG_GATE_BACKWARD(T, S, sigmoid, SIGMOID, dy__n, y__n, dx__n, n, (T)0)                  \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_tanh_forward_##S(const T *restrict x__n, T *restrict y__n, ptrdiff_t n)            \
    {                                                                                          \
        FG_GATE_FORWARD(T, S, tanh, TANH, x__n, y__n, n, (T)0)                                 \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_tanh_backward_##S(const T *restrict dy__n, const T *restrict y__n,                 \
                              T *restrict dx__n, ptrdiff_t n)                                  \
    {                                                                                          \
        FG_GATE_BACKWARD(T, S, tanh, TANH, dy__n, y__n, dx__n, n, (T)0)                        \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_maximum_forward_##S(const T *restrict a__n, const T *restrict b__n,                \
                                T *restrict y__n, ptrdiff_t n)                                 \
    {                                                                                          \
        FG_OMP_FOR(n > FG_OMP_MIN_CHEAP, n)                                                    \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            T a = a__n[i], b = b__n[i];                                                        \
            y__n[i] = (a >= b || a != a) ? a : b;                                              \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    FG_TARGETS                                                                                 \
    void fg_maximum_backward_##S(const T *restrict dy__n, const T *restrict a__n,              \
                                 const T *restrict b__n, T *restrict da__n,                    \
                                 T *restrict db__n, ptrdiff_t n)                               \
    {                                                                                          \
        FG_OMP_FOR(n > FG_OMP_MIN_CHEAP, n)                                                    \
        for (ptrdiff_t i = 0; i < n; i++) {                                                    \
            T dy = dy__n[i];                                                                   \
            T a = a__n[i], b = b__n[i];                                                        \
            int a_wins = a >= b || a != a; /* the operand forward returned (ties, NaN) */      \
            da__n[i] = a_wins ? dy : (T)0;                                                     \
            db__n[i] = a_wins ? (T)0 : dy;                                                     \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    void fg_gate_forward_##S(int act, const T *x__n, T *y__n, ptrdiff_t n, T p)                \
    {                                                                                          \
        switch (act) {                                                                         \
        case FG_ACT_RELU: fg_relu_forward_##S(x__n, y__n, n); break;                           \
        case FG_ACT_LEAKY_RELU: fg_leaky_relu_forward_##S(x__n, y__n, n, p); break;            \
        case FG_ACT_SIGMOID: fg_sigmoid_forward_##S(x__n, y__n, n); break;                     \
        case FG_ACT_TANH: fg_tanh_forward_##S(x__n, y__n, n); break;                           \
        case FG_ACT_ELU: fg_elu_forward_##S(x__n, y__n, n, p); break;                          \
        default: break;                                                                        \
        }                                                                                      \
    }                                                                                          \
                                                                                               \
    void fg_gate_backward_##S(int act, const T *dy__n, const T *s__n, T *dx__n, ptrdiff_t n,   \
                              T p)                                                             \
    {                                                                                          \
        switch (act) {                                                                         \
        case FG_ACT_RELU: fg_relu_backward_##S(dy__n, s__n, dx__n, n); break;                  \
        case FG_ACT_LEAKY_RELU: fg_leaky_relu_backward_##S(dy__n, s__n, dx__n, n, p); break;   \
        case FG_ACT_SIGMOID: fg_sigmoid_backward_##S(dy__n, s__n, dx__n, n); break;            \
        case FG_ACT_TANH: fg_tanh_backward_##S(dy__n, s__n, dx__n, n); break;                  \
        case FG_ACT_ELU: fg_elu_backward_##S(dy__n, s__n, dx__n, n, p); break;                 \
        default: break;                                                                        \
        }                                                                                      \
    }

FG_DEFINE_ELEMENTWISE(float, f32, fg_exp_neg_f32, fg_expm1_neg_f32, fabsf, copysignf)
FG_DEFINE_ELEMENTWISE(double, f64, fg_exp_neg_f64, fg_expm1_neg_f64, fabs, copysign)
