/*
 * fusemount.h - the kernel side of a FUSE mount that the daemon
 * (fuse/ll.c, which mounts a path itself) and the node plugin
 * (csi/node_mount.c, which mounts a staging path and hands granary-fuse
 * /dev/fd/N) must treat alike: the max_read rule, and the mount's
 * read-ahead, which the kernel keeps per mount in its bdi
 * (/sys/class/bdi/MAJOR:MINOR/read_ahead_kb) and which sizes page-cache
 * reads, whatever max_read allows.
 *
 * The mount's device number comes from /proc/self/mountinfo, not stat(2):
 * a FUSE mount answers stat only once its daemon serves, and the mounting
 * process sets the read-ahead before that.
 */
#ifndef GRANARY_COMMON_FUSEMOUNT_H
#define GRANARY_COMMON_FUSEMOUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define FUSEMOUNT_PAGE 4096u
#define FUSEMOUNT_MAX_READ_MAX (1u << 20) /* the most one FUSE read request carries */

/* max_read: a multiple of 4KiB from 4KiB to 1MiB. ERR_INVALID "WHAT: must
 * be a multiple of 4KiB from 4KiB to 1MiB, got N bytes". */
enum error_code fusemount_check_max_read(const char *what, uint64_t bytes, struct error *err);

/* read_ahead: a multiple of 4KiB (0 = leave the kernel's). ERR_INVALID
 * naming what. */
enum error_code fusemount_check_read_ahead(const char *what, uint64_t bytes, struct error *err);

/*
 * One line of mountinfo (proc(5)): when its mount point, octal escapes
 * undone ("\040" is a space), is path, true with the mount's device
 * number. Pure.
 */
bool fusemount_parse_line(const char *line, const char *path, unsigned *major, unsigned *minor);

/* One mountinfo line, every field it has that a caller here needs. */
struct fusemount_entry {
	int mount_id, parent_id; /* as statx's STATX_MNT_ID reports the first */
	unsigned major, minor;
	char root[1024];    /* the path within the filesystem that is mounted */
	char point[1024];   /* where, as the reading process sees it */
	char fstype[64];
	char source[512];
};

/* Reads a mountinfo line whole (octal escapes undone); false when it is
 * malformed or a field does not fit. Pure. */
bool fusemount_parse_entry(const char *line, struct fusemount_entry *out);

/*
 * The topmost mount at path in /proc/self/mountinfo (mountinfo rather than
 * stat: a FUSE mount whose daemon is gone answers stat with ENOTCONN):
 * true with its device number and, when fstype is not NULL, its type.
 * False when nothing is mounted there or mountinfo cannot be read.
 */
bool fusemount_lookup(const char *path, unsigned *major, unsigned *minor, char *fstype,
		      size_t size);

/*
 * Sets the read-ahead of the mount at path (its topmost mount there, the
 * path resolved when it can be) to bytes, rounded down to KiB.
 * ERR_NOT_FOUND "no mount at 'PATH' in /proc/self/mountinfo"; a write
 * refused names the sysfs file and the cause (a read-only /sys in a
 * container: ERR_READ_ONLY / ERR_PERMISSION).
 */
enum error_code fusemount_set_read_ahead(const char *path, uint64_t bytes, struct error *err);

/*
 * Opens and closes one regular file of the mount at dir (the first found,
 * depth first, at most 4096 entries looked at), to settle at once, while
 * its daemon serves, what the kernel learns from a connection's first
 * open and first close. A granary-fuse with no_open answers that open
 * ENOSYS, after which files open without a request; and the close sends a
 * FLUSH, which answered ENOSYS stops FLUSHes for good. Left to a reader,
 * that first close could come while the daemon is down and wait for its
 * successor, and a process that closes the file on its way to starting
 * the successor (an inherited descriptor) would wait forever. Blocks
 * until the daemon answers: call it from a thread of its own
 * (fusemount_prime_async) where that matters. True when a file was
 * opened and closed.
 */
bool fusemount_prime(const char *dir);

/* fusemount_prime(dir) on a detached thread (dir copied). */
void fusemount_prime_async(const char *dir);

#endif
