/*
 * test_csi_settings.c - granary-csi settings: defaults, YAML, flags over a
 * file, and the checks the table cannot make.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "csi/csi_settings.h"
#include "unit/check_main.h"

/* One rule: set up to two keys through the table, then expect the check to
 * refuse with a message holding expect (NULL: expect it to pass). */
struct bad_case {
	const char *key, *value;
	const char *key2, *value2;
	const char *expect;
};

static void set(struct csi_settings *s, const char *key, const char *value)
{
	struct error err;

	ck_assert_msg(config_set(&csi_settings_schema, s, key, value, NULL, &err) == ERR_OK,
		      "%s", err.msg);
}

START_TEST(test_csi_settings_defaults_are_valid)
{
	struct csi_settings s;
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&csi_settings_schema, &s, &err), ERR_OK);
	ck_assert_str_eq(s.endpoint, "unix:///csi/csi.sock");
	ck_assert_int_eq(s.mode, CSI_MODE_ALL);
	ck_assert_str_eq(s.node_id, "");
	ck_assert_str_eq(s.meta_address, "unix:///run/granary/meta.sock");
	ck_assert_str_eq(s.state_dir, "/var/lib/granary/csi");
	ck_assert_str_eq(s.fuse_binary, "/usr/bin/granary-fuse");
	ck_assert_uint_eq(s.fuse_max_read, 1u << 20);
	ck_assert_uint_eq(s.fuse_read_ahead, 1u << 20);
	ck_assert_str_eq(s.log_level, "info");
	/* Registration and the health endpoint are off unless asked for. */
	ck_assert_str_eq(s.registration_socket, "");
	ck_assert_str_eq(s.kubelet_endpoint, "");
	ck_assert_str_eq(s.health_address, "");
	ck_assert(!csi_settings_registers(&s));
	ck_assert(csi_settings_is_controller(&s));
	ck_assert(csi_settings_is_node(&s));
	ck_assert_int_eq(csi_settings_check(&s, &err), ERR_OK);
	config_release(&csi_settings_schema, &s);
}
END_TEST

START_TEST(test_csi_settings_yaml_overrides_nested_keys)
{
	static const char yaml[] =
		"endpoint: unix:///var/lib/kubelet/plugins/granary.csi/csi.sock\n"
		"mode: node\n"
		"node_id: gpu-node-3.cluster.local\n"
		"meta:\n"
		"  address: granary-meta.granary.svc:7400\n"
		"state_dir: /var/lib/kubelet/plugins/granary.csi/state\n"
		"fuse_binary: /opt/granary/bin/granary-fuse\n"
		"log:\n"
		"  level: debug\n";
	struct csi_settings s;
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&csi_settings_schema, &s, &err), ERR_OK);
	ck_assert_int_eq(config_load_string(&csi_settings_schema, &s, "csi.yaml", yaml, &err),
			 ERR_OK);
	ck_assert_str_eq(s.endpoint, "unix:///var/lib/kubelet/plugins/granary.csi/csi.sock");
	ck_assert_int_eq(s.mode, CSI_MODE_NODE);
	ck_assert(!csi_settings_is_controller(&s));
	ck_assert(csi_settings_is_node(&s));
	ck_assert_str_eq(s.node_id, "gpu-node-3.cluster.local");
	ck_assert_str_eq(s.meta_address, "granary-meta.granary.svc:7400");
	ck_assert_str_eq(s.state_dir, "/var/lib/kubelet/plugins/granary.csi/state");
	ck_assert_str_eq(s.fuse_binary, "/opt/granary/bin/granary-fuse");
	ck_assert_str_eq(s.log_level, "debug");
	ck_assert_int_eq(csi_settings_check(&s, &err), ERR_OK);
	config_release(&csi_settings_schema, &s);
}
END_TEST

START_TEST(test_csi_settings_check_rejects_naming_the_key)
{
	static const struct bad_case bad[] = {
		{ "endpoint", "", NULL, NULL, "key 'endpoint': required" },
		{ "endpoint", "unix://csi.sock", NULL, NULL, "key 'endpoint'" },
		{ "endpoint", "csi:99999", NULL, NULL, "key 'endpoint'" },
		{ "node_id", "node/1", NULL, NULL, "key 'node_id'" },
		{ "meta.address", "meta", NULL, NULL, "key 'meta.address'" },
		{ "meta.key_file", "csi.key", NULL, NULL,
		  "key 'meta.key_file': must be an absolute path" },
		{ "state_dir", "state", NULL, NULL, "key 'state_dir': must be an absolute path" },
		{ "fuse_binary", "granary-fuse", NULL, NULL,
		  "key 'fuse_binary': must be an absolute path" },
		{ "fuse_binary", "granary-fuse", "mode", "node", "key 'fuse_binary'" },
		/* The controller launches no FUSE daemon: its binary is not checked. */
		{ "fuse_binary", "granary-fuse", "mode", "controller", NULL },
		{ "log.level", "chatty", NULL, NULL, "key 'log.level'" },
		{ "meta.tls.cert_file", "/etc/tls/c.crt", "meta.tls.key_file", "/etc/tls/c.key",
		  "key 'meta.tls.cert_file': needs 'meta.tls.ca_file'" },
		{ "meta.tls.ca_file", "/etc/tls/ca.crt", "meta.tls.server_name", "granary-meta.ns.svc",
		  NULL },
		{ "fuse_max_read", "2MiB", NULL, NULL,
		  "key 'fuse_max_read': must be a multiple of 4KiB from 4KiB to 1MiB" },
		{ "fuse_max_read", "128KiB", "fuse_read_ahead", "0", NULL },
		{ "fuse_read_ahead", "1000", NULL, NULL, "key 'fuse_read_ahead': must be a multiple of 4KiB" },
		/* Kubelet registration: the node role only, two absolute paths. */
		{ "registration_socket", "/registration/csi.granary.io-reg.sock", "kubelet_endpoint",
		  "/var/lib/kubelet/plugins/csi.granary.io/csi.sock", NULL },
		{ "registration_socket", "/registration/csi.granary.io-reg.sock", NULL, NULL,
		  "key 'kubelet_endpoint': required with registration_socket" },
		{ "registration_socket", "/registration/csi.granary.io-reg.sock", "mode", "controller",
		  "key 'registration_socket': only the node plugin registers" },
		{ "registration_socket", "csi.granary.io-reg.sock", "kubelet_endpoint", "/k/csi.sock",
		  "key 'registration_socket': must be an absolute path" },
		{ "registration_socket", "unix:///registration/reg.sock", "kubelet_endpoint",
		  "/k/csi.sock", "key 'registration_socket': must be an absolute path" },
		{ "registration_socket", "/csi/csi.sock", "kubelet_endpoint", "/k/csi.sock",
		  "key 'registration_socket': must not be the endpoint's socket" },
		{ "registration_socket",
		  "/registration/a-socket-path-far-too-long-for-sun-path-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock",
		  "kubelet_endpoint", "/k/csi.sock", "key 'registration_socket': a socket path is at most 97 bytes" },
		{ "kubelet_endpoint", "unix:///var/lib/kubelet/plugins/csi.granary.io/csi.sock", NULL,
		  NULL, "key 'kubelet_endpoint': must be an absolute path" },
		{ "kubelet_endpoint", "csi.sock", "registration_socket", "/registration/reg.sock",
		  "key 'kubelet_endpoint': must be an absolute path" },
		/* The health endpoint: any listen address, in every mode. */
		{ "health_address", ":9808", NULL, NULL, NULL },
		{ "health_address", "0.0.0.0:9808", "mode", "controller", NULL },
		{ "health_address", "unix:///run/granary/csi-health.sock", NULL, NULL, NULL },
		{ "health_address", "9808", NULL, NULL, "key 'health_address'" },
		{ "health_address", ":99999", NULL, NULL, "key 'health_address': address ':99999': port" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct csi_settings s;
		struct error err;
		enum error_code rc;

		ck_assert_int_eq(config_apply_defaults(&csi_settings_schema, &s, &err), ERR_OK);
		set(&s, bad[i].key, bad[i].value);
		if (bad[i].key2)
			set(&s, bad[i].key2, bad[i].value2);
		rc = csi_settings_check(&s, &err);
		if (!bad[i].expect) {
			ck_assert_msg(rc == ERR_OK, "%s='%s': %s", bad[i].key, bad[i].value,
				      err.msg);
		} else {
			ck_assert_msg(rc == ERR_INVALID, "%s='%s' accepted", bad[i].key,
				      bad[i].value);
			ck_assert_msg(strstr(err.msg, bad[i].expect), "%s='%s': '%s' lacks '%s'",
				      bad[i].key, bad[i].value, err.msg, bad[i].expect);
		}
		config_release(&csi_settings_schema, &s);
	}
}
END_TEST

START_TEST(test_csi_settings_mode_is_an_enum)
{
	struct csi_settings s;
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&csi_settings_schema, &s, &err), ERR_OK);
	ck_assert_int_eq(config_set(&csi_settings_schema, &s, "mode", "both", NULL, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'mode'"));
	s.mode = 7;
	ck_assert_int_eq(csi_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'mode'"));
	config_release(&csi_settings_schema, &s);
}
END_TEST

START_TEST(test_csi_settings_flag_overrides_file)
{
	static const char yaml[] = "mode: controller\nnode_id: from-file\nstate_dir: /from/file\n";
	char path[64];
	char *argv[] = { "granary-csi", "--mode=node", "--config", path, "--node_id", "from-flag",
			 NULL };
	struct csi_settings s;
	struct error err;
	int first = -1;

	check_write_temp(path, sizeof(path), yaml);
	ck_assert_int_eq(config_parse_args(&csi_settings_schema, &s, 6, argv, "0.1.0", &first,
					   &err), CONFIG_ARGS_RUN);
	unlink(path);
	ck_assert_int_eq(first, 6);
	ck_assert_int_eq(s.mode, CSI_MODE_NODE);
	ck_assert_str_eq(s.node_id, "from-flag");
	ck_assert_str_eq(s.state_dir, "/from/file");
	ck_assert_str_eq(s.endpoint, "unix:///csi/csi.sock"); /* the default */
	ck_assert_int_eq(csi_settings_check(&s, &err), ERR_OK);
	config_release(&csi_settings_schema, &s);
}
END_TEST

START_TEST(test_csi_settings_allowed_roots_split_and_checked)
{
	struct csi_settings s;
	struct error err;
	char *roots[CSI_SETTINGS_MAX_ROOTS];
	size_t n = 0;

	ck_assert_int_eq(config_apply_defaults(&csi_settings_schema, &s, &err), ERR_OK);
	ck_assert_str_eq(s.allowed_roots, "/var/lib/kubelet");
	ck_assert_str_eq(s.fuse_config, "");
	ck_assert_uint_eq(s.stage_timeout_ms, 120000);
	set(&s, "allowed_roots", " /var/lib/kubelet/ , /tmp/csi,,/");
	ck_assert_int_eq(csi_settings_roots(&s, roots, CSI_SETTINGS_MAX_ROOTS, &n, &err), ERR_OK);
	ck_assert_uint_eq(n, 3);
	ck_assert_str_eq(roots[0], "/var/lib/kubelet");
	ck_assert_str_eq(roots[1], "/tmp/csi");
	ck_assert_str_eq(roots[2], "/");
	csi_settings_roots_free(roots, n);
	set(&s, "allowed_roots", "/ok,relative");
	ck_assert_int_eq(csi_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'allowed_roots': 'relative'"));
	set(&s, "allowed_roots", " , ");
	ck_assert_int_eq(csi_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'allowed_roots': required"));
	/* The controller mounts nothing: its roots are not checked. */
	set(&s, "mode", "controller");
	ck_assert_int_eq(csi_settings_check(&s, &err), ERR_OK);
	set(&s, "fuse_config", "fuse.yaml");
	ck_assert_int_eq(csi_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'fuse_config'"));
	config_release(&csi_settings_schema, &s);
}
END_TEST

START_TEST(test_csi_settings_allowed_file_roots_empty_by_default)
{
	struct csi_settings s;
	struct error err;
	char *roots[CSI_SETTINGS_MAX_ROOTS];
	size_t n = 1;

	ck_assert_int_eq(config_apply_defaults(&csi_settings_schema, &s, &err), ERR_OK);
	ck_assert_str_eq(s.allowed_file_roots, "");
	ck_assert_int_eq(csi_settings_file_roots(&s, roots, CSI_SETTINGS_MAX_ROOTS, &n, &err), ERR_OK);
	ck_assert_uint_eq(n, 0);
	set(&s, "allowed_file_roots", "/srv/datasets/, /data");
	ck_assert_int_eq(csi_settings_file_roots(&s, roots, CSI_SETTINGS_MAX_ROOTS, &n, &err), ERR_OK);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(roots[0], "/srv/datasets");
	ck_assert_str_eq(roots[1], "/data");
	csi_settings_roots_free(roots, n);
	set(&s, "allowed_file_roots", "datasets");
	ck_assert_int_eq(csi_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'allowed_file_roots': 'datasets'"));
	config_release(&csi_settings_schema, &s);
}
END_TEST

START_TEST(test_csi_settings_registration_and_health_from_yaml)
{
	static const char yaml[] =
		"mode: node\n"
		"registration_socket: /registration/csi.granary.io-reg.sock\n"
		"kubelet_endpoint: /var/lib/kubelet/plugins/csi.granary.io/csi.sock\n"
		"health_address: \":9808\"\n";
	struct csi_settings s;
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&csi_settings_schema, &s, &err), ERR_OK);
	ck_assert_int_eq(config_load_string(&csi_settings_schema, &s, "csi.yaml", yaml, &err),
			 ERR_OK);
	ck_assert_str_eq(s.registration_socket, "/registration/csi.granary.io-reg.sock");
	ck_assert_str_eq(s.kubelet_endpoint, "/var/lib/kubelet/plugins/csi.granary.io/csi.sock");
	ck_assert_str_eq(s.health_address, ":9808");
	ck_assert(csi_settings_registers(&s));
	ck_assert_msg(csi_settings_check(&s, &err) == ERR_OK, "%s", err.msg);
	config_release(&csi_settings_schema, &s);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("csi_settings");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_csi_settings_defaults_are_valid);
	tcase_add_test(tc, test_csi_settings_yaml_overrides_nested_keys);
	tcase_add_test(tc, test_csi_settings_check_rejects_naming_the_key);
	tcase_add_test(tc, test_csi_settings_mode_is_an_enum);
	tcase_add_test(tc, test_csi_settings_flag_overrides_file);
	tcase_add_test(tc, test_csi_settings_allowed_roots_split_and_checked);
	tcase_add_test(tc, test_csi_settings_allowed_file_roots_empty_by_default);
	tcase_add_test(tc, test_csi_settings_registration_and_health_from_yaml);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
