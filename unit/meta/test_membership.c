/*
 * test_membership.c - worker membership from heartbeats, with an injected
 * clock: joins, updates, address moves, leaves and expiry change the
 * version as documented; lists are sorted; bad heartbeats name the field;
 * one worker id is one process (its instance).
 */
#include <string.h>

#include "common/log.h"
#include "meta/membership.h"
#include "unit/check_main.h"

static uint64_t now_ms;

static uint64_t fake_clock(void *arg)
{
	(void)arg;
	return now_ms;
}

static struct membership *make(uint64_t interval, uint64_t expiry)
{
	struct membership_options opt = { .interval_ms = interval, .expiry_ms = expiry,
					  .initial_version = 100, .clock = fake_clock };
	struct membership *m = NULL;
	struct error err;

	log_set_level(LOG_LEVEL_ERROR);
	now_ms = 1000000;
	ck_assert_int_eq(membership_new(&opt, &m, &err), ERR_OK);
	return m;
}

/* A heartbeat of process instance of worker id, which must be accepted. */
static uint64_t beat_as(struct membership *m, const char *id, const char *addr,
			uint64_t instance, uint64_t used)
{
	uint64_t v = 0;
	struct error err;

	ck_assert_msg(membership_heartbeat(m, id, addr, instance, 1000, used, &v, &err) == ERR_OK,
		      "%s", err.msg);
	return v;
}

/* The same from the one process of each id these tests run. */
static uint64_t beat(struct membership *m, const char *id, const char *addr, uint64_t used)
{
	return beat_as(m, id, addr, 1, used);
}

static size_t list(struct membership *m, struct membership_worker **w, uint64_t *version)
{
	size_t n = 0;
	struct error err;

	ck_assert_int_eq(membership_list(m, w, &n, version, &err), ERR_OK);
	return n;
}

START_TEST(test_membership_joins_bump_the_version_and_list_sorted)
{
	struct membership *m = make(1000, 3000);
	struct membership_worker *w;
	uint64_t v;

	ck_assert_uint_eq(membership_version(m), 100);
	ck_assert_uint_eq(beat(m, "node-c", "10.0.0.3:7480", 1), 101);
	ck_assert_uint_eq(beat(m, "node-a", "10.0.0.1:7480", 2), 102);
	ck_assert_uint_eq(beat(m, "node-b", "10.0.0.2:7480", 3), 103);
	/* Updating figures is not a membership change. */
	ck_assert_uint_eq(beat(m, "node-a", "10.0.0.1:7480", 500), 103);
	ck_assert_uint_eq(list(m, &w, &v), 3);
	ck_assert_uint_eq(v, 103);
	ck_assert_str_eq(w[0].id, "node-a");
	ck_assert_str_eq(w[1].id, "node-b");
	ck_assert_str_eq(w[2].id, "node-c");
	ck_assert_uint_eq(w[0].used_bytes, 500);
	ck_assert_uint_eq(w[0].capacity_bytes, 1000);
	ck_assert_str_eq(w[2].address, "10.0.0.3:7480");
	ck_assert_int_gt(w[0].last_seen_unix_ms, 1600000000000LL);
	free(w);
	/* A new address moves blocks: it is a change. */
	ck_assert_uint_eq(beat(m, "node-b", "10.0.0.9:7480", 3), 104);
	membership_free(m);
}
END_TEST

START_TEST(test_membership_expires_silent_workers)
{
	struct membership *m = make(1000, 3000);
	struct membership_worker *w;
	uint64_t v;

	beat(m, "a", "h1:1", 0);
	beat(m, "b", "h2:1", 0);
	ck_assert_uint_eq(membership_version(m), 102);
	/* b keeps beating every interval, a falls silent. */
	for (int i = 0; i < 2; i++) {
		now_ms += 1000;
		beat(m, "b", "h2:1", 0);
	}
	now_ms += 999; /* a silent 2999 ms: still there */
	ck_assert_uint_eq(list(m, &w, &v), 2);
	ck_assert_uint_eq(v, 102);
	free(w);
	now_ms += 1; /* 3000 ms: gone, one version step */
	ck_assert_uint_eq(list(m, &w, &v), 1);
	ck_assert_uint_eq(v, 103);
	ck_assert_str_eq(w[0].id, "b");
	free(w);
	ck_assert_uint_eq(membership_expire(m), 0);
	/* Both silent: both leave in one sweep. */
	beat(m, "a", "h1:1", 0); /* rejoins: 104 */
	now_ms += 10000;
	ck_assert_uint_eq(membership_expire(m), 2);
	ck_assert_uint_eq(membership_version(m), 105);
	ck_assert_uint_eq(list(m, &w, &v), 0);
	free(w);
	/* The version only grows: a rejoin after expiry is a new step. */
	ck_assert_uint_eq(beat(m, "a", "h1:1", 0), 106);
	ck_assert_uint_eq(membership_interval_ms(m), 1000);
	ck_assert_uint_eq(membership_expiry_ms(m), 3000);
	membership_free(m);
}
END_TEST

/* One address, one worker: a second id at a live worker's address would
 * draw the blocks placed on it; refused until that worker expires. */
START_TEST(test_membership_refuses_a_live_worker_address_to_another_id)
{
	struct membership *m = make(1000, 3000);
	struct membership_worker *w;
	struct error err;
	uint64_t v = 0;

	beat(m, "node-a", "10.0.0.1:7480", 0);
	ck_assert_int_eq(membership_heartbeat(m, "node-b", "10.0.0.1:7480", 1, 1000, 0, &v, &err),
			 ERR_EXISTS);
	ck_assert_str_eq(err.msg,
			 "heartbeat of 'node-b': address '10.0.0.1:7480' is live worker 'node-a''s; one address, one worker (it is free once that one expires)");
	ck_assert_uint_eq(list(m, &w, &v), 1);
	ck_assert_uint_eq(v, 101);
	free(w);
	/* node-b moving onto it is refused the same way. */
	beat(m, "node-b", "10.0.0.2:7480", 0);
	ck_assert_int_eq(membership_heartbeat(m, "node-b", "10.0.0.1:7480", 1, 1000, 0, &v, &err),
			 ERR_EXISTS);
	/* Once node-a expires, the address is free. */
	now_ms += 3000;
	beat(m, "node-b", "10.0.0.2:7480", 0);
	beat(m, "node-c", "10.0.0.1:7480", 0);
	membership_free(m);
}
END_TEST

/* The address of the first process of worker "n1" in these tests. */
#define LIVE "10.0.0.5:7480"

static void expect_listed(struct membership *m, const char *address, uint64_t version)
{
	struct membership_worker *w;
	uint64_t v;

	ck_assert_uint_eq(list(m, &w, &v), 1);
	ck_assert_str_eq(w[0].id, "n1");
	ck_assert_str_eq(w[0].address, address);
	ck_assert_uint_eq(v, version);
	free(w);
}

/* Another process at the member's address is the member restarted (two
 * cannot hold one address): it replaces it, and nothing moves. */
START_TEST(test_membership_another_instance_at_the_same_address_replaces_it)
{
	struct membership *m = make(1000, 3000);
	struct error err;
	uint64_t v;

	ck_assert_uint_eq(beat_as(m, "n1", LIVE, 0xaaa, 0), 101);
	now_ms += 500;
	ck_assert_uint_eq(beat_as(m, "n1", LIVE, 0xbbb, 7), 101);
	expect_listed(m, LIVE, 101);
	/* The new process is the member now: its instance is the one named. */
	ck_assert_int_eq(membership_heartbeat(m, "n1", "10.0.0.6:7480", 0xccc, 1000, 0, &v, &err),
			 ERR_EXISTS);
	ck_assert_ptr_nonnull(strstr(err.msg, "(instance 0000000000000bbb)"));
	membership_free(m);
}
END_TEST

/* A second process under a live id at another address (two pods of one
 * node in a rolling update) would flip the membership between the two
 * addresses at every heartbeat: refused, naming the live one, until that
 * one expires. */
START_TEST(test_membership_refuses_a_second_process_of_a_live_id_until_it_expires)
{
	struct membership *m = make(1000, 3000);
	struct error err;
	uint64_t v = 0;

	ck_assert_uint_eq(beat_as(m, "n1", LIVE, 0xaaa, 0), 101);
	ck_assert_int_eq(membership_heartbeat(m, "n1", "10.0.0.6:7480", 0xbbb, 1000, 0, &v, &err),
			 ERR_EXISTS);
	ck_assert_str_eq(err.msg,
			 "worker id 'n1' is held by another live process at 10.0.0.5:7480 (instance 0000000000000aaa); this one joins once that one leaves or stops heartbeating, within 3 s");
	expect_listed(m, LIVE, 101);
	/* Each in turn: the live one stays, the other is refused each time. */
	for (int i = 0; i < 3; i++) {
		now_ms += 1000;
		ck_assert_uint_eq(beat_as(m, "n1", LIVE, 0xaaa, 0), 101);
		ck_assert_int_eq(membership_heartbeat(m, "n1", "10.0.0.6:7480", 0xbbb, 1000, 0, &v,
						      &err),
				 ERR_EXISTS);
	}
	expect_listed(m, LIVE, 101);
	/* The live one falls silent: past the expiry the other joins. */
	now_ms += 3000;
	ck_assert_uint_eq(beat_as(m, "n1", "10.0.0.6:7480", 0xbbb, 0), 103);
	expect_listed(m, "10.0.0.6:7480", 103);
	membership_free(m);
}
END_TEST

/* A stopping process leaves at once, and only itself: a refused or
 * replaced one leaving takes nothing with it. */
START_TEST(test_membership_leave_drops_only_its_own_instance)
{
	struct membership *m = make(1000, 3000);
	struct membership_cached per[1];
	const struct membership_usage u[] = { { "ds", 300, "", 0, 0 } };
	struct membership_worker *w;
	struct error err;
	size_t n;
	uint64_t v = 0;

	ck_assert_uint_eq(beat_as(m, "n1", LIVE, 0xaaa, 0), 101);
	ck_assert_int_eq(membership_set_usage(m, "n1", u, 1, &err), ERR_OK);
	/* Another instance (the refused twin, stopping): nothing changes. */
	ck_assert_int_eq(membership_leave(m, "n1", 0xbbb, &v, &err), ERR_OK);
	ck_assert_uint_eq(v, 101);
	expect_listed(m, LIVE, 101);
	ck_assert_int_eq(membership_leave(m, "n2", 0xaaa, &v, &err), ERR_OK);
	ck_assert_uint_eq(v, 101);
	/* Only a process that names itself may leave. */
	ck_assert_int_eq(membership_leave(m, "n1", 0, &v, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "field 'instance'"));
	expect_listed(m, LIVE, 101);
	/* Its own: gone now, not at the expiry, with its figures. */
	ck_assert_int_eq(membership_leave(m, "n1", 0xaaa, &v, &err), ERR_OK);
	ck_assert_uint_eq(v, 102);
	ck_assert_uint_eq(list(m, &w, &v), 0);
	ck_assert_uint_eq(v, 102);
	free(w);
	ck_assert_uint_eq(membership_cached(m, "ds", per, 1, &n), 0);
	/* A heartbeat of the process that left, answered after its leave
	 * (sent before it, held up), does not bring it back. */
	ck_assert_int_eq(membership_heartbeat(m, "n1", LIVE, 0xaaa, 1000, 0, &v, &err),
			 ERR_PRECONDITION);
	ck_assert_ptr_nonnull(strstr(err.msg, "has left"));
	ck_assert_uint_eq(list(m, &w, &v), 0);
	free(w);
	/* The next process of the id joins at once, at another address. */
	ck_assert_uint_eq(beat_as(m, "n1", "10.0.0.6:7480", 0xbbb, 0), 103);
	/* Leaving again changes nothing. */
	ck_assert_int_eq(membership_leave(m, "n1", 0xaaa, &v, &err), ERR_OK);
	ck_assert_uint_eq(v, 103);
	membership_free(m);
}
END_TEST

/* A worker that sends no instance (0) is taken as it comes, as before
 * instances: its heartbeats from another address move it. */
START_TEST(test_membership_without_instance_the_last_address_wins)
{
	struct membership *m = make(1000, 3000);

	ck_assert_uint_eq(beat_as(m, "n1", LIVE, 0, 0), 101);
	ck_assert_uint_eq(beat_as(m, "n1", "10.0.0.6:7480", 0, 0), 102);
	ck_assert_uint_eq(beat_as(m, "n1", LIVE, 0, 0), 103);
	expect_listed(m, LIVE, 103);
	/* Over a member that has one too. */
	ck_assert_uint_eq(beat_as(m, "n2", "10.0.0.7:7480", 0xaaa, 0), 104);
	ck_assert_uint_eq(beat_as(m, "n2", "10.0.0.8:7480", 0, 0), 105);
	membership_free(m);
}
END_TEST

START_TEST(test_membership_refuses_bad_heartbeats_naming_the_field)
{
	struct membership *m = make(1000, 3000);
	struct error err;
	uint64_t v;
	char longid[300];

	memset(longid, 'x', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = '\0';
	ck_assert_int_eq(membership_heartbeat(m, "", "h:1", 1, 1, 0, &v, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'worker_id'"));
	ck_assert_int_eq(membership_heartbeat(m, longid, "h:1", 1, 1, 0, &v, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'worker_id'"));
	ck_assert_int_eq(membership_heartbeat(m, "a b", "h:1", 1, 1, 0, &v, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'worker_id'"));
	ck_assert_int_eq(membership_heartbeat(m, "a", "nohost", 1, 1, 0, &v, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'address'"));
	ck_assert_int_eq(membership_heartbeat(m, "a", "unix:///run/w.sock", 1, 1, 0, &v, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'address'"));
	ck_assert_int_eq(membership_heartbeat(m, "a", "h:1", 1, 1, 2, &v, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'used_bytes'"));
	/* Nothing joined. */
	ck_assert_uint_eq(membership_version(m), 100);
	membership_free(m);
}
END_TEST

START_TEST(test_membership_checks_options_and_starts_from_the_wall_clock)
{
	struct membership_options opt = { .interval_ms = 1000, .expiry_ms = 1000 };
	struct membership *m = NULL;
	struct error err;

	ck_assert_int_eq(membership_new(&opt, &m, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "expiry"));
	opt.interval_ms = 0;
	ck_assert_int_eq(membership_new(&opt, &m, &err), ERR_INVALID);
	opt.interval_ms = 1000;
	opt.expiry_ms = 3000;
	ck_assert_int_eq(membership_new(&opt, &m, &err), ERR_OK);
	/* Later than 2020-09 in milliseconds: a restart never reuses a version. */
	ck_assert_uint_gt(membership_version(m), 1600000000000ULL);
	membership_free(m);
}
END_TEST

START_TEST(test_membership_cached_bytes_sum_live_workers_and_go_with_them)
{
	struct membership *m = make(1000, 3000);
	struct membership_cached per[4];
	const struct membership_usage a[] = { { "ns.imagenet", 300, "running", 3, 10 },
					       { "ns.other", 7, "", 0, 0 } },
				      b[] = { { "ns.imagenet", 200, NULL, 0, 0 } };
	struct error err;
	size_t n = 9;

	ck_assert_int_eq(membership_set_usage(m, "node-a", a, 2, &err), ERR_NOT_FOUND);
	beat(m, "node-b", "10.0.0.2:7480", 0);
	beat(m, "node-a", "10.0.0.1:7480", 0);
	ck_assert_int_eq(membership_set_usage(m, "node-a", a, 2, &err), ERR_OK);
	ck_assert_int_eq(membership_set_usage(m, "node-b", b, 1, &err), ERR_OK);
	ck_assert_uint_eq(membership_cached(m, "ns.imagenet", per, 4, &n), 500);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(per[0].worker, "node-a");
	ck_assert_uint_eq(per[0].bytes, 300);
	ck_assert_str_eq(per[0].preload, "running");
	ck_assert_uint_eq(per[0].preload_done, 3);
	ck_assert_uint_eq(per[0].preload_total, 10);
	ck_assert_str_eq(per[1].preload, "");
	ck_assert_str_eq(per[1].worker, "node-b");
	ck_assert_uint_eq(per[1].bytes, 200);
	ck_assert_uint_eq(membership_cached(m, "ns.other", per, 4, &n), 7);
	ck_assert_uint_eq(membership_cached(m, "ns.none", per, 4, &n), 0);
	ck_assert_uint_eq(n, 0);
	/* A later heartbeat's figures replace the earlier ones. */
	ck_assert_int_eq(membership_set_usage(m, "node-a", NULL, 0, &err), ERR_OK);
	ck_assert_uint_eq(membership_cached(m, "ns.imagenet", per, 4, &n), 200);
	/* A worker that expires takes its bytes along. */
	now_ms += 2000;
	beat(m, "node-a", "10.0.0.1:7480", 0);
	now_ms += 1500;
	ck_assert_uint_eq(membership_cached(m, "ns.imagenet", per, 4, &n), 0);
	membership_free(m);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("membership");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_membership_joins_bump_the_version_and_list_sorted);
	tcase_add_test(tc, test_membership_expires_silent_workers);
	tcase_add_test(tc, test_membership_refuses_bad_heartbeats_naming_the_field);
	tcase_add_test(tc, test_membership_refuses_a_live_worker_address_to_another_id);
	tcase_add_test(tc, test_membership_another_instance_at_the_same_address_replaces_it);
	tcase_add_test(tc, test_membership_refuses_a_second_process_of_a_live_id_until_it_expires);
	tcase_add_test(tc, test_membership_leave_drops_only_its_own_instance);
	tcase_add_test(tc, test_membership_without_instance_the_last_address_wins);
	tcase_add_test(tc, test_membership_checks_options_and_starts_from_the_wall_clock);
	tcase_add_test(tc, test_membership_cached_bytes_sum_live_workers_and_go_with_them);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
