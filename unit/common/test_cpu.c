/*
 * test_cpu.c - CPU count from cgroup quotas.
 */
#include <unistd.h>

#include "common/cpu.h"
#include "unit/check_main.h"

START_TEST(test_cpu_parses_cgroup2_quota_rounding_up)
{
	ck_assert_int_eq(cpu_parse_cgroup2_max("max 100000\n"), 0);
	ck_assert_int_eq(cpu_parse_cgroup2_max("200000 100000\n"), 2);
	ck_assert_int_eq(cpu_parse_cgroup2_max("150000 100000"), 2);
	ck_assert_int_eq(cpu_parse_cgroup2_max("50000 100000"), 1);
	ck_assert_int_eq(cpu_parse_cgroup2_max("garbage"), -1);
	ck_assert_int_eq(cpu_parse_cgroup2_max("12x 100000"), -1);
	ck_assert_int_eq(cpu_parse_cgroup2_max(NULL), -1);
}
END_TEST

START_TEST(test_cpu_v1_quota_minus_one_means_none)
{
	ck_assert_int_eq(cpu_quota_to_count(-1, 100000), 0);
	ck_assert_int_eq(cpu_quota_to_count(400000, 100000), 4);
	ck_assert_int_eq(cpu_quota_to_count(1, 100000), 1);
}
END_TEST

START_TEST(test_cpu_available_is_within_online_cpus)
{
	int n = cpu_available();

	ck_assert_int_ge(n, 1);
	ck_assert_int_le(n, (int)sysconf(_SC_NPROCESSORS_ONLN));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cpu");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_cpu_parses_cgroup2_quota_rounding_up);
	tcase_add_test(tc, test_cpu_v1_quota_minus_one_means_none);
	tcase_add_test(tc, test_cpu_available_is_within_online_cpus);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
