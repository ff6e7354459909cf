/*
 * test_tls.c - the TLS settings' checks and the loading of their PEM
 * files: what is refused names the key and the file, never the contents.
 * Keys and certificates are made with the openssl command in a temporary
 * directory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fileio.h"
#include "common/tls.h"
#include "unit/check_main.h"

static char dir[64] = "/tmp/granary-tls-unit-XXXXXX";
static char cert[128], key[128], other_key[128], not_pem[128];

static void make_files(void)
{
	char cmd[1024];

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(cert, sizeof(cert), "%s/a.crt", dir);
	snprintf(key, sizeof(key), "%s/a.key", dir);
	snprintf(other_key, sizeof(other_key), "%s/b.key", dir);
	snprintf(not_pem, sizeof(not_pem), "%s/plain.txt", dir);
	snprintf(cmd, sizeof(cmd),
		 "cd '%s' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
		 " -subj /CN=a -days 1 -keyout a.key -out a.crt 2>/dev/null &&"
		 " openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out b.key 2>/dev/null &&"
		 " echo 'not a certificate' > plain.txt",
		 dir);
	ck_assert_int_eq(system(cmd), 0);
}

static void remove_files(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

START_TEST(test_tls_checks_name_the_key)
{
	struct tls_server_settings srv = { .cert_file = cert, .key_file = "" };
	struct tls_client_settings cli = { .ca_file = "", .server_name = "x.svc" };
	struct error err;

	ck_assert_int_eq(tls_server_check("tls.", &srv, NULL, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "key 'tls.key_file'") != NULL, "%s", err.msg);
	srv.key_file = key;
	ck_assert_int_eq(tls_server_check("tls.", &srv, NULL, &err), ERR_OK);
	srv.cert_file = "relative.crt";
	ck_assert_int_eq(tls_server_check("tls.", &srv, NULL, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "tls.cert_file") != NULL, "%s", err.msg);
	srv = (struct tls_server_settings){ .cert_file = "", .key_file = "" };
	ck_assert_int_eq(tls_server_check("tls.", &srv, cert, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "tls.client_ca_file") != NULL, "%s", err.msg);

	/* a server name without a CA would silently stay plaintext */
	ck_assert_int_eq(tls_client_check("meta.tls.", &cli, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "key 'meta.tls.server_name'") != NULL, "%s", err.msg);
	cli.ca_file = cert;
	ck_assert_int_eq(tls_client_check("meta.tls.", &cli, &err), ERR_OK);
	cli.server_name = "bad name!";
	ck_assert_int_eq(tls_client_check("meta.tls.", &cli, &err), ERR_INVALID);
}
END_TEST

START_TEST(test_tls_load_reads_matching_pair_and_refuses_others)
{
	struct tls_server_settings srv = { .cert_file = cert, .key_file = key };
	struct tls_client_settings cli = { .ca_file = cert, .server_name = "a.test" };
	struct tls_material m;
	struct error err;

	ck_assert_msg(tls_server_load("tls.", &srv, cert, &m, &err) == ERR_OK, "%s", err.msg);
	ck_assert(tls_material_server(&m));
	ck_assert_ptr_nonnull(strstr(m.cert, "BEGIN CERTIFICATE"));
	ck_assert_ptr_nonnull(strstr(m.key, "PRIVATE KEY"));
	ck_assert_ptr_nonnull(m.ca);
	tls_material_release(&m);
	ck_assert_ptr_null(m.key);

	srv.key_file = other_key;
	ck_assert_int_eq(tls_server_load("tls.", &srv, NULL, &m, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "is not the private key of the certificate") != NULL, "%s",
		      err.msg);
	ck_assert(strstr(err.msg, "BEGIN") == NULL);
	tls_material_release(&m);

	srv.cert_file = not_pem;
	srv.key_file = key;
	ck_assert_int_eq(tls_server_load("tls.", &srv, NULL, &m, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "key 'tls.cert_file'") && strstr(err.msg, not_pem), "%s",
		      err.msg);
	tls_material_release(&m);

	srv.cert_file = cert;
	srv.key_file = not_pem;
	ck_assert_int_eq(tls_server_load("tls.", &srv, NULL, &m, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "holds no PEM private key") != NULL, "%s", err.msg);
	tls_material_release(&m);

	ck_assert_msg(tls_client_load("meta.tls.", &cli, &m, &err) == ERR_OK, "%s", err.msg);
	ck_assert(tls_material_client(&m));
	ck_assert_str_eq(m.server_name, "a.test");
	ck_assert_ptr_null(m.key);
	tls_material_release(&m);

	cli.ca_file = "/nonexistent/ca.crt";
	ck_assert_int_ne(tls_client_load("meta.tls.", &cli, &m, &err), ERR_OK);
	ck_assert_msg(strstr(err.msg, "key 'meta.tls.ca_file'") != NULL, "%s", err.msg);
	tls_material_release(&m);

	/* disabled: nothing read, TLS off */
	cli = (struct tls_client_settings){ .ca_file = "" };
	ck_assert_int_eq(tls_client_load("meta.tls.", &cli, &m, &err), ERR_OK);
	ck_assert(!tls_material_client(&m));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("tls");
	TCase *tc = tcase_create("tls");

	tcase_add_unchecked_fixture(tc, make_files, remove_files);
	tcase_add_test(tc, test_tls_checks_name_the_key);
	tcase_add_test(tc, test_tls_load_reads_matching_pair_and_refuses_others);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
