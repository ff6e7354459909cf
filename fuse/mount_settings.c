/*
 * mount_settings.c - the settings table of granary-fuse and its checks.
 */
#include "fuse/mount_settings.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "block/name.h"
#include "common/cpu.h"
#include "common/fusemount.h"
#include "common/log.h"
#include "common/netaddr.h"
#include "store/store.h"

/* The dataset is immutable for a generation, so the kernel may cache
 * dentries, attributes and pages for an hour: no meta round trip per file
 * operation (the seed study's first bottleneck). */
static const struct config_field fuse_fields[] = {
	{ "mountpoint", CONFIG_STRING, offsetof(struct mount_settings, mountpoint), "",
	  "directory to mount the dataset on (absolute, required)", 0, 0, NULL },
	{ "dataset", CONFIG_STRING, offsetof(struct mount_settings, dataset), "",
	  "dataset name registered in granary-meta (or give source)", 0, 0, NULL },
	{ "source", CONFIG_STRING, offsetof(struct mount_settings, source), "",
	  "standalone: object-store URI such as s3://bucket/prefix/ (or give dataset)",
	  0, 0, NULL },
	{ "meta.address", CONFIG_STRING, offsetof(struct mount_settings, meta_address),
	  "unix:///run/granary/meta.sock", "granary-meta address: unix:///path or host:port",
	  0, 0, NULL },
	{ "meta.key_file", CONFIG_STRING, offsetof(struct mount_settings, meta_key_file), "",
	  "key of granary-meta's mount role: every call to meta is signed with it (absolute; "
	  "empty: unsigned calls, served only by a meta with auth.insecure)", 0, 0, NULL },
	{ "cache.dir", CONFIG_STRING, offsetof(struct mount_settings, cache_dir),
	  "/var/cache/granary",
	  "cache directory (absolute): the worker's with dataset, one of its own with source",
	  0, 0, NULL },
	{ "cache.capacity", CONFIG_SIZE, offsetof(struct mount_settings, cache_capacity), "10GiB",
	  "bytes of blocks the cache may hold", 0, 0, NULL },
	{ "cache.block_size", CONFIG_SIZE, offsetof(struct mount_settings, cache_block_size), "4MiB",
	  "block size, a power of two from 64KiB to 64MiB (as the worker's)", 0, 0, NULL },
	{ "cache.write_behind", CONFIG_INT, offsetof(struct mount_settings, cache_write_behind), "8",
	  "standalone: blocks served to readers before they are written to the cache, at most (each holds a block of memory until written; 0: written first)",
	  0, 1024, NULL },
	{ "cache.direct_read", CONFIG_BOOL, offsetof(struct mount_settings, cache_direct_read),
	  "true",
	  "read cached block files of 1MiB or more with O_DIRECT, not through the page cache (standalone the mount's own, with meta the node worker's; both are written with O_DIRECT, and the bytes are kept in the FUSE file's pages)",
	  0, 0, NULL },
	{ "entry_timeout", CONFIG_DURATION, offsetof(struct mount_settings, entry_timeout_ms),
	  "3600s", "how long the kernel caches names", 0, 0, NULL },
	{ "attr_timeout", CONFIG_DURATION, offsetof(struct mount_settings, attr_timeout_ms), "3600s",
	  "how long the kernel caches attributes", 0, 0, NULL },
	{ "keep_cache", CONFIG_BOOL, offsetof(struct mount_settings, keep_cache), "true",
	  "keep the page cache of a file across opens", 0, 0, NULL },
	{ "no_open", CONFIG_BOOL, offsetof(struct mount_settings, no_open), "true",
	  "with keep_cache: the kernel opens and closes files without a request to the mount (FUSE no_open), so a file read from the page cache costs the mount nothing",
	  0, 0, NULL },
	{ "max_read", CONFIG_SIZE, offsetof(struct mount_settings, max_read), "1MiB",
	  "largest FUSE read request, a multiple of 4KiB up to 1MiB", 0, 0, NULL },
	{ "max_background", CONFIG_INT, offsetof(struct mount_settings, max_background), "64",
	  "FUSE requests the kernel may have in flight in the background", 1, 65535, NULL },
	{ "max_idle_threads", CONFIG_INT, offsetof(struct mount_settings, max_idle_threads), "0",
	  "idle FUSE loop threads kept (0: sized from the CPU quota)", 0, 4096, NULL },
	{ "clone_fd", CONFIG_BOOL, offsetof(struct mount_settings, clone_fd), "true",
	  "one /dev/fuse descriptor per loop thread", 0, 0, NULL },
	{ "splice", CONFIG_BOOL, offsetof(struct mount_settings, splice), "false",
	  "reply to reads through a pipe (SPLICE_WRITE); see docs/fuse-tuning.md", 0, 0, NULL },
	{ "read_ahead", CONFIG_SIZE, offsetof(struct mount_settings, read_ahead), "1MiB",
	  "kernel read-ahead of the mount (bdi read_ahead_kb), a multiple of 4KiB",
	  0, 1073741824, NULL },
	{ "prefetch.blocks", CONFIG_INT, offsetof(struct mount_settings, prefetch_blocks), "4",
	  "blocks fetched ahead of a sequential reader", 0, 1024, NULL },
	{ "prefetch.files", CONFIG_INT, offsetof(struct mount_settings, prefetch_files), "64",
	  "files read ahead after a small file (one block) that missed the cache, the next ones of its directory in listing order, once two of that directory missed (one, once two of its sibling directories did), and further as reads come within half of this of the last one asked for (standalone by the read-ahead threads, with meta by one request per owner worker naming its files; 0: none)",
	  0, PREFETCH_FILES_MAX, NULL },
	{ "prefetch.files_max", CONFIG_INT, offsetof(struct mount_settings, prefetch_files_max),
	  "256",
	  "standalone: the most read-ahead fetches at once (small files and blocks): from prefetch.files (or the read-ahead threads' floor), more are tried while fetches wait for them and kept while they bring at least 15% more blocks per second, and fewer tried and kept while they cost under 3% (a store far away gains from more, one on the node's own CPUs loses); at or below that floor: fixed",
	  0, PREFETCH_FILES_MAX, NULL },
	{ "prefetch.coalesce_max", CONFIG_SIZE,
	  offsetof(struct mount_settings, prefetch_coalesce_max), "16MiB",
	  "most bytes one read-ahead GET fetches: consecutive blocks of a file go in one ranged GET (below two blocks: one GET per block)",
	  0, 1073741824, NULL },
	{ "verify", CONFIG_BOOL, offsetof(struct mount_settings, verify), "true",
	  "check every byte read from a cache against its block's checksums (false only to measure what that costs)",
	  0, 0, NULL },
	{ "worker.timeout", CONFIG_DURATION, offsetof(struct mount_settings, worker_timeout_ms),
	  "500ms", "connect timeout to a worker before reading from the object store", 1, 600000, NULL },
	{ "worker.request_timeout", CONFIG_DURATION,
	  offsetof(struct mount_settings, worker_request_timeout_ms), "30s",
	  "most one block request to a worker may take", 1, 3600000, NULL },
	{ "worker.first_byte_timeout", CONFIG_DURATION,
	  offsetof(struct mount_settings, worker_first_byte_ms), "1s",
	  "a worker that has not begun to answer by then is asked whether it is alive (GET /healthz within worker.timeout); one that is not is passed over for the next source",
	  1, 600000, NULL },
	{ "worker.skip", CONFIG_DURATION, offsetof(struct mount_settings, worker_skip_ms), "10s",
	  "how long a worker that stopped answering is passed over before it is asked again", 0,
	  3600000, NULL },
	{ "token_file", CONFIG_STRING, offsetof(struct mount_settings, token_file),
	  "/etc/granary/token", "cluster token (HMAC secret) for worker requests", 0, 0, NULL },
	{ "init_state", CONFIG_STRING, offsetof(struct mount_settings, init_state), "",
	  "file keeping the kernel's FUSE_INIT, for a successor daemon (with mountpoint /dev/fd/N)",
	  0, 0, NULL },
	{ "takeover", CONFIG_BOOL, offsetof(struct mount_settings, takeover), "false",
	  "serve a live /dev/fd/N connection whose daemon died, replaying init_state", 0, 0, NULL },
	{ "membership.refresh", CONFIG_DURATION, offsetof(struct mount_settings, membership_refresh_ms),
	  "2s", "how often the worker list is read from meta", 100, 600000, NULL },
	STORE_SETTINGS_FIELDS(struct mount_settings, store),
	{ "metrics.address", CONFIG_STRING, offsetof(struct mount_settings, metrics_address), "",
	  "where /healthz and /metrics are served: \":PORT\", host:port or unix:///path (empty: "
	  "off; a mount of the node plugin has its counters on the plugin's /metrics)", 0, 0,
	  NULL },
	TLS_CLIENT_FIELDS(struct mount_settings, meta_tls, "meta.tls.", "granary-meta"),
	TLS_CLIENT_FIELDS(struct mount_settings, worker_tls, "worker.tls.", "each worker"),
	{ "log.level", CONFIG_STRING, offsetof(struct mount_settings, log_level), "info",
	  "debug, info, warn or error", 0, 0, NULL },
};

uint64_t mount_read_deadline_ms(const struct mount_settings *s)
{
	uint64_t d = s->store.deadline_ms ? s->store.deadline_ms : 60000;

	if (s->dataset && *s->dataset)
		d += s->worker_first_byte_ms + s->worker_timeout_ms;
	return d;
}

struct mount_fetch_sizes mount_settings_fetch_sizes(const struct mount_settings *s)
{
	const int64_t cpus = cpu_available();
	int64_t floor = s->prefetch_blocks > cpus ? s->prefetch_blocks : cpus;

	if (s->prefetch_files > floor)
		floor = s->prefetch_files;
	const int64_t threads = s->prefetch_files_max > floor ? s->prefetch_files_max : floor;

	return (struct mount_fetch_sizes){
		.floor = (unsigned)floor,
		.threads = (unsigned)threads,
		.max_inflight = (unsigned)(2 * s->prefetch_blocks + 2 * cpus + threads),
	};
}

unsigned mount_settings_store_connections(const struct mount_settings *s)
{
	if (s->store.max_connections > 0)
		return (unsigned)s->store.max_connections;
	return mount_settings_fetch_sizes(s).max_inflight;
}

const struct config_schema mount_settings_schema = {
	.program = "granary-fuse",
	.summary = "Granary FUSE daemon: mounts one dataset read-only,"
		   " e.g. --mountpoint /mnt/ds --dataset imagenet",
	.fields = fuse_fields,
	.nfields = sizeof(fuse_fields) / sizeof(fuse_fields[0]),
};

static bool is_set(const char *s)
{
	return s && *s;
}

static enum error_code check_source(const char *uri, struct error *err)
{
	char *scheme = NULL, *bucket = NULL, *prefix = NULL;
	enum error_code rc;

	rc = store_uri_parse(uri, &scheme, &bucket, &prefix, err);
	free(scheme);
	free(bucket);
	free(prefix);
	if (rc != ERR_OK)
		return error_wrap(err, "key 'source'");
	return ERR_OK;
}

enum error_code mount_settings_check(const struct mount_settings *s, struct error *err)
{
	const uint64_t bs = s->cache_block_size;

	if (!is_set(s->mountpoint))
		return error_set(err, ERR_INVALID, "key 'mountpoint': required");
	if (config_check_abs_path("mountpoint", s->mountpoint, err) != ERR_OK)
		return ERR_INVALID;
	if (is_set(s->dataset) == is_set(s->source))
		return error_set(err, ERR_INVALID,
				 "keys 'dataset' and 'source': give exactly one (a dataset name or an object-store URI)");
	if (is_set(s->source) && check_source(s->source, err) != ERR_OK)
		return ERR_INVALID;
	/* Standalone mounts need no meta; an address given anyway must still parse. */
	if ((is_set(s->dataset) || is_set(s->meta_address)) &&
	    netaddr_check_setting("meta.address", s->meta_address, err) != ERR_OK)
		return ERR_INVALID;
	if (is_set(s->meta_key_file) &&
	    config_check_abs_path("meta.key_file", s->meta_key_file, err) != ERR_OK)
		return ERR_INVALID;
	if (config_check_abs_path("cache.dir", s->cache_dir, err) != ERR_OK)
		return ERR_INVALID;
	if (is_set(s->dataset) && config_check_abs_path("token_file", s->token_file, err) != ERR_OK)
		return ERR_INVALID;
	if (s->takeover && (!is_set(s->init_state) || strncmp(s->mountpoint, "/dev/fd/", 8) != 0))
		return error_set(err, ERR_INVALID,
				 "key 'takeover': needs mountpoint /dev/fd/N and init_state");
	if (block_size_check("key 'cache.block_size'", bs, err) != ERR_OK)
		return ERR_INVALID;
	if (s->cache_capacity < bs)
		return error_set(err, ERR_INVALID,
				 "key 'cache.capacity': must hold at least one block (cache.block_size %llu bytes), got %llu bytes",
				 (unsigned long long)bs, (unsigned long long)s->cache_capacity);
	if (fusemount_check_max_read("key 'max_read'", s->max_read, err) != ERR_OK)
		return ERR_INVALID;
	if (s->max_background < 1)
		return error_set(err, ERR_INVALID,
				 "key 'max_background': must be at least 1, got %lld",
				 (long long)s->max_background);
	if (s->max_idle_threads < 0)
		return error_set(err, ERR_INVALID,
				 "key 'max_idle_threads': must be 0 (auto) or more, got %lld",
				 (long long)s->max_idle_threads);
	if (fusemount_check_read_ahead("key 'read_ahead'", s->read_ahead, err) != ERR_OK)
		return ERR_INVALID;
	if (s->prefetch_blocks < 0)
		return error_set(err, ERR_INVALID,
				 "key 'prefetch.blocks': must be 0 or more, got %lld",
				 (long long)s->prefetch_blocks);
	if (s->worker_timeout_ms == 0)
		return error_set(err, ERR_INVALID, "key 'worker.timeout': must be more than 0");
	if (is_set(s->store.endpoint) && store_check_endpoint(s->store.endpoint, err) != ERR_OK)
		return error_wrap(err, "key 'store.endpoint'");
	if (is_set(s->metrics_address) &&
	    netaddr_check_listen_setting("metrics.address", s->metrics_address, err) != ERR_OK)
		return ERR_INVALID;
	if (tls_client_check("meta.tls.", &s->meta_tls, err) != ERR_OK ||
	    tls_client_check("worker.tls.", &s->worker_tls, err) != ERR_OK)
		return ERR_INVALID;
	if (config_check_log_level("log.level", s->log_level, err) != ERR_OK)
		return ERR_INVALID;
	return ERR_OK;
}
