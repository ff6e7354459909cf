/*
 * test_s3_sign.c - Signature V4 against the examples published in the
 * Amazon S3 API reference ("Signature Calculations for the Authorization
 * Header"), and S3's URI encoding.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "store/s3_sign.h"

static struct store_credentials example_cred = {
	.access_key_id = "AKIAIOSFODNN7EXAMPLE",
	.secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
};

/* The published GET Object example's request, its headers in h[4]
 * (h[0] is x-amz-date). */
static struct s3_sign_request get_object_example(struct s3_header *h)
{
	h[0] = (struct s3_header){ "x-amz-date", "20130524T000000Z" };
	h[1] = (struct s3_header){ "range", "bytes=0-9" };
	h[2] = (struct s3_header){ "host", "examplebucket.s3.amazonaws.com" };
	h[3] = (struct s3_header){ "x-amz-content-sha256", S3_EMPTY_PAYLOAD_SHA256 };
	return (struct s3_sign_request){
		.method = "GET", .canonical_uri = "/test.txt", .canonical_query = "",
		.headers = h, .nheaders = 4, .payload_hash = S3_EMPTY_PAYLOAD_SHA256,
		.amz_date = "20130524T000000Z", .region = "us-east-1",
	};
}

START_TEST(test_s3_sign_matches_published_get_object_example)
{
	struct s3_header h[4];
	struct s3_sign_request req = get_object_example(h);
	char auth[512];
	struct error err;

	ck_assert_int_eq(s3_sign_v4(&example_cred, &req, auth, sizeof(auth), &err), ERR_OK);
	ck_assert_str_eq(auth,
		"AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
		"SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
		"Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}
END_TEST

START_TEST(test_s3_sign_matches_published_list_objects_example)
{
	struct s3_header h[] = {
		{ "host", "examplebucket.s3.amazonaws.com" },
		{ "x-amz-content-sha256", S3_EMPTY_PAYLOAD_SHA256 },
		{ "x-amz-date", "20130524T000000Z" },
	};
	struct s3_sign_request req = {
		.method = "GET", .canonical_uri = "/", .canonical_query = "max-keys=2&prefix=J",
		.headers = h, .nheaders = 3, .payload_hash = S3_EMPTY_PAYLOAD_SHA256,
		.amz_date = "20130524T000000Z", .region = "us-east-1",
	};
	char auth[512];

	ck_assert_int_eq(s3_sign_v4(&example_cred, &req, auth, sizeof(auth), NULL), ERR_OK);
	ck_assert_ptr_nonnull(strstr(auth,
		"Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"));
}
END_TEST

START_TEST(test_s3_sign_changes_with_secret_and_rejects_uppercase_header)
{
	struct store_credentials other = { "AKIAIOSFODNN7EXAMPLE", "another-secret", NULL };
	struct s3_header h[] = { { "host", "h" }, { "X-Amz-Date", "20130524T000000Z" } };
	struct s3_header ok[] = { { "host", "h" }, { "x-amz-date", "20130524T000000Z" } };
	struct s3_sign_request req = {
		.method = "GET", .canonical_uri = "/", .canonical_query = "",
		.headers = ok, .nheaders = 2, .payload_hash = S3_EMPTY_PAYLOAD_SHA256,
		.amz_date = "20130524T000000Z", .region = "us-east-1",
	};
	char a[512], b[512];
	struct error err;

	ck_assert_int_eq(s3_sign_v4(&example_cred, &req, a, sizeof(a), NULL), ERR_OK);
	ck_assert_int_eq(s3_sign_v4(&other, &req, b, sizeof(b), NULL), ERR_OK);
	ck_assert_str_ne(a, b);
	ck_assert_ptr_null(strstr(b, "another-secret"));
	req.headers = h;
	ck_assert_int_eq(s3_sign_v4(&example_cred, &req, a, sizeof(a), &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "X-Amz-Date"));
	ck_assert_int_eq(s3_sign_v4(&example_cred, &req, a, 10, &err), ERR_INVALID);
}
END_TEST

/* The signing key derived once serves every request of its day and region
 * (the store derives it once a day), and refuses a request of another. */
START_TEST(test_s3_sign_with_a_derived_key_matches_the_published_example)
{
	struct s3_header h[4];
	struct s3_sign_request req = get_object_example(h);
	struct s3_signing_key key, next_day;
	char auth[512], again[512], long_region[80];
	struct error err;

	ck_assert_int_eq(s3_signing_key_derive(&example_cred, "20130524T000000Z", "us-east-1", &key,
					       &err), ERR_OK);
	ck_assert_str_eq(key.date, "20130524");
	ck_assert_int_eq(s3_sign_v4_key(&example_cred, &key, &req, auth, sizeof(auth), &err),
			 ERR_OK);
	ck_assert_ptr_nonnull(strstr(auth,
		"Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"));
	/* later in the same day: the same key, the signature of that time */
	h[0].value = req.amz_date = "20130524T235959Z";
	ck_assert_int_eq(s3_sign_v4_key(&example_cred, &key, &req, auth, sizeof(auth), &err),
			 ERR_OK);
	ck_assert_int_eq(s3_sign_v4(&example_cred, &req, again, sizeof(again), &err), ERR_OK);
	ck_assert_str_eq(auth, again);

	/* the next day needs the next day's key */
	h[0].value = req.amz_date = "20130525T000000Z";
	ck_assert_int_eq(s3_sign_v4_key(&example_cred, &key, &req, auth, sizeof(auth), &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "20130525"));
	ck_assert_ptr_nonnull(strstr(err.msg, "20130524"));
	ck_assert_int_eq(s3_signing_key_derive(&example_cred, req.amz_date, "us-east-1", &next_day,
					       &err), ERR_OK);
	ck_assert_int_ne(memcmp(key.key, next_day.key, sizeof(key.key)), 0);
	ck_assert_int_eq(s3_sign_v4_key(&example_cred, &next_day, &req, auth, sizeof(auth), &err),
			 ERR_OK);
	ck_assert_int_eq(s3_sign_v4(&example_cred, &req, again, sizeof(again), &err), ERR_OK);
	ck_assert_str_eq(auth, again);

	/* another region's key, and names it cannot hold */
	req.region = "eu-west-1";
	ck_assert_int_eq(s3_sign_v4_key(&example_cred, &next_day, &req, auth, sizeof(auth), &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "eu-west-1"));
	memset(long_region, 'r', sizeof(long_region) - 1);
	long_region[sizeof(long_region) - 1] = '\0';
	ck_assert_int_eq(s3_signing_key_derive(&example_cred, req.amz_date, long_region, &key,
					       &err), ERR_INVALID);
	ck_assert_int_eq(s3_signing_key_derive(&example_cred, "2013", "us-east-1", &key, &err),
			 ERR_INVALID);
}
END_TEST

START_TEST(test_s3_uri_encode_follows_s3_rules)
{
	char out[128];

	ck_assert_uint_eq(s3_uri_encode("a b+c%d/e~f_g.h-i", true, out, sizeof(out)),
			  strlen("a%20b%2Bc%25d/e~f_g.h-i"));
	ck_assert_str_eq(out, "a%20b%2Bc%25d/e~f_g.h-i");
	s3_uri_encode("dir/file", false, out, sizeof(out));
	ck_assert_str_eq(out, "dir%2Ffile");
	s3_uri_encode("\xc3\xa9t\xc3\xa9", true, out, sizeof(out));
	ck_assert_str_eq(out, "%C3%A9t%C3%A9");
	/* Truncation still reports the full length and terminates. */
	ck_assert_uint_eq(s3_uri_encode("a b c", true, out, 4), 9);
	ck_assert_uint_lt(strlen(out), 4);
}
END_TEST

START_TEST(test_s3_amz_date_formats_utc)
{
	char d[17];

	s3_amz_date(1369353600, d); /* 2013-05-24 00:00:00 UTC */
	ck_assert_str_eq(d, "20130524T000000Z");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("s3_sign");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_s3_sign_matches_published_get_object_example);
	tcase_add_test(tc, test_s3_sign_matches_published_list_objects_example);
	tcase_add_test(tc, test_s3_sign_changes_with_secret_and_rejects_uppercase_header);
	tcase_add_test(tc, test_s3_sign_with_a_derived_key_matches_the_published_example);
	tcase_add_test(tc, test_s3_uri_encode_follows_s3_rules);
	tcase_add_test(tc, test_s3_amz_date_formats_utc);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
