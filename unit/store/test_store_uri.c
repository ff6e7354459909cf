/*
 * test_store_uri.c - dataset URIs, bucket names and endpoint URLs are
 * checked before any request.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
	/* A key and secret in the authority are never quoted, whatever else
	 * is wrong with the URL (the scheme, a space, a path, a list entry). */
	{
		static const char *const secret[] = { "s3://AKIAKEY:SECRET@h", "ftp://k:SECRET@h",
						      "http://k:SE CRET@h", "http://k:SECRET@h/p",
						      "http://k:SECRET@h:9000" };

		for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++) {
			ck_assert_int_eq(store_check_endpoint(secret[i], &err), ERR_INVALID);
			ck_assert_msg(!strstr(err.msg, "SECRET") && !strstr(err.msg, "SE CRET") &&
					      strstr(err.msg, "<user info>@h"),
				      "'%s': %s", secret[i], err.msg);
		}
		ck_assert_int_eq(store_endpoint_check("s3://b/", "http://k:SECRET@h:9000",
						      "http://h:9000", "", &err),
				 ERR_INVALID);
		ck_assert_msg(!strstr(err.msg, "SECRET"), "%s", err.msg);
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

/* A region that a signing key cannot hold, or that would add a line to
 * every request's headers, is refused when the store is opened, not at
 * every request. */
START_TEST(test_store_open_refuses_a_region_it_cannot_sign)
{
	char region[65];
	struct store_config cfg = { .region = region, .endpoint = "http://127.0.0.1:9",
				    .anonymous = true };
	struct store *st = NULL;
	struct error err;

	memset(region, 'r', sizeof(region) - 1);
	region[sizeof(region) - 1] = '\0';
	ck_assert_int_eq(store_open("s3://bucket", &cfg, &st, &err), ERR_INVALID);
	ck_assert_ptr_null(st);
	ck_assert_ptr_nonnull(strstr(err.msg, "region"));
	ck_assert_ptr_nonnull(strstr(err.msg, "at most 63"));
	region[63] = '\0';
	ck_assert_int_eq(store_open("s3://bucket", &cfg, &st, &err), ERR_OK);
	store_free(st);
	st = NULL;
	cfg.region = "us-east-1\r\nhost: elsewhere";
	ck_assert_int_eq(store_open("s3://bucket", &cfg, &st, &err), ERR_INVALID);
	ck_assert_ptr_null(st);
	ck_assert_msg(strstr(err.msg, "region: byte 10 (0x0d) is not a letter"), "%s", err.msg);
	ck_assert_ptr_null(strstr(err.msg, "elsewhere"));
	cfg.region = "us east";
	ck_assert_int_eq(store_check_region(cfg.region, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "region 'us east': only letters"));
	ck_assert_int_eq(store_check_region("us east\nx", &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "byte 8 (0x0a)") && !strchr(err.msg, '\n'), "%s", err.msg);
	ck_assert_int_eq(store_check_region("", &err), ERR_OK);
	ck_assert_int_eq(store_check_region("ap-south_1", &err), ERR_OK);
}
END_TEST

START_TEST(test_store_file_sources_only_strictly_under_a_root)
{
	char top[] = "/tmp/test_file_roots_XXXXXX", root[128], link[128], uri[256];
	const char *roots[] = { "/nonexistent/other", root };
	struct error err;

	/* No roots: every file:// source is off; s3:// is not this check's. */
	ck_assert_int_eq(store_file_root_check("file:///etc/", NULL, 0, &err), ERR_INVALID);
	ck_assert_str_eq(err.msg,
			 "file:// sources are off (allowed_file_roots is empty), got 'file:///etc/'");
	ck_assert_int_eq(store_file_root_check("s3://bkt/x/", NULL, 0, &err), ERR_OK);

	ck_assert_ptr_nonnull(mkdtemp(top));
	snprintf(root, sizeof(root), "%s/datasets", top);
	ck_assert_int_eq(mkdir(root, 0755), 0);
	snprintf(uri, sizeof(uri), "%s/mnist", root);
	ck_assert_int_eq(mkdir(uri, 0755), 0);
	snprintf(link, sizeof(link), "%s/etc", root);
	ck_assert_int_eq(symlink("/etc", link), 0);

	snprintf(uri, sizeof(uri), "file://%s/mnist/", root);
	ck_assert_msg(store_file_root_check(uri, roots, 2, &err) == ERR_OK, "%s", err.msg);
	/* The root itself is not under it; nor is anything beside it. */
	snprintf(uri, sizeof(uri), "file://%s/", root);
	ck_assert_int_eq(store_file_root_check(uri, roots, 2, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "is outside allowed_file_roots"));
	snprintf(uri, sizeof(uri), "file://%s-x/", root);
	ck_assert_int_eq(store_file_root_check(uri, roots, 2, &err), ERR_INVALID);
	/* Elsewhere: refused as written, before anything is looked up. */
	ck_assert_int_eq(store_file_root_check("file:///etc/", roots, 2, &err), ERR_INVALID);
	ck_assert_str_eq(err.msg, "'file:///etc/' is outside allowed_file_roots");
	ck_assert_int_eq(store_file_root_check("file:///", roots, 2, &err), ERR_INVALID);
	/* '..' never gets as far as a lookup; a link out of the root is seen. */
	snprintf(uri, sizeof(uri), "file://%s/mnist/../../", root);
	ck_assert_int_eq(store_file_root_check(uri, roots, 2, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'..' segment"));
	snprintf(uri, sizeof(uri), "file://%s/", link);
	ck_assert_int_eq(store_file_root_check(uri, roots, 2, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "resolves to '/etc', outside allowed_file_roots"), "%s",
		      err.msg);
	snprintf(uri, sizeof(uri), "file://%s/missing/", root);
	ck_assert_int_eq(store_file_root_check(uri, roots, 2, &err), ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "No such file or directory"));

	snprintf(uri, sizeof(uri), "rm -rf '%s'", top);
	ck_assert_int_eq(system(uri), 0);
}
END_TEST

/* The endpoints a dataset may name: the default and the allowed list. */
START_TEST(test_store_endpoints_only_those_allowed)
{
	const char *list = " https://s3.example.com/ ,http://10.0.0.5:7070";
	struct error err;

	ck_assert_int_eq(store_endpoint_check("s3://b/p/", "", "http://minio:9000", NULL, &err),
			 ERR_OK);
	ck_assert_int_eq(store_endpoint_check("s3://b/p/", "HTTP://minio:9000/",
					      "http://minio:9000", NULL, &err), ERR_OK);
	ck_assert_int_eq(store_endpoint_check("s3://b/p/", "https://s3.example.com", NULL, list,
					      &err), ERR_OK);
	ck_assert_int_eq(store_endpoint_check("s3://b/p/", "http://10.0.0.5:7070/", NULL, list,
					      &err), ERR_OK);
	ck_assert_int_eq(store_endpoint_check("s3://b/p/", "http://10.0.0.5:7071", NULL, list,
					      &err), ERR_INVALID);
	ck_assert_str_eq(err.msg, "endpoint 'http://10.0.0.5:7071' is not allowed: the endpoints a "
				  "dataset may name are store.endpoint and store.allowed_endpoints");
	/* A prefix of an allowed endpoint, or one that has it as a prefix, is another. */
	ck_assert_int_eq(store_endpoint_check("s3://b/p/", "http://10.0.0.5:707", NULL, list, &err),
			 ERR_INVALID);
	ck_assert_int_eq(store_endpoint_check("s3://b/p/", "https://s3.example.com.evil", NULL,
					      list, &err), ERR_INVALID);
	/* AWS (no default) is not any named endpoint. */
	ck_assert_int_eq(store_endpoint_check("s3://b/p/", "http://x", NULL, NULL, &err),
			 ERR_INVALID);
	/* file:// sends nothing anywhere. */
	ck_assert_int_eq(store_endpoint_check("file:///srv/d/", "http://x", NULL, NULL, &err),
			 ERR_OK);
	ck_assert_int_eq(store_check_endpoint_list("store.allowed_endpoints", list, &err), ERR_OK);
	ck_assert_int_eq(store_check_endpoint_list("store.allowed_endpoints", "http://a,ftp://b",
						   &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'store.allowed_endpoints'"));
	ck_assert_ptr_nonnull(strstr(err.msg, "ftp://b"));
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
	tcase_add_test(tc, test_store_open_refuses_a_region_it_cannot_sign);
	tcase_add_test(tc, test_store_file_sources_only_strictly_under_a_root);
	tcase_add_test(tc, test_store_endpoints_only_those_allowed);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
