/*
 * sketch.c - count-min sketch of 4-bit counters with periodic halving.
 */
#include "cache/sketch.h"

#include <stdlib.h>

#include "common/bytes.h"

#define SKETCH_ROWS 4
#define COUNTERS_PER_WORD 16 /* 4-bit counters in a uint64_t */

struct sketch {
	uint64_t *words;  /* SKETCH_ROWS rows of width counters, row-major */
	uint64_t width;   /* counters per row, a power of two */
	uint64_t mask;    /* width - 1 */
	uint64_t samples; /* increments since the last halving */
	uint64_t period;  /* halve after this many increments */
};

static uint64_t next_pow2(uint64_t v)
{
	uint64_t p = 1;

	while (p < v)
		p <<= 1;
	return p;
}

/* Counter number (over all rows) of key in row. */
static uint64_t slot(const struct sketch *sk, const uint8_t *key, int row)
{
	return (uint64_t)row * sk->width + (bytes_get_le32(key + 4 * row) & sk->mask);
}

static unsigned counter_get(const struct sketch *sk, uint64_t c)
{
	return (unsigned)(sk->words[c / COUNTERS_PER_WORD] >> ((c % COUNTERS_PER_WORD) * 4)) & 0xf;
}

static void counter_inc(struct sketch *sk, uint64_t c)
{
	sk->words[c / COUNTERS_PER_WORD] += (uint64_t)1 << ((c % COUNTERS_PER_WORD) * 4);
}

struct sketch *sketch_new(uint64_t items)
{
	struct sketch *sk = NULL;
	uint64_t nwords = 0;

	if (items == 0)
		items = 1;
	/* Beyond 2^28 items the 32-bit row index would not cover the width;
	 * no cache holds that many blocks. */
	if (items > ((uint64_t)1 << 28))
		items = (uint64_t)1 << 28;
	sk = calloc(1, sizeof(*sk));
	if (!sk)
		return NULL;
	/* At least one whole word per row keeps the arithmetic simple. */
	sk->width = next_pow2(items * 8 < COUNTERS_PER_WORD ? COUNTERS_PER_WORD : items * 8);
	sk->mask = sk->width - 1;
	sk->period = 10 * items;
	nwords = SKETCH_ROWS * sk->width / COUNTERS_PER_WORD;
	sk->words = calloc(nwords, sizeof(uint64_t));
	if (!sk->words) {
		free(sk);
		return NULL;
	}
	return sk;
}

void sketch_free(struct sketch *sk)
{
	if (!sk)
		return;
	free(sk->words);
	free(sk);
}

static void halve(struct sketch *sk)
{
	uint64_t nwords = SKETCH_ROWS * sk->width / COUNTERS_PER_WORD;

	/* Shifting the whole word moves each counter's low bit into its
	 * neighbour's high bit; the mask clears those. */
	for (uint64_t i = 0; i < nwords; i++)
		sk->words[i] = (sk->words[i] >> 1) & 0x7777777777777777ULL;
	sk->samples /= 2;
}

void sketch_increment(struct sketch *sk, const uint8_t key[SKETCH_KEY_LEN])
{
	uint64_t c[SKETCH_ROWS];
	unsigned v[SKETCH_ROWS];
	unsigned min = SKETCH_COUNTER_MAX;

	for (int r = 0; r < SKETCH_ROWS; r++) {
		c[r] = slot(sk, key, r);
		v[r] = counter_get(sk, c[r]);
		if (v[r] < min)
			min = v[r];
	}
	if (min < SKETCH_COUNTER_MAX) {
		for (int r = 0; r < SKETCH_ROWS; r++)
			if (v[r] == min)
				counter_inc(sk, c[r]);
	}
	/* Saturated keys still count towards the period: a key asked for
	 * without end must not stop the ageing of everything else. */
	if (++sk->samples >= sk->period)
		halve(sk);
}

unsigned sketch_estimate(const struct sketch *sk, const uint8_t key[SKETCH_KEY_LEN])
{
	unsigned min = SKETCH_COUNTER_MAX;

	for (int r = 0; r < SKETCH_ROWS; r++) {
		unsigned v = counter_get(sk, slot(sk, key, r));

		if (v < min)
			min = v;
	}
	return min;
}

uint64_t sketch_sample_count(const struct sketch *sk)
{
	return sk->samples;
}

uint64_t sketch_sample_period(const struct sketch *sk)
{
	return sk->period;
}
