/*
 * preload.c - warm-up jobs over fetch_warm with bounded parallelism.
 *
 * Blocks are handed out in listing order (object by object, block by
 * block), each with its number in that order, seq: a placed job keeps one
 * bit per seq, set for the blocks placed here, so that a block whose owner
 * changed since the split moves between blocks_total and blocks_elsewhere
 * once, when it is handed out.
 */
#include "cache/preload.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/array.h"
#include "common/log.h"

struct preload_object {
	char *key;          /* relative to the dataset prefix */
	char etag[80];
	uint64_t size;
};

struct job {
	struct job *next;                  /* protected by p->mu */
	struct preloader *p;
	struct fetch_dataset *ds;          /* held until the job ends */
	pthread_t thread;
	char **names;                      /* the objects asked for; NULL = all */
	size_t nnames;
	bool by_prefix;                    /* names are prefixes: the objects under them */
	/* With a placement: whose blocks this worker fetches, and one bit
	 * per block (seq) placed here at the split; read-only after it. */
	struct placement *members;         /* borrowed; NULL: every block */
	char *self;
	uint8_t *here;

	/* Set up by the job thread before the fetch threads start. */
	struct preload_object *objs;
	size_t nobjs, cap;
	/* Next block to hand out and its seq; protected by p->mu. */
	size_t cur_obj;
	uint64_t cur_block, cur_seq;

	struct preload_status st;          /* protected by p->mu */
	/* preload_cancel asked it to stop, and why; protected by p->mu. */
	bool cancelled;
	char cancel_why[ERROR_MSG_MAX];
};

struct preloader {
	struct fetcher *f;
	unsigned parallelism;
	struct store_list_limits limits;
	pthread_mutex_t mu;
	pthread_cond_t ended;              /* a job left PRELOAD_RUNNING */
	struct job *jobs;                  /* newest first; protected by mu */
	uint64_t next_id;                  /* protected by mu */
	bool stopping;                     /* protected by mu */
};

const char *preload_state_name(enum preload_state s)
{
	switch (s) {
	case PRELOAD_RUNNING:
		return "running";
	case PRELOAD_DONE:
		return "done";
	case PRELOAD_FAILED:
		return "failed";
	}
	return "unknown";
}

/* What a job needs only while it runs. */
static void job_release_work(struct job *j)
{
	for (size_t i = 0; i < j->nnames; i++)
		free(j->names[i]);
	free(j->names);
	j->names = NULL;
	j->nnames = 0;
	for (size_t i = 0; i < j->nobjs; i++)
		free(j->objs[i].key);
	free(j->objs);
	j->objs = NULL;
	j->nobjs = j->cap = 0;
	free(j->self);
	j->self = NULL;
	free(j->here);
	j->here = NULL;
	if (j->ds)
		fetch_dataset_put(j->p->f, j->ds);
	j->ds = NULL;
}

static void job_free(struct job *j)
{
	job_release_work(j);
	free(j);
}

bool preload_error_lasts(enum error_code code)
{
	switch (code) {
	case ERR_INVALID:
	case ERR_PERMISSION:
	case ERR_UNAUTHENTICATED:
	case ERR_NO_SPACE:
	case ERR_UNSUPPORTED:
		return true;
	default:
		return false;
	}
}

/* Takes the code of one more failure into j->st.code (see preload.h):
 * a job fails for good only when none of its failures may pass. Called
 * with p->mu held. */
static void job_code_locked(struct job *j, enum error_code code)
{
	if (j->st.code == ERR_OK ||
	    (preload_error_lasts(j->st.code) && !preload_error_lasts(code)))
		j->st.code = code;
}

/* Records one failure; keeps the first message. */
static void job_error(struct job *j, const struct error *err)
{
	struct preloader *p = j->p;

	pthread_mutex_lock(&p->mu);
	j->st.errors++;
	if (!j->st.error[0])
		snprintf(j->st.error, sizeof(j->st.error), "%s", err->msg);
	job_code_locked(j, err->code);
	pthread_mutex_unlock(&p->mu);
}

/* Whether the job should stop: the worker is stopping or the job was
 * cancelled. */
static bool job_stopped_locked(const struct job *j)
{
	return j->p->stopping || j->cancelled;
}

static bool job_stopped(struct job *j)
{
	bool stop;

	pthread_mutex_lock(&j->p->mu);
	stop = job_stopped_locked(j);
	pthread_mutex_unlock(&j->p->mu);
	return stop;
}

static enum error_code add_object(struct job *j, const char *key, const char *etag, uint64_t size)
{
	struct preload_object *o;

	if (array_grow((void **)&j->objs, &j->cap, j->nobjs + 1, sizeof(*j->objs)) < 0)
		return ERR_NOMEM;
	o = &j->objs[j->nobjs];
	o->key = strdup(key);
	if (!o->key)
		return ERR_NOMEM;
	snprintf(o->etag, sizeof(o->etag), "%s", etag);
	o->size = size;
	j->nobjs++;
	return ERR_OK;
}

static int listed(const struct store_object *obj, void *arg)
{
	struct job *j = arg;
	const char *prefix = fetch_dataset_describe(j->ds)->prefix;
	const char *rel = obj->key + strlen(prefix);
	struct error err;

	if (job_stopped(j))
		return 1;
	/* "dir/" markers hold no data; a key no client could ask for is
	 * reported, not fetched. */
	if (strncmp(obj->key, prefix, strlen(prefix)) != 0 || !*rel ||
	    (obj->size == 0 && rel[strlen(rel) - 1] == '/'))
		return 0;
	if (block_object_key_check(prefix, rel, &err) != ERR_OK) {
		job_error(j, &err);
		return 0;
	}
	if (obj->size > STORE_OBJECT_MAX) {
		error_set(&err, ERR_INVALID,
			  "object '%s' of %llu bytes: larger than any S3 object (5 TiB)", obj->key,
			  (unsigned long long)obj->size);
		job_error(j, &err);
		return 0;
	}
	return add_object(j, rel, obj->etag, obj->size) == ERR_OK ? 0 : 1;
}

/* Lists the objects under full (the dataset's prefix and more) into j. */
static enum error_code list_under(struct job *j, const char *full, struct error *err)
{
	const struct fetch_dataset_desc *d = fetch_dataset_describe(j->ds);
	enum error_code rc;

	rc = store_list_all_limited(fetch_dataset_store(j->ds), full, &j->p->limits, listed, j,
				    err);
	switch (rc) {
	case ERR_OK:
		return ERR_OK;
	case ERR_CANCELLED:
		return error_set(err, ERR_CANCELLED, "listing '%s' stopped", d->source);
	case ERR_NO_SPACE:
		return error_wrap(err, "list dataset '%s' (limits: listing.max_pages, "
				  "listing.max_objects)", d->name);
	case ERR_TIMEOUT:
		return error_wrap(err, "list dataset '%s' (limits: listing.max_time, "
				  "store.deadline)", d->name);
	default:
		return error_wrap(err, "list dataset '%s'", d->name);
	}
}

/* Whether prefix i lies under another one of the job's (listed already). */
static bool covered(const struct job *j, size_t i)
{
	for (size_t k = 0; k < j->nnames; k++) {
		size_t n = strlen(j->names[k]);

		if (k != i && strncmp(j->names[i], j->names[k], n) == 0 &&
		    (n < strlen(j->names[i]) || k < i))
			return true;
	}
	return false;
}

/* Fills j->objs from the listing (of the dataset, or of each prefix) or
 * from a HEAD per named object. */
static enum error_code resolve_objects(struct job *j, struct error *err)
{
	const struct fetch_dataset_desc *d = fetch_dataset_describe(j->ds);
	struct store *st = fetch_dataset_store(j->ds);
	enum error_code rc;

	if (!j->names)
		return list_under(j, d->prefix, err);
	if (j->by_prefix) {
		for (size_t i = 0; i < j->nnames; i++) {
			char full[BLOCK_KEY_MAX + 1];

			if (covered(j, i))
				continue;
			snprintf(full, sizeof(full), "%s%s", d->prefix, j->names[i]);
			rc = list_under(j, full, err);
			if (rc != ERR_OK)
				return rc;
		}
		return ERR_OK;
	}
	for (size_t i = 0; i < j->nnames; i++) {
		struct store_object info;
		char full[BLOCK_KEY_MAX + 1];

		if (job_stopped(j))
			return error_set(err, ERR_CANCELLED, "preload of dataset '%s' stopped",
					 d->name);
		snprintf(full, sizeof(full), "%s%s", d->prefix, j->names[i]);
		rc = store_head(st, full, &info, err);
		if (rc != ERR_OK) {
			error_wrap(err, "dataset '%s' object '%s'", d->name, j->names[i]);
			job_error(j, err);
			continue;
		}
		rc = add_object(j, j->names[i], info.etag, info.size);
		store_object_release(&info);
		if (rc != ERR_OK)
			return error_set(err, ERR_NOMEM, "preload: out of memory");
	}
	return ERR_OK;
}

/* Bytes of block bi of o. */
static uint64_t block_len(const struct preload_object *o, uint64_t bi, uint64_t bs)
{
	return o->size - bi * bs < bs ? o->size - bi * bs : bs;
}

/* Whether the membership gives block bi of o to this worker now. */
static bool placed_here(const struct job *j, const struct preload_object *o, uint64_t bi)
{
	char addr[PLACEMENT_ADDRESS_MAX], id[256];
	uint8_t hash[BLOCK_HASH_LEN];

	fetch_block_hash(j->ds, o->key, o->etag, bi, hash);
	return placement_owner(j->members, hash, addr, id, sizeof(id)) == ERR_OK &&
	       strcmp(id, j->self) == 0;
}

/* Blocks split between two looks at job_stopped: a dataset of millions
 * of blocks takes seconds to split, and preload_cancel waits for it. */
#define SPLIT_STOP_EVERY 4096

/* Marks the blocks placed here by the membership now; *blocks and *bytes
 * get their totals. ERR_CANCELLED when the job is stopped meanwhile. */
static enum error_code split(struct job *j, uint64_t nblocks, uint64_t *blocks, uint64_t *bytes,
			     struct error *err)
{
	const struct fetch_dataset_desc *d = fetch_dataset_describe(j->ds);
	const uint64_t bs = d->block_size;
	uint64_t seq = 0;

	*blocks = *bytes = 0;
	j->here = calloc(nblocks / 8 + 1, 1);
	if (!j->here)
		return error_set(err, ERR_NOMEM, "preload: out of memory");
	for (size_t i = 0; i < j->nobjs; i++) {
		const struct preload_object *o = &j->objs[i];

		for (uint64_t bi = 0; bi * bs < o->size; bi++, seq++) {
			if (seq % SPLIT_STOP_EVERY == 0 && job_stopped(j))
				return error_set(err, ERR_CANCELLED,
						 "preload of dataset '%s' stopped", d->name);
			if (!placed_here(j, o, bi))
				continue;
			j->here[seq / 8] |= (uint8_t)(1u << (seq % 8));
			(*blocks)++;
			*bytes += block_len(o, bi, bs);
		}
	}
	return ERR_OK;
}

/* Whether block seq (bi of o) is placed here now; one whose owner changed
 * since the split moves between blocks_total and blocks_elsewhere. */
static bool still_here(struct job *j, const struct preload_object *o, uint64_t bi, uint64_t seq)
{
	const uint64_t len = block_len(o, bi, fetch_dataset_describe(j->ds)->block_size);
	bool now = placed_here(j, o, bi), was = j->here[seq / 8] & (1u << (seq % 8));

	if (now == was)
		return now;
	pthread_mutex_lock(&j->p->mu);
	if (now) {
		j->st.blocks_total++;
		j->st.bytes_total += len;
		j->st.blocks_elsewhere--;
	} else {
		j->st.blocks_total--;
		j->st.bytes_total -= len;
		j->st.blocks_elsewhere++;
	}
	pthread_mutex_unlock(&j->p->mu);
	return now;
}

/* Hands out the next (object, block) and its seq; false when none is
 * left. */
static bool next_block(struct job *j, size_t *obj, uint64_t *block, uint64_t *seq)
{
	struct preloader *p = j->p;
	const uint64_t bs = fetch_dataset_describe(j->ds)->block_size;
	bool ok = false;

	pthread_mutex_lock(&p->mu);
	while (!job_stopped_locked(j) && j->cur_obj < j->nobjs) {
		const struct preload_object *o = &j->objs[j->cur_obj];

		if (j->cur_block * bs < o->size) {
			*obj = j->cur_obj;
			*block = j->cur_block++;
			*seq = j->cur_seq++;
			ok = true;
			break;
		}
		j->cur_obj++;
		j->cur_block = 0;
	}
	pthread_mutex_unlock(&p->mu);
	return ok;
}

static void *fetch_thread(void *arg)
{
	struct job *j = arg;
	struct preloader *p = j->p;
	const uint64_t bs = fetch_dataset_describe(j->ds)->block_size;
	size_t oi;
	uint64_t bi, seq;

	while (next_block(j, &oi, &bi, &seq)) {
		const struct preload_object *o = &j->objs[oi];
		uint64_t len = block_len(o, bi, bs);
		struct error err;
		bool fetched = false;
		enum error_code rc;

		if (j->members && !still_here(j, o, bi, seq))
			continue;
		rc = fetch_warm(p->f, j->ds, o->key, o->etag, o->size, bi, &fetched, &err);
		if (rc != ERR_OK && rc != ERR_NO_SPACE) {
			job_error(j, &err);
			continue;
		}
		pthread_mutex_lock(&p->mu);
		if (rc == ERR_NO_SPACE) {
			j->st.blocks_skipped++;
		} else {
			j->st.blocks_done++;
			j->st.bytes_done += len;
			j->st.blocks_fetched += fetched;
		}
		pthread_mutex_unlock(&p->mu);
	}
	return NULL;
}

static void *job_thread(void *arg)
{
	struct job *j = arg;
	struct preloader *p = j->p;
	const uint64_t bs = fetch_dataset_describe(j->ds)->block_size;
	uint64_t blocks = 0, bytes = 0, here_blocks, here_bytes;
	pthread_t *threads = NULL;
	unsigned nthreads = 0, want;
	struct error err;
	enum error_code rc;
	bool cut;

	error_clear(&err);
	rc = resolve_objects(j, &err);
	if (rc != ERR_OK)
		goto out;
	for (size_t i = 0; i < j->nobjs; i++) {
		if (bytes + j->objs[i].size < bytes) {
			rc = error_set(&err, ERR_INVALID,
				       "list dataset '%s': object sizes add up past 2^64 bytes",
				       j->st.dataset);
			goto out;
		}
		blocks += (j->objs[i].size + bs - 1) / bs;
		bytes += j->objs[i].size;
	}
	here_blocks = blocks;
	here_bytes = bytes;
	if (j->members) {
		rc = split(j, blocks, &here_blocks, &here_bytes, &err);
		if (rc != ERR_OK)
			goto out;
	}
	pthread_mutex_lock(&p->mu);
	j->st.objects = j->nobjs;
	j->st.blocks_total = here_blocks;
	j->st.bytes_total = here_bytes;
	j->st.blocks_elsewhere = blocks - here_blocks;
	pthread_mutex_unlock(&p->mu);
	log_info("preload started", LOG_U("id", j->st.id), LOG_S("dataset", j->st.dataset),
		 LOG_U("objects", j->nobjs), LOG_U("blocks", here_blocks),
		 LOG_U("bytes", here_bytes), LOG_U("blocks_elsewhere", blocks - here_blocks));

	want = blocks < p->parallelism ? (unsigned)blocks : p->parallelism;
	threads = calloc(want ? want : 1, sizeof(*threads));
	if (!threads) {
		rc = error_set(&err, ERR_NOMEM, "preload: out of memory");
		goto out;
	}
	for (unsigned i = 0; i < want; i++) {
		if (pthread_create(&threads[i], NULL, fetch_thread, j) != 0)
			break;
		nthreads++;
	}
	if (want > 0 && nthreads == 0)
		fetch_thread(j); /* no thread to spare: do it here, one at a time */
	for (unsigned i = 0; i < nthreads; i++)
		pthread_join(threads[i], NULL);
	free(threads);
out:
	pthread_mutex_lock(&p->mu);
	cut = j->st.blocks_done + j->st.blocks_skipped + j->st.errors < j->st.blocks_total;
	if (j->cancelled && (rc != ERR_OK || cut)) {
		snprintf(j->st.error, sizeof(j->st.error), "%s", j->cancel_why);
		j->st.code = ERR_CANCELLED;
	} else if (rc != ERR_OK) {
		if (!j->st.error[0])
			snprintf(j->st.error, sizeof(j->st.error), "%s", err.msg);
		job_code_locked(j, rc);
	} else if (p->stopping && cut) {
		snprintf(j->st.error, sizeof(j->st.error), "stopped: the worker is shutting down");
		j->st.code = ERR_CANCELLED;
	}
	j->st.state = rc == ERR_OK && j->st.errors == 0 && !j->st.error[0] ? PRELOAD_DONE
									    : PRELOAD_FAILED;
	pthread_cond_broadcast(&p->ended);
	pthread_mutex_unlock(&p->mu);
	log_info("preload finished", LOG_U("id", j->st.id), LOG_S("dataset", j->st.dataset),
		 LOG_S("state", preload_state_name(j->st.state)),
		 LOG_U("blocks_done", j->st.blocks_done), LOG_U("blocks_fetched", j->st.blocks_fetched),
		 LOG_U("blocks_skipped", j->st.blocks_skipped),
		 LOG_U("blocks_elsewhere", j->st.blocks_elsewhere), LOG_U("errors", j->st.errors));
	job_release_work(j);
	return NULL;
}

enum error_code preload_new(struct fetcher *f, unsigned parallelism,
			    const struct store_list_limits *lim, struct preloader **out,
			    struct error *err)
{
	struct preloader *p;

	*out = NULL;
	if (parallelism < 1)
		return error_set(err, ERR_INVALID, "preload: parallelism must be at least 1");
	p = calloc(1, sizeof(*p));
	if (!p)
		return error_set(err, ERR_NOMEM, "preload: out of memory");
	p->f = f;
	p->parallelism = parallelism;
	if (lim)
		p->limits = *lim;
	p->next_id = 1;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->ended, NULL);
	*out = p;
	return ERR_OK;
}

void preload_free(struct preloader *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = true;
	pthread_mutex_unlock(&p->mu);
	/* Job threads only take p->mu briefly, so joining without it is safe;
	 * the list itself no longer changes (no preload_start after free). */
	for (struct job *j = p->jobs; j; j = j->next)
		pthread_join(j->thread, NULL);
	while (p->jobs) {
		struct job *j = p->jobs;

		p->jobs = j->next;
		job_free(j);
	}
	pthread_cond_destroy(&p->ended);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

static size_t running_locked(const struct preloader *p)
{
	size_t n = 0;

	for (const struct job *j = p->jobs; j; j = j->next)
		n += j->st.state == PRELOAD_RUNNING;
	return n;
}

/* Joins and frees finished jobs beyond the newest PRELOAD_KEEP_FINISHED.
 * Called with p->mu held; a finished job's thread has left its last lock. */
static void prune(struct preloader *p, struct job **freed)
{
	size_t finished = 0;

	for (struct job **pp = &p->jobs; *pp;) {
		struct job *j = *pp;

		if (j->st.state != PRELOAD_RUNNING && ++finished > PRELOAD_KEEP_FINISHED) {
			*pp = j->next;
			j->next = *freed;
			*freed = j;
			continue;
		}
		pp = &j->next;
	}
}

/* preload_start and preload_start_under: items are objects, or prefixes
 * when by_prefix; placed as preload_start_under's. */
static enum error_code start(struct preloader *p, const char *dataset, const char *const *items,
			     size_t n, bool by_prefix, const struct preload_placement *placed,
			     uint64_t *id, struct error *err)
{
	struct job *j = NULL, *freed = NULL;
	enum error_code rc;
	int e;

	*id = 0;
	if (!by_prefix && n > PRELOAD_MAX_OBJECTS)
		return error_set(err, ERR_INVALID, "preload: %zu objects named, at most %d per request",
				 n, PRELOAD_MAX_OBJECTS);
	if (by_prefix && n > BLOCK_PRELOAD_PREFIXES_MAX)
		return error_set(err, ERR_INVALID, "preload: %zu prefixes named, at most %d", n,
				 BLOCK_PRELOAD_PREFIXES_MAX);
	if (placed && (!placed->members || !placed->self || !*placed->self))
		return error_set(err, ERR_INVALID,
				 "preload: a placement needs the membership and this worker's id");
	j = calloc(1, sizeof(*j));
	if (!j)
		return error_set(err, ERR_NOMEM, "preload: out of memory");
	j->p = p;
	j->by_prefix = by_prefix;
	if (placed) {
		j->members = placed->members;
		j->self = strdup(placed->self);
		if (!j->self) {
			rc = error_set(err, ERR_NOMEM, "preload: out of memory");
			goto fail;
		}
	}
	rc = fetch_dataset_get(p->f, dataset, &j->ds, err);
	if (rc != ERR_OK)
		goto fail;
	if (items && (n || !by_prefix)) {
		const char *prefix = fetch_dataset_describe(j->ds)->prefix;

		j->names = calloc(n ? n : 1, sizeof(*j->names));
		if (!j->names) {
			rc = error_set(err, ERR_NOMEM, "preload: out of memory");
			goto fail;
		}
		for (size_t i = 0; i < n; i++) {
			rc = by_prefix ? block_preload_prefix_check(prefix, items[i], err)
				       : block_object_key_check(prefix, items[i], err);
			if (rc != ERR_OK)
				goto fail;
			j->names[i] = strdup(items[i]);
			if (!j->names[i]) {
				rc = error_set(err, ERR_NOMEM, "preload: out of memory");
				goto fail;
			}
			j->nnames++;
		}
	}
	snprintf(j->st.dataset, sizeof(j->st.dataset), "%s", dataset);
	j->st.state = PRELOAD_RUNNING;

	pthread_mutex_lock(&p->mu);
	if (p->stopping) {
		pthread_mutex_unlock(&p->mu);
		rc = error_set(err, ERR_CANCELLED, "preload: the worker is stopping");
		goto fail;
	}
	if (running_locked(p) >= PRELOAD_RUNNING_MAX) {
		pthread_mutex_unlock(&p->mu);
		rc = error_set(err, ERR_UNAVAILABLE,
			       "preload: %d jobs are running, at most %d at once: ask again when one has ended",
			       PRELOAD_RUNNING_MAX, PRELOAD_RUNNING_MAX);
		goto fail;
	}
	j->st.id = p->next_id++;
	e = pthread_create(&j->thread, NULL, job_thread, j);
	if (e != 0) {
		pthread_mutex_unlock(&p->mu);
		rc = error_set(err, ERR_UNAVAILABLE, "preload: cannot start a thread: %s",
			       strerror(e));
		goto fail;
	}
	j->next = p->jobs;
	p->jobs = j;
	*id = j->st.id;
	prune(p, &freed);
	pthread_mutex_unlock(&p->mu);
	while (freed) {
		struct job *next = freed->next;

		pthread_join(freed->thread, NULL);
		job_free(freed);
		freed = next;
	}
	return ERR_OK;
fail:
	job_free(j);
	return rc;
}

enum error_code preload_start(struct preloader *p, const char *dataset,
			      const char *const *objects, size_t n, uint64_t *id,
			      struct error *err)
{
	return start(p, dataset, objects, n, false, NULL, id, err);
}

enum error_code preload_start_under(struct preloader *p, const char *dataset,
				    const char *const *prefixes, size_t n,
				    const struct preload_placement *placed, uint64_t *id,
				    struct error *err)
{
	return start(p, dataset, prefixes, n, true, placed, id, err);
}

size_t preload_cancel(struct preloader *p, const char *dataset, uint64_t id, const char *why)
{
	size_t cancelled = 0, running;

	pthread_mutex_lock(&p->mu);
	do {
		running = 0;
		for (struct job *j = p->jobs; j; j = j->next) {
			if (j->st.state != PRELOAD_RUNNING || strcmp(j->st.dataset, dataset) != 0 ||
			    (id && j->st.id != id))
				continue;
			if (!j->cancelled) {
				j->cancelled = true;
				snprintf(j->cancel_why, sizeof(j->cancel_why), "%s", why);
				cancelled++;
			}
			running++;
		}
		/* Wait for the blocks in progress, so that none is written
		 * after the caller drops the dataset's blocks. */
		if (running)
			pthread_cond_wait(&p->ended, &p->mu);
	} while (running);
	pthread_mutex_unlock(&p->mu);
	if (cancelled)
		log_info("preload cancelled", LOG_S("dataset", dataset), LOG_U("jobs", cancelled),
			 LOG_S("cause", why));
	return cancelled;
}

enum error_code preload_get(struct preloader *p, uint64_t id, struct preload_status *out,
			    struct error *err)
{
	enum error_code rc = ERR_NOT_FOUND;

	pthread_mutex_lock(&p->mu);
	for (struct job *j = p->jobs; j; j = j->next) {
		if (j->st.id == id) {
			*out = j->st;
			rc = ERR_OK;
			break;
		}
	}
	pthread_mutex_unlock(&p->mu);
	if (rc != ERR_OK)
		return error_set(err, rc, "unknown preload job %llu", (unsigned long long)id);
	return ERR_OK;
}

void preload_get_totals(struct preloader *p, struct preload_totals *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&p->mu);
	for (struct job *j = p->jobs; j; j = j->next) {
		if (j->st.state != PRELOAD_RUNNING)
			continue;
		out->running++;
		out->blocks_done += j->st.blocks_done;
		out->blocks_total += j->st.blocks_total;
		out->bytes_done += j->st.bytes_done;
		out->bytes_total += j->st.bytes_total;
	}
	pthread_mutex_unlock(&p->mu);
}
