/*
 * test_fdcache.c - open block files kept across reads (block/fdcache.c):
 * a hit opens nothing, the bound holds (idle entries evicted, a full cache
 * of entries in use opens one for the read alone), idle entries close, and
 * a file the worker evicted or replaced is not served from the old
 * descriptor once checked, nor a bad one after a put that says so; a
 * cache that reads with O_DIRECT leaves no page of the file cached.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/fdcache.h"
#include "block/file.h"
#include "common/fileio.h"
#include "unit/check_main.h"

#define BS (256u << 10)
#define LEN BS

static char dir[] = "/tmp/granary-fdcache-XXXXXX";

static struct block_key key_of(uint64_t index, const char *etag)
{
	return (struct block_key){ .endpoint = "", .bucket = "b", .object = "o", .etag = etag,
				   .block_size = BS, .index = index };
}

/* Writes block k, len bytes all = fill, as a worker would: a new file
 * renamed over the path. */
static void put_block_of(const struct block_key *k, unsigned char fill, size_t len)
{
	unsigned char *data = malloc(len);
	uint8_t h[BLOCK_HEADER_SIZE], hash[BLOCK_HASH_LEN];
	char path[PATH_MAX], tmp[PATH_MAX + 8], sub[PATH_MAX];
	struct block_sums sums;
	int fd;

	ck_assert_ptr_nonnull(data);
	memset(data, fill, len);
	block_sums_of(data, len, k->block_size, &sums);
	block_header_prepare(h, k, "ds");
	block_header_seal(h, len, sums.crc, 1700000000);
	block_key_hash(k, hash);
	block_file_path(dir, hash, path, sizeof(path));
	snprintf(sub, sizeof(sub), "%s/blocks", dir);
	mkdir(sub, 0755);
	snprintf(sub, sizeof(sub), "%.*s", (int)(strrchr(path, '/') - path), path);
	mkdir(sub, 0755);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, h, sizeof(h)), (ssize_t)sizeof(h));
	ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
	close(fd);
	ck_assert_int_eq(rename(tmp, path), 0);
	free(data);
}

static void put_block(const struct block_key *k, unsigned char fill)
{
	put_block_of(k, fill, LEN);
}

static void unlink_block(const struct block_key *k)
{
	uint8_t hash[BLOCK_HASH_LEN];
	char path[PATH_MAX];

	block_key_hash(k, hash);
	block_file_path(dir, hash, path, sizeof(path));
	ck_assert_int_eq(unlink(path), 0);
}

/* Takes k, reads a byte of its data checked, puts it back; the byte. */
static int read_byte(struct block_fdcache *c, const struct block_key *k, enum error_code *rc)
{
	uint8_t hash[BLOCK_HASH_LEN];
	unsigned char b[65536];
	struct block_fdref *ref = NULL;
	struct error err;
	bool corrupt = false;

	block_key_hash(k, hash);
	*rc = block_fdcache_take(c, k, hash, &ref, &err);
	if (*rc != ERR_OK)
		return -1;
	*rc = block_read_checked(block_fdref_fd(ref), block_fdref_sums(ref), 0, sizeof(b), b,
				 &corrupt, &err);
	block_fdcache_put(c, ref, *rc != ERR_OK);
	return *rc == ERR_OK ? b[0] : -1;
}

static struct block_fdcache *cache_new(unsigned capacity, uint64_t check_ms, uint64_t idle_ms)
{
	struct block_fdcache *c = NULL;
	struct error err;

	ck_assert_int_eq(block_fdcache_new(&(struct block_fdcache_config){
						   .dir = dir, .capacity = capacity,
						   .check_ms = check_ms, .idle_ms = idle_ms },
					   &c, &err),
			 ERR_OK);
	return c;
}

static void setup(void)
{
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
	strcpy(dir, "/tmp/granary-fdcache-XXXXXX");
}

START_TEST(test_fdcache_hit_opens_nothing)
{
	struct block_fdcache *c = cache_new(4, 60000, 0);
	struct block_key k = key_of(0, "e");
	struct block_fdcache_stats st;
	enum error_code rc;

	ck_assert_int_eq(read_byte(c, &k, &rc), -1);
	ck_assert_int_eq(rc, ERR_NOT_FOUND);
	put_block(&k, 7);
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(read_byte(c, &k, &rc), 7);
	block_fdcache_get_stats(c, &st);
	ck_assert_uint_eq(st.opens, 1);
	ck_assert_uint_eq(st.hits, 4);
	ck_assert_uint_eq(st.open_fds, 1);
	block_fdcache_free(c);
}
END_TEST

START_TEST(test_fdcache_evicts_least_recent_within_its_bound)
{
	struct block_fdcache *c = cache_new(2, 60000, 0);
	struct block_key k0 = key_of(0, "e"), k1 = key_of(1, "e"), k2 = key_of(2, "e");
	struct block_fdref *r0 = NULL, *r1 = NULL, *r2 = NULL;
	uint8_t h0[BLOCK_HASH_LEN], h1[BLOCK_HASH_LEN], h2[BLOCK_HASH_LEN];
	struct block_fdcache_stats st;
	enum error_code rc;
	struct error err;

	put_block(&k0, 1);
	put_block(&k1, 2);
	put_block(&k2, 3);
	ck_assert_int_eq(read_byte(c, &k0, &rc), 1);
	ck_assert_int_eq(read_byte(c, &k1, &rc), 2);
	ck_assert_int_eq(read_byte(c, &k0, &rc), 1); /* k1 is the oldest now */
	ck_assert_int_eq(read_byte(c, &k2, &rc), 3);
	block_fdcache_get_stats(c, &st);
	ck_assert_uint_eq(st.open_fds, 2);
	ck_assert_uint_eq(st.evictions, 1);
	ck_assert_int_eq(read_byte(c, &k0, &rc), 1); /* still held: a hit */
	block_fdcache_get_stats(c, &st);
	ck_assert_uint_eq(st.opens, 3);

	/* every entry in use: a third block is opened for its reader alone */
	block_key_hash(&k0, h0);
	block_key_hash(&k1, h1);
	block_key_hash(&k2, h2);
	ck_assert_int_eq(block_fdcache_take(c, &k0, h0, &r0, &err), ERR_OK);
	ck_assert_int_eq(block_fdcache_take(c, &k2, h2, &r2, &err), ERR_OK);
	ck_assert_int_eq(block_fdcache_take(c, &k1, h1, &r1, &err), ERR_OK);
	block_fdcache_get_stats(c, &st);
	ck_assert_uint_eq(st.open_fds, 2);
	block_fdcache_put(c, r1, false);
	block_fdcache_put(c, r2, false);
	block_fdcache_put(c, r0, false);
	block_fdcache_get_stats(c, &st);
	ck_assert_uint_eq(st.open_fds, 2);
	block_fdcache_free(c);
}
END_TEST

START_TEST(test_fdcache_closes_idle_entries)
{
	/* Idle after 300 ms: a sweep right after the read keeps the file even
	 * when the test is descheduled a while in between. */
	struct block_fdcache *c = cache_new(4, 60000, 300);
	struct block_key k = key_of(0, "e");
	struct block_fdcache_stats st;
	enum error_code rc;

	put_block(&k, 9);
	ck_assert_int_eq(read_byte(c, &k, &rc), 9);
	block_fdcache_sweep(c);
	block_fdcache_get_stats(c, &st);
	ck_assert_uint_eq(st.open_fds, 1);
	usleep(400 * 1000);
	block_fdcache_sweep(c);
	block_fdcache_get_stats(c, &st);
	ck_assert_uint_eq(st.open_fds, 0);
	block_fdcache_free(c);
}
END_TEST

START_TEST(test_fdcache_replaced_block_file_not_served_stale)
{
	struct block_fdcache *c = cache_new(4, 0, 0); /* check on every take */
	struct block_key k = key_of(0, "e");
	struct block_fdcache_stats st;
	enum error_code rc;

	put_block(&k, 1);
	ck_assert_int_eq(read_byte(c, &k, &rc), 1);
	/* the worker writes the block again (a new file over the path):
	 * the old descriptor's file is unlinked, the new one is read */
	put_block(&k, 2);
	ck_assert_int_eq(read_byte(c, &k, &rc), 2);
	block_fdcache_get_stats(c, &st);
	ck_assert_uint_eq(st.reopened, 1);
	/* evicted: gone, not served from the descriptor */
	unlink_block(&k);
	ck_assert_int_eq(read_byte(c, &k, &rc), -1);
	ck_assert_int_eq(rc, ERR_NOT_FOUND);
	block_fdcache_free(c);
}
END_TEST

START_TEST(test_fdcache_bad_put_drops_the_descriptor)
{
	struct block_fdcache *c = cache_new(4, 60000, 0); /* no check for a minute */
	struct block_key k = key_of(0, "e");
	struct block_fdcache_stats st;
	uint8_t hash[BLOCK_HASH_LEN];
	char path[PATH_MAX];
	enum error_code rc;
	int fd;

	put_block(&k, 1);
	ck_assert_int_eq(read_byte(c, &k, &rc), 1);
	/* a byte flipped in place: the checked read refuses it and the put
	 * says so, closing the descriptor */
	block_key_hash(&k, hash);
	block_file_path(dir, hash, path, sizeof(path));
	fd = open(path, O_WRONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, "x", 1, BLOCK_HEADER_SIZE + 10), 1);
	close(fd);
	ck_assert_int_eq(read_byte(c, &k, &rc), -1);
	ck_assert_int_eq(rc, ERR_IO);
	block_fdcache_get_stats(c, &st);
	ck_assert_uint_eq(st.open_fds, 0);
	/* the worker fetched it again: the next read opens the new file
	 * although the check interval has not passed */
	put_block(&k, 3);
	ck_assert_int_eq(read_byte(c, &k, &rc), 3);
	block_fdcache_free(c);
}
END_TEST

/* A cache that reads with O_DIRECT: the descriptors of blocks of
 * BLOCK_DIRECT_MIN bytes or more bypass the page cache (the header's page
 * read at open is dropped too), and a checked read of any offset and
 * length, none of them aligned, gets the bytes; a smaller block is read
 * through the page cache. */
START_TEST(test_fdcache_direct_reads_bypass_the_page_cache)
{
	const size_t len = BLOCK_DIRECT_MIN + 5000;
	struct block_fdcache *c = NULL;
	struct block_key k = { .endpoint = "", .bucket = "b", .object = "big", .etag = "e",
			       .block_size = 2 * BLOCK_DIRECT_MIN, .index = 0 };
	struct block_key small = key_of(3, "e");
	uint8_t hash[BLOCK_HASH_LEN];
	struct block_fdref *ref = NULL;
	static unsigned char b[70001];
	uint64_t resident = 1;
	struct error err;
	bool corrupt = true;
	char path[PATH_MAX];
	int fd, probe;

	put_block_of(&k, 0x3c, len);
	put_block(&small, 0x11);
	block_key_hash(&k, hash);
	block_file_path(dir, hash, path, sizeof(path));
	probe = open(path, O_RDONLY | O_DIRECT);
	if (probe < 0) /* a filesystem without O_DIRECT: nothing to test here */
		return;
	fsync(probe);
	fileio_drop_cached(probe, 0, 0);
	ck_assert_int_eq(block_fdcache_new(&(struct block_fdcache_config){
						   .dir = dir, .check_ms = 60000, .direct = true },
					   &c, &err),
			 ERR_OK);
	ck_assert_int_eq(block_fdcache_take(c, &k, hash, &ref, &err), ERR_OK);
	fd = block_fdref_fd(ref);
	ck_assert(fcntl(fd, F_GETFL) & O_DIRECT);
	ck_assert_int_eq(block_read_checked(fd, block_fdref_sums(ref), 100, sizeof(b), b, &corrupt,
					    &err),
			 ERR_OK);
	ck_assert(!corrupt);
	for (size_t i = 0; i < sizeof(b); i++)
		ck_assert_uint_eq(b[i], 0x3c);
	/* the last bytes of the block, to its unaligned end */
	ck_assert_int_eq(block_read_checked(fd, block_fdref_sums(ref), len - 5001, 5001, b,
					    &corrupt, &err),
			 ERR_OK);
	ck_assert_uint_eq(b[5000], 0x3c);
	ck_assert_int_eq(fileio_resident(probe, 0, 0, &resident), 0);
	ck_assert_uint_eq(resident, 0);
	block_fdcache_put(c, ref, false);
	block_key_hash(&small, hash);
	ck_assert_int_eq(block_fdcache_take(c, &small, hash, &ref, &err), ERR_OK);
	ck_assert(!(fcntl(block_fdref_fd(ref), F_GETFL) & O_DIRECT));
	block_fdcache_put(c, ref, false);
	block_fdcache_free(c);
	close(probe);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("block_fdcache");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_fdcache_hit_opens_nothing);
	tcase_add_test(tc, test_fdcache_evicts_least_recent_within_its_bound);
	tcase_add_test(tc, test_fdcache_closes_idle_entries);
	tcase_add_test(tc, test_fdcache_replaced_block_file_not_served_stale);
	tcase_add_test(tc, test_fdcache_bad_put_drops_the_descriptor);
	tcase_add_test(tc, test_fdcache_direct_reads_bypass_the_page_cache);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
