/*
 * worker_meta.h - granary-worker as a member of the cluster: heartbeats to
 * granary-meta, and the worker's datasets kept in step with meta's registry.
 *
 * One background thread. Each round (the first at start, then every
 * interval meta asks for in its HeartbeatReply):
 *   1. ListDatasets. Every dataset meta serves (READY or REFRESHING) whose
 *      definition here is absent or differs is registered with
 *      fetch_dataset_register; every dataset this thread took from meta
 *      and meta no longer lists is unregistered (its unheld blocks are
 *      dropped). Datasets registered through the HTTP API under names meta
 *      does not list are never touched; a name meta lists is meta's, and
 *      meta's definition replaces one put there over HTTP.
 *   2. Heartbeat(worker id, advertised host:port, instance, capacity, used
 *      bytes). The instance is drawn at random when the member starts: meta
 *      refuses a second process under a live worker id at another address
 *      (ALREADY_EXISTS, naming the live one), and this one keeps trying at
 *      its interval, not ready, until that one leaves or expires.
 *
 * Store access rule: a worker reads every meta dataset with its own store
 * settings (store.credentials_file, timeouts, ...), taking only the
 * endpoint and region from the spec when they are set. The spec's
 * credentials_ref names a file in meta's pod and is not used here: the
 * workers read with the cluster's store credentials.
 *
 * options.preload: every worker preloads the dataset, fetching only the
 * blocks rendezvous placement gives it (preload.h), so that the cluster
 * reads each block from the store once. Placement is by the last
 * membership that stayed the same for settle_ms (the one the sweep of
 * other workers' blocks uses too); none starts before one that lists this
 * worker has. A job starts when what the dataset asks changes
 * (worker_meta_preload_wanted), when a membership that settled since the
 * last job started may place blocks here that the one before did not
 * (worker_meta_gains_blocks: it fetches the blocks that moved here;
 * running jobs follow each new membership for the blocks they have not
 * handed out), and after a failure that may pass (preload_error_lasts),
 * with a backoff (1-2 s doubling to 30-60 s, each failure logged once with
 * its cause) until a job ends done or the dataset is removed or replaced.
 * A failure that would come again (credentials refused, a listing past
 * its bounds, an object no client can read) is logged once and not
 * retried: a refresh, other prefixes or a new definition start a new job.
 * A job the preloader no longer knows, whose end no round saw, starts
 * again once.
 *
 * Leaving (worker_meta_leave): the round in progress ends at its next
 * step, skipping its further calls and the sweep of other workers' blocks.
 *
 * meta unreachable (UNAVAILABLE or TIMEOUT): one warning per outage, then
 * the datasets stay as last listed and the worker keeps serving; the
 * rounds go on at the last interval and recovery is logged. Rounds start
 * interval_ms after the previous one started; the heartbeat is sent every
 * round, whatever ListDatasets did. A dataset unregistered or replaced has
 * its preload jobs cancelled first (preload_cancel). Other errors
 * (a refused heartbeat, a dataset this worker cannot use) are logged once
 * per distinct message.
 *
 * The planning half below is pure (no I/O, no globals): it maps specs to
 * fetch configurations and diffs them against the registry, for unit tests.
 * Thread-safety: worker_meta_start/leave/stop from one thread;
 * worker_meta_sync_soon and the stats from any; everything else belongs to
 * the background thread.
 */
#ifndef GRANARY_CACHE_WORKER_META_H
#define GRANARY_CACHE_WORKER_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/placement.h"
#include "cache/blockstore.h"
#include "cache/fetch.h"
#include "cache/preload.h"
#include "cache/readiness.h"
#include "common/error.h"
#include "common/tls.h"
#include "granary.pb-c.h"
#include "store/store.h"

/* What the worker brings to every dataset it takes from meta. */
struct worker_meta_defaults {
	struct store_config store;      /* the worker's store settings; strings borrowed */
	uint64_t block_size;            /* cache.block_size, when options give none */
	enum blockstore_policy policy;  /* cache.policy, when options give none */
};

/* --- planning (pure) ------------------------------------------------------ */

/* True for the states in which meta serves a generation. */
bool worker_meta_dataset_served(const Granary__V1__Dataset *ds);

/*
 * The fetch configuration of a meta dataset on this worker: name and
 * source from the spec; endpoint and region from the spec, else the
 * worker's; credentials and every other store setting the worker's;
 * block size, policy and pin from options, else the worker's defaults.
 * Strings in *out point into spec and d. ERR_INVALID, naming the dataset
 * and the field, for a name block_dataset_name_check refuses or an
 * options.block_size / cache_policy it cannot use.
 */
enum error_code worker_meta_dataset_config(const Granary__V1__DatasetSpec *spec,
					   const struct worker_meta_defaults *d,
					   struct fetch_dataset_config *out, struct error *err);

/*
 * Whether replacing the membership held by these n workers may place on
 * worker self a block that held does not, so that its preloads must run
 * again: with rendezvous placement, only when self is among them and
 * either held did not list it or a member of held is not among them
 * (placement_all_among). A worker joining elsewhere only takes blocks
 * away from self; the same workers at other addresses move none.
 */
bool worker_meta_gains_blocks(struct placement *held, const struct placement_worker *workers,
			      size_t n, const char *self);

/* True when a registered dataset (desc) is what cfg would register. */
bool worker_meta_dataset_matches(const struct fetch_dataset_desc *desc,
				 const struct fetch_dataset_config *cfg);

/*
 * The preload meta's dataset asks of the workers, as a string that
 * changes when the request does: its snapshot generation, when that was
 * built (created_unix_ms: a dataset deleted and registered again starts
 * at generation 1 again, built anew) and its options.preload_prefixes
 * (none: the whole dataset). False when the dataset asks for none
 * (options.preload off) or the string does not fit in size bytes. A
 * worker starts a job whenever this changes, so a preload switched on,
 * new prefixes, a new generation (a refresh) and a new registration each
 * start one, and a pin or policy change none.
 */
bool worker_meta_preload_wanted(const Granary__V1__Dataset *ds, char *out, size_t size);

/* What one round changes. Indices point into the ListDatasets reply. */
struct worker_meta_plan {
	size_t *add;     /* register: absent here, different here, or not yet taken from meta */
	size_t nadd;
	size_t *bad;     /* served, but worker_meta_dataset_config refuses the spec */
	size_t nbad;
	char **drop;     /* taken from meta earlier, no longer listed: unregister (copies) */
	size_t ndrop;
};

/*
 * Diffs meta's list against the registry: have (nhave descriptors of the
 * registered datasets, any order) and owned (the names taken from meta
 * so far). A dataset meta lists but does not serve yet (REGISTERING) is
 * neither added nor dropped. Only ERR_NOMEM; release *out with
 * worker_meta_plan_release either way.
 */
enum error_code worker_meta_plan_make(const Granary__V1__ListDatasetsReply *list,
				      const struct worker_meta_defaults *d,
				      const struct fetch_dataset_desc *const *have, size_t nhave,
				      const char *const *owned, size_t nowned,
				      struct worker_meta_plan *out, struct error *err);
void worker_meta_plan_release(struct worker_meta_plan *p);

/* --- the member ------------------------------------------------------------ */

struct worker_meta_config {
	const char *address;            /* granary-meta: unix:///path or host:port */
	const char *key_file;           /* worker role key (meta.key_file); NULL/"": unsigned */
	const char *identity_token_file; /* meta.identity_token_file; NULL/"": none */
	const struct tls_material *tls; /* TLS to meta (meta.tls.*); borrowed; NULL: plaintext */
	const char *worker_id;          /* see worker_settings_worker_id */
	const char *advertise;          /* host:port peers fetch blocks from */
	uint64_t capacity;              /* cache.capacity, reported in heartbeats */
	uint64_t settle_ms;             /* placement.settle: a membership unchanged this
					 * long is acted on: the blocks other workers own
					 * are dropped here, preloads place blocks by it;
					 * 0: at once, nothing dropped */
	struct fetcher *fetcher;        /* borrowed; must outlive the member */
	struct preloader *preloader;    /* borrowed; must outlive the member, which
					 * cancels its jobs when it stops; NULL:
					 * options.preload is ignored */
	struct readiness *readiness;    /* borrowed; NULL: none. Told of every accepted
					 * heartbeat and every failed call */
	struct worker_meta_defaults defaults;
	uint64_t call_timeout_ms;       /* one call to meta; 0 = 2 s (below meta's interval) */
	uint64_t retry_ms;              /* round interval until meta names one; 0 = 1 s */
	uint64_t preload_retry_ms;      /* a failed preload starts again after 1/2 to 1
					 * times this, twice as long each time up to
					 * 15-30 times this; 0 = 2 s */
};

struct worker_meta;

/* What the member has done so far (for logs and tests). */
struct worker_meta_stats {
	uint64_t rounds;
	uint64_t heartbeats;            /* accepted by meta */
	uint64_t failures;              /* rounds in which meta could not be reached */
	uint64_t registered, unregistered, preloads;
	uint64_t unowned_dropped;       /* blocks dropped because another worker owns them */
	uint64_t interval_ms;           /* current round interval */
	bool connected;                 /* the last round reached meta */
};

/*
 * Copies cfg's strings, opens the channel to meta (no connection yet) and
 * starts the thread, whose first round runs at once. ERR_INVALID for a
 * malformed address or missing field, ERR_NOMEM. Meta being unreachable
 * is not an error here: the rounds retry.
 */
enum error_code worker_meta_start(const struct worker_meta_config *cfg, struct worker_meta **out,
				  struct error *err);

/*
 * The worker is stopping: ends the rounds, then, when meta accepted a
 * heartbeat of this process, sends one last Heartbeat marked leaving, so
 * that meta drops this worker now, not at its expiry: mounts stop sending
 * it requests, and the next process with its id may join. The round in
 * progress ends at its next step, skipping the rest (further calls, the
 * sweep): this waits for the step in flight, a call to meta (within
 * call_timeout_ms) or a preload being cancelled (its blocks in progress,
 * one store fetch each), then for the leaving heartbeat (within
 * call_timeout_ms). A failure is logged, not returned. From then on
 * worker_meta_sync_soon answers false at once. NULL is a no-op.
 */
void worker_meta_leave(struct worker_meta *wm);

/* Stops the thread unless worker_meta_leave did (a call in progress
 * finishes within call_timeout_ms), cancels the preload jobs it started
 * (they place blocks by its membership) and frees everything. Datasets
 * stay registered. NULL is a no-op. */
void worker_meta_stop(struct worker_meta *wm);

/*
 * A request named a dataset this worker does not have (meta may have
 * registered it since the last round): asks the thread for a round that
 * starts after this call, and waits for its end, at most wait_ms. Asked
 * rounds start at least WORKER_META_ASKED_GAP_MS after the last round
 * ended, so that requests naming unknown datasets cannot make the worker
 * call meta more often than that, and they list the datasets only: the
 * heartbeat keeps its interval. Returns whether such a round ended in
 * time. Thread-safe; call before worker_meta_stop.
 */
#define WORKER_META_ASKED_GAP_MS 200
bool worker_meta_sync_soon(struct worker_meta *wm, uint64_t wait_ms);

void worker_meta_get_stats(struct worker_meta *wm, struct worker_meta_stats *out);

#endif
