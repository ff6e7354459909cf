/*
 * test_meta_auth.c - granary-meta's call signatures: the documented format,
 * each refusal and its status, the clock window, the body binding, the
 * roles' methods, and which key files a meta may start with.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "meta/meta_auth.h"
#include "meta/service.h"
#include "unit/check_main.h"

#define NOW 1700000000
#define CSI_KEY "0123456789abcdef-csi-key"
#define WORKER_KEY "0123456789abcdef-worker-key"
#define MOUNT_KEY "0123456789abcdef-mount-key"

static struct meta_auth auth;
static struct token *csi, *worker, *mount;

static struct token *key(const char *secret)
{
	struct token *t = NULL;
	struct error err;

	ck_assert_int_eq(token_new(secret, strlen(secret), &t, &err), ERR_OK);
	return t;
}

static void setup(void)
{
	memset(&auth, 0, sizeof(auth));
	auth.keys[META_ROLE_CSI] = key(CSI_KEY);
	auth.keys[META_ROLE_WORKER] = key(WORKER_KEY);
	auth.keys[META_ROLE_MOUNT] = key(MOUNT_KEY);
	csi = key(CSI_KEY);
	worker = key(WORKER_KEY);
	mount = key(MOUNT_KEY);
}

static void teardown(void)
{
	meta_auth_release(&auth);
	token_free(csi);
	token_free(worker);
	token_free(mount);
}

static void sign(const struct token *k, enum meta_role role, const char *method,
		 const char *body, int64_t ts, char *out)
{
	ck_assert_int_eq(meta_auth_sign(k, role, method, body, strlen(body), ts, out,
					META_AUTH_HEADER_MAX),
			 ERR_OK);
}

static enum error_code check(const char *method, const char *header, const char *body,
			     int64_t now, struct error *err)
{
	return meta_auth_check_at(&auth, method, header, body, strlen(body), now, err);
}

/* HMAC-SHA256 with the role's key over "granary-meta\nROLE\nMETHOD\nTS\n"
 * and the hex SHA-256 of the body: a fixed vector pins the format other
 * clients implement (computed with openssl dgst, see docs/meta.md). */
START_TEST(test_meta_auth_signature_matches_the_documented_format)
{
	char h[META_AUTH_HEADER_MAX];

	sign(worker, META_ROLE_WORKER, META_METHOD_HEARTBEAT, "abc", NOW, h);
	ck_assert_str_eq(h, "Granary-HMAC role=worker,ts=1700000000,sig="
			    "a3b2be7bf3f57a46a055c5d928f5dd5f62961f5f76e7bca5fd4eda022ee874c8");
}
END_TEST

START_TEST(test_meta_auth_signed_calls_pass)
{
	char h[META_AUTH_HEADER_MAX];
	struct error err;

	sign(csi, META_ROLE_CSI, META_METHOD_REGISTER, "spec", NOW, h);
	ck_assert_int_eq(check(META_METHOD_REGISTER, h, "spec", NOW, &err), ERR_OK);
	sign(worker, META_ROLE_WORKER, META_METHOD_HEARTBEAT, "beat", NOW, h);
	ck_assert_int_eq(check(META_METHOD_HEARTBEAT, h, "beat", NOW, &err), ERR_OK);
	sign(mount, META_ROLE_MOUNT, META_METHOD_SNAPSHOT, "", NOW, h);
	ck_assert_int_eq(check(META_METHOD_SNAPSHOT, h, "", NOW, &err), ERR_OK);
}
END_TEST

START_TEST(test_meta_auth_unsigned_or_malformed_is_unauthenticated)
{
	static const char *const bad[] = {
		"Bearer abc",
		"Granary-HMAC ts=1700000000,sig=" /* no role */
		"a3b2be7bf3f57a46a055c5d928f5dd5f62961f5f76e7bca5fd4eda022ee874c8",
		"Granary-HMAC role=admin,ts=1700000000,sig="
		"a3b2be7bf3f57a46a055c5d928f5dd5f62961f5f76e7bca5fd4eda022ee874c8",
		"Granary-HMAC role=worker,ts=1700000000,sig=a3b2",
		"Granary-HMAC role=worker,ts=,sig="
		"a3b2be7bf3f57a46a055c5d928f5dd5f62961f5f76e7bca5fd4eda022ee874c8",
	};
	struct error err;

	ck_assert_int_eq(check(META_METHOD_DELETE, NULL, "", NOW, &err), ERR_UNAUTHENTICATED);
	ck_assert_ptr_nonnull(strstr(err.msg, "DeleteDataset: unsigned call"));
	ck_assert_ptr_nonnull(strstr(err.msg, "authorization"));
	ck_assert_int_eq(check(META_METHOD_DELETE, "", "", NOW, &err), ERR_UNAUTHENTICATED);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(check(META_METHOD_HEARTBEAT, bad[i], "", NOW, &err) ==
				      ERR_UNAUTHENTICATED,
			      "%s", bad[i]);
		ck_assert_ptr_nonnull(strstr(err.msg, "malformed"));
	}
}
END_TEST

/* Another key, method or body, or a timestamp past the window: refused,
 * naming the role and never echoing the signature. */
START_TEST(test_meta_auth_bad_signature_is_permission_denied)
{
	char h[META_AUTH_HEADER_MAX];
	struct error err;

	/* The mount key used as if it were the worker's. */
	sign(mount, META_ROLE_WORKER, META_METHOD_HEARTBEAT, "beat", NOW, h);
	ck_assert_int_eq(check(META_METHOD_HEARTBEAT, h, "beat", NOW, &err), ERR_PERMISSION);
	ck_assert_str_eq(err.msg, "Heartbeat: the signature of role 'worker' does not match");
	ck_assert_ptr_null(strstr(err.msg, strrchr(h, '=') + 1));

	sign(worker, META_ROLE_WORKER, META_METHOD_HEARTBEAT, "beat", NOW, h);
	/* The same signature on another request body: a captured heartbeat
	 * cannot carry another address. */
	ck_assert_int_eq(check(META_METHOD_HEARTBEAT, h, "beat2", NOW, &err), ERR_PERMISSION);
	/* ... or another method. */
	ck_assert_int_eq(check(META_METHOD_WORKERS, h, "beat", NOW, &err), ERR_PERMISSION);
}
END_TEST

START_TEST(test_meta_auth_window_is_300_seconds_each_way)
{
	char h[META_AUTH_HEADER_MAX];
	struct error err;

	sign(csi, META_ROLE_CSI, META_METHOD_GET, "x", NOW - 300, h);
	ck_assert_int_eq(check(META_METHOD_GET, h, "x", NOW, &err), ERR_OK);
	sign(csi, META_ROLE_CSI, META_METHOD_GET, "x", NOW + 300, h);
	ck_assert_int_eq(check(META_METHOD_GET, h, "x", NOW, &err), ERR_OK);
	/* A signature replayed 301 s after it was made. */
	sign(csi, META_ROLE_CSI, META_METHOD_GET, "x", NOW - 301, h);
	ck_assert_int_eq(check(META_METHOD_GET, h, "x", NOW, &err), ERR_PERMISSION);
	ck_assert_ptr_nonnull(strstr(err.msg, "301 s away from granary-meta's clock"));
	sign(csi, META_ROLE_CSI, META_METHOD_GET, "x", NOW + 301, h);
	ck_assert_int_eq(check(META_METHOD_GET, h, "x", NOW, &err), ERR_PERMISSION);
}
END_TEST

/* Each role signs correctly but calls a method that is not its own. */
START_TEST(test_meta_auth_roles_are_limited_to_their_methods)
{
	static const struct {
		enum meta_role role;
		const char *method;
		const char *want;
	} refused[] = {
		{ META_ROLE_MOUNT, META_METHOD_HEARTBEAT, "Heartbeat: role 'mount' may not call it (worker only)" },
		{ META_ROLE_CSI, META_METHOD_HEARTBEAT, "Heartbeat: role 'csi' may not call it (worker only)" },
		{ META_ROLE_WORKER, META_METHOD_REGISTER, "RegisterDataset: role 'worker' may not call it (csi only)" },
		{ META_ROLE_MOUNT, META_METHOD_REGISTER, "RegisterDataset: role 'mount' may not call it (csi only)" },
		{ META_ROLE_MOUNT, META_METHOD_DELETE, NULL },
		{ META_ROLE_WORKER, META_METHOD_DELETE, NULL },
		{ META_ROLE_MOUNT, META_METHOD_REFRESH, NULL },
		{ META_ROLE_WORKER, META_METHOD_REFRESH, NULL },
		{ META_ROLE_MOUNT, META_METHOD_LIST, NULL },
	};
	struct token *keys[META_ROLES] = { csi, worker, mount };
	char h[META_AUTH_HEADER_MAX];
	struct error err;

	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		sign(keys[refused[i].role], refused[i].role, refused[i].method, "b", NOW, h);
		ck_assert_msg(check(refused[i].method, h, "b", NOW, &err) == ERR_PERMISSION,
			      "%s as %s", refused[i].method, meta_role_name(refused[i].role));
		if (refused[i].want)
			ck_assert_str_eq(err.msg, refused[i].want);
		ck_assert(!meta_role_allows(refused[i].role, refused[i].method));
	}
	ck_assert(meta_role_allows(META_ROLE_WORKER, META_METHOD_SNAPSHOT));
	ck_assert(meta_role_allows(META_ROLE_MOUNT, META_METHOD_WORKERS));
	ck_assert(meta_role_allows(META_ROLE_CSI, META_METHOD_WORKERS));
	ck_assert(!meta_role_allows(META_ROLE_CSI, "/granary.v1.Meta/Unknown"));
}
END_TEST

START_TEST(test_meta_auth_role_without_a_key_is_refused)
{
	char h[META_AUTH_HEADER_MAX];
	struct error err;

	token_free(auth.keys[META_ROLE_WORKER]);
	auth.keys[META_ROLE_WORKER] = NULL;
	sign(worker, META_ROLE_WORKER, META_METHOD_HEARTBEAT, "b", NOW, h);
	ck_assert_int_eq(check(META_METHOD_HEARTBEAT, h, "b", NOW, &err), ERR_PERMISSION);
	ck_assert_ptr_nonnull(strstr(err.msg, "no key for role 'worker'"));
}
END_TEST

static void key_file(char *path, size_t size, const char *secret)
{
	check_write_temp(path, size, secret);
	ck_assert_int_eq(chmod(path, 0600), 0);
}

START_TEST(test_meta_auth_load_needs_keys_or_insecure)
{
	const char *none[META_ROLES] = { NULL, "", NULL };
	const char *files[META_ROLES] = { NULL };
	char path[64];
	struct meta_auth a;
	struct error err;

	ck_assert_int_eq(meta_auth_load(&a, none, false, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "auth.insecure=true"));
	ck_assert_int_eq(meta_auth_load(&a, none, true, &err), ERR_OK);
	ck_assert(a.insecure);
	ck_assert_int_eq(meta_auth_check_at(&a, META_METHOD_REGISTER, NULL, "", 0, NOW, &err),
			 ERR_OK);
	meta_auth_release(&a);

	key_file(path, sizeof(path), WORKER_KEY "\n");
	files[META_ROLE_WORKER] = path;
	ck_assert_int_eq(meta_auth_load(&a, files, true, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "auth.insecure"));
	ck_assert_int_eq(meta_auth_load(&a, files, false, &err), ERR_OK);
	ck_assert(!a.insecure && a.keys[META_ROLE_WORKER] && !a.keys[META_ROLE_CSI]);
	meta_auth_release(&a);

	/* A key file others may read is refused, naming the setting. */
	ck_assert_int_eq(chmod(path, 0644), 0);
	ck_assert_int_eq(meta_auth_load(&a, files, false, &err), ERR_PERMISSION);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'auth.worker_key_file'"));
	ck_assert_ptr_null(strstr(err.msg, WORKER_KEY));
	unlink(path);
}
END_TEST

/* csi's key equal to the cluster token (mount's key) would let every mount
 * pod sign as csi: refused, naming both settings, never the key. */
START_TEST(test_meta_auth_load_refuses_a_key_shared_by_two_roles)
{
	char csi_file[64], worker_file[64], mount_file[64];
	const char *files[META_ROLES] = { NULL };
	struct meta_auth a;
	struct error err;

	key_file(csi_file, sizeof(csi_file), CSI_KEY "\n");
	key_file(worker_file, sizeof(worker_file), WORKER_KEY "\n");
	key_file(mount_file, sizeof(mount_file), CSI_KEY "\n");
	files[META_ROLE_CSI] = csi_file;
	files[META_ROLE_WORKER] = worker_file;
	files[META_ROLE_MOUNT] = mount_file;
	ck_assert_int_eq(meta_auth_load(&a, files, false, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "keys 'auth.csi_key_file' and 'auth.mount_key_file' hold "
				      "the same secret"), "%s", err.msg);
	ck_assert_ptr_null(strstr(err.msg, CSI_KEY));
	ck_assert_ptr_null(a.keys[META_ROLE_CSI]);
	/* the same file for two roles */
	files[META_ROLE_MOUNT] = worker_file;
	ck_assert_int_eq(meta_auth_load(&a, files, false, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "'auth.worker_key_file' and 'auth.mount_key_file'"), "%s",
		      err.msg);
	/* distinct keys load */
	unlink(mount_file);
	key_file(mount_file, sizeof(mount_file), MOUNT_KEY "\n");
	files[META_ROLE_MOUNT] = mount_file;
	ck_assert_int_eq(meta_auth_load(&a, files, false, &err), ERR_OK);
	meta_auth_release(&a);
	unlink(csi_file);
	unlink(worker_file);
	unlink(mount_file);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("meta_auth");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_meta_auth_signature_matches_the_documented_format);
	tcase_add_test(tc, test_meta_auth_signed_calls_pass);
	tcase_add_test(tc, test_meta_auth_unsigned_or_malformed_is_unauthenticated);
	tcase_add_test(tc, test_meta_auth_bad_signature_is_permission_denied);
	tcase_add_test(tc, test_meta_auth_window_is_300_seconds_each_way);
	tcase_add_test(tc, test_meta_auth_roles_are_limited_to_their_methods);
	tcase_add_test(tc, test_meta_auth_role_without_a_key_is_refused);
	tcase_add_test(tc, test_meta_auth_load_needs_keys_or_insecure);
	tcase_add_test(tc, test_meta_auth_load_refuses_a_key_shared_by_two_roles);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
