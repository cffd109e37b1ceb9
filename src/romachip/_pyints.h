/* What the optional C modules outside engine/ (_tiles.c, perf/_events.c) share: int64 columns back to
 * Python as lists of ints. Include after Python.h. */
#ifndef ROMACHIP_PYINTS_H
#define ROMACHIP_PYINTS_H

#include <stdint.h>

/* a new list of the n ints of x (NULL with the exception set when out of memory) */
static inline PyObject *int_list(const int64_t *x, Py_ssize_t n) {
    PyObject *out = PyList_New(n);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLongLong(x[i]);
        if (!v) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, v);
    }
    return out;
}

#endif
