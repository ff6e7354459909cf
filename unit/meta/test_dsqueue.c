/*
 * test_dsqueue.c - the Dataset controller's objects waiting for another
 * look (meta/dsqueue.c): no key lost however many, backoff, a key whose
 * job runs, a key whose object is gone.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meta/dsqueue.h"
#include "unit/check_main.h"

#define NOW 1000000

/* Takes every key due at now, 64 at a time as the controller does, and
 * counts each index of "team/ds-INDEX" in seen. Returns how many. */
static size_t take_all(struct dsqueue *q, uint64_t now, unsigned *seen, size_t n)
{
	char out[64][DSQUEUE_KEY_LEN];
	uint64_t next;
	size_t got, total = 0;

	while ((got = dsqueue_take_due(q, now, out, 64, &next)) > 0) {
		for (size_t i = 0; i < got; i++) {
			unsigned long k;

			ck_assert_int_eq(sscanf(out[i], "team/ds-%lu", &k), 1);
			ck_assert_uint_lt(k, n);
			seen[k]++;
		}
		total += got;
	}
	return total;
}

/* A leader starts with 10000 Datasets, more than the 4096 the controller
 * once kept: 4 get a job, every other one waits for a free job slot. Each
 * is looked at again, exactly once. */
START_TEST(test_dsqueue_keeps_every_key_of_a_leaders_start)
{
	enum { N = 10000, JOBS = 4 };
	struct dsqueue *q = dsqueue_new();
	unsigned *seen = calloc(N, sizeof(*seen));
	char key[DSQUEUE_KEY_LEN];

	ck_assert_ptr_nonnull(q);
	ck_assert_ptr_nonnull(seen);
	for (unsigned i = 0; i < N; i++) {
		snprintf(key, sizeof(key), "team/ds-%u", i);
		if (i < JOBS)
			ck_assert(dsqueue_start(q, key));
		else
			ck_assert_uint_eq(dsqueue_again(q, key, NOW, 1000, false), NOW + 1000);
	}
	/* Not due yet; running keys are never taken. */
	ck_assert_uint_eq(take_all(q, NOW + 999, seen, N), 0);
	ck_assert_uint_eq(take_all(q, NOW + 1000, seen, N), N - JOBS);
	for (unsigned i = 0; i < JOBS; i++) {
		snprintf(key, sizeof(key), "team/ds-%u", i);
		ck_assert(dsqueue_running(q, key));
		dsqueue_finished(q, key, NOW + 2000);
	}
	ck_assert_uint_eq(take_all(q, NOW + 2000, seen, N), JOBS);
	for (unsigned i = 0; i < N; i++)
		ck_assert_msg(seen[i] == 1, "team/ds-%u looked at %u times", i, seen[i]);
	/* Nothing is left waiting. */
	ck_assert_uint_eq(take_all(q, UINT64_MAX, seen, N), 0);
	free(seen);
	dsqueue_free(q);
}
END_TEST

START_TEST(test_dsqueue_backoff_doubles_to_five_minutes_and_settles)
{
	struct dsqueue *q = dsqueue_new();
	uint64_t delay = DSQUEUE_RETRY_FIRST_MS;

	for (int i = 0; i < 10; i++) {
		ck_assert_uint_eq(dsqueue_again(q, "team/a", NOW, 0, true), NOW + delay);
		ck_assert(dsqueue_backing_off(q, "team/a", NOW + delay - 1));
		ck_assert(!dsqueue_backing_off(q, "team/a", NOW + delay));
		delay = delay * 2 > DSQUEUE_RETRY_MAX_MS ? DSQUEUE_RETRY_MAX_MS : delay * 2;
	}
	ck_assert_uint_eq(delay, 300000);
	/* A plain wake-up keeps the backoff reached. */
	ck_assert_uint_eq(dsqueue_again(q, "team/a", NOW, 1000, false), NOW + 1000);
	ck_assert(dsqueue_backing_off(q, "team/a", NOW));
	dsqueue_settled(q, "team/a");
	ck_assert(!dsqueue_backing_off(q, "team/a", NOW));
	ck_assert_uint_eq(dsqueue_again(q, "team/a", NOW, 0, true), NOW + DSQUEUE_RETRY_FIRST_MS);
	/* Other keys keep their own. */
	ck_assert(!dsqueue_backing_off(q, "team/b", NOW));
	dsqueue_free(q);
}
END_TEST

START_TEST(test_dsqueue_a_running_key_is_looked_at_when_its_job_ends)
{
	struct dsqueue *q = dsqueue_new();
	char out[4][DSQUEUE_KEY_LEN];
	uint64_t next;

	ck_assert(dsqueue_start(q, "team/a"));
	ck_assert(dsqueue_running(q, "team/a"));
	/* An event while the job runs: due, but not taken until it ends. */
	ck_assert_uint_eq(dsqueue_again(q, "team/a", NOW, 500, false), NOW + 500);
	ck_assert_uint_eq(dsqueue_take_due(q, NOW + 600, out, 4, &next), 0);
	ck_assert_uint_eq(next, 0);
	/* It ends later: the look asked for stays as it was. */
	dsqueue_finished(q, "team/a", NOW + 700);
	ck_assert(!dsqueue_running(q, "team/a"));
	ck_assert_uint_eq(dsqueue_take_due(q, NOW + 700, out, 4, &next), 1);
	ck_assert_str_eq(out[0], "team/a");
	/* A job that ends with no look due asks for one now. */
	ck_assert(dsqueue_start(q, "team/a"));
	dsqueue_finished(q, "team/a", NOW + 800);
	ck_assert_uint_eq(dsqueue_take_due(q, NOW + 799, out, 4, &next), 0);
	ck_assert_uint_eq(next, NOW + 800);
	ck_assert_uint_eq(dsqueue_take_due(q, NOW + 800, out, 4, &next), 1);
	dsqueue_free(q);
}
END_TEST

START_TEST(test_dsqueue_takes_at_most_max_and_says_when_the_rest_is_due)
{
	struct dsqueue *q = dsqueue_new();
	char out[2][DSQUEUE_KEY_LEN];
	uint64_t next;

	dsqueue_again(q, "team/a", NOW, 10, false);
	dsqueue_again(q, "team/b", NOW, 20, false);
	dsqueue_again(q, "team/c", NOW, 30, false);
	dsqueue_again(q, "team/d", NOW, 5000, false);
	ck_assert_uint_eq(dsqueue_take_due(q, NOW + 30, out, 2, &next), 2);
	/* One more is due already. */
	ck_assert_uint_le(next, NOW + 30);
	ck_assert_uint_eq(dsqueue_take_due(q, NOW + 30, out, 2, &next), 1);
	ck_assert_uint_eq(next, NOW + 5000);
	/* A look asked for again moves. */
	dsqueue_again(q, "team/d", NOW, 100, false);
	ck_assert_uint_eq(dsqueue_take_due(q, NOW + 100, out, 2, &next), 1);
	ck_assert_str_eq(out[0], "team/d");
	ck_assert_uint_eq(next, 0);
	dsqueue_free(q);
}
END_TEST

START_TEST(test_dsqueue_forgets_a_gone_object_unless_its_job_runs)
{
	struct dsqueue *q = dsqueue_new();
	char out[2][DSQUEUE_KEY_LEN];
	uint64_t next;

	dsqueue_again(q, "team/a", NOW, 0, true);
	dsqueue_forget(q, "team/a");
	ck_assert(!dsqueue_backing_off(q, "team/a", NOW));
	ck_assert_uint_eq(dsqueue_take_due(q, UINT64_MAX, out, 2, &next), 0);
	ck_assert(dsqueue_start(q, "team/b"));
	dsqueue_forget(q, "team/b");
	ck_assert(dsqueue_running(q, "team/b"));
	dsqueue_finished(q, "team/b", NOW);
	ck_assert_uint_eq(dsqueue_take_due(q, NOW, out, 2, &next), 1);
	dsqueue_free(q);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("dsqueue");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_dsqueue_keeps_every_key_of_a_leaders_start);
	tcase_add_test(tc, test_dsqueue_backoff_doubles_to_five_minutes_and_settles);
	tcase_add_test(tc, test_dsqueue_a_running_key_is_looked_at_when_its_job_ends);
	tcase_add_test(tc, test_dsqueue_takes_at_most_max_and_says_when_the_rest_is_due);
	tcase_add_test(tc, test_dsqueue_forgets_a_gone_object_unless_its_job_runs);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
