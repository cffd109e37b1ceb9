/* Sums and maxima over a Placement's tile table (~50,000 tiles for a 3B model on 256 units) in one pass
 * each, for the rules placement.py and perf/mapping.py state in NumPy (they run where this is not built;
 * tests hold both to the same numbers). Every column is a C-contiguous int64 array; sums are exact int64.
 *
 * tensor_figures(tensor, row_start, row_stop, code, scale, zero, macro_rows, tensors)
 *   -> ([tiles], [most rows on a tile], [most macro rows on a tile], [bits], [first tile in table order])
 *      per tensor (max from 0; first tile -1 for a tensor with no tile);
 * tensor_units(tensor, unit, row_start, tensors, units)
 *   -> ([unit of the tile of the least (row start, table index)], [the sorted units holding each tensor])
 *      per tensor (-1 and () without a tile; equal unit sets are one tuple object);
 * unit_row_sums(unit, tensor, row_start, row_stop, per_row, units)
 *   -> [sum over the unit's tiles of rows x per_row[tensor]] per unit. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

#include "_pyints.h"
#include <string.h>

#define TILES_ABI 1

typedef struct {
    Py_buffer view;
    const int64_t *x;
    Py_ssize_t n;
} Column;

static int column(PyObject *o, Column *c, const char *name) {
    if (PyObject_GetBuffer(o, &c->view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    const char *f = c->view.format;
    if (c->view.itemsize != 8 || !f || !strchr("lq", f[f[0] == '<' || f[0] == '=' ? 1 : 0]) || c->view.ndim != 1) {
        PyBuffer_Release(&c->view);
        PyErr_Format(PyExc_TypeError, "%s: expected a 1-D int64 array", name);
        return -1;
    }
    c->x = c->view.buf, c->n = c->view.shape[0];
    return 0;
}

static void release(Column *c, int k) {
    for (int i = 0; i < k; i++) PyBuffer_Release(&c[i].view);
}

/* k columns from args (all of one length), the rest of args parsed by fmt into the pointers after. */
static int columns(PyObject *const *objs, Column *c, int k, const char *const *names) {
    for (int i = 0; i < k; i++) {
        if (column(objs[i], &c[i], names[i]) < 0) {
            release(c, i);
            return -1;
        }
        if (c[i].n != c[0].n) {
            release(c, i + 1);
            PyErr_SetString(PyExc_ValueError, "tile columns of different lengths");
            return -1;
        }
    }
    return 0;
}

static int check_index(const Column *c, Py_ssize_t bound, const char *name) {
    for (Py_ssize_t i = 0; i < c->n; i++)
        if (c->x[i] < 0 || c->x[i] >= bound) {
            PyErr_Format(PyExc_ValueError, "%s %lld out of range 0..%zd", name, (long long)c->x[i], bound - 1);
            return -1;
        }
    return 0;
}

static PyObject *tensor_figures(PyObject *self, PyObject *args) {
    PyObject *o[7];
    Py_ssize_t nt;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOOn", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &nt)) return NULL;
    static const char *const names[] = {"tensor", "row_start", "row_stop", "code", "scale", "zero", "macro_rows"};
    Column c[7];
    if (nt < 0 || columns(o, c, 7, names) < 0) return nt < 0 ? PyErr_Format(PyExc_ValueError, "tensors < 0") : NULL;
    PyObject *result = NULL;
    int64_t *acc = calloc(5 * (size_t)(nt ? nt : 1), sizeof(int64_t));
    if (!acc) {
        PyErr_NoMemory();
        goto done;
    }
    if (check_index(&c[0], nt, "tensor") < 0) goto done;
    int64_t *tiles = acc, *rows = acc + nt, *rom = acc + 2 * nt, *bits = acc + 3 * nt, *first = acc + 4 * nt;
    for (Py_ssize_t t = 0; t < nt; t++) first[t] = -1;
    for (Py_ssize_t i = 0; i < c[0].n; i++) {
        int64_t t = c[0].x[i], r = c[2].x[i] - c[1].x[i], m = c[6].x[i];
        if (!tiles[t]++) first[t] = i;
        if (r > rows[t]) rows[t] = r;
        if (m > rom[t]) rom[t] = m;
        bits[t] += c[3].x[i] + c[4].x[i] + c[5].x[i];
    }
    PyObject *lists[5];
    int ok = 1;
    for (int k = 0; k < 5; k++) ok &= (lists[k] = int_list(acc + k * nt, nt)) != NULL;
    if (ok) result = PyTuple_Pack(5, lists[0], lists[1], lists[2], lists[3], lists[4]);
    for (int k = 0; k < 5; k++) Py_XDECREF(lists[k]);
done:
    free(acc);
    release(c, 7);
    return result;
}

static PyObject *tensor_units(PyObject *self, PyObject *args) {
    PyObject *o[3];
    Py_ssize_t nt, nu;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOnn", &o[0], &o[1], &o[2], &nt, &nu)) return NULL;
    if (nt < 0 || nu < 0) return PyErr_Format(PyExc_ValueError, "tensors and units must be >= 0");
    static const char *const names[] = {"tensor", "unit", "row_start"};
    Column c[3];
    if (columns(o, c, 3, names) < 0) return NULL;
    PyObject *result = NULL, *first_list = NULL, *members = NULL;
    size_t cells = (size_t)(nt ? nt : 1) * (size_t)(nu ? nu : 1);
    unsigned char *held = calloc(cells, 1);
    int64_t *first = malloc(sizeof(int64_t) * (nt ? nt : 1));
    Py_ssize_t *distinct = malloc(sizeof(Py_ssize_t) * (nt ? nt : 1)); /* tensors whose unit set is new */
    PyObject **sets = malloc(sizeof(PyObject *) * (nt ? nt : 1));
    Py_ssize_t n_distinct = 0;
    if (!held || !first || !distinct || !sets) {
        PyErr_NoMemory();
        goto done;
    }
    if (check_index(&c[0], nt, "tensor") < 0 || check_index(&c[1], nu, "unit") < 0) goto done;
    for (Py_ssize_t t = 0; t < nt; t++) first[t] = -1;
    for (Py_ssize_t i = 0; i < c[0].n; i++) {
        int64_t t = c[0].x[i];
        held[t * nu + c[1].x[i]] = 1;
        if (first[t] < 0 || c[2].x[i] < c[2].x[first[t]]) first[t] = i; /* ties: the first in table order */
    }
    for (Py_ssize_t t = 0; t < nt; t++) first[t] = first[t] < 0 ? -1 : c[1].x[first[t]];
    if (!(first_list = int_list(first, nt)) || !(members = PyList_New(nt))) goto done;
    for (Py_ssize_t t = 0; t < nt; t++) {
        const unsigned char *row = held + t * nu;
        PyObject *set = NULL;
        for (Py_ssize_t k = n_distinct - 1; k >= 0 && !set; k--) /* the latest first: neighbours share sets */
            if (!memcmp(row, held + distinct[k] * nu, nu)) set = sets[k];
        if (!set) {
            Py_ssize_t count = 0;
            for (Py_ssize_t u = 0; u < nu; u++) count += row[u];
            if (!(set = PyTuple_New(count))) goto done;
            for (Py_ssize_t u = 0, j = 0; u < nu; u++) {
                if (!row[u]) continue;
                PyObject *v = PyLong_FromSsize_t(u);
                if (!v) {
                    Py_DECREF(set);
                    goto done;
                }
                PyTuple_SET_ITEM(set, j++, v);
            }
            distinct[n_distinct] = t, sets[n_distinct++] = set; /* owned by `members` below */
        }
        Py_INCREF(set);
        PyList_SET_ITEM(members, t, set);
        if (distinct[n_distinct - 1] == t) Py_DECREF(set); /* a new set: its one reference is the list's */
    }
    result = PyTuple_Pack(2, first_list, members);
done:
    Py_XDECREF(first_list), Py_XDECREF(members);
    free(held), free(first), free(distinct), free(sets);
    release(c, 3);
    return result;
}

static PyObject *unit_row_sums(PyObject *self, PyObject *args) {
    PyObject *o[5];
    Py_ssize_t nu;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOn", &o[0], &o[1], &o[2], &o[3], &o[4], &nu)) return NULL;
    if (nu < 0) return PyErr_Format(PyExc_ValueError, "units must be >= 0");
    static const char *const names[] = {"unit", "tensor", "row_start", "row_stop"};
    Column c[4], per;
    if (columns(o, c, 4, names) < 0) return NULL;
    if (column(o[4], &per, "per_row") < 0) {
        release(c, 4);
        return NULL;
    }
    PyObject *result = NULL;
    int64_t *out = calloc(nu ? nu : 1, sizeof(int64_t));
    if (!out) {
        PyErr_NoMemory();
        goto done;
    }
    if (check_index(&c[0], nu, "unit") < 0 || check_index(&c[1], per.n, "tensor") < 0) goto done;
    for (Py_ssize_t i = 0; i < c[0].n; i++) out[c[0].x[i]] += (c[3].x[i] - c[2].x[i]) * per.x[c[1].x[i]];
    result = int_list(out, nu);
done:
    free(out);
    release(c, 4);
    PyBuffer_Release(&per.view);
    return result;
}

static PyMethodDef methods[] = {
    {"tensor_figures", tensor_figures, METH_VARARGS, "Per-tensor tiles, maxima, bits and first tile."},
    {"tensor_units", tensor_units, METH_VARARGS, "Per-tensor first-row unit and sorted unit sets."},
    {"unit_row_sums", unit_row_sums, METH_VARARGS, "Per-unit sums of rows x a per-tensor factor."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tiles", "Tile-table sums in one pass.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__tiles(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "ABI", TILES_ABI) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
