/*
 * test_mount_settings.c - granary-fuse settings: tuned defaults, YAML,
 * flags over a file, and the checks the table cannot make.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cpu.h"
#include "fuse/mount_settings.h"
#include "unit/check_main.h"

/* One rule: from a valid mount (defaults plus a mountpoint and a dataset),
 * set up to two keys through the table, then expect the check to refuse
 * with a message holding expect. */
struct bad_case {
	const char *key, *value;
	const char *key2, *value2;
	const char *expect;
};

static void set(struct mount_settings *s, const char *key, const char *value)
{
	struct error err;

	ck_assert_msg(config_set(&mount_settings_schema, s, key, value, NULL, &err) == ERR_OK,
		      "%s", err.msg);
}

/* Defaults plus the two keys every mount needs. */
static void valid_mount(struct mount_settings *s)
{
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&mount_settings_schema, s, &err), ERR_OK);
	set(s, "mountpoint", "/mnt/imagenet");
	set(s, "dataset", "imagenet");
}

START_TEST(test_mount_settings_defaults_are_tuned_and_valid)
{
	struct mount_settings s;
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&mount_settings_schema, &s, &err), ERR_OK);
	ck_assert_str_eq(s.mountpoint, "");
	ck_assert_str_eq(s.dataset, "");
	ck_assert_str_eq(s.source, "");
	ck_assert_str_eq(s.meta_address, "unix:///run/granary/meta.sock");
	ck_assert_str_eq(s.cache_dir, "/var/cache/granary");
	ck_assert_uint_eq(s.cache_capacity, 10ull << 30);
	ck_assert_uint_eq(s.cache_block_size, 4ull << 20);
	ck_assert_uint_eq(s.entry_timeout_ms, 3600000);
	ck_assert_uint_eq(s.attr_timeout_ms, 3600000);
	ck_assert(s.keep_cache);
	ck_assert_uint_eq(s.max_read, 1u << 20);
	ck_assert_int_eq(s.max_background, 64);
	ck_assert_int_eq(s.max_idle_threads, 0);
	ck_assert(s.clone_fd);
	ck_assert(!s.splice);
	ck_assert_uint_eq(s.read_ahead, 1u << 20);
	ck_assert_int_eq(s.prefetch_blocks, 4);
	ck_assert_int_eq(s.prefetch_files, 64);
	ck_assert_int_eq(s.prefetch_files_max, 256);
	ck_assert_uint_eq(s.worker_timeout_ms, 500);
	ck_assert_str_eq(s.store.region, "us-east-1");
	ck_assert_int_eq(s.store.max_connections, 0); /* the mount's fetches at once */
	ck_assert_str_eq(s.log_level, "info");
	/* The mountpoint has no sensible default: the bare defaults ask for it. */
	ck_assert_int_eq(mount_settings_check(&s, &err), ERR_INVALID);
	ck_assert_str_eq(err.msg, "key 'mountpoint': required");
	config_release(&mount_settings_schema, &s);

	valid_mount(&s);
	ck_assert_int_eq(mount_settings_check(&s, &err), ERR_OK);
	config_release(&mount_settings_schema, &s);
}
END_TEST

START_TEST(test_mount_settings_yaml_overrides_nested_keys)
{
	static const char yaml[] =
		"mountpoint: /mnt/coco\n"
		"source: s3://datasets/coco/train2017/\n"
		"cache:\n"
		"  dir: /dev/shm/granary\n"
		"  capacity: 64GiB\n"
		"  block_size: 16MiB\n"
		"entry_timeout: 10m\n"
		"keep_cache: false\n"
		"max_read: 512KiB\n"
		"max_idle_threads: 32\n"
		"splice: on\n"
		"read_ahead: 8MiB\n"
		"prefetch:\n"
		"  blocks: 16\n"
		"  files_max: 32\n"
		"worker:\n"
		"  timeout: 250ms\n"
		"store:\n"
		"  endpoint: http://127.0.0.1:7070\n"
		"  region: eu-west-1\n";
	struct mount_settings s;
	struct error err;

	ck_assert_int_eq(config_apply_defaults(&mount_settings_schema, &s, &err), ERR_OK);
	ck_assert_int_eq(config_load_string(&mount_settings_schema, &s, "fuse.yaml", yaml, &err),
			 ERR_OK);
	ck_assert_str_eq(s.mountpoint, "/mnt/coco");
	ck_assert_str_eq(s.source, "s3://datasets/coco/train2017/");
	ck_assert_str_eq(s.cache_dir, "/dev/shm/granary");
	ck_assert_uint_eq(s.cache_capacity, 64ull << 30);
	ck_assert_uint_eq(s.cache_block_size, 16ull << 20);
	ck_assert_uint_eq(s.entry_timeout_ms, 600000);
	ck_assert_uint_eq(s.attr_timeout_ms, 3600000); /* untouched keys keep their defaults */
	ck_assert(!s.keep_cache);
	ck_assert_uint_eq(s.max_read, 512u << 10);
	ck_assert_int_eq(s.max_idle_threads, 32);
	ck_assert(s.splice);
	ck_assert(s.clone_fd);
	ck_assert_uint_eq(s.read_ahead, 8u << 20);
	ck_assert_int_eq(s.prefetch_blocks, 16);
	ck_assert_int_eq(s.prefetch_files_max, 32);
	ck_assert_uint_eq(s.worker_timeout_ms, 250);
	ck_assert_str_eq(s.store.endpoint, "http://127.0.0.1:7070");
	ck_assert_str_eq(s.store.region, "eu-west-1");
	ck_assert_int_eq(mount_settings_check(&s, &err), ERR_OK);
	config_release(&mount_settings_schema, &s);
}
END_TEST

START_TEST(test_mount_settings_fetcher_and_its_connections_follow_prefetch)
{
	struct mount_settings s;
	struct mount_fetch_sizes sz;
	struct error err;
	const unsigned cpus = (unsigned)cpu_available();

	ck_assert_int_eq(config_apply_defaults(&mount_settings_schema, &s, &err), ERR_OK);
	s.prefetch_blocks = 4;
	s.prefetch_files = 64;
	s.prefetch_files_max = 256;
	sz = mount_settings_fetch_sizes(&s);
	ck_assert_uint_eq(sz.floor, 64);
	ck_assert_uint_eq(sz.threads, 256);
	ck_assert_uint_eq(sz.max_inflight, 2 * 4 + 2 * cpus + 256);
	/* The pool keeps a connection for every fetch the mount may run. */
	ck_assert_uint_eq(mount_settings_store_connections(&s), sz.max_inflight);
	/* A files_max under the floor leaves threads at the floor. */
	s.prefetch_files = 0;
	s.prefetch_files_max = 0;
	sz = mount_settings_fetch_sizes(&s);
	ck_assert_uint_eq(sz.floor, cpus > 4 ? cpus : 4);
	ck_assert_uint_eq(sz.threads, sz.floor);
	/* Set by hand, the pool's size is kept. */
	s.store.max_connections = 16;
	ck_assert_uint_eq(mount_settings_store_connections(&s), 16);
	config_release(&mount_settings_schema, &s);
}
END_TEST

START_TEST(test_mount_settings_check_rejects_naming_the_key)
{
	static const struct bad_case bad[] = {
		{ "mountpoint", "", NULL, NULL, "key 'mountpoint': required" },
		{ "mountpoint", "mnt/ds", NULL, NULL,
		  "key 'mountpoint': must be an absolute path" },
		{ "dataset", "", NULL, NULL, "keys 'dataset' and 'source': give exactly one" },
		{ "source", "s3://bucket/p/", NULL, NULL, "keys 'dataset' and 'source'" },
		{ "dataset", "", "source", "http://bucket/p/", "key 'source'" },
		{ "dataset", "", "source", "s3://Bad_Bucket/p/", "key 'source'" },
		{ "meta.address", "", NULL, NULL, "key 'meta.address': required" },
		{ "meta.address", "meta", NULL, NULL, "key 'meta.address'" },
		{ "meta.key_file", "token", NULL, NULL, "key 'meta.key_file': must be an absolute path" },
		{ "dataset", "", "source", "s3://bucket/p/", NULL }, /* standalone: valid */
		{ "cache.dir", "cache", NULL, NULL, "key 'cache.dir': must be an absolute path" },
		{ "cache.block_size", "5MiB", NULL, NULL,
		  "key 'cache.block_size': must be a power of two" },
		{ "cache.block_size", "4KiB", NULL, NULL, "key 'cache.block_size'" },
		{ "cache.block_size", "128MiB", NULL, NULL, "key 'cache.block_size'" },
		{ "cache.capacity", "1MiB", NULL, NULL, "key 'cache.capacity'" },
		{ "max_read", "2MiB", NULL, NULL, "key 'max_read'" },
		{ "max_read", "1000000", NULL, NULL, "key 'max_read': must be a multiple of 4KiB" },
		{ "max_read", "0", NULL, NULL, "key 'max_read'" },
		{ "read_ahead", "1000", NULL, NULL,
		  "key 'read_ahead': must be a multiple of 4KiB" },
		{ "store.endpoint", "s3.local", NULL, NULL, "key 'store.endpoint'" },
		{ "log.level", "trace", NULL, NULL, "key 'log.level'" },
		{ "worker.tls.server_name", "w.ns.svc", NULL, NULL,
		  "key 'worker.tls.server_name': needs 'worker.tls.ca_file'" },
		{ "worker.tls.ca_file", "/etc/tls/ca.crt", "worker.tls.server_name", "bad name",
		  "key 'worker.tls.server_name'" },
		{ "meta.tls.ca_file", "/etc/tls/ca.crt", "meta.tls.cert_file", "/etc/tls/c.crt",
		  "key 'meta.tls.key_file': required with 'meta.tls.cert_file'" },
		{ "worker.tls.ca_file", "/etc/tls/ca.crt", "worker.tls.server_name", "w.ns.svc", NULL },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct mount_settings s;
		struct error err;
		enum error_code rc;

		valid_mount(&s);
		set(&s, bad[i].key, bad[i].value);
		if (bad[i].key2)
			set(&s, bad[i].key2, bad[i].value2);
		rc = mount_settings_check(&s, &err);
		if (!bad[i].expect) {
			ck_assert_msg(rc == ERR_OK, "%s='%s': %s", bad[i].key, bad[i].value,
				      err.msg);
		} else {
			ck_assert_msg(rc == ERR_INVALID, "%s='%s' accepted", bad[i].key,
				      bad[i].value);
			ck_assert_msg(strstr(err.msg, bad[i].expect), "%s='%s': '%s' lacks '%s'",
				      bad[i].key, bad[i].value, err.msg, bad[i].expect);
		}
		config_release(&mount_settings_schema, &s);
	}
}
END_TEST

/* Standalone mounts read straight from the store: meta may be left out. */
START_TEST(test_mount_settings_standalone_needs_no_meta)
{
	struct mount_settings s;
	struct error err;

	valid_mount(&s);
	set(&s, "dataset", "");
	set(&s, "source", "file:///srv/datasets/mnist");
	set(&s, "meta.address", "");
	ck_assert_msg(mount_settings_check(&s, &err) == ERR_OK, "%s", err.msg);
	config_release(&mount_settings_schema, &s);
}
END_TEST

START_TEST(test_mount_settings_check_rejects_numbers_set_by_hand)
{
	struct mount_settings s;
	struct error err;

	valid_mount(&s);
	s.max_background = 0;
	ck_assert_int_eq(mount_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'max_background'"));
	s.max_background = 64;
	s.max_idle_threads = -1;
	ck_assert_int_eq(mount_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'max_idle_threads'"));
	s.max_idle_threads = 0;
	s.prefetch_blocks = -1;
	ck_assert_int_eq(mount_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'prefetch.blocks'"));
	s.prefetch_blocks = 0;
	s.worker_timeout_ms = 0;
	ck_assert_int_eq(mount_settings_check(&s, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "key 'worker.timeout'"));
	config_release(&mount_settings_schema, &s);
}
END_TEST

START_TEST(test_mount_settings_flag_overrides_file)
{
	static const char yaml[] = "mountpoint: /mnt/file\ndataset: imagenet\nmax_read: 256KiB\n";
	char path[64];
	char *argv[] = { "granary-fuse", "--config", path, "--mountpoint", "/mnt/flag",
			 "--clone_fd", "false", "--splice", NULL };
	struct mount_settings s;
	struct error err;
	int first = -1;

	check_write_temp(path, sizeof(path), yaml);
	ck_assert_int_eq(config_parse_args(&mount_settings_schema, &s, 8, argv, "0.1.0", &first,
					   &err), CONFIG_ARGS_RUN);
	unlink(path);
	ck_assert_int_eq(first, 8);
	ck_assert_str_eq(s.mountpoint, "/mnt/flag");
	ck_assert_str_eq(s.dataset, "imagenet");     /* from the file */
	ck_assert_uint_eq(s.max_read, 256u << 10);   /* from the file */
	ck_assert(!s.clone_fd);
	ck_assert(s.splice);
	ck_assert_int_eq(mount_settings_check(&s, &err), ERR_OK);
	config_release(&mount_settings_schema, &s);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("mount_settings");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_mount_settings_defaults_are_tuned_and_valid);
	tcase_add_test(tc, test_mount_settings_yaml_overrides_nested_keys);
	tcase_add_test(tc, test_mount_settings_fetcher_and_its_connections_follow_prefetch);
	tcase_add_test(tc, test_mount_settings_check_rejects_naming_the_key);
	tcase_add_test(tc, test_mount_settings_standalone_needs_no_meta);
	tcase_add_test(tc, test_mount_settings_check_rejects_numbers_set_by_hand);
	tcase_add_test(tc, test_mount_settings_flag_overrides_file);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
