# The argument checks the kernel bindings share (_kernels, _norm, _optim): inline functions that
# each module cimports, so one text decides what a C kernel may assume and every binding says the
# same thing about the same mistake. Each raises (with the GIL) before any `nogil` code runs.
cimport numpy as cnp


cdef inline int check_layout(cnp.ndarray a, str op, str arg) except -1:
    """Raise unless `a` is C-contiguous, aligned and in native byte order (what C may assume)."""
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{op}: {arg} must be C-contiguous")
    if not cnp.PyArray_ISALIGNED(a):
        raise ValueError(f"{op}: {arg} must be aligned (use numpy.require(a, requirements='CA'))")
    if not cnp.PyArray_ISNOTSWAPPED(a):
        raise TypeError(f"{op}: {arg} must be in native byte order, got {a.dtype.str}")
    return 0


cdef inline int check_ndarray(object a, str op, str arg) except -1:
    if not isinstance(a, cnp.ndarray):
        raise TypeError(f"{op}: {arg} must be a numpy.ndarray, got {type(a).__name__}")
    return 0


cdef inline int check_float(object a, str op, str arg) except -1:
    """Raise unless `a` is a C-contiguous, aligned, native float32/float64 ndarray; return its
    type number."""
    check_ndarray(a, op, arg)
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int t = cnp.PyArray_TYPE(arr)
    if t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64:
        raise TypeError(f"{op}: {arg} must be float32 or float64, got {arr.dtype}")
    check_layout(arr, op, arg)
    return t
