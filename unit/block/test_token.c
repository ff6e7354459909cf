/*
 * test_token.c - the cluster token: signing and checking requests, the
 * clock window, tampering, and the secret file's rules.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/token.h"
#include "unit/check_main.h"

#define NOW 1700000000
#define SECRET "0123456789abcdef-cluster-secret"

static struct token *tok;

static void setup(void)
{
	struct error err;

	ck_assert_int_eq(token_new(SECRET, strlen(SECRET), &tok, &err), ERR_OK);
}

static void teardown(void)
{
	token_free(tok);
	tok = NULL;
}

static void sign(const struct token *t, const char *method, const char *path, const char *query,
		 int64_t ts, char *out)
{
	ck_assert_int_eq(token_sign(t, method, path, query, ts, out, TOKEN_HEADER_MAX), ERR_OK);
}

/* Writes content to a fresh file with mode; path receives its name. */
static void write_file(char *path, size_t size, const void *content, size_t len, mode_t mode)
{
	int fd;

	snprintf(path, size, "/tmp/test_token_XXXXXX");
	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, content, len), (ssize_t)len);
	ck_assert_int_eq(fchmod(fd, mode), 0);
	close(fd);
}

START_TEST(test_token_signed_request_verifies)
{
	char h[TOKEN_HEADER_MAX];
	struct error err;

	sign(tok, "GET", "/v1/blocks/imagenet/3", "key=train%2Fa.rec&etag=abc", NOW, h);
	ck_assert_ptr_nonnull(strstr(h, "Granary-HMAC ts=1700000000,sig="));
	ck_assert_uint_eq(strlen(h), strlen("Granary-HMAC ts=1700000000,sig=") + 64);
	ck_assert_int_eq(token_verify_at(tok, "GET", "/v1/blocks/imagenet/3",
					 "key=train%2Fa.rec&etag=abc", h, NOW, &err),
			 ERR_OK);
	/* NULL and "" are the same empty query. */
	sign(tok, "GET", "/v1/datasets", NULL, NOW, h);
	ck_assert_int_eq(token_verify_at(tok, "GET", "/v1/datasets", "", h, NOW, &err), ERR_OK);
}
END_TEST

/* The signature is HMAC-SHA256 over "METHOD\nPATH\nQUERY\nTS" with the
 * secret as key: a fixed vector pins the format other clients implement
 * (computed with: printf 'GET\n/p\nq=1\n1700000000' | openssl dgst
 * -sha256 -hmac 0123456789abcdef-cluster-secret). */
START_TEST(test_token_signature_matches_the_documented_format)
{
	char h[TOKEN_HEADER_MAX];

	sign(tok, "GET", "/p", "q=1", NOW, h);
	ck_assert_str_eq(h, "Granary-HMAC ts=1700000000,sig="
			    "bc498af6900dd03e21db9ee6f5d8e40f45a0dedf4e4a1eafcf69e4b867bdf505");
}
END_TEST

START_TEST(test_token_window_is_300_seconds_each_way)
{
	char h[TOKEN_HEADER_MAX];
	struct error err;

	sign(tok, "GET", "/v1/datasets", "", NOW - 300, h);
	ck_assert_int_eq(token_verify_at(tok, "GET", "/v1/datasets", "", h, NOW, &err), ERR_OK);
	sign(tok, "GET", "/v1/datasets", "", NOW + 300, h);
	ck_assert_int_eq(token_verify_at(tok, "GET", "/v1/datasets", "", h, NOW, &err), ERR_OK);
	sign(tok, "GET", "/v1/datasets", "", NOW - 301, h);
	ck_assert_int_eq(token_verify_at(tok, "GET", "/v1/datasets", "", h, NOW, &err),
			 ERR_PERMISSION);
	ck_assert_ptr_nonnull(strstr(err.msg, "301 s away"));
	sign(tok, "GET", "/v1/datasets", "", NOW + 301, h);
	ck_assert_int_eq(token_verify_at(tok, "GET", "/v1/datasets", "", h, NOW, &err),
			 ERR_PERMISSION);
}
END_TEST

START_TEST(test_token_tampered_request_is_refused)
{
	char h[TOKEN_HEADER_MAX], forged[TOKEN_HEADER_MAX];
	struct error err;
	const char *path = "/v1/blocks/ds/7", *query = "key=a&etag=e1";

	sign(tok, "GET", path, query, NOW, h);
	ck_assert_int_eq(token_verify_at(tok, "PUT", path, query, h, NOW, &err), ERR_PERMISSION);
	ck_assert_int_eq(token_verify_at(tok, "GET", "/v1/blocks/ds/8", query, h, NOW, &err),
			 ERR_PERMISSION);
	ck_assert_int_eq(token_verify_at(tok, "GET", "/v1/blocks/other/7", query, h, NOW, &err),
			 ERR_PERMISSION);
	ck_assert_int_eq(token_verify_at(tok, "GET", path, "key=b&etag=e1", h, NOW, &err),
			 ERR_PERMISSION);
	ck_assert_int_eq(token_verify_at(tok, "GET", path, "", h, NOW, &err), ERR_PERMISSION);
	ck_assert_str_eq(err.msg, "request signature does not match");
	/* Moving the timestamp breaks the signature too. */
	snprintf(forged, sizeof(forged), "Granary-HMAC ts=%d,%s", NOW + 1, strchr(h, ',') + 1);
	ck_assert_int_eq(token_verify_at(tok, "GET", path, query, forged, NOW, &err),
			 ERR_PERMISSION);
	/* One flipped hex digit. */
	snprintf(forged, sizeof(forged), "%s", h);
	forged[strlen(forged) - 1] = forged[strlen(forged) - 1] == '0' ? '1' : '0';
	ck_assert_int_eq(token_verify_at(tok, "GET", path, query, forged, NOW, &err),
			 ERR_PERMISSION);
}
END_TEST

START_TEST(test_token_other_secret_is_refused)
{
	struct token *other = NULL;
	char h[TOKEN_HEADER_MAX];
	struct error err;

	ck_assert_int_eq(token_new("another-secret-of-16+", 21, &other, &err), ERR_OK);
	sign(other, "GET", "/v1/datasets", "", NOW, h);
	ck_assert_int_eq(token_verify_at(tok, "GET", "/v1/datasets", "", h, NOW, &err),
			 ERR_PERMISSION);
	token_free(other);
}
END_TEST

START_TEST(test_token_missing_or_malformed_header_is_unauthenticated)
{
	static const char *const bad[] = {
		"Bearer abc",
		"Granary-HMAC",
		"Granary-HMAC ts=,sig=00",
		"Granary-HMAC ts=12x,sig=0000000000000000000000000000000000000000000000000000000000000000",
		"Granary-HMAC sig=0000000000000000000000000000000000000000000000000000000000000000,ts=1",
		"Granary-HMAC ts=1,sig=000000000000000000000000000000000000000000000000000000000000000",
		"Granary-HMAC ts=1,sig=00000000000000000000000000000000000000000000000000000000000000000",
		"Granary-HMAC ts=1,sig=zz00000000000000000000000000000000000000000000000000000000000000",
		"Granary-HMAC ts=99999999999999999999999,sig=0000000000000000000000000000000000000000000000000000000000000000",
		"granary-hmac ts=1,sig=0000000000000000000000000000000000000000000000000000000000000000",
	};
	struct error err;

	ck_assert_int_eq(token_verify_at(tok, "GET", "/", "", NULL, NOW, &err),
			 ERR_UNAUTHENTICATED);
	ck_assert_ptr_nonnull(strstr(err.msg, "missing Authorization header"));
	ck_assert_int_eq(token_verify_at(tok, "GET", "/", "", "", NOW, &err), ERR_UNAUTHENTICATED);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(token_verify_at(tok, "GET", "/", "", bad[i], NOW, &err) ==
				      ERR_UNAUTHENTICATED,
			      "'%s' was not refused as malformed", bad[i]);
		ck_assert_ptr_nonnull(strstr(err.msg, "malformed Authorization header"));
	}
}
END_TEST

START_TEST(test_token_file_strips_one_trailing_newline)
{
	struct token *from_file = NULL;
	char path[64], h1[TOKEN_HEADER_MAX], h2[TOKEN_HEADER_MAX];
	struct error err;

	write_file(path, sizeof(path), SECRET "\n", strlen(SECRET) + 1, 0600);
	ck_assert_int_eq(token_load_file(path, &from_file, &err), ERR_OK);
	unlink(path);
	sign(tok, "GET", "/v1/x", "", NOW, h1);
	sign(from_file, "GET", "/v1/x", "", NOW, h2);
	ck_assert_str_eq(h1, h2);
	token_free(from_file);

	write_file(path, sizeof(path), SECRET "\r\n", strlen(SECRET) + 2, 0400);
	ck_assert_int_eq(token_load_file(path, &from_file, &err), ERR_OK);
	unlink(path);
	sign(from_file, "GET", "/v1/x", "", NOW, h2);
	ck_assert_str_eq(h1, h2);
	token_free(from_file);
}
END_TEST

/* A file longer than the largest secret and its line end is refused, even
 * where a cut would end in "\r\n" and look like a secret of the most
 * bytes. */
START_TEST(test_token_file_too_long_is_refused_not_cut)
{
	static char text[TOKEN_SECRET_MAX + 100];
	struct token *t = NULL;
	char path[64];
	struct error err;

	memset(text, 'k', sizeof(text));
	memcpy(text + TOKEN_SECRET_MAX, "\r\n", 2);
	write_file(path, sizeof(path), text, sizeof(text), 0600);
	ck_assert_int_eq(token_load_file(path, &t, &err), ERR_INVALID);
	ck_assert_ptr_null(t);
	ck_assert_msg(strstr(err.msg, "longer than a secret of at most 4096 bytes"), "%s", err.msg);
	unlink(path);
	/* The largest secret and its line end are one. */
	write_file(path, sizeof(path), text, TOKEN_SECRET_MAX + 2, 0600);
	ck_assert_int_eq(token_load_file(path, &t, &err), ERR_OK);
	token_free(t);
	unlink(path);
}
END_TEST

START_TEST(test_token_file_readable_by_others_is_refused)
{
	static const mode_t modes[] = { 0644, 0640, 0604, 0620, 0602 };
	struct token *t = NULL;
	char path[64];
	struct error err;

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		write_file(path, sizeof(path), SECRET, strlen(SECRET), modes[i]);
		ck_assert_int_eq(token_load_file(path, &t, &err), ERR_PERMISSION);
		ck_assert_ptr_null(t);
		ck_assert_msg(strstr(err.msg, path) && strstr(err.msg, "by group or others") &&
				      strstr(err.msg, "chmod 600"),
			      "unclear: %s", err.msg);
		unlink(path);
	}
}
END_TEST

START_TEST(test_token_file_short_empty_or_missing_is_refused)
{
	struct token *t = NULL;
	char path[64];
	struct error err;

	write_file(path, sizeof(path), "short-secret\n", 13, 0600);
	ck_assert_int_eq(token_load_file(path, &t, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "at least 16"));
	ck_assert_ptr_nonnull(strstr(err.msg, path));
	unlink(path);

	write_file(path, sizeof(path), "", 0, 0600);
	ck_assert_int_eq(token_load_file(path, &t, &err), ERR_INVALID);
	unlink(path);

	ck_assert_int_eq(token_load_file("/nonexistent/granary/token", &t, &err), ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "'/nonexistent/granary/token'"));
	ck_assert_ptr_null(t);
}
END_TEST

START_TEST(test_token_file_too_large_is_refused)
{
	struct token *t = NULL;
	char path[64], *big = malloc(TOKEN_SECRET_MAX + 10);
	struct error err;

	memset(big, 'x', TOKEN_SECRET_MAX + 10);
	write_file(path, sizeof(path), big, TOKEN_SECRET_MAX + 10, 0600);
	ck_assert_int_eq(token_load_file(path, &t, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "at most"));
	unlink(path);
	free(big);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("token");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_token_signed_request_verifies);
	tcase_add_test(tc, test_token_signature_matches_the_documented_format);
	tcase_add_test(tc, test_token_window_is_300_seconds_each_way);
	tcase_add_test(tc, test_token_tampered_request_is_refused);
	tcase_add_test(tc, test_token_other_secret_is_refused);
	tcase_add_test(tc, test_token_missing_or_malformed_header_is_unauthenticated);
	tcase_add_test(tc, test_token_file_strips_one_trailing_newline);
	tcase_add_test(tc, test_token_file_too_long_is_refused_not_cut);
	tcase_add_test(tc, test_token_file_readable_by_others_is_refused);
	tcase_add_test(tc, test_token_file_short_empty_or_missing_is_refused);
	tcase_add_test(tc, test_token_file_too_large_is_refused);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
