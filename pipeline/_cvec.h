/* The growable buffer of the C extensions (_jsonpoly, _jsonscan, _rlekernel): one malloc'd
 * block that doubles as it fills. Header only (static inline functions): each extension
 * includes it and is built on its own, so the package ships no shared library.
 */
#ifndef COCOLAKE_CVEC_H
#define COCOLAKE_CVEC_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    void *data;
    size_t len; /* bytes appended by cvec_push (a user that fills the block itself keeps its own count) */
    size_t cap; /* bytes allocated */
} CVec;

/* At least `bytes` allocated: 0, or -1 when out of memory (the buffer is then as it was). */
static inline int cvec_reserve(CVec *v, size_t bytes) {
    if (bytes <= v->cap) return 0;
    size_t cap = v->cap ? v->cap : 4096;
    while (cap < bytes) cap *= 2;
    void *data = realloc(v->data, cap);
    if (!data) return -1;
    v->data = data;
    v->cap = cap;
    return 0;
}

/* Append `size` bytes: 0, or -1 when out of memory. */
static inline int cvec_push(CVec *v, const void *item, size_t size) {
    if (v->len + size > v->cap && cvec_reserve(v, v->len + size)) return -1;
    memcpy((char *)v->data + v->len, item, size);
    v->len += size;
    return 0;
}

static inline int cvec_push_i64(CVec *v, int64_t x) { return cvec_push(v, &x, sizeof x); }
static inline int cvec_push_f64(CVec *v, double x) { return cvec_push(v, &x, sizeof x); }

static inline void cvec_free_all(CVec *const *vecs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(vecs[i]->data);
        vecs[i]->data = NULL;
        vecs[i]->len = vecs[i]->cap = 0;
    }
}

/* CVEC_FREE(&a, &b, ...): free every buffer named. */
#define CVEC_FREE(...)                                                                                       \
    cvec_free_all((CVec *const[]){__VA_ARGS__}, sizeof((CVec *const[]){__VA_ARGS__}) / sizeof(CVec *))

#endif
