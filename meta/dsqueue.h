/*
 * dsqueue.h - the Dataset controller's objects waiting for another look
 * (meta/datasets.c): a failure's retry with its backoff, a job running
 * for an object, a job that ended and asks for the object's latest state.
 *
 * A set of keys "N/D" without a bound: a key is kept while it waits for
 * something (a look due, a job running, a backoff reached) and dropped
 * when it waits for nothing, so a leader that starts with any number of
 * Datasets loses none of them and the set holds only the objects in
 * flight. A jansson object (a hash table) holds the keys.
 *
 * Not thread-safe: the controller calls it under its lock. Times are
 * retry_now_ms() values passed in (never 0, which reads as "none"), so
 * that tests set the clock. Only a key not kept yet needs memory: the
 * calls that add one say when there was none.
 */
#ifndef GRANARY_META_DSQUEUE_H
#define GRANARY_META_DSQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "N/D": a namespace (63), '/', a name (253), NUL. */
#define DSQUEUE_KEY_LEN (63 + 1 + 253 + 1)
/* A failure's first retry, doubling up to the last. */
#define DSQUEUE_RETRY_FIRST_MS 5000
#define DSQUEUE_RETRY_MAX_MS 300000

struct dsqueue;

/* An empty set; NULL when out of memory. */
struct dsqueue *dsqueue_new(void);
void dsqueue_free(struct dsqueue *q);

/*
 * Look at key again at now_ms + delay_ms; with backoff, after the delay of
 * the key's last failure doubled instead (DSQUEUE_RETRY_FIRST_MS the
 * first time, at most DSQUEUE_RETRY_MAX_MS). A look already due is moved.
 * Returns when it falls due; 0 when out of memory (the key is not kept).
 */
uint64_t dsqueue_again(struct dsqueue *q, const char *key, uint64_t now_ms, uint64_t delay_ms,
		       bool backoff);

/* A success: the key's next failure starts its backoff afresh. */
void dsqueue_settled(struct dsqueue *q, const char *key);

/* Whether key waits for the retry of a failure (a backoff reached, its
 * look not due at now_ms yet). */
bool dsqueue_backing_off(const struct dsqueue *q, const char *key, uint64_t now_ms);

/* Whether a job runs for key. */
bool dsqueue_running(const struct dsqueue *q, const char *key);

/* A job starts for key: running, its look no longer due. false when out
 * of memory (nothing changed). */
bool dsqueue_start(struct dsqueue *q, const char *key);

/* The job for key ended: not running, and a look due at now_ms unless one
 * is due already (the object may have changed while the job ran). */
void dsqueue_finished(struct dsqueue *q, const char *key, uint64_t now_ms);

/*
 * Takes up to max keys whose look is due at now_ms and whose job is not
 * running into out (their looks are then no longer due). *next_ms: the
 * earliest look still due of the keys left (at or before now_ms when more
 * than max were due), 0 when none. Returns how many were taken.
 */
size_t dsqueue_take_due(struct dsqueue *q, uint64_t now_ms, char (*out)[DSQUEUE_KEY_LEN],
			size_t max, uint64_t *next_ms);

/* The object is gone: key dropped, unless a job runs for it. */
void dsqueue_forget(struct dsqueue *q, const char *key);

#endif
