/*
 * test_accel_sweep.c - the accelerator sweep's counts and stop rule.
 */
#include "bench/accel_sweep.h"
#include "unit/check_main.h"

/* Runs a sweep against a system that holds the bar up to limit accelerators;
 * returns the result, the counts measured in order in tried[] (*ntried). */
static int64_t run(int64_t max, int64_t limit, int64_t *tried, int *ntried, bool *bound)
{
	struct accel_sweep s;
	int64_t n;

	*ntried = 0;
	accel_sweep_init(&s, max);
	while ((n = accel_sweep_next(&s)) != 0) {
		ck_assert_int_lt(*ntried, 64);
		tried[(*ntried)++] = n;
		accel_sweep_record(&s, n, n <= limit);
	}
	*bound = accel_sweep_bound_reached(&s);
	return s.sustained;
}

START_TEST(test_accel_sweep_doubles_then_bisects_to_the_exact_limit)
{
	int64_t tried[64];
	int ntried;
	bool bound;

	ck_assert_int_eq(run(1024, 11, tried, &ntried, &bound), 11);
	ck_assert(!bound);
	/* 1 2 4 8 16 (below), then 12 (below), 10, 11 */
	ck_assert_int_eq(ntried, 8);
	ck_assert_int_eq(tried[4], 16);
	ck_assert_int_eq(tried[5], 12);
	ck_assert_int_eq(tried[6], 10);
	ck_assert_int_eq(tried[7], 11);
	for (int64_t limit = 1; limit <= 300; limit++)
		ck_assert_int_eq(run(1024, limit, tried, &ntried, &bound), limit);
}
END_TEST

START_TEST(test_accel_sweep_ends_at_zero_when_one_accelerator_starves)
{
	int64_t tried[64];
	int ntried;
	bool bound;

	ck_assert_int_eq(run(1024, 0, tried, &ntried, &bound), 0);
	ck_assert_int_eq(ntried, 1);
	ck_assert_int_eq(tried[0], 1);
	ck_assert(!bound);
}
END_TEST

START_TEST(test_accel_sweep_has_no_cap_below_its_bound)
{
	int64_t tried[64];
	int ntried;
	bool bound;

	/* far past the old cap of 32 */
	ck_assert_int_eq(run(1024, 700, tried, &ntried, &bound), 700);
	ck_assert(!bound);
}
END_TEST

START_TEST(test_accel_sweep_reports_reaching_its_bound)
{
	int64_t tried[64];
	int ntried;
	bool bound;

	/* a bound that is no power of two is measured itself */
	ck_assert_int_eq(run(100, 5000, tried, &ntried, &bound), 100);
	ck_assert(bound);
	ck_assert_int_eq(tried[ntried - 1], 100);
	ck_assert_int_eq(tried[ntried - 2], 64);
	/* a system that falls at the bound itself is not a floor */
	ck_assert_int_eq(run(100, 99, tried, &ntried, &bound), 99);
	ck_assert(!bound);
	ck_assert_int_eq(run(1, 5, tried, &ntried, &bound), 1);
	ck_assert(bound);
	ck_assert_int_eq(ntried, 1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("accel_sweep");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_accel_sweep_doubles_then_bisects_to_the_exact_limit);
	tcase_add_test(tc, test_accel_sweep_ends_at_zero_when_one_accelerator_starves);
	tcase_add_test(tc, test_accel_sweep_has_no_cap_below_its_bound);
	tcase_add_test(tc, test_accel_sweep_reports_reaching_its_bound);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
