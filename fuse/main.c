/*
 * granary-fuse - mounts one dataset read-only through FUSE.
 *
 * Standalone (source = s3://bucket/prefix/ or file:///dir): lists the
 * source itself, builds the namespace snapshot and reads blocks through its
 * own cache directory. With meta (dataset = NAME): loads the dataset's
 * snapshot from granary-meta once and reads blocks from the node's cache
 * directory, then the owning worker, then the object store.
 *
 * Exits 0 after a clean unmount (SIGTERM/SIGINT unmount first), 1 when the
 * mount cannot be set up (the message says why), 2 for bad settings.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache/blockstore.h"
#include "cache/fetch.h"
#include "common/cpu.h"
#include "common/daemon.h"
#include "common/log.h"
#include "fuse/ll.h"
#include "fuse/mount_settings.h"
#include "fuse/mountfs.h"
#include "fuse/reader.h"
#include "fuse/sources.h"
#include "meta/snapshot.h"
#include "store/store.h"

/* What a running mount holds, released in reverse order. */
struct mount {
	struct store *store;
	struct snapshot *snap;
	struct blockstore *bs;
	struct fetcher *fetcher;
	struct source_cache_ctx cache;
	struct reader *reader;
	struct mountfs *fs;
};

/* Name given to a standalone dataset: it only labels logs and cache blocks. */
#define STANDALONE_NAME "standalone"

static enum error_code open_source(const struct mount_settings *s, struct mount *m,
				   struct error *err)
{
	char *scheme = NULL, *bucket = NULL, *prefix = NULL, *root = NULL;
	struct store_config cfg;
	enum error_code rc;

	rc = store_uri_parse(s->source, &scheme, &bucket, &prefix, err);
	if (rc != ERR_OK)
		return rc;
	if (asprintf(&root, "%s://%s", scheme, bucket) < 0) {
		root = NULL;
		rc = error_set(err, ERR_NOMEM, "out of memory");
		goto out;
	}
	store_settings_to_config(&s->store, &cfg);
	rc = store_open(root, &cfg, &m->store, err);
	if (rc != ERR_OK)
		goto out;
	rc = snapshot_build_from_store(m->store, prefix, STANDALONE_NAME, s->source, 1, &m->snap, err);
	if (rc != ERR_OK)
		error_wrap(err, "list '%s'", s->source);
out:
	free(scheme);
	free(bucket);
	free(prefix);
	free(root);
	return rc;
}

static int format_stats(char *buf, size_t size, void *arg)
{
	struct mount *m = arg;
	struct reader_stats r;
	struct fetch_stats f = { 0 };

	reader_get_stats(m->reader, &r);
	if (m->fetcher)
		fetch_get_stats(m->fetcher, &f);
	return snprintf(buf, size,
			"reads=%llu read_bytes=%llu cache_hits=%llu cache_misses=%llu "
			"store_fetches=%llu store_bytes=%llu fallbacks=%llu",
			(unsigned long long)r.reads, (unsigned long long)r.bytes,
			(unsigned long long)f.hits, (unsigned long long)f.misses,
			(unsigned long long)f.fetches, (unsigned long long)f.store_bytes,
			(unsigned long long)r.fallbacks);
}

/*
 * Standalone: the worker's block cache, in process, on cache.dir. Misses
 * are fetched whole and once; sequential readers get read-ahead.
 */
static enum error_code open_cache(const struct mount_settings *s, struct mount *m,
				  struct error *err)
{
	struct blockstore_config bcfg = { .dir = s->cache_dir, .capacity = s->cache_capacity };
	int cpus = cpu_available();
	struct fetch_config fcfg = {
		.max_inflight = (unsigned)(2 * s->prefetch_blocks + 2 * cpus),
		.threads = (unsigned)(s->prefetch_blocks > cpus ? s->prefetch_blocks : cpus),
		.readahead_max = (unsigned)s->prefetch_blocks,
	};
	struct fetch_dataset_config dcfg = {
		.name = STANDALONE_NAME,
		.source = s->source,
		.block_size = s->cache_block_size,
		.policy = BLOCKSTORE_SCAN_RESISTANT,
	};
	enum error_code rc;

	rc = blockstore_open(&bcfg, &m->bs, err);
	if (rc != ERR_OK)
		return rc;
	fcfg.bs = m->bs;
	rc = fetch_new(&fcfg, &m->fetcher, err);
	if (rc != ERR_OK)
		return rc;
	store_settings_to_config(&s->store, &dcfg.store);
	rc = fetch_dataset_register(m->fetcher, &dcfg, NULL, err);
	if (rc == ERR_OK)
		rc = fetch_dataset_get(m->fetcher, STANDALONE_NAME, &m->cache.ds, err);
	if (rc != ERR_OK)
		return rc;
	m->cache.fetcher = m->fetcher;
	m->cache.prefix_len = strlen(snapshot_prefix(m->snap));
	return ERR_OK;
}

static enum error_code setup(const struct mount_settings *s, struct mount *m, struct error *err)
{
	struct reader_config rcfg = {
		.block_size = (uint32_t)s->cache_block_size,
		.prefetch_blocks = (unsigned)s->prefetch_blocks,
	};
	struct snapshot_totals t;
	enum error_code rc;

	if (!*s->source)
		return error_set(err, ERR_UNSUPPORTED,
				 "key 'dataset': mounting a dataset from meta is not in this build; "
				 "use 'source' (standalone)");
	rc = open_source(s, m, err);
	if (rc != ERR_OK)
		return rc;
	snapshot_totals(m->snap, &t);
	log_info("namespace loaded", LOG_S("source", s->source), LOG_U("files", t.files),
		 LOG_U("dirs", t.dirs), LOG_U("bytes", t.bytes));
	rc = open_cache(s, m, err);
	if (rc != ERR_OK)
		return rc;
	rcfg.sources[rcfg.nsources++] = source_cache(&m->cache);
	rcfg.sources[rcfg.nsources++] = source_store(m->store);
	rc = reader_new(&rcfg, &m->reader, err);
	if (rc != ERR_OK)
		return rc;
	rc = mountfs_new(m->snap, m->reader, getuid(), getgid(), &m->fs, err);
	if (rc != ERR_OK)
		return rc;
	m->snap = NULL; /* owned by the fs now */
	mountfs_set_stats(m->fs, format_stats, m);
	return ERR_OK;
}

static void teardown(struct mount *m)
{
	mountfs_free(m->fs);
	reader_free(m->reader);
	if (m->cache.ds)
		fetch_dataset_put(m->fetcher, m->cache.ds);
	fetch_free(m->fetcher);
	blockstore_free(m->bs);
	snapshot_free(m->snap);
	store_free(m->store);
}

int main(int argc, char **argv)
{
	const struct config_schema *schema = &mount_settings_schema;
	struct mount_settings s;
	struct mount m = { 0 };
	struct ll_config ll;
	struct error err;
	char fsname[300];
	int first = argc, rc;

	rc = daemon_start(schema, &s, argc, argv, &first);
	if (rc >= 0)
		return rc;
	rc = 2;
	if (first < argc) {
		fprintf(stderr, "%s: unexpected argument '%s' (settings are flags, see --help)\n",
			schema->program, argv[first]);
		goto out;
	}
	if (mount_settings_check(&s, &err) != ERR_OK) {
		fprintf(stderr, "%s: %s\n", schema->program, err.msg);
		goto out;
	}
	rc = 1;
	if (setup(&s, &m, &err) != ERR_OK) {
		fprintf(stderr, "%s: %s\n", schema->program, err.msg);
		goto out;
	}
	snprintf(fsname, sizeof(fsname), "granary:%s", *s.dataset ? s.dataset : STANDALONE_NAME);
	ll = (struct ll_config){
		.mountpoint = s.mountpoint,
		.fsname = fsname,
		.entry_timeout = (double)s.entry_timeout_ms / 1000.0,
		.attr_timeout = (double)s.attr_timeout_ms / 1000.0,
		.keep_cache = s.keep_cache,
		.max_read = (uint32_t)s.max_read,
		.max_background = (unsigned)s.max_background,
		.max_idle_threads = (unsigned)s.max_idle_threads,
		.clone_fd = s.clone_fd,
		.splice = s.splice,
		.read_ahead = s.read_ahead,
		.allow_other = geteuid() == 0,
		.debug = log_get_level() == LOG_LEVEL_DEBUG,
	};
	if (ll_run(m.fs, &ll, &err) != ERR_OK) {
		fprintf(stderr, "%s: %s\n", schema->program, err.msg);
		goto out;
	}
	rc = 0;
out:
	teardown(&m);
	config_release(schema, &s);
	return rc;
}
