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
 *                  miss once for everyone and reads ahead.
 *   source_store   the object store itself: a ranged GET of the piece
 *                  asked for, pinned to the snapshot's ETag. Always last.
 */
#ifndef GRANARY_FUSE_SOURCES_H
#define GRANARY_FUSE_SOURCES_H

#include <pthread.h>

#include "cache/fetch.h"
#include "cache/token.h"
#include "fuse/placement.h"
#include "fuse/reader.h"
#include "store/store.h"

struct source_cache_ctx {
	struct fetcher *fetcher;     /* borrowed */
	struct fetch_dataset *ds;    /* held by the caller */
	size_t prefix_len;           /* the dataset prefix, cut from object keys */
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
	/* blocks whose data checked out once in this process */
	pthread_mutex_t mu;
	uint64_t *verified;        /* protected by mu; open addressing, 0 = empty */
	size_t verified_cap;       /* power of two */
	size_t verified_n;         /* protected by mu */
};

/* Sets up ctx's verified-block set; release with source_cluster_release. */
enum error_code source_cluster_init(struct source_cluster_ctx *ctx, struct error *err);
void source_cluster_release(struct source_cluster_ctx *ctx);

struct reader_source source_local(struct source_cluster_ctx *ctx);
struct reader_source source_peer(struct source_cluster_ctx *ctx);

/* A source reading straight from st (not owned). */
struct reader_source source_store(struct store *st);

#endif
