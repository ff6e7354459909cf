/*
 * test_config.c - the config module against a small settings table: YAML
 * files (nested keys, every type, every way to get it wrong), flags on top
 * of files, argv permutation, usage, and the shared size/duration/bool
 * parsers.
 */
#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#include "common/config.h"

struct settings {
	char *endpoint;
	char *bucket;
	uint64_t timeout_ms;
	bool pin;
	uint64_t cache_size;
	double ratio;
	int64_t workers;
	int64_t offset;
	int level;
	char *deep_name;
};

static const char *const levels[] = { "debug", "info", "warn", "error", NULL };

static const struct config_field fields[] = {
	{ "store.endpoint", CONFIG_STRING, offsetof(struct settings, endpoint),
	  "http://localhost:9000", "object store URL", 0, 0, NULL },
	{ "store.bucket", CONFIG_STRING, offsetof(struct settings, bucket),
	  NULL, "bucket name", 0, 0, NULL },
	{ "store.timeout", CONFIG_DURATION, offsetof(struct settings, timeout_ms),
	  "30s", "request timeout", 100, 3600000, NULL },
	{ "cache.pin", CONFIG_BOOL, offsetof(struct settings, pin),
	  "false", "keep blocks resident", 0, 0, NULL },
	{ "cache.size", CONFIG_SIZE, offsetof(struct settings, cache_size),
	  "1GiB", "cache capacity", 1048576, 1099511627776.0, NULL },
	{ "cache.ratio", CONFIG_DOUBLE, offsetof(struct settings, ratio),
	  "0.5", "high-water mark", 0.0, 1.0, NULL },
	{ "workers", CONFIG_INT, offsetof(struct settings, workers),
	  "8", "worker threads", 1, 64, NULL },
	{ "offset", CONFIG_INT, offsetof(struct settings, offset),
	  NULL, "unbounded integer", 0, 0, NULL },
	{ "log.level", CONFIG_ENUM, offsetof(struct settings, level),
	  "info", "log verbosity", 0, 0, levels },
	{ "log.deep.name", CONFIG_STRING, offsetof(struct settings, deep_name),
	  "x", "three levels deep", 0, 0, NULL },
};

static const struct config_schema schema = {
	.program = "test-prog",
	.summary = "A program for testing the config module.",
	.fields = fields,
	.nfields = sizeof(fields) / sizeof(fields[0]),
};

/* Writes text to a fresh file under /tmp; path receives its name. */
static void write_temp(char path[64], const char *text)
{
	int fd;
	size_t len = strlen(text);

	snprintf(path, 64, "/tmp/test_config_XXXXXX");
	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
	ck_assert_int_eq(close(fd), 0);
}

static void defaults(struct settings *s)
{
	struct error err;

	memset(s, 0, sizeof(*s));
	ck_assert_int_eq(config_apply_defaults(&schema, s, &err), ERR_OK);
}

/* Loads text as a file and returns the result; s starts from defaults. */
static enum error_code load_text(struct settings *s, const char *text,
				 char path[64], struct error *err)
{
	enum error_code rc;

	write_temp(path, text);
	rc = config_load_file(&schema, s, path, err);
	unlink(path);
	return rc;
}

#define assert_has(hay, needle)                                              \
	ck_assert_msg(strstr((hay), (needle)) != NULL,                         \
		      "expected '%s' in '%s'", (needle), (hay))

/* Asserts the "FILE:LINE: key 'K': " prefix and one fragment of the why. */
static void assert_file_error(const struct error *err, const char *path,
			      int line, const char *key, const char *what)
{
	char prefix[256];

	ck_assert_int_eq(err->code, ERR_INVALID);
	snprintf(prefix, sizeof(prefix), "%s:%d: key '%s': ", path, line, key);
	ck_assert_msg(strncmp(err->msg, prefix, strlen(prefix)) == 0,
		      "expected prefix '%s' in '%s'", prefix, err->msg);
	assert_has(err->msg, what);
}

START_TEST(test_config_applies_defaults_and_null_string_default_is_empty)
{
	struct settings s;

	memset(&s, 0xa5, sizeof(s)); /* uninitialised storage is fine */
	defaults(&s);
	ck_assert_str_eq(s.endpoint, "http://localhost:9000");
	ck_assert_ptr_nonnull(s.bucket);
	ck_assert_str_eq(s.bucket, "");
	ck_assert_uint_eq(s.timeout_ms, 30000);
	ck_assert(!s.pin);
	ck_assert_uint_eq(s.cache_size, 1073741824ull);
	ck_assert_double_eq(s.ratio, 0.5);
	ck_assert_int_eq(s.workers, 8);
	ck_assert_int_eq(s.offset, 0);
	ck_assert_int_eq(s.level, 1);
	ck_assert_str_eq(s.deep_name, "x");
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_rejects_bad_default_naming_the_key)
{
	static const struct config_field bad[] = {
		{ "name", CONFIG_STRING, offsetof(struct settings, endpoint),
		  "n", "", 0, 0, NULL },
		{ "workers", CONFIG_INT, offsetof(struct settings, workers),
		  "100", "", 1, 64, NULL },
	};
	static const struct config_schema bad_schema = {
		.program = "p", .fields = bad, .nfields = 2,
	};
	struct settings s;
	struct error err;

	memset(&s, 0, sizeof(s));
	ck_assert_int_eq(config_apply_defaults(&bad_schema, &s, &err),
			 ERR_INVALID);
	assert_has(err.msg, "key 'workers'");
	assert_has(err.msg, "between 1 and 64");
	/* What it had allocated is already freed. */
	ck_assert_ptr_null(s.endpoint);
}
END_TEST

START_TEST(test_config_loads_nested_keys_and_leaves_others_alone)
{
	struct settings s;
	struct error err;
	char path[64];

	defaults(&s);
	ck_assert_int_eq(load_text(&s,
				   "# settings\n"
				   "store:\n"
				   "  endpoint: https://s3.example.com\n"
				   "  timeout: 1.5s\n"
				   "cache:\n"
				   "  size: 4MiB\n"
				   "  pin: yes\n"
				   "  ratio: 0.75\n"
				   "workers: 16\n"
				   "offset: -42\n"
				   "log:\n"
				   "  level: warn\n"
				   "  deep:\n"
				   "    name: nested\n",
				   path, &err),
			 ERR_OK);
	ck_assert_str_eq(s.endpoint, "https://s3.example.com");
	ck_assert_uint_eq(s.timeout_ms, 1500);
	ck_assert_uint_eq(s.cache_size, 4194304);
	ck_assert(s.pin);
	ck_assert_double_eq(s.ratio, 0.75);
	ck_assert_int_eq(s.workers, 16);
	ck_assert_int_eq(s.offset, -42);
	ck_assert_int_eq(s.level, 2);
	ck_assert_str_eq(s.deep_name, "nested");
	ck_assert_str_eq(s.bucket, ""); /* not in the file: default kept */
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_accepts_dotted_keys_flow_style_and_aliases)
{
	struct settings s;
	struct error err;

	defaults(&s);
	ck_assert_int_eq(config_load_string(&schema, &s, "inline",
					    "store.bucket: &b datasets\n"
					    "cache: {size: 64m, pin: on}\n"
					    "log:\n"
					    "  deep.name: *b\n",
					    &err),
			 ERR_OK);
	ck_assert_str_eq(s.bucket, "datasets");
	ck_assert_uint_eq(s.cache_size, 67108864);
	ck_assert(s.pin);
	ck_assert_str_eq(s.deep_name, "datasets");
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_accepts_empty_comment_only_and_bare_documents)
{
	static const char *const texts[] = { "", "# only a comment\n\n",
					     "---\n", "---\n...\n",
					     "cache:\n  # size: 2GiB\n" };
	struct settings s;
	struct error err;
	char path[64];
	size_t i;

	for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		defaults(&s);
		ck_assert_msg(load_text(&s, texts[i], path, &err) == ERR_OK,
			      "text %zu: %s", i, err.msg);
		ck_assert_uint_eq(s.cache_size, 1073741824ull);
		ck_assert_str_eq(s.endpoint, "http://localhost:9000");
		config_release(&schema, &s);
	}
}
END_TEST

START_TEST(test_config_rejects_unknown_key_with_file_and_line)
{
	struct settings s;
	struct error err;
	char path[64];

	defaults(&s);
	ck_assert_int_eq(load_text(&s,
				   "workers: 2\n"
				   "store:\n"
				   "  endpiont: http://x\n",
				   path, &err),
			 ERR_INVALID);
	assert_file_error(&err, path, 3, "store.endpiont", "unknown key");
	config_release(&schema, &s);
}
END_TEST

/* One row per bad value: the key sits on line 3 of its file. */
static const struct {
	const char *section, *leaf, *value, *what;
} bad_values[] = {
	{ "cache", "pin", "maybe", "expected true or false" },
	{ "cache", "pin", "~", "got ''" },
	{ "cache", "size", "lots", "expected a size like 4MiB" },
	{ "cache", "size", "-1MiB", "got '-1MiB'" },
	{ "cache", "size", "4ZiB", "got '4ZiB'" },
	{ "cache", "size", "99999999999999999999", "does not fit in 64 bits" },
	{ "cache", "ratio", "half", "expected a number, got 'half'" },
	{ "cache", "ratio", "0.5x", "expected a number" },
	{ "store", "timeout", "soon", "expected a duration like 250ms" },
	{ "store", "timeout", "-5s", "got '-5s'" },
	{ "log", "level", "verbose",
	  "expected one of 'debug', 'info', 'warn', 'error', got 'verbose'" },
	{ "top", "workers", "12x", "expected an integer, got '12x'" },
	{ "top", "workers", "+3", "expected an integer" },
	{ "top", "offset", "9223372036854775808", "out of range" },
	{ "top", "offset", "1.5", "expected an integer" },
};

START_TEST(test_config_rejects_bad_values_with_file_line_and_key)
{
	struct settings s;
	struct error err;
	char path[64], text[256], key[64];
	bool top = strcmp(bad_values[_i].section, "top") == 0;

	if (top) {
		snprintf(text, sizeof(text), "# first\nstore: {}\n%s: %s\n",
			 bad_values[_i].leaf, bad_values[_i].value);
		snprintf(key, sizeof(key), "%s", bad_values[_i].leaf);
	} else {
		snprintf(text, sizeof(text), "# first\n%s:\n  %s: %s\n",
			 bad_values[_i].section, bad_values[_i].leaf,
			 bad_values[_i].value);
		snprintf(key, sizeof(key), "%s.%s", bad_values[_i].section,
			 bad_values[_i].leaf);
	}
	defaults(&s);
	ck_assert_int_eq(load_text(&s, text, path, &err), ERR_INVALID);
	assert_file_error(&err, path, 3, key, bad_values[_i].what);
	/* A rejected value never lands in the struct. */
	ck_assert_uint_eq(s.cache_size, 1073741824ull);
	ck_assert_int_eq(s.workers, 8);
	ck_assert_int_eq(s.offset, 0);
	ck_assert_int_eq(s.level, 1);
	ck_assert_uint_eq(s.timeout_ms, 30000);
	config_release(&schema, &s);
}
END_TEST

static const struct {
	const char *yaml, *key, *what;
} out_of_range[] = {
	{ "workers: 65\n", "workers", "between 1 and 64, got '65'" },
	{ "workers: 0\n", "workers", "between 1 and 64" },
	{ "cache:\n  size: 1KiB\n", "cache.size",
	  "between 1048576 and 1099511627776 bytes, got '1KiB'" },
	{ "store:\n  timeout: 2h\n", "store.timeout",
	  "between 100 and 3600000ms, got '2h'" },
	{ "cache:\n  ratio: 1.5\n", "cache.ratio", "between 0 and 1, got '1.5'" },
};

START_TEST(test_config_rejects_out_of_range_numbers_naming_the_range)
{
	struct settings s;
	struct error err;
	int line = strchr(out_of_range[_i].yaml, '\n')[1] ? 2 : 1;

	defaults(&s);
	ck_assert_int_eq(config_load_string(&schema, &s, "range.yaml",
					    out_of_range[_i].yaml, &err),
			 ERR_INVALID);
	assert_file_error(&err, "range.yaml", line, out_of_range[_i].key,
			  out_of_range[_i].what);
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_accepts_values_on_the_bounds)
{
	struct settings s;
	struct error err;

	defaults(&s);
	ck_assert_int_eq(config_load_string(&schema, &s, "b",
					    "workers: 64\n"
					    "cache: {size: 1MiB, ratio: 0}\n"
					    "store: {timeout: 1h}\n",
					    &err),
			 ERR_OK);
	ck_assert_int_eq(s.workers, 64);
	ck_assert_uint_eq(s.cache_size, 1048576);
	ck_assert_double_eq(s.ratio, 0.0);
	ck_assert_uint_eq(s.timeout_ms, 3600000);
	ck_assert_int_eq(config_load_string(&schema, &s, "b",
					    "offset: -9223372036854775808\n",
					    &err),
			 ERR_OK);
	ck_assert_int_eq(s.offset, INT64_MIN);
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_rejects_duplicate_keys)
{
	struct settings s;
	struct error err;
	char path[64];

	defaults(&s);
	ck_assert_int_eq(load_text(&s, "workers: 2\nworkers: 3\n", path, &err),
			 ERR_INVALID);
	assert_file_error(&err, path, 2, "workers", "duplicate key");
	assert_has(err.msg, "line 1");

	/* Same section opened twice: a duplicate even with different leaves. */
	ck_assert_int_eq(load_text(&s,
				   "cache:\n  size: 2MiB\n"
				   "cache:\n  pin: true\n",
				   path, &err),
			 ERR_INVALID);
	assert_file_error(&err, path, 3, "cache", "duplicate key");

	/* A dotted key and a nested one that spell the same field. */
	ck_assert_int_eq(load_text(&s,
				   "cache.size: 2MiB\n"
				   "cache:\n  size: 3MiB\n",
				   path, &err),
			 ERR_INVALID);
	assert_file_error(&err, path, 3, "cache.size", "duplicate key");
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_rejects_sequence_or_mapping_where_scalar_expected)
{
	struct settings s;
	struct error err;
	char path[64];

	defaults(&s);
	ck_assert_int_eq(load_text(&s, "store:\n  endpoint:\n    - a\n    - b\n",
				   path, &err),
			 ERR_INVALID);
	assert_file_error(&err, path, 3, "store.endpoint",
			  "expected a STRING value, got a sequence");

	ck_assert_int_eq(load_text(&s, "workers: [1, 2]\n", path, &err),
			 ERR_INVALID);
	assert_file_error(&err, path, 1, "workers", "got a sequence");

	ck_assert_int_eq(load_text(&s, "cache:\n  size:\n    value: 4\n", path,
				   &err),
			 ERR_INVALID);
	assert_file_error(&err, path, 3, "cache.size",
			  "expected a SIZE value, got a mapping");
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_rejects_scalar_or_sequence_where_section_expected)
{
	struct settings s;
	struct error err;
	char path[64], want[256];

	defaults(&s);
	ck_assert_int_eq(load_text(&s, "# c\nstore: http://x\n", path, &err),
			 ERR_INVALID);
	assert_file_error(&err, path, 2, "store",
			  "expected a mapping of 'store.*' keys, got 'http://x'");

	ck_assert_int_eq(load_text(&s, "log:\n  - level\n", path, &err),
			 ERR_INVALID);
	assert_file_error(&err, path, 2, "log", "got a sequence");

	ck_assert_int_eq(load_text(&s, "- workers\n", path, &err), ERR_INVALID);
	snprintf(want, sizeof(want),
		 "%s:1: expected a mapping of settings at the top level, got a sequence",
		 path);
	ck_assert_str_eq(err.msg, want);
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_rejects_malformed_yaml_with_its_line)
{
	struct settings s;
	struct error err;
	char path[64], prefix[128];

	defaults(&s);
	ck_assert_int_eq(load_text(&s,
				   "workers: 2\n"
				   "store:\n"
				   "  endpoint: [unclosed\n"
				   "cache:\n"
				   "  size: 1GiB\n",
				   path, &err),
			 ERR_INVALID);
	snprintf(prefix, sizeof(prefix), "%s:4: malformed yaml: ", path);
	ck_assert_msg(strncmp(err.msg, prefix, strlen(prefix)) == 0,
		      "expected prefix '%s' in '%s'", prefix, err.msg);

	ck_assert_int_eq(load_text(&s, "a: 1\n b: 2\n", path, &err),
			 ERR_INVALID);
	snprintf(prefix, sizeof(prefix), "%s:2: malformed yaml: ", path);
	ck_assert_msg(strncmp(err.msg, prefix, strlen(prefix)) == 0,
		      "expected prefix '%s' in '%s'", prefix, err.msg);
	assert_has(err.msg, "mapping values are not allowed");
	config_release(&schema, &s);
}
END_TEST

/* Writes text made of a head, n copies of open, then n copies of close. */
static void write_nested(char path[64], const char *head, const char *open,
			 const char *close, size_t n)
{
	FILE *f;
	int fd;

	snprintf(path, 64, "/tmp/test_config_XXXXXX");
	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	f = fdopen(fd, "w");
	ck_assert_ptr_nonnull(f);
	fputs(head, f);
	for (size_t i = 0; i < n; i++)
		fputs(open, f);
	for (size_t i = 0; i < n; i++)
		fputs(close, f);
	fputs("\n", f);
	ck_assert_int_eq(fclose(f), 0);
}

/* The schema is three levels deep; a file nested 100,000 levels deep used
 * to keep the YAML parser busy for tens of seconds. */
START_TEST(test_config_refuses_deep_nesting_at_once)
{
	static const char *const shapes[][3] = {
		{ "workers: 2\nstore: ", "{a: ", "}" },
		{ "workers: 2\nstore: ", "[", "]" },
	};
	struct settings s;
	struct error err;
	char path[64], prefix[128];
	uint64_t t0, took;
	struct timespec ts;

	defaults(&s);
	for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
		write_nested(path, shapes[i][0], shapes[i][1], shapes[i][2], 100000);
		clock_gettime(CLOCK_MONOTONIC, &ts);
		t0 = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
		ck_assert_int_eq(config_load_file(&schema, &s, path, &err), ERR_INVALID);
		clock_gettime(CLOCK_MONOTONIC, &ts);
		took = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 - t0;
		unlink(path);
		ck_assert_msg(took < 500, "refusing took %llu ms", (unsigned long long)took);
		snprintf(prefix, sizeof(prefix), "%s:2: ", path);
		ck_assert_msg(strncmp(err.msg, prefix, strlen(prefix)) == 0,
			      "expected prefix '%s' in '%s'", prefix, err.msg);
		assert_has(err.msg, "nested more than 32 levels");
	}
	/* 32 levels parse (and fail on the unknown key, not the depth). */
	write_nested(path, "", "{a: ", "}", 32);
	ck_assert_int_eq(config_load_file(&schema, &s, path, &err), ERR_INVALID);
	unlink(path);
	assert_has(err.msg, "key 'a': unknown key");
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_rejects_second_document)
{
	struct settings s;
	struct error err;

	defaults(&s);
	ck_assert_int_eq(config_load_string(&schema, &s, "two.yaml",
					    "workers: 2\n---\nworkers: 3\n",
					    &err),
			 ERR_INVALID);
	assert_has(err.msg, "two.yaml:2: only one yaml document");
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_reports_missing_file_as_not_found_with_path)
{
	struct settings s;
	struct error err;
	const char *path = "/tmp/test_config_does_not_exist.yaml";

	unlink(path);
	defaults(&s);
	ck_assert_int_eq(config_load_file(&schema, &s, path, &err),
			 ERR_NOT_FOUND);
	ck_assert_int_eq(err.code, ERR_NOT_FOUND);
	assert_has(err.msg, "open '/tmp/test_config_does_not_exist.yaml': ");
	/* Without an err the code still says what happened. */
	ck_assert_int_eq(config_load_file(&schema, &s, path, NULL),
			 ERR_NOT_FOUND);
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_null_tilde_and_empty_strings_give_empty_not_null)
{
	static const char *const texts[] = {
		"store:\n  endpoint: ~\n", "store:\n  endpoint:\n",
		"store:\n  endpoint: ''\n", "store:\n  endpoint: null\n",
	};
	struct settings s;
	struct error err;
	size_t i;

	for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		defaults(&s);
		ck_assert_int_eq(config_load_string(&schema, &s, "n", texts[i],
						    &err),
				 ERR_OK);
		ck_assert_ptr_nonnull(s.endpoint);
		ck_assert_str_eq(s.endpoint, "");
		config_release(&schema, &s);
	}
	/* Quoted, it is text. */
	defaults(&s);
	ck_assert_int_eq(config_load_string(&schema, &s, "n",
					    "store: {endpoint: \"null\"}\n",
					    &err),
			 ERR_OK);
	ck_assert_str_eq(s.endpoint, "null");
	ck_assert_int_eq(config_set(&schema, &s, "store.endpoint", NULL, NULL,
				    &err),
			 ERR_OK);
	ck_assert_str_eq(s.endpoint, "");
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_set_replaces_strings_and_keeps_old_value_on_error)
{
	struct settings s;
	struct error err;

	defaults(&s);
	/* valgrind checks that the replaced strings were freed. */
	ck_assert_int_eq(config_set(&schema, &s, "store.bucket", "one", "here",
				    &err),
			 ERR_OK);
	ck_assert_int_eq(config_set(&schema, &s, "store.bucket", "two", "here",
				    &err),
			 ERR_OK);
	ck_assert_str_eq(s.bucket, "two");

	ck_assert_int_eq(config_set(&schema, &s, "workers", "99", "env:W",
				    &err),
			 ERR_INVALID);
	ck_assert_str_eq(err.msg,
			 "env:W: key 'workers': out of range: must be between 1 and 64, got '99'");
	ck_assert_int_eq(s.workers, 8);

	ck_assert_int_eq(config_set(&schema, &s, "nope", "1", NULL, &err),
			 ERR_INVALID);
	ck_assert_str_eq(err.msg, "key 'nope': unknown key");
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_enum_is_stored_as_index_case_insensitively)
{
	struct settings s;
	struct error err;

	defaults(&s);
	ck_assert_int_eq(config_set(&schema, &s, "log.level", "error", NULL,
				    &err),
			 ERR_OK);
	ck_assert_int_eq(s.level, 3);
	ck_assert_int_eq(config_set(&schema, &s, "log.level", "DEBUG", NULL,
				    &err),
			 ERR_OK);
	ck_assert_int_eq(s.level, 0);
	config_release(&schema, &s);
}
END_TEST

static const struct {
	const char *text;
	enum error_code rc;
	uint64_t bytes;
} sizes[] = {
	{ "0", ERR_OK, 0 },
	{ "4096", ERR_OK, 4096 },
	{ "64k", ERR_OK, 65536 },
	{ "64K", ERR_OK, 65536 },
	{ "4KB", ERR_OK, 4000 },
	{ "4kB", ERR_OK, 4000 },
	{ "4KiB", ERR_OK, 4096 },
	{ "2m", ERR_OK, 2097152 },
	{ "2MB", ERR_OK, 2000000 },
	{ "4MiB", ERR_OK, 4194304 },
	{ "1g", ERR_OK, 1073741824ull },
	{ "1.5GiB", ERR_OK, 1610612736ull },
	{ "1.5GB", ERR_OK, 1500000000ull },
	{ "10GiB", ERR_OK, 10737418240ull },
	{ "1T", ERR_OK, 1099511627776ull },
	{ "2TB", ERR_OK, 2000000000000ull },
	{ "1TiB", ERR_OK, 1099511627776ull },
	{ "4 MiB", ERR_OK, 4194304 },
	{ "0.5KiB", ERR_OK, 512 },
	{ "512B", ERR_OK, 512 },
	{ "18446744073709551615", ERR_OK, UINT64_MAX },
	{ "18446744073709551616", ERR_RANGE, 0 },
	{ "16777216TiB", ERR_RANGE, 0 }, /* exactly 2^64 */
	{ "16777215.99999999TiB", ERR_OK, 18446744073709540620ull },
	{ "99999999999999999999999KiB", ERR_RANGE, 0 },
	{ "", ERR_INVALID, 0 },
	{ "lots", ERR_INVALID, 0 },
	{ "-1", ERR_INVALID, 0 },
	{ "+1", ERR_INVALID, 0 },
	{ " 1", ERR_INVALID, 0 },
	{ "1 ", ERR_INVALID, 0 },
	{ "1.", ERR_INVALID, 0 },
	{ ".5", ERR_INVALID, 0 },
	{ "1e3", ERR_INVALID, 0 },
	{ "4XB", ERR_INVALID, 0 },
	{ "4MiBs", ERR_INVALID, 0 },
	{ "0x10", ERR_INVALID, 0 },
};

START_TEST(test_config_parse_size_table)
{
	uint64_t v = 12345;
	enum error_code rc = config_parse_size(sizes[_i].text, &v);

	ck_assert_msg(rc == sizes[_i].rc, "'%s': rc %d, want %d", sizes[_i].text,
		      rc, sizes[_i].rc);
	if (sizes[_i].rc == ERR_OK)
		ck_assert_msg(v == sizes[_i].bytes, "'%s': %llu, want %llu",
			      sizes[_i].text, (unsigned long long)v,
			      (unsigned long long)sizes[_i].bytes);
	else
		ck_assert_uint_eq(v, 12345); /* untouched on error */
}
END_TEST

static const struct {
	const char *text;
	enum error_code rc;
	uint64_t ms;
} durations[] = {
	{ "250ms", ERR_OK, 250 },
	{ "30s", ERR_OK, 30000 },
	{ "5m", ERR_OK, 300000 },
	{ "1h", ERR_OK, 3600000 },
	{ "10", ERR_OK, 10000 },
	{ "0", ERR_OK, 0 },
	{ "1.5s", ERR_OK, 1500 },
	{ "0.5h", ERR_OK, 1800000 },
	{ "1.5", ERR_OK, 1500 },
	{ "100 ms", ERR_OK, 100 },
	{ "18446744073709551615ms", ERR_OK, UINT64_MAX },
	{ "18446744073709551615s", ERR_RANGE, 0 },
	{ "18446744073709552ms0", ERR_INVALID, 0 },
	{ "99999999999999999999h", ERR_RANGE, 0 },
	{ "", ERR_INVALID, 0 },
	{ "soon", ERR_INVALID, 0 },
	{ "-5s", ERR_INVALID, 0 },
	{ "5d", ERR_INVALID, 0 },
	{ "5.s", ERR_INVALID, 0 },
	{ "s", ERR_INVALID, 0 },
	{ "1h30m", ERR_INVALID, 0 },
};

START_TEST(test_config_parse_duration_table)
{
	uint64_t v = 12345;
	enum error_code rc = config_parse_duration_ms(durations[_i].text, &v);

	ck_assert_msg(rc == durations[_i].rc, "'%s': rc %d, want %d",
		      durations[_i].text, rc, durations[_i].rc);
	if (durations[_i].rc == ERR_OK)
		ck_assert_msg(v == durations[_i].ms, "'%s': %llu, want %llu",
			      durations[_i].text, (unsigned long long)v,
			      (unsigned long long)durations[_i].ms);
	else
		ck_assert_uint_eq(v, 12345);
}
END_TEST

START_TEST(test_config_parse_bool_words_any_case)
{
	static const char *const yes[] = { "true", "TRUE", "yes", "Yes", "on",
					   "ON", "1" };
	static const char *const no[] = { "false", "False", "no", "NO", "off",
					  "Off", "0" };
	static const char *const junk[] = { "", "2", "y", "truee", " true",
					    "nope" };
	bool b;
	size_t i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		b = false;
		ck_assert_int_eq(config_parse_bool(yes[i], &b), ERR_OK);
		ck_assert_msg(b, "'%s' should be true", yes[i]);
	}
	for (i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		b = true;
		ck_assert_int_eq(config_parse_bool(no[i], &b), ERR_OK);
		ck_assert_msg(!b, "'%s' should be false", no[i]);
	}
	for (i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
		ck_assert_msg(config_parse_bool(junk[i], &b) == ERR_INVALID,
			      "'%s' should be rejected", junk[i]);
}
END_TEST

START_TEST(test_config_flag_overrides_file_value)
{
	struct settings s;
	struct error err;
	char path[64], flag[80];
	int first;

	write_temp(path, "workers: 4\ncache:\n  size: 2GiB\n");
	snprintf(flag, sizeof(flag), "--config=%s", path);
	{
		/* The flag stands before --config and still wins. */
		char *argv[] = { "p", "--workers", "12", flag, NULL };

		ck_assert_int_eq(config_parse_args(&schema, &s, 4, argv, "1.0",
						   &first, &err),
				 CONFIG_ARGS_RUN);
	}
	ck_assert_int_eq(s.workers, 12);
	ck_assert_uint_eq(s.cache_size, 2147483648ull); /* from the file */
	ck_assert_str_eq(s.endpoint, "http://localhost:9000");
	config_release(&schema, &s);

	{
		char *argv[] = { "p", "--config", path, "--cache.size", "3GiB",
				 NULL };

		ck_assert_int_eq(config_parse_args(&schema, &s, 5, argv, "1.0",
						   &first, &err),
				 CONFIG_ARGS_RUN);
	}
	ck_assert_uint_eq(s.cache_size, 3221225472ull);
	ck_assert_int_eq(s.workers, 4);
	ck_assert_int_eq(first, 5);
	unlink(path);
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_accepts_key_equals_value_flags)
{
	struct settings s;
	struct error err;
	char *argv[] = { "p", "--store.endpoint=http://a=b", "--log.level=warn",
			 "--store.bucket=", "--offset=-3", NULL };
	int first;

	ck_assert_int_eq(config_parse_args(&schema, &s, 5, argv, "1", &first,
					   &err),
			 CONFIG_ARGS_RUN);
	ck_assert_str_eq(s.endpoint, "http://a=b");
	ck_assert_int_eq(s.level, 2);
	ck_assert_str_eq(s.bucket, "");
	ck_assert_int_eq(s.offset, -3);
	ck_assert_int_eq(first, 5);
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_separate_value_may_start_with_single_dash)
{
	struct settings s;
	struct error err;
	char *argv[] = { "p", "--offset", "-7", NULL };
	int first;

	ck_assert_int_eq(config_parse_args(&schema, &s, 3, argv, "1", &first,
					   &err),
			 CONFIG_ARGS_RUN);
	ck_assert_int_eq(s.offset, -7);
	ck_assert_int_eq(first, 3);
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_bool_flag_without_value_means_true)
{
	struct settings s;
	struct error err;
	int first;
	char *at_end[] = { "p", "--cache.pin", NULL };
	char *before_flag[] = { "p", "--cache.pin", "--workers", "3", NULL };
	char *explicit_false[] = { "p", "--cache.pin", "false", NULL };
	char *before_positional[] = { "p", "--cache.pin", "input.txt", NULL };

	ck_assert_int_eq(config_parse_args(&schema, &s, 2, at_end, "1", &first,
					   &err),
			 CONFIG_ARGS_RUN);
	ck_assert(s.pin);
	config_release(&schema, &s);

	ck_assert_int_eq(config_parse_args(&schema, &s, 4, before_flag, "1",
					   &first, &err),
			 CONFIG_ARGS_RUN);
	ck_assert(s.pin);
	ck_assert_int_eq(s.workers, 3);
	config_release(&schema, &s);

	ck_assert_int_eq(config_parse_args(&schema, &s, 3, explicit_false, "1",
					   &first, &err),
			 CONFIG_ARGS_RUN);
	ck_assert(!s.pin);
	ck_assert_int_eq(first, 3);
	config_release(&schema, &s);

	ck_assert_int_eq(config_parse_args(&schema, &s, 3, before_positional,
					   "1", &first, &err),
			 CONFIG_ARGS_RUN);
	ck_assert(s.pin);
	ck_assert_int_eq(first, 2);
	ck_assert_str_eq(before_positional[2], "input.txt");
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_rejects_unknown_flag)
{
	struct settings s;
	struct error err;
	char *argv[] = { "p", "--workers", "2", "--cache.sise=1", NULL };
	int first;

	ck_assert_int_eq(config_parse_args(&schema, &s, 4, argv, "1", &first,
					   &err),
			 CONFIG_ARGS_ERROR);
	ck_assert_int_eq(err.code, ERR_INVALID);
	ck_assert_str_eq(err.msg,
			 "flag '--cache.sise': unknown flag (see --help)");
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_rejects_flag_missing_value)
{
	struct settings s;
	struct error err;
	int first;
	char *at_end[] = { "p", "--workers", NULL };
	char *before_flag[] = { "p", "--store.endpoint", "--cache.pin", NULL };
	char *config_at_end[] = { "p", "--config", NULL };

	ck_assert_int_eq(config_parse_args(&schema, &s, 2, at_end, "1", &first,
					   &err),
			 CONFIG_ARGS_ERROR);
	ck_assert_str_eq(err.msg, "flag '--workers': needs a value");
	config_release(&schema, &s);

	ck_assert_int_eq(config_parse_args(&schema, &s, 3, before_flag, "1",
					   &first, &err),
			 CONFIG_ARGS_ERROR);
	ck_assert_str_eq(err.msg, "flag '--store.endpoint': needs a value");
	config_release(&schema, &s);

	ck_assert_int_eq(config_parse_args(&schema, &s, 2, config_at_end, "1",
					   &first, &err),
			 CONFIG_ARGS_ERROR);
	ck_assert_str_eq(err.msg, "flag '--config': needs a value");
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_rejects_bad_flag_value_naming_the_flag)
{
	struct settings s;
	struct error err;
	char *argv[] = { "p", "--cache.size", "lots", NULL };
	int first;

	ck_assert_int_eq(config_parse_args(&schema, &s, 3, argv, "1", &first,
					   &err),
			 CONFIG_ARGS_ERROR);
	ck_assert_str_eq(err.msg,
			 "flag '--cache.size': expected a size like 4MiB, 1.5GB or 4096, got 'lots'");
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_bad_config_file_fails_args_with_file_and_line)
{
	struct settings s;
	struct error err;
	char path[64], prefix[128];
	int first;

	write_temp(path, "workers: 2\nbogus: 1\n");
	{
		char *argv[] = { "p", "--config", path, NULL };

		ck_assert_int_eq(config_parse_args(&schema, &s, 3, argv, "1",
						   &first, &err),
				 CONFIG_ARGS_ERROR);
	}
	snprintf(prefix, sizeof(prefix), "%s:2: key 'bogus': unknown key", path);
	ck_assert_str_eq(err.msg, prefix);
	unlink(path);
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_moves_positionals_to_the_end_in_order)
{
	struct settings s;
	struct error err;
	char *argv[] = { "p", "a", "--workers", "3", "-", "--cache.pin", "c",
			 "--offset=1", NULL };
	int first = -1;

	ck_assert_int_eq(config_parse_args(&schema, &s, 8, argv, "1", &first,
					   &err),
			 CONFIG_ARGS_RUN);
	ck_assert_int_eq(first, 5);
	ck_assert_str_eq(argv[0], "p");
	ck_assert_str_eq(argv[1], "--workers");
	ck_assert_str_eq(argv[2], "3");
	ck_assert_str_eq(argv[3], "--cache.pin");
	ck_assert_str_eq(argv[4], "--offset=1");
	ck_assert_str_eq(argv[5], "a");
	ck_assert_str_eq(argv[6], "-");
	ck_assert_str_eq(argv[7], "c");
	ck_assert_ptr_null(argv[8]);
	ck_assert_int_eq(s.workers, 3);
	ck_assert(s.pin);
	ck_assert_int_eq(s.offset, 1);
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_double_dash_ends_flags)
{
	struct settings s;
	struct error err;
	char *argv[] = { "p", "x", "--workers", "2", "--", "--cache.pin", "-h",
			 NULL };
	int first = -1;

	ck_assert_int_eq(config_parse_args(&schema, &s, 7, argv, "1", &first,
					   &err),
			 CONFIG_ARGS_RUN);
	ck_assert_int_eq(s.workers, 2);
	ck_assert(!s.pin);
	ck_assert_int_eq(first, 4);
	ck_assert_str_eq(argv[3], "--");
	ck_assert_str_eq(argv[4], "x");
	ck_assert_str_eq(argv[5], "--cache.pin");
	ck_assert_str_eq(argv[6], "-h");
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_without_positionals_first_is_argc)
{
	struct settings s;
	struct error err;
	char *argv[] = { "p", NULL };
	int first = -1;

	ck_assert_int_eq(config_parse_args(&schema, &s, 1, argv, "1", &first,
					   &err),
			 CONFIG_ARGS_RUN);
	ck_assert_int_eq(first, 1);
	ck_assert_int_eq(s.workers, 8);
	config_release(&schema, &s);
}
END_TEST

/* Runs config_parse_args with stdout going to a temp file; out gets it. */
static enum config_args_result parse_capturing(struct settings *s, int argc,
					       char **argv, char *out,
					       size_t outlen)
{
	struct error err;
	enum config_args_result r;
	char path[64];
	int saved, fd, first;
	ssize_t n;

	write_temp(path, "");
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	fflush(stdout);
	saved = dup(STDOUT_FILENO);
	ck_assert_int_ge(saved, 0);
	ck_assert_int_ge(dup2(fd, STDOUT_FILENO), 0);
	r = config_parse_args(&schema, s, argc, argv, "9.8.7", &first, &err);
	fflush(stdout);
	dup2(saved, STDOUT_FILENO);
	close(saved);
	n = pread(fd, out, outlen - 1, 0);
	ck_assert_int_ge(n, 0);
	out[n] = '\0';
	close(fd);
	unlink(path);
	return r;
}

START_TEST(test_config_help_prints_usage_and_returns_help)
{
	struct settings s;
	char out[4096];
	char *long_form[] = { "p", "--workers", "3", "--help", NULL };
	char *short_form[] = { "p", "--bogus", "-h", NULL };

	ck_assert_int_eq(parse_capturing(&s, 4, long_form, out, sizeof(out)),
			 CONFIG_ARGS_HELP);
	assert_has(out, "usage: test-prog [--config FILE] [--KEY VALUE ...]\n");
	assert_has(out, "--store.endpoint STRING");
	config_release(&schema, &s);

	/* Help wins over an unknown flag before it. */
	ck_assert_int_eq(parse_capturing(&s, 3, short_form, out, sizeof(out)),
			 CONFIG_ARGS_HELP);
	assert_has(out, "usage: test-prog");
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_version_prints_program_and_version)
{
	struct settings s;
	char out[256];
	char *long_form[] = { "p", "--version", NULL };
	char *short_form[] = { "p", "x", "-V", NULL };

	ck_assert_int_eq(parse_capturing(&s, 2, long_form, out, sizeof(out)),
			 CONFIG_ARGS_VERSION);
	ck_assert_str_eq(out, "test-prog 9.8.7\n");
	config_release(&schema, &s);
	ck_assert_int_eq(parse_capturing(&s, 3, short_form, out, sizeof(out)),
			 CONFIG_ARGS_VERSION);
	ck_assert_str_eq(out, "test-prog 9.8.7\n");
	config_release(&schema, &s);
}
END_TEST

START_TEST(test_config_usage_lists_every_flag_with_type_and_default)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	static const char head[] =
		"usage: test-prog [--config FILE] [--KEY VALUE ...]\n"
		"A program for testing the config module.\n\n";
	char line[256];
	size_t i;

	ck_assert_ptr_nonnull(out);
	config_usage(&schema, out);
	ck_assert_int_eq(fclose(out), 0);

	ck_assert_msg(strncmp(text, head, strlen(head)) == 0, "bad head: %s",
		      text);
	assert_has(text, "  --config FILE ");
	assert_has(text, "  --help, -h ");
	assert_has(text, "  --version, -V ");
	assert_has(text, "object store URL (default: http://localhost:9000)\n");
	assert_has(text, "  --cache.size SIZE ");
	assert_has(text, "cache capacity (default: 1GiB)\n");
	assert_has(text, "  --cache.pin [BOOL] ");
	assert_has(text, "  --store.timeout DURATION ");
	assert_has(text, "  --cache.ratio NUMBER ");
	assert_has(text, "  --workers INT ");
	assert_has(text, "  --log.level debug|info|warn|error ");
	assert_has(text, "unbounded integer (default: 0)\n");
	/* An empty string default is not shown as "(default: )". */
	assert_has(text, "bucket name\n");
	for (i = 0; i < schema.nfields; i++) {
		snprintf(line, sizeof(line), "  --%s ", fields[i].key);
		assert_has(text, line);
	}
	free(text);
}
END_TEST

START_TEST(test_config_release_frees_strings_and_sets_them_null)
{
	struct settings s;
	struct error err;

	defaults(&s);
	ck_assert_int_eq(config_set(&schema, &s, "store.bucket", "b", NULL,
				    &err),
			 ERR_OK);
	config_release(&schema, &s);
	ck_assert_ptr_null(s.endpoint);
	ck_assert_ptr_null(s.bucket);
	ck_assert_ptr_null(s.deep_name);
	ck_assert_int_eq(s.workers, 8); /* non-strings are left alone */
	config_release(&schema, &s);    /* twice is harmless */
	ck_assert_ptr_null(s.endpoint);
}
END_TEST

START_TEST(test_config_split_dirs_trims_and_refuses_relative_entries)
{
	char *dirs[2];
	size_t n = 9;
	struct error err;

	ck_assert_int_eq(config_split_dirs("k", "", dirs, 2, &n, &err), ERR_OK);
	ck_assert_uint_eq(n, 0);
	ck_assert_int_eq(config_split_dirs("k", " /srv/data/ ,, /", dirs, 2, &n, &err), ERR_OK);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(dirs[0], "/srv/data");
	ck_assert_str_eq(dirs[1], "/");
	config_dirs_free(dirs, n);
	ck_assert_int_eq(config_split_dirs("k", "/a, data", dirs, 2, &n, &err), ERR_INVALID);
	ck_assert_str_eq(err.msg, "key 'k': 'data' is not an absolute path");
	ck_assert_uint_eq(n, 0);
	ck_assert_int_eq(config_split_dirs("k", "/a,/b,/c", dirs, 2, &n, &err), ERR_INVALID);
	ck_assert_str_eq(err.msg, "key 'k': more than 2 directories");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_config_applies_defaults_and_null_string_default_is_empty);
	tcase_add_test(tc, test_config_rejects_bad_default_naming_the_key);
	tcase_add_test(tc, test_config_loads_nested_keys_and_leaves_others_alone);
	tcase_add_test(tc, test_config_accepts_dotted_keys_flow_style_and_aliases);
	tcase_add_test(tc, test_config_accepts_empty_comment_only_and_bare_documents);
	tcase_add_test(tc, test_config_rejects_unknown_key_with_file_and_line);
	tcase_add_loop_test(tc, test_config_rejects_bad_values_with_file_line_and_key,
			    0, sizeof(bad_values) / sizeof(bad_values[0]));
	tcase_add_loop_test(tc, test_config_rejects_out_of_range_numbers_naming_the_range,
			    0, sizeof(out_of_range) / sizeof(out_of_range[0]));
	tcase_add_test(tc, test_config_accepts_values_on_the_bounds);
	tcase_add_test(tc, test_config_rejects_duplicate_keys);
	tcase_add_test(tc, test_config_rejects_sequence_or_mapping_where_scalar_expected);
	tcase_add_test(tc, test_config_rejects_scalar_or_sequence_where_section_expected);
	tcase_add_test(tc, test_config_rejects_malformed_yaml_with_its_line);
	tcase_add_test(tc, test_config_rejects_second_document);
	tcase_add_test(tc, test_config_refuses_deep_nesting_at_once);
	tcase_add_test(tc, test_config_reports_missing_file_as_not_found_with_path);
	tcase_add_test(tc, test_config_null_tilde_and_empty_strings_give_empty_not_null);
	tcase_add_test(tc, test_config_set_replaces_strings_and_keeps_old_value_on_error);
	tcase_add_test(tc, test_config_enum_is_stored_as_index_case_insensitively);
	tcase_add_loop_test(tc, test_config_parse_size_table, 0,
			    sizeof(sizes) / sizeof(sizes[0]));
	tcase_add_loop_test(tc, test_config_parse_duration_table, 0,
			    sizeof(durations) / sizeof(durations[0]));
	tcase_add_test(tc, test_config_parse_bool_words_any_case);
	tcase_add_test(tc, test_config_flag_overrides_file_value);
	tcase_add_test(tc, test_config_accepts_key_equals_value_flags);
	tcase_add_test(tc, test_config_separate_value_may_start_with_single_dash);
	tcase_add_test(tc, test_config_bool_flag_without_value_means_true);
	tcase_add_test(tc, test_config_rejects_unknown_flag);
	tcase_add_test(tc, test_config_rejects_flag_missing_value);
	tcase_add_test(tc, test_config_rejects_bad_flag_value_naming_the_flag);
	tcase_add_test(tc, test_config_bad_config_file_fails_args_with_file_and_line);
	tcase_add_test(tc, test_config_moves_positionals_to_the_end_in_order);
	tcase_add_test(tc, test_config_double_dash_ends_flags);
	tcase_add_test(tc, test_config_without_positionals_first_is_argc);
	tcase_add_test(tc, test_config_help_prints_usage_and_returns_help);
	tcase_add_test(tc, test_config_version_prints_program_and_version);
	tcase_add_test(tc, test_config_usage_lists_every_flag_with_type_and_default);
	tcase_add_test(tc, test_config_release_frees_strings_and_sets_them_null);
	tcase_add_test(tc, test_config_split_dirs_trims_and_refuses_relative_entries);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
