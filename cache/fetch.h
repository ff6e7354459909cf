/*
 * fetch.h - the worker's dataset registry and its block miss path.
 *
 * Registry: a dataset is a name bound to an object-store prefix
 * ("s3://bucket/train/"), the store opened on its bucket, a block size, an
 * admission policy and a pin flag. Object keys in block requests are
 * relative to the prefix, so a client can reach nothing outside it.
 * Datasets are reference counted: replacing or removing one never pulls
 * the store out from under a fetch in progress.
 *
 * Miss path: fetch_block() returns a block held in the cache (a
 * blockstore ref, served zero-copy) or, when the cache refuses to admit it,
 * a reference-counted heap copy of its bytes. A miss streams one ranged GET
 * (offset index * block_size, If-Match the ETag) straight into the cache
 * file. With a blockstore opened with direct_write (granary-fuse
 * standalone), the writer keeps the block's bytes and the fetch hands
 * them to its readers as a heap copy too, and keeps them for the next
 * requests in a small ring (RECENT_BLOCKS in fetch.c), read-ahead's
 * included: none of the file is in the page cache to read back. Guarantees:
 *   - single flight: concurrent requests for one block (same hash) wait for
 *     the one fetch in progress and then share its result;
 *   - bounded: at most max_inflight store fetches for readers run at once,
 *     and at most max_inflight for read-ahead and preload, which take the
 *     readers' free slots only: a read never waits behind read-ahead for a
 *     slot (a saturated store still serves the GETs in flight in turn);
 *   - checked by its reader: a cached block is handed out as it is; whoever
 *     reads its bytes checks them against the chunk checksums of its
 *     header (block_read_checked, or a peer against the checksums
 *     the worker sends along) every time, and a reader that finds it
 *     corrupt calls fetch_recheck, which drops it so that the next
 *     request fetches it again;
 *   - read-ahead: the next N blocks of the object that the cache does not
 *     hold are queued (a block held, queued or in flight already costs no
 *     job) to a background pool that fetches them, only if the cache
 *     admits them (a read-ahead never fills memory). With coalesce_bytes
 *     of two blocks or more, consecutive queued blocks of one object go
 *     in one ranged GET holding one slot, each block committed and its
 *     waiters served as soon as its bytes are in; a GET that fails fails
 *     the block it was in, and leaves the later ones unfetched (their
 *     waiters fetch them). Blocks are then queued in batches of at least
 *     half the window (or at once when the next block is missing), so
 *     that they can be coalesced;
 *   - the last block of an object may be short; a block starting at or past
 *     the end of the object is ERR_RANGE.
 *
 * All functions are thread-safe. Locks: f->mu guards the in-flight table,
 * the fetch slots and the read-ahead queue; f->reg_mu guards the registry.
 * Neither is held across I/O. This module includes no HTTP header.
 */
#ifndef GRANARY_CACHE_FETCH_H
#define GRANARY_CACHE_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/key.h"
#include "block/name.h"
#include "cache/blockstore.h"
#include "common/error.h"
#include "common/metrics.h"
#include "store/store.h"

#define FETCH_READAHEAD_QUEUE 1024  /* queued read-ahead blocks, then dropped */
#define FETCH_COALESCE_BLOCKS 64    /* most blocks of one read-ahead GET */

struct fetcher;
struct fetch_dataset;

struct fetch_config {
	struct blockstore *bs;     /* borrowed; must outlive the fetcher */
	unsigned max_inflight;     /* store fetches at once; >= 1 */
	unsigned threads;          /* read-ahead pool; >= 1 */
	unsigned readahead_max;    /* most blocks one request may queue */
	/*
	 * Read-ahead jobs run at once (each a GET in flight, most of its
	 * time): from readahead_inflight, tried up to readahead_inflight_max
	 * while jobs wait in the queue for them, and kept where more bring
	 * more blocks per second (cache/inflight.h); both at most threads.
	 * 0 (either): as many as there are threads, fixed. Begun at
	 * readahead_inflight_start where that is more (0: at the floor), it
	 * first tries fewer (inflight_start_at).
	 */
	unsigned readahead_inflight, readahead_inflight_max, readahead_inflight_start;
	/*
	 * Most bytes one read-ahead GET fetches: consecutive blocks of one
	 * object queued for read-ahead go in one ranged GET (at most
	 * FETCH_COALESCE_BLOCKS). Below two blocks: one GET per block.
	 */
	uint64_t coalesce_bytes;
	/*
	 * Write-behind, for a blockstore opened with direct_write: a block
	 * fetched on a reader's miss is served from the bytes its writer
	 * kept as soon as the transfer ends, and written to the cache by a
	 * committer thread meanwhile (up to this many blocks waiting; past
	 * that, and with 0, the reader's thread commits before it is served).
	 * Until its commit the block is found through its fetch, so every
	 * reader gets the same bytes and none fetches it again.
	 */
	unsigned write_behind;
	/*
	 * With direct_write, keep no block the cache holds in memory past
	 * the requests its fetch served: later requests get the block's
	 * file. A worker, whose node's mount reads the files itself, spends
	 * no memory on blocks that mount does not ask for. A block the cache
	 * refused is kept as always (RECENT_BLOCKS), or each range asked of
	 * it would fetch it again.
	 */
	bool no_recent;
	/* Tests only: called by a committer before each write-behind commit. */
	void (*before_commit)(void *arg);
	void *before_commit_arg;
	/* Tests only: called by a read-ahead thread after each block of a
	 * coalesced GET is committed and its waiters woken, mid-transfer. */
	void (*run_block_done)(uint64_t index, void *arg);
	void *run_block_done_arg;
	/*
	 * Where file:// datasets may lie (store_file_root_check): a file://
	 * source is a directory of this host that anyone who can register a
	 * dataset here could read through the block API. Borrowed; must
	 * outlive the fetcher. n 0: every file:// source is refused.
	 */
	const char *const *file_roots;
	size_t nfile_roots;
	/* granary-fuse standalone only: the person running it names its one
	 * directory, so any file:// source is fine. */
	bool any_file_source;
	/*
	 * Where s3:// datasets may be read (store_endpoint_check): the
	 * worker's store.endpoint and the endpoints of store.allowed_endpoints
	 * (comma-separated), so that whoever registers a dataset (any holder
	 * of the cluster token, or meta's registry) never makes the worker
	 * send its credentials, or any request, to an endpoint of their
	 * choice. Borrowed; must outlive the fetcher. NULL: AWS for the region
	 * alone, and no other endpoint.
	 */
	const char *default_endpoint;
	const char *allowed_endpoints;
	/* granary-fuse only: its one dataset's endpoint comes from its own
	 * settings, or from granary-meta, which checked it. */
	bool any_endpoint;
};

/*
 * What a dataset is. The strings are borrowed for the call; the registry
 * keeps copies. store carries the connection settings for the dataset's
 * store (endpoint, region, credentials, timeouts, retries).
 */
struct fetch_dataset_config {
	const char *name;          /* block_dataset_name_check */
	const char *source;        /* "s3://bucket/prefix/" or "file:///dir/prefix/" */
	struct store_config store;
	uint64_t block_size;       /* block_size_check */
	enum blockstore_policy policy;
	bool pin;
};

/* A registered dataset as it stands; immutable while a ref is held. */
struct fetch_dataset_desc {
	const char *name;
	const char *source;
	const char *endpoint;         /* the store endpoint ("" = the default) */
	const char *region;
	const char *credentials_file; /* "" = the worker's defaults */
	const char *bucket;           /* bucket, or the directory for file:// */
	const char *prefix;           /* "" or ending in '/' */
	const char *key_endpoint;     /* block_key_endpoint */
	uint32_t block_size;
	enum blockstore_policy policy;
	bool pin;
};

/*
 * A served block: exactly one of ref and buf is set. ref is a held cache
 * block (its file descriptor, offset and length come from blockstore.h);
 * buf a heap copy of a block the cache did not admit. hit is true when it
 * came from the cache without waiting for a store fetch.
 */
struct fetch_buffer;
struct fetch_result {
	bool hit;
	struct blockstore_ref *ref;
	struct fetch_buffer *buf;
};

struct fetch_stats {
	uint64_t hits;          /* requests served from the cache */
	uint64_t misses;        /* requests that needed (or waited for) a store fetch */
	uint64_t fetches;       /* store fetches made (one per single flight) */
	uint64_t fetch_errors;  /* store fetches that failed */
	uint64_t store_bytes;   /* block bytes received from the stores */
	uint64_t store_requests; /* requests sent to the stores (retries included), ever */
	uint64_t not_admitted;  /* fetches served from memory: the cache refused the block */
	uint64_t corrupt_refetched; /* cached blocks that fetch_recheck found corrupt and dropped */
	uint64_t readahead_queued, readahead_fetched, readahead_dropped;
	uint64_t coalesced_gets; /* read-ahead GETs of more than one block */
	uint64_t written_behind; /* blocks served before their commit (write_behind) */
	uint64_t inflight;      /* store fetches running now */
	uint64_t datasets;      /* registered now */
};

/* Starts the read-ahead pool. ERR_INVALID for a zero limit, ERR_NOMEM. */
enum error_code fetch_new(const struct fetch_config *cfg, struct fetcher **out,
			  struct error *err);
/* Stops and joins the pool, drops queued read-ahead and every dataset.
 * Call after every fetch_block caller has returned. */
void fetch_free(struct fetcher *f);

/*
 * For shutdown: fetches waiting for a slot, and transfers into the cache
 * at their next received bytes, end with ERR_CANCELLED; new ones are
 * refused the same way. A transfer that receives nothing ends at the
 * store's request timeout. Irreversible.
 */
void fetch_cancel(struct fetcher *f);


/*
 * Registers (or replaces) a dataset: checks the definition, opens its store
 * (no I/O against the service) and declares its policy and pin to the
 * blockstore. *created (may be NULL) is true for a new name; registering
 * the same definition again changes nothing. ERR_INVALID names the bad
 * field, a file:// source outside fetch_config.file_roots included
 * ("dataset 'x': field 'source': file:// sources are off ..."), and an
 * endpoint outside fetch_config.allowed_endpoints ("dataset 'x': field
 * 'endpoint': endpoint '...' is not allowed ...", before the store is
 * opened or anything sent); store_open's
 * errors (a missing credentials file ...) pass through.
 */
enum error_code fetch_dataset_register(struct fetcher *f, const struct fetch_dataset_config *cfg,
				       bool *created, struct error *err);

/* Removes a dataset and drops its unheld cached blocks (*dropped, may be
 * NULL). Requests holding it finish normally. ERR_NOT_FOUND if unknown. */
enum error_code fetch_dataset_unregister(struct fetcher *f, const char *name,
					 uint64_t *dropped, struct error *err);

/* A held reference to a registered dataset, or ERR_NOT_FOUND with
 * "unknown dataset 'x'". Release with fetch_dataset_put. */
enum error_code fetch_dataset_get(struct fetcher *f, const char *name,
				  struct fetch_dataset **out, struct error *err);
void fetch_dataset_put(struct fetcher *f, struct fetch_dataset *ds);

/* Held references to every registered dataset, sorted by name, in a
 * malloc'd array; release with fetch_dataset_list_free. */
enum error_code fetch_dataset_list(struct fetcher *f, struct fetch_dataset ***out, size_t *n,
				   struct error *err);
void fetch_dataset_list_free(struct fetcher *f, struct fetch_dataset **list, size_t n);

const struct fetch_dataset_desc *fetch_dataset_describe(const struct fetch_dataset *ds);

/* The hash of block index of object key (relative to the dataset prefix)
 * at version etag: the block's name in every cache and what placement
 * hashes. */
void fetch_block_hash(const struct fetch_dataset *ds, const char *key, const char *etag,
		      uint64_t index, uint8_t hash[BLOCK_HASH_LEN]);
struct store *fetch_dataset_store(const struct fetch_dataset *ds);

/*
 * The block index of object key (relative to the dataset prefix, version
 * etag, which must not be empty). On success *out holds the block; release
 * it with fetch_result_release. readahead (capped at readahead_max) queues
 * the next blocks of the object unless this one is the last.
 * Errors: ERR_INVALID (key or etag), ERR_RANGE (block starts past the end),
 * ERR_NOT_FOUND (no such object, or it changed: If-Match failed), the
 * store's ERR_UNAVAILABLE / ERR_TIMEOUT / ERR_PERMISSION, ERR_IO (a local
 * write failed), ERR_CANCELLED (stopping).
 * err names the dataset, the key and the block.
 */
enum error_code fetch_block(struct fetcher *f, struct fetch_dataset *ds, const char *key,
			    const char *etag, uint64_t index, unsigned readahead,
			    struct fetch_result *out, struct error *err);

/*
 * fetch_block for a reader with a deadline, until_ms on retry_now_ms's
 * clock (0 = none): waiting for a fetch slot, for another reader's fetch
 * of the same block and the store fetch itself all end by then, with
 * ERR_TIMEOUT naming the block. A fetch others wait for goes on without
 * the reader that gave up.
 *
 * size: the object's size as the caller knows it from the listing (0:
 * not known). A block past it is ERR_RANGE at once; a short last block
 * is written without a buffer of a whole block (the size is a hint: the
 * room reserved and the bytes asked of the store stay a whole block).
 */
enum error_code fetch_block_until(struct fetcher *f, struct fetch_dataset *ds, const char *key,
				  const char *etag, uint64_t size, uint64_t index,
				  unsigned readahead, uint64_t until_ms, struct fetch_result *out,
				  struct error *err);

/* Whether the block's file is in the cache (committed) now; false for a
 * block held only in memory (not admitted) and for a bad key. */
bool fetch_block_cached(struct fetcher *f, struct fetch_dataset *ds, const char *key,
			const char *etag, uint64_t index);

/*
 * A reader found the cached copy of a block corrupt: reads it whole now
 * and checks it against its header (blockstore_ref_verify). A corrupt
 * copy is dropped (*dropped; counted in the blockstore's stats.corrupt and
 * corrupt_refetched, one warning per 10 s) so that the next fetch_block
 * fetches it again; a copy that checks out stays (the bytes went bad
 * after they left the file). ERR_OK too when the block is not cached.
 * Errors: those of block_req (ERR_INVALID), a read error of the file (EIO:
 * ERR_IO, the copy kept, not *dropped).
 */
enum error_code fetch_recheck(struct fetcher *f, struct fetch_dataset *ds, const char *key,
			     const char *etag, uint64_t index, bool *dropped, struct error *err);

/*
 * Queues one block of any object for read-ahead (the mount's prefetch of
 * the small files next to one it missed): nothing when it is cached,
 * queued or being fetched already, when the queue is full or read-ahead
 * is off (readahead_max 0). Errors in key or etag are ignored: a hint.
 * size as fetch_block_until's.
 */
void fetch_prefetch(struct fetcher *f, struct fetch_dataset *ds, const char *key,
		    const char *etag, uint64_t size, uint64_t index);

/* Read-ahead jobs allowed at once now (fetch_config.readahead_inflight);
 * lock-free. */
unsigned fetch_readahead_limit(struct fetcher *f);

/*
 * Makes sure a block is cached (preload): ERR_OK if it was or now is,
 * with *fetched telling whether a store fetch was made; ERR_NO_SPACE when
 * the cache refuses it (then nothing is fetched); other errors as
 * fetch_block. Does not count as a hit or miss. size as
 * fetch_block_until's.
 */
enum error_code fetch_warm(struct fetcher *f, struct fetch_dataset *ds, const char *key,
			   const char *etag, uint64_t size, uint64_t index, bool *fetched,
			   struct error *err);

/* Accessors of a result. */
uint64_t fetch_result_length(const struct fetch_result *r);
/* The bytes of a buffer result (NULL for a ref). */
const void *fetch_result_data(const struct fetch_result *r);
void fetch_result_release(struct fetcher *f, struct fetch_result *r);

void fetch_get_stats(struct fetcher *f, struct fetch_stats *out);
/* Store fetch durations in seconds; for rendering. */
struct metrics_histogram *fetch_latency(struct fetcher *f);
struct blockstore *fetch_blockstore(struct fetcher *f);

/* Buckets of the latency histogram, in seconds. */
extern const double fetch_latency_bounds[];
extern const size_t fetch_latency_nbounds;

#endif
