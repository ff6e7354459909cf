/*
 * test_netaddr.c - listen/connect address parsing, stale sockets, binding.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

START_TEST(test_netaddr_listen_form_takes_a_bare_port)
{
	struct netaddr a;
	struct error err;

	ck_assert_int_eq(netaddr_parse_listen(":9808", "health_address", &a, &err), ERR_OK);
	ck_assert(!a.is_unix);
	ck_assert_str_eq(a.host, "");
	ck_assert_int_eq(a.port, 9808);
	ck_assert_int_eq(netaddr_parse_listen("0.0.0.0:9808", "health_address", &a, &err), ERR_OK);
	ck_assert_str_eq(a.host, "0.0.0.0");
	/* A connect address still needs its host. */
	ck_assert_int_eq(netaddr_parse(":9808", "meta.address", &a, &err), ERR_INVALID);
	ck_assert_int_eq(netaddr_check_setting("meta.address", ":9808", &err), ERR_INVALID);
	ck_assert_int_eq(netaddr_check_listen_setting("health_address", ":9808", &err), ERR_OK);
	ck_assert_int_eq(netaddr_check_listen_setting("health_address", ":0", &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'health_address'"));
	ck_assert_int_eq(netaddr_check_listen_setting("health_address", "9808", &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'health_address'"));
}
END_TEST

START_TEST(test_netaddr_stale_socket_removed_other_files_kept)
{
	char dir[] = "/tmp/granary-netaddr-XXXXXX", path[200], addr[220], got[108];
	struct error err;
	struct stat st;
	FILE *f;
	int fd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/missing.sock", dir);
	ck_assert_int_eq(netaddr_remove_stale_socket(path, &err), ERR_OK);

	snprintf(path, sizeof(path), "%s/plain", dir);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fclose(f);
	ck_assert_int_eq(netaddr_remove_stale_socket(path, &err), ERR_EXISTS);
	ck_assert_ptr_nonnull(strstr(err.msg, "is not a socket"));
	ck_assert_int_eq(stat(path, &st), 0);
	/* Binding there is refused, and the file stays. */
	snprintf(addr, sizeof(addr), "unix://%s", path);
	ck_assert_int_lt(netaddr_listen(addr, "listen", got, sizeof(got), &err), 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "listen 'unix://"));
	ck_assert_int_eq(stat(path, &st), 0);

	snprintf(path, sizeof(path), "%s/stale.sock", dir);
	check_make_socket(path);
	snprintf(addr, sizeof(addr), "unix://%s", path);
	fd = netaddr_listen(addr, "listen", got, sizeof(got), &err);
	ck_assert_msg(fd >= 0, "%s", err.msg);
	ck_assert_str_eq(got, path);
	close(fd);
	ck_assert_int_eq(netaddr_remove_stale_socket(path, &err), ERR_OK);
	ck_assert_int_ne(stat(path, &st), 0);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(path), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("netaddr");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_netaddr_parses_unix_and_tcp_forms);
	tcase_add_test(tc, test_netaddr_rejects_bad_forms_naming_the_setting);
	tcase_add_test(tc, test_netaddr_listen_form_takes_a_bare_port);
	tcase_add_test(tc, test_netaddr_stale_socket_removed_other_files_kept);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
