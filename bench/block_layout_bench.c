/*
 * block_layout_bench - what the kernel charges, in CPU per block, for
 * writing a small file's block to the cache and reading it back once, by
 * the block store and by the layouts it could use instead:
 *
 *   blockstore   the block store itself, as the mount uses it for a small
 *                file: a writer begun with the expected length, the bytes
 *                appended in the 16 KiB pieces a store sends, the commit
 *                (one write of header and data, written back before it is
 *                published, renamed into blocks/), then one checked read
 *                of the whole block, which drops its pages (the baseline);
 *   files        the same system calls without the store's bookkeeping: a
 *                new file in tmp/, one pwrite, sync_file_range and wait,
 *                rename into blocks/XX/, pread, POSIX_FADV_DONTNEED, close;
 *   pack         the same bytes appended to one shared file (no creation,
 *                rename or close per block), written back and dropped by
 *                range;
 *   direct-pack  one shared file written and read with O_DIRECT (the data
 *                padded to 4 KiB, no page cache at all).
 *
 *   block_layout_bench [--dir PARENT] [--blocks N] [--kib K] [--rounds R]
 *
 * Each mode runs on a fresh directory under PARENT (default: the current
 * directory, so that it measures the disk the cache would be on), one
 * thread, N blocks of K KiB (default 3,000 of 110 KiB, the benchmark's
 * small files), R rounds in turn (default 2). Prints per mode and round:
 *   mode=M round=R blocks=N cpu_us_per_block=C wall_us_per_block=W cpu_ratio_to_blockstore=X
 * Directories are removed after each mode. On an ext4 without a journal,
 * creating files right after removing thousands costs far more (the
 * allocator skips inodes freed recently: docs/benchmarks.md, "The cache's
 * filesystem"); the modes alternate so that each round pays alike.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/file.h"
#include "cache/blockstore.h"
#include "common/fileio.h"
#include "common/log.h"
#include "common/retry.h"

#define PIECE (16u << 10) /* what the S3 server sends per read of its socket */
#define ALIGN 4096u

enum mode { MODE_BLOCKSTORE, MODE_FILES, MODE_PACK, MODE_DIRECT_PACK, MODE_COUNT };

static const char *const mode_names[MODE_COUNT] = { "blockstore", "files", "pack", "direct-pack" };

struct run {
	const char *dir;
	long blocks;
	size_t len;           /* data bytes per block */
	unsigned char *data;  /* len bytes, ALIGN-aligned, room for the padding */
	unsigned char *back;  /* read-back buffer, as large */
};

static double cpu_s(void)
{
	struct rusage r;

	getrusage(RUSAGE_SELF, &r);
	return (double)r.ru_utime.tv_sec + (double)r.ru_stime.tv_sec +
	       ((double)r.ru_utime.tv_usec + (double)r.ru_stime.tv_usec) / 1e6;
}

static int fail(const char *what, const char *path)
{
	fprintf(stderr, "block_layout_bench: %s '%s': %s\n", what, path, strerror(errno));
	return -1;
}

static int mkdir_p(const char *path)
{
	struct error err;

	if (fileio_mkdirs(path, 0755, &err) == ERR_OK)
		return 0;
	fprintf(stderr, "block_layout_bench: %s\n", err.msg);
	return -1;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int run_blockstore(const struct run *r)
{
	struct blockstore_config cfg = { .dir = r->dir,
					 .capacity = (uint64_t)r->blocks * (r->len + 2 * ALIGN),
					 .direct_write = true,
					 .direct_write_min = BLOCK_DIRECT_MIN };
	struct blockstore *bs = NULL;
	struct error err;
	char object[32];

	if (blockstore_open(&cfg, &bs, &err) != ERR_OK) {
		fprintf(stderr, "block_layout_bench: %s\n", err.msg);
		return -1;
	}
	for (long i = 0; i < r->blocks; i++) {
		struct block_key key = { .endpoint = "", .bucket = "bench", .object = object,
					 .etag = "e", .block_size = 4u << 20, .index = 0 };
		struct blockstore_writer *w = NULL;
		struct blockstore_ref *ref = NULL;
		struct block_sums sums;
		bool corrupt;

		snprintf(object, sizeof(object), "small/%08ld", i);
		if (blockstore_write_begin_expect(bs, &key, "bench", key.block_size, r->len, &w,
						  &err) != ERR_OK)
			goto fail;
		for (size_t off = 0; off < r->len; off += PIECE) {
			size_t n = r->len - off < PIECE ? r->len - off : PIECE;

			if (blockstore_write_append(w, r->data + off, n, &err) != ERR_OK) {
				blockstore_write_abort(bs, w);
				goto fail;
			}
		}
		if (blockstore_write_commit(bs, w, &ref, &err) != ERR_OK)
			goto fail;
		if (blockstore_ref_sums(bs, ref, &sums, &corrupt, &err) != ERR_OK ||
		    block_read_checked(blockstore_ref_fd(ref), &sums, 0, r->len, r->back, &corrupt,
				       &err) != ERR_OK) {
			blockstore_ref_put(bs, ref);
			goto fail;
		}
		blockstore_ref_put(bs, ref);
	}
	blockstore_free(bs);
	return 0;
fail:
	fprintf(stderr, "block_layout_bench: block store: %s\n", err.msg);
	blockstore_free(bs);
	return -1;
}

static int run_files(const struct run *r)
{
	char tmp[4096], dst[4096];

	snprintf(tmp, sizeof(tmp), "%s/tmp", r->dir);
	if (mkdir_p(tmp) != 0)
		return -1;
	snprintf(dst, sizeof(dst), "%s/blocks", r->dir);
	if (mkdir_p(dst) != 0)
		return -1;
	for (long i = 0; i < r->blocks; i++) {
		const size_t n = BLOCK_HEADER_SIZE + r->len;
		int fd;

		snprintf(tmp, sizeof(tmp), "%s/tmp/%08ld", r->dir, i);
		snprintf(dst, sizeof(dst), "%s/blocks/%02lx", r->dir, i & 255);
		if (i < 256 && mkdir_p(dst) != 0)
			return -1;
		snprintf(dst, sizeof(dst), "%s/blocks/%02lx/%08ld", r->dir, i & 255, i);
		fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0)
			return fail("create", tmp);
		if (pwrite(fd, r->data, n, 0) != (ssize_t)n ||
		    sync_file_range(fd, 0, 0,
				    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
					    SYNC_FILE_RANGE_WAIT_AFTER) != 0 ||
		    rename(tmp, dst) != 0 || pread(fd, r->back, n, 0) != (ssize_t)n) {
			close(fd);
			return fail("write, rename or read", tmp);
		}
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		close(fd);
	}
	return 0;
}

static int run_pack(const struct run *r, bool direct)
{
	const size_t n = BLOCK_HEADER_SIZE + r->len;
	const size_t padded = (n + ALIGN - 1) / ALIGN * ALIGN;
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/pack", r->dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | (direct ? O_DIRECT : 0), 0644);
	if (fd < 0)
		return fail("create", path);
	for (long i = 0; i < r->blocks; i++) {
		const off_t at = (off_t)i * (off_t)padded;
		bool ok;

		if (direct) {
			ok = pwrite(fd, r->data, padded, at) == (ssize_t)padded &&
			     pread(fd, r->back, padded, at) == (ssize_t)padded;
		} else {
			ok = pwrite(fd, r->data, n, at) == (ssize_t)n &&
			     sync_file_range(fd, at, (off_t)n,
					     SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
						     SYNC_FILE_RANGE_WAIT_AFTER) == 0 &&
			     pread(fd, r->back, n, at) == (ssize_t)n;
			if (ok)
				posix_fadvise(fd, at, (off_t)n, POSIX_FADV_DONTNEED);
		}
		if (!ok) {
			close(fd);
			return fail("write or read", path);
		}
	}
	close(fd);
	return 0;
}

static int run_mode(enum mode m, const struct run *r)
{
	switch (m) {
	case MODE_BLOCKSTORE:
		return run_blockstore(r);
	case MODE_FILES:
		return run_files(r);
	case MODE_PACK:
		return run_pack(r, false);
	default:
		return run_pack(r, true);
	}
}

int main(int argc, char **argv)
{
	const char *parent = ".";
	long blocks = 3000, kib = 110, rounds = 2;
	struct run r = { 0 };
	char dir[4096];
	int rc = 0;

	for (int i = 1; i < argc; i++) {
		if (i + 1 < argc && strcmp(argv[i], "--dir") == 0)
			parent = argv[++i];
		else if (i + 1 < argc && strcmp(argv[i], "--blocks") == 0)
			blocks = atol(argv[++i]);
		else if (i + 1 < argc && strcmp(argv[i], "--kib") == 0)
			kib = atol(argv[++i]);
		else if (i + 1 < argc && strcmp(argv[i], "--rounds") == 0)
			rounds = atol(argv[++i]);
		else {
			fprintf(stderr,
				"usage: block_layout_bench [--dir PARENT] [--blocks N] [--kib K] [--rounds R]\n");
			return 2;
		}
	}
	if (blocks < 1 || kib < 1 || kib > 1024 || rounds < 1) {
		fprintf(stderr, "block_layout_bench: --blocks and --rounds must be >= 1, --kib 1-1024\n");
		return 2;
	}
	log_set_level(LOG_LEVEL_WARN);
	r.blocks = blocks;
	r.len = (size_t)kib << 10;
	r.dir = dir;
	/* page-aligned, as O_DIRECT wants */
	r.data = fileio_buf_alloc(BLOCK_HEADER_SIZE + r.len + ALIGN);
	r.back = fileio_buf_alloc(BLOCK_HEADER_SIZE + r.len + ALIGN);
	if (!r.data || !r.back) {
		fprintf(stderr, "block_layout_bench: out of memory\n");
		return 1;
	}
	for (size_t i = 0; i < BLOCK_HEADER_SIZE + r.len + ALIGN; i++)
		r.data[i] = (unsigned char)(i * 2654435761u >> 13);
	for (long round = 1; round <= rounds && rc == 0; round++) {
		double base = 0;

		for (int m = 0; m < MODE_COUNT && rc == 0; m++) {
			double c0, t0, cpu, wall;

			snprintf(dir, sizeof(dir), "%s/block-layout-bench.%ld.%d", parent,
				 (long)getpid(), m);
			if (mkdir_p(dir) != 0) {
				rc = 1;
				break;
			}
			c0 = cpu_s();
			t0 = retry_now_s();
			if (run_mode((enum mode)m, &r) != 0)
				rc = 1;
			cpu = (cpu_s() - c0) / (double)blocks * 1e6;
			wall = (retry_now_s() - t0) / (double)blocks * 1e6;
			nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
			if (rc != 0)
				break;
			if (m == MODE_BLOCKSTORE)
				base = cpu;
			printf("mode=%s round=%ld blocks=%ld cpu_us_per_block=%.1f wall_us_per_block=%.1f cpu_ratio_to_blockstore=%.2f\n",
			       mode_names[m], round, blocks, cpu, wall, base > 0 ? cpu / base : 0);
			fflush(stdout);
		}
	}
	free(r.data);
	free(r.back);
	return rc;
}
