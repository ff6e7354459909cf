/*
 * test_preload.c - preload jobs against a file:// store and a real
 * blockstore: progress to done, named objects, prefixes, failures reported, unknown
 * datasets and jobs, jobs cancelled when their dataset is removed, jobs
 * that fetch only the blocks placement gives their worker, while the
 * membership changes too, and cancelled while they split a large dataset;
 * the code of a failure, and whether another run would fail the same way.
 */
#include <fcntl.h>
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
	ck_assert_int_eq(st.code, ERR_OK);
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
	/* removed since it was named: another run may find it */
	ck_assert_int_eq(st.code, ERR_NOT_FOUND);
	ck_assert(!preload_error_lasts(st.code));
}
END_TEST

/* A listing past listing.max_objects fails with ERR_NO_SPACE, naming the
 * setting: another run over the same source fails the same way, as one
 * refused by the store's credentials or one of an object no client can
 * read would; one the store did not answer, or a cancelled one, may not. */
START_TEST(test_preload_failure_code_tells_whether_it_lasts)
{
	struct preloader *small = NULL;
	struct preload_status st;
	uint64_t id;
	struct error err;

	ck_assert_int_eq(preload_new(f, 1, &(struct store_list_limits){ .max_objects = 2 }, &small,
				     &err),
			 ERR_OK);
	ck_assert_int_eq(preload_start(small, "ds", NULL, 0, &id, &err), ERR_OK);
	do {
		retry_sleep_ms(1);
		ck_assert_int_eq(preload_get(small, id, &st, &err), ERR_OK);
	} while (st.state == PRELOAD_RUNNING);
	preload_free(small);
	ck_assert_int_eq(st.state, PRELOAD_FAILED);
	ck_assert_int_eq(st.code, ERR_NO_SPACE);
	ck_assert_msg(strstr(st.error, "listing.max_objects"), "%s", st.error);
	ck_assert(preload_error_lasts(st.code));
	ck_assert(preload_error_lasts(ERR_INVALID));
	ck_assert(preload_error_lasts(ERR_PERMISSION));
	ck_assert(preload_error_lasts(ERR_UNAUTHENTICATED));
	ck_assert(preload_error_lasts(ERR_UNSUPPORTED));
	ck_assert(!preload_error_lasts(ERR_UNAVAILABLE));
	ck_assert(!preload_error_lasts(ERR_TIMEOUT));
	ck_assert(!preload_error_lasts(ERR_BUSY));
	ck_assert(!preload_error_lasts(ERR_IO));
	ck_assert(!preload_error_lasts(ERR_CANCELLED));
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
	ck_assert_int_eq(preload_start_under(pl, "ds", under, 3, NULL, &id, &err), ERR_OK);
	st = wait_finished(id);
	ck_assert_str_eq(preload_state_name(st.state), "done");
	ck_assert_uint_eq(st.objects, 2);
	ck_assert_uint_eq(st.blocks_total, 2);
	ck_assert_uint_eq(st.blocks_done, 2);
	blockstore_get_stats(bs, &bst);
	ck_assert_uint_eq(bst.blocks, 2); /* a.bin not preloaded */
	/* a prefix that is part of a name */
	ck_assert_int_eq(preload_start_under(pl, "ds", a, 1, NULL, &id, &err), ERR_OK);
	st = wait_finished(id);
	ck_assert_uint_eq(st.objects, 1);
	ck_assert_uint_eq(st.blocks_fetched, 4);
	/* none: the whole dataset, nothing left to fetch */
	ck_assert_int_eq(preload_start_under(pl, "ds", NULL, 0, NULL, &id, &err), ERR_OK);
	st = wait_finished(id);
	ck_assert_uint_eq(st.objects, 3);
	ck_assert_uint_eq(st.blocks_fetched, 0);
	ck_assert_int_eq(preload_start_under(pl, "ds", bad, 2, NULL, &id, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "preload prefix '../'"), "%s", err.msg);
	for (size_t i = 0; i <= BLOCK_PRELOAD_PREFIXES_MAX; i++)
		many[i] = "d/";
	ck_assert_int_eq(preload_start_under(pl, "ds", many, BLOCK_PRELOAD_PREFIXES_MAX + 1, NULL,
					     &id, &err),
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
	ck_assert_int_eq(st.code, ERR_CANCELLED);
	ck_assert_uint_lt(st.blocks_done, st.blocks_total);
	retry_sleep_ms(50);
	ck_assert_uint_eq(blockstore_dataset_bytes(bs, u, 4), 0);
	blockstore_get_stats(bs, &bst);
	ck_assert_uint_eq(bst.blocks, 0);
	ck_assert_uint_eq(preload_cancel(pl, "big", 0, why), 0); /* nothing left to cancel */
}
END_TEST

/* --- placed jobs ----------------------------------------------------------- */

#define MANY_OBJECTS 50 /* of 8 blocks each */
#define MANY_BLOCKS (MANY_OBJECTS * 8)

/* The dataset 'many' (MANY_BLOCKS blocks) and the ETags of its objects. */
static char many_etag[MANY_OBJECTS][80];

static void many_register(void)
{
	char path[160], source[160];
	struct fetch_dataset *ds = NULL;
	struct error err;

	snprintf(path, sizeof(path), "%s/ds/many", data_dir);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	for (int i = 0; i < MANY_OBJECTS; i++) {
		snprintf(path, sizeof(path), "many/o%02d", i);
		write_object(path, 8 * BS);
	}
	snprintf(source, sizeof(source), "file://%s/ds/many/", data_dir);
	ck_assert_int_eq(fetch_dataset_register(f, &(struct fetch_dataset_config){ .name = "many",
										   .source = source,
										   .block_size = BS },
						NULL, &err),
			 ERR_OK);
	ck_assert_int_eq(fetch_dataset_get(f, "many", &ds, &err), ERR_OK);
	for (int i = 0; i < MANY_OBJECTS; i++) {
		const struct fetch_dataset_desc *d = fetch_dataset_describe(ds);
		struct store_object info;

		snprintf(path, sizeof(path), "%so%02d", d->prefix, i);
		ck_assert_int_eq(store_head(fetch_dataset_store(ds), path, &info, &err), ERR_OK);
		snprintf(many_etag[i], sizeof(many_etag[i]), "%s", info.etag);
		store_object_release(&info);
	}
	fetch_dataset_put(f, ds);
}

/* The membership: the workers ids[0..n), as meta would list them. */
static void set_members(struct placement *m, const char *const *ids, size_t n, uint64_t version)
{
	struct placement_worker w[4];
	struct error err;

	for (size_t i = 0; i < n; i++)
		w[i] = (struct placement_worker){ ids[i], "127.0.0.1:7480" };
	ck_assert_int_eq(placement_update(m, w, n, version, &err), ERR_OK);
}

/* Checks every block of 'many': cached exactly when m gives it to self
 * (self NULL: every block cached); returns how many are. The owner is
 * computed as a mount computes it (fuse/sources.c): the block's key hash,
 * then placement_owner. */
static int many_check_cached(struct placement *m, const char *self)
{
	struct fetch_dataset *ds = NULL;
	const struct fetch_dataset_desc *d;
	struct error err;
	int cached = 0;

	ck_assert_int_eq(fetch_dataset_get(f, "many", &ds, &err), ERR_OK);
	d = fetch_dataset_describe(ds);
	for (int i = 0; i < MANY_OBJECTS; i++) {
		char key[16], full[200], addr[PLACEMENT_ADDRESS_MAX], id[64];

		snprintf(key, sizeof(key), "o%02d", i);
		snprintf(full, sizeof(full), "%s%s", d->prefix, key);
		for (uint64_t b = 0; b < 8; b++) {
			uint8_t hash[BLOCK_HASH_LEN];
			bool want, have;

			block_key_hash(&(struct block_key){ .endpoint = d->key_endpoint,
							    .bucket = d->bucket,
							    .object = full,
							    .etag = many_etag[i],
							    .block_size = d->block_size,
							    .index = b },
				       hash);
			ck_assert_int_eq(placement_owner(m, hash, addr, id, sizeof(id)), ERR_OK);
			want = !self || strcmp(id, self) == 0;
			have = fetch_block_cached(f, ds, key, many_etag[i], b);
			ck_assert_msg(have == want, "%s block %llu: owner %s, %s here", key,
				      (unsigned long long)b, id, have ? "cached" : "not cached");
			cached += have;
		}
	}
	fetch_dataset_put(f, ds);
	return cached;
}

/* A preload of 'many' by worker self over m, to its end. */
static struct preload_status many_preload(struct placement *m, const char *self)
{
	const struct preload_placement placed = { m, self };
	struct error err;
	uint64_t id = 0;

	ck_assert_int_eq(preload_start_under(pl, "many", NULL, 0, &placed, &id, &err), ERR_OK);
	return wait_finished(id);
}

/*
 * Two workers preloading one dataset each fetch only the blocks placement
 * gives them: together every block once (here one cache stands for both),
 * each block where the mounts look for it. A worker the membership does
 * not list fetches nothing. A placement without its parts is refused.
 */
START_TEST(test_preload_placed_fetches_only_the_blocks_placed_here)
{
	static const char *const ids[] = { "w1", "w2" };
	struct placement *m = NULL;
	struct preload_status st1, st2, st3;
	struct error err;
	uint64_t id = 0;

	many_register();
	ck_assert_int_eq(placement_new(&m, &err), ERR_OK);
	set_members(m, ids, 2, 1);

	st1 = many_preload(m, "w1");
	ck_assert_str_eq(preload_state_name(st1.state), "done");
	ck_assert_uint_eq(st1.objects, MANY_OBJECTS);
	ck_assert_uint_eq(st1.blocks_total + st1.blocks_elsewhere, MANY_BLOCKS);
	ck_assert_uint_gt(st1.blocks_total, 0);
	ck_assert_uint_gt(st1.blocks_elsewhere, 0);
	ck_assert_uint_eq(st1.blocks_done, st1.blocks_total);
	ck_assert_uint_eq(st1.blocks_fetched, st1.blocks_total);
	ck_assert_uint_eq(st1.bytes_total, st1.blocks_total * BS);
	ck_assert_int_eq(many_check_cached(m, "w1"), (int)st1.blocks_total);

	/* the other worker: the rest, and nothing twice */
	st2 = many_preload(m, "w2");
	ck_assert_int_eq(st2.state, PRELOAD_DONE);
	ck_assert_uint_eq(st2.blocks_total, st1.blocks_elsewhere);
	ck_assert_uint_eq(st2.blocks_elsewhere, st1.blocks_total);
	ck_assert_uint_eq(st2.blocks_fetched, st1.blocks_elsewhere);
	ck_assert_int_eq(many_check_cached(m, NULL), MANY_BLOCKS);

	/* not a member: every block is another's */
	st3 = many_preload(m, "w3");
	ck_assert_int_eq(st3.state, PRELOAD_DONE);
	ck_assert_uint_eq(st3.blocks_total, 0);
	ck_assert_uint_eq(st3.blocks_elsewhere, MANY_BLOCKS);
	ck_assert_uint_eq(st3.blocks_fetched, 0);

	ck_assert_int_eq(preload_start_under(pl, "many", NULL, 0,
					     &(struct preload_placement){ NULL, "w1" }, &id, &err),
			 ERR_INVALID);
	ck_assert_str_eq(err.msg, "preload: a placement needs the membership and this worker's id");
	ck_assert_int_eq(preload_start_under(pl, "many", NULL, 0,
					     &(struct preload_placement){ m, "" }, &id, &err),
			 ERR_INVALID);
	placement_free(m);
}
END_TEST

/*
 * The membership changes while a job runs (w2 leaves): the blocks it had
 * not handed out yet follow the new membership, those it passed are the
 * next job's, which fetches exactly them; then w2 joins again and a job
 * of w1 fetches nothing.
 */
START_TEST(test_preload_placed_follows_a_membership_change)
{
	static const char *const both[] = { "w1", "w2" }, *const w1[] = { "w1" };
	struct placement *m = NULL;
	struct preload_status split, mid, st, next;
	struct error err;
	uint64_t id = 0;

	many_register();
	ck_assert_int_eq(placement_new(&m, &err), ERR_OK);
	set_members(m, both, 2, 1);
	ck_assert_int_eq(preload_start_under(pl, "many", NULL, 0,
					     &(struct preload_placement){ m, "w1" }, &id, &err),
			 ERR_OK);
	do {
		retry_sleep_ms(1);
		ck_assert_int_eq(preload_get(pl, id, &split, &err), ERR_OK);
	} while (split.blocks_done < 4 && split.state == PRELOAD_RUNNING);
	set_members(m, w1, 1, 2);
	ck_assert_int_eq(preload_get(pl, id, &mid, &err), ERR_OK);
	/* the change came early: most of w1's blocks were still to fetch */
	ck_assert_uint_lt(mid.blocks_done, split.blocks_total / 2);
	st = wait_finished(id);
	ck_assert_int_eq(st.state, PRELOAD_DONE);
	ck_assert_uint_eq(st.blocks_total + st.blocks_elsewhere, MANY_BLOCKS);
	ck_assert_uint_gt(st.blocks_total, split.blocks_total);
	ck_assert_uint_eq(st.blocks_done, st.blocks_total);
	ck_assert_uint_eq(st.blocks_fetched, st.blocks_total);
	ck_assert_uint_eq(st.bytes_total, st.blocks_total * BS);

	/* the next job: what the first passed before the change, nothing twice */
	next = many_preload(m, "w1");
	ck_assert_int_eq(next.state, PRELOAD_DONE);
	ck_assert_uint_eq(next.blocks_total, MANY_BLOCKS);
	ck_assert_uint_eq(next.blocks_elsewhere, 0);
	ck_assert_uint_eq(next.blocks_fetched, st.blocks_elsewhere);
	ck_assert_int_eq(many_check_cached(m, "w1"), MANY_BLOCKS);

	/* w2 back: w1 holds its own already */
	set_members(m, both, 2, 3);
	next = many_preload(m, "w1");
	ck_assert_uint_eq(next.blocks_fetched, 0);
	ck_assert_uint_eq(next.blocks_total + next.blocks_elsewhere, MANY_BLOCKS);
	ck_assert_uint_gt(next.blocks_elsewhere, 0);
	placement_free(m);
}
END_TEST

/*
 * A placed job of a dataset of 4 Mi blocks (one sparse 256 GiB object)
 * takes seconds to split them between the workers: cancelled meanwhile,
 * it ends within milliseconds, not after the split, so that the member
 * thread that cancels it keeps heartbeating.
 */
START_TEST(test_preload_placed_split_stops_when_cancelled)
{
	static const char *const ids[] = { "w1", "w2" }, *const why = "cancelled: by the test";
	struct placement *m = NULL;
	struct preload_status st;
	char path[160], source[160];
	uint64_t id = 0, t0, ms;
	struct error err;
	int fd;

	snprintf(path, sizeof(path), "%s/ds/huge", data_dir);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/ds/huge/o", data_dir);
	fd = open(path, O_WRONLY | O_CREAT, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)1 << 38), 0);
	close(fd);
	snprintf(source, sizeof(source), "file://%s/ds/huge/", data_dir);
	ck_assert_int_eq(fetch_dataset_register(f, &(struct fetch_dataset_config){ .name = "huge",
										   .source = source,
										   .block_size = BS },
						NULL, &err),
			 ERR_OK);
	ck_assert_int_eq(placement_new(&m, &err), ERR_OK);
	set_members(m, ids, 2, 1);
	ck_assert_int_eq(preload_start_under(pl, "huge", NULL, 0,
					     &(struct preload_placement){ m, "w1" }, &id, &err),
			 ERR_OK);
	retry_sleep_ms(100); /* listed: splitting */
	t0 = retry_now_ms();
	ck_assert_uint_eq(preload_cancel(pl, "huge", id, why), 1);
	ms = retry_now_ms() - t0;
	ck_assert_int_eq(preload_get(pl, id, &st, &err), ERR_OK);
	ck_assert_int_eq(st.state, PRELOAD_FAILED);
	ck_assert_str_eq(st.error, why);
	ck_assert_int_eq(st.code, ERR_CANCELLED);
	/* It took 1.4 s when the split did not look at the cancel. */
	ck_assert_msg(ms < 700, "cancelling the split took %llu ms", (unsigned long long)ms);
	placement_free(m);
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
	tcase_add_test(tc, test_preload_failure_code_tells_whether_it_lasts);
	tcase_add_test(tc, test_preload_under_prefixes);
	tcase_add_test(tc, test_preload_refuses_unknown_dataset_bad_key_and_unknown_job);
	tcase_add_test(tc, test_preload_cancelled_when_its_dataset_is_removed);
	tcase_add_test(tc, test_preload_placed_fetches_only_the_blocks_placed_here);
	tcase_add_test(tc, test_preload_placed_follows_a_membership_change);
	tcase_add_test(tc, test_preload_placed_split_stops_when_cancelled);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
