/*
 * test_array.c - growing a heap array: steps, contents kept, overflow.
 */
#include <stdint.h>
#include <stdlib.h>

#include "common/array.h"
#include "unit/check_main.h"

START_TEST(test_array_grow_keeps_contents_and_refuses_overflow)
{
	int *a = NULL;
	size_t cap = 0;
	void *before = NULL;

	ck_assert_int_eq(array_grow((void **)&a, &cap, 1, sizeof(*a)), 0);
	ck_assert_uint_eq(cap, 16);
	for (int i = 0; i < 16; i++)
		a[i] = i;
	/* room enough: nothing moves */
	before = a;
	ck_assert_int_eq(array_grow((void **)&a, &cap, 16, sizeof(*a)), 0);
	ck_assert_ptr_eq(a, before);
	ck_assert_uint_eq(cap, 16);
	ck_assert_int_eq(array_grow((void **)&a, &cap, 1000, sizeof(*a)), 0);
	ck_assert_uint_ge(cap, 1000);
	for (int i = 0; i < 16; i++)
		ck_assert_int_eq(a[i], i);
	a[999] = 999;
	/* a size past SIZE_MAX fails and leaves the array as it was */
	before = a;
	cap = 1000;
	ck_assert_int_eq(array_grow((void **)&a, &cap, SIZE_MAX / 2, sizeof(*a)), -1);
	ck_assert_int_eq(array_grow((void **)&a, &cap, SIZE_MAX, 1), -1);
	ck_assert_ptr_eq(a, before);
	ck_assert_uint_eq(cap, 1000);
	ck_assert_int_eq(a[999], 999);
	free(a);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("array");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_array_grow_keeps_contents_and_refuses_overflow);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
