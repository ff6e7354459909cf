/*
 * test_retry.c - backoff growth, jitter bounds, attempt and deadline limits.
 */
#include "common/retry.h"
#include "unit/check_main.h"

START_TEST(test_retry_stops_after_max_attempts)
{
	struct retry_policy p = { .max_attempts = 4, .base_ms = 10, .max_ms = 1000 };
	struct retry r;
	uint64_t d;
	int retries = 0;

	retry_init_at(&r, &p, 0, 42);
	while (retry_next(&r, 0, &d))
		retries++;
	ck_assert_int_eq(retries, 3);
	ck_assert_uint_eq(r.attempt, 4);
}
END_TEST

START_TEST(test_retry_delays_grow_exponentially_within_jitter_bounds)
{
	struct retry_policy p = { .max_attempts = 20, .base_ms = 100, .max_ms = 1600 };
	struct retry r;
	uint64_t d, step = 100;

	retry_init_at(&r, &p, 0, 7);
	for (int i = 0; i < 10; i++) {
		ck_assert(retry_next(&r, 0, &d));
		/* equal jitter: within [step/2, step] */
		ck_assert_uint_ge(d, step / 2);
		ck_assert_uint_le(d, step);
		if (step < 1600)
			step *= 2;
	}
}
END_TEST

START_TEST(test_retry_jitter_spreads_clients)
{
	struct retry_policy p = { .max_attempts = 3, .base_ms = 1000, .max_ms = 1000 };
	uint64_t first = 0, d;
	int distinct = 0;

	for (uint64_t seed = 1; seed <= 20; seed++) {
		struct retry r;

		retry_init_at(&r, &p, 0, seed);
		ck_assert(retry_next(&r, 0, &d));
		if (seed == 1)
			first = d;
		else if (d != first)
			distinct++;
	}
	ck_assert_int_gt(distinct, 10);
}
END_TEST

START_TEST(test_retry_never_sleeps_past_the_deadline)
{
	struct retry_policy p = { .max_attempts = 100, .base_ms = 100, .max_ms = 400,
				  .deadline_ms = 1000 };
	struct retry r;
	uint64_t now = 0, d;

	retry_init_at(&r, &p, 5000, 3);
	now = 5000;
	while (retry_next(&r, now, &d)) {
		now += d + 50; /* each try takes 50 ms */
		ck_assert_uint_le(now, 5000 + 1000 + 50);
	}
	ck_assert_uint_lt(r.attempt, 100);
	ck_assert_uint_eq(retry_remaining_ms(&r, 7000), 0);
	ck_assert_uint_eq(retry_remaining_ms(&r, 5400), 600);
}
END_TEST

START_TEST(test_retry_without_deadline_has_no_limit_but_attempts)
{
	struct retry_policy p = { .max_attempts = 2, .base_ms = 1, .max_ms = 1 };
	struct retry r;
	uint64_t d;

	retry_init(&r, &p);
	ck_assert_uint_eq(retry_remaining_ms(&r, retry_now_ms()), UINT64_MAX);
	ck_assert(retry_next(&r, retry_now_ms(), &d));
	ck_assert(!retry_next(&r, retry_now_ms(), &d));
}
END_TEST

START_TEST(test_retry_sleep_waits_about_the_time)
{
	uint64_t t0 = retry_now_ms();

	retry_sleep_ms(30);
	ck_assert_uint_ge(retry_now_ms() - t0, 30);
}
END_TEST

START_TEST(test_retry_deadline_ts_is_ms_ahead_on_the_clock_asked)
{
	const clockid_t clocks[] = { CLOCK_REALTIME, CLOCK_MONOTONIC };

	for (size_t i = 0; i < 2; i++) {
		struct timespec before, at;
		int64_t ahead_ns;

		clock_gettime(clocks[i], &before);
		/* 999 ms carries into the seconds for most starting points */
		at = retry_deadline_ts(clocks[i], 2999);
		ck_assert_int_ge(at.tv_nsec, 0);
		ck_assert_int_lt(at.tv_nsec, 1000000000L);
		ahead_ns = (int64_t)(at.tv_sec - before.tv_sec) * 1000000000 +
			   (at.tv_nsec - before.tv_nsec);
		ck_assert_int_ge(ahead_ns, 2999000000LL);
		ck_assert_int_lt(ahead_ns, 3999000000LL);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("retry");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_retry_stops_after_max_attempts);
	tcase_add_test(tc, test_retry_delays_grow_exponentially_within_jitter_bounds);
	tcase_add_test(tc, test_retry_jitter_spreads_clients);
	tcase_add_test(tc, test_retry_never_sleeps_past_the_deadline);
	tcase_add_test(tc, test_retry_without_deadline_has_no_limit_but_attempts);
	tcase_add_test(tc, test_retry_sleep_waits_about_the_time);
	tcase_add_test(tc, test_retry_deadline_ts_is_ms_ahead_on_the_clock_asked);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
