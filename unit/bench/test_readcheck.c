/*
 * test_readcheck.c - the deterministic dataset: any range made on its own
 * equals the same range of the whole, names give different contents, and
 * every flipped byte is counted.
 */
#include <stdint.h>
#include <string.h>

#include "bench/readcheck.h"
#include "unit/check_main.h"

#define LEN 10000

START_TEST(test_readcheck_seed_is_the_base_name)
{
	ck_assert_uint_eq(readcheck_seed("/data/readcheck-00001.bin"), readcheck_seed("readcheck-00001.bin"));
	ck_assert_uint_ne(readcheck_seed("readcheck-00001.bin"), readcheck_seed("readcheck-00002.bin"));
	/* FNV-1a 64 of "a" */
	ck_assert_uint_eq(readcheck_seed("a"), 0xaf63dc4c8601ec8cull);
}
END_TEST

START_TEST(test_readcheck_any_range_equals_the_whole)
{
	static uint8_t whole[LEN], part[LEN];
	uint64_t seed = readcheck_seed("readcheck-00007.bin");

	readcheck_fill(seed, 0, whole, LEN);
	for (uint64_t off = 0; off < 40; off++)
		for (size_t len = 0; len < 40; len++) {
			readcheck_fill(seed, off, part, len);
			ck_assert_int_eq(memcmp(part, whole + off, len), 0);
		}
	readcheck_fill(seed, 4093, part, 5000);
	ck_assert_int_eq(memcmp(part, whole + 4093, 5000), 0);
	ck_assert_uint_eq(readcheck_verify(seed, 0, whole, LEN, NULL), 0);
	ck_assert_uint_eq(readcheck_verify(seed, 1234, whole + 1234, LEN - 1234, NULL), 0);
}
END_TEST

START_TEST(test_readcheck_names_differ_and_bytes_vary)
{
	static uint8_t a[LEN], b[LEN];
	size_t same = 0, zeros = 0;

	readcheck_fill(readcheck_seed("readcheck-00000.bin"), 0, a, LEN);
	readcheck_fill(readcheck_seed("readcheck-00001.bin"), 0, b, LEN);
	for (size_t i = 0; i < LEN; i++) {
		same += a[i] == b[i];
		zeros += a[i] == 0;
	}
	/* about 1/256 of the bytes agree by chance */
	ck_assert_uint_lt(same, LEN / 64);
	ck_assert_uint_lt(zeros, LEN / 64);
	ck_assert_uint_gt(readcheck_verify(readcheck_seed("readcheck-00001.bin"), 0, a, LEN, NULL), LEN / 2);
}
END_TEST

START_TEST(test_readcheck_counts_every_flipped_byte)
{
	static uint8_t buf[LEN];
	uint64_t seed = readcheck_seed("readcheck-00003.bin"), first = 0;

	readcheck_fill(seed, 500, buf, LEN);
	for (size_t i = 0; i < LEN; i += 997) {
		buf[i] ^= 0x01;
		ck_assert_uint_eq(readcheck_verify(seed, 500, buf, LEN, &first), 1);
		ck_assert_uint_eq(first, 500 + i);
		buf[i] ^= 0x01;
	}
	buf[10] ^= 0xff;
	buf[4096] ^= 0x80;
	buf[LEN - 1] ^= 0x40;
	ck_assert_uint_eq(readcheck_verify(seed, 500, buf, LEN, &first), 3);
	ck_assert_uint_eq(first, 510);
	/* the right bytes at the wrong offset are wrong too */
	ck_assert_uint_gt(readcheck_verify(seed, 508, buf + 8, 64, NULL), 0);
}
END_TEST

static Suite *readcheck_suite(void)
{
	Suite *s = suite_create("readcheck");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_readcheck_seed_is_the_base_name);
	tcase_add_test(tc, test_readcheck_any_range_equals_the_whole);
	tcase_add_test(tc, test_readcheck_names_differ_and_bytes_vary);
	tcase_add_test(tc, test_readcheck_counts_every_flipped_byte);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_main_run(readcheck_suite());
}
