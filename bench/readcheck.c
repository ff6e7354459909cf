/*
 * readcheck.c - the deterministic dataset of readcheck.h.
 */
#include <string.h>

#include "bench/readcheck.h"

#define READCHECK_GAMMA 0x9e3779b97f4a7c15ull

uint64_t readcheck_seed(const char *name)
{
	const char *base = strrchr(name, '/');
	uint64_t h = 0xcbf29ce484222325ull;

	for (const unsigned char *p = (const unsigned char *)(base ? base + 1 : name); *p; p++) {
		h ^= *p;
		h *= 0x100000001b3ull;
	}
	return h;
}

static uint64_t word_at(uint64_t seed, uint64_t i)
{
	uint64_t z = seed + (i + 1) * READCHECK_GAMMA;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint8_t byte_of(uint64_t word, unsigned k)
{
	return (uint8_t)(word >> (8 * k));
}

void readcheck_fill(uint64_t seed, uint64_t off, void *buf, size_t len)
{
	uint8_t *out = buf;
	size_t at = 0;

	/* Leading bytes up to a word boundary, whole words, then the tail. */
	while (at < len && (off + at) % 8 != 0) {
		out[at] = byte_of(word_at(seed, (off + at) / 8), (off + at) % 8);
		at++;
	}
	for (; len - at >= 8; at += 8) {
		uint64_t w = word_at(seed, (off + at) / 8);

		for (unsigned k = 0; k < 8; k++)
			out[at + k] = byte_of(w, k);
	}
	for (; at < len; at++)
		out[at] = byte_of(word_at(seed, (off + at) / 8), (off + at) % 8);
}

size_t readcheck_verify(uint64_t seed, uint64_t off, const void *buf, size_t len,
			uint64_t *first_bad)
{
	const uint8_t *in = buf;
	uint8_t want[4096];
	size_t bad = 0;

	for (size_t at = 0; at < len; at += sizeof(want)) {
		size_t n = len - at < sizeof(want) ? len - at : sizeof(want);

		readcheck_fill(seed, off + at, want, n);
		if (memcmp(want, in + at, n) == 0)
			continue;
		for (size_t i = 0; i < n; i++) {
			if (want[i] == in[at + i])
				continue;
			if (bad == 0 && first_bad)
				*first_bad = off + at + i;
			bad++;
		}
	}
	return bad;
}
