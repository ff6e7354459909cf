/*
 * test_netaddr.c - listen/connect address parsing.
 */
#include <string.h>

#include "common/netaddr.h"
#include "unit/check_main.h"

START_TEST(test_netaddr_parses_unix_and_tcp_forms)
{
	struct netaddr a;
	struct error err;

	ck_assert_int_eq(netaddr_parse("unix:///run/granary/meta.sock", "listen", &a, &err), ERR_OK);
	ck_assert(a.is_unix);
	ck_assert_str_eq(a.path, "/run/granary/meta.sock");
	ck_assert_int_eq(netaddr_parse("127.0.0.1:7400", "listen", &a, &err), ERR_OK);
	ck_assert(!a.is_unix);
	ck_assert_str_eq(a.host, "127.0.0.1");
	ck_assert_int_eq(a.port, 7400);
	ck_assert_int_eq(netaddr_parse("[::1]:65535", "listen", &a, &err), ERR_OK);
	ck_assert_str_eq(a.host, "::1");
	ck_assert_int_eq(a.port, 65535);
	ck_assert_int_eq(netaddr_parse("meta.granary.svc:7400", "meta", &a, &err), ERR_OK);
	ck_assert_str_eq(a.host, "meta.granary.svc");
}
END_TEST

START_TEST(test_netaddr_rejects_bad_forms_naming_the_setting)
{
	static const char *const bad[] = { "", "host", "host:", ":80", "host:0", "host:65536",
					   "host:80x", "unix://relative", "::1:80", "[::1]80" };
	struct netaddr a;
	struct error err;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(netaddr_parse(bad[i], "listen", &a, &err) == ERR_INVALID, "'%s' accepted", bad[i]);
		ck_assert_ptr_nonnull(strstr(err.msg, "listen"));
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("netaddr");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_netaddr_parses_unix_and_tcp_forms);
	tcase_add_test(tc, test_netaddr_rejects_bad_forms_naming_the_setting);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
