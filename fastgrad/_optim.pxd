# C-level entry points of fastgrad._optim: the optimizer updates of fastgrad/optim.py, one C pass
# over a parameter buffer each (csrc/optim.c), for another Cython module to call without Python
# (`from fastgrad._optim cimport adam_update, ...`). No validation here: the caller passes
# n-element, C-contiguous, aligned, native-order, writeable buffers of one dtype that do not overlap
# (fastgrad._optim.check_buffers checks exactly that, once, e.g. at capture).
#
# Arguments are the parameter group's hyperparameters as they are in `opt.param_groups[k]` (Python
# floats: read them at each call, a scheduler may have changed the lr) and, for Adam/AdamW, the
# parameter's step count t AFTER the increment: Optimizer.step() does `state["step"] += 1` and
# then the update, so the first update runs with t = 1. These functions compute what the pass
# needs in double exactly as optim.py did in Python (1.0 - beta1, sqrt(1.0 - beta2**t),
# lr / (1.0 - beta1**t), 1.0 - lr * weight_decay) and round each to the buffer type once, so a
# call equals the eager opt.step() bit for bit. For parameter i of an optimizer `opt` in group g:
#
#   SGD, g["momentum"] == 0:  sgd_update(w, dw, n, g["lr"], g["weight_decay"])
#   SGD, momentum != 0:       sgd_momentum_update(w, dw, v, n, g["lr"], g["momentum"],
#                                               g["weight_decay"])
#                             v = opt.state[i]["momentum_buffer"] (zeros of w's shape; optim.py
#                             allocates it if the group's momentum was switched on later)
#   RMSProp:                  rmsprop_update(w, dw, c, n, g["lr"], g["decay"], g["eps"],
#                                          g["weight_decay"])
#                             c = opt.state[i]["square_avg"]
#   Adam:                     adam_update(w, dw, m, v, n, g["lr"], beta1, beta2, g["eps"],
#                                       g["weight_decay"], t)    (beta1, beta2) = g["betas"]
#   AdamW:                    adamw_update(...same arguments...)   (decoupled decay)
#                             m = opt.state[i]["exp_avg"], v = opt.state[i]["exp_avg_sq"],
#                             t = opt.state[i]["step"] after the increment (>= 1)
#
# w = p.data, dw = p.grad, n = p.data.size; each function is over Cython's fused `floating`, the
# pointer types (p.data's dtype) choosing the float or double pass. Only parameters with a
# grad are updated and have their step advanced (Optimizer.step()); the caller then calls
# autograd.mark_modified(p) as step() does. weight_decay == 0 means no decay (skipped, not
# multiplied by 0).

from cython cimport floating

cdef void sgd_update(floating *w, const floating *dw, Py_ssize_t n, double lr,
                     double weight_decay) noexcept nogil
cdef void sgd_momentum_update(floating *w, const floating *dw, floating *v, Py_ssize_t n,
                              double lr, double momentum, double weight_decay) noexcept nogil
cdef void rmsprop_update(floating *w, const floating *dw, floating *c, Py_ssize_t n, double lr,
                         double decay, double eps, double weight_decay) noexcept nogil
cdef void adam_update(floating *w, const floating *dw, floating *m, floating *v, Py_ssize_t n,
                      double lr, double beta1, double beta2, double eps, double weight_decay,
                      Py_ssize_t t) noexcept nogil
cdef void adamw_update(floating *w, const floating *dw, floating *m, floating *v, Py_ssize_t n,
                       double lr, double beta1, double beta2, double eps, double weight_decay,
                       Py_ssize_t t) noexcept nogil
