/*
 * worker_settings.c - the settings table of granary-worker and its checks.
 */
#include "cache/worker_settings.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "block/name.h"
#include "common/cpu.h"
#include "common/log.h"
#include "common/netaddr.h"
#include "store/store.h"

const char *const worker_cache_policy_names[] = { "lru", "scan-resistant", NULL };

/* Scan-resistant admission is the default: an epoch over a dataset larger
 * than the cache would otherwise evict every block before its next use. */
static const struct config_field worker_fields[] = {
	{ "listen", CONFIG_STRING, offsetof(struct worker_settings, listen), "0.0.0.0:7480",
	  "HTTP address peers fetch blocks from: host:port or unix:///path", 0, 0, NULL },
	{ "probe_listen", CONFIG_STRING, offsetof(struct worker_settings, probe_listen), "",
	  "address of a listener that serves only GET /healthz and /readyz, for the kubelet's"
	  " probes: host:port or unix:///path (empty: none; they are on listen too), so that"
	  " listen's connection limits do not fail them", 0, 0, NULL },
	{ "node_id", CONFIG_STRING, offsetof(struct worker_settings, node_id), "",
	  "this node's name in the membership (empty: the hostname)", 0, 0, NULL },
	{ "meta.address", CONFIG_STRING, offsetof(struct worker_settings, meta_address), "",
	  "granary-meta address: unix:///path or host:port (empty: standalone, datasets only"
	  " through the HTTP API)", 0, 0, NULL },
	{ "meta.key_file", CONFIG_STRING, offsetof(struct worker_settings, meta_key_file), "",
	  "key of granary-meta's worker role: heartbeats and every other call to meta are "
	  "signed with it (absolute; empty: unsigned calls, served only by a meta with "
	  "auth.insecure)", 0, 0, NULL },
	{ "meta.identity_token_file", CONFIG_STRING,
	  offsetof(struct worker_settings, meta_identity_token_file), "",
	  "the worker pod's projected service account token, read again for every heartbeat "
	  "and sent with it: a meta in Kubernetes accepts a worker's heartbeats only with a "
	  "token of a worker pod on its node (absolute; empty: none)", 0, 0, NULL },
	{ "placement.settle", CONFIG_DURATION, offsetof(struct worker_settings, placement_settle_ms),
	  "30s", "once the worker membership has stayed the same this long, the worker drops the"
	  " cached blocks another live worker owns (rendezvous placement), so that a block has"
	  " one owner (0: never)", 0, 86400000, NULL },
	{ "advertise_address", CONFIG_STRING,
	  offsetof(struct worker_settings, advertise_address), "",
	  "host:port peers fetch blocks from, announced to meta (empty: listen, with a"
	  " wildcard host replaced by the hostname)", 0, 0, NULL },
	{ "cache.dir", CONFIG_STRING, offsetof(struct worker_settings, cache_dir),
	  "/var/cache/granary", "cache directory on NVMe or tmpfs (absolute)", 0, 0, NULL },
	{ "cache.capacity", CONFIG_SIZE, offsetof(struct worker_settings, cache_capacity), "10GiB",
	  "bytes of blocks the cache may hold", 0, 0, NULL },
	{ "cache.block_size", CONFIG_SIZE, offsetof(struct worker_settings, cache_block_size),
	  "4MiB", "block size, a power of two from 64KiB to 64MiB", 0, 0, NULL },
	{ "cache.policy", CONFIG_ENUM, offsetof(struct worker_settings, cache_policy),
	  "scan-resistant", "eviction policy", 0, 0, worker_cache_policy_names },
	{ "cache.direct_write", CONFIG_BOOL, offsetof(struct worker_settings, cache_direct_write),
	  "true",
	  "write blocks of 1MiB or more with O_DIRECT from a buffer the worker keeps, not through the page cache; the node's mounts read them with O_DIRECT (their cache.direct_read); smaller blocks (small files) go through the page cache",
	  0, 0, NULL },
	{ "token_file", CONFIG_STRING, offsetof(struct worker_settings, token_file), "",
	  "file holding the cluster token for block requests (empty: none)", 0, 0, NULL },
	{ "threads", CONFIG_INT, offsetof(struct worker_settings, threads), "0",
	  "read-ahead threads, which mostly wait on the store (0: 128, or four per CPU of the cgroup quota where that is more)",
	  0, 4096, NULL },
	{ "threads_min", CONFIG_INT, offsetof(struct worker_settings, threads_min), "64",
	  "fewest read-ahead jobs allowed at once: the pool begins with all its threads and tries fewer, down to this, while fewer lose no blocks per second (cache/inflight.h)",
	  1, 4096, NULL },
	{ "fetch.max_inflight", CONFIG_INT, offsetof(struct worker_settings, fetch_max_inflight),
	  "128", "object-store block fetches in flight at once", 1, 4096, NULL },
	{ "fetch.readahead_max", CONFIG_INT,
	  offsetof(struct worker_settings, fetch_readahead_max), "16",
	  "most blocks one request may ask to read ahead (0: no read-ahead)", 0, 256, NULL },
	{ "fetch.coalesce_max", CONFIG_SIZE,
	  offsetof(struct worker_settings, fetch_coalesce_max), "16MiB",
	  "most bytes one read-ahead GET fetches: consecutive blocks of an object go in one ranged GET (below two blocks: one GET per block)",
	  0, 1073741824, NULL },
	{ "preload.parallelism", CONFIG_INT,
	  offsetof(struct worker_settings, preload_parallelism), "16",
	  "blocks one preload job fetches at once", 1, 1024, NULL },
	{ "http.max_connections", CONFIG_INT,
	  offsetof(struct worker_settings, http_max_connections), "1024",
	  "client connections served at once (one thread each)", 1, 65536, NULL },
	{ "http.max_connections_per_address", CONFIG_INT,
	  offsetof(struct worker_settings, http_max_connections_per_address), "256",
	  "connections one client address may hold at once; more are refused (0: no limit)",
	  0, 65536, NULL },
	{ "http.idle_timeout", CONFIG_DURATION,
	  offsetof(struct worker_settings, http_idle_timeout_ms), "2m",
	  "an idle keep-alive connection is closed after this long", 1000, 86400000, NULL },
	{ "http.request_timeout", CONFIG_DURATION,
	  offsetof(struct worker_settings, http_request_timeout_ms), "10s",
	  "a request must arrive whole within this (a new connection's first one: from the"
	  " accept), else its connection is closed", 1000, 600000, NULL },
	{ "http.shutdown_grace", CONFIG_DURATION,
	  offsetof(struct worker_settings, http_shutdown_grace_ms), "10s",
	  "at SIGTERM, requests in progress may finish within this", 0, 600000, NULL },
	{ "http.dataset_writes", CONFIG_BOOL,
	  offsetof(struct worker_settings, http_dataset_writes), "true",
	  "serve PUT and DELETE /v1/datasets/{name} to token holders; off: 403, the worker's "
	  "datasets come from granary-meta alone (a holder of the cluster token cannot register "
	  "one with a credentials file of the worker's, nor drop one)",
	  0, 0, NULL },
	STORE_SETTINGS_FIELDS(struct worker_settings, store),
	{ "store.allowed_endpoints", CONFIG_STRING,
	  offsetof(struct worker_settings, store_allowed_endpoints), "",
	  "S3 endpoints a dataset may name besides store.endpoint, comma-separated; they get "
	  "the worker's credentials, every other endpoint is refused", 0, 0, NULL },
	{ "listing.max_objects", CONFIG_INT,
	  offsetof(struct worker_settings, listing_max_objects), "50000000",
	  "objects a preload listing may return (past it the job fails)", 1, 4294967294.0,
	  NULL },
	{ "listing.max_pages", CONFIG_INT, offsetof(struct worker_settings, listing_max_pages),
	  "1000000", "ListObjectsV2 pages one preload listing may take", 1, 1e9, NULL },
	{ "listing.max_time", CONFIG_DURATION,
	  offsetof(struct worker_settings, listing_max_time_ms), "30m",
	  "time one preload listing may take, all pages", 1000, 7 * 86400000.0, NULL },
	{ "allowed_file_roots", CONFIG_STRING,
	  offsetof(struct worker_settings, allowed_file_roots), "",
	  "comma-separated directories of this host a file:// dataset may lie in, resolved "
	  "(empty: file:// datasets are refused)", 0, 0, NULL },
	TLS_SERVER_FIELDS(struct worker_settings, tls, "tls.", "the block service"),
	TLS_CLIENT_FIELDS(struct worker_settings, meta_tls, "meta.tls.", "granary-meta"),
	{ "log.level", CONFIG_STRING, offsetof(struct worker_settings, log_level), "info",
	  "debug, info, warn or error", 0, 0, NULL },
};

const struct config_schema worker_settings_schema = {
	.program = "granary-worker",
	.summary = "Granary node cache: serves dataset blocks to FUSE mounts and peers",
	.fields = worker_fields,
	.nfields = sizeof(worker_fields) / sizeof(worker_fields[0]),
};

static bool is_wildcard_host(const char *host)
{
	return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 || strcmp(host, "*") == 0;
}

/* advertise_address is what peers on other nodes dial: a concrete
 * host:port. Without it, listen must give one (a wildcard host is replaced
 * by the hostname at run time; a unix socket cannot be). */
static enum error_code check_advertise(const struct worker_settings *s, struct error *err)
{
	struct netaddr na;

	if (s->advertise_address && *s->advertise_address) {
		if (netaddr_parse(s->advertise_address, "address", &na, err) != ERR_OK)
			return error_wrap(err, "key 'advertise_address'");
		if (na.is_unix || is_wildcard_host(na.host))
			return error_set(err, ERR_INVALID,
					 "key 'advertise_address': must be host:port that peers on other nodes can dial, got '%s'",
					 s->advertise_address);
		return ERR_OK;
	}
	if (s->meta_address && *s->meta_address && s->listen &&
	    strncmp(s->listen, "unix://", 7) == 0)
		return error_set(err, ERR_INVALID,
				 "key 'advertise_address': required when meta.address is set and listen is a unix socket ('%s'): peers need host:port",
				 s->listen);
	return ERR_OK;
}

enum error_code worker_settings_check(const struct worker_settings *s, struct error *err)
{
	const uint64_t bs = s->cache_block_size;
	char *roots[STORE_FILE_ROOTS_MAX];
	size_t n = 0;

	if (netaddr_check_setting("listen", s->listen, err) != ERR_OK)
		return ERR_INVALID;
	if (s->probe_listen && *s->probe_listen) {
		if (netaddr_check_listen_setting("probe_listen", s->probe_listen, err) != ERR_OK)
			return ERR_INVALID;
		if (s->listen && strcmp(s->probe_listen, s->listen) == 0)
			return error_set(err, ERR_INVALID,
					 "key 'probe_listen': '%s' is listen's address; the probes need one of their own",
					 s->probe_listen);
	}
	if (s->node_id && config_check_node_name("node_id", s->node_id, err) != ERR_OK)
		return ERR_INVALID;
	if (s->meta_address && *s->meta_address &&
	    netaddr_check_setting("meta.address", s->meta_address, err) != ERR_OK)
		return ERR_INVALID;
	if (s->meta_key_file && *s->meta_key_file &&
	    config_check_abs_path("meta.key_file", s->meta_key_file, err) != ERR_OK)
		return ERR_INVALID;
	if (s->meta_identity_token_file && *s->meta_identity_token_file &&
	    config_check_abs_path("meta.identity_token_file", s->meta_identity_token_file, err) !=
		    ERR_OK)
		return ERR_INVALID;
	if (check_advertise(s, err) != ERR_OK)
		return ERR_INVALID;
	if (tls_server_check("tls.", &s->tls, NULL, err) != ERR_OK ||
	    tls_client_check("meta.tls.", &s->meta_tls, err) != ERR_OK)
		return ERR_INVALID;
	if (config_check_abs_path("cache.dir", s->cache_dir, err) != ERR_OK)
		return ERR_INVALID;
	if (block_size_check("key 'cache.block_size'", bs, err) != ERR_OK)
		return ERR_INVALID;
	if (s->cache_capacity < bs)
		return error_set(err, ERR_INVALID,
				 "key 'cache.capacity': must hold at least one block (cache.block_size %llu bytes), got %llu bytes",
				 (unsigned long long)bs, (unsigned long long)s->cache_capacity);
	if (s->token_file && *s->token_file &&
	    config_check_abs_path("token_file", s->token_file, err) != ERR_OK)
		return ERR_INVALID;
	if (s->threads < 0)
		return error_set(err, ERR_INVALID,
				 "key 'threads': must be 0 (auto) or more, got %lld",
				 (long long)s->threads);
	if (s->threads_min < 1)
		return error_set(err, ERR_INVALID,
				 "key 'threads_min': must be at least 1, got %lld",
				 (long long)s->threads_min);
	if (s->fetch_max_inflight < 1)
		return error_set(err, ERR_INVALID,
				 "key 'fetch.max_inflight': must be at least 1, got %lld",
				 (long long)s->fetch_max_inflight);
	if (s->fetch_readahead_max < 0 || s->fetch_readahead_max > 256)
		return error_set(err, ERR_INVALID,
				 "key 'fetch.readahead_max': must be from 0 to 256, got %lld",
				 (long long)s->fetch_readahead_max);
	if (s->preload_parallelism < 1)
		return error_set(err, ERR_INVALID,
				 "key 'preload.parallelism': must be at least 1, got %lld",
				 (long long)s->preload_parallelism);
	if (s->http_max_connections < 1)
		return error_set(err, ERR_INVALID,
				 "key 'http.max_connections': must be at least 1, got %lld",
				 (long long)s->http_max_connections);
	if (s->store.endpoint && *s->store.endpoint &&
	    store_check_endpoint(s->store.endpoint, err) != ERR_OK)
		return error_wrap(err, "key 'store.endpoint'");
	if (store_check_endpoint_list("store.allowed_endpoints", s->store_allowed_endpoints,
				      err) != ERR_OK)
		return ERR_INVALID;
	if (worker_settings_file_roots(s, roots, &n, err) != ERR_OK)
		return ERR_INVALID;
	config_dirs_free(roots, n);
	if (config_check_log_level("log.level", s->log_level, err) != ERR_OK)
		return ERR_INVALID;
	return ERR_OK;
}

enum error_code worker_settings_file_roots(const struct worker_settings *s,
					   char *roots[STORE_FILE_ROOTS_MAX], size_t *n,
					   struct error *err)
{
	return config_split_dirs("allowed_file_roots", s->allowed_file_roots, roots,
				 STORE_FILE_ROOTS_MAX, n, err);
}

int worker_settings_threads(const struct worker_settings *s)
{
	int per_cpu = WORKER_THREADS_PER_CPU * cpu_available();

	if (s->threads > 0)
		return (int)s->threads;
	return per_cpu > WORKER_THREADS_MIN ? per_cpu : WORKER_THREADS_MIN;
}

unsigned worker_settings_store_connections(const struct worker_settings *s)
{
	if (s->store.max_connections > 0)
		return (unsigned)s->store.max_connections;
	return (unsigned)(s->fetch_max_inflight + worker_settings_threads(s));
}

enum error_code worker_settings_worker_id(const struct worker_settings *s, const char *hostname,
					  char *out, size_t size, struct error *err)
{
	const char *id = s->node_id && *s->node_id ? s->node_id : hostname;

	if (!id || !*id)
		return error_set(err, ERR_INVALID,
				 "key 'node_id': empty and the hostname is unknown; set node_id");
	if (config_check_node_name("node_id", id, err) != ERR_OK)
		return ERR_INVALID;
	if (strlen(id) >= size)
		return error_set(err, ERR_INVALID, "key 'node_id': '%s' is too long", id);
	memcpy(out, id, strlen(id) + 1);
	return ERR_OK;
}

enum error_code worker_settings_advertise(const struct worker_settings *s, const char *hostname,
					  char *out, size_t size, struct error *err)
{
	struct netaddr na;
	int n;

	if (s->advertise_address && *s->advertise_address) {
		n = snprintf(out, size, "%s", s->advertise_address);
	} else {
		if (netaddr_parse(s->listen, "address", &na, err) != ERR_OK)
			return error_wrap(err, "key 'listen'");
		if (na.is_unix)
			return error_set(err, ERR_INVALID,
					 "key 'advertise_address': required when listen is a unix socket ('%s')",
					 s->listen);
		if (is_wildcard_host(na.host)) {
			if (!hostname || !*hostname)
				return error_set(err, ERR_INVALID,
						 "key 'advertise_address': listen '%s' has no host peers can dial and the hostname is unknown; set advertise_address",
						 s->listen);
			n = snprintf(out, size, "%s:%d", hostname, na.port);
		} else if (strchr(na.host, ':')) {
			n = snprintf(out, size, "[%s]:%d", na.host, na.port);
		} else {
			n = snprintf(out, size, "%s:%d", na.host, na.port);
		}
	}
	if (n < 0 || (size_t)n >= size)
		return error_set(err, ERR_INVALID, "key 'advertise_address': longer than %zu bytes",
				 size - 1);
	return ERR_OK;
}
