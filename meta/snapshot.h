/*
 * snapshot.h - the immutable namespace snapshot of one dataset generation:
 * every object under the dataset's prefix with its size, ETag and mtime,
 * arranged as a directory tree. granary-meta builds it from a listing and
 * keeps it on disk; granary-fuse loads it once and answers lookup, getattr
 * and readdir from it without asking anyone.
 *
 * In memory a snapshot is one array of fixed-size entries and one string
 * pool (names and ETags, NUL-terminated). The inode number of an entry is
 * its index + 1; the root is inode 1. Entries are laid out breadth-first:
 * the children of a directory are contiguous and sorted by name (bytewise),
 * so lookup is a binary search and readdir a slice, and inode numbers are
 * fixed for a given snapshot (the same listing always gives the same ones).
 * About 40 bytes per entry plus its name and ETag.
 *
 * Directories come from key prefixes ("a/b/c.rec" makes "a" and "a/b") and
 * from folder markers (keys ending in '/'). A directory's mtime is the
 * latest mtime below it; its size is 0.
 *
 * A finished snapshot is never modified: every query is safe from any
 * number of threads at once without locks. A builder is single-threaded.
 *
 * On disk and on the wire a snapshot is a versioned binary encoding (see
 * snapshot.c) ending with an XXH3-64 checksum of everything before it; the
 * decoder refuses a truncated or corrupted buffer with ERR_IO and checks
 * every length, count and name, so that no input can make it read out of
 * bounds or build an inconsistent tree.
 *
 * No gRPC and no FUSE here: the adapters call these functions and map the
 * error codes.
 */
#ifndef GRANARY_META_SNAPSHOT_H
#define GRANARY_META_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/name.h"
#include "common/error.h"

struct store;

#define SNAPSHOT_ROOT_INO 1
#define SNAPSHOT_NAME_MAX 255     /* bytes in one path segment */
#define SNAPSHOT_ETAG_MAX 128     /* bytes in an ETag */
/* Largest piece snapshot_encode hands its callback at once; well under the
 * 1 MiB chunks the meta service streams. */
#define SNAPSHOT_ENCODE_PIECE (64 * 1024)

struct snapshot;
struct snapshot_builder;

/* Totals over the whole snapshot. */
struct snapshot_totals {
	uint64_t files;
	uint64_t dirs;      /* the root included */
	uint64_t bytes;     /* sum of file sizes */
	uint64_t skipped;   /* files dropped because a directory had their name */
};

/* What snapshot_stat reports. The strings point into the snapshot and live
 * as long as it does. */
struct snapshot_entry_info {
	uint64_t ino;
	uint64_t parent;    /* inode of the directory; the root's is itself */
	bool is_dir;
	uint64_t size;      /* 0 for directories */
	int64_t mtime;      /* seconds since the epoch */
	const char *name;   /* "" for the root */
	const char *etag;   /* "" for directories and when unknown */
	uint64_t nchildren; /* 0 for files */
};

/* ---- building ---------------------------------------------------------- */

/*
 * Starts a snapshot of dataset name (block_dataset_name_check), from source uri
 * ("s3://bucket/prefix/" or "file:///dir", checked with store_uri_parse),
 * at generation. The key prefix that snapshot_object_key puts back in front
 * of each path is the URI's prefix. ERR_INVALID names a bad name or URI;
 * ERR_NOMEM. *out is consumed by snapshot_builder_finish or released with
 * snapshot_builder_free.
 */
enum error_code snapshot_builder_new(const char *name, const char *uri,
				     uint64_t generation,
				     struct snapshot_builder **out,
				     struct error *err);

/*
 * Adds one object, key relative to the dataset prefix ("a/b/c.rec"), in any
 * order. A key ending in '/' is a folder marker: it makes the directory
 * (and its parents) and no file; its size is ignored. etag may be NULL.
 *
 * A key that cannot be a path is refused with ERR_INVALID naming it, and
 * the builder stays usable without it: empty key, empty segment ("a//b",
 * "/a"), "." or "..", a segment over SNAPSHOT_NAME_MAX bytes, an ETag over
 * SNAPSHOT_ETAG_MAX; so is a file size over STORE_OBJECT_MAX (5 TiB, the
 * largest S3 object) or one that would take the sum of the sizes past 2^64.
 * ERR_NO_SPACE past 2^32 - 2 entries; ERR_NOMEM.
 *
 * A key that is also a directory ("a" beside "a/b") is not an error: at
 * finish the directory is kept, the file skipped, counted in
 * snapshot_totals.skipped and logged as a warning.
 */
enum error_code snapshot_builder_add(struct snapshot_builder *b, const char *key,
				     uint64_t size, const char *etag, int64_t mtime,
				     struct error *err);

/* Same with an explicit key length, for keys that are not C strings: a NUL
 * byte inside is refused with ERR_INVALID. */
enum error_code snapshot_builder_add_len(struct snapshot_builder *b, const char *key,
					 size_t key_len, uint64_t size, const char *etag,
					 int64_t mtime, struct error *err);

/* Objects added so far (folder markers included, refused keys not). */
uint64_t snapshot_builder_count(const struct snapshot_builder *b);

/*
 * Sorts and lays out what was added and returns the snapshot in *out. The
 * builder is freed in every case. The same file key added twice is
 * ERR_INVALID naming it (a listing never has duplicates). ERR_NOMEM.
 */
enum error_code snapshot_builder_finish(struct snapshot_builder *b, struct snapshot **out,
					struct error *err);

/* Frees a builder that will not be finished. NULL is fine. */
void snapshot_builder_free(struct snapshot_builder *b);

/*
 * Lists every object under prefix ("" or ending in '/', else ERR_INVALID)
 * in st with store_list_all and builds the snapshot from the keys with the
 * prefix removed; the prefix's own folder marker (the key equal to the
 * prefix) is ignored. The snapshot's object keys are prefix + path, so
 * snapshot_object_key gives keys for st. Errors: those of
 * snapshot_builder_new, of the listing (the store's message as it is), and
 * the first refused key (ERR_INVALID naming the object's whole key: the
 * build stops there).
 */
enum error_code snapshot_build_from_store(struct store *st, const char *prefix,
					  const char *name, const char *uri,
					  uint64_t generation, struct snapshot **out,
					  struct error *err);

/* The same within limits on the listing (store_list_all_limited; NULL =
 * none): its ERR_NO_SPACE, ERR_TIMEOUT and ERR_INVALID name the limit or
 * the fault and the store's endpoint. */
struct store_list_limits;
enum error_code snapshot_build_from_store_limited(struct store *st, const char *prefix,
						  const char *name, const char *uri,
						  uint64_t generation,
						  const struct store_list_limits *lim,
						  struct snapshot **out, struct error *err);

void snapshot_free(struct snapshot *snap);

/* ---- queries (all thread-safe, no locks) ------------------------------- */

const char *snapshot_name(const struct snapshot *snap);
const char *snapshot_uri(const struct snapshot *snap);
/* The key prefix in front of every path ("" or ending in '/'). */
const char *snapshot_prefix(const struct snapshot *snap);
uint64_t snapshot_generation(const struct snapshot *snap);
void snapshot_totals(const struct snapshot *snap, struct snapshot_totals *out);
/* Number of entries = the largest inode number. */
uint64_t snapshot_count(const struct snapshot *snap);
/* Heap bytes the snapshot holds, every allocation counted. */
size_t snapshot_memory_bytes(const struct snapshot *snap);

/* Inode of name in directory parent, or 0 when parent is not a directory
 * of this snapshot or has no such entry. name is one segment. */
uint64_t snapshot_lookup(const struct snapshot *snap, uint64_t parent, const char *name);

/* Fills *out for ino. ERR_NOT_FOUND when ino is not in the snapshot. */
enum error_code snapshot_stat(const struct snapshot *snap, uint64_t ino,
			      struct snapshot_entry_info *out);

/*
 * Inode of the path relative to the dataset root ("a/b/c.rec"); "" is the
 * root. Leading, trailing and repeated '/' are ignored; "." and ".." never
 * match. 0 when there is no such entry.
 */
uint64_t snapshot_resolve_path(const struct snapshot *snap, const char *path);

/*
 * The children of directory dir are inodes *first .. *first + *count - 1,
 * in name order. ERR_NOT_FOUND for an unknown ino, ERR_INVALID for a file.
 */
enum error_code snapshot_children(const struct snapshot *snap, uint64_t dir,
				  uint64_t *first, uint64_t *count);

/*
 * Calls fn for the children of dir in name order, starting at the
 * offset-th (0 = first). next_off is the offset to resume after this child.
 * fn returns 0 to go on, non-zero to stop (a full reply buffer); that is
 * not an error. Errors as snapshot_children; offset past the end is fine
 * (no calls).
 */
typedef int (*snapshot_readdir_fn)(const char *name, uint64_t ino, bool is_dir,
				   uint64_t next_off, void *arg);
enum error_code snapshot_readdir(const struct snapshot *snap, uint64_t dir, uint64_t offset,
				 snapshot_readdir_fn fn, void *arg);

/*
 * Writes the path of ino relative to the dataset root ("a/b/c.rec", "" for
 * the root) into buf, NUL-terminated. ERR_NOT_FOUND for an unknown ino,
 * ERR_RANGE when size is too small (buf then holds "").
 */
enum error_code snapshot_path(const struct snapshot *snap, uint64_t ino, char *buf,
			      size_t size);

/*
 * Writes the object key to fetch ino from the store: prefix + path. A
 * directory gets a trailing '/' (its folder-marker form; the root is the
 * prefix). Errors as snapshot_path.
 */
enum error_code snapshot_object_key(const struct snapshot *snap, uint64_t ino, char *buf,
				    size_t size);

/* ---- encoding and persistence ------------------------------------------ */

/* Receives the encoding in order, in pieces of at most SNAPSHOT_ENCODE_PIECE
 * bytes; returns 0 to go on, non-zero to stop. */
typedef int (*snapshot_write_fn)(const void *data, size_t len, void *arg);

/* Streams the encoding of snap to fn. ERR_IO when fn fails; ERR_NOMEM. */
enum error_code snapshot_encode(const struct snapshot *snap, snapshot_write_fn fn, void *arg,
				struct error *err);

/* The whole encoding in one malloc'd buffer (*buf, *len), for the meta
 * service to send in chunks. ERR_NOMEM. */
enum error_code snapshot_encode_to_buffer(const struct snapshot *snap, void **buf,
					  size_t *len, struct error *err);

/*
 * Decodes len bytes (the concatenated chunks) into a new snapshot that
 * does not keep pointers into buf. ERR_IO for anything truncated,
 * corrupted or inconsistent (the message says what); ERR_UNSUPPORTED for a
 * format version this build does not read; ERR_NOMEM.
 */
enum error_code snapshot_decode(const void *buf, size_t len, struct snapshot **out,
				struct error *err);

/* "DIR/NAME/GENERATION.snap" in a malloc'd string, NULL when out of memory. */
char *snapshot_file_path(const char *dir, const char *name, uint64_t generation);

/*
 * Writes snap to snapshot_file_path(dir, ...) atomically and durably: a
 * temporary file in the same directory, fsync, rename over the final name,
 * fsync of the directory. Creates DIR/NAME when missing (DIR must exist).
 * An existing file of the same generation is replaced. Errors from the
 * system calls (error_from_errno, naming the path); ERR_NOMEM.
 */
enum error_code snapshot_save(const struct snapshot *snap, const char *dir, struct error *err);

/* Reads and decodes the file at path. Errors of open/read
 * (error_from_errno) and of snapshot_decode, each naming the path. */
enum error_code snapshot_load(const char *path, struct snapshot **out, struct error *err);

#endif
