/*
 * test_preload.c - preload jobs against a file:// store and a real
 * blockstore: progress to done, named objects, prefixes, failures reported, unknown
 * datasets and jobs, jobs cancelled when their dataset is removed.
 */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/preload.h"
#include "common/log.h"
#include "common/retry.h"
#include "unit/check_main.h"

#define BS (64u << 10)

static char base[64], data_dir[96], cache_dir[96];
/* The file:// sources lie under base. */
static const char *const file_roots[] = { base };
static struct blockstore *bs;
static struct fetcher *f;
static struct preloader *pl;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void write_object(const char *key, size_t size)
{
	char path[256];
	char *buf = calloc(1, size ? size : 1);
	FILE *fp;

	snprintf(path, sizeof(path), "%s/ds/%s", data_dir, key);
	fp = fopen(path, "w");
	ck_assert_ptr_nonnull(fp);
	ck_assert_uint_eq(fwrite(buf, 1, size, fp), size);
	fclose(fp);
	free(buf);
}

static void setup(void)
{
	char path[160], source[160];
	struct error err;

	snprintf(base, sizeof(base), "/tmp/test_preload_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(base));
	snprintf(data_dir, sizeof(data_dir), "%s/data", base);
	snprintf(cache_dir, sizeof(cache_dir), "%s/cache", base);
	ck_assert_int_eq(mkdir(data_dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/ds", data_dir);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/ds/d", data_dir);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	write_object("a.bin", 3 * BS + 5);   /* 4 blocks */
	write_object("d/b.bin", 2 * BS);     /* 2 blocks */
	write_object("d/empty", 0);          /* none */
	ck_assert_int_eq(blockstore_open(&(struct blockstore_config){ .dir = cache_dir,
								       .capacity = 64u << 20,
								       .block_size = BS },
					 &bs, &err),
			 ERR_OK);
	ck_assert_int_eq(fetch_new(&(struct fetch_config){ .bs = bs, .max_inflight = 4,
							    .threads = 1,
							    .file_roots = file_roots, .nfile_roots = 1 },
				   &f, &err),
			 ERR_OK);
	snprintf(source, sizeof(source), "file://%s/ds/", data_dir);
	ck_assert_int_eq(fetch_dataset_register(f, &(struct fetch_dataset_config){ .name = "ds",
										   .source = source,
										   .block_size = BS },
						NULL, &err),
			 ERR_OK);
	ck_assert_int_eq(preload_new(f, 3, NULL, &pl, &err), ERR_OK);
}

static void teardown(void)
{
	preload_free(pl);
	fetch_free(f);
	blockstore_free(bs);
	nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static struct preload_status wait_finished(uint64_t id)
{
	struct preload_status st;
	struct error err;
	uint64_t deadline = retry_now_ms() + 20000;

	for (;;) {
		ck_assert_int_eq(preload_get(pl, id, &st, &err), ERR_OK);
		if (st.state != PRELOAD_RUNNING || retry_now_ms() > deadline)
			return st;
		retry_sleep_ms(5);
	}
}

START_TEST(test_preload_whole_dataset_reaches_done)
{
	struct preload_status st;
	struct blockstore_stats bst;
	struct preload_totals tot;
	uint64_t id = 0;
	struct error err;

	ck_assert_int_eq(preload_start(pl, "ds", NULL, 0, &id, &err), ERR_OK);
	ck_assert_uint_eq(id, 1);
	st = wait_finished(id);
	ck_assert_str_eq(preload_state_name(st.state), "done");
	ck_assert_str_eq(st.dataset, "ds");
	ck_assert_uint_eq(st.objects, 3);
	ck_assert_uint_eq(st.blocks_total, 6);
	ck_assert_uint_eq(st.blocks_done, 6);
	ck_assert_uint_eq(st.blocks_fetched, 6);
	ck_assert_uint_eq(st.bytes_total, 5 * BS + 5);
	ck_assert_uint_eq(st.bytes_done, 5 * BS + 5);
	ck_assert_uint_eq(st.errors, 0);
	ck_assert_str_eq(st.error, "");
	blockstore_get_stats(bs, &bst);
	ck_assert_uint_eq(bst.blocks, 6);
	preload_get_totals(pl, &tot);
	ck_assert_uint_eq(tot.running, 0);

	/* Again: everything is there already, nothing is fetched. */
	ck_assert_int_eq(preload_start(pl, "ds", NULL, 0, &id, &err), ERR_OK);
	ck_assert_uint_eq(id, 2);
	st = wait_finished(id);
	ck_assert_int_eq(st.state, PRELOAD_DONE);
	ck_assert_uint_eq(st.blocks_done, 6);
	ck_assert_uint_eq(st.blocks_fetched, 0);
}
END_TEST

START_TEST(test_preload_named_objects_and_a_missing_one)
{
	static const char *const objs[] = { "d/b.bin", "missing.bin" };
	struct preload_status st;
	uint64_t id;
	struct error err;

	ck_assert_int_eq(preload_start(pl, "ds", objs, 2, &id, &err), ERR_OK);
	st = wait_finished(id);
	ck_assert_str_eq(preload_state_name(st.state), "failed");
	ck_assert_uint_eq(st.objects, 1);
	ck_assert_uint_eq(st.blocks_total, 2);
	ck_assert_uint_eq(st.blocks_done, 2);
	ck_assert_uint_eq(st.errors, 1);
	ck_assert_msg(strstr(st.error, "missing.bin"), "%s", st.error);
}
END_TEST

START_TEST(test_preload_under_prefixes)
{
	static const char *const under[] = { "d/b", "d/", "zzz/" };
	static const char *const a[] = { "a" };
	static const char *const bad[] = { "d/", "../" };
	const char *many[BLOCK_PRELOAD_PREFIXES_MAX + 1];
	struct preload_status st;
	struct blockstore_stats bst;
	uint64_t id;
	struct error err;

	/* "d/b" lies under "d/" (listed once); "zzz/" holds nothing */
	ck_assert_int_eq(preload_start_under(pl, "ds", under, 3, &id, &err), ERR_OK);
	st = wait_finished(id);
	ck_assert_str_eq(preload_state_name(st.state), "done");
	ck_assert_uint_eq(st.objects, 2);
	ck_assert_uint_eq(st.blocks_total, 2);
	ck_assert_uint_eq(st.blocks_done, 2);
	blockstore_get_stats(bs, &bst);
	ck_assert_uint_eq(bst.blocks, 2); /* a.bin not preloaded */
	/* a prefix that is part of a name */
	ck_assert_int_eq(preload_start_under(pl, "ds", a, 1, &id, &err), ERR_OK);
	st = wait_finished(id);
	ck_assert_uint_eq(st.objects, 1);
	ck_assert_uint_eq(st.blocks_fetched, 4);
	/* none: the whole dataset, nothing left to fetch */
	ck_assert_int_eq(preload_start_under(pl, "ds", NULL, 0, &id, &err), ERR_OK);
	st = wait_finished(id);
	ck_assert_uint_eq(st.objects, 3);
	ck_assert_uint_eq(st.blocks_fetched, 0);
	ck_assert_int_eq(preload_start_under(pl, "ds", bad, 2, &id, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "preload prefix '../'"), "%s", err.msg);
	for (size_t i = 0; i <= BLOCK_PRELOAD_PREFIXES_MAX; i++)
		many[i] = "d/";
	ck_assert_int_eq(preload_start_under(pl, "ds", many, BLOCK_PRELOAD_PREFIXES_MAX + 1, &id,
					     &err),
			 ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "at most 64"), "%s", err.msg);
}
END_TEST

/* A pinned dataset of many blocks, removed while its preload runs, as the
 * worker removes one (DELETE, or granary-meta no longer has it): the job
 * ends at once and nothing of the dataset stays cached. */
START_TEST(test_preload_cancelled_when_its_dataset_is_removed)
{
	static const char *const why = "cancelled: dataset 'big' was removed";
	char path[160], source[160];
	struct blockstore_usage u[4];
	struct blockstore_stats bst;
	struct preload_status st;
	uint64_t id, dropped;
	struct error err;

	snprintf(path, sizeof(path), "%s/ds/big", data_dir);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	for (int i = 0; i < 50; i++) { /* 400 blocks */
		snprintf(path, sizeof(path), "big/o%02d", i);
		write_object(path, 8 * BS);
	}
	snprintf(source, sizeof(source), "file://%s/ds/big/", data_dir);
	ck_assert_int_eq(fetch_dataset_register(f, &(struct fetch_dataset_config){ .name = "big",
										   .source = source,
										   .block_size = BS,
										   .pin = true },
						NULL, &err),
			 ERR_OK);
	ck_assert_int_eq(preload_start(pl, "big", NULL, 0, &id, &err), ERR_OK);
	do {
		retry_sleep_ms(1);
		ck_assert_int_eq(preload_get(pl, id, &st, &err), ERR_OK);
	} while (st.blocks_done < 4 && st.state == PRELOAD_RUNNING);

	ck_assert_uint_eq(preload_cancel(pl, "big", 0, why), 1);
	ck_assert_int_eq(fetch_dataset_unregister(f, "big", &dropped, &err), ERR_OK);
	/* ended when preload_cancel returned: no block of it is written later */
	ck_assert_int_eq(preload_get(pl, id, &st, &err), ERR_OK);
	ck_assert_str_eq(preload_state_name(st.state), "failed");
	ck_assert_str_eq(st.error, why);
	ck_assert_uint_lt(st.blocks_done, st.blocks_total);
	retry_sleep_ms(50);
	ck_assert_uint_eq(blockstore_dataset_bytes(bs, u, 4), 0);
	blockstore_get_stats(bs, &bst);
	ck_assert_uint_eq(bst.blocks, 0);
	ck_assert_uint_eq(preload_cancel(pl, "big", 0, why), 0); /* nothing left to cancel */
}
END_TEST

START_TEST(test_preload_refuses_unknown_dataset_bad_key_and_unknown_job)
{
	static const char *const bad[] = { "../x" };
	struct preload_status st;
	uint64_t id = 7;
	struct error err;

	ck_assert_int_eq(preload_start(pl, "nope", NULL, 0, &id, &err), ERR_NOT_FOUND);
	ck_assert_str_eq(err.msg, "unknown dataset 'nope'");
	ck_assert_uint_eq(id, 0);
	ck_assert_int_eq(preload_start(pl, "ds", bad, 1, &id, &err), ERR_INVALID);
	ck_assert_int_eq(preload_get(pl, 42, &st, &err), ERR_NOT_FOUND);
	ck_assert_str_eq(err.msg, "unknown preload job 42");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("preload");
	TCase *tc = tcase_create("core");

	log_set_level(LOG_LEVEL_WARN);

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_preload_whole_dataset_reaches_done);
	tcase_add_test(tc, test_preload_named_objects_and_a_missing_one);
	tcase_add_test(tc, test_preload_under_prefixes);
	tcase_add_test(tc, test_preload_refuses_unknown_dataset_bad_key_and_unknown_job);
	tcase_add_test(tc, test_preload_cancelled_when_its_dataset_is_removed);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
