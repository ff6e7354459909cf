/*
 * fdcache.h - open block files kept for short-circuit readers (granary-fuse
 * reading the node worker's cache directory), so that a read is a pread of
 * its chunks, not open, a header read, fstat, the read and close.
 *
 * Each entry holds a descriptor of one block file and the chunk checksums
 * of its header, both taken once when block_file_open_hashed checked the
 * file against its key. Every read still checks the chunks it reads
 * against those checksums (block_read_checked), so a descriptor never
 * serves a byte its header does not vouch for.
 *
 * Bounded: at most capacity descriptors. A miss that finds the cache full
 * of entries in use opens the file for that one read (closed at put), so
 * the bound holds under any concurrency; otherwise the least recently used
 * idle entry is closed. Entries idle for idle_ms are closed on the next
 * call (block_fdcache_sweep for a reader that has stopped reading).
 *
 * The worker evicts a block by unlinking its file and replaces one (a
 * corrupt copy fetched again) by renaming a new file over it; a cached
 * descriptor keeps the old inode. Its bytes are still the key's (a key
 * names one object version), so nothing wrong is served; but an unlinked
 * file keeps its disk space while open, and a replaced corrupt copy would
 * fail every read. Hence: an entry in use is checked (fstat: still linked?)
 * once it has gone check_ms without a check, and an unlinked one is
 * reopened from its path; a put with bad set (a checksum mismatch, a read
 * error) closes the entry, so that the next read opens whatever the path
 * holds then.
 *
 * Thread-safe: one mutex guards the table and the LRU list, held for
 * neither open, close nor reads.
 */
#ifndef GRANARY_BLOCK_FDCACHE_H
#define GRANARY_BLOCK_FDCACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "block/file.h"
#include "block/key.h"
#include "common/error.h"

#define BLOCK_FDCACHE_CAPACITY 64     /* descriptors, by default */
#define BLOCK_FDCACHE_CHECK_MS 1000   /* an entry in use is checked this often */
#define BLOCK_FDCACHE_IDLE_MS 5000    /* an idle entry is closed after this */

struct block_fdcache_config {
	const char *dir;      /* the cache directory (DIR/blocks/...); copied */
	unsigned capacity;    /* 0: BLOCK_FDCACHE_CAPACITY */
	/* 0: every take checks that the file is still linked. */
	uint64_t check_ms;
	uint64_t idle_ms;     /* 0: idle entries stay until evicted */
	/* Read the data of files of BLOCK_DIRECT_MIN bytes or more with
	 * O_DIRECT (block_file_read_direct). */
	bool direct;
};

struct block_fdcache;
/* One taken block file: valid until block_fdcache_put. */
struct block_fdref;

enum error_code block_fdcache_new(const struct block_fdcache_config *cfg,
				  struct block_fdcache **out, struct error *err);
/* Closes every descriptor; no ref may be outstanding. */
void block_fdcache_free(struct block_fdcache *c);

/*
 * Takes the block file of key, whose hash is hash (block_key_hash): from
 * the cache, else opened and checked as block_file_open_hashed does.
 * ERR_NOT_FOUND when there is no such block (or its file does not check
 * out); another code when it cannot be opened. On ERR_OK *ref must be
 * given back with block_fdcache_put.
 */
enum error_code block_fdcache_take(struct block_fdcache *c, const struct block_key *key,
				   const uint8_t hash[BLOCK_HASH_LEN], struct block_fdref **ref,
				   struct error *err);
int block_fdref_fd(const struct block_fdref *ref);
/* The file's data length and chunk checksums, as its header gave them. */
const struct block_sums *block_fdref_sums(const struct block_fdref *ref);
/* Gives ref back; bad: its file failed a read or a check, close it. */
void block_fdcache_put(struct block_fdcache *c, struct block_fdref *ref, bool bad);

/* Closes the entries idle for idle_ms (a timer calls it). */
void block_fdcache_sweep(struct block_fdcache *c);

struct block_fdcache_stats {
	uint64_t hits, opens, evictions, reopened; /* reopened: found unlinked */
	unsigned open_fds;
};
void block_fdcache_get_stats(struct block_fdcache *c, struct block_fdcache_stats *out);

#endif
