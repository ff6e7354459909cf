/*
 * sources.c - block sources for the mount's reader.
 */
#include "fuse/sources.h"

static enum error_code store_read(void *ctx, const struct reader_block *blk,
				  uint64_t off, size_t len, char *dst, size_t *got,
				  unsigned readahead, struct error *err)
{
	struct store *st = ctx;
	uint64_t at = blk->index * (uint64_t)blk->block_size + off;

	(void)readahead;
	return store_get(st, blk->obj->key, at, len, dst, got, blk->obj->etag, err);
}

struct reader_source source_store(struct store *st)
{
	return (struct reader_source){ .name = "store", .read = store_read, .ctx = st };
}
