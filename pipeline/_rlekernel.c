/* Polygon and run-list batches to COCO compressed RLE, equal byte for byte to pycocotools.
 *
 * Input: whole chunks as flat buffers (coordinates, part offsets, annotation offsets,
 * heights, widths; or runs and run offsets). Output: the compressed counts strings in one
 * buffer with int64 offsets (the layout of an Arrow large_string column), the area and the
 * bbox [x, y, width, height] of every mask. The loops run without the GIL.
 *
 * Exactness. pycocotools' rleFrPoly scales every vertex by 5, walks the outline point by
 * point (v = (int)(ys + s*t + .5) along each edge), keeps the pairs of consecutive points
 * whose column changes and whose column lies on a pixel centre, and sorts the resulting
 * boundary positions. Here the same boundary positions are produced without the walk:
 *  - only pairs whose smaller scaled column X satisfies X = 5c + 2 (c a pixel column) are
 *    kept by pycocotools' test floor((X + .5) / 5 - .5) == (X + .5) / 5 - .5: for |X| < 2^40
 *    the double result is c exactly when X = 5c + 2 and at least 0.2 away from an integer
 *    otherwise, so the integer test X % 5 == 2 selects the same pairs;
 *  - on an edge whose column advances by one per point (|dx| >= |dy|) the pair of column
 *    X is found directly at t = X - xs, and its rows are evaluated with the very double
 *    expression pycocotools evaluates;
 *  - on a steep edge the column u(t) = (int)(xs + s*t + .5) is a monotone function of t
 *    (every operation in it is monotone), so the t where it passes X is found by an
 *    estimate corrected by evaluating the exact expression at neighbours; if the column
 *    would jump by more than one there (possible only through rounding), the edge is
 *    walked point by point as pycocotools does, because the kept column then depends on
 *    the direction;
 *  - the junction between consecutive edges is a pair of points like any other and is
 *    evaluated exactly;
 *  - a repeated vertex gives an edge with dx = dy = 0 whose single point has (int)NaN as
 *    its row; its column equals its neighbours', so it never forms a kept pair, and its row
 *    is taken as INT_MIN (what x86 gives) without evaluating NaN.
 * Rows use pycocotools' double expression ceil(clamp((y + .5) / 5 - .5, 0, h)); the
 * positions are sorted by a counting sort on the column (rows inside a column by insertion
 * sort) instead of qsort, which yields the same sorted sequence. This file must be built
 * without floating-point contraction (-ffp-contract=off) and without fast-math: a fused
 * multiply-add changes ys + s*t + .5 in the last bit, and with it some pixels.
 *
 * The union of the parts of an annotation, the area, the bbox and the string follow the
 * definitions of pycocotools' rleMerge, rleArea, rleToBbox (2.0.x, per foreground run) and
 * rleToString, written here without the h*w scratch buffer rleMerge allocates.
 *
 * pair_iou is pycocotools' rleIou for a list of pairs (mask a_index[k] of one parsed batch
 * with mask b_index[k] of another) instead of every dt with every gt: the same bbIou test
 * on the same rleToBbox boxes (runs_bbox, which gives them for any runs summing to h*w,
 * runs of length 0 and masks without foreground included), the same run walk, the same
 * division, so the same doubles.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_cvec.h"

/* pycocotools' scaled coordinates are C ints: |5x + .5| must stay far inside them */
#define COORD_LIMIT 1e8
#define PIXEL_LIMIT (((int64_t)1 << 31) - 1)

typedef struct {
    CVec col, row;    /* boundary crossings of one part: pixel column and row */
    size_t n;
    CVec count;       /* counting sort: one slot per column of the part's range */
    CVec keys;        /* sorted boundary positions col*h + row, then h*w */
    CVec runs;        /* runs of every part of the annotation, one after another */
    CVec parts;       /* (start, length) of each part in runs */
    CVec merge_a, merge_b;
    CVec text;        /* the output strings */
    size_t text_len;
    CVec vx, vy;      /* scaled vertices of one part */
} Work;

static void work_free(Work *w) {
    CVEC_FREE(&w->col, &w->row, &w->count, &w->keys, &w->runs, &w->parts, &w->merge_a, &w->merge_b, &w->text,
              &w->vx, &w->vy);
}

/* ------------------------------------------------------------------ boundary crossings */
typedef struct {
    int h, w;
    int64_t max_x; /* largest scaled column of a pixel centre: 5 * (w - 1) + 2 (beyond int for wide images) */
} Image;

/* pycocotools' row of a boundary pair whose lower point is y (scaled):
 * ceil(clamp((y + .5) / 5 - .5, 0, h)) in doubles. For |y| < 2^40 that double is exactly k
 * when y = 5k + 2 and otherwise at least 0.2 away from an integer (the division and the
 * subtraction are off by far less), so its ceiling is the integer ceil((y - 2) / 5), which is
 * (y + 2) / 5 for y >= 2 and at most 0 below. row_exact is the double version; the test
 * suite runs both over a range of y through rows_differ(). */
static inline int row_of(int y, int h) {
    if (y < 2) return 0;
    int64_t r = ((int64_t)y + 2) / 5;
    return r > h ? h : (int)r;
}

static int row_exact(int y, int h) {
    double yd = (double)y;
    yd = (yd + .5) / 5.0 - .5;
    if (yd < 0) yd = 0;
    else if (yd > h) yd = h;
    yd = ceil(yd);
    return (int)yd;
}

static int push(Work *wk, int col, int row) {
    if (cvec_reserve(&wk->col, (wk->n + 1) * sizeof(int)) || cvec_reserve(&wk->row, (wk->n + 1) * sizeof(int)))
        return -1;
    ((int *)wk->col.data)[wk->n] = col;
    ((int *)wk->row.data)[wk->n] = row;
    wk->n++;
    return 0;
}

/* The pair of consecutive outline points (pu, pv) -> (u, v), in walking order. */
static int pair(Work *wk, const Image *im, int pu, int pv, int u, int v) {
    if (u == pu) return 0;
    int64_t x = u < pu ? u : (int64_t)u - 1;
    if (x < 2 || x > im->max_x || (x - 2) % 5 != 0) return 0;
    return push(wk, (int)((x - 2) / 5), row_of(v < pv ? v : pv, im->h));
}

/* First relevant column value >= lo: X = 5c + 2 with c >= 0. */
static int64_t first_centre(int64_t lo) {
    if (lo < 2) return 2;
    int64_t r = (lo - 2) % 5;
    return r ? lo + (5 - r) : lo;
}

typedef struct {
    int xs, ys, xe, ye; /* after pycocotools' flip: the walk runs from (xs, ys) */
    int dx, dy, flip, steep, degenerate;
    double s;
} Edge;

static void edge_init(Edge *e, int x0, int y0, int x1, int y1) {
    e->dx = abs(x1 - x0);
    e->dy = abs(y0 - y1);
    e->steep = e->dx < e->dy;
    e->flip = (!e->steep && x0 > x1) || (e->steep && y0 > y1);
    e->degenerate = e->dx == 0 && e->dy == 0;
    if (e->flip) {
        e->xs = x1; e->ys = y1; e->xe = x0; e->ye = y0;
    } else {
        e->xs = x0; e->ys = y0; e->xe = x1; e->ye = y1;
    }
    e->s = e->degenerate ? 0.0 : (e->steep ? (double)(e->xe - e->xs) / e->dy
                                           : (double)(e->ye - e->ys) / e->dx);
}

/* Point t of the edge (t counted from (xs, ys)), as pycocotools computes it. */
static inline void edge_point(const Edge *e, int t, int *u, int *v) {
    int xs = e->xs, ys = e->ys;
    double s = e->s;
    if (e->degenerate) {
        *u = xs;
        *v = INT_MIN; /* (int)NaN on x86 */
    } else if (!e->steep) {
        *u = t + xs;
        *v = (int)(ys + s * t + .5);
    } else {
        *v = t + ys;
        *u = (int)(xs + s * t + .5);
    }
}

static inline int steep_u(const Edge *e, int t) { return (int)(e->xs + e->s * t + .5); }

/* Point d of the walk in pycocotools' order (d = 0 is the edge's first vertex). */
static inline void walk_point(const Edge *e, int d, int *u, int *v) {
    int n = e->steep ? e->dy : e->dx;
    edge_point(e, e->flip ? n - d : d, u, v);
}

static int walk_edge(Work *wk, const Image *im, const Edge *e) {
    int n = e->steep ? e->dy : e->dx, pu, pv, u, v;
    walk_point(e, 0, &pu, &pv);
    for (int d = 1; d <= n; d++) {
        walk_point(e, d, &u, &v);
        if (pair(wk, im, pu, pv, u, v)) return -1;
        pu = u;
        pv = v;
    }
    return 0;
}

/* The kept pairs inside one edge; 1 when the edge must be walked instead. */
static int edge_crossings(Work *wk, const Image *im, const Edge *e) {
    if (e->degenerate) return 0;
    if (!e->steep) { /* the column advances by exactly one per point */
        int64_t hi = (int64_t)e->xe - 1;
        if (hi > im->max_x) hi = im->max_x;
        for (int64_t X = first_centre(e->xs); X <= hi; X += 5) {
            int t = (int)(X - e->xs), v0, v1, u;
            edge_point(e, t, &u, &v0);
            edge_point(e, t + 1, &u, &v1);
            if (push(wk, (int)((X - 2) / 5), row_of(v0 < v1 ? v0 : v1, im->h))) return -1;
        }
        return 0;
    }
    if (e->dx == 0) return 0; /* vertical: the column never changes */
    int dy = e->dy, u0 = steep_u(e, 0), un = steep_u(e, dy);
    int rising = e->s > 0;
    int64_t lo = rising ? u0 : un, hi = (rising ? (int64_t)un : (int64_t)u0) - 1;
    if (hi > im->max_x) hi = im->max_x;
    for (int64_t X = first_centre(lo); X <= hi; X += 5) {
        /* t: the first point past X; the pair is (t - 1, t) */
        double est = ((double)X + 0.5 - e->xs) / e->s;
        est = rising ? ceil(est) : floor(est) + 1;
        if (!(est >= 0)) est = 0;
        if (est > dy) est = dy;
        int t = (int)est;
        if (rising) {
            while (t > 0 && steep_u(e, t - 1) >= X + 1) t--;
            while (t <= dy && steep_u(e, t) < X + 1) t++;
            if (t < 1 || t > dy || steep_u(e, t - 1) != X || steep_u(e, t) != X + 1) return 1;
        } else {
            while (t > 0 && steep_u(e, t - 1) <= X) t--;
            while (t <= dy && steep_u(e, t) > X) t++;
            if (t < 1 || t > dy || steep_u(e, t - 1) != X + 1 || steep_u(e, t) != X) return 1;
        }
        if (push(wk, (int)((X - 2) / 5), row_of(e->ys + t - 1, im->h))) return -1;
    }
    return 0;
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Runs of one polygon part (k vertices at xy), appended to wk->runs; returns the count
 * of runs or -1 when out of memory. */
static long part_runs(Work *wk, const Image *im, const double *xy, size_t k, size_t runs_at, int walk_all) {
    if (cvec_reserve(&wk->vx, (k + 1) * sizeof(int)) || cvec_reserve(&wk->vy, (k + 1) * sizeof(int))) return -1;
    int *x = wk->vx.data, *y = wk->vy.data;
    const double scale = 5;
    for (size_t j = 0; j < k; j++) x[j] = (int)(scale * xy[j * 2 + 0] + .5);
    for (size_t j = 0; j < k; j++) y[j] = (int)(scale * xy[j * 2 + 1] + .5);
    x[k] = x[0];
    y[k] = y[0];

    wk->n = 0;
    int last_u = 0, last_v = 0;
    for (size_t j = 0; j < k; j++) {
        Edge e;
        edge_init(&e, x[j], y[j], x[j + 1], y[j + 1]);
        int fu, fv, lu, lv, n = e.steep ? e.dy : e.dx;
        walk_point(&e, 0, &fu, &fv);
        walk_point(&e, n, &lu, &lv);
        if (j > 0 && pair(wk, im, last_u, last_v, fu, fv)) return -1;
        size_t before = wk->n;
        int r = walk_all ? 1 : edge_crossings(wk, im, &e);
        if (r < 0) return -1;
        if (r > 0) {
            wk->n = before;
            if (walk_edge(wk, im, &e)) return -1;
        }
        last_u = lu;
        last_v = lv;
    }

    /* counting sort of the crossings by column, rows sorted inside each column */
    size_t n = wk->n;
    int *col = wk->col.data, *row = wk->row.data;
    int cmin = INT_MAX, cmax = -1;
    for (size_t i = 0; i < n; i++) {
        if (col[i] < cmin) cmin = col[i];
        if (col[i] > cmax) cmax = col[i];
    }
    if (cvec_reserve(&wk->keys, (n + 1) * sizeof(uint32_t))) return -1;
    uint32_t *keys = wk->keys.data;
    uint32_t hh = (uint32_t)im->h;
    if (n) {
        size_t span = (size_t)(cmax - cmin) + 2;
        if (cvec_reserve(&wk->count, span * sizeof(size_t))) return -1;
        size_t *start = wk->count.data;
        memset(start, 0, span * sizeof(size_t));
        for (size_t i = 0; i < n; i++) start[col[i] - cmin + 1]++;
        for (size_t c = 1; c < span; c++) start[c] += start[c - 1];
        /* rows go to the key buffer first, grouped by column */
        int *rows = (int *)keys;
        for (size_t i = 0; i < n; i++) rows[start[col[i] - cmin]++] = row[i];
        /* start[c] is now the end of column c + cmin */
        size_t a = 0;
        for (size_t c = 0; c + 1 < span; c++) {
            size_t b = start[c];
            if (b - a > 24) {
                qsort(rows + a, b - a, sizeof(int), cmp_int);
            } else {
                for (size_t i = a + 1; i < b; i++) {
                    int r = rows[i];
                    size_t q = i;
                    while (q > a && rows[q - 1] > r) { rows[q] = rows[q - 1]; q--; }
                    rows[q] = r;
                }
            }
            uint32_t base = (uint32_t)(c + (size_t)cmin) * hh;
            for (size_t i = a; i < b; i++) keys[i] = base + (uint32_t)rows[i];
            a = b;
        }
    }
    keys[n] = hh * (uint32_t)im->w;

    /* differences, a zero difference joining the two runs around it (as rleFrPoly) */
    size_t total = n + 1;
    if (cvec_reserve(&wk->runs, (runs_at + total) * sizeof(uint32_t))) return -1;
    uint32_t *out = (uint32_t *)wk->runs.data + runs_at;
    size_t m = 0, j = 0;
    out[m++] = keys[j++];
    while (j < total) {
        uint32_t d = keys[j] - keys[j - 1];
        if (d > 0) {
            out[m++] = d;
            j++;
        } else {
            j++;
            if (j < total) { out[m - 1] += keys[j] - keys[j - 1]; j++; }
        }
    }
    return (long)m;
}

/* ------------------------------------------------------------------ runs to outputs */
/* Union of two run lists covering the same pixels, as rleMerge steps through them. */
static size_t union_runs(const uint32_t *A, size_t ma, const uint32_t *B, size_t mb, uint32_t *out) {
    uint32_t ra = A[0], rb = B[0], acc = 0, left = 1;
    size_t ia = 1, ib = 1, m = 0;
    int va = 0, vb = 0, v = 0;
    while (left > 0) {
        uint32_t step = ra < rb ? ra : rb;
        acc += step;
        ra -= step;
        if (!ra && ia < ma) { ra = A[ia++]; va = !va; }
        rb -= step;
        if (!rb && ib < mb) { rb = B[ib++]; vb = !vb; }
        left = ra + rb;
        int prev = v;
        v = va || vb;
        if (v != prev || left == 0) { out[m++] = acc; acc = 0; }
    }
    return m;
}

static uint32_t runs_area(const uint32_t *r, size_t m) {
    uint32_t a = 0;
    for (size_t j = 1; j < m; j += 2) a += r[j];
    return a;
}

static void runs_bbox(const uint32_t *r, size_t m, uint32_t h, uint32_t w, double *bb) {
    uint32_t xs = w, ys = h, xe = 0, ye = 0;
    uint32_t x = 0, y = 0; /* column and row of the next pixel, kept without dividing */
    m = (m / 2) * 2;
    if (m == 0) { bb[0] = bb[1] = bb[2] = bb[3] = 0; return; }
    for (size_t j = 0; j < m; j++) {
        uint32_t len = r[j];
        if (j % 2 == 0 || len == 0) { /* background: move on */
            y += len;
            if (y >= h) {
                if (y < 2 * h) { y -= h; x++; }
                else { x += y / h; y %= h; }
            }
            continue;
        }
        uint32_t x0 = x, y0 = y; /* first pixel of the run; (x, y) becomes its last */
        y += len - 1;
        if (y >= h) {
            if (y < 2 * h) { y -= h; x++; }
            else { x += y / h; y %= h; }
        }
        if (x0 < xs) xs = x0;
        if (x > xe) xe = x;
        if (x0 < x) { ys = 0; ye = h - 1; }
        else { if (y0 < ys) ys = y0; if (y > ye) ye = y; }
        if (++y == h) { y = 0; x++; }
    }
    bb[0] = xs;
    bb[2] = (uint32_t)(xe - xs + 1);
    bb[1] = ys;
    bb[3] = (uint32_t)(ye - ys + 1);
}

/* x >> 5 below must shift negative numbers arithmetically (C99 leaves it to the
 * compiler; gcc, clang and msvc all do): refuse to build otherwise. */
typedef char arithmetic_shift_required[((int64_t)-33 >> 5) == -2 ? 1 : -1];

/* Append the compressed string of r to wk->text. */
static int write_string(Work *wk, const uint32_t *r, size_t m) {
    if (cvec_reserve(&wk->text, wk->text_len + 7 * m + 1)) return -1;
    char *s = (char *)wk->text.data + wk->text_len;
    size_t p = 0;
    for (size_t i = 0; i < m; i++) {
        int64_t x = (int64_t)r[i] - (i > 2 ? (int64_t)r[i - 2] : 0);
        if ((uint64_t)(x + 16) < 32) { /* one character: most numbers */
            s[p++] = (char)((x & 0x1f) + 48);
            continue;
        }
        int more = 1;
        while (more) {
            int c = (int)(x & 0x1f);
            x >>= 5;
            more = (c & 0x10) ? x != -1 : x != 0;
            if (more) c |= 0x20;
            s[p++] = (char)(c + 48);
        }
    }
    wk->text_len += p;
    return 0;
}

typedef struct {
    int64_t *offsets; /* n + 1 */
    int64_t *areas;
    double *bboxes;   /* 4 n */
} Out;

static int finish(Work *wk, Out *o, size_t i, const uint32_t *r, size_t m, int h, int w) {
    if (write_string(wk, r, m)) return -1;
    o->offsets[i + 1] = (int64_t)wk->text_len;
    o->areas[i] = runs_area(r, m);
    runs_bbox(r, m, (uint32_t)h, (uint32_t)w, o->bboxes + 4 * i);
    return 0;
}

static void skipped(Work *wk, Out *o, size_t i) {
    o->offsets[i + 1] = (int64_t)wk->text_len;
    o->areas[i] = 0;
    memset(o->bboxes + 4 * i, 0, 4 * sizeof(double));
}

/* ------------------------------------------------------------------ batch kernels */
typedef struct {
    const char *problem; /* NULL when everything was encoded */
    size_t index;
    int nomem;
} Status;

static Status bad(const char *problem, size_t i) {
    Status s = {problem, i, 0};
    return s;
}

static int size_ok(int64_t h, int64_t w) {
    return h > 0 && w > 0 && h <= PIXEL_LIMIT && w <= PIXEL_LIMIT && h * w <= PIXEL_LIMIT;
}

static Status encode_polygons(const double *coords, size_t ncoords, const int64_t *po, size_t npo,
                              const int64_t *ao, const int64_t *hs, const int64_t *ws,
                              const uint8_t *skip, size_t n, int walk_all, Work *wk, Out *o) {
    Status ok = {NULL, 0, 0}, nomem = {NULL, 0, 1};
    o->offsets[0] = 0;
    for (size_t i = 0; i < n; i++) {
        if (ao[i] < 0 || ao[i + 1] < ao[i] || (size_t)ao[i + 1] >= npo)
            return bad("annotation offsets are not non-decreasing indexes into the part offsets", i);
        if (skip && skip[i]) { skipped(wk, o, i); continue; }
        if (!size_ok(hs[i], ws[i])) return bad("image size is not positive or has more than 2**31 - 1 pixels", i);
        size_t a = (size_t)ao[i], k = (size_t)(ao[i + 1] - ao[i]);
        if (k == 0) return bad("segmentation has no polygons", i);
        Image im = {(int)hs[i], (int)ws[i], 5 * (ws[i] - 1) + 2};
        if (cvec_reserve(&wk->parts, 2 * k * sizeof(size_t))) return nomem;
        size_t *parts = wk->parts.data, used = 0;
        for (size_t j = 0; j < k; j++) {
            int64_t s = po[a + j], e = po[a + j + 1];
            if (s < 0 || e < s || (size_t)e > ncoords)
                return bad("part offsets are not non-decreasing indexes into the coordinates", i);
            if ((e - s) % 2 || e - s < 6) return bad("polygon has an odd count or fewer than 6 coordinates", i);
            for (int64_t c = s; c < e; c++)
                if (!(fabs(coords[c]) <= COORD_LIMIT)) return bad("coordinate is not finite or beyond 1e8", i);
            long m = part_runs(wk, &im, coords + s, (size_t)(e - s) / 2, used, walk_all);
            if (m < 0) return nomem;
            parts = wk->parts.data;
            parts[2 * j] = used;
            parts[2 * j + 1] = (size_t)m;
            used += (size_t)m;
        }
        const uint32_t *runs = wk->runs.data, *r = runs + parts[0];
        size_t m = parts[1];
        if (k > 1) {
            if (cvec_reserve(&wk->merge_a, (used + 1) * sizeof(uint32_t)) ||
                cvec_reserve(&wk->merge_b, (used + 1) * sizeof(uint32_t)))
                return nomem;
            uint32_t *acc = wk->merge_a.data, *next = wk->merge_b.data;
            memcpy(acc, r, m * sizeof(uint32_t));
            for (size_t j = 1; j < k; j++) {
                m = union_runs(acc, m, runs + parts[2 * j], parts[2 * j + 1], next);
                uint32_t *t = acc; acc = next; next = t;
            }
            r = acc;
        }
        if (finish(wk, o, i, r, m, im.h, im.w)) return nomem;
    }
    return ok;
}

static Status encode_runs(const int64_t *counts, size_t ncounts, const int64_t *ro,
                          const int64_t *hs, const int64_t *ws, const uint8_t *skip, size_t n,
                          Work *wk, Out *o) {
    Status ok = {NULL, 0, 0}, nomem = {NULL, 0, 1};
    o->offsets[0] = 0;
    for (size_t i = 0; i < n; i++) {
        if (ro[i] < 0 || ro[i + 1] < ro[i] || (size_t)ro[i + 1] > ncounts)
            return bad("run offsets are not non-decreasing indexes into the runs", i);
        if (skip && skip[i]) { skipped(wk, o, i); continue; }
        if (!size_ok(hs[i], ws[i])) return bad("RLE size is not positive or has more than 2**31 - 1 pixels", i);
        size_t a = (size_t)ro[i], m = (size_t)(ro[i + 1] - ro[i]);
        if (cvec_reserve(&wk->runs, (m + 1) * sizeof(uint32_t))) return nomem;
        uint32_t *r = wk->runs.data;
        int64_t total = 0;
        for (size_t j = 0; j < m; j++) {
            int64_t c = counts[a + j];
            if (c < 0 || c > PIXEL_LIMIT) return bad("RLE counts has a negative or too large run", i);
            total += c;
            r[j] = (uint32_t)c;
        }
        if (total != hs[i] * ws[i]) return bad("RLE counts do not sum to h*w", i);
        if (finish(wk, o, i, r, m, (int)hs[i], (int)ws[i])) return nomem;
    }
    return ok;
}

/* ------------------------------------------------------------------ paired mask IoU */
/* One mask of a parsed batch: its runs, size, and (once it is first used) box and area. */
typedef struct {
    const uint32_t *runs;
    const int64_t *off, *hs, *ws;
    size_t n, nruns;
    double *box;     /* 4 per mask */
    uint32_t *area;
    uint8_t *ready;  /* 1: box and area computed and the mask checked */
} Masks;

/* Check mask i (offsets in range, a valid size, runs summing to h*w, without which the
 * run walk below would not end) and compute its box and area; 0 when it is good. */
static int mask_ready(Masks *k, size_t i) {
    if (k->ready[i]) return 0;
    int64_t s = k->off[i], e = k->off[i + 1], h = k->hs[i], w = k->ws[i];
    if (s < 0 || e < s || (size_t)e > k->nruns) return -1;
    if (!size_ok(h, w)) return -2;
    int64_t total = 0;
    uint32_t area = 0;
    for (int64_t j = s; j < e; j++) {
        total += k->runs[j];
        if ((j - s) % 2) area += k->runs[j];
    }
    if (total != h * w) return -3;
    runs_bbox(k->runs + s, (size_t)(e - s), (uint32_t)h, (uint32_t)w, k->box + 4 * i);
    k->area[i] = area;
    k->ready[i] = 1;
    return 0;
}

/* pycocotools' rleIou for one pair: bbIou of the boxes first, -1 for masks of different
 * sizes whose boxes overlap, then the runs of both walked together as rleIou walks them. */
static double pair_iou(const Masks *A, size_t d, const Masks *B, size_t g, int crowd) {
    const double *D = A->box + 4 * d, *G = B->box + 4 * g;
    double da = D[2] * D[3], ga = G[2] * G[3], bw, bh, bi, bu;
    bw = fmin(D[2] + D[0], G[2] + G[0]) - fmax(D[0], G[0]);
    if (bw <= 0) return 0;
    bh = fmin(D[3] + D[1], G[3] + G[1]) - fmax(D[1], G[1]);
    if (bh <= 0) return 0;
    bi = bw * bh; bu = crowd ? da : da + ga - bi;
    if (!(bi / bu > 0)) return 0;
    if (A->hs[d] != B->hs[g] || A->ws[d] != B->ws[g]) return -1;
    const uint32_t *a_runs = A->runs + A->off[d], *b_runs = B->runs + B->off[g];
    size_t ka = (size_t)(A->off[d + 1] - A->off[d]), kb = (size_t)(B->off[g + 1] - B->off[g]);
    size_t a = 1, b = 1;
    uint32_t c, ca = a_runs[0], cb = b_runs[0], ct = 1, i = 0, u = 0;
    int va = 0, vb = 0;
    while (ct > 0) {
        c = ca < cb ? ca : cb;
        if (va || vb) { u += c; if (va && vb) i += c; }
        ct = 0;
        ca -= c; if (!ca && a < ka) { ca = a_runs[a++]; va = !va; } ct += ca;
        cb -= c; if (!cb && b < kb) { cb = b_runs[b++]; vb = !vb; } ct += cb;
    }
    if (i == 0) u = 1; else if (crowd) u = A->area[d];
    return (double)i / (double)u;
}

static const char *MASK_PROBLEMS[] = {"", "run offsets are not non-decreasing indexes into the runs",
                                      "RLE size is not positive or has more than 2**31 - 1 pixels",
                                      "RLE counts do not sum to h*w"};

static Status pair_ious(Masks *A, Masks *B, const int64_t *ia, const int64_t *ib, const uint8_t *crowd,
                        size_t np, double *out) {
    Status ok = {NULL, 0, 0};
    for (size_t p = 0; p < np; p++) {
        int64_t d = ia[p], g = ib[p];
        if (d < 0 || (size_t)d >= A->n || g < 0 || (size_t)g >= B->n) return bad("mask index out of range", p);
        int r = mask_ready(A, (size_t)d);
        if (!r) r = mask_ready(B, (size_t)g);
        if (r) return bad(MASK_PROBLEMS[-r], p);
        out[p] = pair_iou(A, (size_t)d, B, (size_t)g, crowd[p] != 0);
    }
    return ok;
}

/* ------------------------------------------------------------------ Python binding */
static int get(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize, const char *name) {
    if (PyObject_GetBuffer(obj, view, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (view->len % itemsize || ((uintptr_t)view->buf) % (uintptr_t)itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: expected an aligned buffer of %zd-byte items", name, itemsize);
        PyBuffer_Release(view);
        view->obj = NULL;
        return -1;
    }
    return 0;
}

#define NBUF 9

static void release(Work *wk, Py_buffer *views, int nviews) {
    for (int j = 0; j < nviews; j++) if (views[j].obj) PyBuffer_Release(&views[j]);
    work_free(wk);
}

static PyObject *result(Status st, Work *wk, Py_buffer *views, int nviews) {
    PyObject *ret = NULL;
    if (st.nomem) PyErr_NoMemory();
    else if (st.problem) PyErr_Format(PyExc_ValueError, "item #%zu in batch: %s", st.index, st.problem);
    else ret = PyBytes_FromStringAndSize(wk->text.data ? wk->text.data : "", (Py_ssize_t)wk->text_len);
    release(wk, views, nviews);
    return ret;
}

static int outputs(PyObject *off, PyObject *area, PyObject *box, Py_buffer *v, size_t n, Out *o) {
    if (get(off, &v[0], 1, 8, "offsets") || get(area, &v[1], 1, 8, "areas") || get(box, &v[2], 1, 8, "bboxes"))
        return -1;
    if ((size_t)v[0].len / 8 != n + 1 || (size_t)v[1].len / 8 != n || (size_t)v[2].len / 8 != 4 * n) {
        PyErr_SetString(PyExc_ValueError, "output buffers must hold n + 1 offsets, n areas and 4 n bbox values");
        return -1;
    }
    o->offsets = v[0].buf;
    o->areas = v[1].buf;
    o->bboxes = v[2].buf;
    return 0;
}

static PyObject *py_encode_polygons(PyObject *self, PyObject *args) {
    PyObject *coords, *po, *ao, *hs, *ws, *skip, *off, *area, *box;
    int walk_all = 0;
    if (!PyArg_ParseTuple(args, "OOOOOOOOO|p", &coords, &po, &ao, &hs, &ws, &skip, &off, &area, &box, &walk_all))
        return NULL;
    Py_buffer v[NBUF];
    memset(v, 0, sizeof(v));
    Work wk;
    memset(&wk, 0, sizeof(wk));
    Out o;
    if (get(coords, &v[3], 0, 8, "coords") || get(po, &v[4], 0, 8, "part_offsets") ||
        get(ao, &v[5], 0, 8, "ann_offsets") || get(hs, &v[6], 0, 8, "heights") || get(ws, &v[7], 0, 8, "widths") ||
        (skip != Py_None && get(skip, &v[8], 0, 1, "skip")))
        goto error;
    size_t n = (size_t)v[6].len / 8;
    if ((size_t)v[7].len / 8 != n || (size_t)v[5].len / 8 != n + 1 || (skip != Py_None && (size_t)v[8].len != n)) {
        PyErr_SetString(PyExc_ValueError, "expected n heights, n widths, n skip flags and n + 1 annotation offsets");
        goto error;
    }
    if (outputs(off, area, box, v, n, &o)) goto error;
    Status st;
    Py_BEGIN_ALLOW_THREADS
    st = encode_polygons(v[3].buf, (size_t)v[3].len / 8, v[4].buf, (size_t)v[4].len / 8, v[5].buf, v[6].buf,
                         v[7].buf, skip != Py_None ? v[8].buf : NULL, n, walk_all, &wk, &o);
    Py_END_ALLOW_THREADS
    return result(st, &wk, v, NBUF);
error:
    release(&wk, v, NBUF);
    return NULL;
}

static PyObject *py_encode_runs(PyObject *self, PyObject *args) {
    PyObject *counts, *ro, *hs, *ws, *skip, *off, *area, *box;
    if (!PyArg_ParseTuple(args, "OOOOOOOO", &counts, &ro, &hs, &ws, &skip, &off, &area, &box)) return NULL;
    Py_buffer v[NBUF];
    memset(v, 0, sizeof(v));
    Work wk;
    memset(&wk, 0, sizeof(wk));
    Out o;
    if (get(counts, &v[3], 0, 8, "runs") || get(ro, &v[4], 0, 8, "run_offsets") || get(hs, &v[6], 0, 8, "heights") ||
        get(ws, &v[7], 0, 8, "widths") || (skip != Py_None && get(skip, &v[8], 0, 1, "skip")))
        goto error;
    size_t n = (size_t)v[6].len / 8;
    if ((size_t)v[7].len / 8 != n || (size_t)v[4].len / 8 != n + 1 || (skip != Py_None && (size_t)v[8].len != n)) {
        PyErr_SetString(PyExc_ValueError, "expected n heights, n widths, n skip flags and n + 1 run offsets");
        goto error;
    }
    if (outputs(off, area, box, v, n, &o)) goto error;
    Status st;
    Py_BEGIN_ALLOW_THREADS
    st = encode_runs(v[3].buf, (size_t)v[3].len / 8, v[4].buf, v[6].buf, v[7].buf,
                     skip != Py_None ? v[8].buf : NULL, n, &wk, &o);
    Py_END_ALLOW_THREADS
    return result(st, &wk, v, NBUF);
error:
    release(&wk, v, NBUF);
    return NULL;
}

static PyObject *py_rows_differ(PyObject *self, PyObject *args) {
    int lo, hi, h;
    if (!PyArg_ParseTuple(args, "iii", &lo, &hi, &h)) return NULL;
    long long differ = 0;
    for (int y = lo;; y++) {
        differ += row_of(y, h) != row_exact(y, h);
        if (y == hi) break;
    }
    return PyLong_FromLongLong(differ);
}

/* Buffers of one parsed batch: runs (uint32), offsets, heights, widths (int64). */
static int masks_of(PyObject *runs, PyObject *off, PyObject *hs, PyObject *ws, Py_buffer *v, Masks *k) {
    if (get(runs, &v[0], 0, 4, "runs") || get(off, &v[1], 0, 8, "offsets") || get(hs, &v[2], 0, 8, "heights") ||
        get(ws, &v[3], 0, 8, "widths"))
        return -1;
    k->n = (size_t)v[2].len / 8;
    if ((size_t)v[3].len / 8 != k->n || (size_t)v[1].len / 8 != k->n + 1) {
        PyErr_SetString(PyExc_ValueError, "expected n heights, n widths and n + 1 run offsets");
        return -1;
    }
    k->runs = v[0].buf;
    k->nruns = (size_t)v[0].len / 4;
    k->off = v[1].buf;
    k->hs = v[2].buf;
    k->ws = v[3].buf;
    k->box = malloc(4 * sizeof(double) * (k->n + 1));
    k->area = malloc(sizeof(uint32_t) * (k->n + 1));
    k->ready = calloc(k->n + 1, 1);
    if (!k->box || !k->area || !k->ready) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void masks_free(Masks *k) {
    free(k->box);
    free(k->area);
    free(k->ready);
}

#define NIOU 12

static PyObject *py_pair_iou(PyObject *self, PyObject *args) {
    PyObject *ar, *ao, *ah, *aw, *br, *bo, *bh, *bw, *ia, *ib, *crowd, *out;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOO", &ar, &ao, &ah, &aw, &br, &bo, &bh, &bw, &ia, &ib, &crowd, &out))
        return NULL;
    Py_buffer v[NIOU];
    memset(v, 0, sizeof(v));
    Masks A, B;
    memset(&A, 0, sizeof(A));
    memset(&B, 0, sizeof(B));
    PyObject *ret = NULL;
    if (masks_of(ar, ao, ah, aw, v, &A) || masks_of(br, bo, bh, bw, v + 4, &B) ||
        get(ia, &v[8], 0, 8, "a_index") || get(ib, &v[9], 0, 8, "b_index") || get(crowd, &v[10], 0, 1, "crowd") ||
        get(out, &v[11], 1, 8, "out"))
        goto done;
    size_t np = (size_t)v[8].len / 8;
    if ((size_t)v[9].len / 8 != np || (size_t)v[10].len != np || (size_t)v[11].len / 8 != np) {
        PyErr_SetString(PyExc_ValueError, "expected as many b indexes, crowd flags and outputs as a indexes");
        goto done;
    }
    Status st;
    Py_BEGIN_ALLOW_THREADS
    st = pair_ious(&A, &B, v[8].buf, v[9].buf, v[10].buf, np, v[11].buf);
    Py_END_ALLOW_THREADS
    if (st.problem) PyErr_Format(PyExc_ValueError, "pair #%zu in batch: %s", st.index, st.problem);
    else {
        Py_INCREF(Py_None);
        ret = Py_None;
    }
done:
    for (int j = 0; j < NIOU; j++) if (v[j].obj) PyBuffer_Release(&v[j]);
    masks_free(&A);
    masks_free(&B);
    return ret;
}

static PyMethodDef methods[] = {
    {"rows_differ", py_rows_differ, METH_VARARGS,
     "rows_differ(lo, hi, h) -> how many y in [lo, hi] get a different row from the integer\n"
     "formula than from pycocotools' double expression (a self-check for the tests)."},
    {"encode_polygons", py_encode_polygons, METH_VARARGS,
     "encode_polygons(coords, part_offsets, ann_offsets, heights, widths, skip, offsets, areas, bboxes[, walk])\n"
     "-> bytes. float64 coords, int64 offsets/sizes, uint8 skip (or None); fills the int64/float64 outputs and\n"
     "returns the counts strings joined (string i is data[offsets[i]:offsets[i + 1]]). walk=True walks every\n"
     "edge point by point as pycocotools does (slower, same result; for the tests)."},
    {"encode_runs", py_encode_runs, METH_VARARGS,
     "encode_runs(runs, run_offsets, heights, widths, skip, offsets, areas, bboxes) -> bytes\n"
     "Uncompressed RLE runs (int64) to counts strings, like encode_polygons."},
    {"pair_iou", py_pair_iou, METH_VARARGS,
     "pair_iou(a_runs, a_offsets, a_heights, a_widths, b_runs, b_offsets, b_heights, b_widths, a_index, b_index,\n"
     "crowd, out) -> None. uint32 runs, int64 offsets/sizes/indexes, uint8 crowd; out[k] (float64) = pycocotools'\n"
     "rleIou of mask a_index[k] of a with mask b_index[k] of b, crowd[k] saying that b's is a crowd region."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rlekernel",
                                    "Batch polygon / run-list to COCO compressed RLE kernel; paired mask IoU.", -1, methods};

PyMODINIT_FUNC PyInit__rlekernel(void) { return PyModule_Create(&module); }
