/*
 * sources.c - block sources for the mount's reader.
 */
#include "fuse/sources.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "cache/blockstore.h"

static enum error_code cache_read(void *arg, const struct reader_block *blk,
				  uint64_t off, size_t len, char *dst, size_t *got,
				  unsigned readahead, struct error *err)
{
	struct source_cache_ctx *ctx = arg;
	struct fetch_result res = { 0 };
	enum error_code rc;

	/* Objects listed without an ETag cannot be cached safely (nothing
	 * tells a changed object from the cached one): the store serves them. */
	if (!*blk->obj->etag || strlen(blk->obj->key) <= ctx->prefix_len)
		return ERR_NOT_FOUND;
	rc = fetch_block(ctx->fetcher, ctx->ds, blk->obj->key + ctx->prefix_len, blk->obj->etag,
			 blk->index, readahead, &res, err);
	if (rc != ERR_OK)
		return rc;
	if (off + len > fetch_result_length(&res)) {
		rc = error_set(err, ERR_IO, "cached block %llu of '%s' has %llu bytes, %llu needed",
			       (unsigned long long)blk->index, blk->obj->key,
			       (unsigned long long)fetch_result_length(&res),
			       (unsigned long long)(off + len));
	} else if (res.ref) {
		int fd = blockstore_ref_fd(res.ref);
		uint64_t at = blockstore_ref_offset(res.ref) + off;
		size_t done = 0;

		while (done < len) {
			ssize_t n = pread(fd, dst + done, len - done, (off_t)(at + done));

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				rc = error_set(err, ERR_IO, "read cached block %llu of '%s': %s",
					       (unsigned long long)blk->index, blk->obj->key,
					       n < 0 ? strerror(errno) : "short file");
				break;
			}
			done += (size_t)n;
		}
		*got = done;
	} else {
		memcpy(dst, (const char *)fetch_result_data(&res) + off, len);
		*got = len;
	}
	fetch_result_release(ctx->fetcher, &res);
	return rc;
}

struct reader_source source_cache(struct source_cache_ctx *ctx)
{
	return (struct reader_source){ .name = "cache", .read = cache_read, .ctx = ctx };
}

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
