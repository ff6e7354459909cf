/*
 * worker_meta.c - heartbeats to granary-meta and the dataset sync.
 */
#include "cache/worker_meta.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "block/placement.h"
#include "cache/worker_settings.h"
#include "common/array.h"
#include "common/log.h"
#include "common/retry.h"
#include "meta/meta_client.h"

/* Below meta's default interval (5 s), so that a round whose two calls both
 * time out still ends before the next one is due. */
#define DEFAULT_CALL_TIMEOUT_MS 2000
#define DEFAULT_RETRY_MS 1000

/* A preload whose failure may pass starts again after 1-2 s, then after
 * twice as long each time, up to 30-60 s (equal jitter: the workers that
 * failed together do not ask the store together again), until one ends
 * done or its dataset is removed or replaced. */
#define DEFAULT_PRELOAD_RETRY_MS 2000
#define PRELOAD_RETRY_MAX_STEPS 30     /* the longest step, in first steps */

/* A failed preload's retry_at when another run would fail the same way. */
#define JOB_NEVER UINT64_MAX

/* --- planning ------------------------------------------------------------- */

bool worker_meta_dataset_served(const Granary__V1__Dataset *ds)
{
	return ds && ds->spec && ds->generation > 0 &&
	       (ds->state == GRANARY__V1__DATASET_STATE__DATASET_STATE_READY ||
		ds->state == GRANARY__V1__DATASET_STATE__DATASET_STATE_REFRESHING);
}

static const char *str_or_empty(const char *s)
{
	return s ? s : "";
}

enum error_code worker_meta_dataset_config(const Granary__V1__DatasetSpec *spec,
					   const struct worker_meta_defaults *d,
					   struct fetch_dataset_config *out, struct error *err)
{
	const Granary__V1__DatasetOptions *o = spec->options;
	const char *name = str_or_empty(spec->name);
	uint64_t bs = o && o->block_size ? o->block_size : d->block_size;

	memset(out, 0, sizeof(*out));
	if (block_dataset_name_check(name, err) != ERR_OK)
		return error_wrap(err, "field 'name'");
	if (block_size_check("field 'options.block_size'", bs, err) != ERR_OK)
		return error_wrap(err, "dataset '%s'", name);
	out->policy = d->policy;
	if (o) {
		switch (o->cache_policy) {
		case GRANARY__V1__CACHE_POLICY__CACHE_POLICY_UNSPECIFIED:
			break;
		case GRANARY__V1__CACHE_POLICY__CACHE_POLICY_LRU:
			out->policy = BLOCKSTORE_LRU;
			break;
		case GRANARY__V1__CACHE_POLICY__CACHE_POLICY_SCAN_RESISTANT:
			out->policy = BLOCKSTORE_SCAN_RESISTANT;
			break;
		default:
			return error_set(err, ERR_INVALID,
					 "dataset '%s': field 'options.cache_policy': unknown value %d",
					 name, (int)o->cache_policy);
		}
		out->pin = o->pin;
	}
	out->name = name;
	out->source = str_or_empty(spec->source_uri);
	/* Where the data is comes from the spec; how to reach it (credentials,
	 * timeouts, retries) is this worker's: credentials_ref is a path in
	 * meta's pod. */
	out->store = d->store;
	if (spec->endpoint && *spec->endpoint)
		out->store.endpoint = spec->endpoint;
	if (spec->region && *spec->region)
		out->store.region = spec->region;
	out->block_size = bs;
	return ERR_OK;
}

bool worker_meta_dataset_matches(const struct fetch_dataset_desc *desc,
				 const struct fetch_dataset_config *cfg)
{
	const char *region = cfg->store.region && *cfg->store.region ? cfg->store.region
								      : "us-east-1";

	/* fetch.c stores "" for an unset endpoint or credentials file and
	 * us-east-1 for an unset region; compare the same way. */
	return strcmp(desc->name, cfg->name) == 0 && strcmp(desc->source, cfg->source) == 0 &&
	       strcmp(desc->endpoint, str_or_empty(cfg->store.endpoint)) == 0 &&
	       strcmp(desc->region, region) == 0 &&
	       strcmp(desc->credentials_file, str_or_empty(cfg->store.credentials_file)) == 0 &&
	       desc->block_size == cfg->block_size && desc->policy == cfg->policy &&
	       desc->pin == cfg->pin;
}

bool worker_meta_gains_blocks(struct placement *held, const struct placement_worker *workers,
			      size_t n, const char *self)
{
	bool listed = false;

	for (size_t i = 0; i < n && !listed; i++)
		listed = strcmp(workers[i].id, self) == 0;
	return listed && (!placement_has(held, self) || !placement_all_among(held, workers, n));
}

bool worker_meta_preload_wanted(const Granary__V1__Dataset *ds, char *out, size_t size)
{
	const Granary__V1__DatasetOptions *o = ds->spec ? ds->spec->options : NULL;
	size_t at;
	int n;

	if (!o || !o->preload)
		return false;
	n = snprintf(out, size, "generation %llu built %lld:", (unsigned long long)ds->generation,
		     (long long)ds->created_unix_ms);
	if (n < 0 || (size_t)n >= size)
		return false;
	at = (size_t)n;
	for (size_t i = 0; i < o->n_preload_prefixes; i++) {
		n = snprintf(out + at, size - at, "\n%s", o->preload_prefixes[i]);
		if (n < 0 || (size_t)n >= size - at)
			return false;
		at += (size_t)n;
	}
	return true;
}

static bool listed(const Granary__V1__ListDatasetsReply *list, const char *name)
{
	for (size_t i = 0; i < list->n_datasets; i++) {
		const Granary__V1__Dataset *ds = list->datasets[i];

		if (ds && ds->spec && strcmp(str_or_empty(ds->spec->name), name) == 0)
			return true;
	}
	return false;
}

enum error_code worker_meta_plan_make(const Granary__V1__ListDatasetsReply *list,
				      const struct worker_meta_defaults *d,
				      const struct fetch_dataset_desc *const *have, size_t nhave,
				      const char *const *owned, size_t nowned,
				      struct worker_meta_plan *out, struct error *err)
{
	size_t n = list->n_datasets;

	memset(out, 0, sizeof(*out));
	out->add = calloc(n ? n : 1, sizeof(*out->add));
	out->bad = calloc(n ? n : 1, sizeof(*out->bad));
	out->drop = calloc(nowned ? nowned : 1, sizeof(*out->drop));
	if (!out->add || !out->bad || !out->drop)
		return error_set(err, ERR_NOMEM, "dataset sync: out of memory");
	for (size_t i = 0; i < n; i++) {
		const Granary__V1__Dataset *ds = list->datasets[i];
		const struct fetch_dataset_desc *cur = NULL;
		struct fetch_dataset_config cfg;
		struct error ignored;
		bool mine = false;

		if (!worker_meta_dataset_served(ds))
			continue;
		if (worker_meta_dataset_config(ds->spec, d, &cfg, &ignored) != ERR_OK) {
			out->bad[out->nbad++] = i;
			continue;
		}
		for (size_t j = 0; j < nhave && !cur; j++)
			if (strcmp(have[j]->name, cfg.name) == 0)
				cur = have[j];
		for (size_t j = 0; j < nowned && !mine; j++)
			mine = strcmp(owned[j], cfg.name) == 0;
		if (!mine || !cur || !worker_meta_dataset_matches(cur, &cfg))
			out->add[out->nadd++] = i;
	}
	for (size_t j = 0; j < nowned; j++) {
		if (listed(list, owned[j]))
			continue;
		out->drop[out->ndrop] = strdup(owned[j]);
		if (!out->drop[out->ndrop])
			return error_set(err, ERR_NOMEM, "dataset sync: out of memory");
		out->ndrop++;
	}
	return ERR_OK;
}

void worker_meta_plan_release(struct worker_meta_plan *p)
{
	free(p->add);
	free(p->bad);
	for (size_t i = 0; i < p->ndrop; i++)
		free(p->drop[i]);
	free(p->drop);
	memset(p, 0, sizeof(*p));
}

/* --- the member ------------------------------------------------------------ */

/* A message logged about one subject (a dataset, or "" for meta itself),
 * so that a problem that persists is logged once, not every round. */
struct complaint {
	char *subject;
	char msg[ERROR_MSG_MAX];
};

struct worker_meta {
	struct worker_meta_config cfg;   /* strings point at the copies below */
	char *address, *worker_id, *advertise;
	uint64_t instance;               /* this process, in every heartbeat; never 0 */
	struct meta_client *meta;
	pthread_t thread;
	bool running;
	pthread_mutex_t mu;
	pthread_cond_t cv;               /* stopping, or a round asked */
	pthread_cond_t round_cv;         /* a round ended */
	bool stopping;                   /* the round in progress ends at its next step;
					  * protected by mu */
	bool in_round;                   /* protected by mu */
	bool asked;                      /* worker_meta_sync_soon; protected by mu */
	struct worker_meta_stats stats;  /* protected by mu */
	/* The rest belongs to the thread. */
	char **owned;                    /* names taken from meta */
	size_t nowned, owned_cap;
	/* The last preload job of each dataset (the member thread's alone),
	 * reported with the heartbeats. */
	struct preload_job *jobs;
	size_t njobs;
	struct complaint *complaints;
	size_t ncomplaints;
	bool outage, joined;
	/* Placement: the membership this worker acts on, the last one that
	 * stayed the same for placement.settle (the sweep and the preload
	 * jobs, which borrow it); and the newest one read from meta, held
	 * back (NULL once applied), with the heartbeat's version of it and
	 * since when that holds. */
	struct placement *placement;
	Granary__V1__ListWorkersReply *members;
	uint64_t members_version, members_since_ms;
	/* Counts the memberships applied that may have placed here blocks
	 * the one before did not (worker_meta_gains_blocks): a member left,
	 * or this worker is newly listed. A worker joining elsewhere only
	 * takes blocks away; a new version of the same workers (meta
	 * restarted) moves none. */
	uint64_t owners_epoch;
	struct retry_policy preload_retry;
};

/* The last preload job started for a dataset: what it was asked
 * (worker_meta_preload_wanted), the owners epoch it split the blocks by
 * (worker_meta.owners_epoch), how it ended, and the backoff of its
 * failures. */
struct preload_job {
	char *name;
	uint64_t id;
	char *asked;
	uint64_t members;
	/* PRELOAD_RUNNING until a round sees the job end (job_update): the
	 * preloader keeps only its newest PRELOAD_KEEP_FINISHED finished
	 * jobs, so the end is kept here. */
	enum preload_state state;
	struct retry backoff;            /* since the last job that ended done */
	uint64_t retry_at;               /* failed: start again then; JOB_NEVER: not */
	const char *again;               /* failed: why it starts again then */
};

static struct preload_job *job_find(struct worker_meta *wm, const char *name)
{
	for (size_t i = 0; i < wm->njobs; i++)
		if (strcmp(wm->jobs[i].name, name) == 0)
			return &wm->jobs[i];
	return NULL;
}

/* Remembers job id as the dataset's last; asked the same as the one
 * before, it goes on with its backoff. */
static void job_set(struct worker_meta *wm, const char *name, uint64_t id, const char *asked,
		    uint64_t members)
{
	struct preload_job *j = job_find(wm, name), *grown;
	char *copy;

	if (!j || strcmp(j->asked, asked) != 0) {
		copy = strdup(asked);
		if (!copy)
			return;
		if (!j) {
			grown = realloc(wm->jobs, (wm->njobs + 1) * sizeof(*grown));
			if (grown)
				wm->jobs = grown;
			if (!grown || !(j = &wm->jobs[wm->njobs], j->name = strdup(name))) {
				free(copy);
				return;
			}
			wm->njobs++;
		} else {
			free(j->asked);
		}
		j->asked = copy;
		retry_init(&j->backoff, &wm->preload_retry);
	}
	j->id = id;
	j->members = members;
	j->state = PRELOAD_RUNNING;
}

/*
 * Brings j->state up to date while the job runs, and acts once on its end:
 * done ends the backoff; a failure is logged with its cause and given the
 * time it starts again: after the backoff, or never when another run would
 * fail the same way (preload_error_lasts; what the dataset asks changing,
 * or a new definition, starts a new job). A job that ended unseen and was
 * pushed out of the preloader's finished jobs starts again at once.
 */
static void job_update(struct worker_meta *wm, struct preload_job *j)
{
	struct preload_status st;
	struct error err;
	uint64_t now = retry_now_ms(), delay;

	if (j->state != PRELOAD_RUNNING)
		return;
	if (preload_get(wm->cfg.preloader, j->id, &st, &err) != ERR_OK) {
		j->state = PRELOAD_FAILED;
		j->retry_at = now;
		j->again = "the last job ended unseen";
		return;
	}
	j->state = st.state;
	if (st.state == PRELOAD_DONE)
		retry_init(&j->backoff, &wm->preload_retry);
	if (st.state != PRELOAD_FAILED)
		return;
	if (preload_error_lasts(st.code)) {
		j->retry_at = JOB_NEVER;
		log_warn("preload failed; it is not retried: it would fail the same way",
			 LOG_S("dataset", j->name), LOG_U("job", j->id),
			 LOG_S("error", error_code_name(st.code)), LOG_S("cause", st.error),
			 LOG_S("until", "a refresh, other prefixes or a new definition"));
		return;
	}
	if (!retry_next(&j->backoff, now, &delay))
		delay = wm->preload_retry.max_ms;
	j->retry_at = now + delay;
	j->again = "retry after a failure";
	log_warn("preload failed; it starts again", LOG_S("dataset", j->name), LOG_U("job", j->id),
		 LOG_U("retry_in_ms", delay), LOG_S("cause", st.error));
}

/* Whether the last job of a dataset ended failed, or unseen. */
static bool job_failed(struct worker_meta *wm, const char *name)
{
	struct preload_job *j = job_find(wm, name);

	if (!j)
		return false;
	job_update(wm, j);
	return j->state == PRELOAD_FAILED;
}

/*
 * Why the dataset's last job j, asked the same as now, runs again, or NULL
 * when it does not: it failed and its time to start again has come
 * (job_update), or it ended done and a membership applied since it
 * started may have placed here blocks it passed (members, an owners
 * epoch, is not this worker's now).
 */
static const char *job_again(struct worker_meta *wm, struct preload_job *j, uint64_t members)
{
	job_update(wm, j);
	switch (j->state) {
	case PRELOAD_RUNNING:
		return NULL;
	case PRELOAD_DONE:
		return j->members != members ? "blocks may have moved here" : NULL;
	case PRELOAD_FAILED:
		return retry_now_ms() >= j->retry_at ? j->again : NULL;
	}
	return NULL;
}

static void job_forget(struct worker_meta *wm, const char *name)
{
	struct preload_job *j = job_find(wm, name);

	if (!j)
		return;
	free(j->name);
	free(j->asked);
	*j = wm->jobs[--wm->njobs];
}

static bool owned_has(const struct worker_meta *wm, const char *name)
{
	for (size_t i = 0; i < wm->nowned; i++)
		if (strcmp(wm->owned[i], name) == 0)
			return true;
	return false;
}

static void owned_add(struct worker_meta *wm, const char *name)
{
	char *copy;

	if (owned_has(wm, name))
		return;
	/* not remembered when out of memory: it is taken again next round */
	if (array_grow((void **)&wm->owned, &wm->owned_cap, wm->nowned + 1, sizeof(*wm->owned)) < 0)
		return;
	copy = strdup(name);
	if (copy)
		wm->owned[wm->nowned++] = copy;
}

static void owned_remove(struct worker_meta *wm, const char *name)
{
	for (size_t i = 0; i < wm->nowned; i++) {
		if (strcmp(wm->owned[i], name) == 0) {
			free(wm->owned[i]);
			wm->owned[i] = wm->owned[--wm->nowned];
			return;
		}
	}
}

/* True when msg is new for subject (and remembers it). */
static bool complaint_is_new(struct worker_meta *wm, const char *subject, const char *msg)
{
	struct complaint *grown;

	for (size_t i = 0; i < wm->ncomplaints; i++) {
		if (strcmp(wm->complaints[i].subject, subject) == 0) {
			if (strcmp(wm->complaints[i].msg, msg) == 0)
				return false;
			snprintf(wm->complaints[i].msg, sizeof(wm->complaints[i].msg), "%s", msg);
			return true;
		}
	}
	grown = realloc(wm->complaints, (wm->ncomplaints + 1) * sizeof(*grown));
	if (!grown)
		return true;
	wm->complaints = grown;
	grown[wm->ncomplaints].subject = strdup(subject);
	if (!grown[wm->ncomplaints].subject)
		return true;
	snprintf(grown[wm->ncomplaints].msg, sizeof(grown[wm->ncomplaints].msg), "%s", msg);
	wm->ncomplaints++;
	return true;
}

static void complaint_clear(struct worker_meta *wm, const char *subject)
{
	for (size_t i = 0; i < wm->ncomplaints; i++) {
		if (strcmp(wm->complaints[i].subject, subject) == 0) {
			free(wm->complaints[i].subject);
			wm->complaints[i] = wm->complaints[--wm->ncomplaints];
			return;
		}
	}
}

/* Whether the thread is asked to end: the round in progress skips its
 * remaining steps (worker_meta_leave waits for it). */
static bool stop_asked(struct worker_meta *wm)
{
	bool stop;

	pthread_mutex_lock(&wm->mu);
	stop = wm->stopping;
	pthread_mutex_unlock(&wm->mu);
	return stop;
}

static void count(struct worker_meta *wm, uint64_t *field, uint64_t n)
{
	pthread_mutex_lock(&wm->mu);
	*field += n;
	pthread_mutex_unlock(&wm->mu);
}

static bool is_outage(enum error_code rc)
{
	return rc == ERR_UNAVAILABLE || rc == ERR_TIMEOUT;
}

/* A call to meta failed: an outage is logged once until meta answers
 * again; any other error once per distinct message. */
static void meta_failed(struct worker_meta *wm, enum error_code rc, const struct error *err)
{
	if (wm->cfg.readiness)
		readiness_meta_failed(wm->cfg.readiness, retry_now_ms(), is_outage(rc), err->msg);
	if (is_outage(rc)) {
		if (!wm->outage)
			log_warn("granary-meta unreachable; serving the datasets it listed last",
				 LOG_S("meta.address", wm->address), LOG_S("cause", err->msg));
		wm->outage = true;
		return;
	}
	if (complaint_is_new(wm, "", err->msg))
		log_error("granary-meta refused a call", LOG_S("meta.address", wm->address),
			  LOG_S("cause", err->msg));
}

static void meta_answered(struct worker_meta *wm)
{
	if (wm->outage)
		log_info("granary-meta reachable again", LOG_S("meta.address", wm->address));
	wm->outage = false;
}

static void take_dataset(struct worker_meta *wm, const Granary__V1__Dataset *ds)
{
	struct fetch_dataset_config cfg;
	struct error err;
	char why[ERROR_MSG_MAX];
	bool created = false;
	enum error_code rc;

	rc = worker_meta_dataset_config(ds->spec, &wm->cfg.defaults, &cfg, &err);
	if (rc == ERR_OK) {
		/* A job of the old definition would go on filling the cache
		 * with it, and one that failed would be tried again: the new
		 * one gets its own job (follow_preload). */
		snprintf(why, sizeof(why),
			 "cancelled: dataset '%s' was replaced by a new definition from granary-meta",
			 cfg.name);
		if (wm->cfg.preloader && (preload_cancel(wm->cfg.preloader, cfg.name, 0, why) ||
					  job_failed(wm, cfg.name)))
			job_forget(wm, cfg.name);
		rc = fetch_dataset_register(wm->cfg.fetcher, &cfg, &created, &err);
	}
	if (rc != ERR_OK) {
		if (complaint_is_new(wm, str_or_empty(ds->spec->name), err.msg))
			log_warn("cannot take a dataset from granary-meta; reads of it go to the store",
				 LOG_S("dataset", str_or_empty(ds->spec->name)), LOG_S("cause", err.msg));
		return;
	}
	complaint_clear(wm, cfg.name);
	owned_add(wm, cfg.name);
	count(wm, &wm->stats.registered, 1);
	log_info("dataset taken from granary-meta", LOG_S("dataset", cfg.name),
		 LOG_U("generation", ds->generation), LOG_I("created", created));
}

/*
 * Starts a preload of a dataset taken from meta when what it asks for
 * changed since the last job (worker_meta_preload_wanted), when the last
 * one failed in a way that may pass and its backoff is over, or when a
 * membership applied since it started may have placed blocks here
 * (job_again). The job fetches only the blocks placed
 * here by the membership this worker holds (follow_membership): none
 * starts before one that lists this worker has settled.
 */
static void follow_preload(struct worker_meta *wm, const Granary__V1__Dataset *ds)
{
	const Granary__V1__DatasetOptions *o = ds->spec->options;
	const char *name = str_or_empty(ds->spec->name);
	struct preload_job *last = job_find(wm, name);
	const struct preload_placement placed = { wm->placement, wm->worker_id };
	char wanted[BLOCK_PRELOAD_PREFIXES_MAX * (BLOCK_KEY_MAX + 1) + 64];
	const char *reason = "what the dataset asks changed";
	struct error err;
	uint64_t id = 0, members;

	if (!wm->cfg.preloader || !owned_has(wm, name) ||
	    !worker_meta_preload_wanted(ds, wanted, sizeof(wanted)) ||
	    !placement_has(wm->placement, wm->worker_id))
		return;
	members = wm->owners_epoch;
	if (last && strcmp(last->asked, wanted) == 0) {
		reason = job_again(wm, last, members);
		if (!reason)
			return;
	} else if (last) {
		char why[ERROR_MSG_MAX];

		snprintf(why, sizeof(why),
			 "cancelled: granary-meta asked for another preload of dataset '%s' "
			 "(generation %llu)", name, (unsigned long long)ds->generation);
		preload_cancel(wm->cfg.preloader, name, last->id, why);
	}
	if (preload_start_under(wm->cfg.preloader, name,
				(const char *const *)o->preload_prefixes, o->n_preload_prefixes,
				&placed, &id, &err) != ERR_OK) {
		if (complaint_is_new(wm, name, err.msg))
			log_warn("cannot start the preload of a dataset", LOG_S("dataset", name),
				 LOG_S("cause", err.msg));
		return;
	}
	count(wm, &wm->stats.preloads, 1);
	job_set(wm, name, id, wanted, members);
	log_info("preload started", LOG_S("dataset", name), LOG_U("job", id),
		 LOG_S("why", reason), LOG_U("generation", ds->generation),
		 LOG_U("prefixes", o->n_preload_prefixes),
		 LOG_U("membership_version", placement_version(wm->placement)));
}

static void drop_dataset(struct worker_meta *wm, const char *name)
{
	struct error err;
	uint64_t dropped = 0;
	enum error_code rc;
	char why[ERROR_MSG_MAX];

	snprintf(why, sizeof(why), "cancelled: dataset '%s' was removed: granary-meta no longer has it",
		 name);
	if (wm->cfg.preloader)
		preload_cancel(wm->cfg.preloader, name, 0, why);
	rc = fetch_dataset_unregister(wm->cfg.fetcher, name, &dropped, &err);
	if (rc != ERR_OK && rc != ERR_NOT_FOUND) {
		log_warn("cannot unregister a dataset meta no longer has", LOG_S("dataset", name),
			 LOG_S("cause", err.msg));
		return;
	}
	complaint_clear(wm, name);
	owned_remove(wm, name);
	job_forget(wm, name);
	count(wm, &wm->stats.unregistered, 1);
	log_info("dataset unregistered: granary-meta no longer has it", LOG_S("dataset", name),
		 LOG_U("dropped_blocks", dropped));
}

/* ListDatasets and apply the difference. */
static void sync_datasets(struct worker_meta *wm)
{
	Granary__V1__ListDatasetsReply *list = NULL;
	struct fetch_dataset **regs = NULL;
	const struct fetch_dataset_desc **have = NULL;
	struct worker_meta_plan plan = { 0 };
	struct error err;
	enum error_code rc;
	size_t nregs = 0;

	rc = meta_client_list(wm->meta, &list, &err);
	if (rc != ERR_OK) {
		meta_failed(wm, rc, &err);
		return;
	}
	meta_answered(wm);
	if (fetch_dataset_list(wm->cfg.fetcher, &regs, &nregs, &err) != ERR_OK)
		goto out;
	have = calloc(nregs ? nregs : 1, sizeof(*have));
	if (!have)
		goto out;
	for (size_t i = 0; i < nregs; i++)
		have[i] = fetch_dataset_describe(regs[i]);
	if (worker_meta_plan_make(list, &wm->cfg.defaults, have, nregs,
				  (const char *const *)wm->owned, wm->nowned, &plan,
				  &err) != ERR_OK)
		goto out;
	/* Each step may wait for a preload's blocks in progress
	 * (preload_cancel): none is taken once the worker leaves. */
	for (size_t i = 0; i < plan.nadd && !stop_asked(wm); i++)
		take_dataset(wm, list->datasets[plan.add[i]]);
	for (size_t i = 0; i < plan.nbad && !stop_asked(wm); i++)
		take_dataset(wm, list->datasets[plan.bad[i]]); /* logs why, once */
	for (size_t i = 0; i < plan.ndrop && !stop_asked(wm); i++)
		drop_dataset(wm, plan.drop[i]);
	for (size_t i = 0; i < list->n_datasets && !stop_asked(wm); i++)
		if (list->datasets[i]->spec && worker_meta_dataset_served(list->datasets[i]))
			follow_preload(wm, list->datasets[i]);
out:
	worker_meta_plan_release(&plan);
	free(have);
	if (regs)
		fetch_dataset_list_free(wm->cfg.fetcher, regs, nregs);
	granary__v1__list_datasets_reply__free_unpacked(list, NULL);
}

/* Whether a cached block stays here: this worker owns it by the
 * membership it holds, or its dataset is not one taken from meta (placement
 * is for those). */
static bool owned_here(const char *dataset, const uint8_t hash[BLOCK_HASH_LEN], void *arg)
{
	struct worker_meta *wm = arg;
	char addr[PLACEMENT_ADDRESS_MAX], id[256];

	return !owned_has(wm, dataset) ||
	       placement_owner(wm->placement, hash, addr, id, sizeof(id)) != ERR_OK ||
	       strcmp(id, wm->worker_id) == 0;
}

/*
 * One owner per block, by a settled membership. While a worker is away
 * its blocks' owners are others, which fetch and keep them; when it comes
 * back (with the blocks its cache directory still holds) or a partial
 * membership passes (meta just restarted), both hold them. Each new
 * membership version is read from meta and held back until it has stayed
 * the same for placement.settle (0: at once), so that one that does not
 * last moves no block. Then this worker acts on it: the preloads place
 * their blocks by it (follow_preload), and, with placement.settle set and
 * this worker listed, the cached blocks of meta's datasets that
 * rendezvous placement gives to another live worker are dropped here
 * (mounts ask that owner for them). A worker that leaves skips the call
 * and the sweep.
 */
static void follow_membership(struct worker_meta *wm, uint64_t version)
{
	Granary__V1__ListWorkersReply *r = NULL;
	struct placement_worker *w;
	struct error err;
	uint64_t now = retry_now_ms(), dropped;
	enum error_code rc = ERR_NOMEM;
	bool gains = false;

	if (version != wm->members_version) {
		if (stop_asked(wm) || meta_client_list_workers(wm->meta, &r, &err) != ERR_OK)
			return; /* asked again next round */
		if (wm->members)
			granary__v1__list_workers_reply__free_unpacked(wm->members, NULL);
		wm->members = r;
		wm->members_version = version;
		wm->members_since_ms = now;
	}
	if (!wm->members || now - wm->members_since_ms < wm->cfg.settle_ms)
		return;
	r = wm->members;
	w = calloc(r->n_workers ? r->n_workers : 1, sizeof(*w));
	for (size_t i = 0; w && i < r->n_workers; i++)
		w[i] = (struct placement_worker){ r->workers[i]->id, r->workers[i]->address };
	if (w) {
		gains = worker_meta_gains_blocks(wm->placement, w, r->n_workers, wm->worker_id);
		rc = placement_update(wm->placement, w, r->n_workers, r->version, &err);
	}
	free(w);
	if (rc != ERR_OK)
		return; /* applied next round */
	if (gains)
		wm->owners_epoch++;
	log_info("placement follows a settled membership", LOG_U("workers", r->n_workers),
		 LOG_U("membership_version", r->version),
		 LOG_I("listed", placement_has(wm->placement, wm->worker_id)));
	granary__v1__list_workers_reply__free_unpacked(r, NULL);
	wm->members = NULL;
	if (!wm->cfg.settle_ms || !placement_has(wm->placement, wm->worker_id) || stop_asked(wm))
		return;
	dropped = blockstore_drop_unless(fetch_blockstore(wm->cfg.fetcher), owned_here, wm);
	if (dropped == 0)
		return;
	log_info("dropped cached blocks another worker owns", LOG_U("blocks", dropped),
		 LOG_U("workers", placement_count(wm->placement)),
		 LOG_U("membership_version", placement_version(wm->placement)));
	pthread_mutex_lock(&wm->mu);
	wm->stats.unowned_dropped += dropped;
	pthread_mutex_unlock(&wm->mu);
}

/* Datasets a heartbeat reports the cached bytes of. */
#define USAGE_MAX 4096

/* A HeartbeatRequest of this process, without its figures. */
static Granary__V1__HeartbeatRequest heartbeat_request(const struct worker_meta *wm)
{
	Granary__V1__HeartbeatRequest req = GRANARY__V1__HEARTBEAT_REQUEST__INIT;

	req.worker_id = wm->worker_id;
	req.address = wm->advertise;
	req.instance = wm->instance;
	return req;
}

static void heartbeat(struct worker_meta *wm)
{
	Granary__V1__HeartbeatRequest req = heartbeat_request(wm);
	Granary__V1__HeartbeatReply *reply = NULL;
	struct blockstore_stats bst;
	struct blockstore_usage *usage = calloc(USAGE_MAX, sizeof(*usage));
	Granary__V1__DatasetCache *items = calloc(USAGE_MAX, sizeof(*items));
	Granary__V1__DatasetCache **ptrs = calloc(USAGE_MAX, sizeof(*ptrs));
	struct error err;
	enum error_code rc;
	size_t n = 0;
	uint64_t used;

	blockstore_get_stats(fetch_blockstore(wm->cfg.fetcher), &bst);
	used = bst.used < wm->cfg.capacity ? bst.used : wm->cfg.capacity;
	/* Out of memory: the heartbeat goes without the per-dataset bytes. */
	if (usage && items && ptrs)
		n = blockstore_dataset_bytes(fetch_blockstore(wm->cfg.fetcher), usage, USAGE_MAX);
	for (size_t i = 0; i < n; i++) {
		granary__v1__dataset_cache__init(&items[i]);
		items[i].name = usage[i].name;
		items[i].bytes = usage[i].bytes;
		ptrs[i] = &items[i];
	}
	/* Each preload's progress, on its dataset's line (a new one when
	 * nothing of it is cached yet). */
	for (size_t j = 0; usage && items && ptrs && wm->cfg.preloader && j < wm->njobs; j++) {
		struct preload_status ps;
		size_t i;

		if (preload_get(wm->cfg.preloader, wm->jobs[j].id, &ps, &err) != ERR_OK)
			continue;
		for (i = 0; i < n && strcmp(items[i].name, wm->jobs[j].name) != 0; i++)
			;
		if (i == n) {
			if (n == USAGE_MAX)
				continue;
			granary__v1__dataset_cache__init(&items[n]);
			snprintf(usage[n].name, sizeof(usage[n].name), "%s", wm->jobs[j].name);
			items[n].name = usage[n].name;
			ptrs[n] = &items[n];
			n++;
		}
		items[i].preload_state = (char *)preload_state_name(ps.state);
		items[i].preload_blocks_done = ps.blocks_done;
		items[i].preload_blocks_total = ps.blocks_total;
	}
	req.capacity_bytes = wm->cfg.capacity;
	req.used_bytes = used;
	req.datasets = ptrs;
	req.n_datasets = n;
	rc = meta_client_heartbeat_send(wm->meta, &req, &reply, &err);
	free(ptrs);
	free(items);
	free(usage);
	if (rc != ERR_OK) {
		meta_failed(wm, rc, &err);
		return;
	}
	meta_answered(wm);
	complaint_clear(wm, "");
	if (wm->cfg.readiness)
		readiness_heartbeat_ok(wm->cfg.readiness, retry_now_ms(), reply->expiry_ms);
	if (!wm->joined) {
		char instance[17];

		snprintf(instance, sizeof(instance), "%016llx", (unsigned long long)wm->instance);
		log_info("joined granary-meta", LOG_S("meta.address", wm->address),
			 LOG_S("worker_id", wm->worker_id), LOG_S("address", wm->advertise),
			 LOG_S("instance", instance),
			 LOG_U("membership_version", reply->membership_version),
			 LOG_U("interval_ms", reply->interval_ms));
	}
	wm->joined = true;
	pthread_mutex_lock(&wm->mu);
	wm->stats.heartbeats++;
	if (reply->interval_ms > 0)
		wm->stats.interval_ms = reply->interval_ms;
	pthread_mutex_unlock(&wm->mu);
	follow_membership(wm, reply->membership_version);
	granary__v1__heartbeat_reply__free_unpacked(reply, NULL);
}

/* Datasets first, so that a worker is registered for a dataset before
 * mounts can pick it as an owner; then the heartbeat, whatever the list
 * did: one slow ListDatasets must not cost a heartbeat, or a healthy
 * worker expires. Heartbeats go at a fixed rate, interval_ms after the
 * previous one's round started, not after it ended: the calls' time does
 * not add to the gap between them. A round asked for sooner (a request
 * for a dataset not registered here) lists the datasets only: requests
 * for a dataset meta does not have must not become heartbeats. */
static void *member_loop(void *arg)
{
	struct worker_meta *wm = arg;
	uint64_t beat_due = 0;

	pthread_mutex_lock(&wm->mu);
	while (!wm->stopping) {
		uint64_t started = retry_now_ms(), ended, due;
		bool beat = started >= beat_due;

		wm->asked = false;
		wm->in_round = true;
		pthread_mutex_unlock(&wm->mu);
		sync_datasets(wm);
		if (beat && !stop_asked(wm))
			heartbeat(wm);
		pthread_mutex_lock(&wm->mu);
		wm->in_round = false;
		wm->stats.rounds++;
		wm->stats.connected = !wm->outage;
		if (wm->outage)
			wm->stats.failures++;
		pthread_cond_broadcast(&wm->round_cv);
		ended = retry_now_ms();
		if (beat)
			beat_due = started + wm->stats.interval_ms;
		due = beat_due;
		/* The next round at the interval, or sooner when asked for
		 * (but not before the gap). */
		while (!wm->stopping) {
			uint64_t now = retry_now_ms(), until = due;
			struct timespec ts;

			if (wm->asked && ended + WORKER_META_ASKED_GAP_MS < until)
				until = ended + WORKER_META_ASKED_GAP_MS;
			if (now >= until)
				break;
			ts = retry_deadline_ts(CLOCK_MONOTONIC, until - now);
			pthread_cond_timedwait(&wm->cv, &wm->mu, &ts);
		}
	}
	pthread_mutex_unlock(&wm->mu);
	return NULL;
}

bool worker_meta_sync_soon(struct worker_meta *wm, uint64_t wait_ms)
{
	uint64_t until = retry_now_ms() + wait_ms, target;
	bool done;

	pthread_mutex_lock(&wm->mu);
	/* A round under way may have listed before the dataset existed. */
	target = wm->stats.rounds + (wm->in_round ? 2 : 1);
	wm->asked = true;
	pthread_cond_signal(&wm->cv);
	while (!wm->stopping && wm->stats.rounds < target) {
		uint64_t now = retry_now_ms();
		struct timespec ts;

		if (now >= until)
			break;
		ts = retry_deadline_ts(CLOCK_MONOTONIC, until - now);
		pthread_cond_timedwait(&wm->round_cv, &wm->mu, &ts);
	}
	done = wm->stats.rounds >= target;
	pthread_mutex_unlock(&wm->mu);
	return done;
}

static void member_free(struct worker_meta *wm)
{
	meta_client_free(wm->meta);
	placement_free(wm->placement);
	if (wm->members)
		granary__v1__list_workers_reply__free_unpacked(wm->members, NULL);
	for (size_t i = 0; i < wm->nowned; i++)
		free(wm->owned[i]);
	free(wm->owned);
	for (size_t i = 0; i < wm->njobs; i++) {
		free(wm->jobs[i].name);
		free(wm->jobs[i].asked);
	}
	free(wm->jobs);
	for (size_t i = 0; i < wm->ncomplaints; i++)
		free(wm->complaints[i].subject);
	free(wm->complaints);
	free(wm->address);
	free(wm->worker_id);
	free(wm->advertise);
	pthread_cond_destroy(&wm->cv);
	pthread_cond_destroy(&wm->round_cv);
	pthread_mutex_destroy(&wm->mu);
	free(wm);
}

enum error_code worker_meta_start(const struct worker_meta_config *cfg, struct worker_meta **out,
				  struct error *err)
{
	struct meta_client_options opt = { 0 };
	struct worker_meta *wm;
	pthread_condattr_t ca;
	enum error_code rc;

	*out = NULL;
	if (!cfg->address || !*cfg->address || !cfg->worker_id || !*cfg->worker_id ||
	    !cfg->advertise || !*cfg->advertise || !cfg->fetcher)
		return error_set(err, ERR_INVALID,
				 "meta membership: address, worker id, advertised address and fetcher are required");
	wm = calloc(1, sizeof(*wm));
	if (!wm)
		return error_set(err, ERR_NOMEM, "meta membership: out of memory");
	pthread_mutex_init(&wm->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&wm->cv, &ca);
	pthread_cond_init(&wm->round_cv, &ca);
	pthread_condattr_destroy(&ca);
	wm->cfg = *cfg;
	if (!wm->cfg.call_timeout_ms)
		wm->cfg.call_timeout_ms = DEFAULT_CALL_TIMEOUT_MS;
	wm->stats.interval_ms = cfg->retry_ms ? cfg->retry_ms : DEFAULT_RETRY_MS;
	wm->preload_retry = (struct retry_policy){
		.max_attempts = UINT_MAX,
		.base_ms = cfg->preload_retry_ms ? cfg->preload_retry_ms : DEFAULT_PRELOAD_RETRY_MS,
	};
	wm->preload_retry.max_ms = PRELOAD_RETRY_MAX_STEPS * wm->preload_retry.base_ms;
	wm->address = strdup(cfg->address);
	wm->worker_id = strdup(cfg->worker_id);
	wm->advertise = strdup(cfg->advertise);
	if (!wm->address || !wm->worker_id || !wm->advertise) {
		rc = error_set(err, ERR_NOMEM, "meta membership: out of memory");
		goto fail;
	}
	/* 0 is what a worker that sends no instance sends. */
	while (!wm->instance) {
		ssize_t got = getrandom(&wm->instance, sizeof(wm->instance), 0);

		if (got != (ssize_t)sizeof(wm->instance)) {
			rc = error_set(err, ERR_IO, "meta membership: instance: getrandom: %s",
				       strerror(errno));
			goto fail;
		}
	}
	opt.timeout_ms = wm->cfg.call_timeout_ms;
	opt.key_file = cfg->key_file;
	opt.identity_token_file = cfg->identity_token_file;
	opt.tls = cfg->tls;
	opt.role = META_ROLE_WORKER;
	rc = meta_client_new(wm->address, &opt, &wm->meta, err);
	if (rc != ERR_OK)
		goto fail;
	rc = placement_new(&wm->placement, err);
	if (rc != ERR_OK)
		goto fail;
	if (pthread_create(&wm->thread, NULL, member_loop, wm) != 0) {
		rc = error_set(err, ERR_NOMEM, "meta membership: cannot start its thread");
		goto fail;
	}
	wm->running = true;
	*out = wm;
	return ERR_OK;
fail:
	member_free(wm);
	return rc;
}

/* Ends the rounds: a call in progress finishes within call_timeout_ms. */
static void stop_thread(struct worker_meta *wm)
{
	if (!wm->running)
		return;
	pthread_mutex_lock(&wm->mu);
	wm->stopping = true;
	pthread_cond_signal(&wm->cv);
	pthread_cond_broadcast(&wm->round_cv);
	pthread_mutex_unlock(&wm->mu);
	pthread_join(wm->thread, NULL);
	wm->running = false;
}

void worker_meta_leave(struct worker_meta *wm)
{
	Granary__V1__HeartbeatRequest req;
	Granary__V1__HeartbeatReply *reply = NULL;
	struct error err;

	if (!wm)
		return;
	/* No heartbeat after the leaving one: it would join again. */
	stop_thread(wm);
	if (wm->cfg.readiness)
		readiness_left(wm->cfg.readiness);
	if (!wm->joined)
		return;
	req = heartbeat_request(wm);
	req.leaving = true;
	if (meta_client_heartbeat_send(wm->meta, &req, &reply, &err) != ERR_OK) {
		log_warn("cannot tell granary-meta that this worker leaves; it drops it at its expiry",
			 LOG_S("meta.address", wm->address), LOG_S("cause", err.msg));
		return;
	}
	log_info("left granary-meta", LOG_S("meta.address", wm->address),
		 LOG_S("worker_id", wm->worker_id),
		 LOG_U("membership_version", reply->membership_version));
	granary__v1__heartbeat_reply__free_unpacked(reply, NULL);
}

void worker_meta_stop(struct worker_meta *wm)
{
	if (!wm)
		return;
	stop_thread(wm);
	/* Its jobs borrow the placement freed here. */
	for (size_t i = 0; wm->cfg.preloader && i < wm->njobs; i++)
		preload_cancel(wm->cfg.preloader, wm->jobs[i].name, wm->jobs[i].id,
			       "stopped: the worker is shutting down");
	member_free(wm);
}

void worker_meta_get_stats(struct worker_meta *wm, struct worker_meta_stats *out)
{
	pthread_mutex_lock(&wm->mu);
	*out = wm->stats;
	pthread_mutex_unlock(&wm->mu);
}
