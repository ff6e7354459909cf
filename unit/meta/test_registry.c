/*
 * test_registry.c - the dataset registry over file:// sources in temporary
 * directories: registration and its checks, idempotence and conflicts,
 * persistence across a reopen without listing again, refresh and the
 * generations kept, delete, damaged files, and calls while a registration
 * is in progress.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "meta/registry.h"
#include "unit/check_main.h"

static char root[64], data_dir[128], src[128], src_uri[160];

/* What the build hook sees and how it holds a build. */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int builds;    /* listings started */
	bool hold;     /* make listings wait */
	bool holding;  /* one is waiting */
} hk = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, false, false };

static void hook(const char *name, uint64_t generation, void *arg)
{
	(void)name;
	(void)generation;
	(void)arg;
	pthread_mutex_lock(&hk.mu);
	hk.builds++;
	hk.holding = hk.hold;
	pthread_cond_broadcast(&hk.cond);
	while (hk.hold)
		pthread_cond_wait(&hk.cond, &hk.mu);
	hk.holding = false;
	pthread_mutex_unlock(&hk.mu);
}

static void write_file(const char *dir, const char *rel, const char *content)
{
	char path[512], *slash;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	for (slash = strchr(path + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		mkdir(path, 0755);
		*slash = '/';
	}
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(content, f);
	fclose(f);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_tree(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup(void)
{
	log_set_level(LOG_LEVEL_ERROR);
	snprintf(root, sizeof(root), "/tmp/granary-registry-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(root));
	snprintf(data_dir, sizeof(data_dir), "%s/data/meta", root);
	snprintf(src, sizeof(src), "%s/src", root);
	snprintf(src_uri, sizeof(src_uri), "file://%s/", src);
	mkdir(src, 0755);
	write_file(src, "train/a.rec", "aaaa");
	write_file(src, "train/b.rec", "bbbbbbbb");
	write_file(src, "val/c.rec", "cc");
	write_file(src, "README", "hello");
	hk.builds = 0;
	hk.hold = false;
}

static void teardown(void)
{
	rm_tree(root);
}

static struct registry *open_reg(unsigned max_builds)
{
	/* The sources live under root: file:// needs it among the roots. */
	struct registry_options opt = { .data_dir = data_dir, .max_builds = max_builds,
					.build_hook = hook, .file_roots = root };
	struct registry *r = NULL;
	struct error err;

	ck_assert_msg(registry_open(&opt, &r, &err) == ERR_OK, "%s", err.msg);
	return r;
}

/* A spec on the stack; strings point at static or test storage. */
struct spec {
	Granary__V1__DatasetSpec s;
	Granary__V1__DatasetOptions o;
};

static void spec_init(struct spec *sp, const char *name, const char *uri)
{
	granary__v1__dataset_spec__init(&sp->s);
	granary__v1__dataset_options__init(&sp->o);
	sp->s.name = (char *)name;
	sp->s.source_uri = (char *)uri;
	sp->s.options = &sp->o;
}

static void register_ok(struct registry *r, struct spec *sp, struct registry_dataset *d)
{
	struct error err;

	ck_assert_msg(registry_register(r, &sp->s, d, &err) == ERR_OK, "register '%s': %s",
		      sp->s.name, err.msg);
}

/* The whole encoded snapshot of generation gen. */
struct blob {
	uint8_t *data;
	size_t len;
	uint64_t generation;
	int chunks;
};

static enum error_code gather(uint64_t generation, uint64_t total, uint64_t offset,
			      const void *data, size_t len, void *arg, struct error *err)
{
	struct blob *b = arg;

	(void)err;
	ck_assert_uint_eq(offset, b->len);
	b->data = realloc(b->data, b->len + len);
	memcpy(b->data + b->len, data, len);
	b->len += len;
	b->generation = generation;
	b->chunks++;
	ck_assert_uint_le(b->len, total);
	return ERR_OK;
}

static enum error_code read_blob(struct registry *r, const char *name, uint64_t gen,
				 size_t chunk, struct blob *b, struct error *err)
{
	memset(b, 0, sizeof(*b));
	return registry_read_snapshot(r, name, gen, chunk, gather, b, err);
}

START_TEST(test_registry_registers_and_builds_generation_one)
{
	struct registry *r = open_reg(0);
	struct registry_dataset d, again;
	struct spec sp;
	struct blob b;
	struct snapshot *snap = NULL;
	struct error err;

	spec_init(&sp, "imagenet", src_uri);
	sp.o.block_size = 1u << 20;
	register_ok(r, &sp, &d);
	ck_assert_int_eq(d.state, REGISTRY_READY);
	ck_assert_uint_eq(d.generation, 1);
	ck_assert_uint_eq(d.totals.files, 4);
	ck_assert_uint_eq(d.totals.dirs, 3);
	ck_assert_uint_eq(d.totals.bytes, 4 + 8 + 2 + 5);
	ck_assert_int_gt(d.created_unix_ms, 1600000000000LL);
	ck_assert_str_eq(d.spec->source_uri, src_uri);
	ck_assert_uint_eq(d.spec->options->block_size, 1u << 20);

	/* The same spec again: the same dataset, nothing listed. */
	register_ok(r, &sp, &again);
	ck_assert_uint_eq(again.generation, 1);
	ck_assert_int_eq(again.created_unix_ms, d.created_unix_ms);
	ck_assert_int_eq(hk.builds, 1);
	registry_dataset_release(&again);
	/* Options absent and options all zero are the same spec. */
	sp.o.block_size = 0;
	{
		struct spec bare;

		spec_init(&bare, "bare", src_uri);
		register_ok(r, &bare, &again);
		registry_dataset_release(&again);
		bare.s.options = NULL;
		register_ok(r, &bare, &again);
		registry_dataset_release(&again);
		ck_assert_int_eq(hk.builds, 2);
	}

	/* The snapshot streams in chunks and decodes to the listing. */
	ck_assert_int_eq(read_blob(r, "imagenet", 0, 100, &b, &err), ERR_OK);
	ck_assert_int_gt(b.chunks, 1);
	ck_assert_uint_eq(b.generation, 1);
	ck_assert_int_eq(snapshot_decode(b.data, b.len, &snap, &err), ERR_OK);
	ck_assert_uint_ne(snapshot_resolve_path(snap, "train/b.rec"), 0);
	ck_assert_str_eq(snapshot_name(snap), "imagenet");
	snapshot_free(snap);
	free(b.data);
	registry_dataset_release(&d);
	registry_free(r);
}
END_TEST

START_TEST(test_registry_refuses_another_spec_under_the_same_name)
{
	struct registry *r = open_reg(0);
	struct registry_dataset d;
	struct spec sp;
	struct error err;

	spec_init(&sp, "ds", src_uri);
	register_ok(r, &sp, &d);
	registry_dataset_release(&d);
	sp.o.cache_policy = GRANARY__V1__CACHE_POLICY__CACHE_POLICY_LRU;
	ck_assert_int_eq(registry_register(r, &sp.s, &d, &err), ERR_EXISTS);
	ck_assert_ptr_nonnull(strstr(err.msg, "'options.cache_policy'"));
	ck_assert_ptr_null(d.spec);
	sp.o.cache_policy = 0;
	sp.s.region = "eu-west-1";
	ck_assert_int_eq(registry_register(r, &sp.s, &d, &err), ERR_EXISTS);
	ck_assert_ptr_nonnull(strstr(err.msg, "'region'"));
	ck_assert_int_eq(hk.builds, 1);
	registry_free(r);
}
END_TEST

START_TEST(test_registry_checks_every_field_by_name)
{
	static const struct {
		const char *name, *uri, *endpoint, *cred;
		uint64_t block;
		int policy;
		const char *field;
	} bad[] = {
		{ "Bad_Name", "s3://bkt/p/", "", "", 0, 0, "'name'" },
		{ "", "s3://bkt/p/", "", "", 0, 0, "'name'" },
		{ "ok", "gs://b/p/", "", "", 0, 0, "'source_uri'" },
		{ "ok", "s3://BKT/p/", "", "", 0, 0, "'source_uri'" },
		{ "ok", "s3://bkt/p", "", "", 0, 0, "'source_uri'" },
		{ "ok", "", "", "", 0, 0, "'source_uri'" },
		{ "ok", "s3://bkt/p/", "ftp://x", "", 0, 0, "'endpoint'" },
		{ "ok", "s3://bkt/p/", "http://127.0.0.1:1", "", 0, 0,
		  "field 'endpoint': endpoint 'http://127.0.0.1:1' is not allowed" },
		{ "ok", "s3://bkt/p/", "", "relative/creds", 0, 0, "'credentials_ref'" },
		{ "ok", "s3://bkt/p/", "", "", 1000, 0, "'options.block_size'" },
		{ "ok", "s3://bkt/p/", "", "", 32u << 10, 0, "'options.block_size'" },
		{ "ok", "s3://bkt/p/", "", "", 128u << 20, 0, "'options.block_size'" },
		{ "ok", "s3://bkt/p/", "", "", 0, 7, "'options.cache_policy'" },
	};
	struct registry *r = open_reg(0);
	struct registry_dataset d;
	struct spec sp;
	struct error err;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		spec_init(&sp, bad[i].name, bad[i].uri);
		sp.s.endpoint = (char *)bad[i].endpoint;
		sp.s.credentials_ref = (char *)bad[i].cred;
		sp.o.block_size = bad[i].block;
		sp.o.cache_policy = (Granary__V1__CachePolicy)bad[i].policy;
		ck_assert_msg(registry_register(r, &sp.s, &d, &err) == ERR_INVALID, "case %zu accepted",
			      i);
		ck_assert_msg(strstr(err.msg, bad[i].field), "case %zu: '%s' does not name %s", i,
			      err.msg, bad[i].field);
	}
	/* A region goes into the workers' store requests: no header of its own. */
	spec_init(&sp, "ok", "s3://bkt/p/");
	sp.s.region = "eu\r\nx-amz-evil: 1";
	ck_assert_int_eq(registry_register(r, &sp.s, &d, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "field 'region': region: byte 3 (0x0d)"), "%s", err.msg);
	/* Good edge values pass the checks. */
	spec_init(&sp, "ok", "s3://bkt/");
	sp.o.block_size = 64u << 10;
	ck_assert_int_eq(registry_check_spec(&sp.s, &err), ERR_OK);
	sp.o.block_size = 64u << 20;
	ck_assert_int_eq(registry_check_spec(&sp.s, &err), ERR_OK);
	/* A source that does not exist is the caller's mistake, named. */
	spec_init(&sp, "ghost", "file:///nonexistent/granary/");
	ck_assert_int_eq(registry_register(r, &sp.s, &d, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'source_uri'"));
	/* So is a credentials file that is not there (read before any request). */
	spec_init(&sp, "creds", "s3://bkt/p/");
	sp.s.credentials_ref = "/nonexistent/credentials";
	ck_assert_int_eq(registry_register(r, &sp.s, &d, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'credentials_ref'"));
	/* Nothing was registered. */
	{
		struct registry_dataset *list;
		size_t n;

		ck_assert_int_eq(registry_list(r, &list, &n, &err), ERR_OK);
		ck_assert_uint_eq(n, 0);
		registry_list_free(list, n);
	}
	registry_free(r);
}
END_TEST

/* A prefix with '..', '.' or empty segments could name paths outside the
 * dataset: refused before any listing, naming the source. */
START_TEST(test_registry_refuses_a_source_that_leaves_its_prefix)
{
	static const char *const bad[] = { "s3://bkt/../p/", "s3://bkt/a/../../p/",
					   "s3://bkt/./p/", "s3://bkt//p/", "s3://bkt/a//b/",
					   "file:///tmp/../etc/" };
	struct registry *r = open_reg(0);
	struct registry_dataset d;
	struct spec sp;
	struct error err;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		spec_init(&sp, "escape", bad[i]);
		ck_assert_msg(registry_register(r, &sp.s, &d, &err) == ERR_INVALID, "'%s' accepted",
			      bad[i]);
		ck_assert_msg(strstr(err.msg, "'source_uri'") && strstr(err.msg, bad[i]),
			      "'%s' does not name the source", err.msg);
	}
	ck_assert_int_eq(hk.builds, 0);
	registry_free(r);
}
END_TEST

START_TEST(test_registry_reloads_records_and_snapshots_without_listing)
{
	struct registry *r = open_reg(0);
	struct registry_dataset d, *list;
	struct spec a, b;
	struct blob before, after;
	struct error err;
	size_t n;

	spec_init(&a, "alpha", src_uri);
	spec_init(&b, "beta", src_uri);
	b.o.pin = 1;
	b.s.region = "eu-west-1";
	register_ok(r, &a, &d);
	registry_dataset_release(&d);
	register_ok(r, &b, &d);
	registry_dataset_release(&d);
	ck_assert_int_eq(registry_refresh(r, "beta", &d, &err), ERR_OK);
	ck_assert_uint_eq(d.generation, 2);
	registry_dataset_release(&d);
	ck_assert_int_eq(read_blob(r, "beta", 0, 0, &before, &err), ERR_OK);
	registry_free(r);

	/* The source is gone: a reopen that listed it would fail or differ. */
	rm_tree(src);
	hk.builds = 0;
	r = open_reg(0);
	ck_assert_int_eq(hk.builds, 0);
	ck_assert_int_eq(registry_list(r, &list, &n, &err), ERR_OK);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(list[0].spec->name, "alpha");
	ck_assert_uint_eq(list[0].generation, 1);
	ck_assert_uint_eq(list[0].totals.files, 4);
	ck_assert_str_eq(list[1].spec->name, "beta");
	ck_assert_uint_eq(list[1].generation, 2);
	ck_assert_uint_eq(list[1].totals.files, 4);
	ck_assert_uint_eq(list[1].totals.bytes, 19);
	ck_assert(list[1].spec->options->pin);
	ck_assert_str_eq(list[1].spec->region, "eu-west-1");
	ck_assert_int_eq(list[1].state, REGISTRY_READY);
	ck_assert(!list[1].damaged);
	registry_list_free(list, n);
	ck_assert_int_eq(read_blob(r, "beta", 0, 0, &after, &err), ERR_OK);
	ck_assert_uint_eq(after.generation, 2);
	ck_assert_uint_eq(after.len, before.len);
	ck_assert_mem_eq(after.data, before.data, before.len);
	free(before.data);
	free(after.data);
	/* The previous generation is kept for mounts that still use it. */
	ck_assert_int_eq(read_blob(r, "beta", 1, 0, &after, &err), ERR_OK);
	ck_assert_uint_eq(after.generation, 1);
	free(after.data);
	/* Re-registering the same spec still needs no listing. */
	register_ok(r, &b, &d);
	ck_assert_uint_eq(d.generation, 2);
	registry_dataset_release(&d);
	ck_assert_int_eq(hk.builds, 0);
	registry_free(r);
}
END_TEST

START_TEST(test_registry_set_options_in_place_survives_a_reopen)
{
	struct registry *r = open_reg(0);
	struct registry_dataset d;
	Granary__V1__DatasetOptions o = GRANARY__V1__DATASET_OPTIONS__INIT;
	struct spec sp;
	struct error err;

	spec_init(&sp, "ds", src_uri);
	register_ok(r, &sp, &d);
	registry_dataset_release(&d);
	write_file(src, "train/new.rec", "0123456789");
	ck_assert_int_eq(registry_refresh(r, "ds", &d, &err), ERR_OK);
	registry_dataset_release(&d);
	o.pin = true;
	o.cache_policy = GRANARY__V1__CACHE_POLICY__CACHE_POLICY_LRU;
	ck_assert_msg(registry_set_options(r, "ds", &o, &d, &err) == ERR_OK, "%s", err.msg);
	/* No listing: the generation and its totals stay. */
	ck_assert_uint_eq(d.generation, 2);
	ck_assert_uint_eq(d.totals.files, 5);
	ck_assert(d.spec->options->pin);
	registry_dataset_release(&d);
	/* The block size is not an option one changes in place. */
	o.block_size = 1 << 20;
	ck_assert_int_eq(registry_set_options(r, "ds", &o, &d, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "options.block_size"));
	ck_assert_int_eq(registry_set_options(r, "nope", &o, &d, &err), ERR_NOT_FOUND);
	registry_free(r);
	r = open_reg(0);
	ck_assert_int_eq(registry_get(r, "ds", &d, &err), ERR_OK);
	ck_assert(d.spec->options->pin);
	ck_assert_int_eq(d.spec->options->cache_policy, GRANARY__V1__CACHE_POLICY__CACHE_POLICY_LRU);
	ck_assert_uint_eq(d.generation, 2);
	registry_dataset_release(&d);
	/* Preload prefixes change in place too, checked by the one rule. */
	{
		char *good[] = { "train/", "train/new" }, *bad[] = { "../x/" };

		o.block_size = 0;
		o.preload_prefixes = good;
		o.n_preload_prefixes = 2;
		ck_assert_int_eq(registry_set_options(r, "ds", &o, &d, &err), ERR_INVALID);
		ck_assert_msg(strstr(err.msg, "preload is off"), "%s", err.msg);
		o.preload = true;
		ck_assert_msg(registry_set_options(r, "ds", &o, &d, &err) == ERR_OK, "%s", err.msg);
		ck_assert_uint_eq(d.spec->options->n_preload_prefixes, 2);
		ck_assert_str_eq(d.spec->options->preload_prefixes[1], "train/new");
		registry_dataset_release(&d);
		o.preload_prefixes = bad;
		o.n_preload_prefixes = 1;
		ck_assert_int_eq(registry_set_options(r, "ds", &o, &d, &err), ERR_INVALID);
		ck_assert_msg(strstr(err.msg, "options.preload_prefixes") &&
				      strstr(err.msg, "preload prefix '../x/'"),
			      "%s", err.msg);
		registry_free(r);
		r = open_reg(0);
		ck_assert_int_eq(registry_get(r, "ds", &d, &err), ERR_OK);
		ck_assert_uint_eq(d.spec->options->n_preload_prefixes, 2);
		ck_assert_str_eq(d.spec->options->preload_prefixes[0], "train/");
		registry_dataset_release(&d);
	}
	registry_free(r);
}
END_TEST

START_TEST(test_registry_refresh_keeps_one_generation_back)
{
	struct registry *r = open_reg(0);
	struct registry_dataset d;
	struct spec sp;
	struct blob b;
	struct error err;
	char path[512];

	spec_init(&sp, "ds", src_uri);
	register_ok(r, &sp, &d);
	registry_dataset_release(&d);
	write_file(src, "train/new.rec", "0123456789");
	ck_assert_int_eq(registry_refresh(r, "ds", &d, &err), ERR_OK);
	ck_assert_uint_eq(d.generation, 2);
	ck_assert_uint_eq(d.totals.files, 5);
	registry_dataset_release(&d);
	ck_assert_int_eq(registry_refresh(r, "ds", &d, &err), ERR_OK);
	ck_assert_uint_eq(d.generation, 3);
	registry_dataset_release(&d);
	ck_assert_int_eq(read_blob(r, "ds", 2, 0, &b, &err), ERR_OK);
	free(b.data);
	ck_assert_int_eq(read_blob(r, "ds", 1, 0, &b, &err), ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "no longer kept"));
	free(b.data);
	ck_assert_int_eq(read_blob(r, "ds", 4, 0, &b, &err), ERR_NOT_FOUND);
	free(b.data);
	snprintf(path, sizeof(path), "%s/snapshots/ds/1.snap", data_dir);
	ck_assert_int_eq(access(path, F_OK), -1);
	ck_assert_int_eq(registry_refresh(r, "nope", &d, &err), ERR_NOT_FOUND);
	/* A refresh that fails keeps the generation served. */
	rm_tree(src);
	ck_assert_int_eq(registry_refresh(r, "ds", &d, &err), ERR_INVALID);
	ck_assert_int_eq(registry_get(r, "ds", &d, &err), ERR_OK);
	ck_assert_uint_eq(d.generation, 3);
	ck_assert_int_eq(d.state, REGISTRY_READY);
	registry_dataset_release(&d);
	registry_free(r);
}
END_TEST

START_TEST(test_registry_delete_removes_everything)
{
	struct registry *r = open_reg(0);
	struct registry_dataset d;
	struct spec sp;
	struct error err;
	char path[512];

	spec_init(&sp, "gone", src_uri);
	register_ok(r, &sp, &d);
	registry_dataset_release(&d);
	ck_assert_int_eq(registry_delete(r, "gone", &err), ERR_OK);
	ck_assert_int_eq(registry_get(r, "gone", &d, &err), ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "'gone' not found"));
	ck_assert_int_eq(registry_delete(r, "gone", &err), ERR_NOT_FOUND);
	snprintf(path, sizeof(path), "%s/datasets/gone", data_dir);
	ck_assert_int_eq(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s/snapshots/gone", data_dir);
	ck_assert_int_eq(access(path, F_OK), -1);
	/* The name is free again, for another spec too. */
	sp.o.pin = 1;
	register_ok(r, &sp, &d);
	ck_assert_uint_eq(d.generation, 1);
	registry_dataset_release(&d);
	registry_free(r);
	r = open_reg(0);
	ck_assert_int_eq(registry_get(r, "gone", &d, &err), ERR_OK);
	ck_assert(d.spec->options->pin);
	registry_dataset_release(&d);
	registry_free(r);
}
END_TEST

START_TEST(test_registry_survives_damaged_files)
{
	struct registry *r = open_reg(0);
	struct registry_dataset d;
	struct spec a, b;
	struct blob bl;
	struct error err;
	char path[512];
	FILE *f;

	spec_init(&a, "good", src_uri);
	spec_init(&b, "hurt", src_uri);
	register_ok(r, &a, &d);
	registry_dataset_release(&d);
	register_ok(r, &b, &d);
	registry_dataset_release(&d);
	registry_free(r);

	/* A corrupt record, a flipped byte in a snapshot, crash leftovers. */
	snprintf(path, sizeof(path), "%s/datasets/good", data_dir);
	f = fopen(path, "r+");
	fseek(f, 30, SEEK_SET);
	fputc('X', f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/snapshots/hurt/1.snap", data_dir);
	f = fopen(path, "r+");
	fseek(f, 20, SEEK_SET);
	fputc(0xEE, f);
	fclose(f);
	snprintf(path, sizeof(path), "%s/datasets/.orphan.Ab12Cd", data_dir);
	write_file("/", path + 1, "partial");
	snprintf(path, sizeof(path), "%s/snapshots/orphan/1.snap", data_dir);
	write_file("/", path + 1, "no record names me");

	r = open_reg(0);
	ck_assert_int_eq(registry_get(r, "good", &d, &err), ERR_NOT_FOUND);
	ck_assert_int_eq(registry_get(r, "hurt", &d, &err), ERR_OK);
	ck_assert(d.damaged);
	registry_dataset_release(&d);
	ck_assert_int_eq(read_blob(r, "hurt", 0, 0, &bl, &err), ERR_IO);
	ck_assert_ptr_nonnull(strstr(err.msg, "RefreshDataset"));
	free(bl.data);
	snprintf(path, sizeof(path), "%s/snapshots/orphan", data_dir);
	ck_assert_int_eq(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s/datasets/.orphan.Ab12Cd", data_dir);
	ck_assert_int_eq(access(path, F_OK), -1);
	/* A refresh rebuilds it. */
	ck_assert_int_eq(registry_refresh(r, "hurt", &d, &err), ERR_OK);
	ck_assert(!d.damaged);
	ck_assert_uint_eq(d.generation, 2);
	registry_dataset_release(&d);
	ck_assert_int_eq(read_blob(r, "hurt", 0, 0, &bl, &err), ERR_OK);
	free(bl.data);
	registry_free(r);
}
END_TEST

struct bg_register {
	struct registry *r;
	struct spec sp;
	enum error_code rc;
	struct registry_dataset d;
	int done; /* atomic */
	pthread_t t;
};

static void *bg_register(void *arg)
{
	struct bg_register *b = arg;
	struct error err;

	b->rc = registry_register(b->r, &b->sp.s, &b->d, &err);
	__atomic_store_n(&b->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void *bg_refresh(void *arg)
{
	struct bg_register *b = arg;
	struct error err;

	b->rc = registry_refresh(b->r, b->sp.s.name, &b->d, &err);
	return NULL;
}

static void hold_builds(bool on)
{
	pthread_mutex_lock(&hk.mu);
	hk.hold = on;
	pthread_cond_broadcast(&hk.cond);
	pthread_mutex_unlock(&hk.mu);
}

static void wait_holding(void)
{
	pthread_mutex_lock(&hk.mu);
	while (!hk.holding)
		pthread_cond_wait(&hk.cond, &hk.mu);
	pthread_mutex_unlock(&hk.mu);
}

START_TEST(test_registry_answers_while_a_registration_lists)
{
	struct registry *r = open_reg(0);
	struct bg_register first = { .r = r }, second = { .r = r };
	struct registry_dataset d, *list;
	struct spec sp;
	struct blob bl;
	struct error err;
	size_t n;

	spec_init(&sp, "ready", src_uri);
	register_ok(r, &sp, &d);
	registry_dataset_release(&d);

	hold_builds(true);
	spec_init(&first.sp, "slow", src_uri);
	pthread_create(&first.t, NULL, bg_register, &first);
	wait_holding();
	/* Get and List answer at once and show it registering. */
	ck_assert_int_eq(registry_get(r, "slow", &d, &err), ERR_OK);
	ck_assert_int_eq(d.state, REGISTRY_REGISTERING);
	ck_assert_uint_eq(d.generation, 0);
	registry_dataset_release(&d);
	ck_assert_int_eq(registry_list(r, &list, &n, &err), ERR_OK);
	ck_assert_uint_eq(n, 2);
	ck_assert_int_eq(list[1].state, REGISTRY_REGISTERING);
	registry_list_free(list, n);
	ck_assert_int_eq(read_blob(r, "slow", 0, 0, &bl, &err), ERR_UNAVAILABLE);
	free(bl.data);
	ck_assert_int_eq(registry_delete(r, "slow", &err), ERR_UNAVAILABLE);
	ck_assert_ptr_nonnull(strstr(err.msg, "registering"));
	/* Another spec under the name is refused without waiting. */
	spec_init(&sp, "slow", src_uri);
	sp.o.pin = 1;
	ck_assert_int_eq(registry_register(r, &sp.s, &d, &err), ERR_EXISTS);
	/* The same spec joins the build in progress instead of listing again. */
	spec_init(&second.sp, "slow", src_uri);
	pthread_create(&second.t, NULL, bg_register, &second);
	usleep(100000);
	ck_assert_int_eq(__atomic_load_n(&second.done, __ATOMIC_SEQ_CST), 0); /* still waiting */
	ck_assert_int_eq(hk.builds, 2);
	hold_builds(false);
	pthread_join(first.t, NULL);
	pthread_join(second.t, NULL);
	ck_assert_int_eq(first.rc, ERR_OK);
	ck_assert_int_eq(second.rc, ERR_OK);
	ck_assert_uint_eq(first.d.generation, 1);
	ck_assert_uint_eq(second.d.generation, 1);
	ck_assert_int_eq(second.d.created_unix_ms, first.d.created_unix_ms);
	registry_dataset_release(&first.d);
	registry_dataset_release(&second.d);
	ck_assert_int_eq(hk.builds, 2); /* "ready" and "slow", once */

	/* A refresh in progress: the generation is still served, Get shows it. */
	hold_builds(true);
	spec_init(&first.sp, "slow", src_uri);
	pthread_create(&first.t, NULL, bg_refresh, &first);
	wait_holding();
	ck_assert_int_eq(registry_get(r, "slow", &d, &err), ERR_OK);
	ck_assert_int_eq(d.state, REGISTRY_REFRESHING);
	ck_assert_uint_eq(d.generation, 1);
	registry_dataset_release(&d);
	ck_assert_int_eq(read_blob(r, "slow", 0, 0, &bl, &err), ERR_OK);
	ck_assert_uint_eq(bl.generation, 1);
	free(bl.data);
	hold_builds(false);
	pthread_join(first.t, NULL);
	ck_assert_int_eq(first.rc, ERR_OK);
	ck_assert_uint_eq(first.d.generation, 2);
	registry_dataset_release(&first.d);
	registry_free(r);
}
END_TEST

START_TEST(test_registry_failed_registration_leaves_nothing_and_waiters_see_why)
{
	struct registry *r = open_reg(0);
	struct bg_register a = { .r = r }, b = { .r = r };
	struct registry_dataset d;
	struct error err;
	char path[512], uri[256];

	/* The directory is there when the registration is admitted and gone
	 * when its listing starts. */
	snprintf(path, sizeof(path), "%s/missing", root);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	snprintf(uri, sizeof(uri), "file://%s/missing/", root);
	hold_builds(true);
	spec_init(&a.sp, "doomed", uri);
	spec_init(&b.sp, "doomed", uri);
	pthread_create(&a.t, NULL, bg_register, &a);
	wait_holding();
	ck_assert_int_eq(rmdir(path), 0);
	pthread_create(&b.t, NULL, bg_register, &b);
	usleep(50000);
	hold_builds(false);
	pthread_join(a.t, NULL);
	pthread_join(b.t, NULL);
	ck_assert_int_eq(a.rc, ERR_INVALID);
	ck_assert_int_eq(b.rc, ERR_INVALID);
	ck_assert_int_eq(registry_get(r, "doomed", &d, &err), ERR_NOT_FOUND);
	snprintf(path, sizeof(path), "%s/snapshots/doomed", data_dir);
	ck_assert_int_eq(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s/datasets/doomed", data_dir);
	ck_assert_int_eq(access(path, F_OK), -1);
	registry_free(r);
}
END_TEST

START_TEST(test_registry_limits_builds_in_progress)
{
	struct registry *r = open_reg(1);
	struct bg_register first = { .r = r };
	struct registry_dataset d;
	struct spec sp;
	struct error err;

	hold_builds(true);
	spec_init(&first.sp, "slow", src_uri);
	pthread_create(&first.t, NULL, bg_register, &first);
	wait_holding();
	/* A caller's thread never waits behind a full build budget. */
	spec_init(&sp, "other", src_uri);
	ck_assert_int_eq(registry_register(r, &sp.s, &d, &err), ERR_UNAVAILABLE);
	ck_assert_ptr_nonnull(strstr(err.msg, "in progress"));
	ck_assert_int_eq(registry_register(r, &first.sp.s, &d, &err), ERR_UNAVAILABLE);
	ck_assert_int_eq(registry_get(r, "slow", &d, &err), ERR_OK);
	registry_dataset_release(&d);
	hold_builds(false);
	pthread_join(first.t, NULL);
	ck_assert_int_eq(first.rc, ERR_OK);
	registry_dataset_release(&first.d);
	register_ok(r, &sp, &d);
	registry_dataset_release(&d);
	registry_free(r);
}
END_TEST

START_TEST(test_registry_refuses_a_relative_data_dir)
{
	struct registry_options opt = { .data_dir = "meta" };
	struct registry *r = NULL;
	struct error err;

	ck_assert_int_eq(registry_open(&opt, &r, &err), ERR_INVALID);
	ck_assert_ptr_null(r);
	ck_assert_ptr_nonnull(strstr(err.msg, "absolute"));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("registry");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_registry_registers_and_builds_generation_one);
	tcase_add_test(tc, test_registry_refuses_another_spec_under_the_same_name);
	tcase_add_test(tc, test_registry_checks_every_field_by_name);
	tcase_add_test(tc, test_registry_refuses_a_source_that_leaves_its_prefix);
	tcase_add_test(tc, test_registry_reloads_records_and_snapshots_without_listing);
	tcase_add_test(tc, test_registry_refresh_keeps_one_generation_back);
	tcase_add_test(tc, test_registry_set_options_in_place_survives_a_reopen);
	tcase_add_test(tc, test_registry_delete_removes_everything);
	tcase_add_test(tc, test_registry_survives_damaged_files);
	tcase_add_test(tc, test_registry_answers_while_a_registration_lists);
	tcase_add_test(tc, test_registry_failed_registration_leaves_nothing_and_waiters_see_why);
	tcase_add_test(tc, test_registry_limits_builds_in_progress);
	tcase_add_test(tc, test_registry_refuses_a_relative_data_dir);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
