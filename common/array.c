/*
 * array.c - see array.h.
 */
#include "common/array.h"

#include <stdint.h>
#include <stdlib.h>

int array_grow(void **arr, size_t *cap, size_t need, size_t elem)
{
	size_t ncap = *cap ? *cap : 16;
	void *na = NULL;

	if (need <= *cap)
		return 0;
	while (ncap < need) {
		if (ncap > (SIZE_MAX - 16) / 3 * 2)
			return -1;
		ncap += ncap / 2 + 16;
	}
	if (elem && ncap > SIZE_MAX / elem)
		return -1;
	na = realloc(*arr, ncap * elem);
	if (!na)
		return -1;
	*arr = na;
	*cap = ncap;
	return 0;
}
