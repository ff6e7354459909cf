/*
 * test_error.c - the error type and its mappings to errno, gRPC and HTTP.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "common/error.h"
#include "unit/check_main.h"

START_TEST(test_error_set_formats_and_returns_code)
{
	struct error err;

	ck_assert_int_eq(error_set(&err, ERR_NOT_FOUND, "open '%s'", "/x"), ERR_NOT_FOUND);
	ck_assert_int_eq(err.code, ERR_NOT_FOUND);
	ck_assert_str_eq(err.msg, "open '/x'");
	ck_assert_int_eq(error_set(NULL, ERR_IO, "ignored"), ERR_IO);
	error_clear(&err);
	ck_assert_int_eq(err.code, ERR_OK);
	ck_assert_str_eq(err.msg, "");
}
END_TEST

START_TEST(test_error_wrap_prepends_context_and_keeps_code)
{
	struct error err;

	error_set(&err, ERR_UNAVAILABLE, "connection refused");
	ck_assert_int_eq(error_wrap(&err, "read '%s'", "a.rec"), ERR_UNAVAILABLE);
	ck_assert_str_eq(err.msg, "read 'a.rec': connection refused");
}
END_TEST

START_TEST(test_error_long_messages_are_truncated_not_overflowed)
{
	struct error err;
	char big[2 * ERROR_MSG_MAX];

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	error_set(&err, ERR_INVALID, "%s", big);
	ck_assert_uint_eq(strlen(err.msg), ERROR_MSG_MAX - 1);
	error_wrap(&err, "%s", big);
	ck_assert_uint_eq(strlen(err.msg), ERROR_MSG_MAX - 1);
}
END_TEST

/* Whether s is whole UTF-8 sequences (lead bytes and their continuations). */
static bool whole_utf8(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p;) {
		size_t w = *p < 0x80 ? 1 : *p >= 0xf0 ? 4 : *p >= 0xe0 ? 3 : *p >= 0xc0 ? 2 : 0;

		if (w == 0)
			return false;
		for (size_t i = 1; i < w; i++)
			if ((p[i] & 0xc0) != 0x80)
				return false;
		p += w;
	}
	return true;
}

/* A cut never leaves part of a UTF-8 character (an object key's) at the
 * end: JSON answers and gRPC statuses carry the message. */
START_TEST(test_error_cut_messages_end_with_whole_characters)
{
	static const char *const chars[] = { "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x98\x80" };
	struct error err;
	char big[2 * ERROR_MSG_MAX];

	for (size_t c = 0; c < 3; c++) {
		size_t w = strlen(chars[c]);

		/* every offset of the characters against the buffer's end */
		for (size_t pad = 0; pad < w; pad++) {
			size_t at = pad;

			memset(big, 'x', pad);
			while (at + w < sizeof(big))
				at += (size_t)sprintf(big + at, "%s", chars[c]);
			big[at] = '\0';
			error_set(&err, ERR_NOT_FOUND, "%s", big);
			ck_assert_msg(whole_utf8(err.msg) && strlen(err.msg) > ERROR_MSG_MAX - 1 - w,
				      "char %zu pad %zu: %zu bytes", c, pad, strlen(err.msg));
			error_wrap(&err, "%s", big);
			ck_assert_msg(whole_utf8(err.msg), "wrap: char %zu pad %zu", c, pad);
			error_set(&err, ERR_NOT_FOUND, "%s", "key");
			error_wrap(&err, "object '%s'", big);
			ck_assert_msg(whole_utf8(err.msg), "wrap's prefix: char %zu pad %zu", c, pad);
		}
	}
}
END_TEST

START_TEST(test_error_maps_each_code_at_every_edge)
{
	ck_assert_int_eq(error_to_errno(ERR_NOT_FOUND), ENOENT);
	ck_assert_int_eq(error_to_errno(ERR_READ_ONLY), EROFS);
	ck_assert_int_eq(error_to_errno(ERR_PERMISSION), EACCES);
	ck_assert_int_eq(error_to_errno(ERR_UNAVAILABLE), EIO);
	ck_assert_int_eq(error_to_errno(ERR_BUSY), EAGAIN);
	ck_assert_int_eq(error_to_errno(ERR_TIMEOUT), ETIMEDOUT);
	ck_assert_int_eq(error_to_grpc(ERR_OK), 0);
	ck_assert_int_eq(error_to_grpc(ERR_INVALID), 3);
	ck_assert_int_eq(error_to_grpc(ERR_NOT_FOUND), 5);
	ck_assert_int_eq(error_to_grpc(ERR_EXISTS), 6);
	ck_assert_int_eq(error_to_grpc(ERR_PERMISSION), 7);
	ck_assert_int_eq(error_to_grpc(ERR_RANGE), 11);
	ck_assert_int_eq(error_to_grpc(ERR_UNAVAILABLE), 14);
	ck_assert_int_eq(error_to_grpc(ERR_BUSY), 14);
	ck_assert_int_eq(error_to_grpc(ERR_UNAUTHENTICATED), 16);
	ck_assert_int_eq(error_to_grpc(ERR_PRECONDITION), 9);
	ck_assert_int_eq(error_from_grpc(9), ERR_PRECONDITION);
	ck_assert_int_eq(error_to_http(ERR_INVALID), 400);
	ck_assert_int_eq(error_to_http(ERR_UNAUTHENTICATED), 401);
	ck_assert_int_eq(error_to_http(ERR_PERMISSION), 403);
	ck_assert_int_eq(error_to_http(ERR_NOT_FOUND), 404);
	ck_assert_int_eq(error_to_http(ERR_RANGE), 416);
	ck_assert_int_eq(error_to_http(ERR_UNAVAILABLE), 503);
	ck_assert_int_eq(error_to_http(ERR_BUSY), 503);
	/* Every code has a name and a non-OK mapping. */
	for (int c = ERR_INVALID; c < ERR_CODE_COUNT; c++) {
		ck_assert_ptr_nonnull(error_code_name((enum error_code)c));
		ck_assert_int_ne(error_to_errno((enum error_code)c), 0);
		ck_assert_int_ne(error_to_grpc((enum error_code)c), 0);
		ck_assert_int_ge(error_to_http((enum error_code)c), 400);
	}
	ck_assert_str_eq(error_code_name((enum error_code)999), "unknown error");
	ck_assert_int_eq(error_to_http((enum error_code)999), 500);
}
END_TEST

START_TEST(test_error_from_errno_round_trips_common_cases)
{
	ck_assert_int_eq(error_from_errno(ENOENT), ERR_NOT_FOUND);
	ck_assert_int_eq(error_from_errno(EACCES), ERR_PERMISSION);
	ck_assert_int_eq(error_from_errno(ENOSPC), ERR_NO_SPACE);
	ck_assert_int_eq(error_from_errno(ECONNREFUSED), ERR_UNAVAILABLE);
	ck_assert_int_eq(error_from_errno(EROFS), ERR_READ_ONLY);
	ck_assert_int_eq(error_from_errno(EBADF), ERR_IO);
	ck_assert_int_eq(error_to_errno(error_from_errno(ENOENT)), ENOENT);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("error");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_error_set_formats_and_returns_code);
	tcase_add_test(tc, test_error_wrap_prepends_context_and_keeps_code);
	tcase_add_test(tc, test_error_long_messages_are_truncated_not_overflowed);
	tcase_add_test(tc, test_error_cut_messages_end_with_whole_characters);
	tcase_add_test(tc, test_error_maps_each_code_at_every_edge);
	tcase_add_test(tc, test_error_from_errno_round_trips_common_cases);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
