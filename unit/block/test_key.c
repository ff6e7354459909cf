/*
 * test_key.c - block keys: the endpoint they carry, their hash (pinned, so
 * that a change of the encoding cannot strand every cache on disk) and
 * its hex form (block/key.c).
 */
#include <stdlib.h>
#include <string.h>

#include "block/key.h"
#include "unit/check_main.h"

START_TEST(test_block_key_endpoint_defaults_to_the_region)
{
	char *e = NULL;

	e = block_key_endpoint("s3", "", "");
	ck_assert_str_eq(e, "https://s3.us-east-1.amazonaws.com");
	free(e);
	e = block_key_endpoint("s3", NULL, "eu-west-1");
	ck_assert_str_eq(e, "https://s3.eu-west-1.amazonaws.com");
	free(e);
	e = block_key_endpoint("s3", "http://minio:9000", "eu-west-1");
	ck_assert_str_eq(e, "http://minio:9000");
	free(e);
	e = block_key_endpoint("file", "http://ignored", "x");
	ck_assert_str_eq(e, "");
	free(e);
}
END_TEST

START_TEST(test_block_key_hash_is_pinned)
{
	struct block_key k = { .endpoint = "https://s3.us-east-1.amazonaws.com",
			       .bucket = "train",
			       .object = "shard-00001.rec",
			       .etag = "\"9b2cf535f27731c974343645a3985328\"",
			       .block_size = 4u << 20,
			       .index = 3 };
	uint8_t h[BLOCK_HASH_LEN];
	char hex[BLOCK_HASH_HEX];

	/* XXH3-128 of the documented encoding (docs/cache-layout.md),
	 * computed apart from this code. */
	block_key_hash(&k, h);
	block_hash_hex(h, hex);
	ck_assert_str_eq(hex, "1f0336a3d513f30f7724e4dad2d2c731");
}
END_TEST

START_TEST(test_block_key_hash_changes_with_each_field)
{
	struct block_key base = { .endpoint = "http://a", .bucket = "b", .object = "o",
				  .etag = "e", .block_size = 4 << 20, .index = 7 };
	struct block_key k;
	uint8_t h0[BLOCK_HASH_LEN], h1[BLOCK_HASH_LEN];

	block_key_hash(&base, h0);
	k = base;
	block_key_hash(&k, h1);
	ck_assert_int_eq(memcmp(h0, h1, sizeof(h0)), 0);
	for (int f = 0; f < 6; f++) {
		k = base;
		switch (f) {
		case 0: k.endpoint = "http://c"; break;
		case 1: k.bucket = "c"; break;
		case 2: k.object = "p"; break;
		case 3: k.etag = "f"; break;
		case 4: k.block_size = 1 << 20; break;
		default: k.index = 8; break;
		}
		block_key_hash(&k, h1);
		ck_assert_msg(memcmp(h0, h1, sizeof(h0)) != 0, "field %d does not change the hash", f);
	}
}
END_TEST

START_TEST(test_block_key_hash_is_unambiguous)
{
	struct block_key a = { .endpoint = "", .bucket = "ab", .object = "c", .etag = "e",
			       .block_size = 1, .index = 0 };
	struct block_key b = { .endpoint = "", .bucket = "a", .object = "bc", .etag = "e",
			       .block_size = 1, .index = 0 };
	struct block_key n = a;
	uint8_t ha[BLOCK_HASH_LEN], hb[BLOCK_HASH_LEN];

	block_key_hash(&a, ha);
	block_key_hash(&b, hb);
	ck_assert_int_ne(memcmp(ha, hb, sizeof(ha)), 0);
	/* NULL is "" */
	n.endpoint = NULL;
	block_key_hash(&n, hb);
	ck_assert_int_eq(memcmp(ha, hb, sizeof(ha)), 0);
}
END_TEST

START_TEST(test_block_key_long_keys_hash_too)
{
	struct block_key k = { .endpoint = "", .bucket = "b", .etag = "e", .block_size = 1 };
	uint8_t h1[BLOCK_HASH_LEN], h2[BLOCK_HASH_LEN];
	char *object = malloc(10000);

	memset(object, 'x', 9999);
	object[9999] = '\0';
	k.object = object;
	block_key_hash(&k, h1);
	object[5000] = 'y';
	block_key_hash(&k, h2);
	ck_assert_int_ne(memcmp(h1, h2, sizeof(h1)), 0);
	free(object);
}
END_TEST

START_TEST(test_block_hash_hex_round_trips_lower_case_only)
{
	uint8_t hash[BLOCK_HASH_LEN], back[BLOCK_HASH_LEN];
	char hex[BLOCK_HASH_HEX];

	for (int i = 0; i < BLOCK_HASH_LEN; i++)
		hash[i] = (uint8_t)(0xa0 + i);
	block_hash_hex(hash, hex);
	ck_assert_str_eq(hex, "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
	ck_assert_int_eq(block_hash_parse(hex, back), 0);
	ck_assert_int_eq(memcmp(hash, back, sizeof(hash)), 0);
	ck_assert_int_eq(block_hash_parse("A0a1a2a3a4a5a6a7a8a9aaabacadaeaf", back), -1);
	ck_assert_int_eq(block_hash_parse("a0a1a2a3a4a5a6a7a8a9aaabacadaea", back), -1);
	ck_assert_int_eq(block_hash_parse("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf0", back), -1);
	ck_assert_int_eq(block_hash_parse("a0a1a2a3a4a5a6a7a8a9aaabacadaeag", back), -1);
	ck_assert_int_eq(block_hash_parse("", back), -1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("block_key");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_block_key_endpoint_defaults_to_the_region);
	tcase_add_test(tc, test_block_key_hash_is_pinned);
	tcase_add_test(tc, test_block_key_hash_changes_with_each_field);
	tcase_add_test(tc, test_block_key_hash_is_unambiguous);
	tcase_add_test(tc, test_block_key_long_keys_hash_too);
	tcase_add_test(tc, test_block_hash_hex_round_trips_lower_case_only);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
