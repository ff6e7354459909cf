/*
 * test_name.c - the dataset-name, block-size and object-key rules every process
 * applies (block/name.c).
 */
#include <string.h>

#include "block/name.h"
#include "unit/check_main.h"

START_TEST(test_block_name_takes_dns1123_subdomains_up_to_253_bytes)
{
	static const char *const good[] = { "a", "imagenet", "imagenet-1k", "coco.2017",
					    "pvc-0b7c5a9e-3c55-4a3e-9f67-2e8f0f1d2c3b", "0", "a.b-c.d" };
	char name[BLOCK_DATASET_MAX + 1];
	struct error err;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_msg(block_dataset_name_check(good[i], &err) == ERR_OK, "%s: %s", good[i],
			      err.msg);
	/* the longest name, as a Kubernetes object name may be */
	memset(name, 'a', BLOCK_DATASET_MAX);
	name[BLOCK_DATASET_MAX] = '\0';
	for (size_t i = 63; i < BLOCK_DATASET_MAX; i += 64)
		name[i] = '.';
	ck_assert_msg(block_dataset_name_check(name, &err) == ERR_OK, "%s", err.msg);
}
END_TEST

START_TEST(test_block_name_refusals_say_which_rule)
{
	static const struct {
		const char *name, *expect;
	} cases[] = {
		{ "", "empty" },
		{ "Imagenet", "only lowercase letters" },
		{ "coco_2017", "only lowercase letters" },
		{ "a b", "only lowercase letters" },
		{ "a/b", "only lowercase letters" },
		{ "-a", "must start and end" },
		{ "a-", "must start and end" },
		{ ".a", "each '.'-separated label" },
		{ "a..b", "each '.'-separated label" },
		{ "a.-b", "each '.'-separated label" },
		{ "a-.b", "each '.'-separated label" },
		{ "a.", "each '.'-separated label" },
	};
	char name[BLOCK_DATASET_MAX + 2];
	struct error err;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert_msg(block_dataset_name_check(cases[i].name, &err) == ERR_INVALID,
			      "'%s' accepted", cases[i].name);
		ck_assert_msg(strstr(err.msg, cases[i].expect), "'%s': '%s' lacks '%s'",
			      cases[i].name, err.msg, cases[i].expect);
	}
	ck_assert_int_eq(block_dataset_name_check(NULL, &err), ERR_INVALID);
	memset(name, 'a', BLOCK_DATASET_MAX + 1);
	name[BLOCK_DATASET_MAX + 1] = '\0';
	ck_assert_int_eq(block_dataset_name_check(name, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "longer than 253 bytes"));
}
END_TEST

START_TEST(test_block_size_takes_powers_of_two_from_64k_to_64m)
{
	struct error err;

	for (uint64_t s = BLOCK_SIZE_MIN; s <= BLOCK_SIZE_MAX; s <<= 1)
		ck_assert_int_eq(block_size_check("block_size", s, &err), ERR_OK);
	ck_assert_int_eq(block_size_check("key 'cache.block_size'", BLOCK_SIZE_MIN / 2, &err),
			 ERR_INVALID);
	ck_assert_str_eq(err.msg,
			 "key 'cache.block_size': must be a power of two from 64KiB to 64MiB, got 32768");
	ck_assert_int_eq(block_size_check("x", BLOCK_SIZE_MAX * 2, &err), ERR_INVALID);
	ck_assert_int_eq(block_size_check("x", 3u << 20, &err), ERR_INVALID);
	ck_assert_int_eq(block_size_check("x", 0, &err), ERR_INVALID);
}
END_TEST

START_TEST(test_block_object_keys_and_preload_prefixes)
{
	static const char *const good_keys[] = { "a", "dir/file.rec", "a b/c+d", "x..y", ".hidden",
						 "unicod\xc3\xa9" };
	static const char *const bad_keys[] = { "", "/abs", "a//b", "a/./b", "../x", "a/..",
						"a/", "tab\there" };
	static const char *const good_prefixes[] = { "train/", "train", "train/shard-0", "a/b/" };
	static const char *const bad_prefixes[] = { "", "/", "/train/", "a//", "../x/", "a/../b/",
						    "train//" };
	char long_key[BLOCK_KEY_MAX + 1];
	struct error err;

	for (size_t i = 0; i < sizeof(good_keys) / sizeof(good_keys[0]); i++)
		ck_assert_msg(block_object_key_check("train/", good_keys[i], &err) == ERR_OK, "%s: %s",
			      good_keys[i], err.msg);
	for (size_t i = 0; i < sizeof(bad_keys) / sizeof(bad_keys[0]); i++)
		ck_assert_msg(block_object_key_check("train/", bad_keys[i], &err) == ERR_INVALID,
			      "'%s' accepted", bad_keys[i]);
	/* 1,018 bytes and "train/" are the limit */
	memset(long_key, 'k', sizeof(long_key) - 1);
	long_key[BLOCK_KEY_MAX - 6] = '\0';
	ck_assert_int_eq(block_object_key_check("train/", long_key, &err), ERR_OK);
	long_key[BLOCK_KEY_MAX - 6] = 'k';
	long_key[BLOCK_KEY_MAX - 5] = '\0';
	ck_assert_int_eq(block_object_key_check("train/", long_key, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "longer than 1024 bytes"));
	for (size_t i = 0; i < sizeof(good_prefixes) / sizeof(good_prefixes[0]); i++)
		ck_assert_msg(block_preload_prefix_check("data/", good_prefixes[i], &err) == ERR_OK,
			      "%s: %s", good_prefixes[i], err.msg);
	for (size_t i = 0; i < sizeof(bad_prefixes) / sizeof(bad_prefixes[0]); i++) {
		ck_assert_msg(block_preload_prefix_check("data/", bad_prefixes[i], &err) ==
				      ERR_INVALID,
			      "'%s' accepted", bad_prefixes[i]);
		ck_assert_msg(strncmp(err.msg, "preload prefix '", 16) == 0, "%s", err.msg);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("block_name");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_block_name_takes_dns1123_subdomains_up_to_253_bytes);
	tcase_add_test(tc, test_block_name_refusals_say_which_rule);
	tcase_add_test(tc, test_block_size_takes_powers_of_two_from_64k_to_64m);
	tcase_add_test(tc, test_block_object_keys_and_preload_prefixes);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
