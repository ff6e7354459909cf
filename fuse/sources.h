/*
 * sources.h - the block sources a mount's reader asks (see reader.h).
 *
 *   source_store   the object store itself: a ranged GET of the piece
 *                  asked for, pinned to the snapshot's ETag. Always last.
 */
#ifndef GRANARY_FUSE_SOURCES_H
#define GRANARY_FUSE_SOURCES_H

#include "fuse/reader.h"
#include "store/store.h"

/* A source reading straight from st (not owned). */
struct reader_source source_store(struct store *st);

#endif
