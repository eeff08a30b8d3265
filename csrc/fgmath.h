/* exp and expm1 of non-positive arguments, branch-free so that loops calling them vectorize.
 *
 * Every transcendental a kernel needs is one of these: sigmoid uses exp(-|x|), tanh uses
 * expm1(-2|x|), ELU uses expm1(min(x, 0)) and the softmax exp(s - max s). Arguments are <= 0, so
 * nothing overflows. float uses the Cephes expf reduction and polynomial (under 1 ulp from the exact
 * value over [-104, 0], subnormal results included); double calls libm, for tight gradchecks.
 * NaN in gives NaN out; -inf gives exp = 0 and expm1 = -1.
 */
#ifndef FASTGRAD_FGMATH_H
#define FASTGRAD_FGMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* x = n ln2 + r, |r| <= ln2/2, for x in [-104, 0]; returns expm1(r) and sets *n. */
static inline float fg_expm1_reduced_f32(float x, int32_t *n)
{
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float t = x * 1.44269504088896341f + shifter;
    float k = t - shifter;
    int32_t tb, sb;
    memcpy(&tb, &t, sizeof tb);
    memcpy(&sb, &shifter, sizeof sb);
    *n = tb - sb; /* the integer k, read from the low mantissa bits of t */
    float r = x - k * 0.693359375f - k * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    return p * r * r + r;
}

/* 2^n for n in [-127, 0] (2^-127 is flushed to 0, which only ever multiplies an underflow). */
static inline float fg_pow2_f32(int32_t n)
{
    int32_t b = (n + 127) << 23;
    float s;
    memcpy(&s, &b, sizeof s);
    return s;
}

/* exp(x) for x <= 0, subnormal results included. */
static inline float fg_exp_neg_f32(float x)
{
    x = x < -104.0f ? -104.0f : x; /* exp(-104) rounds to 0 */
    int32_t n;
    float q = fg_expm1_reduced_f32(x, &n);
    int32_t n1 = n >> 1; /* two steps so that 2^n may be subnormal */
    return ((1.0f + q) * fg_pow2_f32(n1)) * fg_pow2_f32(n - n1);
}

/* expm1(x) = exp(x) - 1 for x <= 0, accurate near 0. */
static inline float fg_expm1_neg_f32(float x)
{
    x = x < -88.0f ? -88.0f : x; /* expm1(-88) rounds to -1 */
    int32_t n;
    float q = fg_expm1_reduced_f32(x, &n);
    float s = fg_pow2_f32(n);
    return s * q + (s - 1.0f); /* s - 1 is exact for the n that matter */
}

static inline double fg_exp_neg_f64(double x)
{
    return exp(x);
}

static inline double fg_expm1_neg_f64(double x)
{
    return expm1(x);
}

#endif
