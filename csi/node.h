/*
 * node.h - the CSI node plugin's core: one granary-fuse per staged volume
 * (= dataset) on this node, shared by every pod that mounts it, and
 * read-only bind mounts into the pods. No gRPC here (csi/service.c adapts).
 *
 * Stage: the plugin opens /dev/fuse, mounts the staging path itself with
 * mount(2) (type fuse.granary, read-only, nosuid, nodev, allow_other), keeps
 * the descriptor, and starts granary-fuse on it as --mountpoint /dev/fd/N
 * with --init_state (where the daemon keeps the kernel's FUSE_INIT). The
 * node-stage secret reaches the daemon as a 0600 credentials file, never
 * argv or the environment. The call returns once the daemon serves (its
 * init_state file appears), or fails with what the daemon's exit says.
 * Meta must know the dataset first; if it lost it (a restart without its
 * data_dir), the registration in the volume context (the PV's attributes,
 * csi/controller.h) registers it again.
 *
 * Supervision: a monitor thread waits on each daemon's pidfd (and checks
 * every daemon each second). One that died while the plugin holds its
 * descriptor is reaped once all its threads have ended, and replaced on
 * the same connection with --takeover true: the mount never goes away and
 * readers at most wait. A successor starts at once after a daemon that ran
 * NODE_RESTART_STABLE_MS; after one that ended sooner (a successor that
 * cannot start: missing binary, bad settings, a crash at start), the next
 * waits 100 ms, doubling up to 10 s (node_restart_delay), and each cause
 * of such failures is logged once a minute. While a volume cannot serve,
 * its condition (below) says so and why; /metrics counts the restarts.
 *
 * Restarts of the plugin: every staged volume has a record (JSON) in
 * STATE/node/<volume id>.json: dataset, staging path, daemon pid and start
 * time, the descriptor's number inside the daemon, published targets. A new
 * plugin re-adopts each running daemon and takes a copy of its descriptor
 * with pidfd_getfd(2) (a reopen of /proc/PID/fd/N would open a new, empty
 * FUSE connection instead). If the daemon died while no plugin ran, the
 * connection died with it: the plugin mounts the staging path anew, starts
 * a daemon and binds every recorded target again (pods that already run
 * keep the dead mount: see docs/csi.md).
 *
 * Paths: staging and target paths must lie strictly under one of the
 * allowed roots (lexically: absolute, no "." or ".." components), and no
 * component below the root may be a symbolic link (checked with lstat
 * before the call acts), else ERR_INVALID.
 *
 * Ids: every call checks its volume_id with controller_check_id before the
 * id names a file in STATE/node (ERR_INVALID otherwise).
 *
 * Threads: every call is thread-safe; calls on one volume are serialised,
 * calls on different volumes run at once.
 */
#ifndef GRANARY_CSI_NODE_H
#define GRANARY_CSI_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "csi/controller.h"
#include "meta/meta_client.h"

/* ---- records (pure; unit-tested) ----------------------------------------- */

struct node_record {
	char *volume_id;
	char *dataset;
	char *staging_path;
	char *credentials_file;  /* "" when the stage had no secret */
	char *init_state;        /* the daemon's saved FUSE_INIT */
	int64_t pid;             /* 0 = no daemon */
	uint64_t start_time;     /* /proc/PID/stat field 22: tells a reused pid apart */
	int daemon_fd;           /* the /dev/fuse descriptor's number in the daemon */
	uint64_t conn;           /* mount pods: the FUSE connection's id (keeper.h); 0 = none */
	char **targets;          /* published bind mounts */
	size_t ntargets;
};

/* Writes r as JSON to path (mode 0600, temporary file + fsync + rename).
 * ERR_IO / ERR_PERMISSION naming the path, ERR_NOMEM. */
enum error_code node_record_save(const char *path, const struct node_record *r, struct error *err);

/* Reads a record into r (heap strings; release with node_record_release,
 * also after an error). ERR_NOT_FOUND for a missing file, ERR_INVALID
 * naming the path and the field for a damaged one. */
enum error_code node_record_load(const char *path, struct node_record *r, struct error *err);
void node_record_release(struct node_record *r);

/* Adds target unless present / removes it if present. ERR_NOMEM. */
enum error_code node_record_add_target(struct node_record *r, const char *target,
				       struct error *err);
void node_record_remove_target(struct node_record *r, const char *target);

/* True when path lies strictly under one of roots (see Paths above). */
bool node_path_allowed(const char *path, char *const *roots, size_t nroots);

/* ---- the daemon's command line (pure; unit-tested) ----------------------- */

#define NODE_ARGV_MAX 24

struct node_argv {
	char *argv[NODE_ARGV_MAX]; /* NULL-terminated; points into the config, the record, fdpath */
	char fdpath[32];           /* "/dev/fd/N" */
	char max_read[24];         /* --max_read's value */
};

struct keeper;
struct mountpods;

struct node_config {
	const char *state_dir;        /* absolute; STATE/node is created */
	const char *fuse_binary;      /* absolute */
	const char *fuse_config;      /* "" or NULL = none; else --config */
	const char *meta_address;     /* the daemons' --meta.address */
	uint64_t max_read;            /* the mounts' max_read and the daemons' --max_read; 0 = 1 MiB */
	uint64_t read_ahead;          /* the mounts' read-ahead, set after mounting; 0 = the kernel's */
	/* A volume mounted anew replaces the ended mount in the containers
	 * that kept it (csi/reattach.h; the plugin must see every process). */
	bool reattach;
	char *const *roots;           /* allowed roots */
	size_t nroots;
	char *const *file_roots;      /* allowed_file_roots: where a file:// source
				       * registered again from a volume context may lie */
	size_t nfile_roots;
	uint64_t stage_timeout_ms;    /* wait for a new daemon; 0 = 120 s */
	struct meta_client *meta;     /* checks a dataset exists before a first stage; may be NULL */
	uint64_t monitor_interval_ms; /* 0 = 1000 */
	uint64_t probe_timeout_ms;    /* longest a condition check waits for a mount; 0 = 2000 */
	/* Mount pods (both set, borrowed): each volume's granary-fuse runs in a
	 * pod of its own (csi/mountpod.h) that gets the connection from the
	 * keeper (csi/keeper.h), instead of as this process's child. */
	struct keeper *keeper;
	struct mountpods *pods;
};

/* granary-fuse's argv for the record's volume on descriptor fd: never a
 * secret, only the credentials file's path. */
void node_fuse_argv(const struct node_config *cfg, const struct node_record *r, int fd,
		    bool takeover, struct node_argv *out);

/* ---- restarts (pure; unit-tested) ---------------------------------------- */

/* A daemon that ran this long started well: its successor starts at once. */
#define NODE_RESTART_STABLE_MS 200

/* The delay before the next successor, given the delay the last one
 * waited and how long the daemon that ended ran: 0 after one that ran
 * NODE_RESTART_STABLE_MS; else 100 ms after a 0 delay, then twice the
 * last, at most 10 s. */
uint64_t node_restart_delay(uint64_t delay_ms, uint64_t uptime_ms);

/* ---- the node plugin ----------------------------------------------------- */

struct node;

/*
 * Creates STATE/node, loads every record, re-adopts running daemons and
 * starts the monitor thread (which revives dead ones). cfg's strings are
 * copied. ERR_IO naming the directory when it cannot be made.
 */
enum error_code node_new(const struct node_config *cfg, struct node **out, struct error *err);

/* Stops the monitor and closes the descriptors. Daemons and mounts stay:
 * a later plugin re-adopts them. NULL is fine. */
void node_free(struct node *n);

struct node_stage_request {
	const char *volume_id;
	const char *staging_path;
	const char *dataset;               /* volume_context "dataset": NULL, "" or volume_id */
	const struct controller_kv *context; /* the whole volume_context (controller_context_params) */
	size_t ncontext;
	const struct controller_capability *cap; /* NULL = missing */
	const struct controller_kv *secrets;
	size_t nsecrets;
};

/*
 * NodeStageVolume: mounts the dataset at staging_path and starts its
 * daemon, or adopts the one already there (idempotent), waiting at most
 * timeout_ms (capped by stage_timeout). A first stage checks that meta
 * knows the dataset; when it does not (meta lost its data_dir) and the
 * volume context carries the registration CreateVolume made, the dataset
 * is registered again under its name (credentials_ref empty: meta's own
 * store credentials), waiting for the listing within the same timeout.
 * Errors: ERR_INVALID naming the field (missing, a volume_id that is not
 * a volume id (controller_check_id), path not allowed, capability refused,
 * bad secret) or the volume_context key (a "dataset" other than the
 * volume_id, a bad registration value);
 * ERR_NOT_FOUND when meta does not know the dataset and the context
 * carries no registration; meta's errors from registering again
 * (ERR_PERMISSION, ERR_UNAVAILABLE, ERR_TIMEOUT ...); ERR_EXISTS when the
 * volume is staged at another path; ERR_TIMEOUT when the daemon is still
 * starting (it keeps starting; a retry waits for it); ERR_UNAVAILABLE /
 * ERR_INVALID when the daemon exited (the message says how; its log is the
 * plugin's stderr); ERR_PERMISSION / ERR_IO for the mount itself.
 */
enum error_code node_stage(struct node *n, const struct node_stage_request *req,
			   uint64_t timeout_ms, struct error *err);

/* NodeUnstageVolume: stops the daemon (SIGTERM, SIGKILL after 10 s),
 * unmounts (lazily when busy), removes the volume's files. An unknown
 * volume is success. ERR_INVALID for missing fields or a path not allowed. */
enum error_code node_unstage(struct node *n, const char *volume_id, const char *staging_path,
			     struct error *err);

struct node_publish_request {
	const char *volume_id;
	const char *staging_path;
	const char *target_path;
	const struct controller_capability *cap; /* NULL = missing */
};

/* NodePublishVolume: read-only bind mount of the staging path at the
 * target (created, mode 0750); idempotent. ERR_INVALID naming the field;
 * ERR_NOT_FOUND when the volume is not staged on this node; ERR_EXISTS
 * when the target holds another filesystem. */
enum error_code node_publish(struct node *n, const struct node_publish_request *req,
			     struct error *err);

/* NodeUnpublishVolume: unmounts the target (lazily when busy) and removes
 * the directory; a target that is not there is success. */
enum error_code node_unpublish(struct node *n, const char *volume_id, const char *target_path,
			       struct error *err);

struct node_stats {
	int64_t bytes_total, bytes_available, bytes_used;
	int64_t inodes_total, inodes_available, inodes_used;
};

/*
 * A volume's condition (NodeGetVolumeStats' VolumeCondition, /metrics):
 * abnormal while its mount cannot serve, with why. In this order:
 *   - the volume's granary-fuse is not running (crashed, killed, cannot be
 *     started): reads wait, or fail, until the monitor's successor runs;
 *     the message says how it ended, for how long, and when the next
 *     successor starts;
 *   - nothing is mounted at the path the volume should be at;
 *   - a statfs of the mount, in a thread of its own so that a hung mount
 *     cannot hold the caller, answers an error (ENOTCONN: the FUSE
 *     connection is gone, which no successor can mend for containers that
 *     already run) or nothing within probe_timeout_ms (the daemon hangs or
 *     is stopped). A probe still stuck in the kernel is waited on again
 *     by the next check rather than joined by another thread.
 * Normal otherwise. A change of a volume's condition is logged once.
 */
struct node_condition {
	bool abnormal;
	char message[ERROR_MSG_MAX];
};

/* The condition of a mount at path from its statfs (pure; unit-tested):
 * pending_ms > 0 means no answer for that long; else errnum (0 = answered). */
void node_mount_condition(const char *path, int errnum, uint64_t pending_ms,
			  struct node_condition *out);

/*
 * NodeGetVolumeStats: the volume's condition at a staging or target path
 * of it, and statvfs of that path as the usage (zeros while abnormal: the
 * kubelet wants the usage entries even then). ERR_INVALID for missing
 * fields; ERR_NOT_FOUND for a volume not staged here or a path that is not
 * one of its mounts. Waits at most probe_timeout_ms for the mount.
 */
enum error_code node_volume_stats(struct node *n, const char *volume_id, const char *path,
				  struct node_stats *out, struct node_condition *cond,
				  struct error *err);

struct node_volume_health {
	char *volume_id;
	struct node_condition cond;
	uint64_t restarts;          /* successors the monitor started */
	uint64_t restart_delay_ms;  /* the back-off before the next one (0: at once) */
	char *stats_file;           /* its daemons' counters (fuse/mountstats.h); NULL: unknown */
};

/*
 * The condition of every staged volume at its staging path, for /metrics:
 * the probes run at once, so the call takes at most one probe_timeout_ms.
 * A volume busy with a call (a stage in progress) is reported with the
 * last condition found, or left out when none was. Sorted by volume id;
 * release with node_volumes_health_free. ERR_NOMEM.
 */
enum error_code node_volumes_health(struct node *n, struct node_volume_health **out,
				    size_t *count, struct error *err);
void node_volumes_health_free(struct node_volume_health *list, size_t count);

/* Runs one pass of the monitor now (tests). */
void node_check_daemons(struct node *n);

#endif
