/*
 * granary-fuse - mounts one dataset read-only through FUSE.
 *
 * Standalone (source = s3://bucket/prefix/ or file:///dir): lists the
 * source itself, builds the namespace snapshot and reads blocks through its
 * own cache directory. With meta (dataset = NAME): loads the dataset's
 * definition and snapshot from granary-meta once, follows the worker list,
 * and reads blocks from the node's cache directory, then the owning worker
 * (rendezvous hashing), then the object store.
 *
 * Exits 0 after a clean unmount (SIGTERM/SIGINT unmount first), 1 when the
 * mount cannot be set up (the message says why), 2 for bad settings.
 */
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache/blockstore.h"
#include "cache/fetch.h"
#include "common/daemon.h"
#include "common/fileio.h"
#include "common/log.h"
#include "common/metrics_http.h"
#include "common/retry.h"
#include "fuse/ll.h"
#include "fuse/mount_settings.h"
#include "fuse/mountfs.h"
#include "fuse/mountstats.h"
#include "block/file.h"
#include "block/placement.h"
#include "fuse/reader.h"
#include "fuse/sources.h"
#include "meta/meta_client.h"
#include "meta/snapshot.h"
#include "store/store.h"

/* What a running mount holds, released in reverse order. */
/*
 * Small-file prefetch (prefetch.files). A small file is one block, so
 * reading it gives the fetcher nothing to read ahead, and a shuffled
 * epoch over a directory of them waits for one GET per file at the
 * readers' concurrency. So once PREFETCH_DIR_MISSES files of a directory
 * missed (one miss may be a lookup, two are most likely a pass over the
 * directory), each miss asks for the next prefetch.files files of it in
 * listing order (consecutive inodes) that no miss asked for yet: the
 * first from the file after the miss, the later ones from where the last
 * stopped, going round to the directory's first file and ending the lap
 * where the first began. A shuffled pass thus pays one miss for
 * prefetch.files files it has not read yet, however far into the
 * directory the miss lies, rather than for the files right after the
 * miss, many of them asked or read already; a scan in order asks what it
 * would have asked anyway. A read in the second half of the files asked
 * for so far (before the lap went round) asks for the next ones too, so
 * that a scan keeps ahead without missing again. A miss after the lap
 * (a file evicted since, a later epoch) starts a new one from itself.
 * Once PREFETCH_DIR_MISSES sibling directories (of one parent) started
 * laps, a pass over that parent is under way, and the next sibling's
 * first miss starts its lap: with a store tens of milliseconds away, the
 * second miss of each of many small directories was most of an epoch's
 * waits (docs/benchmarks.md).
 * Counted for the last directories seen (PREFETCH_DIRS slots, by inode):
 * enough that a shuffled epoch over a thousand class directories
 * (ImageNet's) does not keep resetting one directory's count with
 * another's.
 */
#define PREFETCH_DIR_MISSES 2
#define PREFETCH_DIRS 4096
/* With meta: threads that send the queued files to their owner workers,
 * SOURCE_PREFETCH_MAX in one request per owner, and the queue of inodes
 * they take from. A request returns once queued, so two are enough. */
#define WARM_THREADS 2
#define WARM_QUEUE 256
#define WARM_TIMEOUT_MS 5000 /* one prefetch request at most */

struct dir_misses {
	uint64_t dir;
	uint64_t first, last; /* the directory's files (consecutive inodes) */
	uint64_t misses;
	uint64_t asked_to; /* the last inode asked for in this lap; 0: no lap */
	uint64_t lap_from; /* the first inode the lap asked for */
	bool wrapped;      /* the lap went round to the directory's first file */
};

struct mount {
	struct store *store;
	struct snapshot *snap;
	/* standalone */
	struct blockstore *bs;
	struct fetcher *fetcher;
	struct source_cache_ctx cache;
	const struct snapshot *files; /* the snapshot, owned by fs from its start */
	struct dir_misses dirs[PREFETCH_DIRS]; /* protected by prefetch_mu */
	/* The parent whose subdirectories started laps last, and how many
	 * did in a row (prefetch_next_files); protected by prefetch_mu. */
	uint64_t scan_parent;
	unsigned scan_laps;
	pthread_mutex_t prefetch_mu;
	unsigned prefetch_files;
	unsigned prefetch_floor;   /* standalone: the read-ahead's least limit */
	uint32_t block_size;
	/* with meta: the prefetch queue (inodes; protected by prefetch_mu) */
	uint64_t warm_q[WARM_QUEUE];
	unsigned warm_head, warm_len;
	uint64_t warm_recent[WARM_QUEUE]; /* inodes queued lately, by inode */
	pthread_cond_t warm_cv;
	pthread_t warm_threads[WARM_THREADS];
	unsigned nwarm;
	uint64_t warm_timeout_ms;
	bool warm_stop;                   /* protected by prefetch_mu */
	/* with meta */
	struct meta_client *meta;
	struct placement *placement;
	struct token *token;
	struct tls_material meta_tls, worker_tls; /* read once at start */
	char *key_endpoint, *bucket;
	struct block_fdcache *fds;  /* open block files of cache.dir */
	struct source_cluster_ctx cluster;
	pthread_t refresher;
	bool refresher_running;
	pthread_mutex_t stop_mu;
	pthread_cond_t stop_cv;
	bool stopping;              /* protected by stop_mu */
	uint64_t refresh_ms;
	struct reader *reader;
	const char *source_names[READER_MAX_SOURCES]; /* the reader's, in its order */
	unsigned nsources;
	struct mountfs *fs;
	/* counters (beside init_state, kept across a takeover) and their endpoint */
	struct mountstats *stats;
	pthread_t ticker;
	bool ticker_running;
	struct metrics_http *http;
};

/* How often the memory gauge in the counters is refreshed. */
#define STATS_TICK_MS 1000

/* Name given to a standalone dataset: it only labels logs and cache blocks. */
#define STANDALONE_NAME "standalone"

/* Opens the store of a dataset URI on its bucket with the given settings. */
static enum error_code open_store_of(const char *uri, const struct store_config *cfg,
				     struct store **out, char **bucket_out, char **prefix_out,
				     char **scheme_out, struct error *err)
{
	char *scheme = NULL, *bucket = NULL, *prefix = NULL, *root = NULL;
	enum error_code rc;

	rc = store_uri_parse(uri, &scheme, &bucket, &prefix, err);
	if (rc != ERR_OK)
		return rc;
	if (asprintf(&root, "%s://%s", scheme, bucket) < 0) {
		root = NULL;
		rc = error_set(err, ERR_NOMEM, "out of memory");
		goto out;
	}
	rc = store_open(root, cfg, out, err);
out:
	free(root);
	if (bucket_out && rc == ERR_OK)
		*bucket_out = bucket, bucket = NULL;
	if (prefix_out && rc == ERR_OK)
		*prefix_out = prefix, prefix = NULL;
	if (scheme_out && rc == ERR_OK)
		*scheme_out = scheme, scheme = NULL;
	free(scheme);
	free(bucket);
	free(prefix);
	return rc;
}

static enum error_code open_source(const struct mount_settings *s, struct mount *m,
				   struct error *err)
{
	struct store_config cfg;
	char *prefix = NULL;
	enum error_code rc;

	store_settings_to_config(&s->store, &cfg);
	rc = open_store_of(s->source, &cfg, &m->store, NULL, &prefix, NULL, err);
	if (rc != ERR_OK)
		return rc;
	rc = snapshot_build_from_store(m->store, prefix, STANDALONE_NAME, s->source, 1, &m->snap, err);
	if (rc != ERR_OK)
		error_wrap(err, "list '%s'", s->source);
	free(prefix);
	return rc;
}

/* Reads the live workers from meta into the placement table. */
static enum error_code refresh_workers(struct mount *m, struct error *err)
{
	Granary__V1__ListWorkersReply *reply = NULL;
	struct placement_worker *w = NULL;
	enum error_code rc;

	rc = meta_client_list_workers(m->meta, &reply, err);
	if (rc != ERR_OK)
		return rc;
	if (reply->version != placement_version(m->placement) || placement_count(m->placement) == 0) {
		w = calloc(reply->n_workers ? reply->n_workers : 1, sizeof(*w));
		if (!w) {
			rc = error_set(err, ERR_NOMEM, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < reply->n_workers; i++)
			w[i] = (struct placement_worker){ reply->workers[i]->id, reply->workers[i]->address };
		rc = placement_update(m->placement, w, reply->n_workers, reply->version, err);
		if (rc == ERR_OK) {
			log_info("worker membership", LOG_U("version", reply->version),
				 LOG_U("workers", reply->n_workers));
			source_cluster_membership_changed(&m->cluster);
		}
	}
out:
	free(w);
	granary__v1__list_workers_reply__free_unpacked(reply, NULL);
	return rc;
}

/* Membership follows meta; while meta is away the last list is kept and
 * reads go on (to the store when a listed worker is gone), with one
 * warning per 10 s saying so, not one per refresh. */
static void *refresher(void *arg)
{
	struct mount *m = arg;
	struct log_limiter lim;
	struct error err;

	log_limiter_init(&lim, 10000, NULL, NULL);
	pthread_mutex_lock(&m->stop_mu);
	while (!m->stopping) {
		struct timespec until;

		until = retry_deadline_ts(CLOCK_REALTIME, m->refresh_ms);
		pthread_cond_timedwait(&m->stop_cv, &m->stop_mu, &until);
		if (m->stopping)
			break;
		pthread_mutex_unlock(&m->stop_mu);
		/* the node's worker may have started after this mount */
		source_cluster_read_cache_id(&m->cluster);
		if (refresh_workers(m, &err) != ERR_OK)
			log_limited_warn(&lim, "cannot refresh the worker list; keeping the last one",
					 LOG_S("cause", err.msg));
		pthread_mutex_lock(&m->stop_mu);
	}
	pthread_mutex_unlock(&m->stop_mu);
	log_limiter_release(&lim);
	return NULL;
}

/* Where the dataset is, as the mount serves it. */
struct served {
	char *source_uri, *endpoint, *region;
	uint64_t block_size;
};

static void served_release(struct served *sv)
{
	free(sv->source_uri);
	free(sv->endpoint);
	free(sv->region);
	memset(sv, 0, sizeof(*sv));
}

static void served_path(const struct mount_settings *s, const char *ext, char *out, size_t size)
{
	snprintf(out, size, "%s.%s", s->init_state, ext);
}

/*
 * Keeps what a successor needs to serve exactly what this daemon serves
 * beside the saved INIT: the spec (where the data is) and the snapshot
 * (the inode numbers the kernel already holds). A successor reads them
 * instead of asking meta, so a takeover neither waits on meta nor serves
 * a newer generation under the old inode numbers. A failure is logged:
 * the successor then asks meta, as a first daemon does.
 */
static void save_served(const struct mount_settings *s, const struct mount *m,
			const struct served *sv)
{
	char path[PATH_MAX];
	void *buf = NULL;
	size_t len = 0;
	char *text;
	json_t *spec;
	struct error err;

	if (!s->init_state || !*s->init_state)
		return;
	spec = json_pack("{s:s, s:s, s:s, s:I}", "source_uri", sv->source_uri, "endpoint",
			 sv->endpoint, "region", sv->region, "block_size", (json_int_t)sv->block_size);
	text = spec ? json_dumps(spec, JSON_COMPACT) : NULL;
	json_decref(spec);
	served_path(s, "spec", path, sizeof(path));
	if (!text || fileio_replace(path, text, strlen(text), 0600, &err) != ERR_OK ||
	    snapshot_encode_to_buffer(m->snap, &buf, &len, &err) != ERR_OK ||
	    (served_path(s, "snapshot", path, sizeof(path)),
	     fileio_replace(path, buf, len, 0600, &err)) != ERR_OK)
		log_warn("cannot keep the served snapshot for a successor; it will ask meta",
			 LOG_S("path", path), LOG_S("cause", text ? err.msg : "out of memory"));
	free(text);
	free(buf);
}

/* What the predecessor saved (save_served); ERR_NOT_FOUND when nothing. */
static enum error_code load_served(const struct mount_settings *s, struct mount *m,
				   struct served *sv, struct error *err)
{
	char path[PATH_MAX];
	json_error_t jerr;
	json_t *spec;
	enum error_code rc;

	served_path(s, "spec", path, sizeof(path));
	spec = json_load_file(path, 0, &jerr);
	if (!spec)
		return error_set(err, ERR_NOT_FOUND, "'%s': %s", path, jerr.text);
	sv->source_uri = strdup(json_string_value(json_object_get(spec, "source_uri")) ?: "");
	sv->endpoint = strdup(json_string_value(json_object_get(spec, "endpoint")) ?: "");
	sv->region = strdup(json_string_value(json_object_get(spec, "region")) ?: "");
	sv->block_size = (uint64_t)json_integer_value(json_object_get(spec, "block_size"));
	json_decref(spec);
	if (!sv->source_uri || !sv->endpoint || !sv->region)
		return error_set(err, ERR_NOMEM, "out of memory");
	if (!*sv->source_uri || !sv->block_size)
		return error_set(err, ERR_INVALID, "'%s': no source_uri or block_size", path);
	served_path(s, "snapshot", path, sizeof(path));
	rc = snapshot_load(path, &m->snap, err);
	return rc;
}

/* The dataset's spec and snapshot from meta. */
static enum error_code ask_meta(const struct mount_settings *s, struct mount *m,
				struct served *sv, struct error *err)
{
	Granary__V1__Dataset *ds = NULL;
	enum error_code rc;

	rc = meta_client_get(m->meta, s->dataset, &ds, err);
	if (rc != ERR_OK)
		return error_wrap(err, "dataset '%s'", s->dataset);
	if (!ds->spec || ds->generation == 0) {
		rc = error_set(err, ERR_UNAVAILABLE, "dataset '%s' is still being registered; try again",
			       s->dataset);
		goto out;
	}
	rc = meta_client_fetch_snapshot(m->meta, s->dataset, 0, &m->snap, NULL, err);
	if (rc != ERR_OK)
		goto out;
	sv->source_uri = strdup(ds->spec->source_uri);
	sv->endpoint = strdup(ds->spec->endpoint);
	sv->region = strdup(ds->spec->region);
	sv->block_size = ds->spec->options && ds->spec->options->block_size
				 ? ds->spec->options->block_size
				 : s->cache_block_size;
	if (!sv->source_uri || !sv->endpoint || !sv->region)
		rc = error_set(err, ERR_NOMEM, "out of memory");
out:
	granary__v1__dataset__free_unpacked(ds, NULL);
	return rc;
}

/* With meta: queues the n inodes for a warm thread, but those queued
 * lately, while the queue has room (a hint may be dropped). */
static void warm_push(struct mount *m, const uint64_t *inos, size_t n)
{
	pthread_mutex_lock(&m->prefetch_mu);
	for (size_t i = 0; i < n && m->warm_len < WARM_QUEUE; i++) {
		uint64_t *seen = &m->warm_recent[inos[i] % WARM_QUEUE];

		if (*seen == inos[i])
			continue;
		*seen = inos[i];
		m->warm_q[(m->warm_head + m->warm_len++) % WARM_QUEUE] = inos[i];
	}
	if (m->warm_len)
		pthread_cond_signal(&m->warm_cv);
	pthread_mutex_unlock(&m->prefetch_mu);
}

/* A warm thread: sends what is queued to the owners, up to
 * SOURCE_PREFETCH_MAX files at a time, until the mount stops
 * (source_cluster_prefetch). */
static void *warm_thread(void *arg)
{
	struct mount *m = arg;
	struct reader_object objs[SOURCE_PREFETCH_MAX];
	uint64_t inos[SOURCE_PREFETCH_MAX];
	char (*keys)[BLOCK_KEY_MAX + 1] = malloc(SOURCE_PREFETCH_MAX * sizeof(*keys));
	struct snapshot_entry_info e[SOURCE_PREFETCH_MAX];

	if (!keys)
		return NULL;
	for (;;) {
		size_t n = 0, k = 0;

		pthread_mutex_lock(&m->prefetch_mu);
		while (!m->warm_len && !m->warm_stop)
			pthread_cond_wait(&m->warm_cv, &m->prefetch_mu);
		if (m->warm_stop) {
			pthread_mutex_unlock(&m->prefetch_mu);
			free(keys);
			return NULL;
		}
		for (; m->warm_len && n < SOURCE_PREFETCH_MAX; n++) {
			inos[n] = m->warm_q[m->warm_head];
			m->warm_head = (m->warm_head + 1) % WARM_QUEUE;
			m->warm_len--;
		}
		pthread_mutex_unlock(&m->prefetch_mu);
		for (size_t i = 0; i < n; i++) {
			if (snapshot_stat(m->files, inos[i], &e[k]) != ERR_OK ||
			    snapshot_object_key(m->files, inos[i], keys[k], sizeof(keys[k])) != ERR_OK)
				continue;
			objs[k] = (struct reader_object){ .key = keys[k], .etag = e[k].etag,
							  .size = e[k].size, .ino = inos[i] };
			k++;
		}
		if (k)
			source_cluster_prefetch(&m->cluster, objs, k,
						retry_now_ms() + m->warm_timeout_ms);
	}
}

/*
 * The next inodes of slot's lap (prefetch_next_files) into inos, at most
 * n; ends the lap where it began. Called with prefetch_mu.
 */
static size_t lap_next(struct dir_misses *slot, uint64_t *inos, size_t n)
{
	uint64_t ino = slot->asked_to + 1;
	size_t k = 0;

	while (k < n) {
		if (ino > slot->last) {
			if (slot->wrapped)
				break;
			slot->wrapped = true;
			ino = slot->first;
		}
		if (slot->wrapped && ino >= slot->lap_from)
			break;
		inos[k++] = ino;
		slot->asked_to = ino++;
	}
	if (k < n)
		slot->asked_to = 0; /* round: the next miss starts a lap */
	return k;
}

/* The sources' small_read: the prefetch of obj's directory (the fetcher's
 * read-ahead standalone, the warm threads with meta). */
static void prefetch_next_files(void *arg, const struct reader_object *obj, bool missed)
{
	struct mount *m = arg;
	struct snapshot_entry_info self, dir, e;
	struct dir_misses *slot;
	uint64_t first, count, asked[PREFETCH_FILES_MAX];
	char key[BLOCK_KEY_MAX + 1];
	size_t nasked = 0, n = 0;
	unsigned need = PREFETCH_DIR_MISSES;
	/* Standalone, as many more as the read-ahead's limit rose over its
	 * floor: the files asked for keep its fetches busy. */
	unsigned ahead = m->prefetch_files;

	if (m->fetcher) {
		unsigned limit = fetch_readahead_limit(m->fetcher);

		if (limit > m->prefetch_floor)
			ahead += limit - m->prefetch_floor;
		if (ahead > PREFETCH_FILES_MAX)
			ahead = PREFETCH_FILES_MAX;
	}

	if (snapshot_stat(m->files, obj->ino, &self) != ERR_OK)
		return;
	if (!missed || snapshot_stat(m->files, self.parent, &dir) != ERR_OK)
		dir.parent = 0; /* inodes start at 1 */
	pthread_mutex_lock(&m->prefetch_mu);
	if (dir.parent && dir.parent == m->scan_parent && m->scan_laps >= PREFETCH_DIR_MISSES)
		need = 1;
	slot = &m->dirs[self.parent % PREFETCH_DIRS];
	/* A miss takes the slot: the directory's files are looked up once
	 * per slot, not on every hit. */
	if (slot->dir != self.parent && missed &&
	    snapshot_children(m->files, self.parent, &first, &count) == ERR_OK && count > 0)
		*slot = (struct dir_misses){ .dir = self.parent, .first = first,
					     .last = first + count - 1 };
	if (slot->dir == self.parent && missed && ++slot->misses >= need) {
		if (slot->misses == need && dir.parent) {
			/* the directory's first lap */
			if (dir.parent != m->scan_parent)
				m->scan_parent = dir.parent, m->scan_laps = 0;
			m->scan_laps++;
		}
		/* A lap that ended with the last miss's files: a new one. */
		for (int i = 0; i < 2 && nasked == 0; i++) {
			if (!slot->asked_to) {
				slot->lap_from = obj->ino < slot->last ? obj->ino + 1 : slot->first;
				slot->asked_to = slot->lap_from - 1;
				slot->wrapped = false;
			}
			nasked = lap_next(slot, asked, ahead);
		}
	} else if (slot->dir == self.parent && !missed && slot->asked_to && !slot->wrapped &&
		   slot->asked_to > obj->ino && slot->asked_to - obj->ino <= ahead / 2) {
		uint64_t to = obj->ino + ahead;

		while (slot->asked_to < to && slot->asked_to < slot->last)
			asked[nasked++] = ++slot->asked_to;
	}
	pthread_mutex_unlock(&m->prefetch_mu);
	for (size_t i = 0; i < nasked; i++) {
		if (snapshot_stat(m->files, asked[i], &e) != ERR_OK)
			continue;
		if (e.is_dir || e.size == 0 || e.size > m->block_size || !*e.etag)
			continue;
		if (!m->fetcher) {
			asked[n++] = e.ino; /* n <= i: the warm threads' list, in place */
			continue;
		}
		if (snapshot_object_key(m->files, e.ino, key, sizeof(key)) != ERR_OK ||
		    strlen(key) <= m->cache.prefix_len)
			continue;
		fetch_prefetch(m->fetcher, m->cache.ds, key + m->cache.prefix_len, e.etag, e.size,
			       0);
	}
	if (n)
		warm_push(m, asked, n);
}

/*
 * With meta: the dataset's definition and snapshot from meta, once (a
 * successor: what its predecessor served, see save_served); blocks from
 * the node's cache directory, the owner worker, then the store.
 */
static enum error_code open_dataset(const struct mount_settings *s, struct mount *m,
				    struct reader_config *rcfg, struct error *err)
{
	struct meta_client_options opt = { .timeout_ms = 10000, .build_timeout_ms = 600000,
					    .key_file = s->meta_key_file,
					    .role = META_ROLE_MOUNT };
	struct served sv = { 0 };
	struct store_config cfg;
	char *prefix = NULL, *scheme = NULL;
	uint64_t block_size;
	enum error_code rc;
	bool inherited = false;

	rc = tls_client_load("meta.tls.", &s->meta_tls, &m->meta_tls, err);
	if (rc == ERR_OK)
		rc = tls_client_load("worker.tls.", &s->worker_tls, &m->worker_tls, err);
	if (rc != ERR_OK)
		return rc;
	opt.tls = &m->meta_tls;
	rc = meta_client_new(s->meta_address, &opt, &m->meta, err);
	if (rc != ERR_OK)
		return rc;
	if (s->takeover) {
		struct error lerr;

		inherited = load_served(s, m, &sv, &lerr) == ERR_OK;
		if (inherited)
			log_info("serving the snapshot the previous daemon served",
				 LOG_S("dataset", s->dataset), LOG_U("generation", snapshot_generation(m->snap)));
		else
			log_warn("no snapshot kept by the previous daemon; asking meta",
				 LOG_S("dataset", s->dataset), LOG_S("cause", lerr.msg));
		if (!inherited) {
			served_release(&sv);
			snapshot_free(m->snap);
			m->snap = NULL;
		}
	}
	if (!inherited) {
		rc = ask_meta(s, m, &sv, err);
		if (rc != ERR_OK)
			goto out;
		save_served(s, m, &sv);
	}
	/* The spec says where the data is; this node's settings say how to
	 * reach it (credentials from the node-stage secret, timeouts). */
	store_settings_to_config(&s->store, &cfg);
	if (*sv.endpoint)
		cfg.endpoint = sv.endpoint;
	if (*sv.region)
		cfg.region = sv.region;
	rc = open_store_of(sv.source_uri, &cfg, &m->store, &m->bucket, &prefix, &scheme, err);
	if (rc != ERR_OK)
		goto out;
	block_size = sv.block_size;
	/* Key blocks by the endpoint actually read (the spec's, else this
	 * node's store.endpoint), as the workers do; the spec's alone would
	 * give the AWS default when it is empty and miss every cached block. */
	m->key_endpoint = block_key_endpoint(scheme, cfg.endpoint, cfg.region);
	if (!m->key_endpoint) {
		rc = error_set(err, ERR_NOMEM, "out of memory");
		goto out;
	}
	rc = token_load_file(s->token_file, &m->token, err);
	if (rc != ERR_OK)
		goto out;
	rc = placement_new(&m->placement, err);
	if (rc != ERR_OK)
		goto out;
	rc = refresh_workers(m, err);
	if (rc != ERR_OK && inherited) {
		/* A successor serves without meta: the local cache and the
		 * store until the refresher reaches it. */
		log_warn("granary-meta unreachable; serving without peer workers until it answers",
			 LOG_S("dataset", s->dataset), LOG_S("cause", err->msg));
		rc = ERR_OK;
	}
	if (rc != ERR_OK)
		goto out;
	rc = block_fdcache_new(&(struct block_fdcache_config){
				       .dir = s->cache_dir,
				       .check_ms = BLOCK_FDCACHE_CHECK_MS,
				       .idle_ms = BLOCK_FDCACHE_IDLE_MS,
				       .direct = s->cache_direct_read },
			       &m->fds, err);
	if (rc != ERR_OK)
		goto out;
	m->cluster = (struct source_cluster_ctx){
		.cache_dir = s->cache_dir,
		.dataset = s->dataset,
		.key_endpoint = m->key_endpoint,
		.bucket = m->bucket,
		.block_size = (uint32_t)block_size,
		.prefix_len = strlen(prefix),
		.placement = m->placement,
		.token = m->token,
		.connect_timeout_ms = s->worker_timeout_ms,
		.timeout_ms = s->worker_request_timeout_ms,
		.first_byte_ms = s->worker_first_byte_ms,
		.skip_ms = s->worker_skip_ms,
		.verify = s->verify,
		.fds = m->fds,
		.tls = &m->worker_tls,
	};
	source_cluster_read_cache_id(&m->cluster);
	rcfg->block_size = (uint32_t)block_size;
	rcfg->sources[rcfg->nsources++] = source_local(&m->cluster);
	rcfg->sources[rcfg->nsources++] = source_peer(&m->cluster);
	m->refresh_ms = s->membership_refresh_ms;
	if (pthread_create(&m->refresher, NULL, refresher, m) == 0)
		m->refresher_running = true;
	m->files = m->snap;
	m->prefetch_files = (unsigned)s->prefetch_files;
	m->block_size = (uint32_t)block_size;
	/* A hint is not worth holding up the mount's stop for long. */
	m->warm_timeout_ms = s->worker_request_timeout_ms < WARM_TIMEOUT_MS
				     ? s->worker_request_timeout_ms
				     : WARM_TIMEOUT_MS;
	for (unsigned i = 0; m->prefetch_files && i < WARM_THREADS; i++)
		if (pthread_create(&m->warm_threads[i], NULL, warm_thread, m) == 0)
			m->nwarm++;
	if (m->nwarm > 0) {
		m->cluster.small_read = prefetch_next_files;
		m->cluster.small_read_arg = m;
	}
out:
	free(prefix);
	free(scheme);
	served_release(&sv);
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
	int n = snprintf(buf, size,
			 "reads=%llu read_bytes=%llu cache_hits=%llu cache_misses=%llu "
			 "store_fetches=%llu store_bytes=%llu store_requests=%llu coalesced_gets=%llu "
			 "fallbacks=%llu changed_objects=%llu corrupt_blocks=%llu failed_reads=%llu",
			 (unsigned long long)r.reads, (unsigned long long)r.bytes,
			 (unsigned long long)f.hits, (unsigned long long)f.misses,
			 (unsigned long long)f.fetches, (unsigned long long)f.store_bytes,
			 (unsigned long long)f.store_requests, (unsigned long long)f.coalesced_gets,
			 (unsigned long long)r.fallbacks, (unsigned long long)r.changed_objects,
			 (unsigned long long)r.corrupt, (unsigned long long)r.failed);

	/* Block reads answered by each source: blocks_local=... blocks_store=... */
	for (unsigned i = 0; i < m->nsources && n >= 0 && (size_t)n < size; i++)
		n += snprintf(buf + n, size - (size_t)n, " blocks_%s=%llu", m->source_names[i],
			      (unsigned long long)r.by_source[i]);
	return n;
}

/*
 * Standalone: the worker's block cache, in process, on cache.dir. Misses
 * are fetched whole and once; sequential readers get read-ahead, and a
 * miss of a small file the files after it (prefetch_next_files).
 */

static enum error_code open_cache(const struct mount_settings *s, struct mount *m,
				  struct error *err)
{
	/* direct_write: the reader is served the fetched bytes, so the block
	 * file need not pass through the page cache (cache/blockstore.h).
	 * A small file's block, as the worker's, goes through the page cache:
	 * its prefetched file is read right after from there, where an
	 * O_DIRECT write would cost a disk read and the cut of the file's
	 * padded tail (docs/benchmarks.md). */
	struct blockstore_config bcfg = {
		.dir = s->cache_dir,
		.capacity = s->cache_capacity,
		.direct_write = true,
		.direct_write_min = BLOCK_DIRECT_MIN,
		.direct_read = s->cache_direct_read,
	};
	/* Read-ahead threads to keep a directory's prefetch.files in flight,
	 * and more up to prefetch.files_max while they pay (docs/benchmarks.md). */
	const struct mount_fetch_sizes sz = mount_settings_fetch_sizes(s);
	struct fetch_config fcfg = {
		.max_inflight = sz.max_inflight,
		.threads = sz.threads,
		.readahead_inflight = sz.floor,
		.readahead_inflight_max = sz.threads,
		.readahead_max = (unsigned)s->prefetch_blocks,
		.coalesce_bytes = s->prefetch_coalesce_max,
		.write_behind = (unsigned)s->cache_write_behind,
		.any_file_source = true, /* run by hand on this machine */
		.any_endpoint = true,
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
	dcfg.store.max_connections = mount_settings_store_connections(s);
	rc = fetch_dataset_register(m->fetcher, &dcfg, NULL, err);
	if (rc == ERR_OK)
		rc = fetch_dataset_get(m->fetcher, STANDALONE_NAME, &m->cache.ds, err);
	if (rc != ERR_OK)
		return rc;
	m->cache.fetcher = m->fetcher;
	m->cache.prefix_len = strlen(snapshot_prefix(m->snap));
	m->cache.verify = s->verify;
	m->files = m->snap;
	m->prefetch_files = (unsigned)s->prefetch_files;
	m->prefetch_floor = sz.floor;
	m->block_size = (uint32_t)s->cache_block_size;
	if (m->prefetch_files > 0) {
		m->cache.small_read = prefetch_next_files;
		m->cache.small_read_arg = m;
	}
	return ERR_OK;
}

/*
 * The mount's counters: beside init_state when there is one, so that a
 * successor (--takeover) continues them and the node plugin reads them
 * (fuse/mountstats.h); in memory otherwise. A file that cannot be made is
 * logged and the counters kept in memory: counting is no reason to refuse
 * a mount.
 */
static enum error_code open_stats(const struct mount_settings *s, struct mount *m,
				  struct error *err)
{
	char path[PATH_MAX] = "";
	bool continued = false;
	struct error ferr;

	if (*s->init_state && !mountstats_path(s->init_state, path, sizeof(path)))
		path[0] = '\0';
	if (*path && mountstats_open(path, m->source_names, m->nsources, &m->stats, &continued,
				     &ferr) != ERR_OK) {
		log_warn("cannot keep the mount's counters in a file; a successor starts them at zero",
			 LOG_S("path", path), LOG_S("cause", ferr.msg));
		path[0] = '\0';
	}
	if (!m->stats && mountstats_open(NULL, m->source_names, m->nsources, &m->stats, &continued,
					 err) != ERR_OK)
		return err->code;
	if (continued)
		log_info("continuing the counters of the previous daemon", LOG_S("path", path),
			 LOG_U("reads", atomic_load(&m->stats->c.reads)),
			 LOG_U("daemons", atomic_load(&m->stats->c.daemons)));
	mountstats_tick(m->stats);
	return ERR_OK;
}

/* Refreshes the counters' memory gauge and closes idle block files until
 * teardown. */
static void *ticker(void *arg)
{
	struct mount *m = arg;

	pthread_mutex_lock(&m->stop_mu);
	while (!m->stopping) {
		struct timespec until;

		until = retry_deadline_ts(CLOCK_REALTIME, STATS_TICK_MS);
		pthread_cond_timedwait(&m->stop_cv, &m->stop_mu, &until);
		if (m->stopping)
			break;
		mountstats_tick(m->stats);
		/* a mount that stopped reading holds no evicted block's space */
		if (m->fds)
			block_fdcache_sweep(m->fds);
	}
	pthread_mutex_unlock(&m->stop_mu);
	return NULL;
}

static enum error_code serve_metrics(void *arg, struct metrics_buf *out, struct error *err)
{
	struct mount *m = arg;
	struct mountstats_view view = { .volume = NULL };

	(void)err;
	mountstats_get(m->stats, &view.v);
	mountstats_render(out, &view, 1);
	return ERR_OK;
}

/* /healthz and /metrics on metrics.address; the ticker in any case. */
static enum error_code start_observing(const struct mount_settings *s, struct mount *m,
				       struct error *err)
{
	static const struct metrics_http_ops ops_template = { .metrics = serve_metrics };
	struct metrics_http_ops ops = ops_template;

	if (pthread_create(&m->ticker, NULL, ticker, m) == 0)
		m->ticker_running = true;
	if (!*s->metrics_address)
		return ERR_OK;
	ops.arg = m;
	if (metrics_http_start(s->metrics_address, "metrics.address", &ops, &m->http, err) != ERR_OK)
		return err->code;
	log_info("serving /healthz and /metrics", LOG_S("metrics.address", s->metrics_address));
	return ERR_OK;
}

static enum error_code setup(const struct mount_settings *s, struct mount *m, struct error *err)
{
	struct reader_config rcfg = {
		.block_size = (uint32_t)s->cache_block_size,
		.prefetch_blocks = (unsigned)s->prefetch_blocks,
		.deadline_ms = mount_read_deadline_ms(s),
	};
	struct snapshot_totals t;
	enum error_code rc;

	if (*s->dataset) {
		rc = open_dataset(s, m, &rcfg, err);
		if (rc != ERR_OK)
			return rc;
	} else {
		rc = open_source(s, m, err);
		if (rc == ERR_OK)
			rc = open_cache(s, m, err);
		if (rc != ERR_OK)
			return rc;
		rcfg.sources[rcfg.nsources++] = source_cache(&m->cache);
	}
	rcfg.sources[rcfg.nsources++] = source_store(m->store);
	snapshot_totals(m->snap, &t);
	log_info("namespace loaded", LOG_S("dataset", *s->dataset ? s->dataset : STANDALONE_NAME),
		 LOG_S("source", snapshot_uri(m->snap)), LOG_U("generation", snapshot_generation(m->snap)),
		 LOG_U("files", t.files), LOG_U("dirs", t.dirs), LOG_U("bytes", t.bytes));
	for (unsigned i = 0; i < rcfg.nsources; i++)
		m->source_names[i] = rcfg.sources[i].name;
	m->nsources = rcfg.nsources;
	rc = open_stats(s, m, err);
	if (rc != ERR_OK)
		return rc;
	rcfg.counters = &m->stats->c;
	rc = reader_new(&rcfg, &m->reader, err);
	if (rc != ERR_OK)
		return rc;
	rc = mountfs_new(m->snap, m->reader, getuid(), getgid(), &m->fs, err);
	if (rc != ERR_OK)
		return rc;
	m->snap = NULL; /* owned by the fs now */
	mountfs_set_stats(m->fs, format_stats, m);
	return start_observing(s, m, err);
}

static void teardown(struct mount *m)
{
	metrics_http_stop(m->http);
	pthread_mutex_lock(&m->stop_mu);
	m->stopping = true;
	pthread_cond_broadcast(&m->stop_cv);
	pthread_mutex_unlock(&m->stop_mu);
	if (m->refresher_running)
		pthread_join(m->refresher, NULL);
	pthread_mutex_lock(&m->prefetch_mu);
	m->warm_stop = true;
	pthread_cond_broadcast(&m->warm_cv);
	pthread_mutex_unlock(&m->prefetch_mu);
	for (unsigned i = 0; i < m->nwarm; i++)
		pthread_join(m->warm_threads[i], NULL);
	if (m->ticker_running)
		pthread_join(m->ticker, NULL);
	mountfs_free(m->fs);
	reader_free(m->reader);
	block_fdcache_free(m->fds);
	placement_free(m->placement);
	token_free(m->token);
	tls_material_release(&m->meta_tls);
	tls_material_release(&m->worker_tls);
	meta_client_free(m->meta);
	free(m->key_endpoint);
	free(m->bucket);
	if (m->cache.ds)
		fetch_dataset_put(m->fetcher, m->cache.ds);
	fetch_free(m->fetcher);
	blockstore_free(m->bs);
	snapshot_free(m->snap);
	store_free(m->store);
	mountstats_close(m->stats);
}

int main(int argc, char **argv)
{
	const struct config_schema *schema = &mount_settings_schema;
	struct mount_settings s;
	struct mount m = { .stop_mu = PTHREAD_MUTEX_INITIALIZER, .stop_cv = PTHREAD_COND_INITIALIZER,
			   .prefetch_mu = PTHREAD_MUTEX_INITIALIZER, .warm_cv = PTHREAD_COND_INITIALIZER };
	struct ll_config ll;
	struct error err;
	char fsname[300];
	int rc;

	rc = daemon_start(schema, &s, argc, argv, NULL);
	if (rc >= 0)
		return rc;
	if (mount_settings_check(&s, &err) != ERR_OK)
		return daemon_refuse(schema, &s, &err);
	rc = 1;
	if (setup(&s, &m, &err) != ERR_OK) {
		daemon_report(schema, &err);
		goto out;
	}
	snprintf(fsname, sizeof(fsname), "granary:%s", *s.dataset ? s.dataset : STANDALONE_NAME);
	ll = (struct ll_config){
		.mountpoint = s.mountpoint,
		.fsname = fsname,
		.entry_timeout = (double)s.entry_timeout_ms / 1000.0,
		.attr_timeout = (double)s.attr_timeout_ms / 1000.0,
		.keep_cache = s.keep_cache,
		.no_open = s.no_open,
		.max_read = (uint32_t)s.max_read,
		.max_background = (unsigned)s.max_background,
		.max_idle_threads = (unsigned)s.max_idle_threads,
		.clone_fd = s.clone_fd,
		.splice = s.splice,
		.init_state = s.init_state,
		.takeover = s.takeover,
		.read_ahead = s.read_ahead,
		.allow_other = geteuid() == 0,
		.debug = log_get_level() == LOG_LEVEL_DEBUG,
	};
	if (ll_run(m.fs, &ll, &err) != ERR_OK) {
		daemon_report(schema, &err);
		goto out;
	}
	rc = 0;
out:
	teardown(&m);
	config_release(schema, &s);
	return rc;
}
