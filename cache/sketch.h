/*
 * sketch.h - a decaying frequency sketch for cache admission (TinyLFU).
 *
 * A count-min sketch of 4 rows of 4-bit counters estimates how often a key
 * has been asked for recently. Keys are 128-bit hashes that are already
 * uniformly random (block keys), so each row takes its index from its own
 * 32 bits of the key and no further hashing is done.
 *
 * Sizing: each row has the next power of two above 8 counters per item the
 * cache can hold, so that a sample of 10 x items increments spread over it
 * leaves about one collision per counter per row; the minimum over 4 rows
 * is then rarely off. Updates are conservative (only the counters equal to
 * the current minimum grow), which keeps the estimate tighter still.
 *
 * Decay: after every 10 x items increments all counters are halved, so an
 * old burst of popularity fades and a new hot set can win admission.
 *
 * Not thread-safe: the block store calls it under its own mutex.
 */
#ifndef GRANARY_CACHE_SKETCH_H
#define GRANARY_CACHE_SKETCH_H

#include <stdint.h>

#define SKETCH_KEY_LEN 16
#define SKETCH_COUNTER_MAX 15

struct sketch;

/* A sketch sized for a cache of items entries (at least 1); NULL if out of
 * memory. */
struct sketch *sketch_new(uint64_t items);
void sketch_free(struct sketch *sk);

/* Counts one access to key; may halve every counter (see above). */
void sketch_increment(struct sketch *sk, const uint8_t key[SKETCH_KEY_LEN]);

/* Estimated recent accesses of key, 0..SKETCH_COUNTER_MAX. */
unsigned sketch_estimate(const struct sketch *sk, const uint8_t key[SKETCH_KEY_LEN]);

/* Increments counted since the last halving, and the period (for tests). */
uint64_t sketch_sample_count(const struct sketch *sk);
uint64_t sketch_sample_period(const struct sketch *sk);

#endif
