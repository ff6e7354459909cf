/*
 * reader.h - the mount's read path: bytes of an object by blocks, each
 * block from the first source that has it.
 *
 * A read is split at block boundaries. For every block the reader tries
 * its sources in order and takes the first answer:
 *   standalone:  the in-process block cache (fetching misses from the store)
 *   cluster:     the node's cache directory (short-circuit, no RPC), the
 *                block's owner worker (HTTP), the object store itself.
 * ERR_NOT_FOUND from a source means "not here, ask the next"; any other
 * error is logged and the next source is asked too, so a worker that dies
 * mid-read costs time, never a failed read. A source that answers fewer
 * bytes than asked counts as failed the same way. Only when the last source fails
 * does the read fail, with that source's error. Those warnings are rate
 * limited, one line per source per 10 s with the count held back, so a dead
 * worker costs a few log lines, not one per block.
 *
 * A copy of a block that fails its checksums (a local cache file, a peer's
 * answer) is never served: it is counted (corrupt), logged at most once
 * per 10 s with the count held back, and the block is read again from the
 * next source, the owner worker being told to check (and drop) its copy.
 *
 * When every source answers ERR_NOT_FOUND the object listed in the snapshot
 * has changed (or gone) in the bucket since: the read fails with ERR_IO
 * (EIO; the name still exists, its bytes do not), counted in
 * changed_objects and logged once per stream with the key and the cause.
 *
 * A read has one deadline (deadline_ms from its start), carried to every
 * source, every store retry and every wait on another reader's fetch:
 * never restarted per source, per block or per retry. When no source
 * serves a block by then, or the last one fails, the read fails with
 * ERR_IO (EIO, never ETIMEDOUT), counted in failed and logged with the
 * object, block and cause at most once per 10 s. The kernel asks again
 * at once, from the same thread, for the pages its read-ahead could not
 * fill: the next read by the same caller of the block that failed on the
 * same file, within READER_REFAIL_MS, fails at once with the same cause
 * (once: a later read tries again), so a buffered read waits one
 * deadline too. Another caller's read of that
 * block starts afresh, and so does any read of caller 0 (an O_DIRECT
 * read, which the kernel never asks again: a retry is the application's).
 *
 * Sequential access (a read that starts where the previous one on the same
 * handle ended) sends a prefetch hint for the following blocks to the
 * sources that take hints, once per block (the first sequential read of
 * it), not with every piece: the hint names the same blocks each time;
 * prefetched data lands in caches on disk, so the mount's own memory
 * stays bounded by its read buffers.
 *
 * Counting: every read (with its latency), block piece and bytes by
 * source, fallback and failure by cause is added, without a lock, to the
 * counters cfg.counters names (a mount's file that outlives the daemon,
 * fuse/mountstats.h) or to the reader's own.
 *
 * Thread-safe: sources are shared and must be thread-safe themselves; the
 * sequential state lives in the caller's struct reader_stream.
 */
#ifndef GRANARY_FUSE_READER_H
#define GRANARY_FUSE_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/key.h"
#include "common/error.h"
#include "fuse/mountstats.h"

/* One object version, as the snapshot names it. */
struct reader_object {
	const char *key;   /* full object key in the bucket */
	const char *etag;  /* "" when unknown */
	uint64_t size;
	uint64_t ino;      /* the file's inode in the mount, for sources' hooks */
};

/*
 * Bytes a source lends to a read instead of copying them into its buffer:
 * a block the source holds in memory (one fetched from the store just
 * now). data stays valid until reader_loan_end; the FUSE reply is then
 * made from it, which saves a copy of every byte of a cold read.
 */
struct reader_loan {
	const char *data; /* NULL: nothing lent, the bytes are in dst */
	void (*end)(void *arg, void *held); /* gives held back */
	void *arg;
	void *held;       /* what keeps data valid (the source's) */
};

/* Gives back what a source lent (nothing when none was), and clears it. */
void reader_loan_end(struct reader_loan *loan);

/* One block of an object. */
struct reader_block {
	const struct reader_object *obj;
	uint64_t index;
	uint32_t block_size;
	uint64_t length;   /* bytes in this block (short at the end) */
	/* Copies of this block found corrupt so far in this read: a source
	 * that finds bytes failing their checksums adds one (and serves
	 * nothing of them); later sources see it (the peer source then asks
	 * the owner to check its copy). */
	unsigned corrupt;
	char corrupt_cause[160]; /* the last one, for the log */
	/* The read's deadline (retry_now_ms clock; 0 = none): a source
	 * answers or gives up by then, its waits and retries included. */
	uint64_t until_ms;
	/* The block key's hash, computed once per block by the first source
	 * that needs it (hashed false until then) and reused by the next. */
	bool hashed;
	uint8_t hash[BLOCK_HASH_LEN];
	/* Where a source may lend the bytes instead of copying them into
	 * dst (NULL: copy). Set only for a read within this one block. */
	struct reader_loan *loan;
};

struct reader_source {
	const char *name;  /* "cache", "local", "peer", "store": logs and stats */
	/*
	 * Reads len bytes at off within the block into dst; *got = len on
	 * success. ERR_NOT_FOUND: not held here. readahead asks the source
	 * to warm that many following blocks, if it can. Bytes from a cache
	 * (a file, a peer) are served only once checked against the block's
	 * checksums; a mismatch counts in blk->corrupt. A source may fill
	 * blk->loan, when set, instead of dst.
	 */
	enum error_code (*read)(void *ctx, struct reader_block *blk,
				uint64_t off, size_t len, char *dst, size_t *got,
				unsigned readahead, struct error *err);
	void *ctx;
};

#define READER_MAX_SOURCES MOUNTSTATS_SOURCES

/* A read of the block that just failed on the same file by the same
 * caller, this soon after, fails at once (the kernel asking again, see
 * above). */
#define READER_REFAIL_MS 1000

struct reader_config {
	uint32_t block_size;
	/* Most one read (one FUSE request) may take, every source and retry
	 * included; 0 = none. */
	uint64_t deadline_ms;
	unsigned prefetch_blocks;   /* hint size once access is sequential */
	struct reader_source sources[READER_MAX_SOURCES];
	unsigned nsources;
	/* Where the reads are counted (a mount's stats file, kept across a
	 * takeover: fuse/mountstats.h); NULL: counters of the reader's own.
	 * Borrowed: must outlive the reader. */
	struct mountstats_counters *counters;
};

/* Per open file: where the last read ended, to detect sequential access. */
struct reader_stream {
	uint64_t next_off;
	unsigned sequential;  /* consecutive reads that continued the last one */
	uint64_t hinted1;     /* the block whose read sent the last hint, + 1 */
	bool changed_seen;    /* the object changed since the snapshot was logged */
	/* Who asks for this read (the FUSE request's thread id; 0 for an
	 * O_DIRECT read; set by the caller before each read). */
	uint32_t caller;
	/* The last read that failed: its first failing block (+1; 0 =
	 * none), its caller, when, and why. The kernel asks again at once
	 * for pages its read-ahead could not fill; that read keeps the
	 * deadline of the one that failed instead of starting a new one. */
	uint64_t failed_block1, failed_at_ms;
	uint32_t failed_caller;
	char failed_cause[160];
	enum mountstats_cause failed_kind;
};

struct reader_stats {
	uint64_t reads, bytes;
	uint64_t by_source[READER_MAX_SOURCES];   /* blocks answered */
	uint64_t bytes_by_source[READER_MAX_SOURCES];
	uint64_t fallbacks;                        /* source errors passed over */
	uint64_t changed_objects;  /* streams that met an object changed since the snapshot */
	uint64_t corrupt;          /* cached copies of blocks that failed their checksums */
	uint64_t failed;           /* reads failed (EIO): no source could serve a block */
	uint64_t failed_changed;   /* reads failed (EIO): the object changed since the snapshot */
};

struct reader;

enum error_code reader_new(const struct reader_config *cfg, struct reader **out,
			   struct error *err);
void reader_free(struct reader *r);

/*
 * Reads up to len bytes at off of obj into dst; *got is less than len only
 * at the end of the object. stream may be NULL (no prefetch hints).
 * ERR_IO/ERR_UNAVAILABLE/... from the last source when no source could
 * serve a block; ERR_IO when none had it (the object changed since the
 * snapshot), never ERR_NOT_FOUND.
 */
enum error_code reader_read(struct reader *r, const struct reader_object *obj,
			    struct reader_stream *stream, uint64_t off, size_t len,
			    char *dst, size_t *got, struct error *err);

/* reader_read, where a source may lend the bytes of a read within one
 * block (loan->data set; dst is then untouched) instead of copying them.
 * The caller ends the loan with reader_loan_end once it has used them. */
enum error_code reader_read_lend(struct reader *r, const struct reader_object *obj,
				 struct reader_stream *stream, uint64_t off, size_t len,
				 char *dst, struct reader_loan *loan, size_t *got,
				 struct error *err);

void reader_get_stats(struct reader *r, struct reader_stats *out);

#endif
