/*
 * test_tfrecord.c - CRC32C, masking and the incremental parser.
 */
#include <string.h>

#include "bench/tfrecord.h"
#include "unit/check_main.h"

START_TEST(test_tfrecord_crc32c_matches_the_standard_check_value)
{
	ck_assert_uint_eq(tfrecord_crc32c("123456789", 9), 0xe3069283u);
	ck_assert_uint_eq(tfrecord_crc32c("", 0), 0);
	/* masking is a rotation plus a constant */
	ck_assert_uint_eq(tfrecord_mask(0), 0xa282ead8u);
	ck_assert_uint_eq(tfrecord_mask(0x00008000u), 0x1u + 0xa282ead8u);
}
END_TEST

static size_t make(uint8_t *out, const char *const *recs, int n)
{
	size_t at = 0;

	for (int i = 0; i < n; i++) {
		size_t len = strlen(recs[i]);

		tfrecord_header(len, out + at);
		memcpy(out + at + 12, recs[i], len);
		tfrecord_footer(recs[i], len, out + at + 12 + len);
		at += 16 + len;
	}
	return at;
}

START_TEST(test_tfrecord_parser_accepts_any_chunking)
{
	const char *const recs[] = { "alpha", "", "a longer record with more bytes" };
	uint8_t buf[256];
	size_t len = make(buf, recs, 3);

	for (size_t chunk = 1; chunk <= len; chunk++) {
		struct tfrecord_parser p;
		struct error err;

		tfrecord_parser_init(&p);
		for (size_t at = 0; at < len; at += chunk)
			ck_assert_int_eq(tfrecord_parser_feed(&p, buf + at, at + chunk > len ? len - at : chunk, &err), ERR_OK);
		ck_assert_int_eq(tfrecord_parser_finish(&p, &err), ERR_OK);
		ck_assert_uint_eq(p.records, 3);
		ck_assert_uint_eq(p.bytes, len);
	}
}
END_TEST

START_TEST(test_tfrecord_parser_catches_every_flipped_byte)
{
	const char *const recs[] = { "payload-one", "payload-two" };
	uint8_t buf[256], bad[256];
	size_t len = make(buf, recs, 2);

	for (size_t i = 0; i < len; i++) {
		struct tfrecord_parser p;
		struct error err;
		enum error_code rc;

		memcpy(bad, buf, len);
		bad[i] ^= 0x01;
		tfrecord_parser_init(&p);
		rc = tfrecord_parser_feed(&p, bad, len, &err);
		if (rc == ERR_OK)
			rc = tfrecord_parser_finish(&p, &err);
		ck_assert_msg(rc == ERR_IO, "flip at byte %zu not caught", i);
	}
}
END_TEST

START_TEST(test_tfrecord_parser_reports_truncation)
{
	const char *const recs[] = { "abc" };
	uint8_t buf[64];
	size_t len = make(buf, recs, 1);
	struct tfrecord_parser p;
	struct error err;

	tfrecord_parser_init(&p);
	ck_assert_int_eq(tfrecord_parser_feed(&p, buf, len - 1, &err), ERR_OK);
	ck_assert_int_eq(tfrecord_parser_finish(&p, &err), ERR_IO);
	ck_assert_ptr_nonnull(strstr(err.msg, "truncated"));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("tfrecord");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_tfrecord_crc32c_matches_the_standard_check_value);
	tcase_add_test(tc, test_tfrecord_parser_accepts_any_chunking);
	tcase_add_test(tc, test_tfrecord_parser_catches_every_flipped_byte);
	tcase_add_test(tc, test_tfrecord_parser_reports_truncation);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
