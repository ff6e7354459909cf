/*
 * sources.h - the block sources a mount's reader asks (see reader.h).
 *
 *   source_cache   standalone: the mount's own block cache (the worker's
 *                  fetcher and blockstore, in process): whole blocks are
 *                  fetched once, kept on disk and read ahead.
 *   source_local   cluster: the node worker's cache directory, read
 *                  directly (short-circuit, docs/cache-layout.md).
 *   source_peer    cluster: the block's owner worker by rendezvous hashing,
 *                  over HTTP with the cluster token; the owner fetches a
 *                  miss once for everyone and reads ahead. A request
 *                  ends at the read's deadline, when the membership
 *                  stops listing the worker, or when the worker has not
 *                  begun to answer within first_byte_ms and does not
 *                  answer its /healthz either (stopped, hung): then the
 *                  worker is passed over for skip_ms (circuit breaker),
 *                  so later blocks go to the store without waiting.
 *   source_store   the object store itself: a ranged GET of the piece
 *                  asked for, pinned to the snapshot's ETag. Always last.
 *
 * The cache sources check every byte they serve, on every read, against
 * the block's chunk checksums (block_read_checked; for a peer, the
 * checksums its answer carries): the chunks holding the bytes asked for
 * are read whole and compared. A copy that fails is counted in
 * blk->corrupt and never served; the cache source has it dropped and
 * fetched again, the local source leaves the file to its worker, which
 * the peer source then asks to check it. verify false skips the checks,
 * only to measure what they cost.
 */
#ifndef GRANARY_FUSE_SOURCES_H
#define GRANARY_FUSE_SOURCES_H

#include "cache/fetch.h"
#include "block/fdcache.h"
#include "block/token.h"
#include "block/placement.h"
#include "common/tls.h"
#include "fuse/reader.h"
#include "store/store.h"

struct source_cache_ctx {
	struct fetcher *fetcher;     /* borrowed */
	struct fetch_dataset *ds;    /* held by the caller */
	size_t prefix_len;           /* the dataset prefix, cut from object keys */
	bool verify;                 /* check bytes against the block checksums */
	/* Called after a read of a one-block object (a small file), missed
	 * true when it waited for the store (granary-fuse standalone: the
	 * prefetch of its neighbours); for a hit, only for the read at the
	 * file's start. NULL: none. */
	void (*small_read)(void *arg, const struct reader_object *obj, bool missed);
	void *small_read_arg;
};

/* A source reading through the in-process cache; ctx must outlive it. */
struct reader_source source_cache(struct source_cache_ctx *ctx);

/* What the cluster sources share: how blocks are keyed and where. */
struct source_cluster_ctx {
	const char *cache_dir;     /* the node worker's cache directory */
	const char *dataset;       /* the dataset's name on the workers */
	const char *key_endpoint;  /* block key fields, as the workers use them */
	const char *bucket;
	uint32_t block_size;
	size_t prefix_len;         /* the dataset prefix, cut for worker requests */
	struct placement *placement;
	const struct token *token;
	uint64_t connect_timeout_ms; /* a worker that does not answer is skipped */
	uint64_t timeout_ms;         /* one block request at most */
	/* No answer begun by then: the worker's /healthz is asked (within
	 * connect_timeout_ms); one that does not answer either is abandoned
	 * for the next source and passed over for skip_ms. */
	uint64_t first_byte_ms;
	uint64_t skip_ms;
	bool verify;               /* check bytes against the block checksums */
	/* Workers serve HTTPS: their certificates must chain to tls->ca and
	 * carry tls->server_name (block_url_origin); borrowed. NULL or
	 * without a CA: plain HTTP. */
	const struct tls_material *tls;
	/* Open block files of cache_dir kept across reads (block/fdcache.h);
	 * borrowed. NULL: each read opens and closes the file. */
	struct block_fdcache *fds;
	/*
	 * cache_dir's id (source_cluster_read_cache_id), sent with block
	 * requests: the worker that owns cache_dir (the node's) then fetches
	 * a missing block into it and answers "read it there"
	 * (BLOCK_URL_IN_CACHE_DIR), and the local source reads and checks
	 * it, instead of the bytes crossing a socket. Written once, before
	 * cache_id_set; unset: every worker sends the bytes.
	 */
	char cache_id[BLOCK_DIR_ID_LEN + 1];
	_Atomic bool cache_id_set;
	/* Called after a read of a one-block object (a small file), missed
	 * true when a worker served it and had not held it either (its
	 * X-Granary-Cache: miss; the mount's prefetch of its neighbours); for
	 * a hit, only for the read at the file's start. NULL: none. */
	void (*small_read)(void *arg, const struct reader_object *obj, bool missed);
	void *small_read_arg;
};

/*
 * Reads cache_dir's id once an owner has written it; a no-op once known.
 * Call from one thread at a time (the mount's start, then its membership
 * refresher): readers only look at cache_id after cache_id_set.
 */
void source_cluster_read_cache_id(struct source_cluster_ctx *ctx);

/*
 * To be called after each change of ctx->placement. A worker passed over
 * (skip_ms) that the membership has left out since is back once a new
 * membership lists it again (restarted, or continued and joined again):
 * it is asked at once rather than when its period ends, which would send
 * its blocks to the store meanwhile.
 */
void source_cluster_membership_changed(struct source_cluster_ctx *ctx);

struct reader_source source_local(struct source_cluster_ctx *ctx);
struct reader_source source_peer(struct source_cluster_ctx *ctx);

#define SOURCE_PREFETCH_MAX 32 /* objects one source_cluster_prefetch takes */

/*
 * Prefetch of one-block objects (small files): each owner worker of the
 * objs' blocks gets one request naming its objects (POST
 * /v1/prefetch/{dataset}, docs/worker-api.md) and queues their fetches
 * into its cache; the node's own worker fetches into the directory the
 * local source reads. Returns when the owners have the requests, not
 * the blocks. A hint: objects past SOURCE_PREFETCH_MAX, those that are
 * not one block, workers passed over and errors are dropped; gives up
 * at until_ms (retry_now_ms clock).
 */
void source_cluster_prefetch(struct source_cluster_ctx *ctx, const struct reader_object *objs,
			     size_t n, uint64_t until_ms);

/* A source reading straight from st (not owned). */
struct reader_source source_store(struct store *st);

#endif
