/*
 * test_store_uri.c - dataset URIs, bucket names and endpoint URLs are
 * checked before any request.
 */
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "unit/check_main.h"

START_TEST(test_store_uri_splits_scheme_bucket_prefix)
{
	char *scheme, *bucket, *prefix;
	struct error err;

	ck_assert_int_eq(store_uri_parse("s3://data-set.1/train/part/", &scheme, &bucket, &prefix, &err), ERR_OK);
	ck_assert_str_eq(scheme, "s3");
	ck_assert_str_eq(bucket, "data-set.1");
	ck_assert_str_eq(prefix, "train/part/");
	free(scheme), free(bucket), free(prefix);
	ck_assert_int_eq(store_uri_parse("s3://bkt", &scheme, &bucket, &prefix, &err), ERR_OK);
	ck_assert_str_eq(prefix, "");
	free(scheme), free(bucket), free(prefix);
	/* Dots inside a name are only names. */
	ck_assert_int_eq(store_uri_parse("s3://bkt/a..b/.c/d./", &scheme, &bucket, &prefix, &err),
			 ERR_OK);
	ck_assert_str_eq(prefix, "a..b/.c/d./");
	free(scheme), free(bucket), free(prefix);
	ck_assert_int_eq(store_uri_parse("file:///srv/data", &scheme, &bucket, &prefix, &err), ERR_OK);
	ck_assert_str_eq(scheme, "file");
	ck_assert_str_eq(bucket, "/srv/data");
	free(scheme), free(bucket), free(prefix);
}
END_TEST

START_TEST(test_store_uri_rejects_bad_uris_naming_them)
{
	static const char *const bad[] = { "", "http://x/y", "s3:/bkt", "file://relative",
					   "s3://Bad_Bucket/x", "s3:///x", "gs://b",
					   /* segments that let a path leave the prefix */
					   "s3://bkt/../x/", "s3://bkt/a/../../x/", "s3://bkt/a/..",
					   "s3://bkt/./a/", "s3://bkt//a/", "s3://bkt/a//b/",
					   "s3://bkt/a/.", "file:///srv/../etc", "file:///srv/./x/",
					   "file:///srv//x" };
	char *scheme, *bucket, *prefix;
	struct error err;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(store_uri_parse(bad[i], &scheme, &bucket, &prefix, &err) == ERR_INVALID,
			      "'%s' accepted", bad[i]);
		ck_assert_ptr_null(scheme);
		ck_assert_ptr_null(bucket);
		ck_assert_ptr_nonnull(strstr(err.msg, bad[i]));
	}
}
END_TEST

START_TEST(test_store_bucket_names_follow_s3_rules)
{
	static const char *const good[] = { "abc", "my-bucket", "data.set.2", "0bucket9",
					    "a23456789012345678901234567890123456789012345678901234567890123" };
	static const char *const bad[] = { "ab", "ABC", "a_b", "-ab", "ab-", "a..b", "10.0.0.1",
					   "xn--abc", "a b",
					   "a234567890123456789012345678901234567890123456789012345678901234" };
	struct error err;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_msg(store_check_bucket_name(good[i], &err) == ERR_OK, "%s: %s", good[i], err.msg);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(store_check_bucket_name(bad[i], &err) == ERR_INVALID, "'%s' accepted", bad[i]);
		ck_assert_ptr_nonnull(strstr(err.msg, "bucket"));
	}
}
END_TEST

START_TEST(test_store_endpoints_must_be_plain_http_urls)
{
	static const char *const good[] = { "http://127.0.0.1:7070", "https://s3.us-east-1.amazonaws.com",
					    "http://[::1]:9000", "http://minio.local/" };
	static const char *const bad[] = { "", "127.0.0.1:7070", "ftp://h", "http://",
					   "http://u:p@h", "http://h/p", "http://h?q", "http://h#f" };
	struct error err;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_msg(store_check_endpoint(good[i], &err) == ERR_OK, "%s: %s", good[i], err.msg);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(store_check_endpoint(bad[i], &err) == ERR_INVALID, "'%s' accepted", bad[i]);
		ck_assert_ptr_null(strstr(err.msg, "u:p"));
	}
}
END_TEST

START_TEST(test_store_open_refuses_prefix_and_unknown_scheme)
{
	struct store *st = NULL;
	struct error err;

	ck_assert_int_eq(store_open("s3://bucket/prefix", NULL, &st, &err), ERR_INVALID);
	ck_assert_ptr_null(st);
	ck_assert_int_eq(store_open("gs://bucket", NULL, &st, &err), ERR_INVALID);
	ck_assert_int_eq(store_open("file://rel", NULL, &st, &err), ERR_INVALID);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("store_uri");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_store_uri_splits_scheme_bucket_prefix);
	tcase_add_test(tc, test_store_uri_rejects_bad_uris_naming_them);
	tcase_add_test(tc, test_store_bucket_names_follow_s3_rules);
	tcase_add_test(tc, test_store_endpoints_must_be_plain_http_urls);
	tcase_add_test(tc, test_store_open_refuses_prefix_and_unknown_scheme);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
