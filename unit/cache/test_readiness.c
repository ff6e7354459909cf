/*
 * test_readiness.c - granary-worker's /readyz verdict: standalone, joined
 * within and past the heartbeat expiry, meta unreachable or refusing with
 * the time since and the cause, a worker that left, and the cache
 * directory's check first.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache/readiness.h"
#include "unit/check_main.h"

#define ADDR "granary-meta.granary-system:7400"

static struct readiness *make(struct blockstore *bs, const char *addr, uint64_t t0)
{
	struct readiness *r = NULL;
	struct error err;

	ck_assert_int_eq(readiness_new(bs, addr, t0, &r, &err), ERR_OK);
	return r;
}

static void expect_reason(struct readiness *r, uint64_t now, const char *want)
{
	struct error err;

	ck_assert_int_eq(readiness_check(r, now, &err), ERR_UNAVAILABLE);
	ck_assert_str_eq(err.msg, want);
}

START_TEST(test_readiness_standalone_worker_is_ready)
{
	struct readiness *r = make(NULL, "", 0);
	struct error err;

	ck_assert_int_eq(readiness_check(r, 123456, &err), ERR_OK);
	readiness_free(r);
	r = make(NULL, NULL, 0);
	ck_assert_int_eq(readiness_check(r, 0, &err), ERR_OK);
	readiness_free(r);
}
END_TEST

START_TEST(test_readiness_member_is_ready_within_the_expiry_only)
{
	struct readiness *r = make(NULL, ADDR, 1000);
	struct error err;

	/* The first round has not answered yet. */
	expect_reason(r, 1001, "not joined granary-meta at " ADDR " yet");
	readiness_heartbeat_ok(r, 1100, 3000);
	ck_assert_int_eq(readiness_check(r, 1100, &err), ERR_OK);
	ck_assert_int_eq(readiness_check(r, 4100, &err), ERR_OK);
	/* Silent past meta's expiry (no call failed: a call hangs). */
	expect_reason(r, 6200, "no heartbeat accepted by granary-meta at " ADDR " for 5s");
	readiness_heartbeat_ok(r, 6300, 0);
	ck_assert_int_eq(readiness_check(r, 9300, &err), ERR_OK);
	readiness_free(r);
}
END_TEST

/* Once the worker told meta it leaves, it is not ready, whatever its last
 * heartbeat; a standalone worker, which joined nothing, stays ready. */
START_TEST(test_readiness_a_worker_that_left_is_not_ready)
{
	struct readiness *r = make(NULL, ADDR, 1000);
	struct error err;

	readiness_heartbeat_ok(r, 1100, 3000);
	ck_assert_int_eq(readiness_check(r, 1200, &err), ERR_OK);
	readiness_left(r);
	expect_reason(r, 1300, "stopping: this worker left granary-meta at " ADDR
			       " and serves only the requests in progress");
	readiness_heartbeat_ok(r, 1400, 3000);
	ck_assert_int_eq(readiness_check(r, 1500, &err), ERR_UNAVAILABLE);
	readiness_free(r);
	r = make(NULL, "", 0);
	readiness_left(r);
	ck_assert_int_eq(readiness_check(r, 10, &err), ERR_OK);
	readiness_free(r);
}
END_TEST

START_TEST(test_readiness_unreachable_meta_names_the_address_time_and_cause)
{
	struct readiness *r = make(NULL, ADDR, 1000);
	struct error err;

	/* Unreachable from the start: since counts from start. */
	readiness_meta_failed(r, 1200, true, "connection refused");
	readiness_meta_failed(r, 13500, true, "connection refused again");
	expect_reason(r, 13500,
		      "granary-meta unreachable at " ADDR " since 12s: connection refused again");
	readiness_heartbeat_ok(r, 14000, 15000);
	ck_assert_int_eq(readiness_check(r, 14000, &err), ERR_OK);
	/* An outage shorter than the expiry does not make the worker unready:
	 * meta keeps it in the membership that long. */
	readiness_meta_failed(r, 20000, true, "deadline exceeded");
	ck_assert_int_eq(readiness_check(r, 28000, &err), ERR_OK);
	/* Past it: since counts from the first failure after the last success. */
	readiness_meta_failed(r, 30000, true, "deadline exceeded");
	expect_reason(r, 31000, "granary-meta unreachable at " ADDR " since 11s: deadline exceeded");
	readiness_free(r);
}
END_TEST

START_TEST(test_readiness_refused_heartbeat_is_told_apart)
{
	struct readiness *r = make(NULL, ADDR, 0);

	readiness_meta_failed(r, 2000, false, "worker_id: required");
	expect_reason(r, 2000,
		      "granary-meta at " ADDR " refuses the heartbeat since 2s: worker_id: required");
	readiness_free(r);
}
END_TEST

START_TEST(test_readiness_cache_directory_comes_first)
{
	char dir[] = "/tmp/granary-test-readiness-XXXXXX", tmp[64], cmd[128];
	struct blockstore *bs = NULL;
	struct readiness *r;
	struct error err;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(blockstore_open(&(struct blockstore_config){ .dir = dir,
								       .capacity = 1 << 20 },
					 &bs, &err),
			 ERR_OK);
	r = make(bs, ADDR, 0);
	readiness_heartbeat_ok(r, 10, 15000);
	ck_assert_int_eq(readiness_check(r, 20, &err), ERR_OK);
	snprintf(tmp, sizeof(tmp), "%s/tmp", dir);
	ck_assert_int_eq(rmdir(tmp), 0);
	ck_assert_int_eq(readiness_check(r, 30, &err), ERR_UNAVAILABLE);
	ck_assert_msg(strstr(err.msg, "cache directory '") && strstr(err.msg, "is not writable"),
		      "%s", err.msg);
	readiness_free(r);
	blockstore_free(bs);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("readiness");
	TCase *tc = tcase_create("readiness");

	tcase_add_test(tc, test_readiness_standalone_worker_is_ready);
	tcase_add_test(tc, test_readiness_member_is_ready_within_the_expiry_only);
	tcase_add_test(tc, test_readiness_unreachable_meta_names_the_address_time_and_cause);
	tcase_add_test(tc, test_readiness_refused_heartbeat_is_told_apart);
	tcase_add_test(tc, test_readiness_a_worker_that_left_is_not_ready);
	tcase_add_test(tc, test_readiness_cache_directory_comes_first);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
