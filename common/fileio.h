/*
 * fileio.h - the few file operations every component needs done right:
 * whole writes and reads that survive EINTR and short transfers, and the
 * replacement of a small file so that a reader sees the old or the new
 * content, never a mix, even after a crash; directories made with their
 * parents.
 */
#ifndef GRANARY_COMMON_FILEIO_H
#define GRANARY_COMMON_FILEIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"

/* Writes all len bytes; 0, or -1 with errno set (EIO for a zero write). */
int fileio_write_all(int fd, const void *buf, size_t len);

/* Writes all len bytes at off; 0, or -1 with errno set. */
int fileio_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);

/* Reads len bytes at off; returns the count (short only at end of file),
 * or -1 with errno set. On a descriptor opened with O_DIRECT, a read whose
 * buffer, offset or length is not aligned to 4 KiB (which the kernel
 * refuses) goes through an aligned buffer of the calling thread's. */
ssize_t fileio_pread_all(int fd, void *buf, size_t len, uint64_t off);

/*
 * Replaces path with data, atomically and durably: a uniquely named hidden
 * temporary file in the same directory (".NAME.XXXXXX") with the given
 * mode (exactly, not masked), fsync, rename over path, fsync of the
 * directory. One error rule: every step that fails fails the call (the
 * directory's fsync too), naming the file (error_from_errno codes, ERR_IO
 * for a short write); the temporary file is removed and no descriptor is
 * left open.
 */
enum error_code fileio_replace(const char *path, const void *data, size_t len, mode_t mode,
			       struct error *err);

/* Writes a file's content to fd: 0, or -1 with errno set (0 for "no
 * cause": ERR_IO). */
typedef int (*fileio_write_fn)(int fd, void *arg);

/* fileio_replace for content written by write_fn (a stream too large to
 * hold in memory at once), with the same steps and error rule. */
enum error_code fileio_replace_with(const char *path, mode_t mode, fileio_write_fn write_fn,
				    void *arg, struct error *err);

/* fsync of directory path, so that the entries made or removed in it last
 * across a crash. Errors name the directory. */
enum error_code fileio_sync_dir(const char *path, struct error *err);

/*
 * Makes directory path and its missing parents (parents 0755, path itself
 * mode); directories already there are fine. Errors name the directory
 * that could not be made ("mkdir '/a/b': permission denied").
 */
enum error_code fileio_mkdirs(const char *path, mode_t mode, struct error *err);

/* Makes the directory that holds the file path (as fileio_mkdirs, 0755),
 * e.g. a socket's before binding it; nothing for "/file" or "file". */
enum error_code fileio_mkdirs_parent(const char *path, struct error *err);

/* Removes path and everything under it, following no link (each step is
 * taken from a directory already open: a tree that someone else can write
 * meanwhile never leads it elsewhere) and entering no other file system;
 * a path that is not there is fine. Errors name the first entry that
 * could not be removed. */
enum error_code fileio_remove_tree(const char *path, struct error *err);

/*
 * Reads the whole file path into a NUL-terminated heap buffer (*out, the
 * caller frees it; *len without the NUL). ERR_INVALID "larger than max
 * bytes" past max; open and read errors name the file (error_from_errno).
 */
enum error_code fileio_read_small(const char *path, size_t max, char **out, size_t *len,
				  struct error *err);

/*
 * Reads file path into the caller's buf as text: at most size - 1 bytes,
 * then a NUL. Returns the count (a longer file is cut), or -1 with errno
 * set. For the small files of /proc, /sys and cgroups, where the caller
 * knows an upper bound and wants no allocation.
 */
ssize_t fileio_read_text(const char *path, char *buf, size_t size);

/*
 * Page cache of a file (docs/ARCHITECTURE.md, "Memory"):
 *
 * fileio_drop_cached asks the kernel to drop the clean cached pages of
 * bytes [off, off + len) of fd (len 0: to the end of the file), rounded
 * out to whole pages, as posix_fadvise POSIX_FADV_DONTNEED does; dirty
 * pages and pages under writeback stay, and so do the pages of a large
 * folio (up to 2 MiB, naturally aligned: ext4 makes them on read-ahead)
 * that reaches outside the range: only a range from 0 to the end is sure
 * to drop everything. Advice only: no error, errno left as it was, and
 * nothing happens on a file system whose pages are its storage (tmpfs).
 *
 * fileio_resident counts the bytes of [off, off + len) of fd (len 0: to
 * the end) whose pages are in the page cache now (mmap + mincore, whole
 * pages: the last one counts in full): 0 and *bytes, or -1 with errno
 * set. An empty file or range is 0 bytes. The kernel tells only the
 * file's owner, root, or a caller that may write it; anyone else sees
 * only pages mapped in the process (none).
 */
void fileio_drop_cached(int fd, uint64_t off, uint64_t len);
int fileio_resident(int fd, uint64_t off, uint64_t len, uint64_t *bytes);

/* What the page cache holds of a tree: the regular files under dir. */
struct fileio_residency {
	uint64_t files, bytes, resident;
};

/*
 * fileio_resident over every regular file under dir (symbolic links not
 * followed; a file that vanishes meanwhile is left out), summed into *out.
 * ERR_OK, or the error of the first directory or file that could not be
 * opened or counted, naming it; *out then holds what was counted.
 */
enum error_code fileio_resident_tree(const char *dir, struct fileio_residency *out,
				     struct error *err);

/* Value of one hexadecimal digit (either case), or -1. */
int fileio_hex_value(char c);

/*
 * An I/O buffer of size bytes, page-aligned, freed with free(). One of
 * 2 MiB or more is aligned to 2 MiB and asks for transparent huge pages
 * on its whole 2 MiB spans: an O_DIRECT write or a FUSE reply pins every
 * page of the buffer it is given, and a huge page is pinned, mapped and
 * faulted in once for 512 small ones. Where the kernel gives none, the
 * buffer works the same with small pages.
 */
void *fileio_buf_alloc(size_t size);

/* What the calling thread keeps a buffer for (fileio_thread_buf). */
enum fileio_thread_use {
	FILEIO_BUF_REPLY,  /* granary-fuse's FUSE read replies */
	FILEIO_BUF_BOUNCE, /* O_DIRECT reads of unaligned ranges (fileio_pread_all) */
	FILEIO_BUF_USES
};

/*
 * A buffer of at least size bytes from fileio_buf_alloc that the calling
 * thread keeps for use: grown (to whole pages), never shrunk, freed when
 * the thread ends, so that a hot path allocates nothing (a large malloc
 * per call would be an mmap and munmap each time). NULL without memory.
 */
char *fileio_thread_buf(enum fileio_thread_use use, size_t size);

#endif
