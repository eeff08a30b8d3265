"""Cython bindings of the C kernels in csrc/.

Each binding validates its arguments (ndarray, dtype float32/float64, C-contiguous, matching shapes),
allocates the output, and calls the C kernel with the GIL released. Nothing here is differentiable:
the op table in ops.py decides what is computed and what is saved.
"""
cimport numpy as cnp
import numpy as np

cnp.import_array()

cdef extern from "elementwise.h" nogil:
    void fg_relu_forward_f32(const float *x, float *y, Py_ssize_t n)
    void fg_relu_forward_f64(const double *x, double *y, Py_ssize_t n)
    void fg_relu_backward_f32(const float *dy, const float *y, float *dx, Py_ssize_t n)
    void fg_relu_backward_f64(const double *dy, const double *y, double *dx, Py_ssize_t n)
    void fg_sigmoid_forward_f32(const float *x, float *y, Py_ssize_t n)
    void fg_sigmoid_forward_f64(const double *x, double *y, Py_ssize_t n)
    void fg_sigmoid_backward_f32(const float *dy, const float *y, float *dx, Py_ssize_t n)
    void fg_sigmoid_backward_f64(const double *dy, const double *y, double *dx, Py_ssize_t n)

ctypedef void (*unary_f32)(const float *, float *, Py_ssize_t) noexcept nogil
ctypedef void (*unary_f64)(const double *, double *, Py_ssize_t) noexcept nogil
ctypedef void (*binary_f32)(const float *, const float *, float *, Py_ssize_t) noexcept nogil
ctypedef void (*binary_f64)(const double *, const double *, double *, Py_ssize_t) noexcept nogil


cdef int _check(object a, str op, str arg) except -1:
    """Raise unless `a` is a C-contiguous float32/float64 ndarray; return its type number."""
    if not isinstance(a, cnp.ndarray):
        raise TypeError(f"{op}: {arg} must be a numpy.ndarray, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int t = cnp.PyArray_TYPE(arr)
    if t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64:
        raise TypeError(f"{op}: {arg} must be float32 or float64, got {arr.dtype}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{op}: {arg} must be C-contiguous")
    return t


cdef int _check_same(object a, object b, str op, str arg_a, str arg_b) except -1:
    """Raise unless `a` and `b` are valid kernel buffers of one dtype and one shape."""
    cdef int ta = _check(a, op, arg_a)
    cdef int tb = _check(b, op, arg_b)
    if ta != tb:
        raise TypeError(f"{op}: {arg_a} is {a.dtype} but {arg_b} is {b.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"{op}: {arg_a} has shape {a.shape} but {arg_b} has shape {b.shape}")
    return ta


cdef cnp.ndarray _unary(object x, unary_f32 f32, unary_f64 f64, str op):
    cdef int t = _check(x, op, "x")
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef cnp.ndarray y = cnp.PyArray_EMPTY(xa.ndim, xa.shape, t, 0)
    cdef Py_ssize_t n = xa.size
    cdef void *px = cnp.PyArray_DATA(xa)
    cdef void *py = cnp.PyArray_DATA(y)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            f32(<const float *>px, <float *>py, n)
        else:
            f64(<const double *>px, <double *>py, n)
    return y


cdef cnp.ndarray _binary(object a, object b, binary_f32 f32, binary_f64 f64, str op, str arg_a,
                         str arg_b):
    cdef int t = _check_same(a, b, op, arg_a, arg_b)
    cdef cnp.ndarray aa = <cnp.ndarray>a
    cdef cnp.ndarray ba = <cnp.ndarray>b
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(aa.ndim, aa.shape, t, 0)
    cdef Py_ssize_t n = aa.size
    cdef void *pa = cnp.PyArray_DATA(aa)
    cdef void *pb = cnp.PyArray_DATA(ba)
    cdef void *po = cnp.PyArray_DATA(out)
    with nogil:
        if t == cnp.NPY_FLOAT32:
            f32(<const float *>pa, <const float *>pb, <float *>po, n)
        else:
            f64(<const double *>pa, <const double *>pb, <double *>po, n)
    return out


def relu_forward(x):
    """y = max(x, 0)."""
    return _unary(x, fg_relu_forward_f32, fg_relu_forward_f64, "relu_forward")


def relu_backward(dy, y):
    """dx = dy * [y > 0], from the saved output y."""
    return _binary(dy, y, fg_relu_backward_f32, fg_relu_backward_f64, "relu_backward", "dy", "y")


def sigmoid_forward(x):
    """y = 1 / (1 + exp(-x)), finite for every finite x."""
    return _unary(x, fg_sigmoid_forward_f32, fg_sigmoid_forward_f64, "sigmoid_forward")


def sigmoid_backward(dy, y):
    """dx = dy * y * (1 - y), from the saved output y."""
    return _binary(dy, y, fg_sigmoid_backward_f32, fg_sigmoid_backward_f64, "sigmoid_backward",
                   "dy", "y")
