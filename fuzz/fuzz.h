/*
 * fuzz.h - what the fuzz targets in this folder share.
 *
 * Each fuzz_<name>.c feeds one parser of outside input (S3 answers, HTTP
 * requests, JSON bodies, YAML files, snapshots, tokens, CSI maps) through
 * LLVMFuzzerTestOneInput. Configured with clang and -DGRANARY_FUZZ=ON they
 * link libFuzzer (scripts/fuzz.sh runs them); in every other build they
 * link replay.c instead, and ctest (label fuzz) replays the inputs of
 * fuzz/corpus/<name>/ and fuzz/regressions/<name>/ once under the normal
 * compiler, so an input that once broke a parser keeps being tried.
 *
 * A target must not keep state between inputs, write files or log: the
 * same input always takes the same path.
 */
#ifndef GRANARY_FUZZ_FUZZ_H
#define GRANARY_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Keeps a computed value (a strlen over a parsed string) from being
 * optimised away, so that the sanitizers see the reads. */
static inline void fuzz_use(size_t v)
{
	__asm__ volatile("" : : "r"(v));
}

/* A NUL-terminated malloc'd copy of data (NUL bytes inside stay, so C
 * string parsers see a shorter string); NULL when out of memory. */
static inline char *fuzz_strndup(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (s) {
		if (size)
			memcpy(s, data, size);
		s[size] = '\0';
	}
	return s;
}

/*
 * Splits a copy of data at '\n' into at most max fields: the last field
 * takes the rest, newlines included. Fields past the input's end are "".
 * Returns the copy (free it; the fields point into it), NULL when out of
 * memory.
 */
static inline char *fuzz_split(const uint8_t *data, size_t size, char **fields, size_t max)
{
	char *s = fuzz_strndup(data, size), *p;
	size_t i;

	if (!s)
		return NULL;
	p = s;
	for (i = 0; i < max; i++) {
		char *nl = i + 1 < max ? strchr(p, '\n') : NULL;

		fields[i] = p;
		if (nl) {
			*nl = '\0';
			p = nl + 1;
		} else {
			p += strlen(p);
		}
	}
	return s;
}

#endif
