/*
 * readcheck.h - a dataset whose every byte is a pure function of its file
 * name and offset, so that a reader checks all it reads with no manifest.
 *
 * A file's seed is the FNV-1a hash of its base name. Its content is a
 * stream of 64-bit little-endian words, word i being the splitmix64 output
 * of seed + (i + 1) * 0x9e3779b97f4a7c15; the byte at offset o is byte
 * o % 8 of word o / 8. Any range can be made or checked on its own (reads
 * of any size at any offset), and two files with different names differ.
 *
 * The functions keep no state and are thread-safe.
 */
#ifndef GRANARY_BENCH_READCHECK_H
#define GRANARY_BENCH_READCHECK_H

#include <stddef.h>
#include <stdint.h>

/* Seed of the file whose base name is name (anything after the last '/'). */
uint64_t readcheck_seed(const char *name);

/* Writes the len bytes of the file with this seed that start at off. */
void readcheck_fill(uint64_t seed, uint64_t off, void *buf, size_t len);

/*
 * Compares buf with the file's bytes [off, off + len). Returns the number of
 * bytes that differ (0: all right); *first_bad, if not NULL, receives the
 * file offset of the first one (unchanged when none differs).
 */
size_t readcheck_verify(uint64_t seed, uint64_t off, const void *buf, size_t len,
			uint64_t *first_bad);

#endif
