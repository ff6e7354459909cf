/*
 * test_meta_settings.c - granary-meta settings: tuned defaults, YAML,
 * flags over a file, and the checks the table cannot make.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meta/meta_settings.h"
#include "unit/check_main.h"

/* One rule: set key to value (through the table), then expect the check to
 * refuse with a message holding expect. */
struct bad_case {
	const char *key, *value;
	const char *expect;
};

START_TEST(test_meta_settings_defaults_are_tuned_and_valid)
{
	struct meta_settings s;
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&meta_settings_schema, &s, &err), ERR_OK);
	ck_assert_str_eq(s.listen, "unix:///run/granary/meta.sock");
	ck_assert_str_eq(s.data_dir, "/var/lib/granary/meta");
	ck_assert_uint_eq(s.heartbeat_interval_ms, 5000);
	ck_assert_uint_eq(s.heartbeat_expiry_ms, 15000);
	ck_assert_str_eq(s.store.endpoint, "");
	ck_assert_str_eq(s.store.region, "us-east-1");
	ck_assert_int_eq(s.store.max_attempts, 5);
	ck_assert_str_eq(s.log_level, "info");
	/* No namespace may use the cluster's credentials. */
	ck_assert_str_eq(s.datasets_cluster_credentials, "");
	ck_assert_int_eq(meta_settings_check(&s, &err), ERR_OK);
	config_release(&meta_settings_schema, &s);
}
END_TEST

START_TEST(test_meta_settings_yaml_overrides_nested_keys)
{
	static const char yaml[] =
		"listen: 0.0.0.0:7400\n"
		"data_dir: /data/meta\n"
		"heartbeat:\n"
		"  interval: 2s\n"
		"  expiry: 1m\n"
		"store:\n"
		"  endpoint: https://minio.storage.svc:9000\n"
		"  addressing: path\n"
		"  request_timeout: 10s\n"
		"log:\n"
		"  level: warn\n";
	struct meta_settings s;
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&meta_settings_schema, &s, &err), ERR_OK);
	ck_assert_int_eq(config_load_string(&meta_settings_schema, &s, "meta.yaml", yaml, &err),
			 ERR_OK);
	ck_assert_str_eq(s.listen, "0.0.0.0:7400");
	ck_assert_str_eq(s.data_dir, "/data/meta");
	ck_assert_uint_eq(s.heartbeat_interval_ms, 2000);
	ck_assert_uint_eq(s.heartbeat_expiry_ms, 60000);
	ck_assert_str_eq(s.store.endpoint, "https://minio.storage.svc:9000");
	ck_assert_int_eq(s.store.addressing, STORE_ADDR_PATH);
	ck_assert_uint_eq(s.store.request_timeout_ms, 10000);
	ck_assert_uint_eq(s.store.deadline_ms, 60000); /* untouched keys keep their defaults */
	ck_assert_str_eq(s.log_level, "warn");
	ck_assert_int_eq(meta_settings_check(&s, &err), ERR_OK);
	config_release(&meta_settings_schema, &s);
}
END_TEST

START_TEST(test_meta_settings_check_rejects_naming_the_key)
{
	static const struct bad_case bad[] = {
		{ "listen", "", "key 'listen': required" },
		{ "listen", "meta", "key 'listen': address 'meta'" },
		{ "listen", "unix://meta.sock", "key 'listen'" },
		{ "data_dir", "meta", "key 'data_dir': must be an absolute path" },
		{ "data_dir", "", "key 'data_dir': must be an absolute path" },
		{ "heartbeat.expiry", "5s",
		  "key 'heartbeat.expiry': must be longer than heartbeat.interval" },
		{ "heartbeat.expiry", "1s", "key 'heartbeat.expiry'" },
		{ "heartbeat.interval", "20s", "key 'heartbeat.expiry'" },
		{ "store.endpoint", "minio:9000", "key 'store.endpoint'" },
		{ "log.level", "verbose", "key 'log.level'" },
		{ "auth.csi_key_file", "keys/csi", "key 'auth.csi_key_file': must be an absolute path" },
		{ "auth.worker_key_file", "worker", "key 'auth.worker_key_file': must be an absolute path" },
		{ "auth.mount_key_file", "token", "key 'auth.mount_key_file': must be an absolute path" },
		{ "tls.key_file", "/etc/tls/meta.key", "key 'tls.cert_file': required with 'tls.key_file'" },
		{ "tls.client_ca_file", "/etc/tls/ca.crt", "key 'tls.client_ca_file': needs 'tls.cert_file'" },
		{ "tls.client_ca_file", "ca.crt", "key 'tls.client_ca_file': must be an absolute path" },
		{ "datasets.cluster_credentials", "team-a",
		  "key 'datasets.cluster_credentials': rule 1 ('team-a'): names no source" },
		{ "datasets.cluster_credentials", "granary-system *; team-a s3://shared/x",
		  "key 'datasets.cluster_credentials': rule 2 ('team-a s3://shared/x'): source "
		  "'s3://shared/x' does not end in '/'" },
		{ "datasets.cluster_credentials", "Team-A *",
		  "key 'datasets.cluster_credentials': rule 1 ('Team-A *'): 'Team-A' is neither '*' "
		  "nor a namespace" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct meta_settings s;
		struct error err;

		ck_assert_int_eq(config_apply_defaults(&meta_settings_schema, &s, &err), ERR_OK);
		ck_assert_int_eq(config_set(&meta_settings_schema, &s, bad[i].key, bad[i].value,
					    NULL, &err), ERR_OK);
		ck_assert_msg(meta_settings_check(&s, &err) == ERR_INVALID, "%s='%s' accepted",
			      bad[i].key, bad[i].value);
		ck_assert_msg(strstr(err.msg, bad[i].expect), "%s='%s': '%s' lacks '%s'",
			      bad[i].key, bad[i].value, err.msg, bad[i].expect);
		config_release(&meta_settings_schema, &s);
	}
}
END_TEST

/* In Kubernetes, heartbeats are checked against the workers' service
 * account: meta does not start without it. */
START_TEST(test_meta_settings_kube_needs_the_workers_service_account)
{
	struct meta_settings s;
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&meta_settings_schema, &s, &err), ERR_OK);
	ck_assert_str_eq(s.kube_token_audience, "granary-meta");
	ck_assert_uint_eq(s.kube_timeout_ms, 10000);
	ck_assert_int_eq(config_set(&meta_settings_schema, &s, "kube.timeout", "0s", NULL, &err),
			 ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "kube.timeout"), "%s", err.msg);
	ck_assert_int_eq(config_set(&meta_settings_schema, &s, "kube.enabled", "true", NULL, &err),
			 ERR_OK);
	ck_assert_int_eq(config_set(&meta_settings_schema, &s, "kube.namespace", "gs", NULL, &err),
			 ERR_OK);
	ck_assert_int_eq(config_set(&meta_settings_schema, &s, "kube.identity", "meta-0", NULL,
				    &err),
			 ERR_OK);
	ck_assert_int_eq(meta_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'kube.worker_service_account'"));
	ck_assert_int_eq(config_set(&meta_settings_schema, &s, "kube.worker_service_account",
				    "granary-worker", NULL, &err),
			 ERR_OK);
	ck_assert_int_eq(meta_settings_check(&s, &err), ERR_OK);
	ck_assert_int_eq(config_set(&meta_settings_schema, &s, "kube.credentials_dir", "creds",
				    NULL, &err),
			 ERR_OK);
	ck_assert_int_eq(meta_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'kube.credentials_dir'"));
	config_release(&meta_settings_schema, &s);
}
END_TEST

/* The rules as a YAML block, one a line (the chart's rendering). */
START_TEST(test_meta_settings_cluster_credentials_from_a_yaml_block)
{
	static const char yaml[] =
		"datasets:\n"
		"  cluster_credentials: |\n"
		"    granary-system *\n"
		"    team-a s3://shared-datasets/imagenet/ s3://shared-datasets/coco/\n"
		"    * s3://public-datasets/\n";
	struct meta_settings s;
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&meta_settings_schema, &s, &err), ERR_OK);
	ck_assert_int_eq(config_load_string(&meta_settings_schema, &s, "meta.yaml", yaml, &err),
			 ERR_OK);
	ck_assert_str_eq(s.datasets_cluster_credentials,
			 "granary-system *\n"
			 "team-a s3://shared-datasets/imagenet/ s3://shared-datasets/coco/\n"
			 "* s3://public-datasets/\n");
	ck_assert_msg(meta_settings_check(&s, &err) == ERR_OK, "%s", err.msg);
	config_release(&meta_settings_schema, &s);
}
END_TEST

START_TEST(test_meta_settings_check_rejects_zero_interval_set_by_hand)
{
	struct meta_settings s;
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&meta_settings_schema, &s, &err), ERR_OK);
	s.heartbeat_interval_ms = 0;
	ck_assert_int_eq(meta_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'heartbeat.interval'"));
	config_release(&meta_settings_schema, &s);
}
END_TEST

START_TEST(test_meta_settings_flag_overrides_file)
{
	static const char yaml[] =
		"data_dir: /from/file\nheartbeat:\n  interval: 1s\n  expiry: 3s\n";
	char path[64];
	char *argv[] = { "granary-meta", "--config", path, "--heartbeat.expiry", "10s",
			 "--data_dir=/from/flag", NULL };
	struct meta_settings s;
	struct error err;
	int first = -1;

	check_write_temp(path, sizeof(path), yaml);
	ck_assert_int_eq(config_parse_args(&meta_settings_schema, &s, 6, argv, "0.1.0", &first,
					   &err), CONFIG_ARGS_RUN);
	unlink(path);
	ck_assert_int_eq(first, 6);
	ck_assert_str_eq(s.data_dir, "/from/flag");
	ck_assert_uint_eq(s.heartbeat_expiry_ms, 10000);
	ck_assert_uint_eq(s.heartbeat_interval_ms, 1000); /* from the file */
	ck_assert_str_eq(s.listen, "unix:///run/granary/meta.sock"); /* the default */
	ck_assert_int_eq(meta_settings_check(&s, &err), ERR_OK);
	config_release(&meta_settings_schema, &s);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("meta_settings");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_meta_settings_defaults_are_tuned_and_valid);
	tcase_add_test(tc, test_meta_settings_yaml_overrides_nested_keys);
	tcase_add_test(tc, test_meta_settings_check_rejects_naming_the_key);
	tcase_add_test(tc, test_meta_settings_cluster_credentials_from_a_yaml_block);
	tcase_add_test(tc, test_meta_settings_check_rejects_zero_interval_set_by_hand);
	tcase_add_test(tc, test_meta_settings_kube_needs_the_workers_service_account);
	tcase_add_test(tc, test_meta_settings_flag_overrides_file);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
