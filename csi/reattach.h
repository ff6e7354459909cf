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
 * mount's is an ended copy. In a child process it clones the new mount
 * (open_tree of the staging path, or of the copy's subdirectory for a
 * subPath), makes the clone read-only, enters that mount namespace
 * (setns), detaches the ended mount and moves the clone to its place
 * (move_mount). Files the container had open on the ended mount stay
 * ended (ENOTCONN); what it opens from then on is served.
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
 * (tests may point elsewhere for the scan). ERR_OK when the scan ran,
 * whatever it found: *out counts, and names the first failure.
 */
enum error_code reattach_volume(const char *proc, const char *fstype, const char *source,
				const char *staging, struct reattach_result *out,
				struct error *err);

#endif
