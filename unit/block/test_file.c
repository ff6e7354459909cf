/*
 * test_file.c - the block file as the mount reads it and the worker
 * writes it (block/file.c): the path, the header written and parsed back,
 * every field of it checked, block_file_open on files written here
 * byte by byte, without a block store, a block read whole with its
 * header, and the pages a checked read leaves in the page cache.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "block/file.h"
#include "common/fileio.h"
#include "block/name.h"
#include "unit/check_main.h"

#define BS (1u << 20)
#define LEN (BS - 1000) /* a short last block: 16 chunks, the last short */

static const struct block_key key = { .endpoint = "http://s3:9000",
				      .bucket = "train",
				      .object = "a/shard-1.rec",
				      .etag = "\"e1\"",
				      .block_size = BS,
				      .index = 5 };

static void fill(unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(i * 131 + (i >> 10));
}

/* A sealed header of key with the sums of data into h. */
static void make_header(uint8_t *h, const unsigned char *data, struct block_sums *sums)
{
	block_sums_of(data, LEN, BS, sums);
	block_header_prepare(h, &key, "imagenet");
	block_header_seal(h, LEN, sums->crc, 1700000000);
}

START_TEST(test_block_file_path_uses_first_two_hex_digits)
{
	uint8_t hash[BLOCK_HASH_LEN];
	char path[256], rel[BLOCK_REL_PATH_LEN];

	for (int i = 0; i < BLOCK_HASH_LEN; i++)
		hash[i] = (uint8_t)(0xa0 + i);
	block_file_rel_path(hash, rel);
	ck_assert_str_eq(rel, "a0/a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
	ck_assert_int_eq(block_file_path("/c", hash, path, sizeof(path)), 45);
	ck_assert_str_eq(path, "/c/blocks/a0/a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
}
END_TEST

/* The sums of a range are those of the whole for the chunks that hold it
 * (the last one short), and leave every other chunk's as it was. */
START_TEST(test_block_sums_of_range_computes_the_range_chunks_only)
{
	static unsigned char data[LEN];
	struct block_sums whole, part;
	const uint32_t cs = block_chunk_size(BS);
	const uint64_t off = cs + 100, n = LEN - off - 1;

	fill(data, LEN);
	block_sums_of(data, LEN, BS, &whole);
	memset(&part, 0xab, sizeof(part));
	block_sums_of_range(data, LEN, BS, off, n, &part);
	ck_assert_uint_eq(part.data_len, LEN);
	ck_assert_uint_eq(part.chunk_size, cs);
	ck_assert_uint_eq(part.crc[0], 0xababababu);
	for (uint64_t c = 1; c * cs < LEN; c++)
		ck_assert_uint_eq(part.crc[c], whole.crc[c]);
	ck_assert_uint_eq(part.crc[(LEN + cs - 1) / cs], 0xababababu);
	ck_assert(block_sums_check(&part, cs, data + cs, LEN - cs));
}
END_TEST

START_TEST(test_block_header_round_trips)
{
	static unsigned char data[LEN];
	uint8_t h[BLOCK_HEADER_SIZE], hash[BLOCK_HASH_LEN], want[BLOCK_HASH_LEN];
	struct block_sums sums, back;
	struct block_header hdr;

	fill(data, LEN);
	make_header(h, data, &sums);
	ck_assert_ptr_null(block_header_parse(h, &hdr));
	ck_assert_uint_eq(hdr.block_size, BS);
	ck_assert_uint_eq(hdr.chunk_size, 65536);
	ck_assert_uint_eq(hdr.data_len, LEN);
	ck_assert_uint_eq(hdr.index, 5);
	ck_assert_int_eq((int)hdr.dataset.n, 8);
	ck_assert_int_eq(memcmp(hdr.dataset.p, "imagenet", 8), 0);
	ck_assert_int_eq(memcmp(hdr.object.p, key.object, hdr.object.n), 0);
	ck_assert_int_eq(memcmp(hdr.etag.p, key.etag, hdr.etag.n), 0);
	block_header_sums(&hdr, &back);
	ck_assert_uint_eq(back.data_len, LEN);
	ck_assert_int_eq(memcmp(back.crc, sums.crc, 16 * sizeof(uint32_t)), 0);
	block_header_key_hash(&hdr, hash);
	block_key_hash(&key, want);
	ck_assert_int_eq(memcmp(hash, want, sizeof(hash)), 0);
}
END_TEST

START_TEST(test_block_header_refuses_damage)
{
	static unsigned char data[LEN];
	uint8_t h[BLOCK_HEADER_SIZE], copy[BLOCK_HEADER_SIZE];
	struct block_sums sums;
	struct block_header hdr;

	fill(data, LEN);
	make_header(h, data, &sums);
	/* any byte flipped fails: the magic first, the checksum then */
	memcpy(copy, h, sizeof(h));
	copy[0] ^= 1;
	ck_assert_str_eq(block_header_parse(copy, &hdr), "bad magic");
	for (size_t off = 8; off < BLOCK_HEADER_SIZE; off += 97) {
		memcpy(copy, h, sizeof(h));
		copy[off] ^= 0x40;
		ck_assert_msg(block_header_parse(copy, &hdr) != NULL, "byte %zu flipped passes", off);
	}
}
END_TEST

START_TEST(test_block_header_fits_longest_names)
{
	char dataset[BLOCK_DATASET_MAX + 1], object[BLOCK_OBJECT_MAX + 2];
	struct block_key k = key;
	uint8_t h[BLOCK_HEADER_SIZE];
	struct block_header hdr;
	struct error err;
	uint32_t crcs[BLOCK_CHUNKS_MAX] = { 0 };

	memset(dataset, 'd', BLOCK_DATASET_MAX);
	dataset[BLOCK_DATASET_MAX] = '\0';
	memset(object, 'o', BLOCK_OBJECT_MAX);
	object[BLOCK_OBJECT_MAX] = '\0';
	k.object = object;
	ck_assert_int_eq(block_header_fits(&k, dataset, &err), ERR_OK);
	block_header_prepare(h, &k, dataset);
	block_header_seal(h, 0, crcs, 1);
	ck_assert_ptr_null(block_header_parse(h, &hdr));
	ck_assert_uint_eq(hdr.dataset.n, BLOCK_DATASET_MAX);
	ck_assert_uint_eq(hdr.object.n, BLOCK_OBJECT_MAX);
	strcat(object, "o");
	ck_assert_int_eq(block_header_fits(&k, dataset, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "longer than 1024 bytes"));
}
END_TEST

/* Writes a block file of key under dir as the worker would. */
static void write_block(const char *dir, const unsigned char *data, char *path, size_t size)
{
	uint8_t h[BLOCK_HEADER_SIZE], hash[BLOCK_HASH_LEN];
	struct block_sums sums;
	char sub[PATH_MAX];
	int fd;

	make_header(h, data, &sums);
	block_key_hash(&key, hash);
	block_file_path(dir, hash, path, size);
	snprintf(sub, sizeof(sub), "%s/blocks", dir);
	mkdir(sub, 0755);
	snprintf(sub, sizeof(sub), "%.*s", (int)(strrchr(path, '/') - path), path);
	mkdir(sub, 0755);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, h, sizeof(h)), (ssize_t)sizeof(h));
	ck_assert_int_eq(write(fd, data, LEN), LEN);
	close(fd);
}

START_TEST(test_block_file_open_checks_key_and_size)
{
	static unsigned char data[LEN], got[LEN];
	char dir[] = "/tmp/granary-block-XXXXXX", path[PATH_MAX];
	struct block_key other = key;
	struct block_sums sums;
	struct error err;
	bool corrupt = true;
	int fd = -1;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	fill(data, LEN);
	ck_assert_int_eq(block_file_open(dir, &key, &fd, &sums, &err), ERR_NOT_FOUND);
	write_block(dir, data, path, sizeof(path));
	ck_assert_int_eq(block_file_open(dir, &key, &fd, &sums, &err), ERR_OK);
	ck_assert_int_eq(block_read_checked(fd, &sums, 70000, 200000, got, &corrupt, &err), ERR_OK);
	ck_assert(!corrupt);
	ck_assert_int_eq(memcmp(got, data + 70000, 200000), 0);
	close(fd);

	/* a file whose name is the key's but whose header names another
	 * block (a hash collision, a stray copy) is a miss */
	other.etag = "\"e2\"";
	{
		uint8_t h2[BLOCK_HASH_LEN];
		char path2[PATH_MAX], sub[PATH_MAX];

		block_key_hash(&other, h2);
		block_file_path(dir, h2, path2, sizeof(path2));
		snprintf(sub, sizeof(sub), "%.*s", (int)(strrchr(path2, '/') - path2), path2);
		mkdir(sub, 0755);
		ck_assert_int_eq(link(path, path2), 0);
		ck_assert_int_eq(block_file_open(dir, &other, &fd, &sums, &err), ERR_NOT_FOUND);
		ck_assert_ptr_nonnull(strstr(err.msg, "header names another block"));
		unlink(path2);
	}

	/* one byte short */
	ck_assert_int_eq(truncate(path, BLOCK_HEADER_SIZE + LEN - 1), 0);
	ck_assert_int_eq(block_file_open(dir, &key, &fd, &sums, &err), ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "wrong file size"));
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(path), 0);
}
END_TEST

/* Bytes of [off, off + len) of fd in the page cache. */
static uint64_t resident(int fd, uint64_t off, uint64_t len)
{
	uint64_t r = 0;

	ck_assert_int_eq(fileio_resident(fd, off, len, &r), 0);
	return r;
}

/* A reader keeps the bytes it read (the FUSE reply puts them in the
 * mount's page cache): the chunks it read leave the block file's page
 * cache, the rest of the block and the header stay. On a disk's file
 * system (/var/tmp), where pages are a copy. */
START_TEST(test_block_read_checked_drops_the_chunks_it_read)
{
	static unsigned char data[LEN], got[LEN];
	char dir[] = "/var/tmp/granary-block-XXXXXX", path[PATH_MAX];
	const uint64_t cs = block_chunk_size(BS), end = BLOCK_HEADER_SIZE + LEN;
	const uint64_t last_page = end / 4096 * 4096;
	struct block_sums sums;
	struct statfs sf;
	struct error err;
	bool corrupt = true;
	int fd = -1;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(statfs(dir, &sf), 0);
	ck_assert_msg(sf.f_type != 0x01021994, "%s is on tmpfs: needs a disk", dir);
	fill(data, LEN);
	write_block(dir, data, path, sizeof(path));
	ck_assert_int_eq(block_file_open(dir, &key, &fd, &sums, &err), ERR_OK);
	ck_assert_int_eq(fsync(fd), 0); /* clean pages, as a committed block's */
	ck_assert_int_eq(fileio_pread_all(fd, got, LEN, BLOCK_HEADER_SIZE), LEN);
	ck_assert_uint_eq(resident(fd, 0, 0), last_page + 4096);

	/* bytes 70000..269999: chunks 1 to 4, read whole; what lies outside
	 * them stays (inside, a large folio reaching out of them may stay) */
	ck_assert_int_eq(block_read_checked(fd, &sums, 70000, 200000, got, &corrupt, &err), ERR_OK);
	ck_assert_int_eq(memcmp(got, data + 70000, 200000), 0);
	ck_assert_uint_eq(resident(fd, 0, BLOCK_HEADER_SIZE), BLOCK_HEADER_SIZE);
	ck_assert_uint_eq(resident(fd, BLOCK_HEADER_SIZE, cs), cs);
	ck_assert_uint_eq(resident(fd, BLOCK_HEADER_SIZE + 5 * cs, 0),
			  last_page + 4096 - (BLOCK_HEADER_SIZE + 5 * cs));

	/* a read that reaches the end of the data: the whole file goes */
	ck_assert_int_eq(block_read_checked(fd, &sums, LEN - 5, 5, got, &corrupt, &err), ERR_OK);
	ck_assert_uint_eq(resident(fd, 0, 0), 0);

	/* a whole block read at once, a corrupt one too: nothing stays */
	close(fd);
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fileio_pwrite_all(fd, "X", 1, BLOCK_HEADER_SIZE + 2 * cs + 7), 0);
	ck_assert_int_eq(fsync(fd), 0);
	ck_assert_int_eq(fileio_pread_all(fd, got, BLOCK_HEADER_SIZE, 0), BLOCK_HEADER_SIZE);
	ck_assert_int_eq(fileio_pread_all(fd, got, LEN, BLOCK_HEADER_SIZE), LEN);
	ck_assert_uint_eq(resident(fd, 0, 0), last_page + 4096);
	ck_assert_int_eq(block_read_checked(fd, &sums, 0, LEN, got, &corrupt, &err), ERR_IO);
	ck_assert(corrupt);
	ck_assert_uint_eq(resident(fd, 0, 0), 0);
	close(fd);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(path), 0);
}
END_TEST

/* A block read whole with its header in one read: the same misses as
 * block_file_open (none, another block's header, a size that is not the
 * header's or the caller's, longer or shorter), the data checked when
 * asked, and no page of the file left in the page cache. On a disk's file
 * system (/var/tmp), where pages are a copy. */
START_TEST(test_block_file_read_whole_checks_and_drops)
{
	static unsigned char data[LEN], got[LEN];
	char dir[] = "/var/tmp/granary-block-XXXXXX", path[PATH_MAX];
	struct block_key other = key;
	uint8_t hash[BLOCK_HASH_LEN];
	struct error err;
	bool corrupt = true;
	int fd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	fill(data, LEN);
	block_key_hash(&key, hash);
	ck_assert_int_eq(block_file_read_whole(dir, &key, hash, got, LEN, true, &corrupt, &err),
			 ERR_NOT_FOUND);
	ck_assert(!corrupt);
	write_block(dir, data, path, sizeof(path));
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fsync(fd), 0); /* clean pages, as a committed block's */
	ck_assert_uint_gt(resident(fd, 0, 0), 0);
	ck_assert_int_eq(block_file_read_whole(dir, &key, hash, got, LEN, true, &corrupt, &err),
			 ERR_OK);
	ck_assert(!corrupt);
	ck_assert_int_eq(memcmp(got, data, LEN), 0);
	ck_assert_uint_eq(resident(fd, 0, 0), 0);
	close(fd);

	/* no access time written: set one before the mtime (relatime
	 * would write the next read's), read, and it stays; a plain read
	 * after shows whether this filesystem writes access times at all */
	{
		struct timespec ts[2] = { { .tv_sec = 1000000000 }, { .tv_nsec = UTIME_OMIT } };
		struct stat st;

		ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, 0), 0);
		ck_assert_int_eq(block_file_read_whole(dir, &key, hash, got, LEN, true, &corrupt,
						       &err), ERR_OK);
		ck_assert_int_eq(stat(path, &st), 0);
		ck_assert_int_eq(st.st_atim.tv_sec, 1000000000);
		fd = open(path, O_RDONLY);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(read(fd, got, 1), 1);
		close(fd);
		ck_assert_int_eq(stat(path, &st), 0);
		if (st.st_atim.tv_sec == 1000000000)
			fprintf(stderr, "note: %s writes no access times: the check above proves nothing here\n",
				dir);
	}

	/* the key's name, another block's header */
	other.etag = "\"e2\"";
	ck_assert_int_eq(block_file_read_whole(dir, &other, hash, got, LEN, true, &corrupt, &err),
			 ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "header names another block"));

	/* the caller expects another length */
	ck_assert_int_eq(block_file_read_whole(dir, &key, hash, got, LEN - 1, true, &corrupt, &err),
			 ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "wrong file size"));

	/* one byte more than the header says, then one byte less */
	ck_assert_int_eq(truncate(path, BLOCK_HEADER_SIZE + LEN + 1), 0);
	ck_assert_int_eq(block_file_read_whole(dir, &key, hash, got, LEN, true, &corrupt, &err),
			 ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "wrong file size"));
	ck_assert_int_eq(truncate(path, BLOCK_HEADER_SIZE + LEN - 1), 0);
	ck_assert_int_eq(block_file_read_whole(dir, &key, hash, got, LEN, true, &corrupt, &err),
			 ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "wrong file size"));

	/* a flipped byte: corrupt when checked, served when told not to */
	write_block(dir, data, path, sizeof(path));
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fileio_pwrite_all(fd, "X", 1, BLOCK_HEADER_SIZE + LEN - 3), 0);
	close(fd);
	ck_assert_int_eq(block_file_read_whole(dir, &key, hash, got, LEN, true, &corrupt, &err),
			 ERR_IO);
	ck_assert(corrupt);
	ck_assert_ptr_nonnull(strstr(err.msg, "failed its checksums"));
	ck_assert_int_eq(block_file_read_whole(dir, &key, hash, got, LEN, false, &corrupt, &err),
			 ERR_OK);
	ck_assert(!corrupt);
	ck_assert_int_eq(got[LEN - 3], 'X');
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(path), 0);
}
END_TEST

/* The cache directory's id: 32 lower-case hex digits in DIR/.lock; an
 * owner keeps a valid one and replaces anything else; a reader finds
 * none where no owner ran. */
START_TEST(test_block_dir_id_is_drawn_once_and_read_back)
{
	char dir[] = "/tmp/granary-test-dirid-XXXXXX", path[64];
	char id[BLOCK_DIR_ID_LEN + 1], again[BLOCK_DIR_ID_LEN + 1], read[BLOCK_DIR_ID_LEN + 1];
	struct error err;
	int fd;

	ck_assert(block_dir_id_valid("0123456789abcdef0123456789abcdef"));
	ck_assert(!block_dir_id_valid("0123456789ABCDEF0123456789abcdef"));
	ck_assert(!block_dir_id_valid("0123456789abcdef0123456789abcde"));
	ck_assert(!block_dir_id_valid("0123456789abcdef0123456789abcdef0"));
	ck_assert(!block_dir_id_valid(""));

	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(block_dir_id_read(dir, read, &err), ERR_NOT_FOUND);
	snprintf(path, sizeof(path), "%s/" BLOCK_DIR_LOCK_FILE, dir);
	fd = open(path, O_RDWR | O_CREAT, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(block_dir_id_read(dir, read, &err), ERR_NOT_FOUND); /* empty */
	ck_assert_int_eq(block_dir_id_ensure(fd, id, &err), ERR_OK);
	ck_assert(block_dir_id_valid(id));
	ck_assert_int_eq(block_dir_id_ensure(fd, again, &err), ERR_OK);
	ck_assert_str_eq(again, id);
	ck_assert_int_eq(block_dir_id_read(dir, read, &err), ERR_OK);
	ck_assert_str_eq(read, id);
	/* anything else in the file is replaced */
	ck_assert_int_eq(ftruncate(fd, 0), 0);
	ck_assert_int_eq(pwrite(fd, "not an id at all, not at all.....\n", 34, 0), 34);
	ck_assert_int_eq(block_dir_id_read(dir, read, &err), ERR_NOT_FOUND);
	ck_assert_int_eq(block_dir_id_ensure(fd, again, &err), ERR_OK);
	ck_assert(block_dir_id_valid(again));
	ck_assert_str_ne(again, id);
	close(fd);
	unlink(path);
	rmdir(dir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("block_file");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_block_file_path_uses_first_two_hex_digits);
	tcase_add_test(tc, test_block_header_round_trips);
	tcase_add_test(tc, test_block_sums_of_range_computes_the_range_chunks_only);
	tcase_add_test(tc, test_block_header_refuses_damage);
	tcase_add_test(tc, test_block_header_fits_longest_names);
	tcase_add_test(tc, test_block_file_open_checks_key_and_size);
	tcase_add_test(tc, test_block_read_checked_drops_the_chunks_it_read);
	tcase_add_test(tc, test_block_file_read_whole_checks_and_drops);
	tcase_add_test(tc, test_block_dir_id_is_drawn_once_and_read_back);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
