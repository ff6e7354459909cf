/*
 * sources.h - the block sources a mount's reader asks (see reader.h).
 *
 *   source_cache   standalone: the mount's own block cache (the worker's
 *                  fetcher and blockstore, in process): whole blocks are
 *                  fetched once, kept on disk and read ahead.
 *   source_store   the object store itself: a ranged GET of the piece
 *                  asked for, pinned to the snapshot's ETag. Always last.
 */
#ifndef GRANARY_FUSE_SOURCES_H
#define GRANARY_FUSE_SOURCES_H

#include "cache/fetch.h"
#include "fuse/reader.h"
#include "store/store.h"

struct source_cache_ctx {
	struct fetcher *fetcher;     /* borrowed */
	struct fetch_dataset *ds;    /* held by the caller */
	size_t prefix_len;           /* the dataset prefix, cut from object keys */
};

/* A source reading through the in-process cache; ctx must outlive it. */
struct reader_source source_cache(struct source_cache_ctx *ctx);

/* A source reading straight from st (not owned). */
struct reader_source source_store(struct store *st);

#endif
