/* Polygon segmentations and bboxes read straight from JSON text into flat float64 arrays.
 *
 * Input: the bytes between the records of one JSON array (a chunk), framed here as the text
 * of an array "[" + records + "]" in a new bytes object, the one copy made. For every
 * element that is an object with exactly one key "segmentation" (written without escapes,
 * and no other key of the object written with escapes) whose value has the strict form
 * [[number, ...], ...] (lists not empty, plain JSON numbers, each finite as a float64),
 * the coordinates go to a float64 array with part offsets and annotation part offsets,
 * the element's position goes to a row list, and the value is overwritten in the text by
 * "[]" and spaces (same length: every other byte keeps its offset), so that a JSON parser
 * run on the text afterwards builds no number object for it. A key "bbox" of such an object
 * (again exactly one, without escapes) whose value is [number, number, number, number] is
 * read the same way, into a row list and 4 float64 per row. A segmentation that is instead an
 * object (uncompressed RLE) with exactly one key "counts" (and no key written with escapes)
 * whose value is [integer, ...] (not empty, plain JSON integers without a sign, at most 18
 * digits each) has its runs read into an int64 array with run offsets, its row into a third
 * row list, and that list overwritten as above (the rest of the object, "size" among it,
 * stays for the parser). Anything else is left as it is,
 * for the caller's own parser. When the text is not well formed (as far as this walk sees),
 * nothing is extracted and the text is as written.
 *
 * Exactness. Every value equals Python's float() of the literal (the correctly rounded
 * double), except that an integer literal of value zero ("-0") gives +0.0, as the int a
 * JSON parser returns for it does once converted to float64. A literal with at most 19
 * significant digits, a significand m <= 2^53 and a decimal exponent |e| <= 22 is computed
 * as one multiplication or division m * 10^e, both operands exact in double, which IEEE
 * arithmetic rounds correctly (Clinger's fast path). Every other literal goes to
 * PyOS_string_to_double, Python's own correctly rounded reader. Built without fast-math
 * (see setup.py); where the compiler evaluates doubles in extended precision
 * (FLT_EVAL_METHOD != 0) the fast path is off.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_cvec.h"

#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
#define FAST_PATH 1
#else
#define FAST_PATH 0
#endif

typedef const unsigned char *ptr;

static inline ptr ws(ptr p, ptr end) {
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    return p;
}

/* p at the opening quote: the byte after the closing quote, or NULL; *escaped set when the
 * string holds a backslash. */
static ptr skip_string(ptr p, ptr end, int *escaped) {
    p++;
    while (p < end) {
        unsigned char c = *p;
        if (c == '"') return p + 1;
        if (c == '\\') {
            *escaped = 1;
            p += 2;
        } else {
            p++;
        }
    }
    return NULL;
}

/* p at the first byte of a value: the byte after it, or NULL. Brackets are counted, not
 * matched by kind: the caller's parser rejects what is not JSON. */
static ptr skip_value(ptr p, ptr end) {
    int escaped = 0;
    if (p >= end) return NULL;
    if (*p == '"') return skip_string(p, end, &escaped);
    if (*p == '[' || *p == '{') {
        size_t depth = 0;
        while (p < end) {
            unsigned char c = *p;
            if (c == '"') {
                p = skip_string(p, end, &escaped);
                if (!p) return NULL;
                continue;
            }
            if (c == '[' || c == '{') {
                depth++;
            } else if (c == ']' || c == '}') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    /* a scalar: up to the next delimiter */
    ptr start = p;
    while (p < end && *p != ',' && *p != ']' && *p != '}' && *p != ' ' && *p != '\n' && *p != '\r' && *p != '\t')
        p++;
    return p > start ? p : NULL;
}

static const double POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')

/* A JSON number at p: 1 and *out, *next set; 0 when p holds no strict JSON number or its
 * value is not finite; -1 on a Python error (memory). */
static int parse_number(ptr p, ptr end, double *out, ptr *next) {
    ptr start = p;
    int neg = 0, is_int = 1, truncated = 0, nsig = 0;
    uint64_t m = 0;
    long dexp = 0, e = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end) return 0;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && IS_DIGIT(*p)) {
            unsigned d = *p - '0';
            if (nsig < 19) {
                m = m * 10 + d;
                nsig++;
            } else {
                dexp++;
                truncated |= d != 0;
            }
            p++;
        }
    } else {
        return 0;
    }
    if (p < end && *p == '.') {
        is_int = 0;
        p++;
        if (p >= end || !IS_DIGIT(*p)) return 0;
        while (p < end && IS_DIGIT(*p)) {
            unsigned d = *p - '0';
            if (m == 0 && d == 0) {
                dexp--;
            } else if (nsig < 19) {
                m = m * 10 + d;
                nsig++;
                dexp--;
            } else {
                truncated |= d != 0;
            }
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        int eneg = 0;
        is_int = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-')) {
            eneg = *p == '-';
            p++;
        }
        if (p >= end || !IS_DIGIT(*p)) return 0;
        while (p < end && IS_DIGIT(*p)) {
            if (e < 100000) e = e * 10 + (*p - '0');
            p++;
        }
        if (eneg) e = -e;
    }
    *next = p;
    double v;
    long total = dexp + e;
    if (FAST_PATH && !truncated && m <= ((uint64_t)1 << 53) && total >= -22 && total <= 22) {
        v = (double)m;
        if (total >= 0) v = v * POW10[total];
        else v = v / POW10[-total];
        if (neg) v = -v;
    } else {
        size_t n = (size_t)(p - start);
        char small[64];
        char *text = n < sizeof small ? small : PyMem_Malloc(n + 1);
        if (!text) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(text, start, n);
        text[n] = '\0';
        char *stop = NULL;
        v = PyOS_string_to_double(text, &stop, NULL);
        int ok = stop == text + n;
        if (text != small) PyMem_Free(text);
        if (v == -1.0 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_ValueError)) return -1;
            PyErr_Clear();
            return 0;
        }
        if (!ok) return 0;
    }
    if (!isfinite(v)) return 0;
    if (is_int && v == 0.0) v = 0.0; /* "-0" is the int 0 */
    *out = v;
    return 1;
}

typedef struct {
    CVec rows, coords, parts, anns, spans; /* int64, float64, int64, int64, (int64 start, end) */
    CVec box_rows, boxes;                  /* int64, float64 x 4 */
    CVec rle_rows, runs, run_offs;         /* int64 each; run_offs from 0 */
} Out;

/* p at '[' of a bbox value: 1 with its 4 numbers in box and *next after the value when it
 * is [number, number, number, number], 0 when not, -1 on a Python error. */
static int strict_box(ptr p, ptr end, double box[4], ptr *next) {
    if (p >= end || *p != '[') return 0;
    p = ws(p + 1, end);
    for (int k = 0; k < 4; k++) {
        ptr after;
        int r = parse_number(p, end, &box[k], &after);
        if (r <= 0) return r;
        p = ws(after, end);
        if (p >= end || *p != (k < 3 ? ',' : ']')) return 0;
        p = ws(p + 1, end);
    }
    *next = p;
    return 1;
}

/* p at '[' of a segmentation value: 1 with the coordinates appended and *next after the
 * value when it has the strict form, 0 when not (appended items are the caller's to drop),
 * -1 on a Python error. */
static int strict_polygons(ptr p, ptr end, Out *o, ptr *next) {
    if (p >= end || *p != '[') return 0;
    p = ws(p + 1, end);
    if (p >= end || *p != '[') return 0;
    for (;;) {
        p = ws(p + 1, end); /* past the part's '[' */
        for (;;) {
            double v;
            ptr after;
            int r = parse_number(p, end, &v, &after);
            if (r <= 0) return r;
            if (cvec_push_f64(&o->coords, v) < 0) goto nomem;
            p = ws(after, end);
            if (p < end && *p == ',') {
                p = ws(p + 1, end);
                continue;
            }
            if (p < end && *p == ']') break;
            return 0;
        }
        if (cvec_push_i64(&o->parts, (int64_t)(o->coords.len / sizeof(double))) < 0) goto nomem;
        p = ws(p + 1, end);
        if (p < end && *p == ',') {
            p = ws(p + 1, end);
            if (p >= end || *p != '[') return 0;
            continue;
        }
        if (p < end && *p == ']') {
            *next = p + 1;
            return 1;
        }
        return 0;
    }
nomem:
    PyErr_NoMemory();
    return -1;
}

/* p at '[' of a counts value: 1 with the runs appended and *next after the value when it
 * is [integer, ...] as the header says, 0 when not (appended runs are the caller's to
 * drop), -1 on a Python error. */
static int strict_runs(ptr p, ptr end, Out *o, ptr *next) {
    if (p >= end || *p != '[') return 0;
    p = ws(p + 1, end);
    for (;;) {
        int64_t v = 0;
        int digits = 0;
        if (p >= end || !IS_DIGIT(*p)) return 0;
        if (*p == '0' && p + 1 < end && IS_DIGIT(p[1])) return 0; /* a leading zero is not JSON */
        while (p < end && IS_DIGIT(*p)) {
            if (++digits > 18) return 0;
            v = v * 10 + (*p - '0');
            p++;
        }
        if (p < end && (*p == '.' || *p == 'e' || *p == 'E')) return 0;
        if (cvec_push_i64(&o->runs, v) < 0) {
            PyErr_NoMemory();
            return -1;
        }
        p = ws(p, end);
        if (p < end && *p == ',') {
            p = ws(p + 1, end);
            continue;
        }
        if (p < end && *p == ']') {
            *next = p + 1;
            return 1;
        }
        return 0;
    }
}

/* The members of an object, for the walks below. */

/* p at a member's key: the first byte of its value (blanks skipped), with [*key, *key + *len)
 * the key as written and *escaped set when it holds an escape; NULL when the text is not well
 * formed. */
static ptr member_value(ptr p, ptr end, ptr *key, size_t *len, int *escaped) {
    if (p >= end || *p != '"') return NULL;
    *escaped = 0;
    ptr after = skip_string(p, end, escaped);
    if (!after) return NULL;
    *key = p + 1;
    *len = (size_t)(after - 1 - *key);
    p = ws(after, end);
    if (p >= end || *p != ':') return NULL;
    return ws(p + 1, end);
}

/* The key of member_value is `name`, written without escapes. */
static int key_is(ptr key, size_t len, int escaped, const char *name) {
    size_t n = strlen(name);
    return !escaped && len == n && memcmp(key, name, n) == 0;
}

/* p after a member's value: 1 with *next at the next member's key, 2 with *next after the
 * object's '}', 0 when the text is not well formed. */
static int member_end(ptr p, ptr end, ptr *next) {
    p = ws(p, end);
    if (p < end && *p == ',') {
        *next = ws(p + 1, end);
        return 1;
    }
    if (p < end && *p == '}') {
        *next = p + 1;
        return 2;
    }
    return 0;
}

/* p at a value a strict reader returned r (1: read, ending at value_end) for: the byte after
 * the value, and when it was read *read set and [*start, *stop) the value; NULL when it was
 * not read and the text is not well formed. */
static ptr read_or_skip(int r, ptr p, ptr value_end, ptr end, int *read, ptr *start, ptr *stop) {
    if (r != 1) return skip_value(p, end);
    *read = 1;
    *start = p;
    *stop = value_end;
    return value_end;
}

/* p at '{' of a segmentation object: 1 with its runs appended, *next after the object and
 * [*list_start, *list_end) the counts list when it qualifies (header), 0 when it does not
 * (appended runs are the caller's to drop; *next after the object, or NULL when the text is
 * not well formed), -1 on a Python error. */
static int strict_rle_object(ptr p, ptr end, Out *o, ptr *next, ptr *list_start, ptr *list_end) {
    int counts_seen = 0, counts_strict = 0, escaped_key = 0, more = 1;
    *next = NULL;
    p = ws(p + 1, end);
    if (p < end && *p == '}') {
        *next = p + 1;
        return 0;
    }
    while (more == 1) {
        ptr key;
        size_t len;
        int escaped;
        if (!(p = member_value(p, end, &key, &len, &escaped))) return 0;
        escaped_key |= escaped;
        if (key_is(key, len, escaped, "counts") && ++counts_seen == 1) {
            ptr value_end;
            int r = strict_runs(p, end, o, &value_end);
            if (r < 0) return -1;
            p = read_or_skip(r, p, value_end, end, &counts_strict, list_start, list_end);
        } else {
            p = skip_value(p, end);
        }
        if (!p || !(more = member_end(p, end, &p))) return 0;
    }
    *next = p;
    return counts_strict && counts_seen == 1 && !escaped_key;
}

/* p at '{' of a record: 1 and *next after it, 0 when the text is not well formed, -1 on a
 * Python error. Extracts the record's polygons when it qualifies. */
static int walk_record(ptr base, ptr p, ptr end, int64_t row, Out *o, ptr *next) {
    size_t ncoords = o->coords.len, nparts = o->parts.len, nruns = o->runs.len;
    int seen = 0, escaped_key = 0, strict = 0, box_seen = 0, box_strict = 0, rle_strict = 0, more = 1;
    ptr seg_start = NULL, seg_end = NULL, box_start = NULL, box_end = NULL;
    double box[4];
    p = ws(p + 1, end);
    if (p < end && *p == '}') {
        *next = p + 1;
        return 1;
    }
    while (more == 1) {
        ptr key, value_end;
        size_t len;
        int escaped;
        if (!(p = member_value(p, end, &key, &len, &escaped))) return 0;
        escaped_key |= escaped;
        int is_seg = key_is(key, len, escaped, "segmentation"), is_box = key_is(key, len, escaped, "bbox");
        if (is_seg && ++seen == 1 && p < end && *p == '{') {
            int r = strict_rle_object(p, end, o, &value_end, &seg_start, &seg_end);
            if (r < 0) return -1;
            rle_strict = r == 1;
            p = value_end;
        } else if (is_seg && seen == 1) {
            int r = strict_polygons(p, end, o, &value_end);
            if (r < 0) return -1;
            p = read_or_skip(r, p, value_end, end, &strict, &seg_start, &seg_end);
        } else if (is_box && ++box_seen == 1) {
            int r = strict_box(p, end, box, &value_end);
            if (r < 0) return -1;
            p = read_or_skip(r, p, value_end, end, &box_strict, &box_start, &box_end);
        } else {
            p = skip_value(p, end);
        }
        if (!p || !(more = member_end(p, end, &p))) return 0;
    }
    *next = p;
    if (strict && seen == 1 && !escaped_key) {
        if (cvec_push_i64(&o->rows, row) < 0 ||
            cvec_push_i64(&o->anns, (int64_t)(o->parts.len / sizeof(int64_t) - 1)) < 0 ||
            cvec_push_i64(&o->spans, (int64_t)(seg_start - base)) < 0 ||
            cvec_push_i64(&o->spans, (int64_t)(seg_end - base)) < 0) {
            PyErr_NoMemory();
            return -1;
        }
    } else {
        o->coords.len = ncoords;
        o->parts.len = nparts;
    }
    if (rle_strict && seen == 1 && !escaped_key) {
        if (cvec_push_i64(&o->rle_rows, row) < 0 ||
            cvec_push_i64(&o->run_offs, (int64_t)(o->runs.len / sizeof(int64_t))) < 0 ||
            cvec_push_i64(&o->spans, (int64_t)(seg_start - base)) < 0 ||
            cvec_push_i64(&o->spans, (int64_t)(seg_end - base)) < 0) {
            PyErr_NoMemory();
            return -1;
        }
    } else {
        o->runs.len = nruns;
    }
    if (box_strict && box_seen == 1 && !escaped_key) {
        if (cvec_push_i64(&o->box_rows, row) < 0 || cvec_push(&o->boxes, box, sizeof box) < 0 ||
            cvec_push_i64(&o->spans, (int64_t)(box_start - base)) < 0 ||
            cvec_push_i64(&o->spans, (int64_t)(box_end - base)) < 0) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return 1;
}

/* 1 when the whole text is one well formed array (as far as this walk checks), 0 if not,
 * -1 on a Python error. */
static int walk(ptr base, ptr end, Out *o) {
    ptr p = ws(base, end);
    int64_t row = 0;
    if (p >= end || *p != '[') return 0;
    p = ws(p + 1, end);
    if (p < end && *p == ']') return ws(p + 1, end) == end;
    for (;;) {
        if (p < end && *p == '{') {
            ptr after;
            int r = walk_record(base, p, end, row, o, &after);
            if (r <= 0) return r;
            p = after;
        } else {
            p = skip_value(p, end);
            if (!p) return 0;
        }
        row++;
        p = ws(p, end);
        if (p < end && *p == ',') {
            p = ws(p + 1, end);
            continue;
        }
        if (p < end && *p == ']') return ws(p + 1, end) == end;
        return 0;
    }
}

static PyObject *as_bytes(CVec *v) { return PyBytes_FromStringAndSize(v->data ? v->data : "", (Py_ssize_t)v->len); }

PyDoc_STRVAR(extract_doc,
             "extract(chunk) -> (text, polygons) or None\n\n"
             "chunk: the bytes between records of one JSON array (as parse_chunk gets them). text:\n"
             "\"[\" + the records + \"]\" as new bytes, the values of the polygons read overwritten by [] and\n"
             "spaces; polygons: None, or bytes of int64 row positions, float64 coordinates, int64 part\n"
             "offsets (from 0) and int64 annotation part offsets (from 0), then of the int64 row positions\n"
             "and float64 [x, y, width, height] of the bboxes read, then of the int64 row positions, runs\n"
             "and run offsets (from 0) of the uncompressed RLE counts read. None when the chunk holds no\n"
             "record. Nothing is read (polygons None, text as written) when the text is not well formed.");

static int is_ws(unsigned char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

static PyObject *extract(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *in = view.buf;
    Py_ssize_t a = 0, b = view.len;
    while (a < b && is_ws(in[a])) a++;
    while (b > a && is_ws(in[b - 1])) b--;
    if (a < b && in[a] == ',') a++; /* the comma before the chunk's first record */
    Py_ssize_t first = a;
    while (first < b && is_ws(in[first])) first++;
    if (first == b) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    PyObject *text = PyBytes_FromStringAndSize(NULL, b - a + 2);
    if (!text) {
        PyBuffer_Release(&view);
        return NULL;
    }
    unsigned char *base = (unsigned char *)PyBytes_AS_STRING(text);
    base[0] = '[';
    memcpy(base + 1, in + a, (size_t)(b - a));
    base[b - a + 1] = ']';
    PyBuffer_Release(&view);

    Out o;
    memset(&o, 0, sizeof o);
    PyObject *found = NULL, *res = NULL;
    int r = cvec_push_i64(&o.parts, 0) < 0 || cvec_push_i64(&o.anns, 0) < 0 || cvec_push_i64(&o.run_offs, 0) < 0
                ? -2
                : walk(base, base + (b - a + 2), &o);
    if (r == -2) {
        PyErr_NoMemory();
    } else if (r == 0 || (r == 1 && o.rows.len == 0 && o.box_rows.len == 0 && o.rle_rows.len == 0)) {
        found = Py_None;
        Py_INCREF(found);
    } else if (r == 1) {
        const int64_t *spans = (const int64_t *)o.spans.data;
        size_t nspans = o.spans.len / sizeof(int64_t) / 2;
        for (size_t i = 0; i < nspans; i++) {
            unsigned char *s = base + spans[2 * i], *e = base + spans[2 * i + 1];
            s[0] = '[';
            s[1] = ']';
            memset(s + 2, ' ', (size_t)(e - s - 2));
        }
        CVec *vecs[9] = {&o.rows, &o.coords, &o.parts, &o.anns, &o.box_rows, &o.boxes, &o.rle_rows, &o.runs, &o.run_offs};
        PyObject *items[9];
        int ok = 1;
        for (int k = 0; k < 9; k++) ok &= (items[k] = as_bytes(vecs[k])) != NULL;
        if (ok)
            found = PyTuple_Pack(9, items[0], items[1], items[2], items[3], items[4], items[5], items[6], items[7],
                                 items[8]);
        for (int k = 0; k < 9; k++) Py_XDECREF(items[k]);
    }
    if (found) res = PyTuple_Pack(2, text, found);
    Py_XDECREF(found);
    Py_DECREF(text);
    CVEC_FREE(&o.rows, &o.coords, &o.parts, &o.anns, &o.spans, &o.box_rows, &o.boxes, &o.rle_rows, &o.runs,
              &o.run_offs);
    return res;
}

static PyMethodDef methods[] = {
    {"extract", extract, METH_O, extract_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jsonpoly", "Polygon segmentations from JSON text.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__jsonpoly(void) { return PyModule_Create(&module); }
