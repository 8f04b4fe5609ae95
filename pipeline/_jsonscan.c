/* Structural scan of JSON bytes, one block at a time: the compiled form of
 * pipeline.ingest.scan.StructureScanner.feed, with the same results.
 *
 * A quote preceded by an odd run of backslashes is escaped (the run may start in an earlier
 * block); every other quote toggles the string state; a bracket or brace outside strings
 * changes the depth by +1 or -1 (never clamped: a negative depth is the caller's error to
 * report). The outputs are the absolute offsets of the structural bytes outside strings,
 * the depth after each and its delta, and the absolute offsets of the real quotes, all
 * int64. The loop runs without the GIL; with SSE2 it tests 64 bytes at a time and looks
 * only at the bytes that are a quote, a backslash or a bracket (about 3% of COCO JSON).
 *
 * A caller that needs only the shallow structure (a scan cuts records at depth 2; a record's
 * own brackets are 5 levels deep and ~8 million in train2017) gives `keep`: only the brackets
 * whose depth after is at most `keep`, or above `limit` (the caller's error to report), and
 * only the quotes at depth at most `qkeep` are output; the state is the same as without.
 * A word of 64 bytes with no backslash then costs a few bit operations: the quotes' prefix
 * parity says which bytes are inside strings, and the depth moves by the count of the
 * brackets outside them (one by one only where one of them may be output).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#include "_cvec.h"

#if defined(__SSE2__) && defined(__GNUC__)
#include <emmintrin.h>
#define HAVE_SSE2 1
#if defined(__x86_64__) && !defined(__clang__)
#include <immintrin.h>
#define HAVE_AVX2_TARGET 1 /* AVX2 and popcnt compiled in, used where the CPU has them */
#endif
#endif

typedef struct {
    CVec pos, depth, delta, quotes; /* int64 each */
    int64_t cur_depth;
    int64_t keep, qkeep, limit; /* what is output (see the header) */
    int in_string;
    Py_ssize_t run;     /* length of the current backslash run */
    Py_ssize_t run_end; /* position of its last backslash (-1: the run ended the previous block) */
} State;

/* the byte at i is a quote, a backslash or a bracket; returns -1 when out of memory */
static inline int step(State *s, const unsigned char *buf, Py_ssize_t i, int64_t offset) {
    unsigned char c = buf[i];
    if (c == '\\') {
        s->run = (s->run && s->run_end == i - 1) ? s->run + 1 : 1;
        s->run_end = i;
        return 0;
    }
    if (c == '"') {
        if (s->run && s->run_end == i - 1 && (s->run & 1)) return 0; /* escaped */
        if (s->cur_depth <= s->qkeep && cvec_push_i64(&s->quotes, offset + i)) return -1;
        s->in_string ^= 1;
        return 0;
    }
    if (s->in_string) return 0;
    int64_t d = (c == '[' || c == '{') ? 1 : -1;
    s->cur_depth += d;
    if (s->cur_depth > s->keep && s->cur_depth <= s->limit) return 0;
    if (cvec_push_i64(&s->pos, offset + i) || cvec_push_i64(&s->depth, s->cur_depth) || cvec_push_i64(&s->delta, d))
        return -1;
    return 0;
}

static inline int special(unsigned char c) {
    return c == '"' || c == '\\' || c == '[' || c == ']' || c == '{' || c == '}';
}

#ifdef HAVE_SSE2
/* bit k: the parity of the bits 0..k of x (1 inside a string, when x marks its quotes) */
static inline uint64_t prefix_xor(uint64_t x) {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    return x;
}
#endif

typedef struct {
    uint64_t q, bs, op, cl; /* quotes, backslashes, '[' or '{', ']' or '}' in 64 bytes */
} Masks;

#ifdef HAVE_SSE2
static inline __attribute__((always_inline)) Masks masks_sse2(const unsigned char *p) {
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), lower = _mm_set1_epi8(0x20);
    /* c | 0x20 maps '[' and ']' to '{' and '}' (and no other byte there) */
    const __m128i open = _mm_set1_epi8('{'), close = _mm_set1_epi8('}');
    Masks m = {0, 0, 0, 0};
    for (int k = 0; k < 4; k++) {
        __m128i x = _mm_loadu_si128((const __m128i *)(p + 16 * k));
        __m128i y = _mm_or_si128(x, lower);
        m.q |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, quote)) << (16 * k);
        m.bs |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, backslash)) << (16 * k);
        m.op |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(y, open)) << (16 * k);
        m.cl |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(y, close)) << (16 * k);
    }
    return m;
}

/* One 64-byte word at i: 0, or -1 when out of memory. */
static inline __attribute__((always_inline)) int word(State *s, const unsigned char *buf, Py_ssize_t i, int64_t offset, Masks m) {
    /* no escape in or into the word: its strings follow from the quotes' parity alone;
     * when none of its quotes is output, only its brackets outside strings are looked at,
     * and when none of those can be output either, only the state moves */
    if (!m.bs && !(s->run && s->run_end == i - 1)) {
        uint64_t inside = prefix_xor(m.q) ^ (s->in_string ? ~(uint64_t)0 : 0);
        uint64_t o = m.op & ~inside, c = m.cl & ~inside;
        int64_t closes = __builtin_popcountll(c), opens = __builtin_popcountll(o);
        if (s->cur_depth - closes > s->qkeep) {
            if (s->cur_depth - closes > s->keep && s->cur_depth + opens <= s->limit) {
                s->cur_depth += opens - closes;
            } else {
                for (uint64_t br = o | c; br; br &= br - 1) {
                    int b = __builtin_ctzll(br);
                    int64_t d = (o >> b) & 1 ? 1 : -1;
                    s->cur_depth += d;
                    if (s->cur_depth > s->keep && s->cur_depth <= s->limit) continue;
                    if (cvec_push_i64(&s->pos, offset + i + b) || cvec_push_i64(&s->depth, s->cur_depth) ||
                        cvec_push_i64(&s->delta, d))
                        return -1;
                }
            }
            s->in_string ^= __builtin_popcountll(m.q) & 1;
            return 0;
        }
    }
    for (uint64_t bits = m.q | m.bs | m.op | m.cl; bits; bits &= bits - 1)
        if (step(s, buf, i + __builtin_ctzll(bits), offset)) return -1;
    return 0;
}

#ifdef HAVE_AVX2_TARGET
__attribute__((target("avx2"))) static inline __attribute__((always_inline)) Masks masks_avx2(const unsigned char *p) {
    const __m256i quote = _mm256_set1_epi8('"'), backslash = _mm256_set1_epi8('\\'), lower = _mm256_set1_epi8(0x20);
    const __m256i open = _mm256_set1_epi8('{'), close = _mm256_set1_epi8('}');
    Masks m = {0, 0, 0, 0};
    for (int k = 0; k < 2; k++) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(p + 32 * k));
        __m256i y = _mm256_or_si256(x, lower);
        m.q |= (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x, quote)) << (32 * k);
        m.bs |= (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x, backslash)) << (32 * k);
        m.op |= (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(y, open)) << (32 * k);
        m.cl |= (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(y, close)) << (32 * k);
    }
    return m;
}

__attribute__((target("avx2,popcnt,bmi"))) static Py_ssize_t words_avx2(State *s, const unsigned char *buf, Py_ssize_t n,
                                                                  int64_t offset) {
    Py_ssize_t i = 0;
    for (; i + 64 <= n; i += 64)
        if (word(s, buf, i, offset, masks_avx2(buf + i))) return -1;
    return i;
}
#endif

#ifdef HAVE_AVX2_TARGET
__attribute__((target("popcnt"))) static Py_ssize_t words_sse2_popcnt(State *s, const unsigned char *buf,
                                                                     Py_ssize_t n, int64_t offset) {
    Py_ssize_t i = 0;
    for (; i + 64 <= n; i += 64)
        if (word(s, buf, i, offset, masks_sse2(buf + i))) return -1;
    return i;
}
#endif

static Py_ssize_t words_sse2(State *s, const unsigned char *buf, Py_ssize_t n, int64_t offset) {
    Py_ssize_t i = 0;
    for (; i + 64 <= n; i += 64)
        if (word(s, buf, i, offset, masks_sse2(buf + i))) return -1;
    return i;
}
#endif

/* the widest word loop used: 2 AVX2, 1 SSE2 with popcnt, 0 SSE2 alone (tests lower it) */
static int isa_cap = 2;

static int scan(State *s, const unsigned char *buf, Py_ssize_t n, int64_t offset) {
    Py_ssize_t i = 0;
#ifdef HAVE_SSE2
#ifdef HAVE_AVX2_TARGET
    /* the same words, with the instructions this CPU has (a popcnt instruction instead of
     * libgcc's: half the time of a scan) */
    if (isa_cap >= 2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt"))
        i = words_avx2(s, buf, n, offset);
    else if (isa_cap >= 1 && __builtin_cpu_supports("popcnt"))
        i = words_sse2_popcnt(s, buf, n, offset);
    else
#endif
        i = words_sse2(s, buf, n, offset);
    if (i < 0) return -1;
#endif
    for (; i < n; i++)
        if (special(buf[i]) && step(s, buf, i, offset)) return -1;
    return 0;
}

static PyObject *vec_array(CVec *v) { return PyByteArray_FromStringAndSize(v->data, (Py_ssize_t)v->len); }

static PyObject *py_feed(PyObject *self, PyObject *args) {
    Py_buffer view;
    long long offset, depth, run, keep = INT64_MAX, qkeep = INT64_MAX, limit = INT64_MAX;
    int in_string;
    if (!PyArg_ParseTuple(args, "y*LLpL|LLL", &view, &offset, &depth, &in_string, &run, &keep, &qkeep, &limit))
        return NULL;
    State s;
    memset(&s, 0, sizeof s);
    s.cur_depth = depth;
    s.keep = keep;
    s.qkeep = qkeep;
    s.limit = limit;
    s.in_string = in_string;
    s.run = run > 0 ? (Py_ssize_t)run : 0;
    s.run_end = -1;
    Py_ssize_t n = view.len;
    int failed;
    /* a first guess of the output sizes; grown when COCO's ~1 bracket per 100 bytes is exceeded */
    size_t guess = ((size_t)n / 64 + 16) * sizeof(int64_t);
    failed = cvec_reserve(&s.pos, guess) || cvec_reserve(&s.depth, guess) || cvec_reserve(&s.delta, guess) ||
             cvec_reserve(&s.quotes, guess);
    if (!failed) {
        Py_BEGIN_ALLOW_THREADS
        failed = scan(&s, (const unsigned char *)view.buf, n, (int64_t)offset);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&view);
    PyObject *out = NULL;
    if (failed) {
        PyErr_NoMemory();
    } else {
        long long tail = (s.run && s.run_end == n - 1) ? (long long)s.run : 0;
        PyObject *a = vec_array(&s.pos), *b = vec_array(&s.depth), *c = vec_array(&s.delta),
                 *d = vec_array(&s.quotes);
        if (a && b && c && d)
            out = Py_BuildValue("OOOOLiL", a, b, c, d, (long long)s.cur_depth, s.in_string, tail);
        Py_XDECREF(a);
        Py_XDECREF(b);
        Py_XDECREF(c);
        Py_XDECREF(d);
    }
    CVEC_FREE(&s.pos, &s.depth, &s.delta, &s.quotes);
    return out;
}

static PyObject *py_isa(PyObject *self, PyObject *args) {
    int cap = -1;
    if (!PyArg_ParseTuple(args, "|i", &cap)) return NULL;
    int previous = isa_cap;
    if (cap >= 0) isa_cap = cap > 2 ? 2 : cap;
    return PyLong_FromLong(previous);
}

static PyMethodDef methods[] = {
    {"isa_cap", py_isa, METH_VARARGS,
     "isa_cap([cap]) -> the previous cap: the widest word loop used (2 AVX2, 1 SSE2 with popcnt,\n"
     "0 SSE2 alone; each only where the CPU has it). For tests: every loop gives the same results."},
    {"feed", py_feed, METH_VARARGS,
     "feed(block, offset, depth, in_string, backslash_run[, keep, qkeep, limit])\n"
     "-> (positions, depth_after, delta, quotes, depth, in_string, backslash_run)\n"
     "Only brackets whose depth after is <= keep or > limit, and quotes at depth <= qkeep, are output.\n"
     "The four arrays are bytearrays of int64 (absolute offsets, for a block starting at offset);\n"
     "backslash_run is the length of the backslash run that ends the block (0 if none)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jsonscan",
                                    "Structural JSON scan (quotes, escapes, bracket depth) of one block.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__jsonscan(void) { return PyModule_Create(&module); }
