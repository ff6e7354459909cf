/*
 * test_fetch.c - the dataset registry and the miss path against a file://
 * store and a real blockstore in a temp dir: bytes, the short last block,
 * single flight, admission refusals served from memory, corrupt blocks
 * fetched again, If-Match, read-ahead.
 */
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/fetch.h"
#include "common/log.h"
#include "common/retry.h"
#include "unit/check_main.h"

#define BS (64u << 10) /* the smallest block size keeps the files small */
#define BIG_SIZE (3 * BS + 1000)

static char base[64], data_dir[96], cache_dir[96];
/* The file:// sources lie under base. */
static const char *const file_roots[] = { base };
static struct blockstore *bs;
static struct fetcher *f;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void fill(unsigned char *buf, size_t n, unsigned seed)
{
	uint64_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (unsigned char)x;
	}
}

static void write_object(const char *key, size_t size, unsigned seed)
{
	char path[256];
	unsigned char *buf = malloc(size ? size : 1);
	FILE *fp;

	fill(buf, size, seed);
	snprintf(path, sizeof(path), "%s/ds/%s", data_dir, key);
	fp = fopen(path, "w");
	ck_assert_ptr_nonnull(fp);
	ck_assert_uint_eq(fwrite(buf, 1, size, fp), size);
	fclose(fp);
	free(buf);
}

/* run_block_done, the hook of the tests of coalesced read-ahead. */
typedef void run_hook_fn(uint64_t index, void *arg);

/* The next open_cache_full opens the fetcher as granary-worker does
 * (fetch_config.no_recent). */
static bool as_worker;
/* The next open_cache_full's read-ahead: its threads (0: 2) and the jobs
 * they run at once (fetch_config.readahead_inflight, _max). */
static unsigned ra_threads, ra_floor, ra_cap;

static void open_cache_full(uint64_t capacity, bool direct_write, uint64_t coalesce,
			    run_hook_fn *hook)
{
	struct error err;

	ck_assert_int_eq(blockstore_open(&(struct blockstore_config){ .dir = cache_dir,
								       .capacity = capacity,
								       .block_size = BS,
								       .direct_write = direct_write },
					 &bs, &err),
			 ERR_OK);
	ck_assert_int_eq(fetch_new(&(struct fetch_config){ .bs = bs, .max_inflight = 4,
							    .threads = ra_threads ? ra_threads : 2,
							    .readahead_inflight = ra_floor,
							    .readahead_inflight_max = ra_cap,
							    .readahead_max = coalesce ? 32 : 8,
							    .coalesce_bytes = coalesce,
							    .run_block_done = hook,
							    .no_recent = as_worker,
							    .file_roots = file_roots, .nfile_roots = 1 },
				   &f, &err),
			 ERR_OK);
}

static void open_cache_with(uint64_t capacity, bool direct_write)
{
	open_cache_full(capacity, direct_write, 0, NULL);
}

static void open_cache(uint64_t capacity)
{
	open_cache_with(capacity, false);
}

static void close_cache(void)
{
	fetch_free(f);
	blockstore_free(bs);
	f = NULL;
	bs = NULL;
}

static void register_ds(const char *name, enum blockstore_policy policy, bool pin)
{
	char source[160];
	struct error err;

	snprintf(source, sizeof(source), "file://%s/ds/", data_dir);
	ck_assert_msg(fetch_dataset_register(f, &(struct fetch_dataset_config){ .name = name,
										.source = source,
										.block_size = BS,
										.policy = policy,
										.pin = pin },
					     NULL, &err) == ERR_OK,
		      "register: %s", err.msg);
}

static void setup(void)
{
	char path[160];

	snprintf(base, sizeof(base), "/tmp/test_fetch_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(base));
	snprintf(data_dir, sizeof(data_dir), "%s/data", base);
	snprintf(cache_dir, sizeof(cache_dir), "%s/cache", base);
	ck_assert_int_eq(mkdir(data_dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/ds", data_dir);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/ds/sub", data_dir);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/outside", data_dir);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	write_object("big.bin", BIG_SIZE, 1);
	write_object("sub/exact.bin", 2 * BS, 2);
	write_object("empty", 0, 3);
	open_cache(64u << 20);
	register_ds("ds", BLOCKSTORE_LRU, false);
}

static void teardown(void)
{
	close_cache();
	nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static struct fetch_dataset *get_ds(const char *name)
{
	struct fetch_dataset *ds = NULL;
	struct error err;

	ck_assert_msg(fetch_dataset_get(f, name, &ds, &err) == ERR_OK, "%s", err.msg);
	return ds;
}

static void etag_of(struct fetch_dataset *ds, const char *key, char *etag)
{
	struct store_object info;
	char full[256];
	struct error err;

	snprintf(full, sizeof(full), "%s%s", fetch_dataset_describe(ds)->prefix, key);
	ck_assert_int_eq(store_head(fetch_dataset_store(ds), full, &info, &err), ERR_OK);
	snprintf(etag, 80, "%s", info.etag);
	store_object_release(&info);
}

/* The bytes of a result, whichever kind it is, into a malloc'd buffer. */
static unsigned char *result_bytes(const struct fetch_result *r, uint64_t *len)
{
	unsigned char *buf;

	*len = fetch_result_length(r);
	buf = malloc(*len ? *len : 1);
	if (r->ref) {
		ck_assert_int_eq(pread(blockstore_ref_fd(r->ref), buf, *len,
				       (off_t)blockstore_ref_offset(r->ref)),
				 (ssize_t)*len);
	} else {
		ck_assert_ptr_nonnull(r->buf);
		memcpy(buf, fetch_result_data(r), *len);
	}
	return buf;
}

/* Checks block index of an object written with seed and size. */
static void expect_block(const struct fetch_result *r, size_t size, unsigned seed, uint64_t index)
{
	unsigned char *want = malloc(size ? size : 1), *got;
	uint64_t len, wlen = size - index * BS < BS ? size - index * BS : BS;

	fill(want, size, seed);
	got = result_bytes(r, &len);
	ck_assert_uint_eq(len, wlen);
	ck_assert_msg(memcmp(got, want + index * BS, len) == 0, "block %llu differs",
		      (unsigned long long)index);
	free(got);
	free(want);
}

static uint64_t store_requests(void)
{
	struct fetch_stats st;

	fetch_get_stats(f, &st);
	return st.store_requests;
}

/* Waits (10 s at most) until read-ahead has fetched n blocks; *st: the
 * stats then. */
static void wait_readahead_fetched(uint64_t n, struct fetch_stats *st)
{
	uint64_t deadline = retry_now_ms() + 10000;

	do {
		fetch_get_stats(f, st);
		if (st->readahead_fetched == n)
			break;
		retry_sleep_ms(5);
	} while (retry_now_ms() < deadline);
	ck_assert_uint_eq(st->readahead_fetched, n);
}

START_TEST(test_fetch_miss_then_hit_with_exact_bytes_and_short_last_block)
{
	struct fetch_dataset *ds = get_ds("ds");
	struct fetch_result r;
	struct fetch_stats st;
	char etag[80];
	struct error err;

	etag_of(ds, "big.bin", etag);
	for (uint64_t i = 0; i < 4; i++) {
		ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, i, 0, &r, &err), ERR_OK);
		ck_assert(!r.hit);
		ck_assert_ptr_nonnull(r.ref);
		expect_block(&r, BIG_SIZE, 1, i);
		fetch_result_release(f, &r);
	}
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 3, 0, &r, &err), ERR_OK);
	ck_assert(r.hit);
	ck_assert_uint_eq(fetch_result_length(&r), 1000);
	expect_block(&r, BIG_SIZE, 1, 3);
	fetch_result_release(f, &r);

	fetch_get_stats(f, &st);
	ck_assert_uint_eq(st.hits, 1);
	ck_assert_uint_eq(st.misses, 4);
	ck_assert_uint_eq(st.fetches, 4);
	ck_assert_uint_eq(st.store_bytes, BIG_SIZE);
	ck_assert_uint_eq(st.store_requests, 4 + 1 /* the head above */);
	fetch_dataset_put(f, ds);
}
END_TEST

START_TEST(test_fetch_block_past_the_end_is_out_of_range)
{
	struct fetch_dataset *ds = get_ds("ds");
	struct fetch_result r;
	char etag[80];
	struct error err;

	etag_of(ds, "big.bin", etag);
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 4, 0, &r, &err), ERR_RANGE);
	ck_assert_ptr_nonnull(strstr(err.msg, "dataset 'ds' object 'big.bin' block 4"));
	/* Exactly at the end of an object whose size is a multiple of a block. */
	etag_of(ds, "sub/exact.bin", etag);
	ck_assert_int_eq(fetch_block(f, ds, "sub/exact.bin", etag, 2, 0, &r, &err), ERR_RANGE);
	ck_assert_int_eq(fetch_block(f, ds, "sub/exact.bin", etag, UINT64_MAX, 0, &r, &err),
			 ERR_RANGE);
	/* An empty object has one empty block. */
	etag_of(ds, "empty", etag);
	ck_assert_int_eq(fetch_block(f, ds, "empty", etag, 0, 0, &r, &err), ERR_OK);
	ck_assert_uint_eq(fetch_result_length(&r), 0);
	fetch_result_release(f, &r);
	fetch_dataset_put(f, ds);
}
END_TEST

START_TEST(test_fetch_refuses_bad_keys_missing_etag_and_changed_objects)
{
	struct fetch_dataset *ds = get_ds("ds");
	struct fetch_result r;
	char etag[80];
	struct error err;

	etag_of(ds, "big.bin", etag);
	ck_assert_int_eq(fetch_block(f, ds, "../outside/x", etag, 0, 0, &r, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'..' segment"));
	ck_assert_int_eq(fetch_block(f, ds, "/big.bin", etag, 0, 0, &r, &err), ERR_INVALID);
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", "", 0, 0, &r, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "etag is required"));
	ck_assert_int_eq(fetch_block(f, ds, "nothere", "x", 0, 0, &r, &err), ERR_NOT_FOUND);
	/* The object was replaced since the listing: its old version is gone. */
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", "0123456789abcdef", 0, 0, &r, &err),
			 ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "changed"));
	fetch_dataset_put(f, ds);
}
END_TEST

struct reader {
	struct fetch_dataset *ds;
	const char *etag;
	int ok;
};

static void *read_block0(void *arg)
{
	struct reader *rd = arg;
	struct fetch_result r;
	struct error err;
	unsigned char *want = malloc(BS), *got;
	uint64_t len;

	if (fetch_block(f, rd->ds, "big.bin", rd->etag, 0, 0, &r, &err) != ERR_OK) {
		free(want);
		return NULL;
	}
	fill(want, BS, 1); /* block 0 of seed 1 is the first BS bytes */
	got = result_bytes(&r, &len);
	rd->ok = len == BS && memcmp(got, want, BS) == 0;
	free(got);
	free(want);
	fetch_result_release(f, &r);
	return NULL;
}

/* n readers of block 0 of big.bin at once; each must get its bytes. */
static void read_block0_at_once(struct fetch_dataset *ds, const char *etag, int n)
{
	struct reader rd[32];
	pthread_t t[32];

	ck_assert_int_le(n, 32);
	for (int i = 0; i < n; i++) {
		rd[i] = (struct reader){ .ds = ds, .etag = etag };
		pthread_create(&t[i], NULL, read_block0, &rd[i]);
	}
	for (int i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		ck_assert_msg(rd[i].ok, "reader %d got wrong bytes", i);
	}
}

START_TEST(test_fetch_concurrent_readers_of_a_cold_block_make_one_fetch)
{
	enum { N = 32 };
	struct fetch_dataset *ds = get_ds("ds");
	struct fetch_stats st;
	char etag[80];
	uint64_t before;

	etag_of(ds, "big.bin", etag);
	before = store_requests();
	read_block0_at_once(ds, etag, N);
	fetch_get_stats(f, &st);
	ck_assert_uint_eq(st.fetches, 1);
	ck_assert_uint_eq(st.store_requests - before, 1);
	ck_assert_uint_eq(st.hits + st.misses, N);
	fetch_dataset_put(f, ds);
}
END_TEST

/* A cache with room for one block, held by a pinned dataset "ds": the
 * next cannot get in (as granary-worker runs it with worker); the
 * dataset, and big.bin's etag in etag. */
static struct fetch_dataset *open_one_block_cache(bool worker, char etag[80])
{
	struct fetch_dataset *ds;

	close_cache();
	as_worker = worker;
	open_cache_with(BS + 2 * BLOCK_HEADER_SIZE, worker);
	as_worker = false;
	register_ds("ds", BLOCKSTORE_LRU, true);
	ds = get_ds("ds");
	etag_of(ds, "big.bin", etag);
	return ds;
}

START_TEST(test_fetch_refused_block_is_served_from_memory)
{
	struct fetch_result r;
	struct fetch_stats st;
	char etag[80];
	struct error err;
	struct fetch_dataset *ds = open_one_block_cache(false, etag);

	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 0, 0, &r, &err), ERR_OK);
	ck_assert_ptr_nonnull(r.ref);
	fetch_result_release(f, &r);
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 1, 0, &r, &err), ERR_OK);
	ck_assert_ptr_null(r.ref);
	ck_assert_ptr_nonnull(r.buf);
	expect_block(&r, BIG_SIZE, 1, 1);
	fetch_result_release(f, &r);
	/* A warm-up does not fetch what the cache will not keep. */
	ck_assert_int_eq(fetch_warm(f, ds, "big.bin", etag, BIG_SIZE, 2, NULL, &err), ERR_NO_SPACE);
	fetch_get_stats(f, &st);
	ck_assert_uint_eq(st.not_admitted, 1);
	ck_assert_uint_eq(st.fetches, 2);
	fetch_dataset_put(f, ds);
}
END_TEST

/* As a worker runs it (direct_write, no_recent): a block the cache holds
 * is served from memory to the fetch's own requests only, then from its
 * file; one the cache refused stays in memory, so that the next range
 * asked of it is not fetched again. */
START_TEST(test_fetch_no_recent_keeps_refused_blocks_only)
{
	struct fetch_result r;
	struct fetch_stats st;
	char etag[80];
	struct error err;
	struct fetch_dataset *ds = open_one_block_cache(true, etag);

	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 0, 0, &r, &err), ERR_OK);
	ck_assert_ptr_nonnull(r.buf);
	fetch_result_release(f, &r);
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 0, 0, &r, &err), ERR_OK);
	ck_assert_ptr_nonnull(r.ref); /* cached: from its file */
	ck_assert(r.hit);
	expect_block(&r, BIG_SIZE, 1, 0);
	fetch_result_release(f, &r);
	for (int i = 0; i < 2; i++) { /* refused: twice from memory */
		ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 1, 0, &r, &err), ERR_OK);
		ck_assert_ptr_null(r.ref);
		ck_assert_ptr_nonnull(r.buf);
		expect_block(&r, BIG_SIZE, 1, 1);
		fetch_result_release(f, &r);
	}
	fetch_get_stats(f, &st);
	ck_assert_uint_eq(st.not_admitted, 1);
	ck_assert_uint_eq(st.fetches, 2);
	fetch_dataset_put(f, ds);
}
END_TEST

START_TEST(test_fetch_corrupt_block_is_fetched_again)
{
	struct fetch_dataset *ds = get_ds("ds");
	struct fetch_result r;
	struct fetch_stats st;
	struct blockstore_stats bst;
	uint8_t hash[BLOCK_HASH_LEN];
	char etag[80], full[256], path[512];
	struct block_sums sums;
	struct error err;
	bool corrupt = false, dropped = false;
	char *buf;
	int fd;
	unsigned char byte;

	etag_of(ds, "big.bin", etag);
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 1, 0, &r, &err), ERR_OK);
	fetch_result_release(f, &r);
	snprintf(full, sizeof(full), "%sbig.bin", fetch_dataset_describe(ds)->prefix);
	block_key_hash(&(struct block_key){ .endpoint = "",
						 .bucket = fetch_dataset_describe(ds)->bucket,
						 .object = full,
						 .etag = etag,
						 .block_size = BS,
						 .index = 1 },
			    hash);
	/* A data byte flipped on disk after the block was served. */
	block_file_path(cache_dir, hash, path, sizeof(path));
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &byte, 1, BLOCK_HEADER_SIZE + 100), 1);
	byte ^= 0x5a;
	ck_assert_int_eq(pwrite(fd, &byte, 1, BLOCK_HEADER_SIZE + 100), 1);
	close(fd);

	/* Handed out as it is: its reader checks it (and finds it bad)... */
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 1, 0, &r, &err), ERR_OK);
	ck_assert(r.hit);
	ck_assert_int_eq(blockstore_ref_sums(bs, r.ref, &sums, &corrupt, &err), ERR_OK);
	buf = malloc(sums.data_len);
	ck_assert_int_eq(block_read_checked(blockstore_ref_fd(r.ref), &sums, 0, sums.data_len,
						 buf, &corrupt, &err), ERR_IO);
	ck_assert(corrupt);
	free(buf);
	fetch_result_release(f, &r);
	/* ...and has it rechecked: dropped, so the next request fetches it. */
	ck_assert_int_eq(fetch_recheck(f, ds, "big.bin", etag, 1, &dropped, &err), ERR_OK);
	ck_assert(dropped);
	ck_assert_int_eq(fetch_recheck(f, ds, "big.bin", etag, 1, &dropped, &err), ERR_OK);
	ck_assert(!dropped); /* not cached any more */
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 1, 0, &r, &err), ERR_OK);
	ck_assert(!r.hit);
	expect_block(&r, BIG_SIZE, 1, 1);
	fetch_result_release(f, &r);
	fetch_get_stats(f, &st);
	blockstore_get_stats(bs, &bst);
	ck_assert_uint_eq(st.corrupt_refetched, 1);
	ck_assert_uint_eq(st.fetches, 2);
	ck_assert_uint_eq(bst.corrupt, 1);
	/* a good copy passes the recheck and stays */
	ck_assert_int_eq(fetch_recheck(f, ds, "big.bin", etag, 1, &dropped, &err), ERR_OK);
	ck_assert(!dropped);
	/* And the fresh copy is good from now on. */
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 1, 0, &r, &err), ERR_OK);
	ck_assert(r.hit);
	fetch_result_release(f, &r);
	fetch_dataset_put(f, ds);
}
END_TEST

START_TEST(test_fetch_readahead_fetches_the_next_blocks)
{
	struct fetch_dataset *ds = get_ds("ds");
	struct fetch_result r;
	struct fetch_stats st;
	char etag[80];
	struct error err;

	etag_of(ds, "big.bin", etag);
	/* Asks for 8 more; the object has 3, and the first past its end stops
	 * the rest. */
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 0, 8, &r, &err), ERR_OK);
	fetch_result_release(f, &r);
	wait_readahead_fetched(3, &st);
	ck_assert_uint_eq(st.readahead_queued, 8);
	for (uint64_t i = 1; i < 4; i++) {
		ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, i, 0, &r, &err), ERR_OK);
		ck_assert_msg(r.hit, "block %llu was not read ahead", (unsigned long long)i);
		expect_block(&r, BIG_SIZE, 1, i);
		fetch_result_release(f, &r);
	}
	/* The short last block asks for no read-ahead at all. */
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 3, 8, &r, &err), ERR_OK);
	fetch_result_release(f, &r);
	fetch_get_stats(f, &st);
	ck_assert_uint_eq(st.readahead_queued, 8);
	fetch_dataset_put(f, ds);
}
END_TEST

/* The cache reopened with direct_write and dataset "ds" registered in it
 * (LRU); big.bin's etag into etag. */
static struct fetch_dataset *direct_write_ds(char *etag)
{
	struct fetch_dataset *ds;

	close_cache();
	open_cache_with(64u << 20, true);
	register_ds("ds", BLOCKSTORE_LRU, false);
	ds = get_ds("ds");
	etag_of(ds, "big.bin", etag);
	return ds;
}

/* A blockstore with direct_write (granary-fuse standalone): a miss and
 * the blocks read ahead are served from the bytes fetched, kept in
 * memory, and still count as cache hits; the store is asked once per
 * block. */
START_TEST(test_fetch_direct_write_serves_fetched_and_read_ahead_bytes_from_memory)
{
	struct fetch_dataset *ds = NULL;
	struct fetch_result r;
	struct fetch_stats st;
	struct blockstore_stats bst;
	uint64_t requests;
	char etag[80];
	struct error err;

	ds = direct_write_ds(etag);
	/* Read-ahead of exactly the object's other three blocks: a job past
	 * its end would ask the store after the third block is counted, and
	 * race with the count of requests taken below. */
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 0, 3, &r, &err), ERR_OK);
	ck_assert(!r.hit);
	ck_assert_ptr_null(r.ref);
	ck_assert_ptr_nonnull(r.buf);
	expect_block(&r, BIG_SIZE, 1, 0);
	fetch_result_release(f, &r);
	wait_readahead_fetched(3, &st);
	requests = store_requests();
	for (uint64_t i = 0; i < 4; i++) {
		ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, i, 0, &r, &err), ERR_OK);
		ck_assert_msg(r.hit && r.buf, "block %llu is not served from memory",
			      (unsigned long long)i);
		expect_block(&r, BIG_SIZE, 1, i);
		fetch_result_release(f, &r);
	}
	ck_assert_uint_eq(store_requests(), requests);
	blockstore_get_stats(bs, &bst);
	ck_assert_uint_eq(bst.blocks, 4);
	ck_assert_uint_eq(bst.hits, 4);
	fetch_dataset_put(f, ds);
}
END_TEST

/* fetch_prefetch: one block of another object read ahead, then a hit; a
 * block cached already is not queued again. */
START_TEST(test_fetch_prefetch_reads_ahead_one_block_of_any_object)
{
	struct fetch_dataset *ds = get_ds("ds");
	struct fetch_result r;
	struct fetch_stats st;
	char etag[80];
	struct error err;

	etag_of(ds, "sub/exact.bin", etag);
	fetch_prefetch(f, ds, "sub/exact.bin", etag, 0, 1);
	wait_readahead_fetched(1, &st);
	ck_assert_uint_eq(st.readahead_queued, 1);
	ck_assert_int_eq(fetch_block(f, ds, "sub/exact.bin", etag, 1, 0, &r, &err), ERR_OK);
	ck_assert(r.hit);
	expect_block(&r, 2 * BS, 2, 1);
	fetch_result_release(f, &r);
	fetch_prefetch(f, ds, "sub/exact.bin", etag, 0, 1);
	fetch_prefetch(f, ds, "../outside", etag, 0, 0); /* a bad key is ignored */
	fetch_get_stats(f, &st);
	ck_assert_uint_eq(st.readahead_queued, 1);
	fetch_dataset_put(f, ds);
}
END_TEST

/* Read-ahead jobs at once, seen from the hook each block's job calls
 * while it still runs (held there 20 ms). */
static atomic_uint hook_active, hook_most;

static void hold_job(uint64_t index, void *arg)
{
	unsigned now = atomic_fetch_add(&hook_active, 1) + 1;
	unsigned most = atomic_load(&hook_most);

	while (now > most && !atomic_compare_exchange_weak(&hook_most, &most, now))
		;
	retry_sleep_ms(20);
	atomic_fetch_sub(&hook_active, 1);
}

/* The most read-ahead jobs seen at once while 16 small files are
 * prefetched by a pool of 8 threads (4 store fetches at once), with
 * readahead_inflight (floor and cap) as given. */
static unsigned most_jobs_at_once(unsigned floor, unsigned cap)
{
	struct fetch_dataset *ds = NULL;
	struct fetch_stats st;
	char key[32], etag[80];

	close_cache();
	ra_threads = 8;
	ra_floor = floor;
	ra_cap = cap;
	open_cache_full(64u << 20, false, 0, hold_job);
	ra_threads = ra_floor = ra_cap = 0;
	register_ds("ds", BLOCKSTORE_LRU, false);
	ds = get_ds("ds");
	atomic_store(&hook_most, 0);
	for (unsigned i = 0; i < 16; i++) {
		snprintf(key, sizeof(key), "sub/small-%02u", i);
		write_object(key, BS / 2, 100 + i);
		etag_of(ds, key, etag);
		fetch_prefetch(f, ds, key, etag, BS / 2, 0);
	}
	wait_readahead_fetched(16, &st);
	fetch_dataset_put(f, ds);
	return atomic_load(&hook_most);
}

/* readahead_inflight: the read-ahead runs at most that many jobs at once
 * whatever its threads, which all run without it. */
START_TEST(test_fetch_readahead_inflight_limits_the_jobs_at_once)
{
	unsigned limited = most_jobs_at_once(2, 2);
	unsigned unlimited;

	ck_assert_uint_eq(fetch_readahead_limit(f), 2);
	ck_assert_uint_eq(limited, 2);
	unlimited = most_jobs_at_once(0, 0);
	ck_assert_uint_eq(fetch_readahead_limit(f), 8);
	ck_assert_uint_gt(unlimited, 2);
}
END_TEST

/* fetch_block_until with the object's size: a block past it is ERR_RANGE
 * without a store request, read-ahead stops at the object's end, and a
 * size given too small is only a hint: the block still comes whole. */
START_TEST(test_fetch_with_the_object_size_stops_at_its_end)
{
	struct fetch_dataset *ds = NULL;
	struct fetch_result r;
	struct fetch_stats st;
	uint64_t requests;
	char etag[80];
	struct error err;

	ds = direct_write_ds(etag);
	requests = store_requests();
	ck_assert_int_eq(fetch_block_until(f, ds, "big.bin", etag, BIG_SIZE, 4, 0, 0, &r, &err),
			 ERR_RANGE);
	ck_assert_msg(strstr(err.msg, "block 4 is past the end of its 197608 bytes"), "%s",
		      err.msg);
	ck_assert_uint_eq(store_requests(), requests);

	ck_assert_int_eq(fetch_block_until(f, ds, "big.bin", etag, 100, 0, 0, 0, &r, &err),
			 ERR_OK);
	expect_block(&r, BIG_SIZE, 1, 0);
	fetch_result_release(f, &r);

	ck_assert_int_eq(fetch_block_until(f, ds, "big.bin", etag, BIG_SIZE, 1, 8, 0, &r, &err),
			 ERR_OK);
	fetch_result_release(f, &r);
	wait_readahead_fetched(2, &st);
	ck_assert_uint_eq(st.readahead_queued, 2);
	ck_assert_int_eq(fetch_block_until(f, ds, "big.bin", etag, BIG_SIZE, 3, 0, 0, &r, &err),
			 ERR_OK);
	ck_assert(r.hit);
	expect_block(&r, BIG_SIZE, 1, 3);
	fetch_result_release(f, &r);
	fetch_dataset_put(f, ds);
}
END_TEST

/* The committers of the write-behind tests wait at this gate. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static unsigned gate_waiting;

static void gate_wait(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&gate_mu);
	gate_waiting++;
	while (!gate_open)
		pthread_cond_wait(&gate_cv, &gate_mu);
	pthread_mutex_unlock(&gate_mu);
}

static void gate_set(bool open)
{
	pthread_mutex_lock(&gate_mu);
	gate_open = open;
	gate_waiting = 0;
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_mu);
}

/* A direct_write fetcher with write_behind of n, its committers at the
 * gate (closed); no read-ahead. */
static void open_write_behind(unsigned n)
{
	struct error err;

	close_cache();
	gate_set(false);
	ck_assert_int_eq(blockstore_open(&(struct blockstore_config){ .dir = cache_dir,
								       .capacity = 64u << 20,
								       .block_size = BS,
								       .direct_write = true },
					 &bs, &err),
			 ERR_OK);
	ck_assert_int_eq(fetch_new(&(struct fetch_config){ .bs = bs, .max_inflight = 4,
							    .threads = 1, .write_behind = n,
							    .before_commit = gate_wait,
							    .file_roots = file_roots, .nfile_roots = 1 },
				   &f, &err),
			 ERR_OK);
	register_ds("ds", BLOCKSTORE_LRU, false);
}

/* Cached blocks of the blockstore, waited for (10 s at most) to be n. */
static void wait_cached_blocks(uint64_t n)
{
	struct blockstore_stats bst;
	uint64_t deadline = retry_now_ms() + 10000;

	do {
		blockstore_get_stats(bs, &bst);
		if (bst.blocks == n)
			break;
		retry_sleep_ms(5);
	} while (retry_now_ms() < deadline);
	ck_assert_uint_eq(bst.blocks, n);
}

/* Reopens the cache without write-behind and checks that blocks 0 to n-1
 * of big.bin are cached: served from the disk, no store request. */
static void expect_cached_on_disk(uint64_t n)
{
	struct fetch_dataset *ds;
	struct fetch_result r;
	uint64_t requests;
	char etag[80];
	struct error err;

	close_cache();
	open_cache(64u << 20);
	register_ds("ds", BLOCKSTORE_LRU, false);
	ds = get_ds("ds");
	etag_of(ds, "big.bin", etag);
	requests = store_requests();
	for (uint64_t i = 0; i < n; i++) {
		ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, i, 0, &r, &err), ERR_OK);
		ck_assert_msg(r.hit && r.ref, "block %llu is not cached", (unsigned long long)i);
		expect_block(&r, BIG_SIZE, 1, i);
		fetch_result_release(f, &r);
	}
	ck_assert_uint_eq(store_requests(), requests);
	fetch_dataset_put(f, ds);
}

/* Write-behind: a miss is served from the fetched bytes while its block
 * is not on disk yet; readers meanwhile get the same bytes without a
 * second GET, concurrent ones included; the block is cached once the
 * committer runs, and read from the disk after that. */
START_TEST(test_fetch_write_behind_serves_before_the_commit)
{
	enum { N = 8 };
	struct fetch_dataset *ds = NULL;
	struct fetch_result r;
	struct fetch_stats st;
	struct blockstore_stats bst;
	uint64_t requests;
	char etag[80];
	struct error err;

	open_write_behind(4);
	ds = get_ds("ds");
	etag_of(ds, "big.bin", etag);
	requests = store_requests();
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 0, 0, &r, &err), ERR_OK);
	ck_assert(!r.hit && r.buf && !r.ref);
	expect_block(&r, BIG_SIZE, 1, 0);
	fetch_result_release(f, &r);
	/* Not committed: the committer waits at the gate. */
	blockstore_get_stats(bs, &bst);
	ck_assert_uint_eq(bst.blocks, 0);
	read_block0_at_once(ds, etag, N);
	fetch_get_stats(f, &st);
	ck_assert_uint_eq(st.fetches, 1);
	ck_assert_uint_eq(st.written_behind, 1);
	ck_assert_uint_eq(store_requests() - requests, 1);
	blockstore_get_stats(bs, &bst);
	ck_assert_uint_eq(bst.blocks, 0);

	gate_set(true);
	wait_cached_blocks(1);
	fetch_dataset_put(f, ds);
	/* What was committed is a whole, valid block: a new fetcher (an
	 * empty ring) finds it on disk. */
	expect_cached_on_disk(1);
}
END_TEST

/* Past write_behind waiting commits the reader's thread commits (the
 * block is cached when it is served); and the fetcher's end commits what
 * still waits. */
START_TEST(test_fetch_write_behind_full_queue_commits_inline_and_free_drains)
{
	struct fetch_dataset *ds = NULL;
	struct fetch_result r;
	struct fetch_stats st;
	struct blockstore_stats bst;
	char etag[80];
	struct error err;

	open_write_behind(1);
	ds = get_ds("ds");
	etag_of(ds, "big.bin", etag);
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 0, 0, &r, &err), ERR_OK);
	fetch_result_release(f, &r);
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 1, 0, &r, &err), ERR_OK);
	expect_block(&r, BIG_SIZE, 1, 1);
	fetch_result_release(f, &r);
	fetch_get_stats(f, &st);
	ck_assert_uint_eq(st.written_behind, 1);
	blockstore_get_stats(bs, &bst);
	ck_assert_uint_eq(bst.blocks, 1); /* block 1; block 0 waits */
	fetch_dataset_put(f, ds);
	gate_set(true);
	/* fetch_free (in expect_cached_on_disk) waits for block 0's commit. */
	expect_cached_on_disk(2);
}
END_TEST

/* A fetcher that coalesces read-ahead: blocks of at most `coalesce`
 * bytes in one GET, up to 32 blocks read ahead; run_block_done hooked. */
static void open_coalescing(uint64_t coalesce, run_hook_fn *hook)
{
	close_cache();
	open_cache_full(64u << 20, false, coalesce, hook);
	register_ds("ds", BLOCKSTORE_LRU, false);
}

/* Reads block 0 of run.bin (8 blocks) with 7 read ahead; returns the store
 * requests that took, read-ahead included, and checks every block. */
static uint64_t read_ahead_run_requests(uint64_t *coalesced)
{
	struct fetch_dataset *ds = get_ds("ds");
	struct fetch_result r;
	struct fetch_stats st;
	uint64_t before = store_requests();
	char etag[80];
	struct error err;

	etag_of(ds, "run.bin", etag);
	before = store_requests(); /* etag_of's HEAD is not the fetcher's */
	ck_assert_int_eq(fetch_block(f, ds, "run.bin", etag, 0, 7, &r, &err), ERR_OK);
	fetch_result_release(f, &r);
	wait_readahead_fetched(7, &st);
	*coalesced = st.coalesced_gets;
	for (uint64_t i = 1; i < 8; i++) {
		ck_assert_int_eq(fetch_block(f, ds, "run.bin", etag, i, 0, &r, &err), ERR_OK);
		ck_assert_msg(r.hit, "block %llu was not read ahead", (unsigned long long)i);
		expect_block(&r, 8 * BS, 4, i);
		fetch_result_release(f, &r);
	}
	fetch_dataset_put(f, ds);
	return store_requests() - before;
}

/* Read-ahead of 7 consecutive blocks is one ranged GET with coalescing,
 * 7 without (the file store makes one request per GET of up to 1 MiB). */
START_TEST(test_fetch_readahead_coalesces_consecutive_blocks_into_one_get)
{
	uint64_t coalesced = 0;

	write_object("run.bin", 8 * BS, 4);
	open_coalescing(0, NULL);
	ck_assert_uint_eq(read_ahead_run_requests(&coalesced), 1 + 7);
	ck_assert_uint_eq(coalesced, 0);
	nftw(cache_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	open_coalescing(16 * BS, NULL);
	ck_assert_uint_eq(read_ahead_run_requests(&coalesced), 1 + 1);
	ck_assert_uint_eq(coalesced, 1);
	/* A run is cut at the coalescing bound: 7 blocks in GETs of 3. */
	nftw(cache_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	open_coalescing(3 * BS, NULL);
	ck_assert_uint_eq(read_ahead_run_requests(&coalesced), 1 + 3);
	ck_assert_uint_eq(coalesced, 2);
}
END_TEST

/* The hook of the run tests: at block `stop_at` the run waits until the
 * test says go; the test may read, move files, then let it on. */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t stop_at;
	bool reached, go;
} pause_at = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, false, false };

static void pause_hook(uint64_t index, void *arg)
{
	(void)arg;
	pthread_mutex_lock(&pause_at.mu);
	if (index == pause_at.stop_at) {
		pause_at.reached = true;
		pthread_cond_broadcast(&pause_at.cv);
		while (!pause_at.go)
			pthread_cond_wait(&pause_at.cv, &pause_at.mu);
	}
	pthread_mutex_unlock(&pause_at.mu);
}

static void pause_arm(uint64_t index)
{
	pthread_mutex_lock(&pause_at.mu);
	pause_at.stop_at = index;
	pause_at.reached = pause_at.go = false;
	pthread_mutex_unlock(&pause_at.mu);
}

static void pause_wait_reached(void)
{
	uint64_t deadline = retry_now_ms() + 10000;

	pthread_mutex_lock(&pause_at.mu);
	while (!pause_at.reached && retry_now_ms() < deadline) {
		pthread_mutex_unlock(&pause_at.mu);
		retry_sleep_ms(2);
		pthread_mutex_lock(&pause_at.mu);
	}
	ck_assert(pause_at.reached);
	pthread_mutex_unlock(&pause_at.mu);
}

static void pause_release(void)
{
	pthread_mutex_lock(&pause_at.mu);
	pause_at.go = true;
	pthread_cond_broadcast(&pause_at.cv);
	pthread_mutex_unlock(&pause_at.mu);
}

/* Writes key (blocks of seed) and reads its block 0 with readahead
 * blocks read ahead in GETs of up to coalesce bytes; returns once the
 * run has committed block 1 and waits there (pause_release). */
static struct fetch_dataset *start_paused_run(const char *key, uint64_t blocks, unsigned seed,
					      unsigned readahead, uint64_t coalesce, char *etag)
{
	struct fetch_dataset *ds;
	struct fetch_result r;
	struct error err;

	write_object(key, blocks * BS, seed);
	pause_arm(1);
	open_coalescing(coalesce, pause_hook);
	ds = get_ds("ds");
	etag_of(ds, key, etag);
	ck_assert_int_eq(fetch_block(f, ds, key, etag, 0, readahead, &r, &err), ERR_OK);
	fetch_result_release(f, &r);
	pause_wait_reached(); /* block 1 committed; the later ones not yet */
	return ds;
}

/* A reader of the run's first block is served as soon as that block is
 * in, while the GET still has the other blocks to bring. */
START_TEST(test_fetch_coalesced_run_serves_each_block_as_it_arrives)
{
	struct fetch_dataset *ds;
	struct fetch_result r;
	struct fetch_stats st;
	char etag[80];
	struct error err;

	ds = start_paused_run("run.bin", 8, 4, 7, 16 * BS, etag);
	ck_assert_int_eq(fetch_block(f, ds, "run.bin", etag, 1, 0, &r, &err), ERR_OK);
	ck_assert(r.hit);
	expect_block(&r, 8 * BS, 4, 1);
	fetch_result_release(f, &r);
	fetch_get_stats(f, &st);
	ck_assert_uint_eq(st.readahead_fetched, 1);
	ck_assert_uint_eq(st.coalesced_gets, 1);
	pause_release();
	wait_readahead_fetched(7, &st);
	ck_assert_uint_eq(st.coalesced_gets, 1);
	fetch_dataset_put(f, ds);
}
END_TEST

/* The object goes away in the middle of a run of 32 blocks (the file
 * store reads 1 MiB, 16 blocks, per request): the blocks in fail, the
 * rest are left unfetched, and all of them can be fetched when the
 * object is back. */
START_TEST(test_fetch_coalesced_run_failing_midway_leaves_the_rest_fetchable)
{
	struct fetch_dataset *ds;
	struct fetch_result r;
	struct fetch_stats st;
	char etag[80], path[256], away[256];
	struct error err;

	snprintf(path, sizeof(path), "%s/ds/long.bin", data_dir);
	snprintf(away, sizeof(away), "%s/outside/long.bin", data_dir);
	ds = start_paused_run("long.bin", 33, 5, 32, 32 * BS, etag);
	ck_assert_int_eq(rename(path, away), 0);
	pause_release();
	wait_readahead_fetched(16, &st); /* the first MiB */
	{
		uint64_t deadline = retry_now_ms() + 10000;

		do {
			fetch_get_stats(f, &st);
			if (st.fetch_errors == 1 && st.inflight == 0)
				break;
			retry_sleep_ms(5);
		} while (retry_now_ms() < deadline);
	}
	ck_assert_uint_eq(st.fetch_errors, 1);
	ck_assert_uint_eq(st.readahead_fetched, 16);
	ck_assert_int_eq(fetch_block(f, ds, "long.bin", etag, 20, 0, &r, &err), ERR_NOT_FOUND);
	ck_assert_int_eq(rename(away, path), 0); /* the same file: the same ETag */
	for (uint64_t i = 1; i < 33; i++) {
		ck_assert_msg(fetch_block(f, ds, "long.bin", etag, i, 0, &r, &err) == ERR_OK,
			      "block %llu: %s", (unsigned long long)i, err.msg);
		ck_assert_msg(r.hit == (i <= 16), "block %llu: hit %d", (unsigned long long)i,
			      r.hit);
		expect_block(&r, 33 * BS, 5, i);
		fetch_result_release(f, &r);
	}
	fetch_dataset_put(f, ds);
}
END_TEST

START_TEST(test_fetch_registry_register_replace_list_remove)
{
	struct fetch_dataset **list = NULL, *held, *ds;
	char source[160];
	size_t n;
	bool created = true;
	struct error err;
	uint64_t dropped = 9;

	snprintf(source, sizeof(source), "file://%s/ds/", data_dir);
	/* The same definition again changes nothing. */
	ck_assert_int_eq(fetch_dataset_register(f, &(struct fetch_dataset_config){ .name = "ds",
										   .source = source,
										   .block_size = BS },
						&created, &err),
			 ERR_OK);
	ck_assert(!created);
	held = get_ds("ds");
	/* A new definition replaces it; the held one stays usable. */
	ck_assert_int_eq(fetch_dataset_register(f, &(struct fetch_dataset_config){ .name = "ds",
										   .source = source,
										   .block_size = 2 * BS,
										   .pin = true },
						&created, &err),
			 ERR_OK);
	ck_assert(!created);
	ds = get_ds("ds");
	ck_assert_uint_eq(fetch_dataset_describe(ds)->block_size, 2 * BS);
	ck_assert(fetch_dataset_describe(ds)->pin);
	ck_assert_uint_eq(fetch_dataset_describe(held)->block_size, BS);
	ck_assert_str_eq(fetch_dataset_describe(held)->key_endpoint, "");
	fetch_dataset_put(f, held);
	fetch_dataset_put(f, ds);

	ck_assert_int_eq(fetch_dataset_register(f, &(struct fetch_dataset_config){ .name = "a-first",
										   .source = source,
										   .block_size = BS },
						&created, &err),
			 ERR_OK);
	ck_assert(created);
	ck_assert_int_eq(fetch_dataset_list(f, &list, &n, &err), ERR_OK);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(fetch_dataset_describe(list[0])->name, "a-first");
	ck_assert_str_eq(fetch_dataset_describe(list[1])->name, "ds");
	fetch_dataset_list_free(f, list, n);

	ck_assert_int_eq(fetch_dataset_unregister(f, "a-first", &dropped, &err), ERR_OK);
	ck_assert_uint_eq(dropped, 0);
	ck_assert_int_eq(fetch_dataset_unregister(f, "a-first", NULL, &err), ERR_NOT_FOUND);
	ck_assert_str_eq(err.msg, "unknown dataset 'a-first'");
	ck_assert_int_eq(fetch_dataset_get(f, "a-first", &ds, &err), ERR_NOT_FOUND);
}
END_TEST

START_TEST(test_fetch_registry_refuses_bad_definitions)
{
	static const struct {
		const char *name, *source;
		uint64_t block_size;
		const char *expect;
	} bad[] = {
		{ "bad name", "s3://bucket/p/", BS, "dataset name 'bad name'" },
		{ "ds", "s3://bucket/p", BS, "the prefix must end with '/'" },
		{ "ds", "ftp://bucket/p/", BS, "dataset 'ds': source" },
		{ "ds", "s3://Bad_Bucket/", BS, "dataset 'ds'" },
		{ "ds", "s3://bucket/", 3 * BS, "block_size: must be a power of two" },
		{ "ds", "s3://bucket/", 32u << 10, "block_size" },
		/* file:// only under the fetcher's roots (base), resolved. */
		{ "host", "file:///etc/", BS,
		  "dataset 'host': field 'source': 'file:///etc/' is outside allowed_file_roots" },
		{ "gone", "file:///tmp/../etc/", BS, "'..' segment" },
	};
	struct error err;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(fetch_dataset_register(f,
						     &(struct fetch_dataset_config){
							     .name = bad[i].name,
							     .source = bad[i].source,
							     .block_size = bad[i].block_size },
						     NULL, &err) == ERR_INVALID,
			      "%s accepted", bad[i].source);
		ck_assert_msg(strstr(err.msg, bad[i].expect), "'%s' lacks '%s'", err.msg,
			      bad[i].expect);
	}
	ck_assert_int_eq(fetch_dataset_register(f, &(struct fetch_dataset_config){
							   .name = "creds",
							   .source = "s3://bucket/",
							   .store = { .credentials_file = "/nonexistent/creds" },
							   .block_size = BS },
						NULL, &err),
			 ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "dataset 'creds'"));
}
END_TEST

START_TEST(test_fetch_cancel_refuses_misses_but_serves_hits)
{
	struct fetch_dataset *ds = get_ds("ds");
	struct fetch_result r;
	char etag[80];
	struct error err;

	etag_of(ds, "big.bin", etag);
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 0, 0, &r, &err), ERR_OK);
	fetch_result_release(f, &r);
	fetch_cancel(f);
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 1, 0, &r, &err), ERR_CANCELLED);
	ck_assert_int_eq(fetch_block(f, ds, "big.bin", etag, 0, 0, &r, &err), ERR_OK);
	ck_assert(r.hit);
	fetch_result_release(f, &r);
	fetch_dataset_put(f, ds);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fetch");
	TCase *tc = tcase_create("core");

	log_set_level(LOG_LEVEL_WARN);

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_fetch_miss_then_hit_with_exact_bytes_and_short_last_block);
	tcase_add_test(tc, test_fetch_block_past_the_end_is_out_of_range);
	tcase_add_test(tc, test_fetch_refuses_bad_keys_missing_etag_and_changed_objects);
	tcase_add_test(tc, test_fetch_concurrent_readers_of_a_cold_block_make_one_fetch);
	tcase_add_test(tc, test_fetch_refused_block_is_served_from_memory);
	tcase_add_test(tc, test_fetch_no_recent_keeps_refused_blocks_only);
	tcase_add_test(tc, test_fetch_corrupt_block_is_fetched_again);
	tcase_add_test(tc, test_fetch_readahead_fetches_the_next_blocks);
	tcase_add_test(tc, test_fetch_direct_write_serves_fetched_and_read_ahead_bytes_from_memory);
	tcase_add_test(tc, test_fetch_prefetch_reads_ahead_one_block_of_any_object);
	tcase_add_test(tc, test_fetch_with_the_object_size_stops_at_its_end);
	tcase_add_test(tc, test_fetch_readahead_inflight_limits_the_jobs_at_once);
	tcase_add_test(tc, test_fetch_write_behind_serves_before_the_commit);
	tcase_add_test(tc, test_fetch_write_behind_full_queue_commits_inline_and_free_drains);
	tcase_add_test(tc, test_fetch_readahead_coalesces_consecutive_blocks_into_one_get);
	tcase_add_test(tc, test_fetch_coalesced_run_serves_each_block_as_it_arrives);
	tcase_add_test(tc, test_fetch_coalesced_run_failing_midway_leaves_the_rest_fetchable);
	tcase_add_test(tc, test_fetch_registry_register_replace_list_remove);
	tcase_add_test(tc, test_fetch_registry_refuses_bad_definitions);
	tcase_add_test(tc, test_fetch_cancel_refuses_misses_but_serves_hits);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
