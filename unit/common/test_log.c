/*
 * test_log.c - key=value formatting, quoting, redaction, levels and rate
 * limits.
 */
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "unit/check_main.h"

static int fmt(char *buf, int size, const char *msg, const struct log_field *f, int n)
{
	return log_format(buf, size, LOG_LEVEL_WARN, msg, f, n);
}

START_TEST(test_log_formats_key_value_line)
{
	struct log_field f[] = { LOG_S("bucket", "data"), LOG_I("attempt", -2),
				 LOG_U("bytes", 4194304), LOG_F("ratio", 0.5) };
	char buf[512];
	int n = fmt(buf, sizeof(buf), "s3 retry", f, 4);

	ck_assert_int_eq(n, (int)strlen(buf));
	ck_assert_int_eq(strncmp(buf, "ts=", 3), 0);
	ck_assert_ptr_nonnull(strstr(buf, " level=warn msg=\"s3 retry\" bucket=data attempt=-2 "
					  "bytes=4194304 ratio=0.5\n"));
	ck_assert_int_eq(buf[n - 1], '\n');
	ck_assert_ptr_eq(strchr(buf, '\n'), buf + n - 1);
}
END_TEST

START_TEST(test_log_quotes_and_escapes_values)
{
	struct log_field f[] = { LOG_S("path", "a b\"c\\d\ne"), LOG_S("empty", ""),
				 LOG_S("ctl", "\x01"), LOG_S("eq", "k=v") };
	char buf[512];

	fmt(buf, sizeof(buf), "m", f, 4);
	ck_assert_ptr_nonnull(strstr(buf, "path=\"a b\\\"c\\\\d\\ne\""));
	ck_assert_ptr_nonnull(strstr(buf, "empty=\"\""));
	ck_assert_ptr_nonnull(strstr(buf, "ctl=\"\\x01\""));
	ck_assert_ptr_nonnull(strstr(buf, "eq=\"k=v\""));
	/* One event is one line whatever the values hold. */
	ck_assert_ptr_eq(strchr(buf, '\n'), buf + strlen(buf) - 1);
}
END_TEST

START_TEST(test_log_redacts_secret_keys)
{
	struct log_field f[] = { LOG_S("secret_access_key", "wJalrXUtnFEMI"),
				 LOG_S("Authorization", "AWS4-HMAC-SHA256 sig"),
				 LOG_S("cluster_token", "t0k3n"), LOG_S("key", "train/a.rec") };
	char buf[512];

	fmt(buf, sizeof(buf), "m", f, 4);
	ck_assert_ptr_null(strstr(buf, "wJalrXUtnFEMI"));
	ck_assert_ptr_null(strstr(buf, "AWS4-HMAC"));
	ck_assert_ptr_null(strstr(buf, "t0k3n"));
	ck_assert_ptr_nonnull(strstr(buf, "secret_access_key=[redacted]"));
	ck_assert_ptr_nonnull(strstr(buf, "key=train/a.rec"));
	ck_assert(log_key_is_secret("password"));
	ck_assert(!log_key_is_secret("bucket"));
}
END_TEST

START_TEST(test_log_cuts_long_lines_and_says_so)
{
	char big[1000], buf[128];
	struct log_field f[] = { LOG_S("v", big) };
	int n;

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	n = fmt(buf, sizeof(buf), "m", f, 1);
	ck_assert_int_lt(n, (int)sizeof(buf));
	ck_assert_int_eq(buf[n - 1], '\n');
	ck_assert_ptr_nonnull(strstr(buf, "truncated=true"));
}
END_TEST

START_TEST(test_log_level_filters_and_parses)
{
	int p[2];
	char buf[512];
	ssize_t n;

	ck_assert_int_eq(pipe(p), 0);
	log_set_fd(p[1]);
	log_set_level(LOG_LEVEL_WARN);
	log_info("dropped", LOG_S("x", "1"));
	log_error("kept", LOG_S("x", "2"));
	n = read(p[0], buf, sizeof(buf) - 1);
	ck_assert_int_gt(n, 0);
	buf[n] = '\0';
	ck_assert_ptr_null(strstr(buf, "dropped"));
	ck_assert_ptr_nonnull(strstr(buf, "level=error msg=kept x=2"));
	log_set_fd(STDERR_FILENO);
	close(p[0]);
	close(p[1]);
	ck_assert_int_eq(log_level_parse("DEBUG"), LOG_LEVEL_DEBUG);
	ck_assert_int_eq(log_level_parse("error"), LOG_LEVEL_ERROR);
	ck_assert_int_eq(log_level_parse("loud"), -1);
	ck_assert_int_eq(log_level_parse(NULL), -1);
}
END_TEST

static uint64_t fake_clock(void *arg)
{
	return *(const uint64_t *)arg;
}

START_TEST(test_log_limiter_writes_one_line_per_interval_with_the_count_held_back)
{
	struct log_limiter lim;
	uint64_t now = 5000;
	int p[2], passed = 0;
	char buf[2048];
	ssize_t n;

	ck_assert_int_eq(pipe(p), 0);
	log_set_fd(p[1]);
	log_set_level(LOG_LEVEL_INFO);
	log_limiter_init(&lim, 10000, fake_clock, &now);
	for (int i = 0; i < 1000; i++, now += 10)
		passed += log_limited_warn(&lim, "source failed", LOG_I("i", i));
	/* 0..9990 ms: the first line, then everything until 15000 held back. */
	ck_assert_int_eq(passed, 1);
	now = 15000;
	ck_assert_int_eq(log_limited_warn(&lim, "source failed", LOG_I("i", 1000)), 1);
	ck_assert_int_eq(log_limited_warn(&lim, "source failed", LOG_I("i", 1001)), 0);
	now = 25000;
	ck_assert_int_eq(log_limited_warn(&lim, "source failed", LOG_I("i", 1002)), 1);
	log_set_level(LOG_LEVEL_ERROR);
	now = 99000;
	ck_assert_int_eq(log_limited_warn(&lim, "source failed", LOG_I("i", 1003)), 0);
	log_set_level(LOG_LEVEL_INFO);
	n = read(p[0], buf, sizeof(buf) - 1);
	ck_assert_int_gt(n, 0);
	buf[n] = '\0';
	ck_assert_ptr_nonnull(strstr(buf, "msg=\"source failed\" i=0\n"));
	ck_assert_ptr_nonnull(strstr(buf, "msg=\"source failed\" i=1000 suppressed=999\n"));
	ck_assert_ptr_nonnull(strstr(buf, "msg=\"source failed\" i=1002 suppressed=1\n"));
	ck_assert_ptr_null(strstr(buf, "i=1003"));
	/* A line under the threshold is not counted either. */
	now = 40000;
	ck_assert_int_eq(log_limited_warn(&lim, "source failed", LOG_I("i", 1004)), 1);
	n = read(p[0], buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = '\0';
	ck_assert_ptr_nonnull(strstr(buf, "i=1004\n"));
	log_set_fd(STDERR_FILENO);
	log_limiter_release(&lim);
	close(p[0]);
	close(p[1]);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_log_formats_key_value_line);
	tcase_add_test(tc, test_log_quotes_and_escapes_values);
	tcase_add_test(tc, test_log_redacts_secret_keys);
	tcase_add_test(tc, test_log_cuts_long_lines_and_says_so);
	tcase_add_test(tc, test_log_level_filters_and_parses);
	tcase_add_test(tc, test_log_limiter_writes_one_line_per_interval_with_the_count_held_back);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
