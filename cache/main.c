/*
 * granary-worker - the per-node cache: owns the node's cache directory,
 * serves blocks to local mounts and peers over HTTP, fetches misses from
 * the object store once each, and runs preload jobs.
 *
 * Start-up: settings, the cluster token (required), the blockstore, the
 * fetcher with its read-ahead pool, the preloader, the readiness verdict
 * (cache/readiness.h, which the HTTP server asks and the membership thread
 * informs), the HTTP server and, when meta.address is set, the membership
 * thread (cache/worker_meta.h: heartbeats, datasets from meta). Then the
 * main thread sleeps in sigsuspend until SIGTERM/SIGINT and tears the
 * same things down: the membership thread stops heartbeating and tells
 * meta this worker leaves (mounts stop picking it before it stops
 * answering), no new connections, requests in progress finish within
 * http.shutdown_grace, the membership thread is freed (after the HTTP
 * server: requests may call it until then), every thread joined, exit 0.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#include "cache/blockstore.h"
#include "cache/fetch.h"
#include "cache/http.h"
#include "cache/preload.h"
#include "cache/readiness.h"
#include "block/file.h"
#include "block/token.h"
#include "cache/worker_meta.h"
#include "cache/worker_settings.h"
#include "common/daemon.h"
#include "common/log.h"
#include "common/retry.h"
#include "store/store_settings.h"

/* How long a block request naming a dataset not registered here waits for
 * a round with meta (which may have registered it since the last round):
 * below the mounts' worker.first_byte_timeout (1 s by default). */
#define UNKNOWN_DATASET_WAIT_MS 500

/* The membership thread, once started, for worker_http's dataset_unknown. */
static _Atomic(struct worker_meta *) member_for_http;

static bool dataset_unknown(void *arg)
{
	struct worker_meta *wm = atomic_load(&member_for_http);

	(void)arg;
	return wm && worker_meta_sync_soon(wm, UNKNOWN_DATASET_WAIT_MS);
}

int main(int argc, char **argv)
{
	const struct config_schema *schema = &worker_settings_schema;
	struct worker_settings s;
	struct token *tok = NULL;
	struct blockstore *bs = NULL;
	struct fetcher *f = NULL;
	struct preloader *pl = NULL;
	struct worker_http *http = NULL;
	struct worker_meta *member = NULL;
	struct readiness *ready = NULL;
	struct store_config store_defaults;
	struct tls_material tls = { 0 }, meta_tls = { 0 };
	char hostname[256] = "", worker_id[256] = "", advertise[300] = "";
	char *file_roots[STORE_FILE_ROOTS_MAX];
	size_t nfile_roots = 0;
	sigset_t stop_signals, wait_mask;
	struct error err;
	unsigned threads;
	int rc;

	rc = daemon_start(schema, &s, argc, argv, NULL);
	if (rc >= 0)
		return rc;
	if (worker_settings_check(&s, &err) != ERR_OK)
		return daemon_refuse(schema, &s, &err);
	threads = (unsigned)worker_settings_threads(&s);
	rc = 2;
	if (worker_settings_file_roots(&s, file_roots, &nfile_roots, &err) != ERR_OK) {
		daemon_report(schema, &err);
		goto out;
	}
	if (!s.token_file || !*s.token_file) {
		fprintf(stderr,
			"%s: key 'token_file': required: the worker serves blocks only to clients that hold the cluster token (a file of at least %d bytes, mode 0600)\n",
			schema->program, TOKEN_SECRET_MIN);
		goto out;
	}
	if (token_load_file(s.token_file, &tok, &err) != ERR_OK) {
		daemon_report(schema, &err);
		goto out;
	}
	if (tls_server_load("tls.", &s.tls, NULL, &tls, &err) != ERR_OK ||
	    tls_client_load("meta.tls.", &s.meta_tls, &meta_tls, &err) != ERR_OK) {
		daemon_report(schema, &err);
		goto out;
	}
	if (*s.meta_address) {
		if (gethostname(hostname, sizeof(hostname) - 1) != 0)
			hostname[0] = '\0';
		if (worker_settings_worker_id(&s, hostname, worker_id, sizeof(worker_id), &err) !=
			    ERR_OK ||
		    worker_settings_advertise(&s, hostname, advertise, sizeof(advertise), &err) !=
			    ERR_OK) {
			daemon_report(schema, &err);
			goto out;
		}
	}

	/* Threads started from here on inherit the blocked mask, so only the
	 * main thread's sigsuspend ever takes SIGTERM/SIGINT. */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop_signals, &wait_mask);
	sigdelset(&wait_mask, SIGTERM);
	sigdelset(&wait_mask, SIGINT);
	daemon_handle_signals();

	rc = 1;
	if (blockstore_open(&(struct blockstore_config){ .dir = s.cache_dir,
							  .capacity = s.cache_capacity,
							  .block_size = (uint32_t)s.cache_block_size,
							  .direct_write = s.cache_direct_write,
							  .direct_write_min = BLOCK_DIRECT_MIN },
			    &bs, &err) != ERR_OK) {
		log_error("cannot open the cache", LOG_S("cause", err.msg));
		goto out;
	}
	if (fetch_new(&(struct fetch_config){ .bs = bs,
					       .max_inflight = (unsigned)s.fetch_max_inflight,
					       .threads = threads,
					       .readahead_inflight = (unsigned)s.threads_min,
					       .readahead_inflight_max = threads,
					       .readahead_inflight_start = threads,
					       .readahead_max = (unsigned)s.fetch_readahead_max,
					       .coalesce_bytes = s.fetch_coalesce_max,
					       .no_recent = true,
					       .file_roots = (const char *const *)file_roots,
					       .nfile_roots = nfile_roots,
					       .default_endpoint = s.store.endpoint,
					       .allowed_endpoints = s.store_allowed_endpoints },
		      &f, &err) != ERR_OK) {
		log_error("cannot start the fetcher", LOG_S("cause", err.msg));
		goto out;
	}
	if (preload_new(f, (unsigned)s.preload_parallelism,
			&(struct store_list_limits){ .max_pages = (uint64_t)s.listing_max_pages,
						     .max_objects = (uint64_t)s.listing_max_objects,
						     .max_ms = s.listing_max_time_ms },
			&pl, &err) != ERR_OK) {
		log_error("cannot start the preloader", LOG_S("cause", err.msg));
		goto out;
	}
	if (readiness_new(bs, s.meta_address, retry_now_ms(), &ready, &err) != ERR_OK) {
		log_error("cannot start", LOG_S("cause", err.msg));
		goto out;
	}
	store_settings_to_config(&s.store, &store_defaults);
	store_defaults.max_connections = worker_settings_store_connections(&s);
	if (worker_http_start(
		    &(struct worker_http_config){
			    .listen = s.listen,
			    .probe_listen = s.probe_listen,
			    .fetcher = f,
			    .preloader = pl,
			    .token = tok,
			    .store_defaults = store_defaults,
			    .block_size = s.cache_block_size,
			    .policy = s.cache_policy == WORKER_CACHE_LRU ? BLOCKSTORE_LRU
									 : BLOCKSTORE_SCAN_RESISTANT,
			    .max_connections = (unsigned)s.http_max_connections,
			    .max_connections_per_address =
				    (unsigned)s.http_max_connections_per_address,
			    .idle_timeout_ms = s.http_idle_timeout_ms,
			    .request_timeout_ms = s.http_request_timeout_ms,
			    .readiness = ready,
			    .tls = &tls,
			    .dataset_unknown = dataset_unknown,
			    .dataset_writes = s.http_dataset_writes,
		    },
		    &http, &err) != ERR_OK) {
		log_error("cannot serve", LOG_S("cause", err.msg));
		goto out;
	}
	log_info("serving", LOG_S("listen", s.listen), LOG_S("probe_listen", s.probe_listen), LOG_S("cache.dir", s.cache_dir),
		 LOG_U("cache.capacity", s.cache_capacity),
		 LOG_U("cache.block_size", s.cache_block_size),
		 LOG_S("cache.policy", worker_cache_policy_names[s.cache_policy]),
		 LOG_I("threads", threads),
		 LOG_I("threads_min", s.threads_min),
		 LOG_I("fetch.max_inflight", s.fetch_max_inflight),
		 LOG_S("store.endpoint", s.store.endpoint), LOG_S("store.region", s.store.region),
		 LOG_S("tls", tls_material_server(&tls) ? "on" : "off"));
	if (*s.meta_address &&
	    worker_meta_start(
		    &(struct worker_meta_config){
			    .address = s.meta_address,
			    .key_file = s.meta_key_file,
			    .identity_token_file = s.meta_identity_token_file,
			    .tls = &meta_tls,
			    .worker_id = worker_id,
			    .advertise = advertise,
			    .capacity = s.cache_capacity,
			    .settle_ms = s.placement_settle_ms,
			    .fetcher = f,
			    .preloader = pl,
			    .readiness = ready,
			    .defaults = { .store = store_defaults,
					  .block_size = s.cache_block_size,
					  .policy = s.cache_policy == WORKER_CACHE_LRU
							    ? BLOCKSTORE_LRU
							    : BLOCKSTORE_SCAN_RESISTANT },
		    },
		    &member, &err) != ERR_OK) {
		log_error("cannot join granary-meta", LOG_S("cause", err.msg));
		goto out;
	}
	atomic_store(&member_for_http, member);

	while (!daemon_stopping())
		sigsuspend(&wait_mask);
	log_info("stopping", LOG_U("grace_ms", s.http_shutdown_grace_ms));
	worker_meta_leave(member);
	rc = 0;
out:
	worker_http_stop(http, s.http_shutdown_grace_ms);
	atomic_store(&member_for_http, NULL);
	worker_meta_stop(member);
	readiness_free(ready);
	preload_free(pl);
	fetch_free(f);
	if (bs)
		blockstore_free(bs);
	token_free(tok);
	tls_material_release(&tls);
	tls_material_release(&meta_tls);
	config_dirs_free(file_roots, nfile_roots);
	if (rc == 0)
		log_info("stopped");
	config_release(schema, &s);
	return rc;
}
