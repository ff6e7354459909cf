/*
 * ll.h - the libfuse3 low-level adapter: mounts a struct mountfs and runs
 * the session until it is unmounted or the process gets SIGTERM/SIGINT
 * (then it unmounts itself, leaving no stale mount).
 *
 * The tuned behaviour is the default (docs/fuse-tuning.md says why):
 * long entry and attribute timeouts, keep_cache, 1 MiB reads (max_read and
 * the mount's read-ahead raised to match), a multithreaded loop with
 * clone_fd and enough idle threads for the readers, a raised
 * max_background, readdirplus and cached directory listings.
 */
#ifndef GRANARY_FUSE_LL_H
#define GRANARY_FUSE_LL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "fuse/mountfs.h"

struct ll_config {
	const char *mountpoint;      /* a directory, or /dev/fd/N of an opened /dev/fuse */
	const char *fsname;          /* shown in /proc/mounts, e.g. "granary:imagenet" */
	double entry_timeout;        /* seconds */
	double attr_timeout;         /* seconds */
	bool keep_cache;
	bool no_open;                /* FUSE no_open, with keep_cache: no open or release requests */
	uint32_t max_read;           /* bytes, <= 1 MiB */
	unsigned max_background;
	unsigned max_idle_threads;   /* 0 = sized from the CPU quota */
	bool clone_fd;
	bool splice;                 /* reply through a pipe (SPLICE_WRITE) */
	uint64_t read_ahead;         /* bytes for the mount's bdi read_ahead_kb; 0 = leave */
	bool allow_other;
	/*
	 * Restart safety (with mountpoint /dev/fd/N held by a supervisor):
	 * init_state names a file where the first daemon saves the kernel's
	 * FUSE_INIT request; a daemon started with takeover replays it to
	 * itself instead of waiting for an INIT that will not come, then asks
	 * the kernel to resend the requests the dead daemon had read but not
	 * answered (FUSE_NOTIFY_RESEND, kernel 6.9+).
	 */
	const char *init_state;
	bool takeover;
	bool debug;                  /* libfuse request tracing */
};

/*
 * Mounts and serves until unmounted or signalled. Returns ERR_OK after a
 * clean unmount; ERR_INVALID / ERR_PERMISSION / ERR_IO naming the
 * mountpoint when the mount itself fails.
 */
enum error_code ll_run(struct mountfs *fs, const struct ll_config *cfg, struct error *err);

/*
 * The saved FUSE_INIT (ll_config.init_state) a successor replays to
 * libfuse: the file lies in the node plugin's state directory, which a
 * mount pod can write, so it is checked before libfuse sees it. It must
 * hold exactly one request: a fuse_in_header whose len is the file's
 * size, opcode FUSE_INIT, and a fuse_init_in of protocol major 7 (at
 * least its first 16 bytes, the most an old kernel sends), at most
 * LL_INIT_STATE_MAX bytes in all. ERR_INVALID saying which rule the data
 * breaks (callers prefix the file).
 */
#define LL_INIT_STATE_MAX 8192
enum error_code ll_check_saved_init(const void *data, size_t len, struct error *err);

#endif
