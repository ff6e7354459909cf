/*
 * worker_settings.h - the settings of granary-worker, the per-node cache:
 * where it serves blocks to peers, which node it is, where meta is, the
 * cache directory with its capacity, block size and eviction policy, the
 * cluster token that authenticates block requests, and its thread pools.
 *
 * The table (worker_settings_schema) gives types, tuned defaults and help;
 * worker_settings_check() adds the rules a table cannot state. Strings are
 * owned by the struct: release them with config_release().
 */
#ifndef GRANARY_CACHE_WORKER_SETTINGS_H
#define GRANARY_CACHE_WORKER_SETTINGS_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "common/error.h"
#include "common/tls.h"
#include "store/store_settings.h"

enum worker_cache_policy {
	WORKER_CACHE_LRU = 0,        /* plain least-recently-used */
	WORKER_CACHE_SCAN_RESISTANT, /* keeps a stable subset when the dataset exceeds the cache */
};

extern const char *const worker_cache_policy_names[]; /* "lru", "scan-resistant" */

struct worker_settings {
	char *listen;             /* HTTP block service: host:port or unix:///path */
	char *probe_listen;       /* /healthz and /readyz alone; "" = none */
	char *node_id;            /* "" = the hostname, resolved at run time */
	char *meta_address;       /* "" = standalone: datasets only through the HTTP API */
	char *meta_key_file;      /* worker role key; "" = unsigned calls */
	char *meta_identity_token_file; /* the pod's service account token; "" = none */
	char *advertise_address;  /* host:port peers reach; "" = derived from listen */
	char *cache_dir;
	uint64_t cache_capacity;  /* bytes */
	uint64_t cache_block_size; /* bytes; a power of two */
	int cache_policy;         /* enum worker_cache_policy */
	bool cache_direct_write;  /* blocks written with O_DIRECT */
	char *token_file;         /* cluster token for block requests; "" = none */
	int64_t threads;          /* 0 = cpu_available() */
	int64_t threads_min;      /* read-ahead jobs at once to start from */
	int64_t fetch_max_inflight; /* concurrent object-store fetches */
	int64_t fetch_readahead_max; /* most blocks one request may read ahead */
	uint64_t fetch_coalesce_max; /* most bytes of one read-ahead GET */
	int64_t preload_parallelism; /* blocks one preload job fetches at once */
	int64_t http_max_connections;
	int64_t http_max_connections_per_address; /* per client address; 0 = no limit */
	uint64_t http_idle_timeout_ms;   /* an idle keep-alive connection is closed after */
	uint64_t http_request_timeout_ms; /* a whole request must arrive within */
	uint64_t http_shutdown_grace_ms; /* requests in progress may finish within, at SIGTERM */
	bool http_dataset_writes;        /* PUT and DELETE /v1/datasets/{name} served */
	uint64_t placement_settle_ms;    /* steady membership before unowned blocks go; 0: never */
	struct store_settings store;
	char *store_allowed_endpoints; /* comma-separated, besides store.endpoint */
	int64_t listing_max_objects;   /* objects in one preload listing */
	int64_t listing_max_pages;     /* ListObjectsV2 pages in one preload listing */
	uint64_t listing_max_time_ms;  /* one preload listing, all pages */
	char *allowed_file_roots; /* comma-separated; "" = no file:// datasets */
	struct tls_server_settings tls;      /* HTTPS for the block service */
	struct tls_client_settings meta_tls; /* TLS to granary-meta */
	char *log_level;
};

extern const struct config_schema worker_settings_schema;

/*
 * Checks what the table cannot: listen (and meta.address when set) are
 * valid addresses, advertise_address (when set) a host:port that is not a
 * wildcard, and given when meta.address is set and listen is a unix socket, cache.dir (and token_file, meta.key_file and meta.identity_token_file when set) absolute paths,
 * cache.block_size a power of two between 64KiB and 64MiB, cache.capacity
 * at least one block, node_id a plausible node name, the store endpoint and
 * each of store.allowed_endpoints a valid URL (when set), the thread and connection counts positive,
 * allowed_file_roots absolute directories, the tls.* and meta.tls.*
 * settings (tls_server_check, tls_client_check) and log.level a known level. token_file may be empty here; granary-worker
 * itself refuses to serve without one. Returns ERR_OK, or
 * ERR_INVALID with a message naming the key:
 * "key 'cache.dir': must be an absolute path, got 'cache'".
 */
enum error_code worker_settings_check(const struct worker_settings *s, struct error *err);

/* allowed_file_roots split (config_split_dirs) into roots[0..*n): free
 * them with config_dirs_free. ERR_INVALID naming the key. */
enum error_code worker_settings_file_roots(const struct worker_settings *s,
					   char *roots[STORE_FILE_ROOTS_MAX], size_t *n,
					   struct error *err);

/* The read-ahead pool when threads is 0: its threads mostly wait on the
 * store, and they carry the node's mounts' small-file prefetch, one file
 * in flight each, which with a far store sets the pace
 * (docs/benchmarks.md, "128 files in flight"): at least
 * WORKER_THREADS_MIN, and WORKER_THREADS_PER_CPU per CPU where that is
 * more. */
#define WORKER_THREADS_MIN 128
#define WORKER_THREADS_PER_CPU 4

/* The size of the worker's read-ahead pool: threads, or the default
 * above when 0. */
int worker_settings_threads(const struct worker_settings *s);

/* The connections each dataset's store keeps for the next request (a
 * pool per dataset):
 * store.max_connections, or when 0 one per store fetch the worker runs
 * at once (fetch.max_inflight for readers, and the read-ahead pool), so
 * that connections opened for a busy moment are not closed only to be
 * opened again (each a TLS handshake with an HTTPS store). */
unsigned worker_settings_store_connections(const struct worker_settings *s);

/*
 * The id this worker gives granary-meta: node_id, or hostname when node_id
 * is empty. Copied into out (size bytes). ERR_INVALID when the result is
 * empty, too long or not a valid node name ("key 'node_id': ...").
 */
enum error_code worker_settings_worker_id(const struct worker_settings *s, const char *hostname,
					  char *out, size_t size, struct error *err);

/*
 * The host:port peers fetch blocks from, as announced to granary-meta:
 * advertise_address when set; else listen, with a wildcard host (0.0.0.0,
 * ::) replaced by hostname. ERR_INVALID when listen is a unix socket and no
 * advertise_address is set, or the result does not fit size.
 */
enum error_code worker_settings_advertise(const struct worker_settings *s, const char *hostname,
					  char *out, size_t size, struct error *err);

#endif
