/*
 * test_inflight.c - the read-ahead's limit, window by window: a try only
 * from a steady rate, up only while fetches queue, judged against the
 * windows before and after it, kept only where it pays (up) or costs
 * nothing (down), later and later tries after ones not kept, within the
 * floor and the cap.
 */
#include "cache/inflight.h"
#include "unit/check_main.h"

/* Feeds one window and returns the limit it leaves. */
static unsigned win(struct inflight_ctl *c, double rate, bool queued)
{
	return inflight_window(c, rate, queued);
}

/* Windows at a steady rate with fetches queued until the limit moves (a
 * try begins): how many it took, 0 if not within max. */
static unsigned windows_until_a_try(struct inflight_ctl *c, double rate, unsigned max)
{
	unsigned from = c->limit;

	for (unsigned n = 1; n <= max; n++)
		if (win(c, rate, true) != from)
			return n;
	return 0;
}

/* The rest of a try that began: its settling, its window at the tried
 * limit (tried), the way back, the window there (back). Returns the
 * limit decided. */
static unsigned finish_try(struct inflight_ctl *c, double tried, double back)
{
	const unsigned from = c->from, to = c->to;

	ck_assert_uint_eq(c->limit, to);
	ck_assert_uint_eq(win(c, 1, true), to); /* settling: not measured */
	ck_assert_uint_eq(win(c, tried, true), from);
	ck_assert_uint_eq(win(c, 1, true), from);
	return win(c, back, true);
}

START_TEST(test_inflight_starts_at_the_floor_and_a_cap_below_it_fixes_it)
{
	struct inflight_ctl c;

	inflight_init(&c, 64, 256);
	ck_assert_uint_eq(c.limit, 64);
	inflight_init(&c, 64, 16);
	for (int i = 0; i < 50; i++)
		ck_assert_uint_eq(win(&c, 1000, true), 64);
	inflight_init(&c, 0, 0);
	ck_assert_uint_eq(c.limit, 1);
}
END_TEST

START_TEST(test_inflight_rises_while_it_pays_and_stops_at_the_cap)
{
	struct inflight_ctl c;

	inflight_init(&c, 64, 200);
	/* one window to have a rate, the second steady: the try */
	ck_assert_uint_eq(windows_until_a_try(&c, 1000, 10), 2);
	ck_assert_uint_eq(c.limit, 128);
	ck_assert_uint_eq(finish_try(&c, 1400, 1000), 128); /* +40%: kept */
	ck_assert_uint_eq(win(&c, 1, true), 128);          /* settling */
	/* Twice as many would pass the cap: the cap. */
	ck_assert_uint_eq(windows_until_a_try(&c, 1400, 10), 2);
	ck_assert_uint_eq(c.limit, 200);
	ck_assert_uint_eq(finish_try(&c, 1700, 1400), 200); /* +21%: kept */
	win(&c, 1, true);
	ck_assert_uint_eq(windows_until_a_try(&c, 1700, 50), 0);
	ck_assert_uint_eq(c.limit, 200);
}
END_TEST

START_TEST(test_inflight_tries_only_from_a_steady_rate_with_fetches_queued)
{
	struct inflight_ctl c;

	inflight_init(&c, 64, 256);
	for (int i = 0; i < 50; i++)
		ck_assert_uint_eq(win(&c, 1000, false), 64);
	/* an epoch's ramp, or any rate that moves by more than 10% */
	for (int i = 0; i < 50; i++)
		ck_assert_uint_eq(win(&c, i % 2 ? 1000 : 1300, true), 64);
	for (int i = 0; i < 10; i++)
		ck_assert_uint_eq(win(&c, 0, true), 64);
	ck_assert_uint_eq(windows_until_a_try(&c, 1000, 10), 2);
}
END_TEST

START_TEST(test_inflight_undoes_a_rise_that_does_not_pay_and_waits_longer_each_time)
{
	struct inflight_ctl c;
	unsigned waits[4];

	inflight_init(&c, 64, 256);
	ck_assert_uint_eq(windows_until_a_try(&c, 2000, 10), 2);
	/* +14% over the windows around it: not enough */
	ck_assert_uint_eq(finish_try(&c, 2280, 2000), 64);
	/* At the floor there is nothing lower to try: the next rise comes
	 * after the hold (then a window to start it), which doubles with
	 * each try not kept. */
	for (int t = 0; t < 4; t++) {
		waits[t] = windows_until_a_try(&c, 2000, 200);
		ck_assert_uint_gt(waits[t], 0);
		ck_assert_uint_eq(c.limit, 128);
		ck_assert_uint_eq(finish_try(&c, 1900, 2000), 64);
	}
	for (int t = 1; t < 4; t++)
		ck_assert_uint_eq(waits[t] - 1, (waits[t - 1] - 1) * 2);
	for (int t = 0; t < 8; t++) {
		unsigned w = windows_until_a_try(&c, 2000, 200);

		ck_assert_uint_gt(w, 0);
		ck_assert_uint_le(w, INFLIGHT_HOLD_MAX + 1);
		ck_assert_uint_eq(finish_try(&c, 2000, 2000), 64);
	}
}
END_TEST

START_TEST(test_inflight_lowers_where_fewer_cost_nothing_and_not_where_they_do)
{
	struct inflight_ctl c;

	inflight_init(&c, 64, 256);
	windows_until_a_try(&c, 1000, 10);
	ck_assert_uint_eq(finish_try(&c, 2000, 1000), 128);
	/* a rise to 256 that does not pay */
	ck_assert_uint_gt(windows_until_a_try(&c, 2000, 10), 0);
	ck_assert_uint_eq(c.limit, 256);
	ck_assert_uint_eq(finish_try(&c, 2100, 2000), 128);
	/* then a third lower, which loses 20%: not kept */
	ck_assert_uint_gt(windows_until_a_try(&c, 2000, 10), 0);
	ck_assert_uint_eq(c.limit, 86);
	ck_assert_uint_eq(finish_try(&c, 1600, 2000), 128);
	/* up again, not kept; down again, and now it costs under 3%: kept,
	 * and the next try goes lower still, to the floor */
	ck_assert_uint_gt(windows_until_a_try(&c, 2000, 20), 0);
	ck_assert_uint_eq(finish_try(&c, 2000, 2000), 128);
	ck_assert_uint_gt(windows_until_a_try(&c, 2000, 20), 0);
	ck_assert_uint_eq(c.limit, 86);
	ck_assert_uint_eq(finish_try(&c, 1960, 2000), 86);
	win(&c, 1, true);
	ck_assert_uint_eq(windows_until_a_try(&c, 1960, 10), 2);
	ck_assert_uint_eq(c.limit, 64);
	ck_assert_uint_eq(finish_try(&c, 1950, 1960), 64);
	win(&c, 1, false);
	for (int i = 0; i < 20; i++)
		ck_assert_uint_eq(win(&c, 1950, false), 64);
}
END_TEST

START_TEST(test_inflight_a_try_the_rate_moved_under_decides_nothing)
{
	struct inflight_ctl c;

	inflight_init(&c, 64, 256);
	windows_until_a_try(&c, 2000, 10);
	/* the epoch ended during the try: the window back is far below */
	ck_assert_uint_eq(finish_try(&c, 2500, 300), 64);
	/* no longer wait than after the first try not kept */
	ck_assert_uint_eq(windows_until_a_try(&c, 2000, 10), 3);
	ck_assert_uint_eq(c.limit, 128);
}
END_TEST

/* Begun at the cap (the worker's read-ahead): the first try is a fall,
 * kept where it loses nothing (down to the floor in two tries), undone
 * where it loses (a far store), and then nothing is tried above the cap. */
START_TEST(test_inflight_begun_at_the_cap_first_tries_fewer)
{
	struct inflight_ctl c;

	inflight_init(&c, 64, 128);
	inflight_start_at(&c, 128);
	ck_assert_uint_eq(c.limit, 128);
	ck_assert_uint_eq(windows_until_a_try(&c, 2000, 10), 2);
	ck_assert_uint_eq(c.limit, 86);
	ck_assert_uint_eq(finish_try(&c, 1990, 2000), 86);
	win(&c, 1, true);
	ck_assert_uint_eq(windows_until_a_try(&c, 1990, 10), 2);
	ck_assert_uint_eq(c.limit, 64);
	ck_assert_uint_eq(finish_try(&c, 1980, 1990), 64);

	inflight_init(&c, 64, 128);
	inflight_start_at(&c, 128);
	ck_assert_uint_eq(windows_until_a_try(&c, 1500, 10), 2);
	ck_assert_uint_eq(finish_try(&c, 1100, 1500), 128);
	for (int i = 0; i < 200; i++)
		ck_assert_uint_eq(win(&c, 1500, true), 128);

	/* a start out of bounds is taken to the nearest; at the floor the
	 * first try is a rise, as from inflight_init */
	inflight_start_at(&c, 1000);
	ck_assert_uint_eq(c.limit, 128);
	inflight_start_at(&c, 0);
	ck_assert_uint_eq(c.limit, 64);
	ck_assert(!c.next_down);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("inflight");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_inflight_starts_at_the_floor_and_a_cap_below_it_fixes_it);
	tcase_add_test(tc, test_inflight_rises_while_it_pays_and_stops_at_the_cap);
	tcase_add_test(tc, test_inflight_tries_only_from_a_steady_rate_with_fetches_queued);
	tcase_add_test(tc, test_inflight_undoes_a_rise_that_does_not_pay_and_waits_longer_each_time);
	tcase_add_test(tc, test_inflight_lowers_where_fewer_cost_nothing_and_not_where_they_do);
	tcase_add_test(tc, test_inflight_a_try_the_rate_moved_under_decides_nothing);
	tcase_add_test(tc, test_inflight_begun_at_the_cap_first_tries_fewer);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
