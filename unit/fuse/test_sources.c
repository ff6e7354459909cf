/*
 * test_sources.c - the mount's real block sources without FUSE or root:
 * the object store (a file:// store), the node's cache directory read
 * directly (block files a real block store wrote) and the in-process
 * cache (a fetcher over a file:// dataset). Each serves the right bytes,
 * says "not here" when it must, and never serves bytes that fail their
 * checksums. The peer source runs against a real worker HTTP service
 * (cache/http.c over a fetcher, on a unix socket) in this process: a
 * block of the node's own worker is fetched into the cache directory and
 * read there, another directory's mount gets the bytes; the rest of the
 * peer source is covered end to end in e2e/cluster/test_cluster.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/file.h"
#include "cache/http.h"
#include "fuse/sources.h"
#include "unit/check_main.h"

#define BS (64u << 10)
#define SIZE (3 * BS + 1000)
#define KEY "p/obj.bin"

static char base[64], data_dir[96], cache_dir[96];
static unsigned char content[SIZE];
static char etag[80];
static struct store *st;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void setup(void)
{
	struct store_object info = { 0 };
	struct store_config cfg = { 0 };
	char path[160], uri[128];
	struct error err;
	FILE *fp;

	snprintf(base, sizeof(base), "/tmp/test_sources_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(base));
	snprintf(data_dir, sizeof(data_dir), "%s/data", base);
	snprintf(cache_dir, sizeof(cache_dir), "%s/cache", base);
	ck_assert_int_eq(mkdir(data_dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/p", data_dir);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	for (size_t i = 0; i < SIZE; i++)
		content[i] = (unsigned char)(i * 131 + (i >> 9));
	snprintf(path, sizeof(path), "%s/" KEY, data_dir);
	fp = fopen(path, "w");
	ck_assert_ptr_nonnull(fp);
	ck_assert_uint_eq(fwrite(content, 1, SIZE, fp), SIZE);
	fclose(fp);
	snprintf(uri, sizeof(uri), "file://%s", data_dir);
	ck_assert_msg(store_open(uri, &cfg, &st, &err) == ERR_OK, "%s", err.msg);
	ck_assert_int_eq(store_head(st, KEY, &info, &err), ERR_OK);
	snprintf(etag, sizeof(etag), "%s", info.etag);
	store_object_release(&info);
}

static void teardown(void)
{
	store_free(st);
	nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static struct reader_object obj(void)
{
	return (struct reader_object){ .key = KEY, .etag = etag, .size = SIZE };
}

static struct reader_block block(const struct reader_object *o, uint64_t index)
{
	uint64_t left = o->size - index * BS;

	return (struct reader_block){ .obj = o, .index = index, .block_size = BS,
				      .length = left < BS ? left : BS };
}

/* Flips one byte of every file under dir at off (the data of block files). */
static off_t flip_at;
static int flip_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	int fd;
	unsigned char b;

	if (flag != FTW_F || strstr(path, "/blocks/") == NULL)
		return 0;
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &b, 1, flip_at), 1);
	b ^= 0x10;
	ck_assert_int_eq(pwrite(fd, &b, 1, flip_at), 1);
	close(fd);
	return 0;
}

static void flip_blocks(const char *dir, off_t off)
{
	flip_at = off;
	ck_assert_int_eq(nftw(dir, flip_entry, 16, FTW_PHYS), 0);
}

START_TEST(test_sources_store_serves_the_snapshot_version_only)
{
	struct reader_source src = source_store(st);
	struct reader_object o = obj();
	struct reader_block b = block(&o, 3);
	char buf[BS];
	struct error err;
	size_t got = 0;

	ck_assert_int_eq(src.read(src.ctx, &b, 10, 990, buf, &got, 0, &err), ERR_OK);
	ck_assert_uint_eq(got, 990);
	ck_assert_int_eq(memcmp(buf, content + 3 * BS + 10, 990), 0);
	/* another version than the snapshot's: gone, not another object's bytes */
	o.etag = "0000000000000000";
	ck_assert_int_eq(src.read(src.ctx, &b, 0, 10, buf, &got, 0, &err), ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "changed"));
}
END_TEST

/* Writes block index of KEY into a block store on dir as a worker would. */
static void worker_writes(const char *dir, uint64_t index)
{
	struct blockstore_config cfg = { .dir = dir, .capacity = 16u << 20, .block_size = BS };
	struct block_key k = { .endpoint = "", .bucket = data_dir, .object = KEY, .etag = etag,
			       .block_size = BS, .index = index };
	uint64_t len = SIZE - index * BS < BS ? SIZE - index * BS : BS;
	struct blockstore_writer *w = NULL;
	struct blockstore *bs = NULL;
	struct error err;

	ck_assert_int_eq(blockstore_open(&cfg, &bs, &err), ERR_OK);
	ck_assert_int_eq(blockstore_write_begin(bs, &k, "ds", len, &w, &err), ERR_OK);
	ck_assert_int_eq(blockstore_write_append(w, content + index * BS, len, &err), ERR_OK);
	ck_assert_int_eq(blockstore_write_commit(bs, w, NULL, &err), ERR_OK);
	blockstore_free(bs);
}

START_TEST(test_sources_local_reads_the_worker_files_and_refuses_bad_bytes)
{
	struct source_cluster_ctx ctx = { .cache_dir = cache_dir, .dataset = "ds",
					  .key_endpoint = "", .bucket = data_dir,
					  .block_size = BS, .verify = true };
	struct reader_source src = source_local(&ctx);
	struct reader_object o = obj();
	struct reader_block b = block(&o, 1);
	char buf[BS], path[200];
	struct error err;
	struct stat sb;
	size_t got = 0;

	worker_writes(cache_dir, 1);
	ck_assert_int_eq(src.read(src.ctx, &b, 100, 60000, buf, &got, 0, &err), ERR_OK);
	ck_assert_uint_eq(got, 60000);
	ck_assert_int_eq(memcmp(buf, content + BS + 100, got), 0);
	ck_assert_uint_eq(b.corrupt, 0);
	/* a block the worker does not hold, or past what it holds */
	b = block(&o, 2);
	ck_assert_int_eq(src.read(src.ctx, &b, 0, 10, buf, &got, 0, &err), ERR_NOT_FOUND);
	b = block(&o, 1);
	ck_assert_int_eq(src.read(src.ctx, &b, BS - 10, 11, buf, &got, 0, &err), ERR_NOT_FOUND);
	/* without an ETag the key is unknown: never from a cache */
	o.etag = "";
	b = block(&o, 1);
	ck_assert_int_eq(src.read(src.ctx, &b, 0, 10, buf, &got, 0, &err), ERR_NOT_FOUND);
	o.etag = etag;

	/* one data byte flipped on disk: counted corrupt, not served, and
	 * the file left to its worker */
	flip_blocks(cache_dir, BLOCK_HEADER_SIZE + 5000);
	b = block(&o, 1);
	ck_assert_int_eq(src.read(src.ctx, &b, 0, 100, buf, &got, 0, &err), ERR_IO);
	ck_assert_uint_eq(b.corrupt, 1);
	ck_assert_ptr_nonnull(strstr(b.corrupt_cause, "the node's cache directory"));
	{
		uint8_t hash[BLOCK_HASH_LEN];
		struct block_key k = { .endpoint = "", .bucket = data_dir, .object = KEY,
				       .etag = etag, .block_size = BS, .index = 1 };

		block_key_hash(&k, hash);
		block_file_path(cache_dir, hash, path, sizeof(path));
		ck_assert_int_eq(stat(path, &sb), 0);
	}
	/* only verify=false (a switch kept to measure the checks) serves them */
	ctx.verify = false;
	b = block(&o, 1);
	ck_assert_int_eq(src.read(src.ctx, &b, 0, 10000, buf, &got, 0, &err), ERR_OK);
	ck_assert_int_ne(memcmp(buf, content + BS, 10000), 0);
}
END_TEST

/* A block store on cache_dir and a fetcher with dataset "ds" on
 * file://data_dir/SUB (SUB "" or ending in '/'), as a worker runs them. */
static void cache_open_with(const char *sub, bool direct_write, bool no_recent,
			    struct blockstore **bs, struct fetcher **f)
{
	const char *const roots[] = { base };
	char source[160];
	struct error err;

	ck_assert_int_eq(blockstore_open(&(struct blockstore_config){ .dir = cache_dir,
								       .capacity = 16u << 20,
								       .block_size = BS,
								       .direct_write = direct_write },
					 bs, &err),
			 ERR_OK);
	ck_assert_int_eq(fetch_new(&(struct fetch_config){ .bs = *bs, .max_inflight = 2,
							    .threads = 1, .readahead_max = 4,
							    .no_recent = no_recent,
							    .file_roots = roots, .nfile_roots = 1 },
				   f, &err),
			 ERR_OK);
	snprintf(source, sizeof(source), "file://%s/%s", data_dir, sub);
	ck_assert_msg(fetch_dataset_register(*f, &(struct fetch_dataset_config){
						      .name = "ds", .source = source,
						      .block_size = BS },
					     NULL, &err) == ERR_OK, "%s", err.msg);
}

static void cache_open(const char *sub, struct blockstore **bs, struct fetcher **f)
{
	cache_open_with(sub, false, false, bs, f);
}

START_TEST(test_sources_cache_fetches_once_and_replaces_a_corrupt_copy)
{
	struct blockstore *bs = NULL;
	struct fetcher *f = NULL;
	struct source_cache_ctx ctx = { .prefix_len = 2, .verify = true };
	struct reader_source src;
	struct reader_object o = obj();
	struct reader_block b;
	struct fetch_stats fs;
	char buf[BS];
	struct error err;
	size_t got = 0;

	cache_open("p/", &bs, &f);
	ck_assert_int_eq(fetch_dataset_get(f, "ds", &ctx.ds, &err), ERR_OK);
	ctx.fetcher = f;
	src = source_cache(&ctx);

	b = block(&o, 0);
	ck_assert_int_eq(src.read(src.ctx, &b, 0, BS, buf, &got, 0, &err), ERR_OK);
	ck_assert_int_eq(memcmp(buf, content, BS), 0);
	b = block(&o, 0);
	ck_assert_int_eq(src.read(src.ctx, &b, 300, 5000, buf, &got, 0, &err), ERR_OK);
	ck_assert_int_eq(memcmp(buf, content + 300, 5000), 0);
	fetch_get_stats(f, &fs);
	ck_assert_uint_eq(fs.fetches, 1);

	/* the cached copy goes bad: dropped, fetched again, the right bytes */
	flip_blocks(cache_dir, BLOCK_HEADER_SIZE + 1000);
	b = block(&o, 0);
	ck_assert_int_eq(src.read(src.ctx, &b, 0, 4096, buf, &got, 0, &err), ERR_OK);
	ck_assert_int_eq(memcmp(buf, content, 4096), 0);
	ck_assert_uint_eq(b.corrupt, 1);
	fetch_get_stats(f, &fs);
	ck_assert_uint_eq(fs.fetches, 2);
	ck_assert_uint_eq(fs.corrupt_refetched, 1);

	/* an object listed without an ETag is never cached */
	o.etag = "";
	b = block(&o, 0);
	ck_assert_int_eq(src.read(src.ctx, &b, 0, 10, buf, &got, 0, &err), ERR_NOT_FOUND);

	fetch_dataset_put(f, ctx.ds);
	fetch_free(f);
	blockstore_free(bs);
}
END_TEST

/*
 * A cached block whose header the disk cannot read (EIO) is not shown to
 * be bad: the read is an I/O error of the cache source, passed over to the
 * store, and nothing counts the block as corrupt, drops it or fetches it
 * again. A real disk cannot be made to fail on demand here (the tests have
 * no device-mapper error target or failing FUSE file system, both need
 * root), so the block's descriptor is replaced with one of /proc/self/mem,
 * whose pread at offset 0 (an address never mapped) fails with EIO from the
 * kernel, as a bad sector's would.
 */
START_TEST(test_sources_cache_unreadable_header_is_an_io_error_not_corruption)
{
	struct blockstore *bs = NULL;
	struct fetcher *f = NULL;
	struct source_cache_ctx ctx = { .prefix_len = 2, .verify = true };
	struct reader_config rc = { .block_size = BS, .nsources = 2 };
	struct reader *r = NULL;
	struct reader_object o = obj();
	struct fetch_result res = { 0 };
	struct blockstore_stats bst;
	struct reader_stats rs;
	struct fetch_stats fs;
	struct reader_block b;
	char buf[BS];
	struct error err;
	size_t got = 0;
	int mem;

	cache_open("p/", &bs, &f);
	ck_assert_int_eq(fetch_dataset_get(f, "ds", &ctx.ds, &err), ERR_OK);
	ctx.fetcher = f;
	rc.sources[0] = source_cache(&ctx);
	rc.sources[1] = source_store(st);
	ck_assert_int_eq(reader_new(&rc, &r, &err), ERR_OK);
	b = block(&o, 0);
	ck_assert_int_eq(rc.sources[0].read(&ctx, &b, 0, BS, buf, &got, 0, &err), ERR_OK);

	/* The block store keeps a block's descriptor open while a ref to it
	 * is held (closed at the last put): held here, it is the one the
	 * reads below use. */
	ck_assert_int_eq(fetch_block(f, ctx.ds, KEY + 2, etag, 0, 0, &res, &err), ERR_OK);
	ck_assert_ptr_nonnull(res.ref);
	mem = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(mem, 0);
	ck_assert_int_eq(dup2(mem, blockstore_ref_fd(res.ref)), blockstore_ref_fd(res.ref));
	close(mem);

	b = block(&o, 0);
	ck_assert_int_eq(rc.sources[0].read(&ctx, &b, 0, 4096, buf, &got, 0, &err), ERR_IO);
	ck_assert_msg(b.corrupt == 0, "counted %u corrupt copies: %s", b.corrupt, err.msg);
	ck_assert_msg(strstr(err.msg, "read the header of block") &&
			      strstr(err.msg, strerror(EIO)),
		      "%s", err.msg);
	/* the reader: the store serves, a fallback, no corrupt copy */
	ck_assert_int_eq(reader_read(r, &o, NULL, 100, 4096, buf, &got, &err), ERR_OK);
	ck_assert_uint_eq(got, 4096);
	ck_assert_int_eq(memcmp(buf, content + 100, 4096), 0);
	reader_get_stats(r, &rs);
	ck_assert_uint_eq(rs.corrupt, 0);
	ck_assert_uint_eq(rs.fallbacks, 1);
	ck_assert_uint_eq(rs.by_source[1], 1);
	/* kept, neither dropped nor fetched again */
	fetch_get_stats(f, &fs);
	ck_assert_uint_eq(fs.corrupt_refetched, 0);
	ck_assert_uint_eq(fs.fetches, 1);
	blockstore_get_stats(bs, &bst);
	ck_assert_uint_eq(bst.corrupt, 0);
	ck_assert(fetch_block_cached(f, ctx.ds, KEY + 2, etag, 0));

	fetch_result_release(f, &res);
	reader_free(r);
	fetch_dataset_put(f, ctx.ds);
	fetch_free(f);
	blockstore_free(bs);
}
END_TEST

/* A standalone mount's store (direct_write) keeps the blocks it fetched
 * in memory: a read within one of them is lent, not copied, and holds
 * the block until the loan ends. A block read from its file is copied. */
START_TEST(test_sources_cache_lends_a_block_in_memory_and_copies_one_from_its_file)
{
	struct blockstore *bs = NULL;
	struct fetcher *f = NULL;
	struct source_cache_ctx ctx = { .prefix_len = 2, .verify = true };
	struct reader_source src;
	struct reader_object o = obj();
	struct reader_loan loan = { 0 };
	struct reader_block b;
	char buf[BS];
	struct error err;
	size_t got = 0;

	for (int direct = 1; direct >= 0; direct--) {
		cache_open_with("p/", direct, false, &bs, &f);
		ck_assert_int_eq(fetch_dataset_get(f, "ds", &ctx.ds, &err), ERR_OK);
		ctx.fetcher = f;
		src = source_cache(&ctx);
		b = block(&o, 0);
		b.loan = &loan;
		memset(buf, '#', sizeof(buf));
		ck_assert_int_eq(src.read(src.ctx, &b, 100, 1000, buf, &got, 0, &err), ERR_OK);
		ck_assert_uint_eq(got, 1000);
		if (direct) {
			/* fetched just now (the first pass): lent */
			ck_assert_ptr_nonnull(loan.data);
			ck_assert_int_eq(memcmp(loan.data, content + 100, 1000), 0);
			ck_assert_int_eq(buf[0], '#');
		} else {
			/* the block file the first pass wrote: copied */
			ck_assert_ptr_null(loan.data);
			ck_assert_int_eq(memcmp(buf, content + 100, 1000), 0);
		}
		reader_loan_end(&loan);
		ck_assert_ptr_null(loan.data);
		fetch_dataset_put(f, ctx.ds);
		fetch_free(f);
		blockstore_free(bs);
	}
}
END_TEST

/* --- the peer source against a worker in this process --- */

#define SECRET "test-sources-peer-token-0123456789"

/* One worker, "node-a", on a unix socket under base, owning cache_dir. */
struct worker {
	struct blockstore *bs;
	struct fetcher *f;
	struct preloader *pre;
	struct token *tok;
	struct worker_http *h;
	struct placement *pl;
	struct block_fdcache *fds;
	char addr[140];
	char key_endpoint[256], bucket[160]; /* its block key fields */
};

static struct worker wk;

static void worker_start(void)
{
	struct fetch_dataset *ds = NULL;
	struct placement_worker w = { .id = "node-a", .address = wk.addr };
	struct error err;

	snprintf(wk.addr, sizeof(wk.addr), "unix://%s/w.sock", base);
	/* a file:// source is keyed by its directory (the "bucket"), as a
	 * mount keys it with the bucket and the whole key; blocks written
	 * with O_DIRECT and kept in memory no longer than their fetch, as
	 * granary-worker runs its store */
	cache_open_with("", true, true, &wk.bs, &wk.f);
	ck_assert_int_eq(fetch_dataset_get(wk.f, "ds", &ds, &err), ERR_OK);
	snprintf(wk.key_endpoint, sizeof(wk.key_endpoint), "%s",
		 fetch_dataset_describe(ds)->key_endpoint);
	snprintf(wk.bucket, sizeof(wk.bucket), "%s", fetch_dataset_describe(ds)->bucket);
	fetch_dataset_put(wk.f, ds);
	ck_assert_int_eq(token_new(SECRET, strlen(SECRET), &wk.tok, &err), ERR_OK);
	ck_assert_int_eq(preload_new(wk.f, 1, NULL, &wk.pre, &err), ERR_OK);
	ck_assert_msg(worker_http_start(&(struct worker_http_config){ .listen = wk.addr,
								      .fetcher = wk.f,
								      .preloader = wk.pre,
								      .token = wk.tok,
								      .block_size = BS },
					&wk.h, &err) == ERR_OK, "%s", err.msg);
	ck_assert_int_eq(placement_new(&wk.pl, &err), ERR_OK);
	ck_assert_int_eq(placement_update(wk.pl, &w, 1, 1, &err), ERR_OK);
	ck_assert_int_eq(block_fdcache_new(&(struct block_fdcache_config){ .dir = cache_dir,
									    .check_ms = 1000,
									    .idle_ms = 5000,
									    .direct = true },
					   &wk.fds, &err),
			 ERR_OK);
}

static void worker_stop(void)
{
	block_fdcache_free(wk.fds);
	placement_free(wk.pl);
	worker_http_stop(wk.h, 1000);
	preload_free(wk.pre);
	token_free(wk.tok);
	fetch_free(wk.f);
	blockstore_free(wk.bs);
	memset(&wk, 0, sizeof(wk));
}

/* A mount's cluster sources reading dir, with wk as the only worker. */
static struct source_cluster_ctx cluster(const char *dir)
{
	return (struct source_cluster_ctx){ .cache_dir = dir, .dataset = "ds",
					     .key_endpoint = wk.key_endpoint,
					     .bucket = wk.bucket, .block_size = BS,
					     .prefix_len = 0, .placement = wk.pl, .token = wk.tok,
					     .connect_timeout_ms = 2000, .timeout_ms = 10000,
					     .first_byte_ms = 5000, .skip_ms = 0, .verify = true,
					     .fds = dir == cache_dir ? wk.fds : NULL };
}

START_TEST(test_sources_peer_own_worker_fetches_into_the_directory_and_it_is_read_there)
{
	struct source_cluster_ctx ctx;
	struct reader_source src;
	struct reader_object o = obj();
	struct reader_block b = block(&o, 1);
	struct block_fdcache_stats fs;
	char buf[BS], id[BLOCK_DIR_ID_LEN + 1];
	struct error err;
	size_t got = 0;

	worker_start();
	ctx = cluster(cache_dir);
	src = source_peer(&ctx);

	/* the worker's id is in its directory; the mount reads it */
	ck_assert_int_eq(block_dir_id_read(cache_dir, id, &err), ERR_OK);
	ck_assert_str_eq(id, blockstore_dir_id(wk.bs));
	source_cluster_read_cache_id(&ctx);
	ck_assert(ctx.cache_id_set);
	ck_assert_str_eq(ctx.cache_id, id);

	ck_assert_msg(src.read(src.ctx, &b, 100, 30000, buf, &got, 0, &err) == ERR_OK, "%s",
		      err.msg);
	ck_assert_uint_eq(got, 30000);
	ck_assert_int_eq(memcmp(buf, content + BS + 100, got), 0);
	/* read from the directory: its file was opened, once */
	block_fdcache_get_stats(wk.fds, &fs);
	ck_assert_uint_eq(fs.opens, 1);

	/* the copy in the directory goes bad: not served; the owner checks
	 * its copy (verify=1), fetches it again and sends the bytes */
	ctx.fds = NULL; /* no descriptor of the good copy kept */
	flip_blocks(cache_dir, BLOCK_HEADER_SIZE + 700);
	b = block(&o, 1);
	ck_assert_msg(src.read(src.ctx, &b, 0, 5000, buf, &got, 0, &err) == ERR_OK, "%s",
		      err.msg);
	ck_assert_int_eq(memcmp(buf, content + BS, 5000), 0);
	ck_assert_uint_eq(b.corrupt, 1);
	ck_assert_ptr_nonnull(strstr(b.corrupt_cause, "the node's cache directory"));
	worker_stop();
}
END_TEST

START_TEST(test_sources_peer_another_directory_gets_the_bytes)
{
	struct source_cluster_ctx ctx;
	struct reader_source src;
	struct reader_object o = obj();
	struct reader_block b = block(&o, 2);
	char buf[BS], other_dir[128], path[200];
	struct error err;
	size_t got = 0;
	FILE *fp;

	worker_start();
	snprintf(other_dir, sizeof(other_dir), "%s/other", base);
	ck_assert_int_eq(mkdir(other_dir, 0755), 0);
	ctx = cluster(other_dir);
	src = source_peer(&ctx);

	/* a mount on another node: a directory with an id of its own */
	snprintf(path, sizeof(path), "%s/" BLOCK_DIR_LOCK_FILE, other_dir);
	fp = fopen(path, "w");
	ck_assert_ptr_nonnull(fp);
	fputs("0123456789abcdef0123456789abcdef\n", fp);
	fclose(fp);
	source_cluster_read_cache_id(&ctx);
	ck_assert(ctx.cache_id_set);
	ck_assert_str_ne(ctx.cache_id, blockstore_dir_id(wk.bs));

	ck_assert_msg(src.read(src.ctx, &b, 0, 500, buf, &got, 0, &err) == ERR_OK, "%s",
		      err.msg);
	ck_assert_uint_eq(got, 500);
	ck_assert_int_eq(memcmp(buf, content + 2 * BS, 500), 0);
	/* and without any id (no owner ever ran on the mount's directory) */
	ctx = cluster(base);
	source_cluster_read_cache_id(&ctx);
	ck_assert(!ctx.cache_id_set);
	src = source_peer(&ctx);
	b = block(&o, 0);
	ck_assert_msg(src.read(src.ctx, &b, 10, 1000, buf, &got, 0, &err) == ERR_OK, "%s",
		      err.msg);
	ck_assert_int_eq(memcmp(buf, content + 10, 1000), 0);
	worker_stop();
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sources");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_sources_store_serves_the_snapshot_version_only);
	tcase_add_test(tc, test_sources_local_reads_the_worker_files_and_refuses_bad_bytes);
	tcase_add_test(tc, test_sources_cache_fetches_once_and_replaces_a_corrupt_copy);
	tcase_add_test(tc, test_sources_cache_unreadable_header_is_an_io_error_not_corruption);
	tcase_add_test(tc, test_sources_cache_lends_a_block_in_memory_and_copies_one_from_its_file);
	tcase_add_test(tc, test_sources_peer_own_worker_fetches_into_the_directory_and_it_is_read_there);
	tcase_add_test(tc, test_sources_peer_another_directory_gets_the_bytes);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
