#include "elementwise.h"

#include <math.h>

/* One template, instantiated for float and double (EXP, ABS: expf/fabsf or exp/fabs). */
#define FG_DEFINE_ELEMENTWISE(T, S, EXP, ABS)                                               \
    void fg_relu_forward_##S(const T *restrict x, T *restrict y, ptrdiff_t n)          \
    {                                                                                  \
        for (ptrdiff_t i = 0; i < n; i++)                                              \
            y[i] = x[i] > (T)0 ? x[i] : (T)0;                                          \
    }                                                                                  \
                                                                                       \
    void fg_relu_backward_##S(const T *restrict dy, const T *restrict y,               \
                              T *restrict dx, ptrdiff_t n)                             \
    {                                                                                  \
        for (ptrdiff_t i = 0; i < n; i++)                                              \
            dx[i] = y[i] > (T)0 ? dy[i] : (T)0;                                        \
    }                                                                                  \
                                                                                       \
    void fg_sigmoid_forward_##S(const T *restrict x, T *restrict y, ptrdiff_t n)       \
    {                                                                                  \
        /* exp of a non-positive number never overflows */                             \
        for (ptrdiff_t i = 0; i < n; i++) {                                            \
            T e = EXP(-ABS(x[i]));                                                    \
            T s = (T)1 / ((T)1 + e);                                                   \
            y[i] = x[i] >= (T)0 ? s : e * s;                                           \
        }                                                                              \
    }                                                                                  \
                                                                                       \
    void fg_sigmoid_backward_##S(const T *restrict dy, const T *restrict y,            \
                                 T *restrict dx, ptrdiff_t n)                          \
    {                                                                                  \
        for (ptrdiff_t i = 0; i < n; i++)                                              \
            dx[i] = dy[i] * y[i] * ((T)1 - y[i]);                                      \
    }

FG_DEFINE_ELEMENTWISE(float, f32, expf, fabsf)
FG_DEFINE_ELEMENTWISE(double, f64, exp, fabs)
