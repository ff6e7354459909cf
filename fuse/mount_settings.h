/*
 * mount_settings.h - the settings of granary-fuse, the per-dataset FUSE
 * daemon: what to mount where, the node cache it shares with the worker,
 * the FUSE tuning (long entry/attr timeouts for an immutable dataset,
 * keep_cache, 1 MiB requests, clone_fd, splice, read-ahead) and how long to
 * wait for a peer worker before going to the object store.
 *
 * The dataset comes either from meta by name (dataset) or, standalone,
 * straight from an object-store URI (source): exactly one of the two.
 *
 * The table (mount_settings_schema) gives types, tuned defaults and help;
 * mount_settings_check() adds the rules a table cannot state. Strings are
 * owned by the struct: release them with config_release().
 */
#ifndef GRANARY_FUSE_MOUNT_SETTINGS_H
#define GRANARY_FUSE_MOUNT_SETTINGS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "common/tls.h"
#include "common/error.h"
#include "store/store_settings.h"

#define PREFETCH_FILES_MAX 1024 /* the most prefetch.files */

struct mount_settings {
	char *mountpoint;
	char *dataset;             /* name registered in meta; "" when source is used */
	char *source;              /* s3://bucket/prefix/ or file:///dir; "" when dataset is used */
	char *meta_address;
	char *meta_key_file;       /* mount role key; "" = unsigned calls */
	char *cache_dir;           /* the node worker's cache, read directly */
	uint64_t cache_capacity;   /* bytes */
	int64_t cache_write_behind; /* blocks served before their commit, at most */
	bool cache_direct_read;    /* block files read with O_DIRECT */
	uint64_t cache_block_size; /* bytes; must match the worker's */
	uint64_t entry_timeout_ms;
	uint64_t attr_timeout_ms;
	bool keep_cache;
	bool no_open;
	uint64_t max_read;         /* bytes per FUSE read request */
	int64_t max_background;
	int64_t max_idle_threads;  /* 0 = sized automatically */
	bool clone_fd;
	bool splice;
	uint64_t read_ahead;       /* bytes; written to the mount's bdi read_ahead_kb */
	int64_t prefetch_blocks;   /* blocks read ahead of a sequential reader */
	uint64_t prefetch_coalesce_max; /* most bytes of one read-ahead GET */
	int64_t prefetch_files;    /* files read ahead after a small file's miss */
	int64_t prefetch_files_max; /* standalone: the most, tried while they pay */
	bool verify;               /* check cached bytes against block checksums */
	uint64_t worker_timeout_ms; /* connect to a worker, before falling back to the store */
	uint64_t worker_request_timeout_ms; /* one block request to a worker */
	uint64_t worker_first_byte_ms; /* no answer by then: is the worker alive? */
	uint64_t worker_skip_ms;    /* a worker that stopped answering is passed over this long */
	char *token_file;          /* cluster token for worker requests (dataset mode) */
	uint64_t membership_refresh_ms;
	char *init_state;          /* saved FUSE_INIT for a successor daemon */
	bool takeover;             /* replay init_state on a live /dev/fd/N */
	char *metrics_address;     /* /healthz and /metrics: ":PORT", host:port, unix:///path; "" = off */
	struct store_settings store;
	struct tls_client_settings meta_tls;   /* TLS to granary-meta */
	struct tls_client_settings worker_tls; /* HTTPS to the workers */
	char *log_level;
};

extern const struct config_schema mount_settings_schema;

/*
 * Most one read may wait, every source, retry and kernel request again
 * included: store.deadline (60 s when 0); with a dataset from meta, plus
 * one stopped worker's cost (worker.first_byte_timeout + worker.timeout),
 * since a worker may be asked first.
 */
uint64_t mount_read_deadline_ms(const struct mount_settings *s);

/*
 * A standalone mount's fetcher, sized from the prefetch settings and the
 * CPUs (cpu_available): the read-ahead's floor (prefetch.blocks or one
 * per CPU, prefetch.files where more), its threads (prefetch.files_max
 * where more than the floor: they mostly wait on the store, and run
 * while they pay, cache/inflight.h), and the store fetches that readers
 * may run at once.
 */
struct mount_fetch_sizes {
	unsigned floor, threads, max_inflight;
};
struct mount_fetch_sizes mount_settings_fetch_sizes(const struct mount_settings *s);

/*
 * The connections a standalone mount's store keeps for the next request:
 * store.max_connections, or when 0 one per store fetch the mount may run
 * at once (max_inflight above, which counts the read-ahead's threads),
 * so that connections opened for a busy moment, or for a try of a higher
 * read-ahead limit, are not closed only to be opened again (each a TLS
 * handshake with an HTTPS store).
 */
unsigned mount_settings_store_connections(const struct mount_settings *s);

/*
 * Checks what the table cannot: mountpoint given and absolute, exactly one
 * of dataset and source (source a valid store URI; meta.address a valid
 * address when dataset is used), cache.dir absolute, cache.block_size a
 * power of two from 64KiB to 64MiB, cache.capacity at least one block,
 * max_read a multiple of 4KiB up to 1MiB, read_ahead a multiple of 4KiB,
 * the store endpoint a valid URL (when set), metrics.address a listen
 * address (when set) and log.level a known level.
 * Returns ERR_OK, or ERR_INVALID with a message naming the key:
 * "key 'mountpoint': required".
 */
enum error_code mount_settings_check(const struct mount_settings *s, struct error *err);

#endif
