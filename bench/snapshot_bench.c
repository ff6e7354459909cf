/*
 * snapshot_bench - cost of the namespace snapshot (meta/snapshot.c).
 *
 * Synthetic mode (default): builds a snapshot of --count keys shaped like
 * an image dataset, "train/class-%04d/img-%08d.JPEG" in 1000 classes, sizes
 * around 110 KB, 32-hex ETags, through the builder; then encodes, decodes
 * and resolves random paths. Prints one line per phase:
 *   snapshot_build files=N dirs=D seconds=S keys_per_s=R
 *   snapshot_memory bytes=B bytes_per_file=F malloc_bytes_per_file=M (target <= 200)
 *   snapshot_encode bytes=E bytes_per_file=G seconds=S
 *   snapshot_decode seconds=S
 *   snapshot_lookup lookups=L threads=T seconds=S lookups_per_s=R
 * bytes_per_file counts every allocation the snapshot holds;
 * malloc_bytes_per_file is what the allocator says it grew by (mallinfo2),
 * allocator overhead included.
 *
 * Store mode (--uri s3://bucket/prefix/ with --store.* flags): times
 * snapshot_build_from_store over the real listing and prints
 *   snapshot_store files=N dirs=D seconds=S requests=Q bytes_per_file=F
 * bench/snapshot-s3.sh drives it against the local S3 server.
 */
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "common/daemon.h"
#include "common/retry.h"
#include "meta/snapshot.h"
#include "store/store.h"
#include "store/store_settings.h"

#define CLASSES 1000

struct bench_settings {
	struct store_settings store;
	char *uri;
	int64_t count;
	int64_t lookups;
	int64_t threads;
	bool shuffle;
	char *log_level;
};

static const struct config_field bench_fields[] = {
	STORE_SETTINGS_FIELDS(struct bench_settings, store),
	{ "uri", CONFIG_STRING, offsetof(struct bench_settings, uri), "",
	  "store mode: build from the listing of s3://bucket/prefix/ (empty: synthetic keys)", 0, 0,
	  NULL },
	{ "count", CONFIG_INT, offsetof(struct bench_settings, count), "1000000",
	  "synthetic mode: number of keys", 1, 1e9, NULL },
	{ "lookups", CONFIG_INT, offsetof(struct bench_settings, lookups), "1000000",
	  "random path resolutions per thread", 0, 1e10, NULL },
	{ "threads", CONFIG_INT, offsetof(struct bench_settings, threads), "1",
	  "concurrent lookup threads on the one snapshot", 1, 256, NULL },
	{ "shuffle", CONFIG_BOOL, offsetof(struct bench_settings, shuffle), "false",
	  "synthetic mode: add the keys in random order instead of listing order", 0, 0, NULL },
	{ "log.level", CONFIG_STRING, offsetof(struct bench_settings, log_level), "warn",
	  "debug, info, warn or error", 0, 0, NULL },
};

static const struct config_schema bench_schema = {
	.program = "snapshot_bench",
	.summary = "build, encode, decode and lookup cost of the namespace snapshot",
	.fields = bench_fields,
	.nfields = sizeof(bench_fields) / sizeof(bench_fields[0]),
};

static uint64_t mix(uint64_t x)
{
	/* splitmix64: deterministic sizes and ETags per key */
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static size_t heap_bytes(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

static void synth_key(uint64_t i, uint64_t per_class, char *buf, size_t size)
{
	snprintf(buf, size, "train/class-%04" PRIu64 "/img-%08" PRIu64 ".JPEG", i / per_class, i);
}

struct lookup_arg {
	const struct snapshot *snap;
	uint64_t count, per_class, lookups, seed, found;
};

static void *lookup_run(void *p)
{
	struct lookup_arg *a = p;
	char key[96];
	uint64_t x = a->seed;

	/* Key formatting is part of the loop but costs far less than a
	 * lookup's cache misses; the same work in every run. */
	for (uint64_t k = 0; k < a->lookups; k++) {
		x = mix(x);
		synth_key(x % a->count, a->per_class, key, sizeof(key));
		a->found += snapshot_resolve_path(a->snap, key) != 0;
	}
	return NULL;
}

static int synthetic(const struct bench_settings *set)
{
	uint64_t count = (uint64_t)set->count;
	uint64_t per_class = (count + CLASSES - 1) / CLASSES;
	uint64_t *order = NULL;
	struct snapshot_builder *b = NULL;
	struct snapshot *snap = NULL, *copy = NULL;
	struct snapshot_totals tot;
	struct lookup_arg *args = NULL;
	pthread_t *tids = NULL;
	struct error err;
	struct rusage ru;
	void *enc = NULL;
	size_t enc_len = 0, heap0, heap1;
	double t0, t1, t2;
	char key[96], etag[40];
	int rc = 1;

	if (set->shuffle) {
		order = malloc(count * sizeof(*order));
		if (!order)
			goto out;
		for (uint64_t i = 0; i < count; i++)
			order[i] = i;
		for (uint64_t i = count - 1; i > 0; i--) {
			uint64_t j = mix(i) % (i + 1), t = order[i];

			order[i] = order[j];
			order[j] = t;
		}
	}
	heap0 = heap_bytes();
	t0 = retry_now_s();
	if (snapshot_builder_new("imagenet", "s3://bench/imagenet/", 1, &b, &err) != ERR_OK)
		goto fail;
	for (uint64_t k = 0; k < count; k++) {
		uint64_t i = order ? order[k] : k, h = mix(i);

		synth_key(i, per_class, key, sizeof(key));
		snprintf(etag, sizeof(etag), "%016" PRIx64 "%016" PRIx64, h, mix(h));
		if (snapshot_builder_add(b, key, 90000 + h % 40000, etag,
					 1700000000 + (int64_t)(i % 86400), &err) != ERR_OK)
			goto fail;
	}
	if (snapshot_builder_finish(b, &snap, &err) != ERR_OK) {
		b = NULL;
		goto fail;
	}
	b = NULL;
	t1 = retry_now_s();
	heap1 = heap_bytes();
	snapshot_totals(snap, &tot);
	getrusage(RUSAGE_SELF, &ru);
	printf("snapshot_build files=%" PRIu64 " dirs=%" PRIu64 " seconds=%.3f keys_per_s=%.0f "
	       "max_rss_mib=%.0f\n",
	       tot.files, tot.dirs, t1 - t0, (double)count / (t1 - t0), (double)ru.ru_maxrss / 1024);
	printf("snapshot_memory bytes=%zu bytes_per_file=%.1f malloc_bytes_per_file=%.1f "
	       "(target <= 200)\n",
	       snapshot_memory_bytes(snap), (double)snapshot_memory_bytes(snap) / (double)tot.files,
	       (double)(heap1 - heap0) / (double)tot.files);

	t0 = retry_now_s();
	if (snapshot_encode_to_buffer(snap, &enc, &enc_len, &err) != ERR_OK)
		goto fail;
	t1 = retry_now_s();
	if (snapshot_decode(enc, enc_len, &copy, &err) != ERR_OK)
		goto fail;
	t2 = retry_now_s();
	printf("snapshot_encode bytes=%zu bytes_per_file=%.1f seconds=%.3f\n", enc_len,
	       (double)enc_len / (double)tot.files, t1 - t0);
	printf("snapshot_decode seconds=%.3f\n", t2 - t1);
	if (snapshot_count(copy) != snapshot_count(snap)) {
		fprintf(stderr, "snapshot_bench: decoded %" PRIu64 " entries of %" PRIu64 "\n",
			snapshot_count(copy), snapshot_count(snap));
		goto out;
	}
	snapshot_free(copy);
	copy = NULL;
	free(enc);
	enc = NULL;

	if (set->lookups > 0) {
		uint64_t found = 0;

		args = calloc((size_t)set->threads, sizeof(*args));
		tids = calloc((size_t)set->threads, sizeof(*tids));
		if (!args || !tids)
			goto out;
		t0 = retry_now_s();
		for (int64_t i = 0; i < set->threads; i++) {
			args[i] = (struct lookup_arg){ snap, count, per_class, (uint64_t)set->lookups,
						       (uint64_t)i + 1, 0 };
			pthread_create(&tids[i], NULL, lookup_run, &args[i]);
		}
		for (int64_t i = 0; i < set->threads; i++) {
			pthread_join(tids[i], NULL);
			found += args[i].found;
		}
		t1 = retry_now_s();
		if (found != (uint64_t)set->lookups * (uint64_t)set->threads) {
			fprintf(stderr, "snapshot_bench: %" PRIu64 " lookups missed\n",
				(uint64_t)set->lookups * (uint64_t)set->threads - found);
			goto out;
		}
		printf("snapshot_lookup lookups=%" PRIu64 " threads=%" PRId64 " seconds=%.3f "
		       "lookups_per_s=%.0f\n",
		       found, set->threads, t1 - t0, (double)found / (t1 - t0));
	}
	rc = 0;
	goto out;
fail:
	fprintf(stderr, "snapshot_bench: %s\n", err.msg);
out:
	snapshot_builder_free(b);
	snapshot_free(snap);
	snapshot_free(copy);
	free(enc);
	free(order);
	free(args);
	free(tids);
	return rc;
}

static int from_store(const struct bench_settings *set)
{
	char *scheme = NULL, *bucket = NULL, *prefix = NULL, *root = NULL;
	struct store *st = NULL;
	struct snapshot *snap = NULL;
	struct snapshot_totals tot;
	struct store_config cfg;
	struct store_stats stats;
	struct error err;
	double t0, t1;
	int rc = 1;

	if (store_uri_parse(set->uri, &scheme, &bucket, &prefix, &err) != ERR_OK ||
	    asprintf(&root, "%s://%s", scheme, bucket) < 0) {
		root = NULL;
		fprintf(stderr, "snapshot_bench: flag '--uri': %s\n", err.msg);
		goto out;
	}
	store_settings_to_config(&set->store, &cfg);
	if (store_open(root, &cfg, &st, &err) != ERR_OK)
		goto fail;
	t0 = retry_now_s();
	if (snapshot_build_from_store(st, prefix, "bench", set->uri, 1, &snap, &err) != ERR_OK)
		goto fail;
	t1 = retry_now_s();
	snapshot_totals(snap, &tot);
	store_get_stats(st, &stats);
	printf("snapshot_store files=%" PRIu64 " dirs=%" PRIu64 " seconds=%.3f "
	       "files_per_s=%.0f requests=%" PRIu64 " bytes_per_file=%.1f\n",
	       tot.files, tot.dirs, t1 - t0, (double)tot.files / (t1 - t0), stats.requests,
	       tot.files ? (double)snapshot_memory_bytes(snap) / (double)tot.files : 0.0);
	rc = 0;
	goto out;
fail:
	fprintf(stderr, "snapshot_bench: %s\n", err.msg);
out:
	snapshot_free(snap);
	store_free(st);
	free(scheme);
	free(bucket);
	free(prefix);
	free(root);
	return rc;
}

int main(int argc, char **argv)
{
	struct bench_settings set;
	int first = argc, rc;

	rc = daemon_start(&bench_schema, &set, argc, argv, &first);
	if (rc >= 0)
		return rc;
	if (first < argc) {
		fprintf(stderr, "snapshot_bench: unexpected argument '%s'\n", argv[first]);
		rc = 2;
	} else if (set.uri && *set.uri) {
		rc = from_store(&set);
	} else {
		rc = synthetic(&set);
	}
	config_release(&bench_schema, &set);
	return rc;
}
