/*
 * test_worker_settings.c - granary-worker settings: tuned defaults, YAML,
 * flags over a file, and the checks the table cannot make.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache/worker_settings.h"
#include "common/cpu.h"
#include "unit/check_main.h"

/* One rule: set these keys (through the table), then expect the check to
 * refuse with a message holding expect. */
struct bad_case {
	const char *key, *value;
	const char *expect;
};

START_TEST(test_worker_settings_defaults_are_tuned_and_valid)
{
	struct worker_settings s;
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&worker_settings_schema, &s, &err), ERR_OK);
	ck_assert_str_eq(s.listen, "0.0.0.0:7480");
	ck_assert_str_eq(s.node_id, "");
	ck_assert_str_eq(s.meta_address, ""); /* standalone unless meta is named */
	ck_assert_str_eq(s.advertise_address, "");
	ck_assert_str_eq(s.cache_dir, "/var/cache/granary");
	ck_assert_uint_eq(s.cache_capacity, 10ull << 30);
	ck_assert_uint_eq(s.cache_block_size, 4ull << 20);
	ck_assert_int_eq(s.cache_policy, WORKER_CACHE_SCAN_RESISTANT);
	ck_assert_str_eq(s.token_file, "");
	ck_assert_int_eq(s.threads, 0);
	ck_assert_int_eq(s.threads_min, 64);
	ck_assert_int_eq(s.fetch_max_inflight, 128);
	ck_assert_int_eq(s.fetch_readahead_max, 16);
	ck_assert_int_eq(s.preload_parallelism, 16);
	ck_assert_int_eq(s.http_max_connections, 1024);
	ck_assert_uint_eq(s.http_idle_timeout_ms, 120000);
	ck_assert_uint_eq(s.http_shutdown_grace_ms, 10000);
	ck_assert_str_eq(s.store.region, "us-east-1");
	ck_assert_int_eq(s.store.max_connections, 0); /* the worker's fetches at once */
	ck_assert_str_eq(s.log_level, "info");
	ck_assert_int_eq(worker_settings_check(&s, &err), ERR_OK);
	config_release(&worker_settings_schema, &s);
}
END_TEST

START_TEST(test_worker_settings_yaml_overrides_nested_keys)
{
	static const char yaml[] =
		"listen: 127.0.0.1:9000\n"
		"node_id: gpu-node-7\n"
		"meta:\n"
		"  address: meta.granary.svc:7400\n"
		"cache:\n"
		"  dir: /mnt/nvme/granary\n"
		"  capacity: 500GiB\n"
		"  block_size: 8MiB\n"
		"  policy: lru\n"
		"fetch:\n"
		"  max_inflight: 256\n"
		"  readahead_max: 4\n"
		"preload:\n"
		"  parallelism: 32\n"
		"http:\n"
		"  max_connections: 256\n"
		"  idle_timeout: 30s\n"
		"  shutdown_grace: 2s\n"
		"store:\n"
		"  endpoint: http://127.0.0.1:7070\n"
		"  max_attempts: 3\n"
		"log:\n"
		"  level: debug\n";
	struct worker_settings s;
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&worker_settings_schema, &s, &err), ERR_OK);
	ck_assert_int_eq(config_load_string(&worker_settings_schema, &s, "worker.yaml", yaml, &err),
			 ERR_OK);
	ck_assert_str_eq(s.listen, "127.0.0.1:9000");
	ck_assert_str_eq(s.node_id, "gpu-node-7");
	ck_assert_str_eq(s.meta_address, "meta.granary.svc:7400");
	ck_assert_str_eq(s.cache_dir, "/mnt/nvme/granary");
	ck_assert_uint_eq(s.cache_capacity, 500ull << 30);
	ck_assert_uint_eq(s.cache_block_size, 8ull << 20);
	ck_assert_int_eq(s.cache_policy, WORKER_CACHE_LRU);
	ck_assert_int_eq(s.fetch_max_inflight, 256);
	ck_assert_int_eq(s.fetch_readahead_max, 4);
	ck_assert_int_eq(s.preload_parallelism, 32);
	ck_assert_int_eq(s.http_max_connections, 256);
	ck_assert_uint_eq(s.http_idle_timeout_ms, 30000);
	ck_assert_uint_eq(s.http_shutdown_grace_ms, 2000);
	ck_assert_str_eq(s.store.endpoint, "http://127.0.0.1:7070");
	ck_assert_int_eq(s.store.max_attempts, 3);
	ck_assert_str_eq(s.log_level, "debug");
	ck_assert_int_eq(s.threads, 0); /* untouched keys keep their defaults */
	ck_assert_int_eq(worker_settings_check(&s, &err), ERR_OK);
	config_release(&worker_settings_schema, &s);
}
END_TEST

START_TEST(test_worker_settings_check_rejects_naming_the_key)
{
	static const struct bad_case bad[] = {
		{ "listen", "", "key 'listen': required" },
		{ "listen", "localhost", "key 'listen': address 'localhost'" },
		{ "listen", "unix://run/w.sock", "key 'listen'" },
		{ "node_id", "node 1", "key 'node_id'" },
		{ "meta.address", "meta:0", "key 'meta.address'" },
		{ "advertise_address", "node-7", "key 'advertise_address'" },
		{ "advertise_address", "0.0.0.0:7480", "key 'advertise_address': must be host:port" },
		{ "advertise_address", "unix:///run/w.sock", "key 'advertise_address'" },
		{ "cache.dir", "cache", "key 'cache.dir': must be an absolute path" },
		{ "meta.key_file", "worker.key", "key 'meta.key_file': must be an absolute path" },
		{ "meta.identity_token_file", "token",
		  "key 'meta.identity_token_file': must be an absolute path" },
		{ "cache.dir", "", "key 'cache.dir': must be an absolute path" },
		{ "cache.block_size", "3MiB", "key 'cache.block_size': must be a power of two" },
		{ "cache.block_size", "32KiB", "key 'cache.block_size'" },
		{ "cache.block_size", "128MiB", "key 'cache.block_size'" },
		{ "cache.capacity", "1MiB", "key 'cache.capacity'" },
		{ "token_file", "token", "key 'token_file': must be an absolute path" },
		{ "store.endpoint", "ftp://s3.local", "key 'store.endpoint'" },
		{ "log.level", "loud", "key 'log.level'" },
		{ "tls.cert_file", "/etc/tls/w.crt", "key 'tls.key_file': required with 'tls.cert_file'" },
		{ "tls.cert_file", "w.crt", "key 'tls.cert_file': must be an absolute path" },
		{ "meta.tls.server_name", "meta.ns.svc", "key 'meta.tls.server_name': needs 'meta.tls.ca_file'" },
		{ "meta.tls.ca_file", "ca.crt", "key 'meta.tls.ca_file': must be an absolute path" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct worker_settings s;
		struct error err;

		ck_assert_int_eq(config_apply_defaults(&worker_settings_schema, &s, &err), ERR_OK);
		ck_assert_int_eq(config_set(&worker_settings_schema, &s, bad[i].key, bad[i].value,
					    NULL, &err), ERR_OK);
		ck_assert_msg(worker_settings_check(&s, &err) == ERR_INVALID, "%s='%s' accepted",
			      bad[i].key, bad[i].value);
		ck_assert_msg(strstr(err.msg, bad[i].expect), "%s='%s': '%s' lacks '%s'",
			      bad[i].key, bad[i].value, err.msg, bad[i].expect);
		config_release(&worker_settings_schema, &s);
	}
}
END_TEST

/* Values the table's bounds stop before the check sees them are still
 * refused when a caller fills the struct by hand. */
START_TEST(test_worker_settings_check_rejects_out_of_range_numbers)
{
	struct worker_settings s;
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&worker_settings_schema, &s, &err), ERR_OK);
	s.threads = -1;
	ck_assert_int_eq(worker_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'threads'"));
	s.threads = 0;
	s.threads_min = 0;
	ck_assert_int_eq(worker_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'threads_min'"));
	s.threads_min = 64;
	s.fetch_max_inflight = 0;
	ck_assert_int_eq(worker_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'fetch.max_inflight'"));
	ck_assert_int_eq(config_set(&worker_settings_schema, &s, "threads", "-2", NULL, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'threads'"));
	s.fetch_max_inflight = 64;
	s.fetch_readahead_max = 257;
	ck_assert_int_eq(worker_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'fetch.readahead_max'"));
	s.fetch_readahead_max = 0;
	s.preload_parallelism = 0;
	ck_assert_int_eq(worker_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'preload.parallelism'"));
	s.preload_parallelism = 1;
	s.http_max_connections = 0;
	ck_assert_int_eq(worker_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'http.max_connections'"));
	s.http_max_connections = 1;
	ck_assert_int_eq(worker_settings_check(&s, &err), ERR_OK);
	ck_assert_int_eq(config_set(&worker_settings_schema, &s, "http.idle_timeout", "10ms", NULL,
				    &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'http.idle_timeout'"));
	ck_assert_int_eq(config_set(&worker_settings_schema, &s, "http.shutdown_grace", "0s", NULL,
				    &err), ERR_OK);
	config_release(&worker_settings_schema, &s);
}
END_TEST

START_TEST(test_worker_settings_block_size_bounds_and_capacity_of_one_block_pass)
{
	static const char *const good[] = { "64KiB", "1MiB", "64MiB" };
	struct worker_settings s;
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&worker_settings_schema, &s, &err), ERR_OK);
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		ck_assert_int_eq(config_set(&worker_settings_schema, &s, "cache.block_size",
					    good[i], NULL, &err), ERR_OK);
		ck_assert_int_eq(config_set(&worker_settings_schema, &s, "cache.capacity", good[i],
					    NULL, &err), ERR_OK);
		ck_assert_msg(worker_settings_check(&s, &err) == ERR_OK, "%s: %s", good[i],
			      err.msg);
	}
	config_release(&worker_settings_schema, &s);
}
END_TEST

START_TEST(test_worker_settings_threads_default_to_128_or_four_per_cpu)
{
	struct worker_settings s;
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&worker_settings_schema, &s, &err), ERR_OK);
	ck_assert_int_eq(worker_settings_threads(&s),
			 4 * cpu_available() > 128 ? 4 * cpu_available() : 128);
	s.threads = 3;
	ck_assert_int_eq(worker_settings_threads(&s), 3);
	config_release(&worker_settings_schema, &s);
}
END_TEST

START_TEST(test_worker_settings_store_keeps_a_connection_per_fetch_at_once)
{
	struct worker_settings s;
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&worker_settings_schema, &s, &err), ERR_OK);
	s.threads = 100;
	s.fetch_max_inflight = 20;
	ck_assert_uint_eq(worker_settings_store_connections(&s), 120);
	s.store.max_connections = 8; /* set: kept as it is */
	ck_assert_uint_eq(worker_settings_store_connections(&s), 8);
	config_release(&worker_settings_schema, &s);
}
END_TEST

START_TEST(test_worker_settings_flag_overrides_file)
{
	static const char yaml[] =
		"cache:\n  dir: /from/file\n  block_size: 1MiB\nlisten: 10.0.0.1:7000\n";
	char path[64];
	char *argv[] = { "granary-worker", "--cache.dir", "/from/flag", "--config", path,
			 "--listen=10.0.0.2:7001", NULL };
	struct worker_settings s;
	struct error err;
	int first = -1;

	check_write_temp(path, sizeof(path), yaml);
	ck_assert_int_eq(config_parse_args(&worker_settings_schema, &s, 6, argv, "0.1.0", &first,
					   &err), CONFIG_ARGS_RUN);
	unlink(path);
	ck_assert_int_eq(first, 6);
	ck_assert_str_eq(s.cache_dir, "/from/flag");
	ck_assert_str_eq(s.listen, "10.0.0.2:7001");
	ck_assert_uint_eq(s.cache_block_size, 1ull << 20); /* from the file */
	ck_assert_uint_eq(s.cache_capacity, 10ull << 30);  /* the default */
	ck_assert_int_eq(worker_settings_check(&s, &err), ERR_OK);
	config_release(&worker_settings_schema, &s);
}
END_TEST

START_TEST(test_worker_settings_unix_listen_with_meta_needs_advertise_address)
{
	struct worker_settings s;
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&worker_settings_schema, &s, &err), ERR_OK);
	ck_assert_int_eq(config_set(&worker_settings_schema, &s, "listen", "unix:///run/w.sock",
				    NULL, &err), ERR_OK);
	ck_assert_int_eq(worker_settings_check(&s, &err), ERR_OK); /* standalone: fine */
	ck_assert_int_eq(config_set(&worker_settings_schema, &s, "meta.address",
				    "meta.granary:7400", NULL, &err), ERR_OK);
	ck_assert_int_eq(worker_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'advertise_address': required"));
	ck_assert_int_eq(config_set(&worker_settings_schema, &s, "advertise_address",
				    "10.1.2.3:7480", NULL, &err), ERR_OK);
	ck_assert_int_eq(worker_settings_check(&s, &err), ERR_OK);
	config_release(&worker_settings_schema, &s);
}
END_TEST

/* Derivation of the advertised address: explicit wins; a concrete listen
 * host is kept; a wildcard becomes the hostname; IPv6 keeps its brackets. */
START_TEST(test_worker_settings_advertise_is_derived_from_listen)
{
	static const struct {
		const char *listen, *advertise, *hostname, *want;
	} cases[] = {
		{ "0.0.0.0:7480", "", "gpu-node-7", "gpu-node-7:7480" },
		{ "[::]:7001", "", "gpu-node-7", "gpu-node-7:7001" },
		{ "127.0.0.1:9000", "", "gpu-node-7", "127.0.0.1:9000" },
		{ "[::1]:9000", "", "h", "[::1]:9000" },
		{ "0.0.0.0:7480", "10.0.0.5:7480", "h", "10.0.0.5:7480" },
		{ "unix:///run/w.sock", "10.0.0.5:7480", "h", "10.0.0.5:7480" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct worker_settings s;
		struct error err;
		char out[300];

		ck_assert_int_eq(config_apply_defaults(&worker_settings_schema, &s, &err), ERR_OK);
		ck_assert_int_eq(config_set(&worker_settings_schema, &s, "listen", cases[i].listen,
					    NULL, &err), ERR_OK);
		ck_assert_int_eq(config_set(&worker_settings_schema, &s, "advertise_address",
					    cases[i].advertise, NULL, &err), ERR_OK);
		ck_assert_msg(worker_settings_advertise(&s, cases[i].hostname, out, sizeof(out),
							&err) == ERR_OK,
			      "%s: %s", cases[i].listen, err.msg);
		ck_assert_str_eq(out, cases[i].want);
		config_release(&worker_settings_schema, &s);
	}
}
END_TEST

START_TEST(test_worker_settings_advertise_and_id_refuse_what_peers_cannot_use)
{
	struct worker_settings s;
	struct error err;
	char out[300], tiny[8];

	ck_assert_int_eq(config_apply_defaults(&worker_settings_schema, &s, &err), ERR_OK);
	/* a wildcard listen and no hostname: nothing to announce */
	ck_assert_int_eq(worker_settings_advertise(&s, "", out, sizeof(out), &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'advertise_address'"));
	ck_assert_int_eq(worker_settings_advertise(&s, "a-rather-long-host", tiny, sizeof(tiny),
						   &err), ERR_INVALID);
	ck_assert_int_eq(config_set(&worker_settings_schema, &s, "listen", "unix:///run/w.sock",
				    NULL, &err), ERR_OK);
	ck_assert_int_eq(worker_settings_advertise(&s, "h", out, sizeof(out), &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "unix socket"));

	/* id: node_id, else the hostname */
	ck_assert_int_eq(worker_settings_worker_id(&s, "host-1", out, sizeof(out), &err), ERR_OK);
	ck_assert_str_eq(out, "host-1");
	ck_assert_int_eq(worker_settings_worker_id(&s, "", out, sizeof(out), &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'node_id'"));
	ck_assert_int_eq(worker_settings_worker_id(&s, "bad host", out, sizeof(out), &err),
			 ERR_INVALID);
	ck_assert_int_eq(config_set(&worker_settings_schema, &s, "node_id", "gpu-node-7", NULL,
				    &err), ERR_OK);
	ck_assert_int_eq(worker_settings_worker_id(&s, "host-1", out, sizeof(out), &err), ERR_OK);
	ck_assert_str_eq(out, "gpu-node-7");
	config_release(&worker_settings_schema, &s);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("worker_settings");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_worker_settings_defaults_are_tuned_and_valid);
	tcase_add_test(tc, test_worker_settings_yaml_overrides_nested_keys);
	tcase_add_test(tc, test_worker_settings_check_rejects_naming_the_key);
	tcase_add_test(tc, test_worker_settings_check_rejects_out_of_range_numbers);
	tcase_add_test(tc, test_worker_settings_block_size_bounds_and_capacity_of_one_block_pass);
	tcase_add_test(tc, test_worker_settings_threads_default_to_128_or_four_per_cpu);
	tcase_add_test(tc, test_worker_settings_store_keeps_a_connection_per_fetch_at_once);
	tcase_add_test(tc, test_worker_settings_flag_overrides_file);
	tcase_add_test(tc, test_worker_settings_unix_listen_with_meta_needs_advertise_address);
	tcase_add_test(tc, test_worker_settings_advertise_is_derived_from_listen);
	tcase_add_test(tc, test_worker_settings_advertise_and_id_refuse_what_peers_cannot_use);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
