/*
 * test_blockstore.c - the node's block cache: file format, restart, damage,
 * capacity, refs, pins, concurrency and the admission policies.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "cache/blockstore.h"
#include "common/bytes.h"
#include "common/fileio.h"
#include "cache/sketch.h"
#include "unit/check_main.h"

#define DATA 4096                        /* data bytes of a test block */
#define FILE_BYTES (BLOCK_HEADER_SIZE + DATA) /* on disk, already 4 KiB-aligned */

/* --- helpers --- */

struct tkey {
	char object[64];
	struct block_key key;
};

static const struct block_key *tkey(struct tkey *t, int i)
{
	snprintf(t->object, sizeof(t->object), "shard-%05d.rec", i);
	t->key = (struct block_key){
		.endpoint = "http://s3.local:9000",
		.bucket = "train",
		.object = t->object,
		.etag = "\"9b2cf535f27731c974343645a3985328\"",
		.block_size = DATA,
		.index = (uint64_t)i % 3,
	};
	return &t->key;
}

static void hash_of(int i, uint8_t hash[BLOCK_HASH_LEN])
{
	struct tkey t;

	block_key_hash(tkey(&t, i), hash);
}

static void pattern(int i, uint8_t *buf, size_t len)
{
	for (size_t j = 0; j < len; j++)
		buf[j] = (uint8_t)(i * 131 + j * 7 + (j >> 8));
}

static char *make_dir_in(const char *parent)
{
	char *dir = NULL;

	ck_assert_int_gt(asprintf(&dir, "%s/granary-test-blockstore-XXXXXX", parent), 0);
	ck_assert_ptr_nonnull(mkdtemp(dir));
	return dir;
}

static char *make_dir(void)
{
	return make_dir_in("/tmp");
}

/* A directory on a disk's file system (O_DIRECT, writeback): /var/tmp. */
static char *make_disk_dir(void)
{
	return make_dir_in("/var/tmp");
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void remove_dir(char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(dir);
}

static struct blockstore *open_store(const char *dir, uint64_t capacity)
{
	struct blockstore_config cfg = { .dir = dir, .capacity = capacity, .block_size = DATA };
	struct blockstore *bs = NULL;
	struct error err;

	ck_assert_msg(blockstore_open(&cfg, &bs, &err) == ERR_OK, "open: %s", err.msg);
	return bs;
}

static void assert_within_capacity(struct blockstore *bs)
{
	struct blockstore_stats st;

	blockstore_get_stats(bs, &st);
	ck_assert_msg(st.used + st.reserved <= st.capacity, "used %llu + reserved %llu > %llu",
		      (unsigned long long)st.used, (unsigned long long)st.reserved,
		      (unsigned long long)st.capacity);
}

/* Writes block i of len bytes (its pattern) for dataset; returns the code. */
static enum error_code put_block(struct blockstore *bs, int i, const char *dataset, size_t len)
{
	struct blockstore_writer *w = NULL;
	struct error err;
	struct tkey t;
	uint8_t *buf = malloc(len ? len : 1);
	enum error_code rc;

	ck_assert_ptr_nonnull(buf);
	pattern(i, buf, len);
	rc = blockstore_write_begin(bs, tkey(&t, i), dataset, len, &w, &err);
	if (rc == ERR_OK) {
		assert_within_capacity(bs);
		ck_assert_int_eq(blockstore_write_append(w, buf, len, &err), ERR_OK);
		rc = blockstore_write_commit(bs, w, NULL, &err);
		ck_assert_msg(rc == ERR_OK, "commit: %s", err.msg);
	}
	assert_within_capacity(bs);
	free(buf);
	return rc;
}

/* True if block i is cached; checks its bytes when it is. */
static bool has_block(struct blockstore *bs, int i, size_t len)
{
	uint8_t hash[BLOCK_HASH_LEN];
	struct blockstore_ref *ref = NULL;
	uint8_t *want = malloc(len ? len : 1);
	uint8_t *got = malloc(len ? len : 1);
	struct error err;
	bool corrupt;

	hash_of(i, hash);
	if (blockstore_get(bs, hash, &ref) != ERR_OK) {
		free(want);
		free(got);
		return false;
	}
	pattern(i, want, len);
	ck_assert_uint_eq(blockstore_ref_length(ref), len);
	ck_assert_uint_eq(blockstore_ref_offset(ref), BLOCK_HEADER_SIZE);
	ck_assert_int_eq(pread(blockstore_ref_fd(ref), got, len, (off_t)blockstore_ref_offset(ref)),
			 (ssize_t)len);
	ck_assert_int_eq(memcmp(want, got, len), 0);
	ck_assert_int_eq(blockstore_ref_verify(bs, ref, &corrupt, &err), ERR_OK);
	blockstore_ref_put(bs, ref);
	free(want);
	free(got);
	return true;
}

static void block_file(const char *dir, int i, char *path, size_t size)
{
	uint8_t hash[BLOCK_HASH_LEN];

	hash_of(i, hash);
	block_file_path(dir, hash, path, size);
}

static void flip_byte(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	uint8_t b;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &b, 1, off), 1);
	b ^= 0x20;
	ck_assert_int_eq(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

static int count_files(const char *dir)
{
	char cmd[512];
	FILE *p = NULL;
	int n = -1;

	snprintf(cmd, sizeof(cmd), "find '%s' -type f ! -name '%s' | wc -l", dir,
		 BLOCKSTORE_LOCK_FILE);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(fscanf(p, "%d", &n), 1);
	pclose(p);
	return n;
}

/* --- write, read, format --- */

START_TEST(test_blockstore_write_then_read_back_byte_exact)
{
	static const size_t sizes[] = { 0, 1, 4095, 4096 };
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 64 * FILE_BYTES);
	struct blockstore_stats st;

	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(put_block(bs, i, "ds", sizes[i]), ERR_OK);
	for (int i = 0; i < 4; i++)
		ck_assert(has_block(bs, i, sizes[i]));
	ck_assert(!has_block(bs, 99, 1));
	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.blocks, 4);
	/* An empty block is its header alone; 1 and 4095 bytes round up to
	 * 8 KiB files like 4096 does. */
	ck_assert_uint_eq(st.used, BLOCK_HEADER_SIZE + 3 * FILE_BYTES);
	ck_assert_uint_eq(st.admitted, 4);
	ck_assert_uint_eq(st.hits, 4);
	ck_assert_uint_eq(st.misses, 1);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

START_TEST(test_blockstore_counts_each_datasets_bytes_across_drops_and_reopen)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 64 * FILE_BYTES);
	struct blockstore_usage u[4];

	ck_assert_int_eq(put_block(bs, 1, "ns.small", 100), ERR_OK);
	ck_assert_int_eq(put_block(bs, 2, "ns.big", 3000), ERR_OK);
	ck_assert_int_eq(put_block(bs, 3, "ns.big", 1000), ERR_OK);
	ck_assert_uint_eq(blockstore_dataset_bytes(bs, u, 4), 2);
	ck_assert_str_eq(u[0].name, "ns.big");
	ck_assert_uint_eq(u[0].bytes, 4000);
	ck_assert_str_eq(u[1].name, "ns.small");
	ck_assert_uint_eq(u[1].bytes, 100);
	/* At most max, the largest kept. */
	ck_assert_uint_eq(blockstore_dataset_bytes(bs, u, 1), 1);
	ck_assert_str_eq(u[0].name, "ns.big");
	/* The index rebuilt from the directory counts the same. */
	blockstore_free(bs);
	bs = open_store(dir, 64 * FILE_BYTES);
	ck_assert_uint_eq(blockstore_dataset_bytes(bs, u, 4), 2);
	ck_assert_uint_eq(u[0].bytes, 4000);
	ck_assert_uint_eq(blockstore_drop_dataset(bs, "ns.big"), 2);
	ck_assert_uint_eq(blockstore_dataset_bytes(bs, u, 4), 1);
	ck_assert_str_eq(u[0].name, "ns.small");
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

/* Writes len bytes of buf as block index of big.bin, 4 MiB blocks, in
 * pieces of 100,000 bytes; returns a held ref to it. */
static struct blockstore_ref *put_big_in_pieces(struct blockstore *bs, uint64_t index,
						const uint8_t *buf, size_t len)
{
	struct block_key key = { .endpoint = "", .bucket = "/data", .object = "big.bin",
				 .etag = "v1", .block_size = 4 << 20, .index = index };
	struct blockstore_writer *w = NULL;
	struct blockstore_ref *ref = NULL;
	struct error err;

	ck_assert_int_eq(blockstore_write_begin(bs, &key, "ds", 4 << 20, &w, &err), ERR_OK);
	for (size_t off = 0; off < len; off += 100000) {
		size_t n = len - off < 100000 ? len - off : 100000;

		ck_assert_int_eq(blockstore_write_append(w, buf + off, n, &err), ERR_OK);
	}
	ck_assert_int_eq(blockstore_write_commit(bs, w, &ref, &err), ERR_OK);
	ck_assert_ptr_nonnull(ref);
	return ref;
}

START_TEST(test_blockstore_large_block_written_in_pieces_reads_back)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 8 << 20);
	struct blockstore_ref *ref = NULL;
	size_t len = (3 << 20) + 123;
	uint8_t *buf = malloc(len), *back = malloc(len);

	pattern(5, buf, len);
	ref = put_big_in_pieces(bs, 2, buf, len);
	ck_assert_uint_eq(blockstore_ref_length(ref), len);
	ck_assert_int_eq(pread(blockstore_ref_fd(ref), back, len, BLOCK_HEADER_SIZE),
			 (ssize_t)len);
	ck_assert_int_eq(memcmp(buf, back, len), 0);
	blockstore_ref_put(bs, ref);
	free(buf);
	free(back);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

/* A committed block is written back (not dirty): a reader that drops
 * what it read from the page cache (block_file_drop) frees every page.
 * On a disk's file system (/var/tmp); tmpfs pages are the file. */
START_TEST(test_blockstore_committed_block_has_no_dirty_pages)
{
	char *dir = make_disk_dir();
	struct blockstore *bs = NULL;
	struct blockstore_ref *ref = NULL;
	size_t len = (3 << 20) + 123;
	uint8_t *buf = malloc(len);
	uint64_t r = 1;

	bs = open_store(dir, 8 << 20);
	pattern(7, buf, len);
	ref = put_big_in_pieces(bs, 0, buf, len);
	ck_assert_int_eq(fileio_resident(blockstore_ref_fd(ref), BLOCK_HEADER_SIZE, 0, &r), 0);
	ck_assert_uint_gt(r, 0); /* written through the page cache */
	block_file_drop(blockstore_ref_fd(ref), 0, len, len);
	ck_assert_int_eq(fileio_resident(blockstore_ref_fd(ref), 0, 0, &r), 0);
	ck_assert_msg(r == 0, "%llu bytes still cached: dirty or under writeback",
		      (unsigned long long)r);
	blockstore_ref_put(bs, ref);
	free(buf);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

/* direct_write: the bytes appended (across WRITEBACK_STEP, with a tail
 * short of 4 KiB) come back at commit, the file holds them with a valid
 * header (checked whole, and again by the rebuild of a restart), and none
 * of it entered the page cache. On a disk's file system (/var/tmp). */
START_TEST(test_blockstore_direct_write_hands_the_bytes_over_and_caches_no_page)
{
	char *dir = make_disk_dir();
	struct blockstore_config cfg = { .capacity = 8 << 20, .block_size = 4 << 20,
					 .direct_write = true };
	struct block_key key = { .endpoint = "", .bucket = "/data", .object = "big.bin",
				 .etag = "v1", .block_size = 4 << 20, .index = 1 };
	struct blockstore *bs = NULL;
	struct blockstore_writer *w = NULL;
	struct blockstore_ref *ref = NULL;
	size_t len = (3 << 20) + 123;
	uint8_t *buf = malloc(len), *back = malloc(len);
	uint8_t hash[BLOCK_HASH_LEN];
	void *bytes = NULL;
	uint64_t room = 0;
	struct error err;
	bool corrupt;
	uint64_t r = 1;

	cfg.dir = dir;
	ck_assert_int_eq(blockstore_open(&cfg, &bs, &err), ERR_OK);
	pattern(9, buf, len);
	block_key_hash(&key, hash);
	ck_assert_int_eq(blockstore_write_begin(bs, &key, "ds", 4 << 20, &w, &err), ERR_OK);
	for (size_t off = 0; off < len; off += 100000) {
		size_t n = len - off < 100000 ? len - off : 100000;

		ck_assert_int_eq(blockstore_write_append(w, buf + off, n, &err), ERR_OK);
	}
	ck_assert_msg(blockstore_write_commit_bytes(bs, w, &ref, &bytes, &room, &err) == ERR_OK,
		      "%s", err.msg);
	ck_assert_ptr_nonnull(bytes);
	ck_assert_ptr_null(ref); /* the bytes are served, not the file */
	ck_assert_uint_eq(room, 4 << 20);
	ck_assert_int_eq(memcmp((uint8_t *)bytes + BLOCK_HEADER_SIZE, buf, len), 0);
	blockstore_bytes_put(bs, bytes, room);

	ck_assert_int_eq(blockstore_lookup(bs, hash, true, &ref), ERR_OK);
	ck_assert_uint_eq(blockstore_ref_length(ref), len);
	ck_assert_int_eq(fileio_resident(blockstore_ref_fd(ref), 0, 0, &r), 0);
	ck_assert_msg(r == 0, "%llu bytes of a direct_write block in the page cache",
		      (unsigned long long)r);
	ck_assert_int_eq(pread(blockstore_ref_fd(ref), back, len, BLOCK_HEADER_SIZE),
			 (ssize_t)len);
	ck_assert_int_eq(memcmp(buf, back, len), 0);
	ck_assert_msg(blockstore_ref_verify(bs, ref, &corrupt, &err) == ERR_OK, "%s", err.msg);
	blockstore_ref_put(bs, ref);
	blockstore_free(bs);

	bs = NULL;
	ck_assert_int_eq(blockstore_open(&cfg, &bs, &err), ERR_OK);
	ck_assert(blockstore_has(bs, hash));
	blockstore_free(bs);
	free(buf);
	free(back);
	remove_dir(dir);
}
END_TEST

/* blockstore_write_begin_expect: a writer that expects a small file's
 * block keeps a buffer of that length, not of a whole block, and the
 * bytes come back whole; one that gets more than it expected (a size
 * given wrong) grows its buffer to the whole block and loses nothing.
 * With direct_write_min above the expected length, the block is written
 * from that buffer through the page cache, and neither the writer before
 * its commit nor the commit hands out the bytes: the file, its pages
 * there, is what readers get, through the ref the commit returns. */
START_TEST(test_blockstore_write_begin_expect_sizes_the_buffer_by_the_expected_length)
{
	const size_t lens[2] = { 100 << 10, (2 << 20) + 5 };
	uint8_t *buf = malloc(lens[1]);

	pattern(7, buf, lens[1]);
	for (int through_cache = 0; through_cache < 2; through_cache++) {
		char *dir = make_disk_dir();
		struct blockstore_config cfg = { .dir = dir, .capacity = 16 << 20,
						 .block_size = 4 << 20, .direct_write = true,
						 .direct_write_min = through_cache ? 1 << 20 : 0 };
		struct blockstore *bs = NULL;
		struct error err;
		bool corrupt;

		ck_assert_int_eq(blockstore_open(&cfg, &bs, &err), ERR_OK);
		for (int i = 0; i < 2; i++) {
			struct block_key key = { .endpoint = "", .bucket = "/data",
						 .object = "s.bin", .etag = "v1",
						 .block_size = 4 << 20, .index = (uint64_t)i };
			struct blockstore_writer *w = NULL;
			struct blockstore_ref *ref = NULL;
			uint8_t hash[BLOCK_HASH_LEN];
			uint64_t room = 0, resident = 0;
			void *bytes = NULL;

			ck_assert_int_eq(blockstore_write_begin_expect(bs, &key, "ds", 4 << 20,
								       100 << 10, &w, &err),
					 ERR_OK);
			for (size_t off = 0; off < lens[i]; off += 16 << 10) {
				size_t n = lens[i] - off < (16 << 10) ? lens[i] - off : (16 << 10);

				ck_assert_msg(blockstore_write_append(w, buf + off, n, &err) ==
						      ERR_OK,
					      "%s", err.msg);
			}
			/* Only bytes the commit hands out may be lent before it
			 * (the fetcher's write-behind). */
			if (through_cache)
				ck_assert_ptr_null(blockstore_write_kept(w, &room));
			else
				ck_assert_ptr_nonnull(blockstore_write_kept(w, &room));
			ck_assert_msg(blockstore_write_commit_bytes(bs, w, &ref, &bytes, &room,
								    &err) == ERR_OK,
				      "%s", err.msg);
			if (through_cache) {
				uint8_t *got = malloc(lens[i]);

				ck_assert_ptr_null(bytes);
				ck_assert_ptr_nonnull(ref);
				ck_assert_int_eq(fileio_resident(blockstore_ref_fd(ref), 0, 0,
								 &resident), 0);
				ck_assert_uint_gt(resident, 0);
				/* The commit's ref (its writer's descriptor, kept)
				 * reads the published block. */
				ck_assert_int_eq(fileio_pread_all(blockstore_ref_fd(ref), got, lens[i],
								  blockstore_ref_offset(ref)),
						 (ssize_t)lens[i]);
				ck_assert_int_eq(memcmp(got, buf, lens[i]), 0);
				ck_assert_msg(blockstore_ref_verify(bs, ref, &corrupt, &err) ==
						      ERR_OK,
					      "%s", err.msg);
				free(got);
				blockstore_ref_put(bs, ref);
			} else {
				ck_assert_ptr_nonnull(bytes);
				ck_assert_ptr_null(ref);
				ck_assert_uint_eq(room, i == 0 ? 100 << 10 : 4 << 20);
				ck_assert_int_eq(memcmp((uint8_t *)bytes + BLOCK_HEADER_SIZE, buf,
							lens[i]),
						 0);
				blockstore_bytes_put(bs, bytes, room);
			}
			block_key_hash(&key, hash);
			ck_assert_int_eq(blockstore_lookup(bs, hash, false, &ref), ERR_OK);
			ck_assert_uint_eq(blockstore_ref_length(ref), lens[i]);
			ck_assert_msg(blockstore_ref_verify(bs, ref, &corrupt, &err) == ERR_OK, "%s",
				      err.msg);
			blockstore_ref_put(bs, ref);
		}
		blockstore_free(bs);
		remove_dir(dir);
	}
	free(buf);
}
END_TEST

/* blockstore_write_begin_expect reserves the expected length's room, not
 * max_len's: writers of small files in flight evict nothing a full
 * block's room would. More bytes than expected grow the reservation to
 * max_len, evicting as a new block would; with nothing left to evict the
 * append fails with ERR_NO_SPACE, the bytes before it can be read back,
 * and the capacity is never passed. */
START_TEST(test_blockstore_expected_length_reserves_only_its_own_room)
{
	const uint32_t block = 8 * DATA;
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 8 * FILE_BYTES);
	struct blockstore_writer *w[4] = { NULL };
	struct blockstore_ref *ref = NULL;
	struct blockstore_stats st;
	struct block_key keys[4];
	char objects[4][16];
	uint8_t data[DATA + 1], got[DATA + 1], hash[BLOCK_HASH_LEN];
	uint64_t len = 0;
	struct error err;

	pattern(9, data, sizeof(data));
	for (int i = 1; i <= 4; i++)
		ck_assert_int_eq(put_block(bs, i, "ds", DATA), ERR_OK);
	for (int i = 0; i < 4; i++) {
		snprintf(objects[i], sizeof(objects[i]), "small-%d.jpg", i);
		keys[i] = (struct block_key){ .endpoint = "", .bucket = "/data",
					      .object = objects[i], .etag = "v1",
					      .block_size = block, .index = 0 };
		ck_assert_msg(blockstore_write_begin_expect(bs, &keys[i], "ds", block, DATA, &w[i],
							    &err) == ERR_OK,
			      "%s", err.msg);
		assert_within_capacity(bs);
	}
	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.reserved, 4 * FILE_BYTES);
	ck_assert_uint_eq(st.evictions, 0);
	for (int i = 1; i <= 4; i++)
		ck_assert(has_block(bs, i, DATA));

	/* One byte more than expected: room for the whole block, from the
	 * least recently used blocks. */
	ck_assert_int_eq(blockstore_write_append(w[0], data, DATA, &err), ERR_OK);
	ck_assert_msg(blockstore_write_append(w[0], data + DATA, 1, &err) == ERR_OK, "%s", err.msg);
	assert_within_capacity(bs);
	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.evictions, 4);
	ck_assert_uint_eq(st.reserved, BLOCK_HEADER_SIZE + block + 3 * FILE_BYTES);

	/* Nothing left to evict (writers are not victims): refused. */
	ck_assert_int_eq(blockstore_write_append(w[1], data, DATA, &err), ERR_OK);
	ck_assert_int_eq(blockstore_write_append(w[1], data + DATA, 1, &err), ERR_NO_SPACE);
	ck_assert_ptr_nonnull(strstr(err.msg, dir));
	ck_assert_ptr_nonnull(strstr(err.msg, "4096"));
	ck_assert_int_eq(blockstore_write_read_back(w[1], got, &len, &err), ERR_OK);
	ck_assert_uint_eq(len, DATA);
	ck_assert_int_eq(memcmp(got, data, DATA), 0);
	assert_within_capacity(bs);
	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.rejected, 1);

	ck_assert_msg(blockstore_write_commit(bs, w[0], NULL, &err) == ERR_OK, "%s", err.msg);
	for (int i = 1; i < 4; i++)
		blockstore_write_abort(bs, w[i]);
	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.reserved, 0);
	ck_assert_uint_eq(st.used, BLOCK_HEADER_SIZE + 2 * DATA); /* DATA + 1, rounded up */
	block_key_hash(&keys[0], hash);
	ck_assert_int_eq(blockstore_lookup(bs, hash, false, &ref), ERR_OK);
	ck_assert_uint_eq(blockstore_ref_length(ref), DATA + 1);
	ck_assert_int_eq(fileio_pread_all(blockstore_ref_fd(ref), got, DATA + 1,
					  blockstore_ref_offset(ref)),
			 DATA + 1);
	ck_assert_int_eq(memcmp(got, data, DATA + 1), 0);
	blockstore_ref_put(bs, ref);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

/* blockstore_admits answers as blockstore_write_begin would, by the
 * dataset's policy, and changes nothing: with LRU a full cache admits as
 * many blocks as its unheld ones make room for; scan-resistant, a block
 * never asked for is not admitted over blocks read more often, and is
 * once asked for more often than they were. */
START_TEST(test_blockstore_admits_checks_without_evicting)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 4 * FILE_BYTES);
	struct blockstore_ref *held[3] = { NULL };
	struct blockstore_ref *ref = NULL;
	struct blockstore_stats st;
	uint8_t hash[BLOCK_HASH_LEN], cand[BLOCK_HASH_LEN];
	struct error err;

	for (int i = 1; i <= 4; i++)
		ck_assert_int_eq(put_block(bs, i, "ds", DATA), ERR_OK);
	hash_of(5, cand);
	ck_assert(blockstore_admits(bs, cand, "ds", DATA, 1));
	ck_assert(blockstore_admits(bs, cand, "ds", DATA, 4));
	ck_assert(!blockstore_admits(bs, cand, "ds", DATA, 5)); /* more than the cache */
	ck_assert(blockstore_admits(bs, cand, "other", DATA, 1)); /* unknown: LRU */
	for (int i = 0; i < 3; i++) {
		hash_of(i + 1, hash);
		ck_assert_int_eq(blockstore_get(bs, hash, &held[i]), ERR_OK);
	}
	ck_assert(blockstore_admits(bs, cand, "ds", DATA, 1));
	ck_assert(!blockstore_admits(bs, cand, "ds", DATA, 2));
	for (int i = 0; i < 3; i++)
		blockstore_ref_put(bs, held[i]);

	ck_assert_int_eq(blockstore_set_dataset(bs, "ds", BLOCKSTORE_SCAN_RESISTANT, false, &err),
			 ERR_OK);
	for (int round = 0; round < 3; round++)
		for (int i = 1; i <= 4; i++)
			ck_assert(has_block(bs, i, DATA));
	ck_assert(!blockstore_admits(bs, cand, "ds", DATA, 1));
	for (int round = 0; round < 8; round++)
		ck_assert_int_eq(blockstore_lookup(bs, cand, true, &ref), ERR_NOT_FOUND);
	ck_assert(blockstore_admits(bs, cand, "ds", DATA, 1));

	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.evictions, 0);
	ck_assert_uint_eq(st.reserved, 0);
	ck_assert_uint_eq(st.used, 4 * FILE_BYTES);
	for (int i = 1; i <= 4; i++)
		ck_assert(has_block(bs, i, DATA));
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

/* direct_write with direct_write_min: a block known to be shorter than it
 * goes through the page cache (its commit hands out the file, no bytes);
 * one begun with a whole block's room that turns out shorter is written
 * through the page cache at commit (its pages stay until a reader drops
 * them) and its bytes handed out; one as long or longer is written with
 * O_DIRECT (no page) from the bytes handed out. */
START_TEST(test_blockstore_direct_write_min_sends_short_blocks_through_the_page_cache)
{
	char *dir = make_disk_dir();
	struct blockstore_config cfg = { .capacity = 16 << 20, .block_size = 4 << 20,
					 .direct_write = true, .direct_write_min = 1 << 20 };
	const uint64_t lens[3] = { 200 << 10, 2 << 20, 200 << 10 };
	const uint64_t room[3] = { 200 << 10, 4 << 20, 4 << 20 };
	struct blockstore *bs = NULL;
	uint8_t *buf = malloc(2 << 20);
	struct error err;
	bool corrupt;

	cfg.dir = dir;
	ck_assert_int_eq(blockstore_open(&cfg, &bs, &err), ERR_OK);
	pattern(3, buf, 2 << 20);
	for (int i = 0; i < 3; i++) {
		struct block_key key = { .endpoint = "", .bucket = "/data", .object = "f.bin",
					 .etag = "v1", .block_size = 4 << 20, .index = (uint64_t)i };
		struct blockstore_writer *w = NULL;
		struct blockstore_ref *ref = NULL;
		void *bytes = NULL;
		uint64_t kept = 0;
		uint8_t hash[BLOCK_HASH_LEN];
		uint64_t resident = 0;

		ck_assert_int_eq(blockstore_write_begin(bs, &key, "ds", room[i], &w, &err), ERR_OK);
		ck_assert_int_eq(blockstore_write_append(w, buf, (size_t)lens[i], &err), ERR_OK);
		ck_assert_msg(blockstore_write_commit_bytes(bs, w, &ref, &bytes, &kept, &err) ==
				      ERR_OK,
			      "%s", err.msg);
		if (i == 0) {
			ck_assert_ptr_null(bytes);
			ck_assert_ptr_nonnull(ref);
			ck_assert_uint_eq(blockstore_ref_length(ref), lens[0]);
			blockstore_ref_put(bs, ref);
			continue;
		}
		ck_assert_ptr_nonnull(bytes);
		ck_assert_ptr_null(ref);
		ck_assert_int_eq(memcmp((uint8_t *)bytes + BLOCK_HEADER_SIZE, buf, lens[i]), 0);
		ck_assert_uint_eq(kept, room[i]);
		blockstore_bytes_put(bs, bytes, kept);
		block_key_hash(&key, hash);
		ck_assert_int_eq(blockstore_lookup(bs, hash, false, &ref), ERR_OK);
		ck_assert_uint_eq(blockstore_ref_length(ref), lens[i]);
		ck_assert_int_eq(fileio_resident(blockstore_ref_fd(ref), 0, 0, &resident), 0);
		if (i == 1)
			ck_assert_uint_eq(resident, 0);
		else
			ck_assert_uint_gt(resident, 0);
		ck_assert_msg(blockstore_ref_verify(bs, ref, &corrupt, &err) == ERR_OK, "%s",
			      err.msg);
		blockstore_ref_put(bs, ref);
	}
	blockstore_free(bs);
	remove_dir(dir);
	free(buf);
}
END_TEST

/* direct_read: a block of BLOCK_DIRECT_MIN bytes or more is opened with
 * O_DIRECT, and a checked read of an unaligned range into an unaligned
 * buffer (the header's read included) gets its bytes and leaves no page
 * of the file; a shorter block is opened for the page cache. On a disk's
 * file system (/var/tmp). */
START_TEST(test_blockstore_direct_read_opens_large_blocks_with_o_direct)
{
	char *dir = make_disk_dir();
	struct blockstore_config cfg = { .capacity = 16 << 20, .block_size = 4 << 20,
					 .direct_write = true, .direct_read = true };
	const size_t lens[2] = { BLOCK_DIRECT_MIN + 123, BLOCK_DIRECT_MIN - 4096 };
	struct blockstore *bs = NULL;
	uint8_t *buf = malloc(lens[0]), *back = malloc(lens[0] + 1);
	struct error err;

	cfg.dir = dir;
	ck_assert_int_eq(blockstore_open(&cfg, &bs, &err), ERR_OK);
	pattern(5, buf, lens[0]);
	for (int i = 0; i < 2; i++) {
		struct block_key key = { .endpoint = "", .bucket = "/data", .object = "d.bin",
					 .etag = "v1", .block_size = 4 << 20, .index = (uint64_t)i };
		struct blockstore_writer *w = NULL;
		struct blockstore_ref *ref = NULL;
		struct block_sums sums;
		uint8_t hash[BLOCK_HASH_LEN];
		uint64_t resident = 1, kept = 0;
		void *bytes = NULL;
		bool corrupt = true;
		int fd;

		ck_assert_int_eq(blockstore_write_begin(bs, &key, "ds", lens[i], &w, &err), ERR_OK);
		ck_assert_int_eq(blockstore_write_append(w, buf, lens[i], &err), ERR_OK);
		ck_assert_msg(blockstore_write_commit_bytes(bs, w, &ref, &bytes, &kept, &err) ==
				      ERR_OK,
			      "%s", err.msg);
		if (bytes)
			blockstore_bytes_put(bs, bytes, kept);
		blockstore_ref_put(bs, ref);
		block_key_hash(&key, hash);
		ck_assert_int_eq(blockstore_get(bs, hash, &ref), ERR_OK);
		fd = blockstore_ref_fd(ref);
		if (i == 0 && !(fcntl(fd, F_GETFL) & O_DIRECT)) {
			/* a file system without O_DIRECT: nothing to test here */
			blockstore_ref_put(bs, ref);
			break;
		}
		ck_assert_int_eq(!!(fcntl(fd, F_GETFL) & O_DIRECT), i == 0);
		ck_assert_msg(blockstore_ref_sums(bs, ref, &sums, &corrupt, &err) == ERR_OK, "%s",
			      err.msg);
		ck_assert_msg(block_read_checked(fd, &sums, 777, lens[i] - 1000, back + 1, &corrupt,
						 &err) == ERR_OK,
			      "%s", err.msg);
		ck_assert(!corrupt);
		ck_assert_int_eq(memcmp(back + 1, buf + 777, lens[i] - 1000), 0);
		if (i == 0) {
			ck_assert_int_eq(fileio_resident(fd, 0, 0, &resident), 0);
			ck_assert_uint_eq(resident, 0);
		}
		blockstore_ref_put(bs, ref);
	}
	blockstore_free(bs);
	remove_dir(dir);
	free(buf);
	free(back);
}
END_TEST

/* direct_write on a disk that fills between a writer's start and its
 * commit (the room check passed, the O_DIRECT write at commit meets
 * ENOSPC): ERR_NO_SPACE, nothing cached, and the bytes handed over all
 * the same, so that the fetcher serves them (a full disk must not fail
 * reads). The cache is a 512 KiB tmpfs (O_DIRECT on tmpfs: Linux 6.6 and
 * later); needs root to mount it. */
START_TEST(test_blockstore_direct_write_full_at_commit_hands_the_bytes_over)
{
	char dir[] = "/tmp/granary-test-full-XXXXXX", fill[64];
	struct blockstore_config cfg = { .capacity = 8 << 20, .block_size = 256 << 10,
					 .direct_write = true };
	struct block_key key = { .endpoint = "", .bucket = "/data", .object = "a.bin",
				 .etag = "v1", .block_size = 256 << 10, .index = 0 };
	struct blockstore *bs = NULL;
	struct blockstore_writer *w = NULL;
	struct blockstore_ref *ref = NULL;
	size_t len = 200 << 10;
	uint8_t *buf = malloc(len), hash[BLOCK_HASH_LEN], page[4096] = { 0 };
	void *bytes = NULL;
	uint64_t room = 0;
	struct error err;
	int fd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_msg(mount("tmpfs", dir, "tmpfs", 0, "size=512k") == 0, "mount tmpfs at %s: %s",
		      dir, strerror(errno));
	cfg.dir = dir;
	ck_assert_int_eq(blockstore_open(&cfg, &bs, &err), ERR_OK);
	pattern(5, buf, len);
	block_key_hash(&key, hash);
	ck_assert_msg(blockstore_write_begin(bs, &key, "ds", 256 << 10, &w, &err) == ERR_OK, "%s",
		      err.msg);
	/* Someone else fills the disk. */
	snprintf(fill, sizeof(fill), "%s/filler", dir);
	fd = open(fill, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	while (write(fd, page, sizeof(page)) == (ssize_t)sizeof(page))
		;
	ck_assert_int_eq(errno, ENOSPC);
	close(fd);
	ck_assert_int_eq(blockstore_write_append(w, buf, len, &err), ERR_OK);
	ck_assert_int_eq(blockstore_write_commit_bytes(bs, w, &ref, &bytes, &room, &err),
			 ERR_NO_SPACE);
	ck_assert_msg(strstr(err.msg, strerror(ENOSPC)), "%s", err.msg);
	ck_assert_ptr_null(ref);
	ck_assert_msg(bytes, "the bytes of a commit that met a full disk are lost (%s)", err.msg);
	ck_assert_int_eq(memcmp((uint8_t *)bytes + BLOCK_HEADER_SIZE, buf, len), 0);
	blockstore_bytes_put(bs, bytes, room);
	ck_assert(!blockstore_has(bs, hash));
	blockstore_free(bs);
	free(buf);
	ck_assert_int_eq(umount2(dir, MNT_DETACH), 0);
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* A sender drops what it sent by the block's name, after its ref is put:
 * the pages go, a block no longer there is nothing to do. */
START_TEST(test_blockstore_drop_pages_by_hash_after_the_ref_is_put)
{
	char *dir = make_disk_dir();
	uint8_t hash[BLOCK_HASH_LEN], *buf = NULL;
	struct blockstore *bs = NULL;
	struct blockstore_ref *ref = NULL;
	size_t len = (1 << 20) + 5;
	uint64_t r = 0;
	int fd;

	bs = open_store(dir, 8 << 20);
	buf = malloc(len);
	pattern(9, buf, len);
	ref = put_big_in_pieces(bs, 1, buf, len);
	memcpy(hash, blockstore_ref_hash(ref), BLOCK_HASH_LEN);
	fd = dup(blockstore_ref_fd(ref));
	ck_assert_int_eq(pread(fd, buf, len, BLOCK_HEADER_SIZE), (ssize_t)len);
	blockstore_ref_put(bs, ref);
	ck_assert_int_eq(fileio_resident(fd, 0, 0, &r), 0);
	ck_assert_uint_gt(r, 0);
	blockstore_drop_pages(bs, hash, 0, len);
	ck_assert_int_eq(fileio_resident(fd, 0, 0, &r), 0);
	ck_assert_uint_eq(r, 0);
	close(fd);
	hash[0] ^= 1; /* not in the store */
	blockstore_drop_pages(bs, hash, 0, len);
	free(buf);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

/*
 * The blocks are for the store's owner alone: its blocks/ made open (by an
 * older release) is closed at open, every file and directory the store
 * makes is its owner's only, and cache.dir itself (which others may use,
 * a tmpfs) is left as it was.
 */
START_TEST(test_blockstore_keeps_its_files_to_its_owner)
{
	char *dir = make_dir();
	struct blockstore *bs;
	char path[512], *slash;
	struct stat sb;

	ck_assert_int_eq(chmod(dir, 01777), 0);
	snprintf(path, sizeof(path), "%s/blocks", dir);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	ck_assert_int_eq(chmod(path, 0755), 0);
	bs = open_store(dir, 16 * FILE_BYTES);
	ck_assert_int_eq(stat(dir, &sb), 0);
	ck_assert_uint_eq(sb.st_mode & 07777, 01777);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_uint_eq(sb.st_mode & 07777, 0700);
	ck_assert_int_eq(put_block(bs, 5, "imagenet", 1000), ERR_OK);
	block_file(dir, 5, path, sizeof(path));
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_uint_eq(sb.st_mode & 07777, 0600);
	/* Every directory between the block and the store's. */
	while ((slash = strrchr(path, '/')) && strlen(path) > strlen(dir)) {
		*slash = '\0';
		if (strlen(path) <= strlen(dir))
			break;
		ck_assert_int_eq(stat(path, &sb), 0);
		ck_assert_msg((sb.st_mode & 07777) == 0700, "%s has mode %o", path,
			      (unsigned)(sb.st_mode & 07777));
	}
	snprintf(path, sizeof(path), "%s/tmp", dir);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_uint_eq(sb.st_mode & 07777, 0700);
	snprintf(path, sizeof(path), "%s/" BLOCKSTORE_LOCK_FILE, dir);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_uint_eq(sb.st_mode & 07777, 0600);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

/* What granary-fuse relies on when it reads block files itself. */
START_TEST(test_blockstore_file_layout_matches_docs)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 16 * FILE_BYTES);
	uint8_t h[BLOCK_HEADER_SIZE];
	uint8_t data[1000], want[1000];
	char path[512];
	struct stat sb;
	struct tkey t;
	const char *strs[5];
	size_t off = 48;
	int fd;

	ck_assert_int_eq(put_block(bs, 3, "imagenet", sizeof(data)), ERR_OK);
	block_file(dir, 3, path, sizeof(path));
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &sb), 0);
	ck_assert_int_eq(sb.st_size, BLOCK_HEADER_SIZE + sizeof(data));
	ck_assert_int_eq(pread(fd, h, sizeof(h), 0), (ssize_t)sizeof(h));
	ck_assert_int_eq(pread(fd, data, sizeof(data), BLOCK_HEADER_SIZE), (ssize_t)sizeof(data));
	close(fd);
	pattern(3, want, sizeof(want));
	ck_assert_int_eq(memcmp(data, want, sizeof(data)), 0);

	ck_assert_int_eq(memcmp(h, "GRNBLK2\0", 8), 0);
	ck_assert_uint_eq(bytes_get_le64(h + 8) & 0xffffffff, BLOCK_HEADER_SIZE);
	ck_assert_uint_eq(bytes_get_le64(h + 8) >> 32, DATA); /* block size at 12 */
	ck_assert_uint_eq(bytes_get_le64(h + 16), sizeof(data));
	/* chunk size at 24 (64 KiB for these small blocks), 0 at 28 */
	ck_assert_uint_eq(bytes_get_le64(h + 24), 65536);
	/* the chunk table: one CRC32C here (standard CRC32C: "123456789" gives e3069283) */
	ck_assert_uint_eq(block_crc32c("123456789", 9), 0xe3069283u);
	ck_assert_uint_eq(bytes_get_le64(h + 3064) & 0xffffffff, block_crc32c(want, sizeof(want)));
	ck_assert_uint_eq(bytes_get_le64(h + 32), tkey(&t, 3)->index);
	ck_assert_uint_gt(bytes_get_le64(h + 40), 1700000000); /* seconds, not ns */
	ck_assert_uint_lt(bytes_get_le64(h + 40), 1ULL << 40);
	strs[0] = "imagenet";
	strs[1] = t.key.endpoint;
	strs[2] = t.key.bucket;
	strs[3] = t.key.etag;
	strs[4] = t.key.object;
	for (int i = 0; i < 5; i++) {
		size_t n = (size_t)(h[off] | h[off + 1] << 8);

		ck_assert_uint_eq(n, strlen(strs[i]));
		ck_assert_int_eq(memcmp(h + off + 2, strs[i], n), 0);
		off += 2 + n;
	}
	for (; off < 4088; off++)
		if (off < 3064 || off >= 3068)
			ck_assert_uint_eq(h[off], 0);
	ck_assert_uint_eq(bytes_get_le64(h + 4088), XXH3_64bits(h, 4088));
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

/*
 * Checked reads: every range (chunk-aligned or not, whole or cut) comes
 * back exact from a good block; a byte flipped in any chunk fails exactly
 * the reads whose chunks hold it, each time (nothing is remembered), naming
 * the chunk; the in-memory sums agree with the file's.
 */
START_TEST(test_blockstore_read_checked_fails_every_read_of_a_flipped_chunk)
{
	enum { BLOCK = 1u << 20, LEN = BLOCK - 1000 }; /* a short last block */
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 4 * (BLOCK_HEADER_SIZE + BLOCK));
	struct block_sums sums, mem;
	struct blockstore_writer *w = NULL;
	struct tkey t;
	struct error err;
	unsigned char *want = malloc(LEN), *got = malloc(LEN);
	static const struct { uint64_t off, len; } reads[] = {
		{ 0, LEN }, { 0, 65536 }, { 65536, 131072 }, { 100, 10 },
		{ 65535, 2 }, { 70000, 300000 }, { LEN - 5, 5 }, { 983040, LEN - 983040 },
	};
	uint8_t hash[BLOCK_HASH_LEN];
	bool corrupt = false;
	char path[512];
	int fd;

	ck_assert_uint_eq(block_chunk_size(BLOCK), 65536);
	ck_assert_uint_eq(block_chunk_size(64u << 20), 256u << 10);
	pattern(9, want, LEN);
	tkey(&t, 9);
	t.key.block_size = BLOCK;
	ck_assert_int_eq(blockstore_write_begin(bs, &t.key, "ds", LEN, &w, &err), ERR_OK);
	/* odd pieces cross chunk boundaries */
	for (size_t off = 0; off < LEN; off += 77777) {
		size_t n = LEN - off < 77777 ? LEN - off : 77777;

		ck_assert_int_eq(blockstore_write_append(w, want + off, n, &err), ERR_OK);
	}
	ck_assert_int_eq(blockstore_write_commit(bs, w, NULL, &err), ERR_OK);
	ck_assert_int_eq(block_file_open(dir, &t.key, &fd, &sums, &err), ERR_OK);
	ck_assert_uint_eq(sums.data_len, LEN);
	block_sums_of(want, LEN, BLOCK, &mem);
	ck_assert_int_eq(memcmp(mem.crc, sums.crc, 16 * sizeof(uint32_t)), 0);
	ck_assert(block_sums_check(&sums, 65536, want + 65536, 131072));
	ck_assert(!block_sums_check(&sums, 100, want + 100, 65536)); /* not aligned */
	for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
		memset(got, 0, LEN);
		ck_assert_int_eq(block_read_checked(fd, &sums, reads[i].off, reads[i].len, got,
							 &corrupt, &err), ERR_OK);
		ck_assert(!corrupt);
		ck_assert_int_eq(memcmp(got, want + reads[i].off, reads[i].len), 0);
	}
	ck_assert_int_eq(block_read_checked(fd, &sums, LEN - 5, 6, got, &corrupt, &err),
			 ERR_RANGE);
	close(fd);

	/* one byte of chunk 1 flipped */
	block_key_hash(&t.key, hash);
	block_file_path(dir, hash, path, sizeof(path));
	flip_byte(path, BLOCK_HEADER_SIZE + 65536 + 4000);
	ck_assert_int_eq(block_file_open(dir, &t.key, &fd, &sums, &err), ERR_OK);
	for (int again = 0; again < 2; again++)
		for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
			bool holds = reads[i].off < 131072 && reads[i].off + reads[i].len > 65536;
			enum error_code rc = block_read_checked(fd, &sums, reads[i].off,
								     reads[i].len, got, &corrupt, &err);

			ck_assert_int_eq(rc, holds ? ERR_IO : ERR_OK);
			ck_assert(corrupt == holds);
			if (holds)
				ck_assert_msg(strstr(err.msg, "at 65536") != NULL, "%s", err.msg);
		}
	close(fd);
	/* and a file cut short is corrupt too, not a read error */
	ck_assert_int_eq(truncate(path, BLOCK_HEADER_SIZE + 200000), 0);
	fd = open(path, O_RDONLY);
	ck_assert_int_eq(block_read_checked(fd, &sums, 196608, 100, got, &corrupt, &err),
			 ERR_IO);
	ck_assert(corrupt);
	close(fd);
	free(want);
	free(got);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

START_TEST(test_blockstore_rejects_bad_keys)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 16 * FILE_BYTES);
	struct blockstore_writer *w = NULL;
	struct error err;
	struct tkey t;
	struct block_key k;
	char *long_obj = malloc(2000);

	memset(long_obj, 'x', 1999);
	long_obj[1999] = '\0';
	k = *tkey(&t, 1);
	k.etag = "";
	ck_assert_int_eq(blockstore_write_begin(bs, &k, "ds", 10, &w, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "etag"));
	k = *tkey(&t, 1);
	ck_assert_int_eq(blockstore_write_begin(bs, &k, "ds", DATA + 1, &w, &err), ERR_INVALID);
	ck_assert_int_eq(blockstore_write_begin(bs, &k, "", 10, &w, &err), ERR_INVALID);
	k.object = long_obj;
	ck_assert_int_eq(blockstore_write_begin(bs, &k, "ds", 10, &w, &err), ERR_INVALID);
	k = *tkey(&t, 1);
	k.block_size = 0;
	ck_assert_int_eq(blockstore_write_begin(bs, &k, "ds", 0, &w, &err), ERR_INVALID);
	ck_assert_ptr_null(w);
	/* Appending past the reservation fails and the commit refuses. */
	ck_assert_int_eq(blockstore_write_begin(bs, tkey(&t, 2), "ds", 10, &w, &err), ERR_OK);
	ck_assert_int_eq(blockstore_write_append(w, long_obj, 11, &err), ERR_INVALID);
	ck_assert_int_ne(blockstore_write_commit(bs, w, NULL, &err), ERR_OK);
	ck_assert(!has_block(bs, 2, 0));
	ck_assert_int_eq(blockstore_set_dataset(bs, "", BLOCKSTORE_LRU, false, &err), ERR_INVALID);
	free(long_obj);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

START_TEST(test_blockstore_duplicate_write_is_err_exists)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 16 * FILE_BYTES);
	struct blockstore_writer *w = NULL, *w2 = NULL;
	struct error err;
	struct tkey t;

	ck_assert_int_eq(blockstore_write_begin(bs, tkey(&t, 1), "ds", DATA, &w, &err), ERR_OK);
	ck_assert_int_eq(blockstore_write_begin(bs, tkey(&t, 1), "ds", DATA, &w2, &err), ERR_EXISTS);
	ck_assert_ptr_nonnull(strstr(err.msg, "being written"));
	blockstore_write_abort(bs, w);
	ck_assert_int_eq(count_files(dir), 0);
	ck_assert_int_eq(put_block(bs, 1, "ds", DATA), ERR_OK);
	ck_assert_int_eq(put_block(bs, 1, "other", DATA), ERR_EXISTS);
	ck_assert_int_eq(blockstore_write_begin(bs, tkey(&t, 1), "ds", DATA, &w2, &err), ERR_EXISTS);
	ck_assert_ptr_nonnull(strstr(err.msg, "already cached"));
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

START_TEST(test_blockstore_abort_releases_reservation)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 2 * FILE_BYTES);
	struct blockstore_writer *w1 = NULL, *w2 = NULL, *w3 = NULL;
	struct blockstore_stats st;
	struct error err;
	struct tkey t;

	ck_assert_int_eq(blockstore_write_begin(bs, tkey(&t, 1), "ds", DATA, &w1, &err), ERR_OK);
	ck_assert_int_eq(blockstore_write_begin(bs, tkey(&t, 2), "ds", DATA, &w2, &err), ERR_OK);
	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.reserved, 2 * FILE_BYTES);
	/* Writers in flight are not victims: nothing is left to evict. */
	ck_assert_int_eq(blockstore_write_begin(bs, tkey(&t, 3), "ds", DATA, &w3, &err), ERR_NO_SPACE);
	ck_assert_ptr_nonnull(strstr(err.msg, dir));
	blockstore_write_abort(bs, w1);
	blockstore_write_abort(bs, w2);
	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.reserved, 0);
	ck_assert_uint_eq(st.used, 0);
	ck_assert_uint_eq(st.rejected, 1);
	ck_assert_int_eq(count_files(dir), 0);
	ck_assert_int_eq(put_block(bs, 3, "ds", DATA), ERR_OK);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

/* --- restart and damage --- */

START_TEST(test_blockstore_restart_rebuilds_index)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 400 * FILE_BYTES);
	struct blockstore_stats before, after;
	struct error err;

	ck_assert_int_eq(blockstore_set_dataset(bs, "b", BLOCKSTORE_SCAN_RESISTANT, true, &err), ERR_OK);
	for (int i = 0; i < 300; i++)
		ck_assert_int_eq(put_block(bs, i, i % 2 ? "a" : "b", (size_t)(i * 13) % DATA), ERR_OK);
	blockstore_get_stats(bs, &before);
	blockstore_free(bs);

	bs = open_store(dir, 400 * FILE_BYTES);
	blockstore_get_stats(bs, &after);
	ck_assert_uint_eq(after.blocks, before.blocks);
	ck_assert_uint_eq(after.used, before.used);
	ck_assert_uint_eq(after.corrupt, 0);
	for (int i = 0; i < 300; i++)
		ck_assert_msg(has_block(bs, i, (size_t)(i * 13) % DATA), "block %d lost", i);
	/* The dataset record was recreated from the headers: a pin now
	 * applies to the blocks found at start. */
	ck_assert_int_eq(blockstore_set_dataset(bs, "b", BLOCKSTORE_LRU, true, &err), ERR_OK);
	ck_assert_uint_eq(blockstore_drop_dataset(bs, "b"), 150);
	ck_assert_uint_eq(blockstore_drop_dataset(bs, "a"), 150);
	ck_assert_int_eq(count_files(dir), 0);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

START_TEST(test_blockstore_rebuild_discards_damaged_files)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 64 * FILE_BYTES);
	struct blockstore_stats st;
	char path[512], other[512], cmd[1200];
	int fd;

	for (int i = 0; i < 8; i++)
		ck_assert_int_eq(put_block(bs, i, "ds", DATA), ERR_OK);
	blockstore_free(bs);

	block_file(dir, 0, path, sizeof(path)); /* truncated */
	ck_assert_int_eq(truncate(path, BLOCK_HEADER_SIZE + DATA / 2), 0);
	block_file(dir, 1, path, sizeof(path)); /* header string byte flipped */
	flip_byte(path, 60);
	block_file(dir, 2, path, sizeof(path)); /* header checksum flipped */
	flip_byte(path, 4090);
	block_file(dir, 3, path, sizeof(path)); /* shorter than a header */
	ck_assert_int_eq(truncate(path, 100), 0);
	block_file(dir, 4, path, sizeof(path)); /* valid file under another block's name */
	block_file(dir, 100, other, sizeof(other));
	snprintf(cmd, sizeof(cmd), "mkdir -p \"$(dirname '%s')\" && cp '%s' '%s'", other, path, other);
	ck_assert_int_eq(system(cmd), 0);
	snprintf(path, sizeof(path), "%s/blocks/zz-not-a-block", dir); /* unknown names */
	fd = open(path, O_CREAT | O_WRONLY, 0644);
	close(fd);
	snprintf(path, sizeof(path), "%s/tmp/0123.1.2", dir); /* writer leftovers */
	fd = open(path, O_CREAT | O_WRONLY, 0644);
	ck_assert_int_eq(write(fd, "partial", 7), 7);
	close(fd);

	bs = open_store(dir, 64 * FILE_BYTES);
	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.corrupt, 6);
	ck_assert_uint_eq(st.blocks, 4);
	ck_assert_uint_eq(st.used, 4 * FILE_BYTES);
	for (int i = 0; i < 4; i++)
		ck_assert(!has_block(bs, i, DATA));
	for (int i = 4; i < 8; i++)
		ck_assert(has_block(bs, i, DATA));
	ck_assert(!has_block(bs, 100, DATA));
	ck_assert_int_eq(count_files(dir), 4); /* tmp emptied, bad files gone */
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

/*
 * A disk that cannot read a block's header (EIO) says nothing about the
 * block: an I/O error, not corruption, and the block stays. No test can
 * make a real disk fail on demand, so the block's descriptor is replaced
 * with one of /proc/self/mem, whose pread at offset 0 (never mapped)
 * fails with the kernel's EIO.
 */
START_TEST(test_blockstore_unreadable_header_keeps_the_block)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 16 * FILE_BYTES);
	struct blockstore_ref *ref = NULL;
	struct blockstore_stats st;
	struct block_sums sums;
	uint8_t hash[BLOCK_HASH_LEN];
	struct error err;
	bool corrupt = true;
	int mem;

	ck_assert_int_eq(put_block(bs, 7, "ds", DATA), ERR_OK);
	hash_of(7, hash);
	ck_assert_int_eq(blockstore_get(bs, hash, &ref), ERR_OK);
	mem = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(mem, 0);
	ck_assert_int_eq(dup2(mem, blockstore_ref_fd(ref)), blockstore_ref_fd(ref));
	close(mem);
	ck_assert_int_eq(blockstore_ref_sums(bs, ref, &sums, &corrupt, &err), ERR_IO);
	ck_assert(!corrupt);
	ck_assert_msg(strstr(err.msg, "read the header of block") && strstr(err.msg, strerror(EIO)),
		      "%s", err.msg);
	corrupt = true;
	ck_assert_int_eq(blockstore_ref_verify(bs, ref, &corrupt, &err), ERR_IO);
	ck_assert(!corrupt);
	blockstore_ref_put(bs, ref);
	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.corrupt, 0);
	/* opened again from its file, whole */
	ck_assert(has_block(bs, 7, DATA));
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

START_TEST(test_blockstore_verify_detects_flipped_data_byte)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 16 * FILE_BYTES);
	struct blockstore_ref *ref = NULL;
	struct blockstore_stats st;
	uint8_t hash[BLOCK_HASH_LEN];
	char path[512];
	struct error err;
	bool corrupt;

	ck_assert_int_eq(put_block(bs, 7, "ds", DATA), ERR_OK);
	ck_assert_int_eq(put_block(bs, 8, "ds", DATA), ERR_OK);
	blockstore_free(bs);
	block_file(dir, 7, path, sizeof(path));
	flip_byte(path, BLOCK_HEADER_SIZE + 1000);

	/* Header and size are intact: the block survives the restart... */
	bs = open_store(dir, 16 * FILE_BYTES);
	hash_of(7, hash);
	ck_assert_int_eq(blockstore_get(bs, hash, &ref), ERR_OK);
	/* ...and fails when its data is checked. */
	ck_assert_int_eq(blockstore_ref_verify(bs, ref, &corrupt, &err), ERR_IO);
	ck_assert(corrupt);
	ck_assert_ptr_nonnull(strstr(err.msg, "checksum"));
	ck_assert_int_eq(access(path, F_OK), -1);
	ck_assert_int_eq(blockstore_ref_verify(bs, ref, &corrupt, &err), ERR_IO);
	ck_assert_ptr_nonnull(strstr(err.msg, "removed"));
	blockstore_ref_put(bs, ref);
	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.corrupt, 1);
	ck_assert_uint_eq(st.blocks, 1);
	ck_assert_uint_eq(st.used, FILE_BYTES);
	ck_assert_int_eq(blockstore_get(bs, hash, &ref), ERR_NOT_FOUND);
	ck_assert(has_block(bs, 8, DATA));
	/* It can be fetched again. */
	ck_assert_int_eq(put_block(bs, 7, "ds", DATA), ERR_OK);
	ck_assert(has_block(bs, 7, DATA));
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

START_TEST(test_blockstore_rebuild_evicts_oldest_over_capacity)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 10 * FILE_BYTES);
	struct blockstore_stats st;
	char path[512];

	for (int i = 0; i < 10; i++) {
		struct timespec ts[2] = { { .tv_sec = 1700000000 + i }, { .tv_sec = 1700000000 + i } };

		ck_assert_int_eq(put_block(bs, i, "ds", DATA), ERR_OK);
		block_file(dir, i, path, sizeof(path));
		ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, 0), 0);
	}
	blockstore_free(bs);
	bs = open_store(dir, 6 * FILE_BYTES);
	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.blocks, 6);
	ck_assert_uint_eq(st.evictions, 4);
	for (int i = 0; i < 4; i++)
		ck_assert(!has_block(bs, i, DATA));
	for (int i = 4; i < 10; i++)
		ck_assert(has_block(bs, i, DATA));
	ck_assert_int_eq(count_files(dir), 6);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

START_TEST(test_blockstore_open_names_the_directory_on_error)
{
	struct blockstore_config cfg = { .dir = "/proc/version/cache", .capacity = 1 << 20 };
	struct blockstore *bs = NULL;
	struct error err;

	ck_assert_int_ne(blockstore_open(&cfg, &bs, &err), ERR_OK);
	ck_assert_ptr_null(bs);
	ck_assert_ptr_nonnull(strstr(err.msg, "'/proc/version/cache'"));
	cfg.dir = "/tmp/x";
	cfg.capacity = 100;
	ck_assert_int_eq(blockstore_open(&cfg, &bs, &err), ERR_INVALID);
}
END_TEST

START_TEST(test_blockstore_second_owner_of_a_directory_is_refused)
{
	char *dir = make_dir();
	char leftover[512];
	struct blockstore_config cfg = { .dir = dir, .capacity = 1 << 20, .block_size = DATA };
	struct blockstore *bs = open_store(dir, 1 << 20);
	struct blockstore *second = NULL;
	struct error err;
	struct stat st;
	int fd;

	/* the owner's block in flight must survive the refused open */
	snprintf(leftover, sizeof(leftover), "%s/tmp/0123.1.2", dir);
	fd = open(leftover, O_CREAT | O_WRONLY, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "in flight", 9), 9);
	close(fd);
	ck_assert_int_eq(put_block(bs, 1, "ds", DATA), ERR_OK);
	/* flock belongs to the open file description: this process is refused too */
	ck_assert_int_eq(blockstore_open(&cfg, &second, &err), ERR_UNAVAILABLE);
	ck_assert_ptr_null(second);
	ck_assert_ptr_nonnull(strstr(err.msg, dir));
	ck_assert_ptr_nonnull(strstr(err.msg, "another process owns this cache directory"));
	ck_assert_ptr_nonnull(strstr(err.msg, "cache.dir"));
	ck_assert_int_eq(stat(leftover, &st), 0);
	ck_assert(has_block(bs, 1, DATA));
	blockstore_free(bs);
	/* closing the store releases the directory */
	bs = open_store(dir, 1 << 20);
	ck_assert(has_block(bs, 1, DATA));
	ck_assert_int_ne(stat(leftover, &st), 0);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

/* The directory's id is drawn by its first owner and kept by the next
 * ones, so that mounts that read it once keep naming it right. */
START_TEST(test_blockstore_directory_id_is_kept_across_owners)
{
	char *dir = make_dir(), first[BLOCK_DIR_ID_LEN + 1], read[BLOCK_DIR_ID_LEN + 1];
	char *other = make_dir();
	struct blockstore *bs = open_store(dir, 1 << 20);
	struct error err;

	ck_assert(block_dir_id_valid(blockstore_dir_id(bs)));
	snprintf(first, sizeof(first), "%s", blockstore_dir_id(bs));
	ck_assert_int_eq(block_dir_id_read(dir, read, &err), ERR_OK);
	ck_assert_str_eq(read, first);
	blockstore_free(bs);
	bs = open_store(dir, 1 << 20);
	ck_assert_str_eq(blockstore_dir_id(bs), first);
	blockstore_free(bs);
	/* another directory, another id */
	bs = open_store(other, 1 << 20);
	ck_assert_str_ne(blockstore_dir_id(bs), first);
	blockstore_free(bs);
	remove_dir(dir);
	remove_dir(other);
}
END_TEST

START_TEST(test_blockstore_check_usable_makes_a_file_in_tmp)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 1 << 20);
	struct error err;
	char tmp[256];

	ck_assert_msg(blockstore_check_usable(bs, &err) == ERR_OK, "%s", err.msg);
	/* It leaves nothing behind for a restart to clean. */
	snprintf(tmp, sizeof(tmp), "%s/tmp", dir);
	ck_assert_int_eq(count_files(tmp), 0);
	/* DIR/tmp gone (a wiped or unmounted disk): writers would fail, so
	 * does the check, naming the directory. */
	ck_assert_int_eq(rmdir(tmp), 0);
	ck_assert_int_ne(blockstore_check_usable(bs, &err), ERR_OK);
	ck_assert_msg(strstr(err.msg, "is not writable") && strstr(err.msg, dir), "%s", err.msg);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

START_TEST(test_blockstore_room_check_fails_only_where_eviction_cannot_help)
{
	const uint64_t need = 4096 + 65536, cap = 100 * need;
	struct error err;

	/* Room on the disk. */
	ck_assert_int_eq(blockstore_room_check("/c", need, cap, 0, 0, need, &err), ERR_OK);
	/* A full disk, but the cache is at its capacity: a write evicts first. */
	ck_assert_int_eq(blockstore_room_check("/c", 0, cap, cap - need / 2, 0, need, &err), ERR_OK);
	ck_assert_int_eq(blockstore_room_check("/c", 0, cap, cap - need, need / 2, need, &err),
			 ERR_OK);
	/* A full disk below the cache's capacity: nothing will be evicted. */
	ck_assert_int_eq(blockstore_room_check("/c", need - 1, cap, 10 * need, 0, need, &err),
			 ERR_NO_SPACE);
	ck_assert_msg(strstr(err.msg, "cache directory '/c' is full") &&
			      strstr(err.msg, "lower cache.capacity"),
		      "%s", err.msg);
	ck_assert_int_eq(blockstore_room_check("/c", 0, cap, 0, 0, need, &err), ERR_NO_SPACE);
}
END_TEST

/* --- capacity, refs, pins --- */

START_TEST(test_blockstore_capacity_never_exceeded_under_many_inserts)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 37 * FILE_BYTES + 1234);
	struct blockstore_writer *open_w[3] = { NULL };
	struct blockstore_ref *held[4] = { NULL };
	struct blockstore_stats st;
	struct error err;
	struct tkey t;
	unsigned seed = 42;

	for (int i = 0; i < 2000; i++) {
		int slot = i % 3;

		/* A few writers stay open across other inserts. */
		if (open_w[slot]) {
			if (i % 2)
				blockstore_write_abort(bs, open_w[slot]);
			else
				ck_assert_int_eq(blockstore_write_commit(bs, open_w[slot], NULL, &err), ERR_OK);
			open_w[slot] = NULL;
		}
		if (rand_r(&seed) % 4 == 0) {
			enum error_code rc = blockstore_write_begin(bs, tkey(&t, 5000 + i), "ds",
								    rand_r(&seed) % DATA, &open_w[slot], &err);

			ck_assert(rc == ERR_OK || rc == ERR_NO_SPACE);
		}
		put_block(bs, rand_r(&seed) % 300, i % 5 ? "ds" : "other", rand_r(&seed) % (DATA + 1));
		if (i % 50 == 0) {
			uint8_t hash[BLOCK_HASH_LEN];
			int h = (i / 50) % 4;

			blockstore_ref_put(bs, held[h]);
			held[h] = NULL;
			hash_of(rand_r(&seed) % 300, hash);
			blockstore_get(bs, hash, &held[h]);
		}
		assert_within_capacity(bs);
	}
	for (int s = 0; s < 3; s++)
		if (open_w[s])
			blockstore_write_abort(bs, open_w[s]);
	for (int h = 0; h < 4; h++)
		blockstore_ref_put(bs, held[h]);
	blockstore_get_stats(bs, &st);
	ck_assert_uint_le(st.used, st.capacity);
	ck_assert_uint_eq(st.reserved, 0);
	ck_assert_uint_gt(st.evictions, 0);
	ck_assert_int_eq(count_files(dir), (int)st.blocks);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

START_TEST(test_blockstore_held_ref_never_evicted)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 4 * FILE_BYTES);
	struct blockstore_ref *ref = NULL;
	uint8_t hash[BLOCK_HASH_LEN];
	uint8_t buf[DATA], want[DATA];

	ck_assert_int_eq(put_block(bs, 0, "ds", DATA), ERR_OK);
	hash_of(0, hash);
	ck_assert_int_eq(blockstore_get(bs, hash, &ref), ERR_OK);
	for (int i = 1; i < 50; i++)
		ck_assert_int_eq(put_block(bs, i, "ds", DATA), ERR_OK);
	/* Still readable through the ref and still in the index. */
	pattern(0, want, DATA);
	ck_assert_int_eq(pread(blockstore_ref_fd(ref), buf, DATA, BLOCK_HEADER_SIZE), DATA);
	ck_assert_int_eq(memcmp(buf, want, DATA), 0);
	ck_assert(has_block(bs, 0, DATA));
	blockstore_ref_put(bs, ref);
	for (int i = 50; i < 54; i++)
		ck_assert_int_eq(put_block(bs, i, "ds", DATA), ERR_OK);
	ck_assert(!has_block(bs, 0, DATA));
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

START_TEST(test_blockstore_pinned_dataset_never_evicted)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 6 * FILE_BYTES);
	struct blockstore_stats st;
	struct error err;

	ck_assert_int_eq(blockstore_set_dataset(bs, "pinned", BLOCKSTORE_LRU, true, &err), ERR_OK);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(put_block(bs, i, "pinned", DATA), ERR_OK);
	for (int i = 10; i < 60; i++)
		ck_assert_int_eq(put_block(bs, i, "scratch", DATA), ERR_OK);
	for (int i = 0; i < 3; i++)
		ck_assert(has_block(bs, i, DATA));
	/* With the rest pinned too, new blocks are refused, not squeezed in. */
	for (int i = 3; i < 6; i++)
		ck_assert_int_eq(put_block(bs, i, "pinned", DATA), ERR_OK);
	ck_assert_int_eq(put_block(bs, 99, "scratch", DATA), ERR_NO_SPACE);
	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.blocks, 6);
	/* Unpinned, they become victims again, oldest first. */
	ck_assert_int_eq(blockstore_set_dataset(bs, "pinned", BLOCKSTORE_LRU, false, &err), ERR_OK);
	ck_assert_int_eq(put_block(bs, 99, "scratch", DATA), ERR_OK);
	ck_assert_uint_eq(blockstore_drop_dataset(bs, "pinned"), 5);
	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.blocks, 1);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

/* A dropped dataset is unpinned: blocks written for it afterwards (a fetch
 * that was in flight) stay evictable, or nothing could ever remove them. */
START_TEST(test_blockstore_drop_dataset_unpins_it)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 6 * FILE_BYTES);
	struct error err;

	ck_assert_int_eq(blockstore_set_dataset(bs, "pinned", BLOCKSTORE_LRU, true, &err), ERR_OK);
	ck_assert_int_eq(put_block(bs, 0, "pinned", DATA), ERR_OK);
	ck_assert_uint_eq(blockstore_drop_dataset(bs, "pinned"), 1);
	for (int i = 1; i < 7; i++)
		ck_assert_int_eq(put_block(bs, i, "pinned", DATA), ERR_OK);
	ck_assert_int_eq(put_block(bs, 99, "scratch", DATA), ERR_OK);
	ck_assert(!has_block(bs, 1, DATA)); /* the oldest went */
	/* A new definition pins again. */
	ck_assert_int_eq(blockstore_set_dataset(bs, "pinned", BLOCKSTORE_LRU, true, &err), ERR_OK);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

START_TEST(test_blockstore_drop_dataset_keeps_held_blocks)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 16 * FILE_BYTES);
	struct blockstore_ref *ref = NULL;
	uint8_t hash[BLOCK_HASH_LEN];

	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(put_block(bs, i, i < 4 ? "a" : "b", DATA), ERR_OK);
	hash_of(0, hash);
	ck_assert_int_eq(blockstore_get(bs, hash, &ref), ERR_OK);
	ck_assert_uint_eq(blockstore_drop_dataset(bs, "a"), 3);
	ck_assert_uint_eq(blockstore_drop_dataset(bs, "nope"), 0);
	blockstore_ref_put(bs, ref);
	ck_assert(has_block(bs, 0, DATA));
	ck_assert(has_block(bs, 4, DATA));
	ck_assert(!has_block(bs, 1, DATA));
	ck_assert_int_eq(count_files(dir), 2);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

/* Keeps blocks of datasets other than "a", and block 2 of "a". */
static bool keep_not_a(const char *dataset, const uint8_t hash[BLOCK_HASH_LEN], void *arg)
{
	uint8_t two[BLOCK_HASH_LEN];

	(*(int *)arg)++;
	hash_of(2, two);
	return strcmp(dataset, "a") != 0 || memcmp(hash, two, sizeof(two)) == 0;
}

/* What keep refuses goes, except a block being read and pinned datasets'
 * blocks (which keep is not even asked about); the count is in the stats. */
START_TEST(test_blockstore_drop_unless_drops_what_keep_refuses)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 16 * FILE_BYTES);
	struct blockstore_ref *ref = NULL;
	struct blockstore_stats st;
	uint8_t hash[BLOCK_HASH_LEN];
	struct error err;
	int asked = 0;

	for (int i = 0; i < 8; i++)
		ck_assert_int_eq(put_block(bs, i, i < 5 ? "a" : i < 7 ? "b" : "p", DATA), ERR_OK);
	ck_assert_int_eq(blockstore_set_dataset(bs, "p", BLOCKSTORE_LRU, true, &err), ERR_OK);
	hash_of(0, hash);
	ck_assert_int_eq(blockstore_get(bs, hash, &ref), ERR_OK);
	/* "a": 0 held, 2 kept, 1, 3 and 4 dropped; "b" kept; "p" pinned */
	ck_assert_uint_eq(blockstore_drop_unless(bs, keep_not_a, &asked), 3);
	ck_assert_int_eq(asked, 6);
	blockstore_ref_put(bs, ref);
	for (int i = 0; i < 8; i++)
		ck_assert_msg(has_block(bs, i, DATA) == (i != 1 && i != 3 && i != 4), "block %d", i);
	ck_assert_int_eq(count_files(dir), 5);
	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.unowned, 3);
	ck_assert_uint_eq(st.blocks, 5);
	/* the held block goes at a later call */
	ck_assert_uint_eq(blockstore_drop_unless(bs, keep_not_a, &asked), 1);
	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.unowned, 4);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

/* A dataset's removal over more blocks than one slice of the LRU, its
 * blocks between another's, drops all of them and none of the other's. */
START_TEST(test_blockstore_drop_dataset_goes_slice_by_slice)
{
	const int n = 3 * BLOCKSTORE_LOCK_SLICE;
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, (uint64_t)n * FILE_BYTES);
	struct blockstore_stats st;

	for (int i = 0; i < n; i++)
		ck_assert_int_eq(put_block(bs, i, i % 3 ? "a" : "b", 1), ERR_OK);
	ck_assert_uint_eq(blockstore_drop_dataset(bs, "a"), (uint64_t)(2 * n / 3));
	for (int i = 0; i < n; i++)
		ck_assert_msg(has_block(bs, i, 1) == (i % 3 == 0), "block %d", i);
	ck_assert_int_eq(count_files(dir), n / 3);
	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.blocks, (uint64_t)(n / 3));
	ck_assert_uint_eq(st.unowned, 0);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

struct reading_keep {
	struct blockstore *bs;
	struct blockstore_ref *ref; /* block 1, read while it is judged */
	int asked;
};

/* Keeps nothing, and reads block 1 from the store while judging it, as a
 * mount would meanwhile: the store's lock is free while keep runs. */
static bool keep_none_reading(const char *dataset, const uint8_t hash[BLOCK_HASH_LEN], void *arg)
{
	struct reading_keep *k = arg;
	uint8_t one[BLOCK_HASH_LEN];

	k->asked++;
	hash_of(1, one);
	if (memcmp(hash, one, sizeof(one)) == 0)
		ck_assert_int_eq(blockstore_get(k->bs, hash, &k->ref), ERR_OK);
	return false;
}

/* A sweep does not hold the store while it judges: keep may read the
 * store (it deadlocked before), and a block read since it was judged
 * stays. */
START_TEST(test_blockstore_drop_unless_judges_without_the_lock)
{
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 16 * FILE_BYTES);
	struct reading_keep k = { .bs = bs };

	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(put_block(bs, i, "a", DATA), ERR_OK);
	ck_assert_uint_eq(blockstore_drop_unless(bs, keep_none_reading, &k), 3);
	ck_assert_int_eq(k.asked, 4);
	ck_assert_ptr_nonnull(k.ref);
	blockstore_ref_put(bs, k.ref);
	for (int i = 0; i < 4; i++)
		ck_assert_msg(has_block(bs, i, DATA) == (i == 1), "block %d", i);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

/* Keeps the blocks whose hash starts with an even byte. */
static bool keep_even(const char *dataset, const uint8_t hash[BLOCK_HASH_LEN], void *arg)
{
	(void)dataset;
	(*(int *)arg)++;
	return (hash[0] & 1) == 0;
}

/* A sweep over more blocks than one slice of it judges every block, and
 * drops the same as in one go. */
START_TEST(test_blockstore_drop_unless_goes_slice_by_slice)
{
	const int n = 2 * BLOCKSTORE_LOCK_SLICE + 500;
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, (uint64_t)n * FILE_BYTES);
	uint8_t hash[BLOCK_HASH_LEN];
	int asked = 0, kept = 0;

	for (int i = 0; i < n; i++)
		ck_assert_int_eq(put_block(bs, i, "a", 1), ERR_OK);
	for (int i = 0; i < n; i++) {
		hash_of(i, hash);
		kept += (hash[0] & 1) == 0;
	}
	ck_assert_uint_eq(blockstore_drop_unless(bs, keep_even, &asked), (uint64_t)(n - kept));
	ck_assert_int_eq(asked, n);
	for (int i = 0; i < n; i++) {
		hash_of(i, hash);
		ck_assert_msg(has_block(bs, i, 1) == ((hash[0] & 1) == 0), "block %d", i);
	}
	ck_assert_int_eq(count_files(dir), kept);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

struct dropping_keep {
	struct blockstore *bs;
	int asked;
};

/* Keeps nothing; at its first call pins dataset "c" (the block the sweep
 * goes on from after its first slice), as a new definition of it would
 * meanwhile. */
static bool keep_none_pinning_c(const char *dataset, const uint8_t hash[BLOCK_HASH_LEN],
				void *arg)
{
	struct dropping_keep *k = arg;
	struct error err;

	(void)dataset;
	(void)hash;
	if (k->asked++ == 0)
		ck_assert_int_eq(blockstore_set_dataset(k->bs, "c", BLOCKSTORE_LRU, true, &err),
				 ERR_OK);
	return false;
}

/* The block a sweep would go on from, pinned while the sweep holds it:
 * the sweep stops there, the rest waits for the next one, and the block
 * is given back (ASan sees a leak or a use after free). */
START_TEST(test_blockstore_drop_unless_stops_where_its_next_block_went)
{
	const int n = BLOCKSTORE_LOCK_SLICE + 100;
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, (uint64_t)n * FILE_BYTES);
	struct dropping_keep k = { .bs = bs };

	/* oldest first: the sweep lists blocks 0 .. SLICE-1, then goes on from
	 * block SLICE */
	for (int i = 0; i < n; i++)
		ck_assert_int_eq(put_block(bs, i, i == BLOCKSTORE_LOCK_SLICE ? "c" : "a", 1), ERR_OK);
	ck_assert_uint_eq(blockstore_drop_unless(bs, keep_none_pinning_c, &k),
			  BLOCKSTORE_LOCK_SLICE);
	ck_assert_int_eq(k.asked, BLOCKSTORE_LOCK_SLICE);
	for (int i = 0; i < n; i++)
		ck_assert_msg(has_block(bs, i, 1) == (i >= BLOCKSTORE_LOCK_SLICE), "block %d", i);
	/* the next sweep takes the rest, the pinned block staying */
	ck_assert_uint_eq(blockstore_drop_unless(bs, keep_none_pinning_c, &k), n - 1 -
			  BLOCKSTORE_LOCK_SLICE);
	for (int i = 0; i < n; i++)
		ck_assert_msg(has_block(bs, i, 1) == (i == BLOCKSTORE_LOCK_SLICE), "block %d", i);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

/* --- concurrency --- */

struct stress {
	struct blockstore *bs;
	int id;
	atomic_int failures;
	atomic_int over_capacity;
	atomic_int done;
};

static void *stress_worker(void *arg)
{
	struct stress *s = arg;
	unsigned seed = (unsigned)s->id * 7919u + 1;
	uint8_t buf[DATA], want[DATA];
	struct error err;
	bool corrupt;

	for (int op = 0; op < 1500; op++) {
		int i = (int)(rand_r(&seed) % 120);
		size_t len = (size_t)(i * 37) % DATA + 1; /* a block's length depends on i only */
		uint8_t hash[BLOCK_HASH_LEN];
		struct blockstore_ref *ref = NULL;
		struct blockstore_writer *w = NULL;
		struct tkey t;

		hash_of(i, hash);
		if (blockstore_get(s->bs, hash, &ref) == ERR_OK) {
			pattern(i, want, len);
			if (blockstore_ref_length(ref) != len ||
			    pread(blockstore_ref_fd(ref), buf, len, BLOCK_HEADER_SIZE) != (ssize_t)len ||
			    memcmp(buf, want, len) != 0 ||
			    (op % 3 == 0 &&
			     blockstore_ref_verify(s->bs, ref, &corrupt, &err) != ERR_OK))
				atomic_fetch_add(&s->failures, 1);
			blockstore_ref_put(s->bs, ref);
			continue;
		}
		enum error_code rc = blockstore_write_begin(s->bs, tkey(&t, i), i % 4 ? "a" : "b",
							    len, &w, &err);
		if (rc == ERR_EXISTS || rc == ERR_NO_SPACE)
			continue;
		if (rc != ERR_OK) {
			atomic_fetch_add(&s->failures, 1);
			continue;
		}
		pattern(i, buf, len);
		if (blockstore_write_append(w, buf, len / 2, &err) != ERR_OK ||
		    blockstore_write_append(w, buf + len / 2, len - len / 2, &err) != ERR_OK) {
			atomic_fetch_add(&s->failures, 1);
			blockstore_write_abort(s->bs, w);
			continue;
		}
		if (op % 7 == 0) {
			blockstore_write_abort(s->bs, w);
		} else if (blockstore_write_commit(s->bs, w, op % 2 ? &ref : NULL, &err) != ERR_OK) {
			atomic_fetch_add(&s->failures, 1);
		} else if (ref) {
			blockstore_ref_put(s->bs, ref);
		}
	}
	return NULL;
}

static void *stress_monitor(void *arg)
{
	struct stress *s = arg;
	struct blockstore_stats st;

	while (!atomic_load(&s->done)) {
		blockstore_get_stats(s->bs, &st);
		if (st.used + st.reserved > st.capacity)
			atomic_fetch_add(&s->over_capacity, 1);
	}
	return NULL;
}

START_TEST(test_blockstore_concurrent_writers_and_readers)
{
	enum { THREADS = 6 };
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, 40 * FILE_BYTES);
	struct stress s = { .bs = bs };
	struct stress per[THREADS];
	pthread_t th[THREADS], mon;
	struct blockstore_stats st;
	struct error err;
	int failures = 0;

	ck_assert_int_eq(blockstore_set_dataset(bs, "b", BLOCKSTORE_SCAN_RESISTANT, false, &err), ERR_OK);
	atomic_init(&s.failures, 0);
	atomic_init(&s.over_capacity, 0);
	atomic_init(&s.done, 0);
	ck_assert_int_eq(pthread_create(&mon, NULL, stress_monitor, &s), 0);
	for (int i = 0; i < THREADS; i++) {
		per[i] = (struct stress){ .bs = bs, .id = i };
		atomic_init(&per[i].failures, 0);
		ck_assert_int_eq(pthread_create(&th[i], NULL, stress_worker, &per[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		failures += atomic_load(&per[i].failures);
	}
	atomic_store(&s.done, 1);
	pthread_join(mon, NULL);
	ck_assert_int_eq(failures, 0);
	ck_assert_int_eq(atomic_load(&s.over_capacity), 0);
	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.reserved, 0);
	ck_assert_uint_le(st.used, st.capacity);
	ck_assert_int_eq(count_files(dir), (int)st.blocks);
	blockstore_free(bs);
	/* What the threads left is consistent on disk too. */
	bs = open_store(dir, 40 * FILE_BYTES);
	blockstore_get_stats(bs, &st);
	ck_assert_uint_eq(st.corrupt, 0);
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

/* --- admission policies on a cyclic scan --- */

#define SCAN_CAPACITY_BLOCKS 40
#define SCAN_DATASET_BLOCKS 60
#define SCAN_EPOCHS 10

/* One access the way the worker does it: get, or on a miss fetch and try
 * to cache. Returns true on a hit. */
static bool access_block(struct blockstore *bs, int i, const char *dataset)
{
	uint8_t hash[BLOCK_HASH_LEN];
	struct blockstore_ref *ref = NULL;
	enum error_code rc;

	hash_of(i, hash);
	if (blockstore_get(bs, hash, &ref) == ERR_OK) {
		blockstore_ref_put(bs, ref);
		return true;
	}
	rc = put_block(bs, i, dataset, DATA);
	ck_assert_msg(rc == ERR_OK || rc == ERR_NO_SPACE, "block %d: %s", i, error_code_name(rc));
	return false;
}

/*
 * Hit ratio per epoch of a scan over the dataset, in the same order each
 * epoch or, with shuffle, in a new random order each epoch (as training
 * input pipelines do); returns the mean from epoch 2 on.
 */
static double cyclic_scan(const char *name, enum blockstore_policy policy, bool pin, bool shuffle,
			  struct blockstore **keep, char **keep_dir)
{
	int order[SCAN_DATASET_BLOCKS];
	unsigned seed = 7;
	char *dir = make_dir();
	struct blockstore *bs = open_store(dir, SCAN_CAPACITY_BLOCKS * FILE_BYTES);
	struct blockstore_stats st;
	struct error err;
	double sum = 0;

	ck_assert_int_eq(blockstore_set_dataset(bs, "ds", policy, pin, &err), ERR_OK);
	for (int i = 0; i < SCAN_DATASET_BLOCKS; i++)
		order[i] = i;
	for (int epoch = 1; epoch <= SCAN_EPOCHS; epoch++) {
		int hits = 0;

		for (int i = SCAN_DATASET_BLOCKS - 1; shuffle && i > 0; i--) {
			int j = (int)(rand_r(&seed) % (unsigned)(i + 1));
			int tmp = order[i];

			order[i] = order[j];
			order[j] = tmp;
		}
		for (int i = 0; i < SCAN_DATASET_BLOCKS; i++)
			hits += access_block(bs, order[i], "ds");
		printf("policy=%s epoch=%d hit_ratio=%.3f\n", name, epoch,
		       (double)hits / SCAN_DATASET_BLOCKS);
		if (epoch >= 2)
			sum += (double)hits / SCAN_DATASET_BLOCKS;
	}
	blockstore_get_stats(bs, &st);
	ck_assert_uint_le(st.blocks, SCAN_CAPACITY_BLOCKS);
	printf("policy=%s mean_hit_ratio_from_epoch_2=%.3f ideal=%.3f evictions=%llu rejected=%llu\n",
	       name, sum / (SCAN_EPOCHS - 1), (double)SCAN_CAPACITY_BLOCKS / SCAN_DATASET_BLOCKS,
	       (unsigned long long)st.evictions, (unsigned long long)st.rejected);
	if (keep) {
		*keep = bs;
		*keep_dir = dir;
	} else {
		blockstore_free(bs);
		remove_dir(dir);
	}
	return sum / (SCAN_EPOCHS - 1);
}

START_TEST(test_blockstore_lru_thrashes_on_cyclic_scan)
{
	ck_assert_double_lt(cyclic_scan("lru", BLOCKSTORE_LRU, false, false, NULL, NULL), 0.05);
}
END_TEST

START_TEST(test_blockstore_scan_resistant_keeps_stable_subset_on_cyclic_scan)
{
	ck_assert_double_ge(cyclic_scan("scan_resistant", BLOCKSTORE_SCAN_RESISTANT, false, false,
					NULL, NULL),
			    0.55);
}
END_TEST

START_TEST(test_blockstore_scan_resistant_keeps_stable_subset_on_shuffled_epochs)
{
	double lru = cyclic_scan("lru_shuffled", BLOCKSTORE_LRU, false, true, NULL, NULL);
	double sr = cyclic_scan("scan_resistant_shuffled", BLOCKSTORE_SCAN_RESISTANT, false, true,
				NULL, NULL);

	ck_assert_double_ge(sr, 0.55);
	ck_assert_double_gt(sr, lru);
}
END_TEST

START_TEST(test_blockstore_pinned_dataset_keeps_its_blocks_on_cyclic_scan)
{
	ck_assert_double_ge(cyclic_scan("lru_pinned", BLOCKSTORE_LRU, true, false, NULL, NULL), 0.55);
}
END_TEST

START_TEST(test_blockstore_scan_resistant_admits_new_hot_set)
{
	struct blockstore *bs = NULL;
	char *dir = NULL;
	int first_full = -1;
	int round;

	cyclic_scan("scan_resistant", BLOCKSTORE_SCAN_RESISTANT, false, false, &bs, &dir);
	/* The workload changes: 10 other blocks, read over and over. */
	for (round = 1; round <= 30; round++) {
		int hits = 0;

		for (int i = 1000; i < 1010; i++)
			hits += access_block(bs, i, "ds");
		if (hits == 10 && first_full < 0)
			first_full = round;
	}
	printf("policy=scan_resistant hot_set_fully_cached_from_round=%d\n", first_full);
	ck_assert_int_gt(first_full, 1);
	ck_assert_int_le(first_full, 20);
	for (int i = 1000; i < 1010; i++)
		ck_assert(has_block(bs, i, DATA));
	blockstore_free(bs);
	remove_dir(dir);
}
END_TEST

START_TEST(test_sketch_counts_and_halves)
{
	struct sketch *sk = sketch_new(16);
	uint8_t a[SKETCH_KEY_LEN], b[SKETCH_KEY_LEN];

	ck_assert_ptr_nonnull(sk);
	hash_of(1, a);
	hash_of(2, b);
	ck_assert_uint_eq(sketch_sample_period(sk), 160);
	for (int i = 0; i < 5; i++)
		sketch_increment(sk, a);
	sketch_increment(sk, b);
	ck_assert_uint_eq(sketch_estimate(sk, a), 5);
	ck_assert_uint_eq(sketch_estimate(sk, b), 1);
	for (int i = 0; i < 100; i++)
		sketch_increment(sk, a);
	ck_assert_uint_eq(sketch_estimate(sk, a), SKETCH_COUNTER_MAX);
	/* 106 so far; 54 more reach the period of 160 and halve. */
	for (int i = 0; i < 54; i++)
		sketch_increment(sk, b);
	ck_assert_uint_eq(sketch_estimate(sk, a), SKETCH_COUNTER_MAX / 2);
	ck_assert_uint_eq(sketch_estimate(sk, b), SKETCH_COUNTER_MAX / 2);
	ck_assert_uint_eq(sketch_sample_count(sk), 80);
	sketch_free(sk);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("blockstore");
	TCase *tc = tcase_create("core");
	TCase *pol = tcase_create("policy");

	tcase_add_test(tc, test_blockstore_write_then_read_back_byte_exact);
	tcase_add_test(tc, test_blockstore_counts_each_datasets_bytes_across_drops_and_reopen);
	tcase_add_test(tc, test_blockstore_large_block_written_in_pieces_reads_back);
	tcase_add_test(tc, test_blockstore_file_layout_matches_docs);
	tcase_add_test(tc, test_blockstore_keeps_its_files_to_its_owner);
	tcase_add_test(tc, test_blockstore_read_checked_fails_every_read_of_a_flipped_chunk);
	tcase_add_test(tc, test_blockstore_committed_block_has_no_dirty_pages);
	tcase_add_test(tc, test_blockstore_direct_write_hands_the_bytes_over_and_caches_no_page);
	tcase_add_test(tc, test_blockstore_direct_write_full_at_commit_hands_the_bytes_over);
	tcase_add_test(tc,
		       test_blockstore_write_begin_expect_sizes_the_buffer_by_the_expected_length);
	tcase_add_test(tc, test_blockstore_expected_length_reserves_only_its_own_room);
	tcase_add_test(tc, test_blockstore_admits_checks_without_evicting);
	tcase_add_test(tc, test_blockstore_direct_write_min_sends_short_blocks_through_the_page_cache);
	tcase_add_test(tc, test_blockstore_direct_read_opens_large_blocks_with_o_direct);
	tcase_add_test(tc, test_blockstore_drop_pages_by_hash_after_the_ref_is_put);
	tcase_add_test(tc, test_blockstore_rejects_bad_keys);
	tcase_add_test(tc, test_blockstore_duplicate_write_is_err_exists);
	tcase_add_test(tc, test_blockstore_abort_releases_reservation);
	tcase_add_test(tc, test_blockstore_restart_rebuilds_index);
	tcase_add_test(tc, test_blockstore_rebuild_discards_damaged_files);
	tcase_add_test(tc, test_blockstore_verify_detects_flipped_data_byte);
	tcase_add_test(tc, test_blockstore_unreadable_header_keeps_the_block);
	tcase_add_test(tc, test_blockstore_rebuild_evicts_oldest_over_capacity);
	tcase_add_test(tc, test_blockstore_open_names_the_directory_on_error);
	tcase_add_test(tc, test_blockstore_second_owner_of_a_directory_is_refused);
	tcase_add_test(tc, test_blockstore_directory_id_is_kept_across_owners);
	tcase_add_test(tc, test_blockstore_capacity_never_exceeded_under_many_inserts);
	tcase_add_test(tc, test_blockstore_held_ref_never_evicted);
	tcase_add_test(tc, test_blockstore_pinned_dataset_never_evicted);
	tcase_add_test(tc, test_blockstore_drop_dataset_unpins_it);
	tcase_add_test(tc, test_blockstore_drop_dataset_keeps_held_blocks);
	tcase_add_test(tc, test_blockstore_drop_unless_drops_what_keep_refuses);
	tcase_add_test(tc, test_blockstore_drop_unless_judges_without_the_lock);
	tcase_add_test(tc, test_blockstore_drop_unless_goes_slice_by_slice);
	tcase_add_test(tc, test_blockstore_drop_dataset_goes_slice_by_slice);
	tcase_add_test(tc, test_blockstore_drop_unless_stops_where_its_next_block_went);
	tcase_add_test(tc, test_blockstore_check_usable_makes_a_file_in_tmp);
	tcase_add_test(tc, test_blockstore_room_check_fails_only_where_eviction_cannot_help);
	tcase_add_test(tc, test_blockstore_concurrent_writers_and_readers);
	tcase_add_test(tc, test_sketch_counts_and_halves);
	suite_add_tcase(s, tc);
	tcase_add_test(pol, test_blockstore_lru_thrashes_on_cyclic_scan);
	tcase_add_test(pol, test_blockstore_scan_resistant_keeps_stable_subset_on_cyclic_scan);
	tcase_add_test(pol, test_blockstore_scan_resistant_keeps_stable_subset_on_shuffled_epochs);
	tcase_add_test(pol, test_blockstore_pinned_dataset_keeps_its_blocks_on_cyclic_scan);
	tcase_add_test(pol, test_blockstore_scan_resistant_admits_new_hot_set);
	suite_add_tcase(s, pol);
	return check_main_run(s);
}
