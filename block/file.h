/*
 * file.h - the block file: where it lies under a cache directory, its
 * header, and how its data is checked. The worker writes these files and
 * granary-fuse on the same node reads them directly (docs/cache-layout.md
 * is the reference for the bytes); both use this module, so neither can
 * drift from the other.
 *
 *   DIR/blocks/HH/HASH   HH = the first two hex digits of the key hash
 *
 * A block file is a BLOCK_HEADER_SIZE header (magic, sizes, the key it
 * holds, the dataset that fetched it, a CRC32C of each chunk of the data,
 * an XXH3-64 of the header itself) followed by the data, so data offsets
 * stay page-aligned.
 *
 * Every reader checks what it reads, every time: the chunks that hold the
 * bytes asked for are read whole and compared with their CRC32C
 * (block_read_checked), so a byte flipped on disk is never served.
 *
 * Every reader also drops the data pages it read from the page cache
 * (block_file_drop; block_read_checked does it): on a node, a block's bytes
 * are held in memory once, as the page cache of the mount's file that
 * returned them, not a second time as the block file's pages
 * (docs/ARCHITECTURE.md, "Memory"). The header's page stays cached.
 *
 * Pure functions but for block_read_checked and block_file_open (reads).
 */
#ifndef GRANARY_BLOCK_FILE_H
#define GRANARY_BLOCK_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/key.h"
#include "common/error.h"

#define BLOCK_HEADER_SIZE 4096
/* Longest object key a block header holds, in bytes; the header's string
 * area also bounds its sum with the dataset, endpoint, bucket and ETag. */
#define BLOCK_OBJECT_MAX 1024
/* Data checksums: a block's data is cut into at most this many chunks of
 * block_chunk_size() bytes (the last one short), each with its CRC32C. */
#define BLOCK_CHUNKS_MAX 256
#define BLOCK_CHUNK_MIN (64u << 10)
/* "HH/" + 32 hex digits + NUL: a block file relative to DIR/blocks. */
#define BLOCK_REL_PATH_LEN (3 + 2 * BLOCK_HASH_LEN + 1)

/* What checks a block's data: its length and the CRC32C of each chunk. */
struct block_sums {
	uint64_t data_len;
	uint32_t chunk_size;
	uint32_t crc[BLOCK_CHUNKS_MAX];
};

/* The chunk size of blocks of block_size: block_size / BLOCK_CHUNKS_MAX,
 * at least BLOCK_CHUNK_MIN (so 64 KiB up to 16 MiB blocks). */
uint32_t block_chunk_size(uint32_t block_size);
/* CRC32C (Castagnoli, as iSCSI and ext4 use it) of len bytes. */
uint32_t block_crc32c(const void *data, size_t len);
/* The sums of len bytes of data held in memory (a block of block_size). */
void block_sums_of(const void *data, uint64_t len, uint32_t block_size, struct block_sums *out);
/* The same, but only the sums of the chunks that hold bytes [off, off +
 * n) are computed (the others are left as they were): what a range sent
 * with its checksums needs. */
void block_sums_of_range(const void *data, uint64_t len, uint32_t block_size, uint64_t off,
			 uint64_t n, struct block_sums *out);
/* Whether data holds the block's bytes [off, off + len): off must start a
 * chunk and the range end at a chunk's end or the data's; false otherwise. */
bool block_sums_check(const struct block_sums *s, uint64_t off, const void *data, size_t len);

/*
 * Reads len data bytes at off of a block file open as fd (data at
 * BLOCK_HEADER_SIZE) into dst, checking every chunk that holds them
 * against s (chunks the range cuts through are read whole into a bounce
 * buffer). On a mismatch or a file shorter than s says: ERR_IO with
 * *corrupt set, naming the chunk; dst then holds garbage. A failed read is
 * its errno's code with *corrupt false. ERR_RANGE past the data. Whatever
 * the outcome, the chunks read leave the page cache (block_file_drop).
 */
enum error_code block_read_checked(int fd, const struct block_sums *s, uint64_t off, size_t len,
				   void *dst, bool *corrupt, struct error *err);

/*
 * Drops the page cache of data bytes [off, off + len) of a block file open
 * as fd whose data has data_len bytes (data at BLOCK_HEADER_SIZE;
 * fileio_drop_cached), for a reader that has the bytes now: the FUSE reply
 * that carries them fills the mount's page cache, or the peer's. A large
 * folio that the range cuts through stays (fileio.h), so a range that
 * reaches the end of the data drops the whole file, header included: a
 * block read from start to end leaves nothing. Clean pages only: a block
 * being written is made clean at its commit (cache/blockstore.h). Advice:
 * no error, nothing on tmpfs.
 */
void block_file_drop(int fd, uint64_t off, uint64_t len, uint64_t data_len);

/*
 * For a descriptor that reads a block file's data (block_file_open's, the
 * block store's): no kernel read-ahead on it (POSIX_FADV_RANDOM), so that
 * a read brings in only the pages of the chunks it asks for, in small
 * folios that block_file_drop then drops. With read-ahead (8 MiB on the
 * cache disk here) a read pulled in the rest of the block in large folios
 * that straddle the ranges later readers drop, and a part of them stayed
 * cached. Read-ahead across blocks is done above: by the kernel on the
 * FUSE file, by the fetcher and the peers on blocks.
 */
void block_file_read_advice(int fd);

/*
 * The data of an opened block file of data_len data bytes read from the
 * disk from now on, not through the page cache (O_DIRECT), and the
 * header's page read at open dropped, when data_len is BLOCK_DIRECT_MIN or
 * more: the mount reads a block written with O_DIRECT once and keeps its
 * bytes in the FUSE file's pages, so a copy in the block file's pages
 * would only be made, copied and dropped. False (the descriptor reads
 * through the page cache as before) for a shorter block, or where the
 * filesystem has no O_DIRECT.
 */
bool block_file_read_direct(int fd, uint64_t data_len);

/*
 * Blocks of at least this many data bytes are written by the worker and
 * read by the node's mount with O_DIRECT; shorter ones (small files, the
 * short last block of a file) go through the page cache, where the
 * mount's read right after the worker's write finds them: a disk read on
 * the path of every small file cost more than the copies it saves
 * (docs/benchmarks.md, "O_DIRECT between the worker and its mount").
 */
#define BLOCK_DIRECT_MIN (1u << 20)

/*
 * Opens a block file (path relative to dir_fd, or AT_FDCWD) to read it,
 * with flags added to O_RDONLY | O_CLOEXEC, and without updating its
 * access time (O_NOATIME) where the kernel allows it: a block is read
 * right after it is written, and on a filesystem mounted relatime that
 * first read would dirty the inode and cost a journal entry and a
 * write of it, for a time no one reads. Where O_NOATIME is refused (a
 * file of another owner, no CAP_FOWNER) the open goes on without it,
 * and later opens of the process do not ask again. -1 with errno.
 */
int block_file_open_read(int dir_fd, const char *path, int flags);

/* "HH/HASH", relative to DIR/blocks. */
void block_file_rel_path(const uint8_t hash[BLOCK_HASH_LEN], char out[BLOCK_REL_PATH_LEN]);
/* DIR/blocks/HH/HASH. Returns snprintf's length. */
int block_file_path(const char *dir, const uint8_t hash[BLOCK_HASH_LEN], char *out, size_t size);

/* A string of a parsed header: not NUL-terminated, points into it. */
struct block_header_string {
	const char *p;
	size_t n;
};

/* A parsed header. */
struct block_header {
	uint32_t block_size, chunk_size;
	uint64_t data_len, index;
	struct block_header_string dataset, endpoint, bucket, etag, object;
	const uint8_t *crcs; /* the chunk table, in the header buffer */
};

/* Whether the strings of key and dataset fit in a header: ERR_INVALID
 * naming the object when they do not. */
enum error_code block_header_fits(const struct block_key *key, const char *dataset,
				  struct error *err);

/* A header for key fetched for dataset (block_header_fits) in h
 * (BLOCK_HEADER_SIZE bytes), without data length, checksums or time. */
void block_header_prepare(uint8_t *h, const struct block_key *key, const char *dataset);

/* Completes a prepared header: the data length, the chunk checksums of
 * its block_chunk_size() chunks, the creation time, the header checksum. */
void block_header_seal(uint8_t *h, uint64_t data_len, const uint32_t *crcs, int64_t created);

/* NULL if h is a valid header (filling out, which points into h), else
 * why not ("bad magic", "header checksum mismatch" ...). */
const char *block_header_parse(const uint8_t *h, struct block_header *out);

/* The chunk table of a parsed header. */
void block_header_sums(const struct block_header *hdr, struct block_sums *out);

/* The key hash of the block a parsed header holds. */
void block_header_key_hash(const struct block_header *hdr, uint8_t out[BLOCK_HASH_LEN]);

/*
 * For short-circuit readers in other processes (granary-fuse on the node):
 * opens the block file of key under dir read-only and checks its header
 * and size against key. ERR_NOT_FOUND when there is no such block or the
 * file's header does not check out (a miss: the reader asks the worker; it
 * never removes or writes the file); a header the disk cannot read is that
 * read's error (ERR_IO for EIO). On ERR_OK *fd is open (close it after
 * the read) and *sums holds the header's data length and chunk checksums:
 * read the data with block_read_checked.
 */
enum error_code block_file_open(const char *dir, const struct block_key *key, int *fd,
				struct block_sums *sums, struct error *err);

/* The same for a caller that has the key's hash (block_key_hash) already. */
enum error_code block_file_open_hashed(const char *dir, const struct block_key *key,
				       const uint8_t hash[BLOCK_HASH_LEN], int *fd,
				       struct block_sums *sums, struct error *err);

/*
 * A block of len data bytes read whole into dst (the reader's dst), with
 * its header in the same read: for a block shorter than BLOCK_DIRECT_MIN
 * read once (a small file), where block_file_open's own header read, the
 * size check, the advice and a second read cost more than the copy. The
 * same checks as block_file_open and the same ERR_NOT_FOUND for a missing
 * file or one whose header names another block or another length, or
 * whose size is not its header's and len's; when verify, the data is
 * checked against the header's CRC32Cs: ERR_IO with *corrupt on a
 * mismatch (dst then holds garbage). The file's pages are dropped
 * (block_file_drop) whatever the outcome.
 */
enum error_code block_file_read_whole(const char *dir, const struct block_key *key,
				      const uint8_t hash[BLOCK_HASH_LEN], void *dst, size_t len,
				      bool verify, bool *corrupt, struct error *err);

/*
 * The cache directory's id: 32 lower-case hex digits in DIR/.lock (the
 * file whose flock marks the directory's owner, docs/cache-layout.md),
 * drawn at random by the first owner and kept by every later one. A worker
 * compares the id a mount sends with its own to tell that the mount reads
 * the same directory (its node's, whatever the path in either container),
 * so that it can answer "fetched, read it from the directory" instead of
 * sending the bytes.
 */
#define BLOCK_DIR_LOCK_FILE ".lock"
#define BLOCK_DIR_ID_LEN 32

/* Whether s is a cache directory id (BLOCK_DIR_ID_LEN lower-case hex). */
bool block_dir_id_valid(const char *s);

/* Reads the id of cache directory dir into out. ERR_NOT_FOUND when its
 * lock file is missing or holds no id (no owner has run there yet). */
enum error_code block_dir_id_read(const char *dir, char out[BLOCK_DIR_ID_LEN + 1],
				  struct error *err);

/* The owner's part: the id in its open lock file fd, or a new random one
 * written there when it holds none. ERR_IO when it cannot be written. */
enum error_code block_dir_id_ensure(int fd, char out[BLOCK_DIR_ID_LEN + 1], struct error *err);

#endif
