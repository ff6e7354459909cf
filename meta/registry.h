/*
 * registry.h - granary-meta's dataset registry: name -> spec, current
 * generation and its namespace snapshot, kept durably under a data dir.
 *
 * On disk (DATA_DIR):
 *   datasets/NAME                one record per dataset: the packed
 *                                DatasetSpec, the current generation and its
 *                                build time, with an XXH3 checksum; written
 *                                atomically (temporary file, fsync, rename,
 *                                fsync of the directory)
 *   snapshots/NAME/GEN.snap      snapshot_save()'s files: the current
 *                                generation and the one before it
 * A record is written only after the snapshot it names is durable, so a
 * crash at any point leaves either the old state or the new one. At
 * registry_open() every record is read back and its snapshot loaded and
 * checked (snapshot_load); the store is never listed at start-up. Snapshot
 * files no record points to (a crash mid-registration or mid-refresh) are
 * removed then.
 *
 * Registration lists the store, which can take minutes for millions of
 * objects. The registry lock is never held while listing: the dataset is
 * entered in state REGISTERING first (Get and List show it at once), the
 * listing and the snapshot are built without the lock, and the result is
 * published under it. A second Register (same spec) or Refresh of a
 * dataset being built waits for that build and returns its result instead
 * of starting another. At most max_builds Register/Refresh calls run or wait
 * at once; more are refused with ERR_UNAVAILABLE, so that a caller serving
 * them from a fixed thread pool always keeps threads for Get and List. Of
 * those, listings of endpoints other than store.endpoint (see
 * registry_options.allowed_endpoints) take at most half, and every listing
 * is bounded in pages, objects and time, so that a slow endpoint named in a
 * spec cannot keep the cluster's own datasets from registering.
 *
 * Snapshots are not kept in memory: registry_read_snapshot() streams the
 * snapshot file (it is the snapshot encoding itself, checksum included)
 * from an fd opened under the lock, so a concurrent refresh or delete never
 * cuts a transfer short.
 *
 * All functions are thread-safe. No gRPC here: the service adapters call
 * these and map the error codes. Specs are the protobuf-c DatasetSpec of
 * api/granary.proto, the registry's data model.
 */
#ifndef GRANARY_META_REGISTRY_H
#define GRANARY_META_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "granary.pb-c.h"
#include "meta/snapshot.h"
#include "store/store.h"

enum registry_state {
	REGISTRY_REGISTERING = 1, /* first listing running; generation 0 */
	REGISTRY_READY,           /* generation served */
	REGISTRY_REFRESHING,      /* generation served; the next one building */
};

/* "registering", "ready", "refreshing" (logs, errors, /metrics). */
const char *registry_state_name(enum registry_state state);

struct registry;

struct registry_options {
	const char *data_dir;   /* absolute; created (with parents) if missing */
	/*
	 * The cluster's default store: endpoint and region used when a spec
	 * leaves them empty, the credentials chain used when credentials_ref
	 * is "" (credentials_file, then AWS_* environment, then
	 * ~/.aws/credentials), and the timeouts and retries of every listing.
	 * NULL = all defaults (AWS, us-east-1). Strings are copied.
	 */
	const struct store_config *store;
	unsigned max_builds;    /* Register/Refresh running or waiting; 0 = 4 */
	/*
	 * The endpoints a spec may name besides store->endpoint, comma-separated
	 * ("" or NULL: store->endpoint alone; store_endpoint_check). A spec
	 * naming any other endpoint is refused (ERR_INVALID naming field
	 * 'endpoint') at registration and at every refresh, before anything is
	 * sent to it, and its record is skipped at registry_open. Every allowed
	 * endpoint is listed with the file credentials_ref names, else meta's
	 * credentials chain. Listings of endpoints other than store->endpoint
	 * take at most half of max_builds (at least 1).
	 */
	const char *allowed_endpoints;
	/*
	 * Directories of this host file:// sources may lie in, comma-separated
	 * ("" or NULL: none, every file:// source is refused); see
	 * store_file_root_check. Checked at registration, at every refresh and
	 * at registry_open, where a record outside them is skipped (logged).
	 */
	const char *file_roots;
	/* Every listing's bounds (store_list_all_limited); 0s = none. */
	struct store_list_limits limits;
	/* Tests only: called without the lock before each listing starts. */
	void (*build_hook)(const char *name, uint64_t generation, void *arg);
	void *hook_arg;
};

/* A copy of one dataset's state, owned by the caller. */
struct registry_dataset {
	Granary__V1__DatasetSpec *spec; /* as registered; free with registry_dataset_release */
	enum registry_state state;
	uint64_t generation;            /* 0 while registering */
	struct snapshot_totals totals;  /* of the current generation */
	int64_t created_unix_ms;        /* when the current generation was built */
	bool damaged;                   /* snapshot unreadable at start-up: refresh rebuilds it */
};

/*
 * Opens the registry in opt->data_dir and loads every dataset (records and
 * snapshots; see the top). A record that does not read back (corrupt,
 * truncated) is logged and skipped, a snapshot that does not load leaves
 * its dataset `damaged`; neither stops start-up. Errors: the data dir
 * cannot be created or read (error_from_errno's code naming the path),
 * ERR_INVALID for a relative path, ERR_NOMEM.
 */
enum error_code registry_open(const struct registry_options *opt, struct registry **out,
			      struct error *err);

/* Frees the registry. No call may be running. NULL is fine. */
void registry_free(struct registry *r);

/*
 * Checks a spec without touching the store. ERR_INVALID naming the field
 * ("field 'source_uri': ..."): name (block_dataset_name_check), source_uri
 * (store_uri_parse; s3:// or file://, the prefix empty or ending in '/'),
 * endpoint (store_check_endpoint, when set), credentials_ref ("" or an
 * absolute path), options.block_size (0, or a power of two from 64 KiB to
 * 64 MiB), options.cache_policy (a CachePolicy value).
 */
enum error_code registry_check_spec(const Granary__V1__DatasetSpec *spec, struct error *err);

/*
 * Registers spec and builds generation 1 from a listing of its source.
 * Returns the dataset in *out (release it) on ERR_OK.
 *   - same name, same spec: ERR_OK with the existing dataset (idempotent;
 *     waits for a registration of it in progress and returns its result);
 *   - same name, another spec: ERR_EXISTS naming the first field that
 *     differs;
 *   - invalid spec: ERR_INVALID as registry_check_spec; an endpoint
 *     outside options.allowed_endpoints: ERR_INVALID naming endpoint, before
 *     anything is sent; a file:// source
 *     outside options.file_roots: ERR_INVALID naming source_uri
 *     (store_file_root_check), before anything is listed; a bucket that does
 *     not exist or a key that cannot be a path: ERR_INVALID naming
 *     source_uri; a credentials_ref that is missing or malformed:
 *     ERR_INVALID naming it;
 *   - the endpoint did not answer as an S3 server (refused, reset or
 *     timed out, not HTTP, not S3): ERR_UNAVAILABLE, one message for all
 *     of them ("cannot list 'SOURCE' at ENDPOINT: the endpoint did not
 *     answer as an S3 server"), so that a caller cannot probe the network
 *     through meta; S3 errors keep their detail;
 *   - credentials refused (HTTP 401/403) or credentials_ref unreadable:
 *     ERR_PERMISSION with the cause;
 *   - a listing that repeats its continuation token: ERR_INVALID naming
 *     the endpoint; past limits.max_pages or max_objects: ERR_NO_SPACE;
 *     past limits.max_ms: ERR_TIMEOUT; a key that cannot be a path or a
 *     size over 5 TiB: ERR_INVALID naming the key;
 *   - too many builds at once, or too many of endpoints other than
 *     store.endpoint: ERR_UNAVAILABLE;
 *   - writing data_dir failed: its error (ERR_IO, ERR_NO_SPACE ...).
 * On any error nothing of the dataset remains.
 */
enum error_code registry_register(struct registry *r, const Granary__V1__DatasetSpec *spec,
				  struct registry_dataset *out, struct error *err);

/* The dataset named name. ERR_NOT_FOUND; ERR_INVALID for a malformed name. */
enum error_code registry_get(struct registry *r, const char *name, struct registry_dataset *out,
			     struct error *err);

/* Every dataset, sorted by name, registering ones included. *out is an
 * array of *n; free with registry_list_free. ERR_NOMEM. */
enum error_code registry_list(struct registry *r, struct registry_dataset **out, size_t *n,
			      struct error *err);
void registry_list_free(struct registry_dataset *list, size_t n);

/*
 * Removes the dataset: its record first (from then on it is gone, even
 * across a crash), then its snapshot files. ERR_NOT_FOUND; ERR_UNAVAILABLE
 * while it is being registered or refreshed (retry after).
 */
enum error_code registry_delete(struct registry *r, const char *name, struct error *err);

/*
 * Lists the source again and makes the result generation + 1 (even when
 * nothing changed: a refresh is explicit). The old generation stays served
 * until the new one is durable, and its file is kept (one generation back)
 * for mounts that still load it. A refresh already running is joined.
 * Errors as registry_register's store errors, plus ERR_NOT_FOUND.
 */
enum error_code registry_refresh(struct registry *r, const char *name,
				 struct registry_dataset *out, struct error *err);

/*
 * Changes the options of a READY dataset that change no block and no
 * listing (cache_policy, pin, preload) in place: the record is rewritten,
 * the generation and snapshot stay. ERR_INVALID for another block_size or
 * a bad option; ERR_NOT_FOUND; ERR_UNAVAILABLE while it is being listed.
 */
enum error_code registry_set_options(struct registry *r, const char *name,
				     const Granary__V1__DatasetOptions *opts,
				     struct registry_dataset *out, struct error *err);

/*
 * Streams the encoded snapshot of generation (0 = current) of dataset name
 * to fn in pieces of at most chunk bytes, in order. fn returns ERR_OK to go
 * on; another code stops the transfer and is returned. ERR_NOT_FOUND for
 * an unknown dataset or a generation no longer (or not yet) kept;
 * ERR_UNAVAILABLE while the first generation is being built; ERR_IO for a
 * damaged or short file.
 */
typedef enum error_code (*registry_chunk_fn)(uint64_t generation, uint64_t total,
					     uint64_t offset, const void *data, size_t len,
					     void *arg, struct error *err);
enum error_code registry_read_snapshot(struct registry *r, const char *name, uint64_t generation,
				       size_t chunk, registry_chunk_fn fn, void *arg,
				       struct error *err);

/* Frees what a registry_dataset holds. */
void registry_dataset_release(struct registry_dataset *d);

#endif
