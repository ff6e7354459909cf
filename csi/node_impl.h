/*
 * node_impl.h - what the node plugin's files share (private: included only
 * by csi/node*.c, never installed): the volume table's records, their
 * constants, and the functions one file calls in another (they keep the
 * names they had as statics of node.c). Each function is documented where
 * it is defined.
 *
 *   node.c           the volume table, daemons, the monitor, start-up, the calls
 *   node_record.c    the record format (STATE/node/ID.json)
 *   node_mount.c     paths and mounts
 *   node_pods.c      mount pods (keeper, pods, upgrades)
 *   node_condition.c volume conditions (probes), volume stats and health
 */
#ifndef GRANARY_CSI_NODE_IMPL_H
#define GRANARY_CSI_NODE_IMPL_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "common/log.h"
#include "csi/node.h"

#define FUSE_TYPE "fuse.granary"
#define FUSE_MAX_READ_DEFAULT (1u << 20)
#define STOP_GRACE_MS 10000
#define PATH_MAX_LEN 4096
/* Mount pods: how long a restarted plugin waits for a supervisor to give
 * a connection back before it mounts anew, how long a volume may have no
 * supervisor before its pod is looked at, and how often. */
#define ADOPT_GRACE_MS 15000
#define POD_GRACE_MS 3000
#define POD_CHECK_MS 5000
#define POD_POLL_MS 1000

struct probe;

/* One staged (or being staged) volume. */
struct vol {
	pthread_mutex_t mu;        /* serialises operations on the volume */
	struct node_record rec;    /* protected by mu; rec.staging_path NULL until staged */
	int fd;                    /* our /dev/fuse descriptor; -1 = none; protected by mu */
	bool gone;                 /* unstaged or never staged; protected by mu */
	int pidfd;                 /* the daemon's, polled by the monitor; -1 = none; protected by mu */
	uint64_t started_ms;       /* when the daemon started; 0 = unknown (re-adopted); protected by mu */
	uint64_t next_restart_ms;  /* protected by mu */
	/* The delay before the next successor (node_restart_delay): written
	 * under mu, read without it (/metrics). */
	atomic_uint_fast64_t backoff_ms;
	atomic_uint_fast64_t restarts; /* successors the monitor started; as backoff_ms */
	uint64_t down_since_ms;    /* the monitor found the daemon gone; 0 = not; protected by mu */
	char down_how[200];        /* how it ended, or why no successor runs; protected by mu */
	/* Successors that fail at start: one line per cause per interval. */
	struct log_limiter failing_log; /* protected by mu (and its own) */
	char failing_cause[200];   /* the cause failing_log counts; protected by mu */
	struct probe *probe;       /* the last statfs of the mount; protected by mu */
	/* Targets published before the volume was mounted anew (its FUSE
	 * connection ended with the node plugin's container): only .targets is
	 * used. The host's bind mount was repaired, but the containers keep
	 * their copy of the old one, which answers ENOTCONN until they
	 * restart. Protected by mu. */
	struct node_record stale;
	time_t stale_since;        /* wall clock of the last remount; protected by mu */
	uint64_t reattach_due_ms;  /* the next look for containers' ended mounts; under mu */
	atomic_int condition;      /* the last one found: 0 none, 1 normal, 2 abnormal;
				    * written under mu, read without (a busy volume) */
	/* Mount pods only, protected by mu: */
	bool pods;                 /* this volume's daemon runs in a mount pod */
	bool pod_serving;          /* a supervisor reported a running daemon */
	bool resend_pending;       /* an old pod was deleted: resend once it is gone */
	uint64_t next_pod_check_ms;
	unsigned refs;             /* protected by node->mu */
	struct vol *next;          /* protected by node->mu */
};

struct node {
	char *dir;                 /* STATE/node */
	char *fuse_binary, *fuse_config, *meta_address;
	char **roots;
	size_t nroots;
	char **file_roots;         /* allowed_file_roots */
	size_t nfile_roots;
	struct node_config cfg;    /* points at the copies above */
	pthread_mutex_t mu;
	struct vol *vols;          /* protected by mu */
	pthread_t monitor;
	bool monitor_running;
	bool stopping;             /* protected by mu */
	uint64_t started_ms;
	char **orphans;            /* volume directories no record names (the monitor's) */
	size_t norphans;
	struct log_limiter lim;    /* mount pod warnings */
	int wake_fd;               /* eventfd: stops the monitor's wait; -1 = none */
};

/* node.c: the volume table and the daemons */
struct vol *vol_get(struct node *n, const char *id, bool create);
void vol_put(struct node *n, struct vol *v);
void vol_unref(struct node *n, struct vol *v);
void vol_remove(struct node *n, struct vol *v);
/* Removes STATE/node/ID and all in it (orphan: logs that the volume is
 * not staged here). */
void volume_dir_remove(const struct node *n, const char *id, bool orphan);
struct vol **vol_list(struct node *n, size_t *count);
bool daemon_running(const struct vol *v);
enum error_code mount_and_start(struct node *n, struct vol *v, struct error *err);
enum error_code check_id(const char *id, struct error *err);

/* node_record.c: the record's files and what a loaded one may name. A
 * volume's record is STATE/node/ID.json; its other files are in its own
 * directory STATE/node/ID, the only part of STATE a mount pod sees: the
 * saved INIT (and granary-fuse's files beside it), the node-stage
 * credentials and the keeper's socket. */
#define NODE_INIT_STATE "init"
#define NODE_CREDENTIALS "credentials"
void record_path(const char *dir, const char *id, char *out, size_t size);
void volume_path(const char *dir, const char *id, const char *name, char *out, size_t size);
enum error_code record_check(const char *path, const struct node_record *r, const char *dir,
			     char *const *roots, size_t nroots, struct error *err);

/* node_mount.c: paths and mounts */
void clean_path(const char *in, char *out, size_t size);
bool mount_lookup(const char *path, char *fstype, size_t size);
enum error_code unmount_all(const char *path, struct error *err);
enum error_code mount_fuse(const struct node_config *cfg, const char *dataset,
			   const char *path, int *fd_out, struct error *err);
enum error_code bind_readonly(const char *staging, const char *target, struct error *err);

/* node_pods.c: mount pods */
uint64_t new_conn_id(void);
/* Listens on the volume's keeper socket and gives the keeper its argv and
 * fd (a copy; -1 for none yet). */
enum error_code pod_keep(struct node *n, struct vol *v, int fd, struct error *err);
enum error_code pod_start(struct node *n, struct vol *v, struct error *err);
void pod_check(struct node *n, struct vol *v);
void sweep_unknown_pods(struct node *n);
void sweep_orphan_dirs(struct node *n);
enum error_code pod_stop(struct node *n, struct vol *v, struct error *err);
enum error_code pod_wait_serving(struct node *n, struct vol *v, uint64_t timeout_ms,
				 struct error *err);

/* node_condition.c: conditions (vol_free drops the volume's probe) */
void probe_put(struct probe *p);

#endif
