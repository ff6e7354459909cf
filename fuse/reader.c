/*
 * reader.c - split reads into blocks and ask each block's sources in turn.
 */
#include "fuse/reader.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/retry.h"

/* Reads that continue the previous one before prefetch hints start: one
 * continuation could be chance, two is a scan. */
#define READER_SEQUENTIAL_AFTER 2
/* How many reads' lengths out of order a read may arrive and still
 * continue a sequential stream. */
#define READER_REORDER 4

/* While a worker is down every block read falls back past it: one warning
 * per source per interval says so without a line per block. */
#define READER_FALLBACK_LOG_MS 10000

/* Counted with relaxed atomic adds: nothing orders on them. */
#define ADD(field, n) atomic_fetch_add_explicit(&(field), (n), memory_order_relaxed)
#define LOAD(field) atomic_load_explicit(&(field), memory_order_relaxed)

struct reader {
	struct reader_config cfg;
	struct mountstats_counters *c;   /* cfg.counters, else own */
	struct mountstats_counters own;
	struct log_limiter fallback_log[READER_MAX_SOURCES];
	struct log_limiter corrupt_log;
	struct log_limiter failed_log;
	struct log_limiter changed_log;
};

enum error_code reader_new(const struct reader_config *cfg, struct reader **out,
			   struct error *err)
{
	struct reader *r;

	*out = NULL;
	if (cfg->nsources == 0 || cfg->nsources > READER_MAX_SOURCES)
		return error_set(err, ERR_INVALID, "reader: needs 1 to %d sources, got %u",
				 READER_MAX_SOURCES, cfg->nsources);
	if (cfg->block_size == 0)
		return error_set(err, ERR_INVALID, "reader: block size 0");
	r = calloc(1, sizeof(*r));
	if (!r)
		return error_set(err, ERR_NOMEM, "reader: out of memory");
	r->cfg = *cfg;
	r->c = cfg->counters ? cfg->counters : &r->own;
	for (unsigned i = 0; i < READER_MAX_SOURCES; i++)
		log_limiter_init(&r->fallback_log[i], READER_FALLBACK_LOG_MS, NULL, NULL);
	log_limiter_init(&r->corrupt_log, READER_FALLBACK_LOG_MS, NULL, NULL);
	log_limiter_init(&r->failed_log, READER_FALLBACK_LOG_MS, NULL, NULL);
	log_limiter_init(&r->changed_log, READER_FALLBACK_LOG_MS, NULL, NULL);
	*out = r;
	return ERR_OK;
}

void reader_free(struct reader *r)
{
	if (!r)
		return;
	for (unsigned i = 0; i < READER_MAX_SOURCES; i++)
		log_limiter_release(&r->fallback_log[i]);
	log_limiter_release(&r->corrupt_log);
	log_limiter_release(&r->failed_log);
	log_limiter_release(&r->changed_log);
	free(r);
}

/* One block's piece: the sources in order until one answers. */
static enum error_code read_block(struct reader *r, struct reader_block *blk,
				  uint64_t off, size_t len, char *dst, size_t *got,
				  unsigned readahead, struct error *err)
{
	enum error_code rc = ERR_INTERNAL;

	for (unsigned i = 0; i < r->cfg.nsources; i++) {
		const struct reader_source *src = &r->cfg.sources[i];
		unsigned corrupt = blk->corrupt;

		/* No source is asked past the read's deadline: the error of
		 * the one that used it up stands. */
		if (blk->until_ms && retry_now_ms() >= blk->until_ms) {
			if (i == 0 || rc == ERR_NOT_FOUND)
				rc = error_set(err, ERR_TIMEOUT, "no source answered in time");
			return rc;
		}
		*got = 0;
		rc = src->read(src->ctx, blk, off, len, dst, got, readahead, err);
		/* A source that answers fewer bytes than asked (a cut transfer,
		 * a bug) has not served the block: the next source may. */
		if (rc == ERR_OK && *got != len)
			rc = error_set(err, ERR_IO, "source '%s' answered %zu bytes of %zu", src->name,
				       *got, len);
		if (rc != ERR_OK)
			reader_loan_end(blk->loan); /* nothing stays lent by a failure */
		if (blk->corrupt != corrupt) {
			ADD(r->c->corrupt, blk->corrupt - corrupt);
			log_limited_warn(&r->corrupt_log, "cached block failed its checksum, read again",
					 LOG_S("source", src->name), LOG_S("key", blk->obj->key),
					 LOG_U("block", blk->index),
					 LOG_S("cause", blk->corrupt_cause));
		}
		if (rc == ERR_OK) {
			ADD(r->c->source_blocks[i], 1);
			ADD(r->c->source_bytes[i], *got);
			return ERR_OK;
		}
		/* a corrupt copy was counted and logged above */
		if (rc != ERR_NOT_FOUND && blk->corrupt == corrupt) {
			ADD(r->c->fallbacks[i], 1);
			if (i + 1 < r->cfg.nsources)
				log_limited_warn(&r->fallback_log[i], "block source failed, trying the next",
						 LOG_S("source", src->name),
						 LOG_S("key", blk->obj->key), LOG_U("block", blk->index),
						 LOG_S("cause", err ? err->msg : ""));
		}
	}
	return rc;
}

/*
 * Every source said "not here" to a block of an object that the snapshot
 * lists: the store no longer has that version (rewritten or deleted after
 * the snapshot, If-Match failed). The name exists, its bytes do not: EIO,
 * not ENOENT, counted once per stream (one open file) and logged at most
 * once per 10 s (readers that open the file again and again would write a
 * line each).
 */
static enum error_code object_changed(struct reader *r, const struct reader_object *obj,
				      struct reader_stream *stream, struct error *err)
{
	char cause[ERROR_MSG_MAX];

	ADD(r->c->errors[MOUNTSTATS_CAUSE_CHANGED], 1);
	snprintf(cause, sizeof(cause), "%s", err ? err->msg : "");
	if (!stream || !stream->changed_seen) {
		if (stream)
			stream->changed_seen = true;
		ADD(r->c->changed_objects, 1);
		log_limited_warn(&r->changed_log, "object changed since the snapshot, its reads fail",
				 LOG_S("key", obj->key), LOG_S("etag", obj->etag),
				 LOG_S("cause", cause));
	}
	return error_set(err, ERR_IO, "'%s' changed since the snapshot (ETag '%s'): %s", obj->key,
			 obj->etag, cause);
}

/*
 * No source could serve blk: the read fails with EIO (ERR_IO) whatever
 * the sources said (a timeout is not ETIMEDOUT to an application), logged
 * with the object, block and cause, at most one line per 10 s.
 */
static enum error_code read_failed(struct reader *r, const struct reader_block *blk,
				   struct reader_stream *stream, uint64_t t0, struct error *err)
{
	char cause[ERROR_MSG_MAX];
	uint64_t now = retry_now_ms();
	enum mountstats_cause kind = MOUNTSTATS_CAUSE_SOURCE;

	if (blk->until_ms && now >= blk->until_ms) {
		kind = MOUNTSTATS_CAUSE_DEADLINE;
		snprintf(cause, sizeof(cause), "deadline of %llu ms passed: %s",
			 (unsigned long long)r->cfg.deadline_ms, err ? err->msg : "");
	} else {
		snprintf(cause, sizeof(cause), "%s", err ? err->msg : "");
	}
	ADD(r->c->errors[kind], 1);
	log_limited_warn(&r->failed_log, "read failed", LOG_S("key", blk->obj->key),
			 LOG_U("block", blk->index), LOG_U("ms", now - t0), LOG_S("cause", cause));
	if (stream) {
		stream->failed_block1 = blk->index + 1;
		stream->failed_at_ms = now;
		stream->failed_caller = stream->caller;
		stream->failed_kind = kind;
		snprintf(stream->failed_cause, sizeof(stream->failed_cause), "%s", cause);
	}
	return error_set(err, ERR_IO, "read '%s' block %llu: %s", blk->obj->key,
			 (unsigned long long)blk->index, cause);
}

void reader_loan_end(struct reader_loan *loan)
{
	if (loan && loan->data && loan->end)
		loan->end(loan->arg, loan->held);
	if (loan)
		*loan = (struct reader_loan){ 0 };
}

enum error_code reader_read(struct reader *r, const struct reader_object *obj,
			    struct reader_stream *stream, uint64_t off, size_t len,
			    char *dst, size_t *got, struct error *err)
{
	return reader_read_lend(r, obj, stream, off, len, dst, NULL, got, err);
}

enum error_code reader_read_lend(struct reader *r, const struct reader_object *obj,
				 struct reader_stream *stream, uint64_t off, size_t len,
				 char *dst, struct reader_loan *loan, size_t *got,
				 struct error *err)
{
	const uint64_t bs = r->cfg.block_size;
	const double t0_s = retry_now_s();
	const uint64_t t0 = (uint64_t)(t0_s * 1000.0);
	uint64_t until = 0;
	unsigned readahead = 0;
	enum error_code rc = ERR_OK;

	*got = 0;
	if (loan)
		*loan = (struct reader_loan){ 0 };
	if (off >= obj->size || len == 0)
		return ERR_OK;
	if (len > obj->size - off)
		len = (size_t)(obj->size - off);
	if (stream) {
		/* The kernel's read-ahead sends a file's next requests
		 * together and the loop's threads serve them in any order:
		 * once a stream has begun, a read a few lengths before or
		 * after where the last one ended continues it too, and a
		 * late one does not move its end back. */
		uint64_t slack = (uint64_t)len * READER_REORDER;
		bool near = off == stream->next_off ||
			    (stream->sequential > 0 && off + slack >= stream->next_off &&
			     off <= stream->next_off + slack);

		stream->sequential = near ? stream->sequential + 1 : 0;
		if (!near || off + len > stream->next_off)
			stream->next_off = off + len;
		if (stream->sequential >= READER_SEQUENTIAL_AFTER)
			readahead = r->cfg.prefetch_blocks;
	}
	if (r->cfg.deadline_ms)
		until = t0 + r->cfg.deadline_ms;
	/* failed_at_ms (retry_now_ms) can be a millisecond past t0, which
	 * is rounded from seconds: that failure is as recent as can be. */
	if (stream && stream->failed_block1 == off / bs + 1 &&
	    stream->caller && stream->failed_caller == stream->caller &&
	    (t0 <= stream->failed_at_ms || t0 - stream->failed_at_ms < READER_REFAIL_MS)) {
		/* The kernel asks again for what a read that just failed
		 * could not fill: that read's wait was this one's. Once: the
		 * kernel asks once, and a file opened again afterwards (the
		 * same state when files open without the daemon) is a new
		 * try of the application's. */
		stream->failed_block1 = 0;
		rc = error_set(err, ERR_IO, "read '%s' block %llu: %s", obj->key,
			       (unsigned long long)(off / bs), stream->failed_cause);
		ADD(r->c->errors[stream->failed_kind], 1);
		mountstats_read_done(r->c, retry_now_s() - t0_s, 0);
		return rc;
	}
	while (len > 0) {
		struct reader_block blk = { .obj = obj, .index = off / bs,
					    .block_size = r->cfg.block_size, .corrupt = 0,
					    .until_ms = until };
		uint64_t in_block = off - blk.index * bs;
		size_t piece, n = 0;

		unsigned hint = 0;

		blk.length = obj->size - blk.index * bs < bs ? obj->size - blk.index * bs : bs;
		piece = len < blk.length - in_block ? len : (size_t)(blk.length - in_block);
		if (readahead && stream->hinted1 != blk.index + 1) {
			/* Not past the object's end: each block there would
			 * cost the store a request to learn that it is not. */
			uint64_t after = (obj->size - 1) / bs - blk.index;

			hint = after < readahead ? (unsigned)after : readahead;
			stream->hinted1 = blk.index + 1;
		}
		if (loan && *got == 0 && piece == len)
			blk.loan = loan; /* the read's only piece */
		rc = read_block(r, &blk, in_block, piece, dst, &n, hint, err);
		if (rc == ERR_NOT_FOUND) {
			rc = object_changed(r, obj, stream, err);
		} else if (rc != ERR_OK) {
			rc = read_failed(r, &blk, stream, t0, err);
		}
		if (rc != ERR_OK)
			break;
		dst += n;
		off += n;
		len -= n;
		*got += n;
	}
	mountstats_read_done(r->c, retry_now_s() - t0_s, *got);
	return rc;
}

void reader_get_stats(struct reader *r, struct reader_stats *out)
{
	const struct mountstats_counters *c = r->c;

	memset(out, 0, sizeof(*out));
	out->reads = LOAD(c->reads);
	out->bytes = LOAD(c->bytes);
	for (unsigned i = 0; i < READER_MAX_SOURCES; i++) {
		out->by_source[i] = LOAD(c->source_blocks[i]);
		out->bytes_by_source[i] = LOAD(c->source_bytes[i]);
		out->fallbacks += LOAD(c->fallbacks[i]);
	}
	out->changed_objects = LOAD(c->changed_objects);
	out->corrupt = LOAD(c->corrupt);
	out->failed = LOAD(c->errors[MOUNTSTATS_CAUSE_DEADLINE]) +
		      LOAD(c->errors[MOUNTSTATS_CAUSE_SOURCE]);
	out->failed_changed = LOAD(c->errors[MOUNTSTATS_CAUSE_CHANGED]);
}
