/*
 * blockstore_rebuild_bench - how long blockstore_open takes to rebuild the
 * index of a cache directory holding N blocks (target: 100,000 blocks in
 * under 2 seconds).
 *
 *   blockstore_rebuild_bench [--blocks N] [--runs R] [--cold] [--sweep | --drop-dataset]
 *                            [--dir PARENT] [--data-kib K]
 *
 * Fills a fresh temporary directory under PARENT (default $TMPDIR or /tmp)
 * with N blocks through the block store itself, then times R opens of it
 * with a warm page cache and, with --cold, R more after dropping the page,
 * dentry and inode caches (needs root; skipped with a note otherwise).
 * Blocks carry 4 KiB of data each (--data-kib), not the default 4 MiB, to
 * keep the disk use at N x 8 KiB: the rebuild reads headers only, though
 * with a cold cache larger files spread the headers further apart on disk.
 * Prints one line per run:
 *   mode=warm blocks=N rebuild_seconds=S blocks_per_s=R target_seconds=2 ratio_to_target=S/2
 * With --sweep, then the sweep a worker makes when another joins
 * (blockstore_drop_unless dropping the half of the blocks it no longer
 * owns), with a thread asking the store for one block all the while: how
 * long the sweep took and the longest any one of those lookups waited for
 * the store's lock (what a read waits for during a sweep):
 *   mode=sweep blocks=N dropped=D seconds=S lookups=L lookups_over_1ms=O lookups_over_10ms=T
 *     longest_lookup_ms=M
 * --drop-dataset does the same for the removal of a dataset holding half
 * of the blocks (blockstore_drop_dataset), printing mode=drop_dataset.
 * The directory is removed at the end.
 */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cache/blockstore.h"
#include "common/log.h"
#include "common/retry.h"

#define TARGET_BLOCKS 100000
#define TARGET_SECONDS 2.0

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static size_t data_len = 4096;

static int fill(const char *dir, long blocks, uint64_t capacity)
{
	struct blockstore_config cfg = { .dir = dir, .capacity = capacity,
					 .block_size = (uint32_t)data_len };
	struct blockstore *bs = NULL;
	uint8_t *data = malloc(data_len);
	struct error err;
	char object[64];
	double t0 = retry_now_s();

	if (!data || blockstore_open(&cfg, &bs, &err) != ERR_OK) {
		fprintf(stderr, "blockstore_rebuild_bench: %s\n", data ? err.msg : "out of memory");
		free(data);
		return -1;
	}
	for (long i = 0; i < blocks; i++) {
		struct block_key key = { .endpoint = "http://s3.bench:9000", .bucket = "bench",
					 .object = object, .etag = "\"0123456789abcdef\"",
					 .block_size = (uint32_t)data_len, .index = (uint64_t)(i % 64) };
		struct blockstore_writer *w = NULL;

		snprintf(object, sizeof(object), "train/shard-%06ld.tfrecord", i / 64);
		memset(data, (int)(i & 0xff), data_len);
		if (blockstore_write_begin(bs, &key, i % 2 ? "imagenet" : "coco", data_len, &w, &err) != ERR_OK ||
		    blockstore_write_append(w, data, data_len, &err) != ERR_OK ||
		    blockstore_write_commit(bs, w, NULL, &err) != ERR_OK) {
			fprintf(stderr, "blockstore_rebuild_bench: block %ld: %s\n", i, err.msg);
			blockstore_free(bs);
			free(data);
			return -1;
		}
	}
	blockstore_free(bs);
	free(data);
	fprintf(stderr, "filled %ld blocks in %.2f s\n", blocks, retry_now_s() - t0);
	return 0;
}

static int drop_caches(void)
{
	FILE *f = NULL;

	sync();
	f = fopen("/proc/sys/vm/drop_caches", "w");
	if (!f)
		return -1;
	if (fputs("3\n", f) == EOF) {
		fclose(f);
		return -1;
	}
	return fclose(f);
}

static int time_open(const char *dir, const char *mode, long blocks, uint64_t capacity)
{
	struct blockstore_config cfg = { .dir = dir, .capacity = capacity,
					 .block_size = (uint32_t)data_len };
	struct blockstore *bs = NULL;
	struct blockstore_stats st;
	struct error err;
	double t0 = retry_now_s(), s = 0;

	if (blockstore_open(&cfg, &bs, &err) != ERR_OK) {
		fprintf(stderr, "blockstore_rebuild_bench: %s\n", err.msg);
		return -1;
	}
	s = retry_now_s() - t0;
	blockstore_get_stats(bs, &st);
	blockstore_free(bs);
	if ((long)st.blocks != blocks || st.corrupt != 0) {
		fprintf(stderr, "blockstore_rebuild_bench: rebuilt %llu blocks (%llu bad), expected %ld\n",
			(unsigned long long)st.blocks, (unsigned long long)st.corrupt, blocks);
		return -1;
	}
	printf("mode=%s blocks=%ld rebuild_seconds=%.3f blocks_per_s=%.0f target_seconds=%.0f "
	       "ratio_to_target=%.3f%s\n",
	       mode, blocks, s, (double)blocks / s, TARGET_SECONDS, s / TARGET_SECONDS,
	       blocks == TARGET_BLOCKS ? "" : " (target is for 100000 blocks)");
	fflush(stdout);
	return 0;
}

/* The probe of --sweep and --drop-dataset: asks for one block until told
 * to stop. */
struct probe {
	struct blockstore *bs;
	uint8_t hash[BLOCK_HASH_LEN];
	atomic_bool stop;
	unsigned long lookups;
	unsigned long over_ms, over_10ms; /* lookups that waited over 1 and 10 ms */
	double longest_s;
};

static void *probe_run(void *arg)
{
	struct probe *p = arg;

	while (!atomic_load(&p->stop)) {
		double t0 = retry_now_s(), s;

		(void)blockstore_has(p->bs, p->hash);
		s = retry_now_s() - t0;
		if (s > p->longest_s)
			p->longest_s = s;
		if (s > 0.001)
			p->over_ms++;
		if (s > 0.010)
			p->over_10ms++;
		p->lookups++;
	}
	return NULL;
}

/* A second worker joined: about half of the blocks are its own now. */
static bool keep_half(const char *dataset, const uint8_t hash[BLOCK_HASH_LEN], void *arg)
{
	(void)dataset;
	(void)arg;
	return (hash[0] & 1) == 0;
}

/*
 * One timed drop with the probe running: the sweep of a second worker's
 * join, or (drop_dataset) the removal of the dataset "coco", the half of
 * the blocks fill put in it.
 */
static int time_drop(const char *dir, long blocks, uint64_t capacity, bool drop_dataset)
{
	struct blockstore_config cfg = { .dir = dir, .capacity = capacity,
					 .block_size = (uint32_t)data_len };
	/* A block neither drop takes ("imagenet", kept by the sweep): the
	 * probe's lookups find it throughout. */
	struct block_key key = { .endpoint = "http://s3.bench:9000", .bucket = "bench",
				 .object = "train/shard-000000.tfrecord",
				 .etag = "\"0123456789abcdef\"", .block_size = (uint32_t)data_len };
	struct probe p = { 0 };
	struct error err;
	pthread_t t;
	uint64_t dropped;
	double t0, s;

	if (blockstore_open(&cfg, &p.bs, &err) != ERR_OK) {
		fprintf(stderr, "blockstore_rebuild_bench: %s\n", err.msg);
		return -1;
	}
	for (key.index = 1; key.index < 64; key.index += 2) {
		block_key_hash(&key, p.hash);
		if (keep_half(NULL, p.hash, NULL))
			break;
	}
	if (pthread_create(&t, NULL, probe_run, &p) != 0) {
		blockstore_free(p.bs);
		return -1;
	}
	t0 = retry_now_s();
	dropped = drop_dataset ? blockstore_drop_dataset(p.bs, "coco")
			       : blockstore_drop_unless(p.bs, keep_half, NULL);
	s = retry_now_s() - t0;
	atomic_store(&p.stop, true);
	pthread_join(t, NULL);
	blockstore_free(p.bs);
	if (dropped == 0 || dropped >= (uint64_t)blocks) {
		fprintf(stderr, "blockstore_rebuild_bench: the drop took %llu of %ld blocks\n",
			(unsigned long long)dropped, blocks);
		return -1;
	}
	printf("mode=%s blocks=%ld dropped=%llu seconds=%.3f lookups=%lu "
	       "lookups_over_1ms=%lu lookups_over_10ms=%lu longest_lookup_ms=%.3f\n",
	       drop_dataset ? "drop_dataset" : "sweep", blocks, (unsigned long long)dropped, s,
	       p.lookups, p.over_ms, p.over_10ms, p.longest_s * 1000);
	fflush(stdout);
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: blockstore_rebuild_bench [--blocks N] [--runs R] [--cold] [--sweep | --drop-dataset] [--dir PARENT] [--data-kib K]\n");
}

int main(int argc, char **argv)
{
	const char *parent = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char dir[4096];
	long blocks = TARGET_BLOCKS;
	long runs = 3;
	bool cold = false, sweep = false, drop_dataset = false;
	uint64_t capacity = 0;
	int rc = 1;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--blocks") == 0 && i + 1 < argc) {
			blocks = strtol(argv[++i], NULL, 10);
		} else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
			runs = strtol(argv[++i], NULL, 10);
		} else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
			parent = argv[++i];
		} else if (strcmp(argv[i], "--data-kib") == 0 && i + 1 < argc) {
			long kib = strtol(argv[++i], NULL, 10);

			if (kib < 0 || kib > 64 * 1024) {
				usage();
				return 2;
			}
			data_len = (size_t)kib * 1024;
		} else if (strcmp(argv[i], "--cold") == 0) {
			cold = true;
		} else if (strcmp(argv[i], "--sweep") == 0) {
			sweep = true;
		} else if (strcmp(argv[i], "--drop-dataset") == 0) {
			drop_dataset = true;
		} else {
			usage();
			return 2;
		}
	}
	if (blocks < 1 || runs < 1) {
		usage();
		return 2;
	}
	log_set_level(LOG_LEVEL_WARN);
	capacity = (uint64_t)blocks * (BLOCK_HEADER_SIZE + (data_len + 4095) / 4096 * 4096);
	snprintf(dir, sizeof(dir), "%s/granary-rebuild-bench-XXXXXX", parent);
	if (!mkdtemp(dir)) {
		fprintf(stderr, "blockstore_rebuild_bench: mkdtemp '%s': %s\n", dir, strerror(errno));
		return 1;
	}
	printf("# %ld blocks of %zu data bytes each (+ 4 KiB header per file; small blocks rather "
	       "than 4 MiB ones keep the disk use small: the rebuild reads headers only) in %s\n",
	       blocks, data_len, dir);
	if (fill(dir, blocks, capacity) < 0)
		goto out;
	for (long r = 0; r < runs; r++)
		if (time_open(dir, "warm", blocks, capacity) < 0)
			goto out;
	if (cold && geteuid() != 0) {
		printf("# --cold skipped: dropping the page cache needs root\n");
	} else if (cold) {
		for (long r = 0; r < runs; r++) {
			if (drop_caches() < 0) {
				printf("# --cold skipped: write /proc/sys/vm/drop_caches: %s\n",
				       strerror(errno));
				break;
			}
			if (time_open(dir, "cold", blocks, capacity) < 0)
				goto out;
		}
	}
	if ((sweep || drop_dataset) && time_drop(dir, blocks, capacity, drop_dataset) < 0)
		goto out;
	rc = 0;
out:
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return rc;
}
