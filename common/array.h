/*
 * array.h - growing a heap array by amortised steps, the one copy of the
 * realloc dance the parsers and builders share.
 */
#ifndef GRANARY_COMMON_ARRAY_H
#define GRANARY_COMMON_ARRAY_H

#include <stddef.h>

/*
 * Makes the array *arr of elements of elem bytes hold at least need of
 * them: nothing when *cap already does, else a realloc to about 1.5 times
 * as many (16 at the least). *arr and *cap change only on success.
 * Returns 0, or -1 when out of memory or when the size would overflow
 * (*arr is then untouched and still the caller's to free).
 */
int array_grow(void **arr, size_t *cap, size_t need, size_t elem);

#endif
