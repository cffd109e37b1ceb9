/* The event loop of perf/event_kernel.py's `Simulator.run` in C: the same loop over the same int columns,
 * the same (time, kind, priority, sequence) order of events and (ready, priority, task) order of a
 * resource's queue, so the same schedule task for task (tests hold both to `ReferenceSimulator`).
 *
 * run(res, dur, prio, lag, end_lag, after, stream, resources) takes the graph's columns (lists of ints,
 * `after`/`stream` tuples of task ids) and returns (start, end, cause, cause_kind, stretched_by, makespan,
 * busy per resource, resources in order of first use), or None when the graph is not one of int64 numbers
 * (a float duration, a number past int64, an id out of range, a sum that would overflow): the Python loop
 * then runs it, with Python's ints. A task left unscheduled (a cycle) keeps end -1, as in Python. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

#include "../_pyints.h"

#define EVENTS_ABI 1
enum { FINISH = 0, STREAM = 1 };
enum { READY = 0, END = 1 }; /* at equal times, ends come after readiness of the same priority */

typedef struct {
    int64_t time, prio, seq;
    int64_t kind, task;
} Event;

typedef struct {
    int64_t ready, prio, task; /* the task id is the queue's sequence number */
} Queued;

static inline int event_less(const Event *a, const Event *b) {
    if (a->time != b->time) return a->time < b->time;
    if (a->kind != b->kind) return a->kind < b->kind;
    if (a->prio != b->prio) return a->prio < b->prio;
    return a->seq < b->seq;
}

static inline int queued_less(const Queued *a, const Queued *b) {
    if (a->ready != b->ready) return a->ready < b->ready;
    if (a->prio != b->prio) return a->prio < b->prio;
    return a->task < b->task;
}

/* Binary heaps (keys are unique, so any heap pops in the one order heapq would). */
#define HEAP_FUNCS(T, LESS)                                                                                   \
    static void T##_push(T *h, Py_ssize_t *size, T item) {                                                   \
        Py_ssize_t i = (*size)++;                                                                            \
        while (i > 0) {                                                                                      \
            Py_ssize_t parent = (i - 1) / 2;                                                                 \
            if (!LESS(&item, &h[parent])) break;                                                             \
            h[i] = h[parent];                                                                                \
            i = parent;                                                                                      \
        }                                                                                                    \
        h[i] = item;                                                                                         \
    }                                                                                                        \
    static T T##_pop(T *h, Py_ssize_t *size) {                                                               \
        T top = h[0], last = h[--(*size)];                                                                   \
        Py_ssize_t i = 0, n = *size;                                                                         \
        for (;;) {                                                                                           \
            Py_ssize_t c = 2 * i + 1;                                                                        \
            if (c >= n) break;                                                                               \
            if (c + 1 < n && LESS(&h[c + 1], &h[c])) c++;                                                    \
            if (!LESS(&h[c], &last)) break;                                                                  \
            h[i] = h[c];                                                                                     \
            i = c;                                                                                           \
        }                                                                                                    \
        if (n > 0) h[i] = last;                                                                              \
        return top;                                                                                          \
    }
HEAP_FUNCS(Event, event_less)
HEAP_FUNCS(Queued, queued_less)

/* 0: read; 1: not an int64 column of n (the Python loop takes the graph); -1: a Python error. */
static int read_ints(PyObject *list, Py_ssize_t n, int64_t *out) {
    if (!PyList_Check(list) || PyList_GET_SIZE(list) != n) return 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = PyList_GET_ITEM(list, i);
        int overflow = 0;
        if (!PyLong_Check(x)) return 1;
        out[i] = PyLong_AsLongLongAndOverflow(x, &overflow);
        if (overflow) return 1;
        if (out[i] == -1 && PyErr_Occurred()) return -1;
    }
    return 0;
}

/* Task ids of each task's dependencies (a list of tuples) as offsets into one array: ids[off[i]..off[i+1]). */
static int read_deps(PyObject *list, Py_ssize_t n, Py_ssize_t **off_out, int64_t **ids_out) {
    if (!PyList_Check(list) || PyList_GET_SIZE(list) != n) return 1;
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(list, i);
        if (!PyTuple_Check(t)) return 1;
        total += PyTuple_GET_SIZE(t);
    }
    Py_ssize_t *off = malloc(sizeof(Py_ssize_t) * (n + 1));
    int64_t *ids = malloc(sizeof(int64_t) * (total ? total : 1));
    if (!off || !ids) {
        free(off), free(ids);
        PyErr_NoMemory();
        return -1;
    }
    *off_out = off, *ids_out = ids; /* freed by the caller, also when this returns 1 */
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(list, i);
        off[i] = k;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(t); j++) {
            PyObject *x = PyTuple_GET_ITEM(t, j);
            int overflow = 0;
            if (!PyLong_Check(x)) return 1;
            int64_t d = PyLong_AsLongLongAndOverflow(x, &overflow);
            if (d == -1 && PyErr_Occurred()) return -1;
            if (overflow || d < 0 || d >= n) return 1; /* Python would index (or wrap) its own way */
            ids[k++] = d;
        }
    }
    off[n] = k;
    return 0;
}

/* Dependents of each task in task order (CSR): who waits for task d, from each task's own dependency list. */
static int invert(Py_ssize_t n, const Py_ssize_t *off, const int64_t *ids, Py_ssize_t **inv_off, int64_t **inv) {
    Py_ssize_t *o = calloc(n + 1, sizeof(Py_ssize_t));
    int64_t *v = malloc(sizeof(int64_t) * (off[n] ? off[n] : 1));
    Py_ssize_t *fill = malloc(sizeof(Py_ssize_t) * (n ? n : 1));
    if (!o || !v || !fill) {
        free(o), free(v), free(fill);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < off[n]; k++) o[ids[k] + 1]++;
    for (Py_ssize_t i = 0; i < n; i++) o[i + 1] += o[i];
    for (Py_ssize_t i = 0; i < n; i++) fill[i] = o[i];
    for (Py_ssize_t i = 0; i < n; i++)
        for (Py_ssize_t k = off[i]; k < off[i + 1]; k++) v[fill[ids[k]]++] = i;
    free(fill);
    *inv_off = o, *inv = v;
    return 0;
}

#define ADD(a, b, out)                                                                                       \
    do {                                                                                                     \
        if (__builtin_add_overflow((a), (b), (out))) goto fallback;                                          \
    } while (0)

typedef struct {
    int64_t *res, *dur, *prio, *lag, *end_lag;
    Py_ssize_t *after_off, *stream_off, *fin_off, *str_off;
    int64_t *after, *stream, *fin, *str;
    int64_t *waiting, *ready_at, *cause, *kind, *start, *end, *stretched;
    int64_t *busy_until, *last_on, *busy, *first_use, *qbase;
    Py_ssize_t *qsize;
    Queued *queues;
    Event *events;
} Work;

static void work_free(Work *w) {
    int64_t *cols[] = {w->res,   w->dur,   w->prio,      w->lag,        w->end_lag, w->after,     w->stream,
                       w->fin,   w->str,   w->waiting,   w->ready_at,   w->cause,   w->kind,      w->start,
                       w->end,   w->stretched, w->busy_until, w->last_on, w->busy,  w->first_use, w->qbase};
    for (size_t i = 0; i < sizeof cols / sizeof *cols; i++) free(cols[i]);
    free(w->after_off), free(w->stream_off), free(w->fin_off), free(w->str_off), free(w->qsize);
    free(w->queues), free(w->events);
}

static PyObject *events_run(PyObject *self, PyObject *args) {
    PyObject *res_o, *dur_o, *prio_o, *lag_o, *end_lag_o, *after_o, *stream_o;
    Py_ssize_t nres;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOOn", &res_o, &dur_o, &prio_o, &lag_o, &end_lag_o, &after_o, &stream_o,
                          &nres))
        return NULL;
    if (!PyList_Check(res_o) || nres < 0) Py_RETURN_NONE;
    Py_ssize_t n = PyList_GET_SIZE(res_o), m = n ? n : 1, r1 = nres ? nres : 1;
    Work w = {0};
    PyObject *result = NULL;
    int rc;
    w.res = malloc(sizeof(int64_t) * m), w.dur = malloc(sizeof(int64_t) * m), w.prio = malloc(sizeof(int64_t) * m);
    w.lag = malloc(sizeof(int64_t) * m), w.end_lag = malloc(sizeof(int64_t) * m);
    w.waiting = malloc(sizeof(int64_t) * m), w.ready_at = calloc(m, sizeof(int64_t));
    w.cause = malloc(sizeof(int64_t) * m), w.kind = calloc(m, sizeof(int64_t));
    w.start = malloc(sizeof(int64_t) * m), w.end = malloc(sizeof(int64_t) * m);
    w.stretched = malloc(sizeof(int64_t) * m), w.queues = malloc(sizeof(Queued) * m);
    w.events = malloc(sizeof(Event) * 2 * m);
    w.busy_until = malloc(sizeof(int64_t) * r1), w.last_on = malloc(sizeof(int64_t) * r1);
    w.busy = calloc(r1, sizeof(int64_t)), w.first_use = malloc(sizeof(int64_t) * r1);
    w.qbase = calloc(r1 + 1, sizeof(int64_t)), w.qsize = calloc(r1, sizeof(Py_ssize_t));
    if (!w.res || !w.dur || !w.prio || !w.lag || !w.end_lag || !w.waiting || !w.ready_at || !w.cause || !w.kind ||
        !w.start || !w.end || !w.stretched || !w.queues || !w.events || !w.busy_until || !w.last_on || !w.busy ||
        !w.first_use || !w.qbase || !w.qsize) {
        PyErr_NoMemory();
        goto done;
    }
    if ((rc = read_ints(res_o, n, w.res)) || (rc = read_ints(dur_o, n, w.dur)) ||
        (rc = read_ints(prio_o, n, w.prio)) || (rc = read_ints(lag_o, n, w.lag)) ||
        (rc = read_ints(end_lag_o, n, w.end_lag)) || (rc = read_deps(after_o, n, &w.after_off, &w.after)) ||
        (rc = read_deps(stream_o, n, &w.stream_off, &w.stream))) {
        if (rc > 0) goto fallback;
        goto done;
    }
    if (invert(n, w.after_off, w.after, &w.fin_off, &w.fin) < 0 ||
        invert(n, w.stream_off, w.stream, &w.str_off, &w.str) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (w.res[i] < 0 || w.res[i] >= nres) goto fallback;
        w.qbase[w.res[i] + 1]++;
    }
    for (Py_ssize_t r = 0; r < nres; r++) {
        w.qbase[r + 1] += w.qbase[r];
        w.busy_until[r] = -1, w.last_on[r] = -1;
    }
    Py_ssize_t nev = 0, used = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        w.waiting[i] = (w.after_off[i + 1] - w.after_off[i]) + (w.stream_off[i + 1] - w.stream_off[i]);
        w.cause[i] = w.start[i] = w.end[i] = w.stretched[i] = -1;
        if (w.waiting[i] == 0) Event_push(w.events, &nev, (Event){0, w.prio[i], i, READY, i});
    }
    int64_t seq = n, makespan = 0;
    while (nev) {
        Event ev = Event_pop(w.events, &nev);
        int64_t now = ev.time, i = ev.task, r = w.res[i], k = -1;
        Queued *q = w.queues + w.qbase[r];
        if (ev.kind == READY) {
            if (w.qsize[r] == 0 && w.busy_until[r] <= now) /* an idle resource, nothing queued: it takes it now */
                k = i;
            else
                Queued_push(q, &w.qsize[r], (Queued){now, w.prio[i], i});
        } else {
            if (now > makespan) makespan = now;
            for (Py_ssize_t x = w.fin_off[i]; x < w.fin_off[i + 1]; x++) { /* waiting for this task's end */
                int64_t j = w.fin[x], t;
                ADD(now, w.lag[j], &t);
                if (t >= w.ready_at[j]) w.ready_at[j] = t, w.cause[j] = i, w.kind[j] = FINISH;
                if (!--w.waiting[j]) Event_push(w.events, &nev, (Event){w.ready_at[j], w.prio[j], seq++, READY, j});
            }
        }
        if (k < 0) {
            if (w.qsize[r] == 0 || w.busy_until[r] > now) continue;
            k = Queued_pop(q, &w.qsize[r]).task; /* the resource's next ready task */
        }
        w.start[k] = now;
        if (now > w.ready_at[k] && w.last_on[r] >= 0) /* it waited for its resource, not for its inputs */
            w.cause[k] = w.last_on[r], w.kind[k] = FINISH;
        else if (w.last_on[r] < 0)
            w.first_use[used++] = r;
        w.last_on[r] = k;
        int64_t e, s;
        ADD(now, w.dur[k], &e);
        for (Py_ssize_t x = w.stream_off[k]; x < w.stream_off[k + 1]; x++) {
            int64_t d = w.stream[x];
            ADD(w.end[d], w.end_lag[k], &s);
            if (s > e) e = s, w.stretched[k] = d;
        }
        w.end[k] = w.busy_until[r] = e;
        ADD(w.busy[r], e - now, &w.busy[r]);
        for (Py_ssize_t x = w.str_off[k]; x < w.str_off[k + 1]; x++) { /* streaming from this task's start */
            int64_t j = w.str[x], t;
            ADD(now, w.lag[j], &t);
            if (t >= w.ready_at[j]) w.ready_at[j] = t, w.cause[j] = k, w.kind[j] = STREAM;
            if (!--w.waiting[j]) Event_push(w.events, &nev, (Event){w.ready_at[j], w.prio[j], seq++, READY, j});
        }
        Event_push(w.events, &nev, (Event){e, w.prio[k], seq++, END, k});
    }
    PyObject *cols[] = {int_list(w.start, n),     int_list(w.end, n),       int_list(w.cause, n),
                        int_list(w.kind, n),      int_list(w.stretched, n), PyLong_FromLongLong(makespan),
                        int_list(w.busy, nres), int_list(w.first_use, used)};
    int ok = 1;
    for (int c = 0; c < 8; c++) ok &= cols[c] != NULL;
    if (ok) result = PyTuple_New(8);
    for (int c = 0; c < 8; c++) {
        if (result)
            PyTuple_SET_ITEM(result, c, cols[c]);
        else
            Py_XDECREF(cols[c]);
    }
    goto done;
fallback:
    result = Py_None;
    Py_INCREF(result);
done:
    work_free(&w);
    return result;
}

static PyMethodDef methods[] = {
    {"run", events_run, METH_VARARGS, "Run a task graph given as columns (see the module's C source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_events", "The event kernel's loop in C.", -1, methods};

PyMODINIT_FUNC PyInit__events(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "ABI", EVENTS_ABI) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
