/*
 * retry.c - bounded exponential backoff with equal jitter.
 */
#include "common/retry.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

uint64_t retry_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

double retry_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int64_t retry_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct timespec retry_deadline_ts(clockid_t clock, uint64_t ms)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

void retry_sleep_ms(uint64_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

void retry_init_at(struct retry *r, const struct retry_policy *policy,
		   uint64_t now_ms, uint64_t seed)
{
	r->policy = *policy;
	if (r->policy.max_attempts == 0)
		r->policy.max_attempts = 1;
	if (r->policy.max_ms < r->policy.base_ms)
		r->policy.max_ms = r->policy.base_ms;
	r->attempt = 1;
	r->start_ms = now_ms;
	r->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
}

void retry_init(struct retry *r, const struct retry_policy *policy)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	retry_init_at(r, policy, retry_now_ms(),
		      (uint64_t)ts.tv_nsec ^ ((uint64_t)(uintptr_t)r << 17) ^ (uint64_t)getpid());
}

static uint64_t next_random(struct retry *r)
{
	uint64_t x = r->rng;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	r->rng = x;
	return x;
}

uint64_t retry_remaining_ms(const struct retry *r, uint64_t now_ms)
{
	uint64_t end;

	if (r->policy.deadline_ms == 0)
		return UINT64_MAX;
	end = r->start_ms + r->policy.deadline_ms;
	return now_ms >= end ? 0 : end - now_ms;
}

bool retry_next(struct retry *r, uint64_t now_ms, uint64_t *delay_ms)
{
	uint64_t step = r->policy.base_ms, delay;
	unsigned n = r->attempt - 1;

	if (r->attempt >= r->policy.max_attempts)
		return false;
	/* base * 2^n without overflow: stop doubling once at the cap. */
	while (n-- > 0 && step < r->policy.max_ms)
		step *= 2;
	if (step > r->policy.max_ms)
		step = r->policy.max_ms;
	delay = step / 2 + (step - step / 2 ? next_random(r) % (step - step / 2 + 1) : 0);
	if (delay >= retry_remaining_ms(r, now_ms))
		return false;
	r->attempt++;
	*delay_ms = delay;
	return true;
}
