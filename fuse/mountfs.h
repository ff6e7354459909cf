/*
 * mountfs.h - the read-only dataset filesystem, without libfuse.
 *
 * Answers lookup, getattr, readdir and xattrs from the in-memory snapshot
 * (no call to anyone per file) and reads through a struct reader. The
 * libfuse adapter (fuse/ll.c) only parses requests, calls these functions,
 * maps the error with error_to_errno and replies, so everything here is
 * testable without a mount.
 *
 * Files are mode 0444 and directories 0555, owned by the configured uid and
 * gid; inode numbers are the snapshot's. Nothing here writes: the adapter
 * answers every modifying operation with EROFS.
 *
 * Thread-safe: the snapshot is immutable and the reader is thread-safe; a
 * struct mountfs_file belongs to one open file and libfuse may call read on
 * it from several threads, so its stream state is updated under its
 * stripe's lock.
 */
#ifndef GRANARY_FUSE_MOUNTFS_H
#define GRANARY_FUSE_MOUNTFS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"
#include "fuse/reader.h"
#include "meta/snapshot.h"

/* The extended attributes a file carries. */
#define MOUNTFS_XATTR_ETAG "user.granary.etag"
#define MOUNTFS_XATTR_KEY "user.granary.key"
#define MOUNTFS_XATTR_DATASET "user.granary.dataset"
/* On the root only: the mount's counters as "key=value" words, for
 * scripts (the demo prints its cache hit ratio from it). */
#define MOUNTFS_XATTR_STATS "user.granary.stats"

/* Formats the counters into buf (NUL-terminated, snprintf rules). */
typedef int (*mountfs_stats_fn)(char *buf, size_t size, void *arg);

struct mountfs_attr {
	uint64_t ino;
	bool is_dir;
	uint64_t size;
	int64_t mtime;
	uint32_t nlink;
	uint32_t mode;   /* type and permission bits */
	uid_t uid;
	gid_t gid;
};

/*
 * Open files are kept per inode and reference counted: the file handle the
 * kernel holds is the inode number itself, not a pointer, so that a
 * successor daemon (takeover) can serve reads on handles the previous one
 * opened. A read on an inode with no open state creates it. Lookup and
 * count change under one lock (the lock of the inode's stripe: the table
 * is cut into stripes by inode number, no global lock), so releases and
 * reads racing on an inode never free the state twice or under a read.
 */
struct mountfs_file;

struct mountfs_statfs {
	uint64_t blocks, files;    /* in 4 KiB blocks; entries */
	uint32_t bsize, namemax;
};

struct mountfs;

/* Takes ownership of snap; reader is borrowed and must outlive the fs. */
enum error_code mountfs_new(struct snapshot *snap, struct reader *reader,
			    uid_t uid, gid_t gid, struct mountfs **out,
			    struct error *err);
void mountfs_free(struct mountfs *fs);

const struct snapshot *mountfs_snapshot(const struct mountfs *fs);

/* ERR_NOT_FOUND when parent has no such name (or is not a directory). */
enum error_code mountfs_lookup(struct mountfs *fs, uint64_t parent, const char *name,
			       struct mountfs_attr *out);
enum error_code mountfs_getattr(struct mountfs *fs, uint64_t ino, struct mountfs_attr *out);

/* As snapshot_readdir; "." and ".." are the adapter's business. */
enum error_code mountfs_readdir(struct mountfs *fs, uint64_t dir, uint64_t offset,
				snapshot_readdir_fn fn, void *arg);

/*
 * Opens a file for reading: ERR_NOT_FOUND for an unknown inode, ERR_INVALID
 * for a directory (EISDIR at the edge is the adapter's choice),
 * ERR_READ_ONLY when write access is asked for. The file handle to give
 * the kernel is ino; each successful open is matched by mountfs_release.
 */
enum error_code mountfs_open(struct mountfs *fs, uint64_t ino, bool for_write,
			     struct error *err);
/* Drops one open of ino; an inode not open (after a takeover) is ignored,
 * and so is a release beyond the opens known (a successor counts the
 * previous daemon's handles of an inode as one, at their first read). The
 * open state stays while a read of it is in progress. */
void mountfs_release(struct mountfs *fs, uint64_t ino);

/* How many inodes have open state (tests). */
size_t mountfs_open_files(struct mountfs *fs);

/* Reads up to len bytes at off of file ino for caller (the asking
 * thread's id, 0 for O_DIRECT: see struct reader_stream); *got short
 * only at the end. With loan (may be NULL), the bytes may be lent instead
 * of copied into dst (reader_read_lend); the caller ends the loan. */
enum error_code mountfs_read(struct mountfs *fs, uint64_t ino, uint32_t caller, uint64_t off,
			     size_t len, char *dst, struct reader_loan *loan, size_t *got,
			     struct error *err);

/*
 * Value of an extended attribute into buf (size 0: only *len is set).
 * ERR_NOT_FOUND (ENODATA at the edge) for names not carried,
 * ERR_RANGE when buf is too small.
 */
enum error_code mountfs_getxattr(struct mountfs *fs, uint64_t ino, const char *name,
				 char *buf, size_t size, size_t *len);
/* NUL-separated names, same size rules. */
enum error_code mountfs_listxattr(struct mountfs *fs, uint64_t ino, char *buf,
				  size_t size, size_t *len);

void mountfs_statfs(struct mountfs *fs, struct mountfs_statfs *out);

/* Sets what MOUNTFS_XATTR_STATS shows; call before serving. */
void mountfs_set_stats(struct mountfs *fs, mountfs_stats_fn fn, void *arg);

/*
 * The kernel opens files without asking (FUSE no_open): no open or
 * release arrives, so the state a read makes goes when a read reaches the
 * file's end, and the states that reads left before the end are kept up
 * to a bound (the oldest dropped; a dropped state only costs a reader its
 * read-ahead until its next reads look sequential again). Called before
 * any read.
 */
void mountfs_set_no_open(struct mountfs *fs);

#endif
