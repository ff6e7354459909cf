/*
 * fetch.c - dataset registry, single-flight block fetches, read-ahead.
 */
#include "cache/fetch.h"
#include "cache/inflight.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uthash.h>

#include "common/log.h"
#include "common/retry.h"

const double fetch_latency_bounds[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
					0.25,  0.5,    1,     2.5,  5,     10 };
const size_t fetch_latency_nbounds = sizeof(fetch_latency_bounds) / sizeof(fetch_latency_bounds[0]);

/* A waiter normally needs one more lookup after the fetch it waited for;
 * more rounds only happen when a tiny cache evicts the block at once. */
#define MAX_ROUNDS 8

/*
 * Blocks just fetched, kept in memory for the next requests: clients read
 * a block in several ranges (the kernel asks FUSE for 1 MiB at a time).
 * A block the cache refused would otherwise be fetched whole again for
 * each range; a block written with O_DIRECT (a blockstore opened with
 * direct_write) would be read back from the disk, since none of its file
 * is in the page cache, read-ahead's blocks included. So the ring holds
 * the blocks of every sequential reader's read-ahead window (4 readers x
 * 4 blocks, and the blocks they read now), and memory stays bounded (32
 * blocks: 128 MiB with 4 MiB blocks).
 */
#define RECENT_BLOCKS 32

struct fetch_buffer {
	atomic_uint refs;
	size_t len;
	unsigned char *data;   /* len bytes, in mem or right after this struct */
	/* blockstore_write_commit_bytes's, given back with the buffer
	 * (blockstore_bytes_put of bs, with the room it said); NULL when
	 * data follows this struct. */
	void *mem;
	struct blockstore *bs;
	uint64_t room;
};

struct fetch_dataset {
	struct fetch_dataset *next;     /* registry list; protected by f->reg_mu */
	struct fetch_dataset *all_next; /* every live dataset; protected by f->reg_mu */
	atomic_uint refs;
	struct fetch_dataset_desc desc; /* strings below, immutable */
	char *name, *source, *endpoint, *region, *credentials_file;
	char *bucket, *prefix, *key_endpoint;
	struct store *store;
};

/* One store fetch in progress and the requests waiting for it. */
struct flight {
	struct flight *next;               /* protected by f->mu */
	uint8_t hash[BLOCK_HASH_LEN];
	unsigned refs;                     /* leader + waiters; protected by f->mu */
	bool done;                         /* protected by f->mu */
	pthread_cond_t cv;                 /* signalled once, at done */
	/* The outcome, written by the leader before done. */
	struct error err;                  /* err.code is the result */
	bool cached;                       /* committed: waiters look it up */
	bool not_fetched;                  /* a cache-only leader gave up: waiters fetch */
	struct fetch_buffer *buf;          /* not admitted: the bytes; one ref owned here */
};

struct ra_job {
	struct ra_job *next;
	struct fetch_dataset *ds;          /* held */
	char *key, *etag;
	uint64_t size;                     /* the object's; 0: not known */
	uint64_t index;
	uint8_t hash[BLOCK_HASH_LEN];
	UT_hash_handle hh;                 /* in f->ra_set while queued */
};

/* Threads that commit blocks served before their commit (write_behind). */
#define COMMITTERS 2

/* A block served from its writer's bytes, waiting for its commit. */
struct commit_job {
	struct commit_job *next;
	struct blockstore_writer *w;
	struct flight *fl;                 /* the leader's reference, listed until the commit */
	struct fetch_buffer *kept;         /* a reference; the writer's bytes */
	struct fetch_dataset *ds;          /* held, for the log */
	char *key;
	uint64_t index;
};

struct fetcher {
	struct blockstore *bs;
	unsigned max_inflight, readahead_max;
	uint64_t coalesce_bytes;           /* most bytes of one read-ahead GET */
	unsigned write_behind;             /* most commits waiting; 0 = none */
	bool no_recent;                    /* fetch_config.no_recent */
	void (*before_commit)(void *arg);
	void *before_commit_arg;
	void (*run_block_done)(uint64_t index, void *arg);
	void *run_block_done_arg;
	const char *const *file_roots;     /* borrowed; immutable */
	size_t nfile_roots;
	bool any_file_source;
	const char *default_endpoint;      /* borrowed; immutable */
	const char *allowed_endpoints;     /* borrowed; immutable */
	bool any_endpoint;

	pthread_mutex_t mu;
	pthread_cond_t slot_cv;            /* a fetch slot freed, or stopping */
	pthread_cond_t ra_cv;              /* read-ahead queued, or stopping */
	struct flight *flights;            /* protected by mu */
	unsigned inflight;                 /* protected by mu */
	unsigned ra_inflight;              /* of which read-ahead, preload; protected by mu */
	bool stopping;                     /* protected by mu */
	struct ra_job *ra_head, *ra_tail;  /* protected by mu */
	size_t ra_len;                     /* protected by mu */
	struct ra_job *ra_set;             /* the queued jobs by hash; protected by mu */
	struct {
		uint8_t hash[BLOCK_HASH_LEN];
		struct fetch_buffer *buf;      /* one ref owned here */
	} recent[RECENT_BLOCKS];           /* protected by mu */
	unsigned recent_next;              /* protected by mu */
	pthread_cond_t commit_cv;          /* a commit queued, or stopping */
	struct commit_job *commit_head, *commit_tail; /* protected by mu */
	unsigned commit_len;               /* queued or being committed; protected by mu */
	pthread_t committers[COMMITTERS];
	unsigned ncommitters;

	pthread_mutex_t reg_mu;
	struct fetch_dataset *datasets;    /* registered; protected by reg_mu */
	struct fetch_dataset *all;         /* live, registered or not; protected by reg_mu */
	uint64_t retired_requests;         /* store requests of freed datasets; protected by reg_mu */

	pthread_t *threads;
	unsigned nthreads;
	/* Read-ahead jobs run at once: under ra_ctl.limit (mirrored in
	 * ra_limit for fetch_readahead_limit), which the windows of
	 * completed jobs adjust (cache/inflight.h). */
	struct inflight_ctl ra_ctl;        /* protected by mu */
	atomic_uint ra_limit;
	unsigned ra_active;                /* protected by mu */
	uint64_t win_start_ms, win_jobs;   /* protected by mu */
	bool win_queued;                   /* protected by mu */

	atomic_bool cancelled;             /* fetch_cancel: transfers stop */

	struct metrics_histogram latency;
	atomic_uint_fast64_t hits, misses, fetches, fetch_errors, store_bytes;
	atomic_uint_fast64_t not_admitted, corrupt_refetched, disk_full_served;
	struct log_limiter disk_full_log, nocache_log;
	atomic_uint_fast64_t ra_queued, ra_fetched, ra_dropped, coalesced_gets;
	atomic_uint_fast64_t written_behind;
};

/* --- names and keys ------------------------------------------------------ */

/* --- datasets ------------------------------------------------------------ */

static void dataset_free(struct fetch_dataset *ds)
{
	store_free(ds->store);
	free(ds->name);
	free(ds->source);
	free(ds->endpoint);
	free(ds->region);
	free(ds->credentials_file);
	free(ds->bucket);
	free(ds->prefix);
	free(ds->key_endpoint);
	free(ds);
}

static char *dup_or_empty(const char *s)
{
	return strdup(s ? s : "");
}

static enum error_code dataset_new(const struct fetch_dataset_config *cfg,
				   struct fetch_dataset **out, struct error *err)
{
	struct fetch_dataset *ds = NULL;
	char *scheme = NULL, *uri = NULL;
	enum error_code rc;
	const uint64_t bs = cfg->block_size;
	const char *region = cfg->store.region && *cfg->store.region ? cfg->store.region : "us-east-1";

	*out = NULL;
	rc = block_dataset_name_check(cfg->name, err);
	if (rc != ERR_OK)
		return rc;
	rc = block_size_check("block_size", bs, err);
	if (rc != ERR_OK)
		return error_wrap(err, "dataset '%s'", cfg->name);
	if (cfg->policy != BLOCKSTORE_LRU && cfg->policy != BLOCKSTORE_SCAN_RESISTANT)
		return error_set(err, ERR_INVALID, "dataset '%s': unknown policy", cfg->name);
	ds = calloc(1, sizeof(*ds));
	if (!ds)
		return error_set(err, ERR_NOMEM, "dataset '%s': out of memory", cfg->name);
	rc = store_uri_parse(cfg->source ? cfg->source : "", &scheme, &ds->bucket, &ds->prefix, err);
	if (rc != ERR_OK) {
		error_wrap(err, "dataset '%s': source", cfg->name);
		goto fail;
	}
	if (ds->prefix[0] && ds->prefix[strlen(ds->prefix) - 1] != '/') {
		rc = error_set(err, ERR_INVALID,
			       "dataset '%s': source '%s': the prefix must end with '/' ('%s/')",
			       cfg->name, cfg->source, cfg->source);
		goto fail;
	}
	if (asprintf(&uri, "%s://%s", scheme, ds->bucket) < 0) {
		uri = NULL;
		rc = error_set(err, ERR_NOMEM, "dataset '%s': out of memory", cfg->name);
		goto fail;
	}
	rc = store_open(uri, &cfg->store, &ds->store, err);
	if (rc != ERR_OK) {
		error_wrap(err, "dataset '%s'", cfg->name);
		goto fail;
	}
	ds->name = strdup(cfg->name);
	ds->source = strdup(cfg->source);
	ds->endpoint = dup_or_empty(cfg->store.endpoint);
	ds->region = strdup(region);
	ds->credentials_file = dup_or_empty(cfg->store.credentials_file);
	ds->key_endpoint = block_key_endpoint(scheme, cfg->store.endpoint, region);
	if (!ds->name || !ds->source || !ds->endpoint || !ds->region || !ds->credentials_file ||
	    !ds->key_endpoint) {
		rc = error_set(err, ERR_NOMEM, "dataset '%s': out of memory", cfg->name);
		goto fail;
	}
	atomic_init(&ds->refs, 1);
	ds->desc = (struct fetch_dataset_desc){
		.name = ds->name,
		.source = ds->source,
		.endpoint = ds->endpoint,
		.region = ds->region,
		.credentials_file = ds->credentials_file,
		.bucket = ds->bucket,
		.prefix = ds->prefix,
		.key_endpoint = ds->key_endpoint,
		.block_size = (uint32_t)bs,
		.policy = cfg->policy,
		.pin = cfg->pin,
	};
	free(scheme);
	free(uri);
	*out = ds;
	return ERR_OK;
fail:
	free(scheme);
	free(uri);
	dataset_free(ds);
	return rc;
}

static bool same_definition(const struct fetch_dataset *a, const struct fetch_dataset *b)
{
	return strcmp(a->source, b->source) == 0 && strcmp(a->endpoint, b->endpoint) == 0 &&
	       strcmp(a->region, b->region) == 0 &&
	       strcmp(a->credentials_file, b->credentials_file) == 0 &&
	       a->desc.block_size == b->desc.block_size && a->desc.policy == b->desc.policy &&
	       a->desc.pin == b->desc.pin;
}

void fetch_dataset_put(struct fetcher *f, struct fetch_dataset *ds)
{
	struct store_stats st;

	if (!ds || atomic_fetch_sub(&ds->refs, 1) != 1)
		return;
	store_get_stats(ds->store, &st);
	pthread_mutex_lock(&f->reg_mu);
	for (struct fetch_dataset **p = &f->all; *p; p = &(*p)->all_next) {
		if (*p == ds) {
			*p = ds->all_next;
			break;
		}
	}
	f->retired_requests += st.requests;
	pthread_mutex_unlock(&f->reg_mu);
	dataset_free(ds);
}

/* One gate for every way a dataset arrives (the HTTP API, meta's list,
 * granary-fuse): a file:// source only under the fetcher's roots, an s3://
 * one only at an allowed endpoint. */
static enum error_code check_source(const struct fetcher *f, const struct fetch_dataset_config *cfg,
				    struct error *err)
{
	const char *name = cfg->name ? cfg->name : "";

	if (!f->any_file_source &&
	    store_file_root_check(cfg->source, f->file_roots, f->nfile_roots, err) != ERR_OK) {
		if (!err)
			return ERR_INVALID;
		err->code = ERR_INVALID; /* a directory that is not there too */
		return error_wrap(err, "dataset '%s': field 'source'", name);
	}
	if (!f->any_endpoint &&
	    store_endpoint_check(cfg->source, cfg->store.endpoint, f->default_endpoint,
				 f->allowed_endpoints, err) != ERR_OK)
		return err ? error_wrap(err, "dataset '%s': field 'endpoint'", name) : ERR_INVALID;
	return ERR_OK;
}

enum error_code fetch_dataset_register(struct fetcher *f, const struct fetch_dataset_config *cfg,
				       bool *created, struct error *err)
{
	struct fetch_dataset *ds = NULL, *old = NULL, **p;
	enum error_code rc;

	if (created)
		*created = false;
	rc = check_source(f, cfg, err);
	if (rc == ERR_OK)
		rc = dataset_new(cfg, &ds, err);
	if (rc != ERR_OK)
		return rc;
	rc = blockstore_set_dataset(f->bs, ds->name, ds->desc.policy, ds->desc.pin, err);
	if (rc != ERR_OK) {
		dataset_free(ds);
		return error_wrap(err, "dataset '%s'", cfg->name);
	}
	pthread_mutex_lock(&f->reg_mu);
	for (p = &f->datasets; *p; p = &(*p)->next)
		if (strcmp((*p)->name, ds->name) == 0)
			break;
	if (*p && same_definition(*p, ds)) {
		pthread_mutex_unlock(&f->reg_mu);
		dataset_free(ds);
		return ERR_OK;
	}
	if (*p) {
		old = *p;
		ds->next = old->next;
		*p = ds;
	} else {
		ds->next = f->datasets;
		f->datasets = ds;
		if (created)
			*created = true;
	}
	ds->all_next = f->all;
	f->all = ds;
	pthread_mutex_unlock(&f->reg_mu);
	log_info("dataset registered", LOG_S("dataset", ds->name), LOG_S("source", ds->source),
		 LOG_S("endpoint", ds->endpoint), LOG_U("block_size", ds->desc.block_size),
		 LOG_S("policy", ds->desc.policy == BLOCKSTORE_LRU ? "lru" : "scan-resistant"),
		 LOG_I("pin", ds->desc.pin), LOG_I("replaced", old != NULL));
	fetch_dataset_put(f, old);
	return ERR_OK;
}

enum error_code fetch_dataset_unregister(struct fetcher *f, const char *name, uint64_t *dropped,
					 struct error *err)
{
	struct fetch_dataset *ds = NULL;
	uint64_t n;

	if (dropped)
		*dropped = 0;
	pthread_mutex_lock(&f->reg_mu);
	for (struct fetch_dataset **p = &f->datasets; *p; p = &(*p)->next) {
		if (strcmp((*p)->name, name) == 0) {
			ds = *p;
			*p = ds->next;
			break;
		}
	}
	pthread_mutex_unlock(&f->reg_mu);
	if (!ds)
		return error_set(err, ERR_NOT_FOUND, "unknown dataset '%s'", name);
	n = blockstore_drop_dataset(f->bs, name);
	if (dropped)
		*dropped = n;
	log_info("dataset removed", LOG_S("dataset", name), LOG_U("blocks_dropped", n));
	fetch_dataset_put(f, ds);
	return ERR_OK;
}

enum error_code fetch_dataset_get(struct fetcher *f, const char *name, struct fetch_dataset **out,
				  struct error *err)
{
	*out = NULL;
	pthread_mutex_lock(&f->reg_mu);
	for (struct fetch_dataset *ds = f->datasets; ds; ds = ds->next) {
		if (strcmp(ds->name, name) == 0) {
			atomic_fetch_add(&ds->refs, 1);
			*out = ds;
			break;
		}
	}
	pthread_mutex_unlock(&f->reg_mu);
	if (!*out)
		return error_set(err, ERR_NOT_FOUND, "unknown dataset '%s'", name);
	return ERR_OK;
}

static int by_name(const void *a, const void *b)
{
	const struct fetch_dataset *x = *(struct fetch_dataset *const *)a;
	const struct fetch_dataset *y = *(struct fetch_dataset *const *)b;

	return strcmp(x->name, y->name);
}

enum error_code fetch_dataset_list(struct fetcher *f, struct fetch_dataset ***out, size_t *n,
				   struct error *err)
{
	struct fetch_dataset **list = NULL;
	size_t count = 0, i = 0;

	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&f->reg_mu);
	for (struct fetch_dataset *ds = f->datasets; ds; ds = ds->next)
		count++;
	list = calloc(count ? count : 1, sizeof(*list));
	if (!list) {
		pthread_mutex_unlock(&f->reg_mu);
		return error_set(err, ERR_NOMEM, "list datasets: out of memory");
	}
	for (struct fetch_dataset *ds = f->datasets; ds; ds = ds->next) {
		atomic_fetch_add(&ds->refs, 1);
		list[i++] = ds;
	}
	pthread_mutex_unlock(&f->reg_mu);
	qsort(list, count, sizeof(*list), by_name);
	*out = list;
	*n = count;
	return ERR_OK;
}

void fetch_dataset_list_free(struct fetcher *f, struct fetch_dataset **list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fetch_dataset_put(f, list[i]);
	free(list);
}

const struct fetch_dataset_desc *fetch_dataset_describe(const struct fetch_dataset *ds)
{
	return &ds->desc;
}

struct store *fetch_dataset_store(const struct fetch_dataset *ds)
{
	return ds->store;
}

/* --- results ------------------------------------------------------------- */

/* A buffer for size bytes (len 0), one reference; NULL without memory. */
static struct fetch_buffer *buffer_new(size_t size)
{
	struct fetch_buffer *b = malloc(sizeof(*b) + size);

	if (!b)
		return NULL;
	atomic_init(&b->refs, 1);
	b->len = 0;
	b->data = (unsigned char *)(b + 1);
	b->mem = NULL;
	return b;
}

/* A buffer for bytes a blockstore writer hands over (set mem, data, len,
 * bs and room), one reference; NULL without memory. */
static struct fetch_buffer *buffer_for_bytes(void)
{
	struct fetch_buffer *b = calloc(1, sizeof(*b));

	if (b)
		atomic_init(&b->refs, 1);
	return b;
}

static void buffer_put(struct fetch_buffer *b)
{
	if (b && atomic_fetch_sub(&b->refs, 1) == 1) {
		if (b->mem)
			blockstore_bytes_put(b->bs, b->mem, b->room);
		free(b);
	}
}

uint64_t fetch_result_length(const struct fetch_result *r)
{
	if (r->ref)
		return blockstore_ref_length(r->ref);
	return r->buf ? r->buf->len : 0;
}

const void *fetch_result_data(const struct fetch_result *r)
{
	return r->buf ? r->buf->data : NULL;
}

void fetch_result_release(struct fetcher *f, struct fetch_result *r)
{
	if (r->ref)
		blockstore_ref_put(f->bs, r->ref);
	buffer_put(r->buf);
	memset(r, 0, sizeof(*r));
}

/* --- the miss path ------------------------------------------------------- */

/* Everything one block lookup needs, resolved once. */
struct block_req {
	struct fetch_dataset *ds;
	const char *key;                 /* relative */
	char full[BLOCK_KEY_MAX + 1];    /* prefix + key */
	const char *etag;
	uint64_t size;                   /* the object's, as the caller knows it; 0: not known */
	uint64_t index;
	uint64_t until_ms;               /* the reader's deadline; 0 = none */
	struct block_key bkey;
	uint8_t hash[BLOCK_HASH_LEN];
};

/* The key of block index of object full (the dataset's prefix and the
 * object's key), as every client hashes it (block/key.h). */
static struct block_key block_key_of(const struct fetch_dataset *ds, const char *full,
				     const char *etag, uint64_t index)
{
	return (struct block_key){
		.endpoint = ds->key_endpoint,
		.bucket = ds->bucket,
		.object = full,
		.etag = etag,
		.block_size = ds->desc.block_size,
		.index = index,
	};
}

/* size: the object's as the caller knows it (0: not known); a block past
 * it is ERR_RANGE without a request to the store. */
static enum error_code block_req_init(struct block_req *r, struct fetch_dataset *ds,
				      const char *key, const char *etag, uint64_t size,
				      uint64_t index, struct error *err)
{
	enum error_code rc;

	rc = block_object_key_check(ds->prefix, key, err);
	if (rc != ERR_OK)
		return error_wrap(err, "dataset '%s'", ds->name);
	if (!etag || !*etag)
		return error_set(err, ERR_INVALID, "dataset '%s' object '%s': etag is required",
				 ds->name, key);
	if (strlen(etag) >= 80)
		return error_set(err, ERR_INVALID, "dataset '%s' object '%s': etag is too long",
				 ds->name, key);
	if (index > UINT64_MAX / ds->desc.block_size)
		return error_set(err, ERR_RANGE, "dataset '%s' object '%s': block %llu is past the end",
				 ds->name, key, (unsigned long long)index);
	if (size && index >= (size - 1) / ds->desc.block_size + 1)
		return error_set(err, ERR_RANGE,
				 "dataset '%s' object '%s': block %llu is past the end of its %llu bytes",
				 ds->name, key, (unsigned long long)index,
				 (unsigned long long)size);
	r->ds = ds;
	r->size = size;
	r->key = key;
	r->until_ms = 0;
	snprintf(r->full, sizeof(r->full), "%s%s", ds->prefix, key);
	r->etag = etag;
	r->index = index;
	r->bkey = block_key_of(ds, r->full, etag, index);
	block_key_hash(&r->bkey, r->hash);
	return ERR_OK;
}

void fetch_block_hash(const struct fetch_dataset *ds, const char *key, const char *etag,
		      uint64_t index, uint8_t hash[BLOCK_HASH_LEN])
{
	char full[BLOCK_KEY_MAX + 1];
	struct block_key k;

	snprintf(full, sizeof(full), "%s%s", ds->prefix, key);
	k = block_key_of(ds, full, etag, index);
	block_key_hash(&k, hash);
}

/*
 * The bytes block r is expected to hold: the rest of the object when its
 * size is known, else a whole block. Only a hint for how the block is
 * written (blockstore_write_begin_expect): the room reserved and the
 * bytes asked of the store stay a whole block, so a size given wrong
 * costs a copy, never a short or refused block.
 */
static uint64_t block_expect(const struct block_req *r)
{
	const uint64_t bs = r->ds->desc.block_size;
	const uint64_t off = r->index * bs; /* < size: block_req_init */

	if (r->size == 0 || r->size - off >= bs)
		return bs;
	return r->size - off;
}

static struct flight *flight_find(struct fetcher *f, const uint8_t *hash)
{
	for (struct flight *fl = f->flights; fl; fl = fl->next)
		if (memcmp(fl->hash, hash, BLOCK_HASH_LEN) == 0)
			return fl;
	return NULL;
}

/* Called with f->mu held. */
static void flight_put_locked(struct flight *fl)
{
	if (--fl->refs > 0)
		return;
	pthread_cond_destroy(&fl->cv);
	buffer_put(fl->buf);
	free(fl);
}

/* A new flight for hash, held by its leader and listed; NULL without
 * memory. Called with f->mu held. */
static struct flight *flight_new_locked(struct fetcher *f, const uint8_t *hash)
{
	struct flight *fl = calloc(1, sizeof(*fl));

	if (!fl)
		return NULL;
	memcpy(fl->hash, hash, BLOCK_HASH_LEN);
	fl->refs = 1;
	error_clear(&fl->err);
	pthread_cond_init(&fl->cv, NULL);
	fl->next = f->flights;
	f->flights = fl;
	return fl;
}

/* The leader is done (its outcome written in fl): unlists the flight,
 * wakes its waiters and drops the leader's reference. */
static void flight_end(struct fetcher *f, struct flight *fl)
{
	pthread_mutex_lock(&f->mu);
	for (struct flight **p = &f->flights; *p; p = &(*p)->next) {
		if (*p == fl) {
			*p = fl->next;
			break;
		}
	}
	fl->done = true;
	pthread_cond_broadcast(&fl->cv);
	flight_put_locked(fl);
	pthread_mutex_unlock(&f->mu);
}

/*
 * Waits on cv until signalled or until_ms (retry_now_ms clock; 0 = no
 * limit). Returns ETIMEDOUT once until_ms has passed, else 0.
 */
static int wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t until_ms)
{
	struct timespec ts;
	uint64_t now;

	if (!until_ms)
		return pthread_cond_wait(cv, mu);
	now = retry_now_ms();
	if (now >= until_ms)
		return ETIMEDOUT;
	ts = retry_deadline_ts(CLOCK_REALTIME, until_ms - now);
	pthread_cond_timedwait(cv, mu, &ts);
	return retry_now_ms() >= until_ms ? ETIMEDOUT : 0;
}

static enum error_code deadline_passed(const struct block_req *r, const char *what,
				       struct error *err)
{
	return error_set(err, ERR_TIMEOUT, "dataset '%s' object '%s' block %llu: the read's deadline passed %s",
			 r->ds->name, r->key, (unsigned long long)r->index, what);
}

/*
 * A store fetch slot. Read-ahead and preload (cache_only) take one of the
 * max_inflight slots; a read that needs the bytes waits for a slot only
 * behind other such reads, never behind read-ahead (at most max_inflight
 * of each run at once). A store that is itself saturated still answers
 * the GETs in flight in turn, the read-ahead's with the reader's. A
 * demand read gives up at its deadline.
 */
static enum error_code slot_acquire(struct fetcher *f, const struct block_req *r,
				    bool cache_only, struct error *err)
{
	pthread_mutex_lock(&f->mu);
	while (!f->stopping && !atomic_load(&f->cancelled) &&
	       (cache_only ? f->inflight >= f->max_inflight
			   : f->inflight - f->ra_inflight >= f->max_inflight)) {
		if (wait_until(&f->slot_cv, &f->mu, r->until_ms) == ETIMEDOUT) {
			pthread_mutex_unlock(&f->mu);
			return deadline_passed(r, "waiting for a store fetch slot", err);
		}
	}
	if (f->stopping || atomic_load(&f->cancelled)) {
		pthread_mutex_unlock(&f->mu);
		return error_set(err, ERR_CANCELLED, "the worker is stopping");
	}
	f->inflight++;
	if (cache_only)
		f->ra_inflight++;
	pthread_mutex_unlock(&f->mu);
	return ERR_OK;
}

static void slot_release(struct fetcher *f, bool cache_only)
{
	pthread_mutex_lock(&f->mu);
	f->inflight--;
	if (cache_only)
		f->ra_inflight--;
	pthread_cond_broadcast(&f->slot_cv);
	pthread_mutex_unlock(&f->mu);
}

struct sink_ctx {
	struct fetcher *f;
	struct blockstore_writer *w;
	uint64_t block_size;
	struct fetch_buffer *mem;  /* the disk filled up: the bytes go here */
	struct error err;
};

/* The disk filled up mid-block: what was written moves to memory, and
 * the rest of the transfer goes there too (the reader still gets the
 * block, and no byte is fetched twice). */
static int sink_to_memory(struct sink_ctx *s)
{
	uint64_t have = 0;

	s->mem = buffer_new(s->block_size);
	if (!s->mem) {
		error_set(&s->err, ERR_NOMEM, "out of memory");
		return -1;
	}
	if (blockstore_write_read_back(s->w, s->mem->data, &have, &s->err) != ERR_OK)
		return -1;
	s->mem->len = (size_t)have;
	return 0;
}

static int sink_to_cache(const void *data, size_t len, void *arg)
{
	struct sink_ctx *s = arg;
	struct error werr;

	if (atomic_load(&s->f->cancelled)) {
		error_set(&s->err, ERR_CANCELLED, "the worker is stopping");
		return -1;
	}
	if (!s->mem) {
		enum error_code rc = blockstore_write_append(s->w, data, len, &werr);

		if (rc == ERR_OK)
			return 0;
		if (rc != ERR_NO_SPACE) {
			s->err = werr;
			return -1;
		}
		s->err = werr; /* the cause, for the log */
		if (sink_to_memory(s) != 0)
			return -1;
	}
	if (len > s->block_size - s->mem->len) {
		error_set(&s->err, ERR_IO, "the store sent more than a block");
		return -1;
	}
	memcpy(s->mem->data + s->mem->len, data, len);
	s->mem->len += len;
	return 0;
}

/* The cache directory's disk is full: lower the capacity to what it holds
 * and evict, once per event; said at most once per 10 s. */
static void disk_full(struct fetcher *f, const struct block_req *r, const char *cause)
{
	uint64_t capacity = 0;

	atomic_fetch_add(&f->disk_full_served, 1);
	if (blockstore_disk_full(f->bs, &capacity))
		log_limited_warn(&f->disk_full_log, "cache disk full: capacity lowered to what it holds, evicting; blocks that do not fit are served from memory",
				 LOG_S("dataset", r->ds->name), LOG_U("capacity", capacity),
				 LOG_S("cause", cause));
}

/* A commit that failed after its bytes were kept: nothing is cached, the
 * readers are served from memory; rc and cause are the commit's. */
static void kept_not_cached(struct fetcher *f, const struct block_req *r, const char *key,
			    uint64_t index, enum error_code rc, const char *cause)
{
	atomic_fetch_add(&f->not_admitted, 1);
	if (rc == ERR_NO_SPACE)
		disk_full(f, r, cause);
	else
		log_limited_warn(&f->nocache_log, "cannot cache block, serving it from memory",
				 LOG_S("dataset", r->ds->name), LOG_S("object", key),
				 LOG_U("block", index), LOG_S("cause", cause));
}

static void fetch_failed(struct fetcher *f, const struct block_req *r, struct error *err)
{
	atomic_fetch_add(&f->fetch_errors, 1);
	error_wrap(err, "dataset '%s' object '%s' block %llu", r->ds->name, r->key,
		   (unsigned long long)r->index);
}

/* Keeps a fetched block's bytes for the next requests (see RECENT_BLOCKS). */
static void recent_add(struct fetcher *f, const uint8_t *hash, struct fetch_buffer *buf)
{
	struct fetch_buffer *old;

	/* no_recent: a block the cache holds is read from its file; one
	 * it refused stays here, or each range asked of it would fetch it
	 * again. */
	if (f->no_recent && blockstore_has(f->bs, hash))
		return;
	atomic_fetch_add(&buf->refs, 1);
	pthread_mutex_lock(&f->mu);
	old = f->recent[f->recent_next].buf;
	memcpy(f->recent[f->recent_next].hash, hash, BLOCK_HASH_LEN);
	f->recent[f->recent_next].buf = buf;
	f->recent_next = (f->recent_next + 1) % RECENT_BLOCKS;
	pthread_mutex_unlock(&f->mu);
	buffer_put(old);
}

/* A held reference to a refused block still in memory, or NULL; f->mu held. */
static struct fetch_buffer *recent_find_locked(struct fetcher *f, const uint8_t *hash)
{
	for (unsigned i = 0; i < RECENT_BLOCKS; i++) {
		struct fetch_buffer *b = f->recent[i].buf;

		if (b && memcmp(f->recent[i].hash, hash, BLOCK_HASH_LEN) == 0) {
			atomic_fetch_add(&b->refs, 1);
			return b;
		}
	}
	return NULL;
}

/*
 * Ends a block's writer once the transfer into it is over (rc its
 * outcome, len the bytes it got): commits it (*ref, or *buf with the
 * bytes a direct_write writer kept, also when its commit met a full
 * disk: then nothing is cached but the bytes are served), or hands over
 * the bytes the sink moved to memory when the disk filled up (*buf), or
 * aborts it. Returns rc, or the commit's error. The writer is gone in
 * every case.
 */
static enum error_code block_finish(struct fetcher *f, const struct block_req *r,
				    struct sink_ctx *sink, uint64_t len, enum error_code rc,
				    struct fetch_buffer **buf, struct blockstore_ref **ref,
				    struct error *err)
{
	*buf = NULL;
	*ref = NULL;
	if (rc != ERR_OK || sink->mem) {
		blockstore_write_abort(f->bs, sink->w);
	} else {
		/* A writer that kept the block's bytes (direct_write) hands
		 * them over: the readers are served from them, as none of the
		 * file is in the page cache. */
		struct fetch_buffer *kept = buffer_for_bytes();
		void *bytes = NULL;
		uint64_t room = 0;

		rc = blockstore_write_commit_bytes(f->bs, sink->w, ref, kept ? &bytes : NULL, &room,
						   err);
		if (bytes) {
			kept->mem = bytes;
			kept->bs = f->bs;
			kept->room = room;
			kept->data = (unsigned char *)bytes + BLOCK_HEADER_SIZE;
			kept->len = (size_t)len;
			*buf = kept;
			kept = NULL;
			if (rc != ERR_OK) {
				/* Not cached, but every byte is here: serve
				 * them from memory. */
				kept_not_cached(f, r, r->key, r->index, rc, err->msg);
				error_clear(err);
				rc = ERR_OK;
			}
		}
		buffer_put(kept);
	}
	sink->w = NULL;
	if (rc == ERR_NO_SPACE && !sink->mem) {
		/* the commit found the disk full: its bytes are gone with
		 * the writer, the store was asked once */
		disk_full(f, r, err->msg);
	}
	if (sink->mem) {
		*buf = sink->mem;
		sink->mem = NULL;
		if (rc == ERR_OK) {
			atomic_fetch_add(&f->not_admitted, 1);
			disk_full(f, r, sink->err.msg);
		}
	}
	return rc;
}

/* --- write-behind ------------------------------------------------------- */

/*
 * Serves a block whose transfer ended from the bytes its writer kept, and
 * queues the writer for a committer (fetch_config.write_behind). The
 * flight is done for its waiters (they get the bytes) but stays listed
 * until the commit, so that a reader who misses the block meanwhile finds
 * the bytes rather than a block being written. Returns false, with
 * nothing changed, when the writer kept no bytes or the queue is full:
 * the caller commits. On true the flight and the writer are the
 * committer's.
 */
static bool write_behind(struct fetcher *f, const struct block_req *r, struct flight *fl,
			 struct blockstore_writer *w, struct fetch_result *out)
{
	struct commit_job *j = NULL;
	struct fetch_buffer *kept = NULL;
	uint64_t len = 0;
	const void *data = blockstore_write_kept(w, &len);
	bool room;

	if (!data || !f->write_behind)
		return false;
	pthread_mutex_lock(&f->mu);
	room = !f->stopping && f->commit_len < f->write_behind;
	if (room)
		f->commit_len++;
	pthread_mutex_unlock(&f->mu);
	if (!room)
		return false;
	j = calloc(1, sizeof(*j));
	kept = buffer_for_bytes();
	if (j)
		j->key = strdup(r->key);
	if (!j || !kept || !j->key) {
		if (j)
			free(j->key);
		free(j);
		free(kept);
		pthread_mutex_lock(&f->mu);
		f->commit_len--;
		pthread_mutex_unlock(&f->mu);
		return false;
	}
	/* The writer's own buffer: its owner becomes this fetch_buffer at
	 * the commit (mem set there), while the job holds a reference. */
	kept->data = (unsigned char *)data;
	kept->len = (size_t)len;
	j->w = w;
	j->fl = fl;
	j->kept = kept;
	j->ds = r->ds;
	atomic_fetch_add(&r->ds->refs, 1);
	j->index = r->index;
	atomic_fetch_add(&kept->refs, 2); /* the flight's and the reader's */
	recent_add(f, r->hash, kept);
	pthread_mutex_lock(&f->mu);
	fl->buf = kept;
	fl->done = true;
	pthread_cond_broadcast(&fl->cv);
	if (f->commit_tail)
		f->commit_tail->next = j;
	else
		f->commit_head = j;
	f->commit_tail = j;
	pthread_cond_signal(&f->commit_cv);
	pthread_mutex_unlock(&f->mu);
	out->buf = kept;
	atomic_fetch_add(&f->written_behind, 1);
	return true;
}

static void commit_one(struct fetcher *f, struct commit_job *j)
{
	struct block_req r = { .ds = j->ds, .key = j->key, .index = j->index };
	struct error err;
	void *bytes = NULL;
	enum error_code rc;

	error_clear(&err);
	if (f->before_commit)
		f->before_commit(f->before_commit_arg);
	rc = blockstore_write_commit_bytes(f->bs, j->w, NULL, &bytes, &j->kept->room, &err);
	/* The buffer the readers hold, handed over whether or not the commit
	 * succeeded (blockstore_write_commit_bytes): freed with its last
	 * reference from now on. */
	j->kept->mem = bytes;
	j->kept->bs = f->bs;
	if (rc != ERR_OK)
		kept_not_cached(f, &r, j->key, j->index, rc, err.msg);
	flight_end(f, j->fl);
	pthread_mutex_lock(&f->mu);
	f->commit_len--;
	pthread_mutex_unlock(&f->mu);
	buffer_put(j->kept);
	fetch_dataset_put(f, j->ds);
	free(j->key);
	free(j);
}

/* A committer: commits queued writers until stopping and none is left. */
static void *committer_thread(void *arg)
{
	struct fetcher *f = arg;

	for (;;) {
		struct commit_job *j;

		pthread_mutex_lock(&f->mu);
		while (!f->commit_head && !f->stopping)
			pthread_cond_wait(&f->commit_cv, &f->mu);
		j = f->commit_head;
		if (j) {
			f->commit_head = j->next;
			if (!f->commit_head)
				f->commit_tail = NULL;
		}
		pthread_mutex_unlock(&f->mu);
		if (!j)
			return NULL;
		commit_one(f, j);
	}
}

/*
 * The leader's part: one store fetch into the cache (or into memory when
 * the cache refuses the block), its outcome recorded in fl for the
 * waiters. Returns the leader's own result in *out.
 */
static enum error_code lead(struct fetcher *f, struct block_req *r, bool cache_only,
			    bool memory_only, struct flight *fl, struct fetch_result *out,
			    bool *behind, struct error *err)
{
	struct blockstore_writer *w = NULL;
	struct blockstore_ref *ref = NULL;
	struct fetch_buffer *buf = NULL;
	const uint64_t bs = r->ds->desc.block_size;
	uint64_t delivered = 0;
	enum error_code rc;
	double t0;

	*behind = false;
	rc = slot_acquire(f, r, cache_only, err);
	if (rc != ERR_OK)
		return rc;
	if (memory_only)
		rc = error_set(err, ERR_IO, "the cached copy cannot be opened");
	else
		rc = blockstore_write_begin_expect(f->bs, &r->bkey, r->ds->name, bs,
						   block_expect(r), &w, err);
	if (rc == ERR_EXISTS) {
		/* Committed by a flight that ended between our lookup and ours. */
		slot_release(f, cache_only);
		error_clear(err);
		fl->cached = true;
		return ERR_EXISTS;
	}
	if (rc != ERR_OK && cache_only) {
		/* Read-ahead and preload only fill the cache; a waiter that
		 * needs the bytes fetches them itself. */
		slot_release(f, cache_only);
		fl->not_fetched = true;
		return error_wrap(err, "dataset '%s' object '%s' block %llu", r->ds->name, r->key,
				  (unsigned long long)r->index);
	}
	if (rc == ERR_NO_SPACE) {
		atomic_fetch_add(&f->not_admitted, 1);
		if (strstr(err->msg, strerror(ENOSPC)) || strstr(err->msg, strerror(EDQUOT)))
			disk_full(f, r, err->msg);
	} else if (rc != ERR_OK) {
		/* A cache directory in trouble must not fail reads: serve
		 * from memory and say why, at most once per 10 s. */
		log_limited_warn(&f->nocache_log, "cannot cache block, serving it from memory",
				 LOG_S("dataset", r->ds->name), LOG_S("object", r->key),
				 LOG_U("block", r->index), LOG_S("cause", err->msg));
		rc = ERR_NO_SPACE;
	}

	t0 = retry_now_s();
	atomic_fetch_add(&f->fetches, 1);
	if (rc == ERR_NO_SPACE) {
		size_t got = 0;

		error_clear(err);
		buf = buffer_new(bs);
		if (!buf) {
			slot_release(f, cache_only);
			return error_set(err, ERR_NOMEM, "dataset '%s' object '%s' block %llu: out of memory",
					 r->ds->name, r->key, (unsigned long long)r->index);
		}
		rc = store_get_until(r->ds->store, r->full, r->index * bs, (size_t)bs, buf->data,
				     &got, r->etag, r->until_ms, err);
		buf->len = got;
		delivered = got;
	} else {
		struct sink_ctx sink = { .f = f, .w = w, .block_size = bs };

		error_clear(&sink.err);
		rc = store_get_stream_until(r->ds->store, r->full, r->index * bs, bs, sink_to_cache,
					    &sink, r->etag, r->until_ms, &delivered, err);
		if (rc == ERR_IO && sink.err.code != ERR_OK && sink.err.code != ERR_NO_SPACE) {
			/* The sink stopped it (a cache write failed, or stopping),
			 * not the store. */
			*err = sink.err;
			rc = sink.err.code;
		}
		*behind = rc == ERR_OK && !sink.mem && write_behind(f, r, fl, w, out);
		if (!*behind)
			rc = block_finish(f, r, &sink, delivered, rc, &buf, &ref, err);
		w = NULL;
	}
	metrics_histogram_observe(&f->latency, retry_now_s() - t0);
	atomic_fetch_add(&f->store_bytes, delivered);
	slot_release(f, cache_only);
	if (*behind)
		return ERR_OK; /* fl and err are the committer's now */

	if (rc != ERR_OK) {
		buffer_put(buf);
		fetch_failed(f, r, err);
		return rc;
	}
	if (buf) {
		atomic_fetch_add(&buf->refs, 1);
		fl->buf = buf;
		out->buf = buf;
		recent_add(f, r->hash, buf);
		return ERR_OK;
	}
	fl->cached = true;
	out->ref = ref;
	return ERR_OK;
}

/*
 * Finds or fetches one block. cache_only: give up with ERR_NO_SPACE
 * rather than fetch a block the cache refuses (read-ahead, preload).
 * *fetched tells whether this call made the store fetch.
 */
static enum error_code get_block(struct fetcher *f, struct block_req *r, bool cache_only,
				 struct fetch_result *out, bool *fetched, struct error *err)
{
	bool waited = false;
	enum error_code rc;

	memset(out, 0, sizeof(*out));
	*fetched = false;
	for (int round = 0; round < MAX_ROUNDS; round++) {
		struct blockstore_ref *ref = NULL;
		struct flight *fl;
		enum error_code grc;
		bool behind = false;

		/* Just fetched: the bytes are in memory (RECENT_BLOCKS). The
		 * read counts for the cache as a lookup would. */
		if (!cache_only) {
			struct fetch_buffer *buf;

			pthread_mutex_lock(&f->mu);
			buf = recent_find_locked(f, r->hash);
			pthread_mutex_unlock(&f->mu);
			if (buf) {
				blockstore_touch(f->bs, r->hash);
				out->buf = buf;
				out->hit = !waited;
				return ERR_OK;
			}
		}
		/* Read-ahead and preload are not reads: they must not raise a
		 * block's frequency, or they would win admission over blocks
		 * that real readers want (fetch.h). */
		grc = blockstore_lookup(f->bs, r->hash, !cache_only, &ref);

		/* Cached but its file cannot be opened (out of descriptors?):
		 * the reader still gets the bytes, from the store. */
		if (grc == ERR_IO && cache_only)
			return error_set(err, ERR_IO, "dataset '%s' object '%s' block %llu: cannot open the cached copy",
					 r->ds->name, r->key, (unsigned long long)r->index);
		/* Served as it is: whoever reads the bytes checks them against
		 * the block's chunk checksums (fetch.h), and a corrupt block
		 * comes back through fetch_recheck. */
		if (grc == ERR_OK) {
			out->ref = ref;
			out->hit = !waited;
			return ERR_OK;
		}

		pthread_mutex_lock(&f->mu);
		fl = flight_find(f, r->hash);
		if (fl) {
			struct fetch_buffer *buf = NULL;
			bool retry;

			fl->refs++;
			while (!fl->done) {
				/* The fetch goes on for whoever else waits;
				 * this reader stops at its own deadline. */
				if (wait_until(&fl->cv, &f->mu, r->until_ms) == ETIMEDOUT) {
					flight_put_locked(fl);
					pthread_mutex_unlock(&f->mu);
					return deadline_passed(r, "waiting for its fetch", err);
				}
			}
			rc = fl->err.code;
			retry = fl->cached || fl->not_fetched || rc == ERR_EXISTS;
			if (fl->buf) {
				buf = fl->buf;
				atomic_fetch_add(&buf->refs, 1);
			} else if (!retry && rc != ERR_OK) {
				*err = fl->err;
			}
			flight_put_locked(fl);
			pthread_mutex_unlock(&f->mu);
			waited = true;
			if (buf) {
				out->buf = buf;
				return ERR_OK;
			}
			if (retry)
				continue;
			return rc;
		}
		fl = flight_new_locked(f, r->hash);
		pthread_mutex_unlock(&f->mu);
		if (!fl)
			return error_set(err, ERR_NOMEM, "fetch: out of memory");

		error_clear(&fl->err);
		rc = lead(f, r, cache_only, grc == ERR_IO, fl, out, &behind, &fl->err);
		if (behind) {
			*fetched = true;
			return ERR_OK;
		}
		fl->err.code = rc;
		*err = fl->err;

		flight_end(f, fl);

		if (rc == ERR_EXISTS) {
			error_clear(err);
			continue;
		}
		if (rc == ERR_OK)
			*fetched = true;
		return rc;
	}
	return error_set(err, ERR_UNAVAILABLE,
			 "dataset '%s' object '%s' block %llu: evicted again and again before it could be served (cache too small for the load?)",
			 r->ds->name, r->key, (unsigned long long)r->index);
}

/* --- read-ahead ---------------------------------------------------------- */

static void ra_job_free(struct fetcher *f, struct ra_job *j)
{
	fetch_dataset_put(f, j->ds);
	free(j->key);
	free(j->etag);
	free(j);
}

/* The most blocks one read-ahead GET fetches for a dataset. */
static size_t run_max(const struct fetcher *f, const struct fetch_dataset *ds)
{
	uint64_t n = f->coalesce_bytes / ds->desc.block_size;

	if (n < 1)
		return 1;
	return n > FETCH_COALESCE_BLOCKS ? FETCH_COALESCE_BLOCKS : (size_t)n;
}

/* Whether read-ahead has block r to fetch: not held, queued or in flight. */
static bool readahead_wanted(struct fetcher *f, const struct block_req *r)
{
	struct ra_job *q = NULL;
	bool wanted;

	/* held already: nothing to queue, allocate or lock for */
	if (blockstore_has(f->bs, r->hash))
		return false;
	pthread_mutex_lock(&f->mu);
	HASH_FIND(hh, f->ra_set, r->hash, BLOCK_HASH_LEN, q);
	wanted = !q && !flight_find(f, r->hash) && !f->stopping;
	pthread_mutex_unlock(&f->mu);
	return wanted;
}

/*
 * Queues read-ahead jobs for blocks want[0..nwant) of r's object (their
 * hashes in hashes), skipping those queued already; counts what it queued
 * and what a full queue dropped.
 */
static void ra_enqueue(struct fetcher *f, const struct block_req *r, const uint64_t *want,
		       uint8_t (*hashes)[BLOCK_HASH_LEN], unsigned nwant)
{
	struct ra_job *jobs[256];
	unsigned queued = 0, dropped = 0;

	if (nwant > sizeof(jobs) / sizeof(jobs[0]))
		nwant = sizeof(jobs) / sizeof(jobs[0]);
	/* The jobs first, then the batch into the queue at once: a busy
	 * read-ahead thread taking its first job before the others are in
	 * would fetch it alone. */
	for (unsigned i = 0; i < nwant; i++) {
		struct ra_job *j = calloc(1, sizeof(*j));

		if (j) {
			j->key = strdup(r->key);
			j->etag = strdup(r->etag);
		}
		if (!j || !j->key || !j->etag) {
			if (j) {
				free(j->key);
				free(j->etag);
			}
			free(j);
			nwant = i;
			break;
		}
		atomic_fetch_add(&r->ds->refs, 1);
		j->ds = r->ds;
		j->size = r->size;
		j->index = want[i];
		memcpy(j->hash, hashes[i], BLOCK_HASH_LEN);
		jobs[i] = j;
	}
	pthread_mutex_lock(&f->mu);
	for (unsigned i = 0; i < nwant; i++) {
		struct ra_job *j = jobs[i], *q = NULL;

		HASH_FIND(hh, f->ra_set, j->hash, BLOCK_HASH_LEN, q);
		if (q || f->stopping || f->ra_len >= FETCH_READAHEAD_QUEUE) {
			/* queued by another reader meanwhile, or full */
			if (!q && !f->stopping)
				dropped++;
			continue;
		}
		HASH_ADD(hh, f->ra_set, hash, BLOCK_HASH_LEN, j);
		if (f->ra_tail)
			f->ra_tail->next = j;
		else
			f->ra_head = j;
		f->ra_tail = j;
		f->ra_len++;
		jobs[i] = NULL;
		queued++;
	}
	/* One wake-up for the batch: it is one GET. None at the limit: the
	 * next thread to finish a job takes it. */
	if (queued && f->ra_active < f->ra_ctl.limit)
		pthread_cond_signal(&f->ra_cv);
	else if (queued)
		f->win_queued = true;
	pthread_mutex_unlock(&f->mu);
	for (unsigned i = 0; i < nwant; i++)
		if (jobs[i])
			ra_job_free(f, jobs[i]);
	atomic_fetch_add(&f->ra_queued, queued);
	atomic_fetch_add(&f->ra_dropped, dropped);
}

/*
 * Queues the blocks of the n after r->index that nobody holds, queues or
 * fetches. With coalescing, a reader's window is topped up in batches of
 * at least half of it (or at once when the very next block is missing),
 * so that the blocks queued together lie together and go in one GET; one
 * block at a time would make one GET each.
 */
static void readahead_queue(struct fetcher *f, const struct block_req *r, unsigned n)
{
	uint64_t want[256];
	uint8_t hashes[256][BLOCK_HASH_LEN];
	unsigned nwant = 0;
	bool next_missing = false;
	const bool batch = run_max(f, r->ds) > 1;

	if (n > f->readahead_max)
		n = f->readahead_max;
	if (n > sizeof(want) / sizeof(want[0]))
		n = sizeof(want) / sizeof(want[0]);
	for (unsigned i = 1; i <= n; i++) {
		struct block_req next;

		if (block_req_init(&next, r->ds, r->key, r->etag, r->size, r->index + i, NULL) !=
		    ERR_OK)
			break;
		if (!readahead_wanted(f, &next))
			continue;
		if (i == 1)
			next_missing = true;
		memcpy(hashes[nwant], next.hash, BLOCK_HASH_LEN);
		want[nwant++] = r->index + i;
	}
	if (nwant == 0 || (batch && !next_missing && 2 * nwant < n))
		return;
	ra_enqueue(f, r, want, hashes, nwant);
}

/* Takes j out of the queue. Called with mu. */
static void readahead_unlink_locked(struct fetcher *f, struct ra_job *j)
{
	struct ra_job **p = &f->ra_head, *prev = NULL;

	while (*p && *p != j) {
		prev = *p;
		p = &(*p)->next;
	}
	if (!*p)
		return;
	*p = j->next;
	if (f->ra_tail == j)
		f->ra_tail = prev;
	j->next = NULL;
	f->ra_len--;
	HASH_DEL(f->ra_set, j);
}

/* After ERR_RANGE the object ends before job's block: later blocks of the
 * same object need no request each to learn the same. Called with mu. */
static void readahead_drop_after(struct fetcher *f, const struct ra_job *job,
				 struct ra_job **dropped)
{
	struct ra_job **p = &f->ra_head, *prev = NULL;

	while (*p) {
		struct ra_job *q = *p;

		if (q->ds == job->ds && q->index > job->index && strcmp(q->key, job->key) == 0 &&
		    strcmp(q->etag, job->etag) == 0) {
			*p = q->next;
			if (f->ra_tail == q)
				f->ra_tail = prev;
			f->ra_len--;
			HASH_DEL(f->ra_set, q);
			q->next = *dropped;
			*dropped = q;
			continue;
		}
		prev = q;
		p = &q->next;
	}
}

/* --- coalesced read-ahead ------------------------------------------------ */

/* One block of a coalesced GET. */
struct run_block {
	struct block_req *r;
	struct flight *fl;          /* claimed: led by the run */
	struct sink_ctx sink;       /* its writer, from its first byte */
	uint64_t got;               /* bytes of it received */
	bool begun;                 /* a writer is open, or skip */
	bool skip;                  /* cached meanwhile: its bytes are dropped */
};

/* The transfer of one coalesced GET, block after block. */
struct run_ctx {
	struct fetcher *f;
	struct run_block *b;
	size_t n, cur;              /* blocks; the one receiving bytes */
	uint64_t block_size;
	bool refused;               /* the cache refused block cur */
	struct error err;           /* why the sink stopped the transfer */
};

/*
 * Claims the flights of the longest run of reqs, from the first, that the
 * cache does not hold, nobody fetches and the cache would admit as a
 * whole (blockstore_admits: a block refused after the GET began would
 * cut it short, the bytes the store sent for the rest wasted); returns
 * its length (0: the first is held, in flight or not admitted).
 */
static size_t run_claim(struct fetcher *f, struct block_req *reqs, size_t n, struct run_block *b)
{
	size_t k;

	for (k = 0; k < n; k++) {
		struct flight *fl = NULL;

		if (blockstore_has(f->bs, reqs[k].hash) ||
		    !blockstore_admits(f->bs, reqs[k].hash, reqs[k].ds->name,
				       reqs[k].ds->desc.block_size, (unsigned)k + 1))
			break;
		pthread_mutex_lock(&f->mu);
		if (!f->stopping && !flight_find(f, reqs[k].hash))
			fl = flight_new_locked(f, reqs[k].hash);
		pthread_mutex_unlock(&f->mu);
		if (!fl)
			break;
		b[k] = (struct run_block){ .r = &reqs[k], .fl = fl };
	}
	return k;
}

/* Opens block b's writer. A refusal stops the run there (read-ahead
 * only fills the cache); a block cached meanwhile is skipped. */
static int run_begin(struct run_ctx *c, struct run_block *b)
{
	struct blockstore_writer *w = NULL;
	struct error e;
	enum error_code rc;

	rc = blockstore_write_begin_expect(c->f->bs, &b->r->bkey, b->r->ds->name, c->block_size,
					   block_expect(b->r), &w, &e);
	if (rc == ERR_EXISTS) {
		b->begun = b->skip = true;
		return 0;
	}
	if (rc != ERR_OK) {
		c->refused = true;
		c->err = e;
		return -1;
	}
	b->sink = (struct sink_ctx){ .f = c->f, .w = w, .block_size = c->block_size };
	error_clear(&b->sink.err);
	b->begun = true;
	atomic_fetch_add(&c->f->fetches, 1);
	return 0;
}

/*
 * Ends block b's flight with rc: commits its bytes (ERR_OK), or fails it
 * with cause. not_fetched: the run never got to it; its waiters fetch it
 * themselves.
 */
static void run_end_block(struct run_ctx *c, struct run_block *b, enum error_code rc,
			  const struct error *cause, bool not_fetched)
{
	struct fetcher *f = c->f;
	struct flight *fl = b->fl;
	struct fetch_buffer *buf = NULL;
	struct blockstore_ref *ref = NULL;
	struct error err;

	if (cause)
		err = *cause;
	else
		error_clear(&err);
	if (b->begun && !b->skip)
		rc = block_finish(f, b->r, &b->sink, b->got, rc, &buf, &ref, &err);
	if (rc == ERR_OK) {
		if (buf) {
			fl->buf = buf; /* the flight's reference */
			recent_add(f, b->r->hash, buf);
		} else {
			if (ref)
				blockstore_ref_put(f->bs, ref);
			fl->cached = true;
		}
		if (!b->skip)
			atomic_fetch_add(&f->ra_fetched, 1);
		error_clear(&fl->err);
	} else if (not_fetched) {
		fl->not_fetched = true;
		fl->err = err;
	} else {
		buffer_put(buf);
		if (rc != ERR_RANGE)
			fetch_failed(f, b->r, &err);
		fl->err = err;
	}
	fl->err.code = rc;
	flight_end(f, fl);
	if (rc == ERR_OK && !b->skip && f->run_block_done)
		f->run_block_done(b->r->index, f->run_block_done_arg);
}

/* store_sink_fn of a coalesced GET: cuts the bytes into blocks, and
 * commits each as soon as it is whole, so that its readers need not wait
 * for the rest of the run. */
static int sink_to_run(const void *data, size_t len, void *arg)
{
	struct run_ctx *c = arg;
	const unsigned char *p = data;

	while (len > 0) {
		struct run_block *b;
		size_t take;

		if (c->cur >= c->n) {
			error_set(&c->err, ERR_IO, "the store sent more than was asked for");
			return -1;
		}
		b = &c->b[c->cur];
		if (!b->begun && run_begin(c, b) != 0)
			return -1;
		take = len < c->block_size - b->got ? len : (size_t)(c->block_size - b->got);
		if (!b->skip && sink_to_cache(p, take, &b->sink) != 0) {
			c->err = b->sink.err;
			return -1;
		}
		b->got += take;
		p += take;
		len -= take;
		if (b->got == c->block_size) {
			run_end_block(c, b, ERR_OK, NULL, false);
			c->cur++;
		}
	}
	return 0;
}

/*
 * Read-ahead's leader for n consecutive blocks of one object, their
 * flights claimed (run_claim): one ranged GET for all of them, holding
 * one fetch slot, each block committed and its flight ended as soon as
 * its bytes are in. When the GET fails, the block it failed in ends with
 * the error and the blocks after it end unfetched: their waiters fetch
 * them. Returns the position of the first block past the end of the
 * object, or n.
 */
static size_t lead_run(struct fetcher *f, struct run_block *b, size_t n)
{
	const struct block_req *r0 = b[0].r;
	struct run_ctx c = { .f = f, .b = b, .n = n, .block_size = r0->ds->desc.block_size };
	uint64_t delivered = 0;
	size_t past_end = n;
	struct error err;
	enum error_code rc;
	double t0;

	error_clear(&c.err);
	error_clear(&err);
	/* The first writer before the GET: a cache that refuses the run
	 * costs no request. */
	if (run_begin(&c, &b[0]) != 0) {
		rc = c.err.code;
		err = c.err;
	} else {
		rc = slot_acquire(f, r0, true, &err);
	}
	if (rc == ERR_OK) {
		t0 = retry_now_s();
		if (n > 1)
			atomic_fetch_add(&f->coalesced_gets, 1);
		rc = store_get_stream_until(r0->ds->store, r0->full, r0->index * c.block_size,
					    n * c.block_size, sink_to_run, &c, r0->etag, 0,
					    &delivered, &err);
		if (rc == ERR_IO && c.err.code != ERR_OK) {
			/* The sink stopped it (a refusal, a cache write
			 * failed, or stopping), not the store. */
			err = c.err;
			rc = c.err.code;
		}
		metrics_histogram_observe(&f->latency, retry_now_s() - t0);
		atomic_fetch_add(&f->store_bytes, delivered);
		slot_release(f, true);
	}
	for (size_t k = c.cur; k < n; k++) {
		struct run_block *bk = &b[k];

		if (rc == ERR_OK && bk->begun) {
			run_end_block(&c, bk, ERR_OK, NULL, false); /* the short last block */
		} else if (rc == ERR_OK || rc == ERR_RANGE) {
			struct error range;

			error_set(&range, ERR_RANGE, "dataset '%s' object '%s': block %llu is past the end",
				  bk->r->ds->name, bk->r->key, (unsigned long long)bk->r->index);
			if (past_end == n)
				past_end = k;
			run_end_block(&c, bk, ERR_RANGE, &range, false);
		} else if (k == c.cur && !c.refused) {
			run_end_block(&c, bk, rc, &err, false);
		} else {
			run_end_block(&c, bk, rc, &err, true);
		}
	}
	return past_end;
}

/* One job that no run could take (held, or in flight for another
 * leader): as a single read-ahead fetch. Returns its result. */
static enum error_code readahead_one(struct fetcher *f, struct block_req *r)
{
	struct fetch_result res;
	struct error err;
	bool fetched = false;
	enum error_code rc;

	rc = get_block(f, r, true, &res, &fetched, &err);
	if (rc == ERR_OK) {
		if (fetched)
			atomic_fetch_add(&f->ra_fetched, 1);
		fetch_result_release(f, &res);
	} else if (rc != ERR_RANGE && rc != ERR_NO_SPACE && rc != ERR_CANCELLED) {
		log_debug("read-ahead failed", LOG_S("cause", err.msg));
	}
	return rc;
}

/*
 * Takes from the queue the jobs for the blocks right after j's (same
 * object and version) into jobs[1..]; jobs[0] is j. reqs[k] gets the
 * lookup of jobs[k]. Returns how many jobs there are, 0 when j's block
 * cannot be looked up.
 */
static size_t readahead_take_run(struct fetcher *f, struct ra_job *j, struct ra_job **jobs,
				 struct block_req *reqs, size_t max)
{
	size_t n = 0;

	while (n < max && block_req_init(&reqs[n], j->ds, j->key, j->etag, j->size, j->index + n,
					 NULL) == ERR_OK)
		n++;
	if (n == 0)
		return 0;
	jobs[0] = j;
	pthread_mutex_lock(&f->mu);
	for (size_t k = 1; k < n; k++) {
		struct ra_job *q = NULL;

		HASH_FIND(hh, f->ra_set, reqs[k].hash, BLOCK_HASH_LEN, q);
		if (!q) {
			n = k;
			break;
		}
		readahead_unlink_locked(f, q);
		jobs[k] = q;
	}
	pthread_mutex_unlock(&f->mu);
	return n;
}

/*
 * Counts jobs done (a read-ahead thread's last round) and, once a window
 * of INFLIGHT_WINDOW_MS is over, has the limit adjusted by it: a window
 * that spans a pause (no job done for several windows) tells nothing of
 * the limit and is passed over. Called with f->mu held.
 */
static void ra_window_locked(struct fetcher *f, size_t jobs)
{
	const unsigned before = f->ra_ctl.limit;
	uint64_t now, span;

	if (f->ra_ctl.cap == f->ra_ctl.floor)
		return;
	now = retry_now_ms();
	f->win_jobs += jobs;
	span = now - f->win_start_ms;
	if (span < INFLIGHT_WINDOW_MS)
		return;
	if (span < 4 * INFLIGHT_WINDOW_MS) {
		const double rate = (double)f->win_jobs * 1000 / (double)span;

		atomic_store(&f->ra_limit, inflight_window(&f->ra_ctl, rate, f->win_queued));
		if (f->ra_ctl.limit != before)
			log_debug("read-ahead limit changed", LOG_U("from", before),
				  LOG_U("to", f->ra_ctl.limit), LOG_U("blocks_per_s", (uint64_t)rate),
				  LOG_U("queued", f->win_queued));
	}
	f->win_start_ms = now;
	f->win_jobs = 0;
	f->win_queued = false;
	if (f->ra_ctl.limit > before)
		pthread_cond_broadcast(&f->ra_cv);
}

static void *readahead_thread(void *arg)
{
	struct fetcher *f = arg;
	struct ra_job *jobs[FETCH_COALESCE_BLOCKS];
	struct block_req *reqs = calloc(FETCH_COALESCE_BLOCKS, sizeof(*reqs));
	struct run_block *blocks = calloc(FETCH_COALESCE_BLOCKS, sizeof(*blocks));
	size_t done = 0; /* jobs of the last round, not yet counted */

	for (;;) {
		struct ra_job *j, *dropped = NULL;
		size_t n, s = 0;

		pthread_mutex_lock(&f->mu);
		if (done) {
			f->ra_active--;
			ra_window_locked(f, done);
			done = 0;
		}
		while (!f->stopping && (!f->ra_head || f->ra_active >= f->ra_ctl.limit)) {
			if (f->ra_head)
				f->win_queued = true;
			pthread_cond_wait(&f->ra_cv, &f->mu);
		}
		if (f->stopping) {
			pthread_mutex_unlock(&f->mu);
			break;
		}
		j = f->ra_head;
		readahead_unlink_locked(f, j);
		f->ra_active++;
		pthread_mutex_unlock(&f->mu);

		/* Without memory for a run, one block at a time. */
		n = reqs && blocks ? readahead_take_run(f, j, jobs, reqs, run_max(f, j->ds)) : 0;
		if (n == 0) {
			struct block_req r;

			if (block_req_init(&r, j->ds, j->key, j->etag, j->size, j->index, NULL) ==
				    ERR_OK &&
			    readahead_one(f, &r) == ERR_RANGE) {
				pthread_mutex_lock(&f->mu);
				readahead_drop_after(f, j, &dropped);
				pthread_mutex_unlock(&f->mu);
			}
			jobs[0] = j;
			n = 1;
			s = n;
		}
		while (s < n) {
			size_t k = run_claim(f, reqs + s, n - s, blocks);
			size_t past_end;

			if (k == 0) {
				past_end = readahead_one(f, &reqs[s]) == ERR_RANGE ? 0 : 1;
				k = 1;
			} else {
				past_end = lead_run(f, blocks, k);
			}
			if (past_end < k) {
				/* The object ends before: so do the jobs after. */
				pthread_mutex_lock(&f->mu);
				readahead_drop_after(f, jobs[s + past_end], &dropped);
				pthread_mutex_unlock(&f->mu);
				break;
			}
			s += k;
		}
		while (dropped) {
			struct ra_job *next = dropped->next;

			ra_job_free(f, dropped);
			dropped = next;
		}
		for (size_t k = 0; k < n; k++)
			ra_job_free(f, jobs[k]);
		done = n;
	}
	free(reqs);
	free(blocks);
	return NULL;
}

/* --- public -------------------------------------------------------------- */

enum error_code fetch_block(struct fetcher *f, struct fetch_dataset *ds, const char *key,
			    const char *etag, uint64_t index, unsigned readahead,
			    struct fetch_result *out, struct error *err)
{
	return fetch_block_until(f, ds, key, etag, 0, index, readahead, 0, out, err);
}

enum error_code fetch_block_until(struct fetcher *f, struct fetch_dataset *ds, const char *key,
				  const char *etag, uint64_t size, uint64_t index,
				  unsigned readahead, uint64_t until_ms, struct fetch_result *out,
				  struct error *err)
{
	struct block_req r;
	enum error_code rc;
	bool fetched;

	memset(out, 0, sizeof(*out));
	rc = block_req_init(&r, ds, key, etag, size, index, err);
	if (rc != ERR_OK)
		return rc;
	r.until_ms = until_ms;
	rc = get_block(f, &r, false, out, &fetched, err);
	if (rc != ERR_OK)
		return rc;
	atomic_fetch_add(out->hit ? &f->hits : &f->misses, 1);
	/* A short block is the last one: nothing to read ahead. */
	if (readahead > 0 && fetch_result_length(out) == ds->desc.block_size)
		readahead_queue(f, &r, readahead);
	return ERR_OK;
}

bool fetch_block_cached(struct fetcher *f, struct fetch_dataset *ds, const char *key,
			const char *etag, uint64_t index)
{
	struct block_req r;
	struct error err;

	return block_req_init(&r, ds, key, etag, 0, index, &err) == ERR_OK &&
	       blockstore_has(f->bs, r.hash);
}

enum error_code fetch_recheck(struct fetcher *f, struct fetch_dataset *ds, const char *key,
			     const char *etag, uint64_t index, bool *dropped, struct error *err)
{
	struct blockstore_ref *ref = NULL;
	struct block_req r;
	enum error_code rc;

	*dropped = false;
	rc = block_req_init(&r, ds, key, etag, 0, index, err);
	if (rc != ERR_OK)
		return rc;
	if (blockstore_lookup(f->bs, r.hash, false, &ref) != ERR_OK)
		return ERR_OK; /* not cached (any more): the next read fetches it */
	rc = blockstore_ref_verify(f->bs, ref, dropped, err);
	blockstore_ref_put(f->bs, ref);
	if (*dropped) {
		atomic_fetch_add(&f->corrupt_refetched, 1);
		error_clear(err);
		return ERR_OK;
	}
	if (rc != ERR_OK)
		return error_wrap(err, "dataset '%s' object '%s' block %llu", ds->name, key,
				  (unsigned long long)index);
	return ERR_OK;
}

enum error_code fetch_warm(struct fetcher *f, struct fetch_dataset *ds, const char *key,
			   const char *etag, uint64_t size, uint64_t index, bool *fetched,
			   struct error *err)
{
	struct fetch_result res;
	struct block_req r;
	enum error_code rc;
	bool did = false;

	if (fetched)
		*fetched = false;
	rc = block_req_init(&r, ds, key, etag, size, index, err);
	if (rc != ERR_OK)
		return rc;
	rc = get_block(f, &r, true, &res, &did, err);
	if (rc != ERR_OK)
		return rc;
	/* No reader waits for a preloaded block: its pages go now, its
	 * reader reads it from disk (block_file_drop). */
	if (did && res.ref)
		block_file_drop(blockstore_ref_fd(res.ref), 0, blockstore_ref_length(res.ref),
				blockstore_ref_length(res.ref));
	fetch_result_release(f, &res);
	if (fetched)
		*fetched = did;
	return ERR_OK;
}

unsigned fetch_readahead_limit(struct fetcher *f)
{
	return atomic_load(&f->ra_limit);
}

void fetch_prefetch(struct fetcher *f, struct fetch_dataset *ds, const char *key,
		    const char *etag, uint64_t size, uint64_t index)
{
	uint8_t hash[1][BLOCK_HASH_LEN];
	struct block_req r;

	if (f->readahead_max == 0 ||
	    block_req_init(&r, ds, key, etag, size, index, NULL) != ERR_OK ||
	    !readahead_wanted(f, &r))
		return;
	memcpy(hash[0], r.hash, BLOCK_HASH_LEN);
	ra_enqueue(f, &r, &index, hash, 1);
}

static unsigned min_u(unsigned a, unsigned b)
{
	return a < b ? a : b;
}

/* Starts n threads of fn on f into t, counting them in *started. */
static enum error_code start_threads(struct fetcher *f, pthread_t *t, unsigned n,
				     void *(*fn)(void *), unsigned *started, const char *what,
				     struct error *err)
{
	for (unsigned i = 0; i < n; i++) {
		int e = pthread_create(&t[i], NULL, fn, f);

		if (e != 0)
			return error_set(err, ERR_NOMEM, "fetch: cannot start a %s thread: %s", what,
					 strerror(e));
		(*started)++;
	}
	return ERR_OK;
}

enum error_code fetch_new(const struct fetch_config *cfg, struct fetcher **out, struct error *err)
{
	struct fetcher *f;

	*out = NULL;
	if (!cfg->bs || cfg->max_inflight < 1 || cfg->threads < 1)
		return error_set(err, ERR_INVALID,
				 "fetch: a blockstore, max_inflight >= 1 and threads >= 1 are required");
	f = calloc(1, sizeof(*f));
	if (!f)
		return error_set(err, ERR_NOMEM, "fetch: out of memory");
	f->bs = cfg->bs;
	f->max_inflight = cfg->max_inflight;
	f->readahead_max = cfg->readahead_max;
	/* Fixed at the pool's size unless told where to start and stop. */
	if (cfg->readahead_inflight && cfg->readahead_inflight_max) {
		inflight_init(&f->ra_ctl, min_u(cfg->readahead_inflight, cfg->threads),
			      min_u(cfg->readahead_inflight_max, cfg->threads));
		inflight_start_at(&f->ra_ctl, cfg->readahead_inflight_start);
	} else {
		inflight_init(&f->ra_ctl, cfg->threads, cfg->threads);
	}
	atomic_init(&f->ra_limit, f->ra_ctl.limit);
	f->coalesce_bytes = cfg->coalesce_bytes;
	f->write_behind = cfg->write_behind;
	f->no_recent = cfg->no_recent;
	f->before_commit = cfg->before_commit;
	f->before_commit_arg = cfg->before_commit_arg;
	f->run_block_done = cfg->run_block_done;
	f->run_block_done_arg = cfg->run_block_done_arg;
	f->file_roots = cfg->file_roots;
	f->nfile_roots = cfg->nfile_roots;
	f->any_file_source = cfg->any_file_source;
	f->default_endpoint = cfg->default_endpoint;
	f->allowed_endpoints = cfg->allowed_endpoints;
	f->any_endpoint = cfg->any_endpoint;
	pthread_mutex_init(&f->mu, NULL);
	pthread_mutex_init(&f->reg_mu, NULL);
	pthread_cond_init(&f->slot_cv, NULL);
	pthread_cond_init(&f->ra_cv, NULL);
	pthread_cond_init(&f->commit_cv, NULL);
	log_limiter_init(&f->disk_full_log, 10000, NULL, NULL);
	log_limiter_init(&f->nocache_log, 10000, NULL, NULL);
	if (metrics_histogram_init(&f->latency, fetch_latency_bounds, fetch_latency_nbounds) !=
	    ERR_OK) {
		free(f);
		return error_set(err, ERR_INTERNAL, "fetch: bad latency buckets");
	}
	f->threads = calloc(cfg->threads, sizeof(*f->threads));
	if (!f->threads) {
		fetch_free(f);
		return error_set(err, ERR_NOMEM, "fetch: out of memory");
	}
	if (start_threads(f, f->threads, cfg->threads, readahead_thread, &f->nthreads,
			  "read-ahead", err) != ERR_OK ||
	    start_threads(f, f->committers, f->write_behind ? COMMITTERS : 0, committer_thread,
			  &f->ncommitters, "committer", err) != ERR_OK) {
		fetch_free(f);
		return ERR_NOMEM;
	}
	*out = f;
	return ERR_OK;
}

void fetch_free(struct fetcher *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->mu);
	f->stopping = true;
	pthread_cond_broadcast(&f->ra_cv);
	pthread_cond_broadcast(&f->slot_cv);
	pthread_cond_broadcast(&f->commit_cv);
	pthread_mutex_unlock(&f->mu);
	for (unsigned i = 0; i < f->nthreads; i++)
		pthread_join(f->threads[i], NULL);
	free(f->threads);
	/* Committers end once the queue is empty: nothing is queued after
	 * stopping, so every writer is committed. */
	for (unsigned i = 0; i < f->ncommitters; i++)
		pthread_join(f->committers[i], NULL);
	HASH_CLEAR(hh, f->ra_set);
	while (f->ra_head) {
		struct ra_job *j = f->ra_head;

		f->ra_head = j->next;
		ra_job_free(f, j);
	}
	while (f->datasets) {
		struct fetch_dataset *ds = f->datasets;

		f->datasets = ds->next;
		fetch_dataset_put(f, ds);
	}
	for (unsigned i = 0; i < RECENT_BLOCKS; i++)
		buffer_put(f->recent[i].buf);
	metrics_histogram_release(&f->latency);
	pthread_cond_destroy(&f->ra_cv);
	pthread_cond_destroy(&f->commit_cv);
	log_limiter_release(&f->disk_full_log);
	log_limiter_release(&f->nocache_log);
	pthread_cond_destroy(&f->slot_cv);
	pthread_mutex_destroy(&f->reg_mu);
	pthread_mutex_destroy(&f->mu);
	free(f);
}

void fetch_cancel(struct fetcher *f)
{
	pthread_mutex_lock(&f->mu);
	atomic_store(&f->cancelled, true);
	pthread_cond_broadcast(&f->slot_cv);
	pthread_mutex_unlock(&f->mu);
}

void fetch_get_stats(struct fetcher *f, struct fetch_stats *out)
{
	uint64_t requests = 0, datasets = 0;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&f->reg_mu);
	requests = f->retired_requests;
	for (struct fetch_dataset *ds = f->all; ds; ds = ds->all_next) {
		struct store_stats st;

		store_get_stats(ds->store, &st);
		requests += st.requests;
	}
	for (struct fetch_dataset *ds = f->datasets; ds; ds = ds->next)
		datasets++;
	pthread_mutex_unlock(&f->reg_mu);
	pthread_mutex_lock(&f->mu);
	out->inflight = f->inflight;
	pthread_mutex_unlock(&f->mu);
	out->store_requests = requests;
	out->datasets = datasets;
	out->hits = atomic_load(&f->hits);
	out->misses = atomic_load(&f->misses);
	out->fetches = atomic_load(&f->fetches);
	out->fetch_errors = atomic_load(&f->fetch_errors);
	out->store_bytes = atomic_load(&f->store_bytes);
	out->not_admitted = atomic_load(&f->not_admitted);
	out->corrupt_refetched = atomic_load(&f->corrupt_refetched);
	out->readahead_queued = atomic_load(&f->ra_queued);
	out->readahead_fetched = atomic_load(&f->ra_fetched);
	out->readahead_dropped = atomic_load(&f->ra_dropped);
	out->coalesced_gets = atomic_load(&f->coalesced_gets);
	out->written_behind = atomic_load(&f->written_behind);
}

struct metrics_histogram *fetch_latency(struct fetcher *f)
{
	return &f->latency;
}

struct blockstore *fetch_blockstore(struct fetcher *f)
{
	return f->bs;
}
