/*
 * blockstore.h - the node's block cache on a directory.
 *
 * Blocks, their keys and their files are the block contract's
 * (block/key.h, block/file.h; docs/cache-layout.md): granary-fuse on the
 * same node reads these files directly. The store adds:
 *   DIR/tmp/                blocks being written (removed at start)
 *   DIR/.lock               flock'd by the one process that owns DIR
 * Files are written in DIR/tmp and renamed into place: a reader never
 * sees a partial block. No fsync: a block torn by a crash fails its
 * checksum and is fetched again. A block is written back (sync_file_range,
 * started as it is written, waited for at commit) before it is published,
 * so that its pages are clean and its readers can drop them from the page
 * cache once read (block_file_drop): the node holds a byte in memory once,
 * in the mount's page cache. A store opened with direct_write (a
 * standalone mount, whose reader is served the fetched bytes themselves)
 * keeps each block's bytes in its writer and writes them with O_DIRECT
 * instead: no page of the file enters the page cache, nothing is written
 * back or dropped, and the bytes go to the caller at commit
 * (blockstore_write_commit_bytes).
 *
 * Capacity counts whole files (header + data, rounded up to 4 KiB) and is
 * never exceeded: room is reserved before a block is written. Eviction
 * picks the least recently used block that is neither pinned nor held by
 * a reader (a struct blockstore_ref). Admission depends on the dataset's
 * policy:
 *   BLOCKSTORE_LRU            always admit, evicting as needed;
 *   BLOCKSTORE_SCAN_RESISTANT admit only if the block has been asked for
 *                             more often than the blocks it would evict
 *                             (a decaying frequency sketch, TinyLFU-style),
 *                             so repeated scans of a dataset larger than
 *                             the cache keep a stable subset cached.
 * A pinned dataset's blocks are never evicted.
 *
 * Thread-safe: one mutex guards the index; file I/O happens outside it.
 */
#ifndef GRANARY_CACHE_BLOCKSTORE_H
#define GRANARY_CACHE_BLOCKSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/file.h"
#include "block/key.h"
#include "block/name.h"
#include "common/error.h"

enum blockstore_policy {
	BLOCKSTORE_LRU = 0,
	BLOCKSTORE_SCAN_RESISTANT,
};

struct blockstore_config {
	const char *dir;
	uint64_t capacity;     /* bytes on disk, headers included */
	/* Usual block data size, only to size the frequency sketch from the
	 * number of blocks the capacity holds; 0 means 4 MiB. */
	uint32_t block_size;
	/*
	 * Write blocks with O_DIRECT from a buffer each writer keeps (a
	 * block's data rounded up to 4 KiB, and its header). A filesystem
	 * that refuses O_DIRECT (EINVAL at open) turns it off for the store,
	 * with one log line.
	 */
	bool direct_write;
	/* With direct_write: blocks shorter than this are still written
	 * through the page cache (0: every block with O_DIRECT). The worker
	 * and the standalone mount pass BLOCK_DIRECT_MIN (block/file.h). */
	uint64_t direct_write_min;
	/* Open blocks of BLOCK_DIRECT_MIN bytes or more for reading with
	 * O_DIRECT (block_file_read_direct): a store written with O_DIRECT
	 * and read by its own process (the standalone mount) then never
	 * brings a block into the page cache only to drop it. Not for a
	 * store whose descriptors are sent to sockets (the worker's). */
	bool direct_read;
};

struct blockstore_stats {
	uint64_t hits, misses;
	uint64_t admitted, rejected;  /* reservations granted / refused */
	uint64_t evictions;
	uint64_t corrupt;             /* blocks dropped by a failed check */
	uint64_t blocks;              /* blocks cached now */
	uint64_t used, capacity;      /* bytes */
	uint64_t reserved;            /* bytes held for writers; used + reserved <= capacity */
	uint64_t disk_full;           /* times the capacity was lowered to what the disk holds */
	uint64_t unowned;             /* blocks dropped by blockstore_drop_unless */
};

/* One dataset's share of the cache (blockstore_dataset_bytes). */
struct blockstore_usage {
	char name[BLOCK_DATASET_MAX + 1];
	uint64_t bytes;             /* data bytes of its cached blocks */
};

struct blockstore;
struct blockstore_ref;
struct blockstore_writer;

/* The lock file in DIR that marks its owner (see blockstore_open). */
#define BLOCKSTORE_LOCK_FILE BLOCK_DIR_LOCK_FILE
/* The modes the store creates its files and directories with: its owner's
 * alone (see blockstore_open). */
#define BLOCKSTORE_FILE_MODE 0600
#define BLOCKSTORE_DIR_MODE 0700

/*
 * Opens the store as the owner of DIR. First takes an exclusive flock on
 * DIR/BLOCKSTORE_LOCK_FILE, held until blockstore_free: a second owner, in
 * this process or another, fails at once with ERR_UNAVAILABLE naming DIR,
 * before touching anything (readers of the block files take no lock).
 * Then creates DIR/blocks and DIR/tmp as needed, removes leftovers in
 * DIR/tmp and rebuilds the index from the block files: files with a bad
 * header, a wrong size or an unknown name are removed (counted in
 * stats.corrupt). If the files found exceed the capacity, the oldest are
 * evicted. ERR_INVALID / ERR_PERMISSION name the directory.
 */
enum error_code blockstore_open(const struct blockstore_config *cfg,
				struct blockstore **out, struct error *err);
/* The cache directory's id (block_dir_id_ensure, in its lock file), kept
 * for the store's life; "" when it could not be written. */
const char *blockstore_dir_id(const struct blockstore *bs);

/* Every ref must have been put and every writer committed or aborted. */
void blockstore_free(struct blockstore *bs);

/*
 * Declares a dataset's policy and pin; blocks fetched for it, and blocks
 * found at start that name it, follow them. May be called again to change
 * them. Unknown datasets behave as LRU, unpinned. ERR_INVALID for an empty
 * name or one block_dataset_name_check refuses.
 */
enum error_code blockstore_set_dataset(struct blockstore *bs, const char *dataset,
				       enum blockstore_policy policy, bool pin,
				       struct error *err);

/*
 * Looks a block up. On a hit, *ref holds it (it cannot be evicted until
 * blockstore_ref_put) and the access counts for LRU and frequency. On a
 * miss returns ERR_NOT_FOUND (and counts the miss and the frequency). A
 * block whose file has vanished is dropped and counts as a miss; another
 * failure to open the file returns ERR_IO (the ref is not taken).
 */
enum error_code blockstore_get(struct blockstore *bs,
			       const uint8_t hash[BLOCK_HASH_LEN],
			       struct blockstore_ref **ref);

/*
 * blockstore_get when access is true. With access false the lookup is not
 * an access: no frequency, no LRU move, no hit or miss counted. Read-ahead
 * and preload look blocks up this way, so that only real reads decide
 * what the scan-resistant policy keeps.
 */
enum error_code blockstore_lookup(struct blockstore *bs,
				  const uint8_t hash[BLOCK_HASH_LEN], bool access,
				  struct blockstore_ref **ref);

/* Whether the block is cached (committed, not being removed) now: no
 * access, no descriptor, one index lookup. Read-ahead asks it before it
 * queues a block, so blocks already held cost no bookkeeping. */
bool blockstore_has(struct blockstore *bs, const uint8_t hash[BLOCK_HASH_LEN]);

/*
 * Whether count new blocks of data_len bytes each would be admitted now
 * for dataset, hash the one whose frequency the scan-resistant policy
 * weighs against the blocks they would evict: the check
 * blockstore_write_begin makes, reserving and evicting nothing. A
 * read-ahead run asks it before its GET, so that a block the cache would
 * refuse does not cut the GET short after the store sent it. A later
 * begin may still refuse (other writers come between).
 */
bool blockstore_admits(struct blockstore *bs, const uint8_t hash[BLOCK_HASH_LEN],
		       const char *dataset, uint64_t data_len, unsigned count);

/* A read of a cached block served from elsewhere (the bytes its fetch
 * kept in memory): counts as an access, as blockstore_get's hit does
 * (frequency, LRU, hits), without opening the file. Returns whether the
 * block is cached. */
bool blockstore_touch(struct blockstore *bs, const uint8_t hash[BLOCK_HASH_LEN]);

/* A read-only descriptor of the block file, valid while the ref is held;
 * the data starts at blockstore_ref_offset() and has blockstore_ref_length()
 * bytes. */
int blockstore_ref_fd(const struct blockstore_ref *ref);
uint64_t blockstore_ref_offset(const struct blockstore_ref *ref);
uint64_t blockstore_ref_length(const struct blockstore_ref *ref);

/*
 * Reads the header of ref's file now and returns its sums (to check the
 * data with block_read_checked, or to send them with the data). A
 * header that fails its checks (or a short one) drops the block as
 * blockstore_ref_verify does: ERR_IO with *corrupt set. A header that
 * cannot be read (EIO from the disk) says nothing about the block, which
 * stays: its errno's code (ERR_IO for EIO) with *corrupt false, the
 * message naming the read that failed; not counted in stats.corrupt.
 */
enum error_code blockstore_ref_sums(struct blockstore *bs, struct blockstore_ref *ref,
				    struct block_sums *out, bool *corrupt, struct error *err);

/*
 * Reads the whole block now and checks it against its header. On a
 * mismatch (or a bad header, or a short file) the block is removed from
 * the store (stats.corrupt, one warning per 10 s) and ERR_IO is returned
 * with *corrupt set; the ref stays valid for blockstore_ref_put only. A
 * read error (of the header or the data) keeps the block: its errno's
 * code with *corrupt false. Nothing is remembered: every call reads.
 */
enum error_code blockstore_ref_verify(struct blockstore *bs,
				      struct blockstore_ref *ref, bool *corrupt,
				      struct error *err);

void blockstore_ref_put(struct blockstore *bs, struct blockstore_ref *ref);

/* The key hash of ref's block (valid while the ref is held). */
const uint8_t *blockstore_ref_hash(const struct blockstore_ref *ref);

/*
 * Drops the pages of data bytes [off, off + len) of block hash from the
 * page cache (block_file_drop), if its file is still there: for a sender
 * whose reader takes the bytes after the ref is put (cache/http.c). It
 * holds no descriptor meanwhile, so an evicted block's disk space is
 * free at once. No lock, no error: a block evicted since took its pages
 * along; a block fetched again since loses its pages, which only costs a
 * read.
 */
void blockstore_drop_pages(struct blockstore *bs, const uint8_t hash[BLOCK_HASH_LEN], uint64_t off,
			   uint64_t len);

/*
 * Reserves room for a block of at most max_len data bytes for dataset and
 * returns a writer. Returns ERR_NO_SPACE when the policy refuses admission
 * or nothing evictable frees enough room (the caller then serves the data
 * without caching it), ERR_EXISTS if the block is already cached or being
 * written; ERR_INVALID for an empty dataset or key field, a block_size of
 * 0, max_len above block_size, or names too long for the header.
 *
 * Admission compares the frequency the candidate had before the miss that
 * led here (blockstore_get counts that miss first), so a writer is expected
 * to have looked the block up; see blockstore.c for why.
 */
enum error_code blockstore_write_begin(struct blockstore *bs,
				       const struct block_key *key,
				       const char *dataset, uint64_t max_len,
				       struct blockstore_writer **w,
				       struct error *err);

/*
 * blockstore_write_begin for a writer that expects expect_len bytes (the
 * block's length from its object's size) but takes up to max_len. Room is
 * reserved for the expected length, and for max_len only once more bytes
 * come (admitted as a new block would be; refused, the append fails with
 * ERR_NO_SPACE and the bytes so far can be read back): a small file's
 * block in flight holds its own size of the capacity, not a whole
 * block's, and makes no eviction for room it will not use. With
 * direct_write the writer's buffer is of the expected length too (grown
 * likewise), and a block expected under direct_write_min is written
 * through the page cache in one piece at commit.
 */
enum error_code blockstore_write_begin_expect(struct blockstore *bs,
					      const struct block_key *key,
					      const char *dataset, uint64_t max_len,
					      uint64_t expect_len,
					      struct blockstore_writer **w,
					      struct error *err);

/*
 * The bytes appended so far (*len of them, at most max_len) into buf: a
 * writer whose disk filled up hands what it had to memory.
 */
enum error_code blockstore_write_read_back(struct blockstore_writer *w, void *buf, uint64_t *len,
					   struct error *err);

/*
 * The data a direct_write writer keeps in its buffer (*len bytes: all
 * appended so far), or NULL for a writer without one or one whose block
 * goes through the page cache (expected under direct_write_min: its
 * commit hands out the file, not the bytes). Valid until the
 * writer's commit or abort; after a commit_bytes that handed the buffer
 * over, the same bytes lie at BLOCK_HEADER_SIZE of it. The commit writes
 * only the header and past the data, so readers may use the bytes while
 * another thread commits (the fetcher serves them before the block is on
 * disk).
 */
const void *blockstore_write_kept(const struct blockstore_writer *w, uint64_t *len);

/*
 * The cache directory's filesystem is full (a write got ENOSPC): when it
 * has less than a block free, lowers the capacity to what the disk holds
 * (the blocks held and reserved plus what is free), counted in
 * stats.disk_full; then evicts unheld blocks, least recently used first,
 * until a block fits. *capacity gets the capacity now. Returns whether it
 * was lowered. The capacity is never raised again in this process.
 */
bool blockstore_disk_full(struct blockstore *bs, uint64_t *capacity);

/* Appends data (at most max_len in total: ERR_INVALID past it); ERR_IO on a
 * write error, ERR_NO_SPACE when the disk is full (ENOSPC, EDQUOT), after
 * which commit fails too. Not thread-safe per writer. */
enum error_code blockstore_write_append(struct blockstore_writer *w,
					const void *data, size_t len,
					struct error *err);

/*
 * Publishes the block (rename into place), releases the unused part of the
 * reservation and, if ref is not NULL, returns a held ref to it. On error
 * the writer is aborted. The writer is freed in every case.
 */
enum error_code blockstore_write_commit(struct blockstore *bs,
					struct blockstore_writer *w,
					struct blockstore_ref **ref,
					struct error *err);

/*
 * blockstore_write_commit that also hands over the block's bytes when the
 * writer kept them (direct_write): *bytes (never NULL itself) gets a
 * buffer with the data at BLOCK_HEADER_SIZE, the caller's, in every case
 * where the commit succeeded, and then *ref is
 * NULL (the caller serves the bytes; no descriptor is opened). A commit
 * whose write failed (ERR_NO_SPACE for a full disk, else ERR_IO) caches
 * nothing but hands the bytes over too, so that the caller can still
 * serve them. *bytes is NULL when
 * the writer kept none (a store without direct_write, or one the
 * filesystem refused it) or wrote its block through the page cache from
 * its start (expected under direct_write_min), with *ref as
 * blockstore_write_commit's. *room (may be NULL) gets the data bytes the buffer holds, for
 * blockstore_bytes_put: give the buffer back with it.
 */
enum error_code blockstore_write_commit_bytes(struct blockstore *bs,
					      struct blockstore_writer *w,
					      struct blockstore_ref **ref, void **bytes,
					      uint64_t *room, struct error *err);

/* Gives back bytes that blockstore_write_commit_bytes handed over, with
 * the room it said they have: a usual block's are kept for the next
 * writer (at most BYTES_SPARE), others freed. NULL is ignored. */
void blockstore_bytes_put(struct blockstore *bs, void *bytes, uint64_t room);

/* Drops the temp file and the reservation; frees the writer. */
void blockstore_write_abort(struct blockstore *bs, struct blockstore_writer *w);

/* The datasets with cached blocks and the data bytes of each, largest
 * first, at most max of them, into out; returns how many. A block counts
 * for the dataset that fetched it. */
size_t blockstore_dataset_bytes(struct blockstore *bs, struct blockstore_usage *out, size_t max);

/* Removes every unheld block of dataset (pinned ones too); returns the
 * count. The dataset is unpinned: blocks a request still holds, and blocks
 * written for it later, are evictable until blockstore_set_dataset pins it
 * again. */
uint64_t blockstore_drop_dataset(struct blockstore *bs, const char *dataset);

/* Blocks a pass over many (blockstore_drop_unless, a dataset's removal)
 * handles per hold of the store's lock: reads wait behind one slice. */
#define BLOCKSTORE_LOCK_SLICE 256

/*
 * Drops every block of an unpinned dataset for which keep(dataset, hash,
 * arg) is false, as eviction would, except those being read now or when
 * the call began (they stay until a later call); returns how many, also
 * counted in stats.unowned. Least recently used first, a slice
 * (BLOCKSTORE_LOCK_SLICE blocks) at a time: keep runs without the store's
 * lock, so reads and writes go on meanwhile (and keep may call the
 * store); a block read, pinned or replaced since it was judged stays. A
 * pass stops early where the block it would go on from was read, dropped
 * or pinned meanwhile; the blocks after it wait for the next call.
 */
typedef bool (*blockstore_keep_fn)(const char *dataset, const uint8_t hash[BLOCK_HASH_LEN],
				   void *arg);
uint64_t blockstore_drop_unless(struct blockstore *bs, blockstore_keep_fn keep, void *arg);

void blockstore_get_stats(struct blockstore *bs, struct blockstore_stats *out);

/*
 * Whether the store can still take blocks, for the worker's /readyz: a
 * file can be made (and removed) in DIR/tmp as writers make theirs, and
 * the room rule below holds for the filesystem's free space (what root may
 * use when the process runs as root). ERR_OK, or the errno's code
 * ("cache directory '/c' is not writable: create '/c/tmp/...': Read-only
 * file system") or ERR_NO_SPACE from the room rule.
 */
enum error_code blockstore_check_usable(struct blockstore *bs, struct error *err);

/*
 * The room rule (pure): a block file of need bytes fits when the
 * filesystem has fs_free bytes for it, or when the cache is so near its
 * capacity that it evicts before it writes (capacity - used - reserved <
 * need), since eviction then frees the disk space the write takes. A disk
 * filled below the cache's capacity (by other files, or a capacity larger
 * than the disk) is something eviction never fixes: ERR_NO_SPACE naming
 * dir, the free bytes and the way out.
 */
enum error_code blockstore_room_check(const char *dir, uint64_t fs_free, uint64_t capacity,
				      uint64_t used, uint64_t reserved, uint64_t need,
				      struct error *err);

#endif
