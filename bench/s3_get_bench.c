/*
 * s3_get_bench - GET throughput of Granary's S3 backend: THREADS threads
 * each fetch whole objects (one streamed GET each) from the objects under a
 * prefix, round-robin, ROUNDS times, writing the bytes to /dev/null as the
 * curl baseline does with -o /dev/null; with --range N, each object in
 * ranged GETs of N bytes one after the other (as a block cache fetches
 * blocks), with --if_match each GET naming the object's ETag. Prints one
 * line:
 *   granary_get bytes=N seconds=S mb_per_s=R requests=Q
 * bench/s3-get.sh runs it beside curl processes on the same objects.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/daemon.h"
#include "common/retry.h"
#include "store/store.h"
#include "store/store_settings.h"

struct bench_settings {
	struct store_settings store;
	char *uri;
	int64_t threads;
	int64_t rounds;
	uint64_t range;
	bool if_match;
	char *log_level;
};

static const struct config_field bench_fields[] = {
	STORE_SETTINGS_FIELDS(struct bench_settings, store),
	{ "uri", CONFIG_STRING, offsetof(struct bench_settings, uri), "",
	  "objects to read: s3://bucket/prefix/", 0, 0, NULL },
	{ "threads", CONFIG_INT, offsetof(struct bench_settings, threads), "4",
	  "concurrent GETs", 1, 256, NULL },
	{ "rounds", CONFIG_INT, offsetof(struct bench_settings, rounds), "1",
	  "times each object is read", 1, 1000, NULL },
	{ "range", CONFIG_SIZE, offsetof(struct bench_settings, range), "0",
	  "bytes per ranged GET (0: one GET per object)", 0, 0, NULL },
	{ "if_match", CONFIG_BOOL, offsetof(struct bench_settings, if_match), "false",
	  "send each GET with If-Match: the object's ETag", 0, 0, NULL },
	{ "log.level", CONFIG_STRING, offsetof(struct bench_settings, log_level), "warn",
	  "debug, info, warn or error", 0, 0, NULL },
};

static const struct config_schema bench_schema = {
	.program = "s3_get_bench",
	.summary = "GET throughput of the S3 backend over whole objects",
	.fields = bench_fields,
	.nfields = sizeof(bench_fields) / sizeof(bench_fields[0]),
};

struct bench {
	struct store *st;
	struct store_object *objs;
	size_t nobjs;
	int threads, rounds;
	uint64_t range;
	bool if_match;
	_Atomic uint64_t bytes;
	_Atomic int failed;
};

struct worker {
	struct bench *b;
	int index;
};

static int collect(const struct store_object *obj, void *arg)
{
	struct bench *b = arg;
	struct store_object *p = realloc(b->objs, (b->nobjs + 1) * sizeof(*p));

	if (!p)
		return 1;
	b->objs = p;
	b->objs[b->nobjs] = *obj;
	b->objs[b->nobjs].key = strdup(obj->key);
	b->nobjs++;
	return b->objs[b->nobjs - 1].key ? 0 : 1;
}

static int to_devnull(const void *data, size_t len, void *arg)
{
	int fd = *(int *)arg;

	return write(fd, data, len) == (ssize_t)len ? 0 : -1;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	struct bench *b = w->b;
	struct error err;
	int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);

	if (fd < 0) {
		b->failed = 1;
		return NULL;
	}
	for (int r = 0; r < b->rounds && !b->failed; r++) {
		for (size_t i = (size_t)w->index; i < b->nobjs && !b->failed; i += (size_t)b->threads) {
			const struct store_object *o = &b->objs[i];
			uint64_t step = b->range ? b->range : o->size;

			for (uint64_t off = 0; off < o->size || (off == 0 && o->size == 0); off += step) {
				uint64_t len = o->size - off < step ? o->size - off : step;
				uint64_t got = 0;

				if (store_get_stream(b->st, o->key, off, len, to_devnull, &fd,
						     b->if_match ? o->etag : NULL, &got,
						     &err) != ERR_OK ||
				    got != len) {
					fprintf(stderr, "s3_get_bench: %s\n", err.msg);
					b->failed = 1;
					break;
				}
				b->bytes += got;
				if (o->size == 0)
					break;
			}
		}
	}
	close(fd);
	return NULL;
}

int main(int argc, char **argv)
{
	struct bench_settings set;
	struct bench b = { 0 };
	struct store_config cfg;
	struct store_stats stats;
	char *scheme = NULL, *bucket = NULL, *prefix = NULL, *root = NULL;
	pthread_t *tids = NULL;
	struct worker *ws = NULL;
	struct error err;
	int first, rc;
	uint64_t t0, t1;

	rc = daemon_start(&bench_schema, &set, argc, argv, &first);
	if (rc >= 0)
		return rc;
	rc = 1;
	if (store_uri_parse(set.uri, &scheme, &bucket, &prefix, &err) != ERR_OK ||
	    asprintf(&root, "%s://%s", scheme, bucket) < 0) {
		fprintf(stderr, "s3_get_bench: flag '--uri': %s\n", err.msg);
		goto out;
	}
	store_settings_to_config(&set.store, &cfg);
	cfg.max_connections = (unsigned)set.threads;
	if (store_open(root, &cfg, &b.st, &err) != ERR_OK ||
	    store_list_all(b.st, prefix, collect, &b, &err) != ERR_OK) {
		fprintf(stderr, "s3_get_bench: %s\n", err.msg);
		goto out;
	}
	if (b.nobjs == 0) {
		fprintf(stderr, "s3_get_bench: no objects under '%s'\n", set.uri);
		goto out;
	}
	b.threads = (int)set.threads;
	b.rounds = (int)set.rounds;
	b.range = (uint64_t)set.range;
	b.if_match = set.if_match;
	tids = calloc((size_t)b.threads, sizeof(*tids));
	ws = calloc((size_t)b.threads, sizeof(*ws));
	if (!tids || !ws)
		goto out;
	t0 = retry_now_ms();
	for (int i = 0; i < b.threads; i++) {
		ws[i] = (struct worker){ &b, i };
		pthread_create(&tids[i], NULL, run, &ws[i]);
	}
	for (int i = 0; i < b.threads; i++)
		pthread_join(tids[i], NULL);
	t1 = retry_now_ms();
	if (b.failed)
		goto out;
	store_get_stats(b.st, &stats);
	printf("granary_get bytes=%" PRIu64 " seconds=%.3f mb_per_s=%.1f requests=%" PRIu64 "\n",
	       (uint64_t)b.bytes, (double)(t1 - t0) / 1000.0,
	       (double)b.bytes / 1e6 / ((double)(t1 - t0 ? t1 - t0 : 1) / 1000.0), stats.requests);
	rc = 0;
out:
	for (size_t i = 0; i < b.nobjs; i++)
		free(b.objs[i].key);
	free(b.objs);
	free(tids);
	free(ws);
	store_free(b.st);
	free(scheme);
	free(bucket);
	free(prefix);
	free(root);
	config_release(&bench_schema, &set);
	return rc;
}
