/*
 * retry.h - bounded exponential backoff with jitter.
 *
 * A struct retry tracks one call's attempts against a policy: at most
 * max_attempts tries and, when deadline_ms is set, no sleep that would end
 * past the deadline. Delays grow as base * 2^n, capped at max_ms, with
 * "equal jitter": half the step is fixed and half is random, so retries of
 * many clients spread out but never collapse to zero. Caller-owned storage,
 * one per call; not shared between threads.
 */
#ifndef GRANARY_COMMON_RETRY_H
#define GRANARY_COMMON_RETRY_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct retry_policy {
	unsigned max_attempts; /* total tries, the first included; >= 1 */
	uint64_t base_ms;      /* first backoff step */
	uint64_t max_ms;       /* cap of one step */
	uint64_t deadline_ms;  /* budget for all tries from retry_init; 0 = none */
};

struct retry {
	struct retry_policy policy;
	unsigned attempt;      /* tries started so far */
	uint64_t start_ms;     /* monotonic time at retry_init */
	uint64_t rng;          /* xorshift state for jitter */
};

/* Starts tracking a call; the first try is allowed at once. */
void retry_init(struct retry *r, const struct retry_policy *policy);

/* Same with an explicit start time and jitter seed (tests). */
void retry_init_at(struct retry *r, const struct retry_policy *policy,
		   uint64_t now_ms, uint64_t seed);

/*
 * Call after a failed try that may be retried. Returns true and the delay
 * to sleep before the next try in *delay_ms, or false when the attempts are
 * used up or the deadline would pass before the next try could start.
 */
bool retry_next(struct retry *r, uint64_t now_ms, uint64_t *delay_ms);

/* Milliseconds of the deadline left at now_ms (UINT64_MAX when none). */
uint64_t retry_remaining_ms(const struct retry *r, uint64_t now_ms);

/*
 * The project's clock, one place for it: deadlines, backoff, rate limits
 * and latencies use the monotonic clock; only times that leave the
 * process (records, logs' timestamps aside) use the wall clock.
 */
/* Monotonic clock in milliseconds. */
uint64_t retry_now_ms(void);
/* Monotonic clock in seconds, to the nanosecond: latencies, benchmarks. */
double retry_now_s(void);
/* Wall clock (CLOCK_REALTIME) in milliseconds since the epoch. */
int64_t retry_wall_ms(void);

/*
 * The time ms milliseconds from now on clock, as the absolute time that
 * pthread_cond_timedwait and pthread_timedjoin_np take: CLOCK_REALTIME for
 * a condition variable with default attributes, CLOCK_MONOTONIC for one
 * set to it (pthread_condattr_setclock).
 */
struct timespec retry_deadline_ts(clockid_t clock, uint64_t ms);

/* Sleeps ms milliseconds, resuming after signals. */
void retry_sleep_ms(uint64_t ms);

#endif
