/*
 * reattach.h - a volume mounted anew reaches the containers that kept the
 * ended mount.
 *
 * A running container got its own copy of the published target (a bind
 * mount in its mount namespace) when it started. When the volume's FUSE
 * connection ends for good (every holder of /dev/fuse gone: a node
 * restart, the plugin and the mount pod killed together) and the node
 * plugin mounts the volume anew, those copies keep the ended connection
 * and every access there fails with ENOTCONN until the container restarts.
 *
 * reattach_volume finds them: in every other mount namespace of the node
 * (the node plugin runs with hostPID), a mount of the volume's source
 * ("granary:DATASET", type fuse.granary) whose device is no live Granary
 * mount's is an ended copy. Its mount point, as mountinfo gives it
 * (relative to that process's root), is opened from the process's root
 * (/proc/PID/root) with openat2 RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS |
 * RESOLVE_NO_MAGICLINKS, and what is there must be the ended mount itself
 * (its mount id, statx STATX_MNT_ID): a container that chrooted, or
 * swapped a component of the path for a symbolic link since mountinfo was
 * read, is refused, with nothing detached. Then, in a child process, it
 * clones the new mount (open_tree of the staging path, or of the copy's
 * subdirectory for a subPath), makes the clone read-only, enters that
 * mount namespace (setns), detaches the ended mount through its
 * descriptor (/proc/self/fd/N), opens the mount point again from its
 * parent directory the same way, checks it is now on the mount beneath
 * (mountinfo's parent id) and moves the clone onto that descriptor
 * (move_mount MOVE_MOUNT_T_EMPTY_PATH). Files the container had open on
 * the ended mount stay ended (ENOTCONN); what it opens from then on is
 * served.
 */
#ifndef GRANARY_CSI_REATTACH_H
#define GRANARY_CSI_REATTACH_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "common/fusemount.h"

#define REATTACH_LIVE_MAX 256

/* The devices of the live Granary mounts, from a mountinfo. */
struct reattach_live {
	unsigned major[REATTACH_LIVE_MAX], minor[REATTACH_LIVE_MAX];
	size_t n;
};

/* Whether e is an ended copy of source: its type, its source, and a
 * device no live mount has. Pure. */
bool reattach_is_ended(const struct fusemount_entry *e, const char *fstype, const char *source,
		       const struct reattach_live *live);

struct reattach_result {
	unsigned found;     /* ended copies seen in other mount namespaces */
	unsigned replaced;  /* of those, put back on the new mount */
	char first_error[ERROR_MSG_MAX];
};

/*
 * Replaces every ended copy of source (fstype, "granary:DATASET") on the
 * node with a read-only clone of the mount at staging. proc is "/proc"
 * (tests may point elsewhere for the scan: each PID entry needs mountinfo,
 * ns/mnt and root). ERR_OK when the scan ran, whatever it found: *out
 * counts, and names the first failure ("process 412, mount point
 * '/data/x': open it from the process's root without following links
 * (openat2): a component is a symbolic link; not followed").
 */
enum error_code reattach_volume(const char *proc, const char *fstype, const char *source,
				const char *staging, struct reattach_result *out,
				struct error *err);

#endif
