/*
 * node.c - staging (a granary-fuse per volume on a descriptor the plugin
 * holds), publishing (read-only bind mounts), supervision and re-adoption:
 * the volume table, the daemons, the monitor and the calls. The record
 * format, mounts, mount pods and conditions are in the other csi/node_*.c
 * (csi/node_impl.h lists them).
 */
#include "csi/node_impl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/config.h"
#include "common/fileio.h"
#include "common/fusemount.h"
#include "common/log.h"
#include "common/retry.h"
#include "csi/keeper.h"
#include "csi/reattach.h"
#include "fuse/mountstats.h"
#include "store/store.h"

/* Successors of a daemon that ran NODE_RESTART_STABLE_MS start at once;
 * after one that ended sooner, 100 ms later, doubling up to 10 s. */
#define RESTART_DELAY_FIRST_MS 100
#define RESTART_DELAY_MAX_MS 10000
/* The same cause of failing successors is logged once a minute. */
#define RESTART_LOG_INTERVAL_MS 60000
#define NO_WAKE UINT64_MAX

/* ---- daemons ------------------------------------------------------------- */

void node_fuse_argv(const struct node_config *cfg, const struct node_record *r, int fd,
		    bool takeover, struct node_argv *out)
{
	size_t n = 0;

	snprintf(out->fdpath, sizeof(out->fdpath), "/dev/fd/%d", fd);
	out->argv[n++] = (char *)cfg->fuse_binary;
	if (cfg->fuse_config && *cfg->fuse_config) {
		out->argv[n++] = "--config";
		out->argv[n++] = (char *)cfg->fuse_config;
	}
	out->argv[n++] = "--mountpoint";
	out->argv[n++] = out->fdpath;
	out->argv[n++] = "--dataset";
	out->argv[n++] = r->dataset;
	out->argv[n++] = "--meta.address";
	out->argv[n++] = (char *)cfg->meta_address;
	out->argv[n++] = "--init_state";
	out->argv[n++] = r->init_state;
	snprintf(out->max_read, sizeof(out->max_read), "%llu",
		 (unsigned long long)(cfg->max_read ? cfg->max_read : FUSE_MAX_READ_DEFAULT));
	out->argv[n++] = "--max_read";
	out->argv[n++] = out->max_read;
	if (r->credentials_file && *r->credentials_file) {
		out->argv[n++] = "--store.credentials_file";
		out->argv[n++] = r->credentials_file;
	}
	if (takeover) {
		out->argv[n++] = "--takeover";
		out->argv[n++] = "true";
	}
	out->argv[n] = NULL;
}

/* Field 3 (state) and 22 (start time in clock ticks) of /proc/PID/stat. */
static bool proc_stat(pid_t pid, char *state, uint64_t *start_time)
{
	char path[64], buf[1024], *p;
	unsigned long long st = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (fileio_read_text(path, buf, sizeof(buf)) <= 0)
		return false;
	/* The command name may hold spaces and parentheses: skip to the last ')'. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
			 state, &st) != 2)
		return false;
	*start_time = st;
	return true;
}

/* True while the record's daemon runs (a zombie does not), without
 * reaping it: the monitor reaps, and logs how it ended. */
bool daemon_running(const struct vol *v)
{
	uint64_t start = 0;
	char state = 0;

	if (v->rec.pid <= 0 || !proc_stat((pid_t)v->rec.pid, &state, &start))
		return false;
	return start == v->rec.start_time && state != 'Z' && state != 'X';
}

/* True once every thread of the process behind pidfd has ended. */
static bool pidfd_ended(int pidfd)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };

	return poll(&p, 1, 0) == 1;
}

/*
 * True until the record's daemon has ended entirely; then reaps it (our
 * child) and closes its pidfd. A child whose main thread is already a
 * zombie while its other threads still exit cannot be reaped yet: it
 * counts as alive, so its pid stays in the record until waitpid takes it
 * (no zombie is left behind) and no successor starts while one of its
 * threads may still take a request off the connection.
 */
static bool daemon_alive(struct vol *v, int *status)
{
	pid_t pid = (pid_t)v->rec.pid, got;
	int st = 0;
	bool alive;

	if (status)
		*status = -1;
	if (pid <= 0)
		return false;
	got = waitpid(pid, &st, WNOHANG);
	if (got == pid && status)
		*status = st;
	if (got == pid)
		alive = false;
	else if (got == 0)
		alive = true;
	else if (v->pidfd >= 0) /* not our child: re-adopted after a restart */
		alive = !pidfd_ended(v->pidfd);
	else
		alive = daemon_running(v);
	if (!alive && v->pidfd >= 0) {
		close(v->pidfd);
		v->pidfd = -1;
	}
	return alive;
}

/* A pidfd for pid (close-on-exec), or -1. */
static int open_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, pid, 0);
#else
	(void)pid;
	return -1;
#endif
}

uint64_t node_restart_delay(uint64_t delay_ms, uint64_t uptime_ms)
{
	if (uptime_ms >= NODE_RESTART_STABLE_MS)
		return 0;
	if (delay_ms == 0)
		return RESTART_DELAY_FIRST_MS;
	return delay_ms >= RESTART_DELAY_MAX_MS / 2 ? RESTART_DELAY_MAX_MS : delay_ms * 2;
}

static void describe_status(int status, char *buf, size_t size)
{
	if (status < 0)
		snprintf(buf, size, "exited");
	else if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		snprintf(buf, size, "exited with status 127 (the binary could not be run: check fuse_binary)");
	else if (WIFEXITED(status))
		snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, size, "was killed by signal %d", WTERMSIG(status));
	else
		snprintf(buf, size, "stopped");
}

static enum error_code save_vol(const struct node *n, const struct vol *v, struct error *err)
{
	char path[PATH_MAX_LEN];

	record_path(n->dir, v->rec.volume_id, path, sizeof(path));
	return node_record_save(path, &v->rec, err);
}

/*
 * Starts granary-fuse on v->fd. The child runs only async-signal-safe
 * calls between fork and exec (the plugin has gRPC threads): a session of
 * its own (a signal to the plugin's group does not reach it), the
 * descriptor made inheritable, stdin from /dev/null; stdout and stderr are
 * the plugin's, so its log lines land in the plugin's log.
 */
static enum error_code start_daemon(struct node *n, struct vol *v, bool takeover,
				    struct error *err)
{
	struct node_argv a;
	char state;
	pid_t pid;
	int fd = v->fd;

	node_fuse_argv(&n->cfg, &v->rec, fd, takeover, &a);
	pid = fork();
	if (pid < 0)
		return error_set(err, ERR_NOMEM, "fork for granary-fuse: %s", strerror(errno));
	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY);

		setsid();
		if (nul >= 0 && nul != STDIN_FILENO)
			dup2(nul, STDIN_FILENO);
		fcntl(fd, F_SETFD, 0);
		execv(a.argv[0], a.argv);
		_exit(127);
	}
	v->rec.pid = pid;
	v->rec.daemon_fd = fd;
	v->rec.start_time = 0;
	v->started_ms = retry_now_ms();
	proc_stat(pid, &state, &v->rec.start_time);
	if (v->pidfd >= 0)
		close(v->pidfd);
	v->pidfd = open_pidfd(pid);
	/* Retries after failed starts are the monitor's lines to limit. */
	if (atomic_load(&v->backoff_ms) == 0)
		log_info("granary-fuse started", LOG_S("volume", v->rec.volume_id),
			 LOG_S("dataset", v->rec.dataset), LOG_S("staging_path", v->rec.staging_path),
			 LOG_I("pid", pid), LOG_I("fd", fd), LOG_S("takeover", takeover ? "true" : "false"));
	return save_vol(n, v, err);
}

/* Removes the saved INIT and what granary-fuse keeps beside it for a
 * successor (the spec and snapshot it served, its counters): a new
 * connection starts afresh. */
static void forget_init_state(const struct vol *v)
{
	const char *ext[] = { "", ".spec", ".snapshot", MOUNTSTATS_SUFFIX };
	char path[PATH_MAX_LEN];

	if (!v->rec.init_state || !*v->rec.init_state)
		return;
	for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
		snprintf(path, sizeof(path), "%s%s", v->rec.init_state, ext[i]);
		unlink(path);
	}
}

/* SIGTERM, then SIGKILL after the grace period; a mount pod is deleted
 * (pod_stop: that may fail, and then nothing is stopped). */
static enum error_code stop_daemon(struct node *n, struct vol *v, struct error *err)
{
	uint64_t t0 = retry_now_ms();
	bool killed = false;

	if (v->pods)
		return pod_stop(n, v, err);
	if (!daemon_alive(v, NULL))
		return ERR_OK;
	kill((pid_t)v->rec.pid, SIGTERM);
	while (daemon_alive(v, NULL)) {
		if (!killed && retry_now_ms() - t0 > STOP_GRACE_MS) {
			log_warn("granary-fuse ignored SIGTERM; killing it",
				 LOG_S("volume", v->rec.volume_id), LOG_I("pid", v->rec.pid));
			kill((pid_t)v->rec.pid, SIGKILL);
			killed = true;
		}
		if (retry_now_ms() - t0 > STOP_GRACE_MS + 5000)
			break;
		retry_sleep_ms(20);
	}
	v->rec.pid = 0;
	return ERR_OK;
}

/* Waits until the daemon has taken the kernel's FUSE_INIT (its init_state
 * file appears), or exited, or the time is up. */
static enum error_code wait_serving(struct node *n, struct vol *v, uint64_t timeout_ms,
				    struct error *err)
{
	uint64_t t0 = retry_now_ms();
	char how[128];
	int status;

	if (v->pods)
		return pod_wait_serving(n, v, timeout_ms, err);
	for (;;) {
		if (access(v->rec.init_state, F_OK) == 0)
			return ERR_OK;
		if (!daemon_alive(v, &status)) {
			/* It may have written the file just before exiting. */
			if (access(v->rec.init_state, F_OK) == 0)
				return ERR_OK;
			describe_status(status, how, sizeof(how));
			v->rec.pid = 0;
			return error_set(err,
					 WIFEXITED(status) && WEXITSTATUS(status) == 2 ? ERR_INVALID
										       : ERR_UNAVAILABLE,
					 "granary-fuse for dataset '%s' %s before serving (its reason is in the node plugin's log)",
					 v->rec.dataset, how);
		}
		if (retry_now_ms() - t0 >= timeout_ms)
			return error_set(err, ERR_TIMEOUT,
					 "granary-fuse for dataset '%s' is still starting after %llu ms; it goes on, and a retry waits for it",
					 v->rec.dataset, (unsigned long long)timeout_ms);
		retry_sleep_ms(20);
	}
}

/* What mount_and_start ends with, defined below. */
static uint64_t reattach_stale(struct node *n, struct vol *v, uint64_t now);

/*
 * A fresh connection: mounts the staging path anew and starts a first
 * daemon, then binds every recorded target again.
 */
enum error_code mount_and_start(struct node *n, struct vol *v, struct error *err)
{
	enum error_code rc;

	if (v->fd >= 0) {
		close(v->fd);
		v->fd = -1;
	}
	rc = unmount_all(v->rec.staging_path, err);
	if (rc != ERR_OK)
		return rc;
	forget_init_state(v);
	rc = mount_fuse(&n->cfg, v->rec.dataset, v->rec.staging_path, &v->fd, err);
	if (rc != ERR_OK)
		return rc;
	if (v->pods) {
		v->rec.conn = new_conn_id();
		rc = save_vol(n, v, err);
		if (rc == ERR_OK)
			rc = pod_start(n, v, err);
	} else {
		rc = start_daemon(n, v, false, err);
	}
	if (rc != ERR_OK)
		return rc;
	/* The connection's first open and close, as soon as the daemon
	 * serves, rather than by a reader perhaps while it is down. */
	fusemount_prime_async(v->rec.staging_path);
	if (v->rec.ntargets) {
		v->stale_since = time(NULL);
		v->reattach_due_ms = 0;
	}
	for (size_t i = 0; i < v->rec.ntargets; i++) {
		struct error e;

		if (node_record_add_target(&v->stale, v->rec.targets[i], &e) != ERR_OK)
			log_warn("cannot track a published target", LOG_S("volume", v->rec.volume_id),
				 LOG_S("target", v->rec.targets[i]), LOG_S("cause", e.msg));
		if (unmount_all(v->rec.targets[i], &e) != ERR_OK ||
		    bind_readonly(v->rec.staging_path, v->rec.targets[i], &e) != ERR_OK)
			log_warn("cannot repair a published target", LOG_S("volume", v->rec.volume_id),
				 LOG_S("target", v->rec.targets[i]), LOG_S("cause", e.msg));
		else
			log_info("published target repaired", LOG_S("volume", v->rec.volume_id),
				 LOG_S("target", v->rec.targets[i]));
	}
	/* The containers' copies too, now: their reads wait for the daemon
	 * from here on instead of failing. */
	reattach_stale(n, v, retry_now_ms());
	return ERR_OK;
}

/* Brings a volume whose daemon is gone back: a successor on the live
 * connection when we hold it, else a new connection. */
static enum error_code revive(struct node *n, struct vol *v, struct error *err)
{
	char fstype[64] = "";
	bool mounted = mount_lookup(v->rec.staging_path, fstype, sizeof(fstype)) &&
		       strcmp(fstype, FUSE_TYPE) == 0;

	if (v->fd >= 0 && mounted) {
		/* No saved INIT means the dead daemon never read it: the kernel
		 * still has it queued for the next reader. */
		bool takeover = access(v->rec.init_state, F_OK) == 0;

		if (atomic_load(&v->backoff_ms) == 0)
			log_warn("granary-fuse is gone; starting a successor on the live connection",
				 LOG_S("volume", v->rec.volume_id),
				 LOG_S("staging_path", v->rec.staging_path),
				 LOG_S("takeover", takeover ? "true" : "false"));
		return start_daemon(n, v, takeover, err);
	}
	log_warn("granary-fuse is gone with its connection; mounting anew",
		 LOG_S("volume", v->rec.volume_id), LOG_S("staging_path", v->rec.staging_path));
	return mount_and_start(n, v, err);
}

/* A copy of the daemon's /dev/fuse descriptor (same connection), or -1. */
static int grab_descriptor(pid_t pid, int fd_in_daemon)
{
#if defined(SYS_pidfd_open) && defined(SYS_pidfd_getfd)
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0), fd;

	if (pidfd < 0)
		return -1;
	fd = (int)syscall(SYS_pidfd_getfd, pidfd, fd_in_daemon, 0);
	close(pidfd);
	return fd; /* pidfd_getfd sets close-on-exec */
#else
	(void)pid;
	(void)fd_in_daemon;
	errno = ENOSYS;
	return -1;
#endif
}

/* ---- the volume table ---------------------------------------------------- */

static void vol_free(struct vol *v)
{
	probe_put(v->probe);
	if (v->fd >= 0)
		close(v->fd);
	if (v->pidfd >= 0)
		close(v->pidfd);
	log_limiter_release(&v->failing_log);
	node_record_release(&v->rec);
	node_record_release(&v->stale);
	pthread_mutex_destroy(&v->mu);
	free(v);
}

void vol_unref(struct node *n, struct vol *v)
{
	bool last;

	pthread_mutex_lock(&n->mu);
	last = --v->refs == 0 && v->gone;
	pthread_mutex_unlock(&n->mu);
	if (last)
		vol_free(v);
}

/* Unlocks and drops the reference vol_get gave. */
void vol_put(struct node *n, struct vol *v)
{
	pthread_mutex_unlock(&v->mu);
	vol_unref(n, v);
}

/* Takes v out of the table (v->mu held); freed at the last put. */
void vol_remove(struct node *n, struct vol *v)
{
	v->gone = true;
	pthread_mutex_lock(&n->mu);
	for (struct vol **p = &n->vols; *p; p = &(*p)->next) {
		if (*p == v) {
			*p = v->next;
			break;
		}
	}
	pthread_mutex_unlock(&n->mu);
}

static struct vol *vol_alloc(const char *id)
{
	struct vol *v = calloc(1, sizeof(*v));

	if (!v)
		return NULL;
	v->fd = -1;
	v->pidfd = -1;
	pthread_mutex_init(&v->mu, NULL);
	log_limiter_init(&v->failing_log, RESTART_LOG_INTERVAL_MS, NULL, NULL);
	v->rec.volume_id = strdup(id);
	if (!v->rec.volume_id) {
		vol_free(v);
		return NULL;
	}
	return v;
}

/*
 * The volume of id, referenced and locked; with create, a new unstaged
 * entry when there is none (NULL only when out of memory). Without create,
 * NULL when unknown.
 */
struct vol *vol_get(struct node *n, const char *id, bool create)
{
	for (;;) {
		struct vol *v;

		pthread_mutex_lock(&n->mu);
		for (v = n->vols; v; v = v->next)
			if (strcmp(v->rec.volume_id, id) == 0)
				break;
		if (!v && create) {
			v = vol_alloc(id);
			if (v) {
				v->pods = n->cfg.pods != NULL;
				v->next = n->vols;
				n->vols = v;
			}
		}
		if (v)
			v->refs++;
		pthread_mutex_unlock(&n->mu);
		if (!v)
			return NULL;
		pthread_mutex_lock(&v->mu);
		if (!v->gone)
			return v;
		vol_put(n, v); /* unstaged while we waited: look again */
	}
}

/* ---- monitor ------------------------------------------------------------- */

/* Logs that a successor failed at start: once per cause and interval
 * (v->mu held). */
static void log_failing(struct vol *v, const char *msg, const char *cause, uint64_t ran_ms)
{
	if (strcmp(cause, v->failing_cause) != 0) {
		/* A new cause is news: its first line goes out at once. */
		log_limiter_release(&v->failing_log);
		log_limiter_init(&v->failing_log, RESTART_LOG_INTERVAL_MS, NULL, NULL);
		snprintf(v->failing_cause, sizeof(v->failing_cause), "%s", cause);
	}
	log_limited_warn(&v->failing_log, msg, LOG_S("volume", v->rec.volume_id),
			 LOG_S("cause", cause), LOG_U("ran_ms", ran_ms),
			 LOG_U("retry_in_ms", atomic_load(&v->backoff_ms)));
}

/*
 * Looks after one volume's daemon (v->mu held): reaps one that ended and
 * starts its successor, at once or after the back-off. Returns in how many
 * ms it wants to look again (NO_WAKE: when the daemon's pidfd says).
 */
static void stage_undo(struct node *n, struct vol *v);

/*
 * A record whose staging directory is gone and holds no mount: the kubelet
 * removed it, so no pod on this node uses the volume (a reboot keeps the
 * directory, and the kubelet stages it again). Its daemon or mount pod,
 * files and record are removed instead of being revived for ever.
 */
static bool forget_if_stale(struct node *n, struct vol *v)
{
	struct stat st;
	struct error err;

	if (v->gone || !v->rec.staging_path || lstat(v->rec.staging_path, &st) == 0 ||
	    errno != ENOENT || mount_lookup(v->rec.staging_path, NULL, 0))
		return false;
	if (stop_daemon(n, v, &err) != ERR_OK) {
		log_limited_warn(&n->lim, "cannot forget a volume no longer staged yet",
				 LOG_S("volume", v->rec.volume_id), LOG_S("cause", err.msg));
		return false;
	}
	log_warn("the volume's staging path is gone (the kubelet no longer stages it here); forgot the volume",
		 LOG_S("volume", v->rec.volume_id), LOG_S("staging_path", v->rec.staging_path));
	stage_undo(n, v);
	vol_remove(n, v);
	return true;
}

/*
 * With cfg.reattach, a volume mounted anew (stale targets) has the ended
 * mount that containers kept replaced by the new one (csi/reattach.h);
 * once every container sees it, no target is stale. Looked at again every
 * REATTACH_EVERY_MS while one could not be replaced. Returns when to look
 * again (NO_WAKE: nothing left).
 */
#define REATTACH_EVERY_MS 5000

static uint64_t reattach_stale(struct node *n, struct vol *v, uint64_t now)
{
	struct reattach_result r;
	char source[300];
	struct error err;

	if (!n->cfg.reattach || !v->stale.ntargets || !v->rec.staging_path || !v->rec.dataset)
		return NO_WAKE;
	if (now < v->reattach_due_ms)
		return v->reattach_due_ms - now;
	snprintf(source, sizeof(source), "granary:%s", v->rec.dataset);
	if (reattach_volume("/proc", FUSE_TYPE, source, v->rec.staging_path, &r, &err) != ERR_OK) {
		log_warn("cannot look for containers' ended mounts", LOG_S("volume", v->rec.volume_id),
			 LOG_S("cause", err.msg));
	} else if (r.found == r.replaced) {
		log_info("every container of the volume sees its new mount",
			 LOG_S("volume", v->rec.volume_id), LOG_U("replaced", r.replaced));
		node_record_release(&v->stale);
		return NO_WAKE;
	} else {
		log_warn("cannot replace a container's ended mount; it keeps failing with ENOTCONN",
			 LOG_S("volume", v->rec.volume_id), LOG_U("found", r.found),
			 LOG_U("replaced", r.replaced), LOG_S("cause", r.first_error));
	}
	v->reattach_due_ms = now + REATTACH_EVERY_MS;
	return REATTACH_EVERY_MS;
}

static uint64_t check_daemon(struct node *n, struct vol *v);

static uint64_t check_one(struct node *n, struct vol *v)
{
	uint64_t wake = check_daemon(n, v), again;

	if (v->gone)
		return wake;
	again = reattach_stale(n, v, retry_now_ms());
	return again < wake ? again : wake;
}

static uint64_t check_daemon(struct node *n, struct vol *v)
{
	uint64_t now = retry_now_ms(), ran, delay;
	struct error err;
	char how[128];
	int status;

	if (forget_if_stale(n, v))
		return NO_WAKE;
	if (v->pods) {
		pod_check(n, v);
		return v->gone ? NO_WAKE : POD_POLL_MS;
	}
	if (v->gone || !v->rec.staging_path)
		return NO_WAKE;
	if (daemon_alive(v, &status)) {
		v->down_since_ms = 0;
		ran = v->started_ms ? now - v->started_ms : NODE_RESTART_STABLE_MS;
		if (atomic_load(&v->backoff_ms) == 0)
			return NO_WAKE;
		/* It ran for a while: the next successor starts at once. */
		if (ran >= NODE_RESTART_STABLE_MS) {
			atomic_store(&v->backoff_ms, 0);
			v->failing_cause[0] = '\0';
			return NO_WAKE;
		}
		return NODE_RESTART_STABLE_MS - ran;
	}
	if (!v->down_since_ms) {
		v->down_since_ms = now;
		snprintf(v->down_how, sizeof(v->down_how), "is gone");
	}
	if (v->rec.pid > 0) {
		ran = v->started_ms ? now - v->started_ms : UINT64_MAX;
		describe_status(status, how, sizeof(how));
		delay = node_restart_delay(atomic_load(&v->backoff_ms), ran);
		atomic_store(&v->backoff_ms, delay);
		v->next_restart_ms = now + delay;
		if (delay == 0)
			log_warn("granary-fuse ended", LOG_S("volume", v->rec.volume_id),
				 LOG_I("pid", v->rec.pid), LOG_S("how", how),
				 LOG_U("ran_ms", v->started_ms ? ran : 0));
		else
			log_failing(v, "granary-fuse ended at start; the next one starts after a back-off",
				    how, ran);
		snprintf(v->down_how, sizeof(v->down_how), "%s", how);
		v->rec.pid = 0;
	}
	if (now < v->next_restart_ms)
		return v->next_restart_ms - now;
	atomic_fetch_add(&v->restarts, 1);
	if (revive(n, v, &err) == ERR_OK)
		return atomic_load(&v->backoff_ms) ? NODE_RESTART_STABLE_MS : NO_WAKE;
	/* No successor runs (fork, or a mount made anew, failed): as a start
	 * that failed at once. */
	delay = node_restart_delay(atomic_load(&v->backoff_ms), 0);
	atomic_store(&v->backoff_ms, delay);
	v->next_restart_ms = now + delay;
	snprintf(v->down_how, sizeof(v->down_how), "cannot be restarted: %s", err.msg);
	log_failing(v, "cannot start a successor of granary-fuse", err.msg, 0);
	return delay;
}

/* Every volume in the table, each referenced (vol_unref each, free the
 * array); NULL with *count 0 when out of memory. */
struct vol **vol_list(struct node *n, size_t *count)
{
	struct vol **list;
	size_t total = 0;

	*count = 0;
	pthread_mutex_lock(&n->mu);
	for (struct vol *v = n->vols; v; v = v->next)
		total++;
	list = calloc(total ? total : 1, sizeof(*list));
	for (struct vol *v = n->vols; list && v; v = v->next) {
		v->refs++;
		list[(*count)++] = v;
	}
	pthread_mutex_unlock(&n->mu);
	return list;
}

/*
 * One pass over every volume. Returns in how many ms a volume wants to be
 * looked at again (NO_WAKE: none); pidfds, when not NULL, gets a copy of
 * each running daemon's pidfd (at most max; the caller closes them).
 */
static uint64_t check_daemons(struct node *n, struct pollfd *pidfds, size_t max, size_t *npidfds)
{
	size_t count = 0;
	struct vol **list = vol_list(n, &count);
	uint64_t wake = NO_WAKE;

	if (npidfds)
		*npidfds = 0;
	for (size_t k = 0; k < count; k++) {
		struct vol *v = list[k];

		/* A volume busy with a call is that call's to look after. */
		if (pthread_mutex_trylock(&v->mu) == 0) {
			uint64_t w = check_one(n, v);

			if (w < wake)
				wake = w;
			if (pidfds && *npidfds < max && v->pidfd >= 0) {
				int fd = fcntl(v->pidfd, F_DUPFD_CLOEXEC, 0);

				if (fd >= 0)
					pidfds[(*npidfds)++] = (struct pollfd){ .fd = fd, .events = POLLIN };
			}
			pthread_mutex_unlock(&v->mu);
		}
		vol_unref(n, v);
	}
	free(list);
	return wake;
}

void node_check_daemons(struct node *n)
{
	check_daemons(n, NULL, 0, NULL);
}

#define MONITOR_POLL_MAX 256

/*
 * Checks every volume, then waits for a daemon to end (its pidfd turns
 * readable once all its threads have: a successor starts within
 * milliseconds), a back-off to run out, the interval, or node_free.
 */
static void *monitor_main(void *arg)
{
	struct node *n = arg;
	uint64_t every = n->cfg.monitor_interval_ms ? n->cfg.monitor_interval_ms : 1000;
	struct pollfd fds[MONITOR_POLL_MAX + 1];

	pthread_mutex_lock(&n->mu);
	while (!n->stopping) {
		uint64_t wake;
		size_t k = 0;
		eventfd_t drained;

		pthread_mutex_unlock(&n->mu);
		wake = check_daemons(n, fds + 1, MONITOR_POLL_MAX, &k);
		sweep_unknown_pods(n);
		sweep_orphan_dirs(n);
		if (wake > every)
			wake = every;
		fds[0] = (struct pollfd){ .fd = n->wake_fd, .events = POLLIN };
		if (poll(fds, k + 1, (int)wake) > 0 && (fds[0].revents & POLLIN))
			eventfd_read(n->wake_fd, &drained);
		for (size_t i = 1; i <= k; i++)
			close(fds[i].fd);
		pthread_mutex_lock(&n->mu);
	}
	pthread_mutex_unlock(&n->mu);
	return NULL;
}

/* ---- start-up ------------------------------------------------------------ */

/* Loads one record and re-adopts its daemon (the monitor revives a dead one). */
static void adopt(struct node *n, const char *path)
{
	struct node_record rec;
	struct error err;
	struct vol *v;

	if (node_record_load(path, &rec, &err) != ERR_OK ||
	    record_check(path, &rec, n->dir, n->roots, n->nroots, &err) != ERR_OK) {
		log_error("ignoring a damaged volume record", LOG_S("path", path),
			  LOG_S("cause", err.msg));
		node_record_release(&rec);
		return;
	}
	v = vol_get(n, rec.volume_id, true);
	if (!v) {
		node_record_release(&rec);
		return;
	}
	node_record_release(&v->rec);
	v->rec = rec;
	if (v->pods) {
		/* The connection comes back from the mount pod (pod_check). */
		if (pod_keep(n, v, -1, &err) != ERR_OK)
			log_error("cannot track a mount pod", LOG_S("volume", v->rec.volume_id),
				  LOG_S("cause", err.msg));
		log_info("waiting for the volume's mount pod to give its connection back",
			 LOG_S("volume", v->rec.volume_id), LOG_U("conn", v->rec.conn));
	} else if (daemon_alive(v, NULL)) {
		/* Opened after the start time matched: the same process. */
		v->pidfd = open_pidfd((pid_t)v->rec.pid);
		v->fd = grab_descriptor((pid_t)v->rec.pid, v->rec.daemon_fd);
		if (v->fd < 0)
			log_warn("re-adopted granary-fuse without its descriptor: if it dies, the mount is made anew",
				 LOG_S("volume", v->rec.volume_id), LOG_I("pid", v->rec.pid),
				 LOG_S("cause", strerror(errno)));
		else
			log_info("re-adopted granary-fuse", LOG_S("volume", v->rec.volume_id),
				 LOG_S("staging_path", v->rec.staging_path), LOG_I("pid", v->rec.pid));
	} else {
		log_warn("granary-fuse of a staged volume is gone; reviving it",
			 LOG_S("volume", v->rec.volume_id), LOG_S("staging_path", v->rec.staging_path));
		v->rec.pid = 0;
	}
	vol_put(n, v);
}

void volume_dir_remove(const struct node *n, const char *id, bool orphan)
{
	char path[PATH_MAX_LEN];
	struct error err;

	volume_path(n->dir, id, NULL, path, sizeof(path));
	if (orphan)
		log_warn("removing the directory of a volume this node does not stage",
			 LOG_S("volume", id), LOG_S("path", path));
	/* What a mount pod may have left in it goes too. */
	if (fileio_remove_tree(path, &err) != ERR_OK)
		log_warn("cannot remove a volume's directory", LOG_S("volume", id),
			 LOG_S("cause", err.msg));
}

/*
 * A volume directory that no loaded record names: an unstage the plugin
 * missed, or a record it refused. Without mount pods it goes at once. With
 * them its socket is listened on, so that a mount pod still running for
 * it says hello and is deleted (sweep_unknown_pods), and the monitor
 * removes the directory once nothing is connected (sweep_orphan_dirs).
 */
static void orphan(struct node *n, const char *id)
{
	char path[PATH_MAX_LEN];
	struct error err;
	char **grown;

	volume_path(n->dir, id, NULL, path, sizeof(path));
	if (n->cfg.pods) {
		grown = realloc(n->orphans, (n->norphans + 1) * sizeof(*grown));
		if (grown) {
			n->orphans = grown;
			volume_path(n->dir, id, KEEPER_SOCKET, path, sizeof(path));
			if ((grown[n->norphans] = strdup(id)) &&
			    keeper_listen(n->cfg.keeper, id, path, &err) == ERR_OK) {
				n->norphans++;
				return;
			}
			free(grown[n->norphans]);
		}
	}
	volume_dir_remove(n, id, true);
}

static void load_records(struct node *n)
{
	DIR *d = opendir(n->dir);
	struct dirent *e;
	char path[PATH_MAX_LEN];
	struct error ignored;

	if (!d)
		return;
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);

		if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", n->dir, e->d_name);
		adopt(n, path);
	}
	rewinddir(d);
	while ((e = readdir(d))) {
		struct vol *v;

		struct stat st;

		if (check_id(e->d_name, &ignored) != ERR_OK ||
		    (e->d_type != DT_DIR &&
		     (e->d_type != DT_UNKNOWN || fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
		      !S_ISDIR(st.st_mode))))
			continue;
		v = vol_get(n, e->d_name, false);
		if (v)
			vol_put(n, v);
		else
			orphan(n, e->d_name);
	}
	closedir(d);
}

/* Copies dirs[0..n) into *out (*nout counts what was copied, so that
 * node_free frees a partial copy). -1 when out of memory. */
static int copy_dirs(char *const *dirs, size_t n, char ***out, size_t *nout)
{
	*out = calloc(n ? n : 1, sizeof(char *));
	if (!*out)
		return -1;
	for (*nout = 0; *nout < n; (*nout)++) {
		(*out)[*nout] = strdup(dirs[*nout]);
		if (!(*out)[*nout])
			return -1;
	}
	return 0;
}

enum error_code node_new(const struct node_config *cfg, struct node **out, struct error *err)
{
	struct node *n = calloc(1, sizeof(*n));
	enum error_code rc;

	if (!n)
		return error_set(err, ERR_NOMEM, "out of memory");
	pthread_mutex_init(&n->mu, NULL);
	log_limiter_init(&n->lim, 10000, NULL, NULL);
	n->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	n->cfg = *cfg;
	if (asprintf(&n->dir, "%s/node", cfg->state_dir) < 0)
		n->dir = NULL;
	n->fuse_binary = strdup(cfg->fuse_binary ? cfg->fuse_binary : "");
	n->fuse_config = strdup(cfg->fuse_config ? cfg->fuse_config : "");
	n->meta_address = strdup(cfg->meta_address ? cfg->meta_address : "");
	if (n->wake_fd < 0) {
		rc = error_set(err, ERR_NOMEM, "eventfd for the monitor: %s", strerror(errno));
		goto fail;
	}
	if (!n->dir || !n->fuse_binary || !n->fuse_config || !n->meta_address ||
	    copy_dirs(cfg->roots, cfg->nroots, &n->roots, &n->nroots) < 0 ||
	    copy_dirs(cfg->file_roots, cfg->nfile_roots, &n->file_roots, &n->nfile_roots) < 0) {
		rc = error_set(err, ERR_NOMEM, "out of memory");
		goto fail;
	}
	n->cfg.state_dir = NULL;
	n->cfg.fuse_binary = n->fuse_binary;
	n->cfg.fuse_config = n->fuse_config;
	n->cfg.meta_address = n->meta_address;
	n->cfg.roots = n->roots;
	n->cfg.file_roots = n->file_roots;
	if (!n->cfg.stage_timeout_ms)
		n->cfg.stage_timeout_ms = 120000;
	n->started_ms = retry_now_ms();
	rc = fileio_mkdirs(n->dir, 0700, err);
	if (rc != ERR_OK)
		goto fail;
	load_records(n);
	if (pthread_create(&n->monitor, NULL, monitor_main, n) != 0) {
		rc = error_set(err, ERR_NOMEM, "cannot start the monitor thread");
		goto fail;
	}
	n->monitor_running = true;
	*out = n;
	return ERR_OK;
fail:
	node_free(n);
	return rc;
}

void node_free(struct node *n)
{
	if (!n)
		return;
	if (n->monitor_running) {
		pthread_mutex_lock(&n->mu);
		n->stopping = true;
		pthread_mutex_unlock(&n->mu);
		eventfd_write(n->wake_fd, 1);
		pthread_join(n->monitor, NULL);
	}
	while (n->vols) {
		struct vol *v = n->vols;

		n->vols = v->next;
		vol_free(v);
	}
	config_dirs_free(n->orphans, n->norphans);
	free(n->orphans);
	config_dirs_free(n->roots, n->nroots);
	free(n->roots);
	config_dirs_free(n->file_roots, n->nfile_roots);
	free(n->file_roots);
	free(n->dir);
	free(n->fuse_binary);
	free(n->fuse_config);
	free(n->meta_address);
	log_limiter_release(&n->lim);
	if (n->wake_fd >= 0)
		close(n->wake_fd);
	pthread_mutex_destroy(&n->mu);
	free(n);
}

/* ---- the calls ----------------------------------------------------------- */

/*
 * No component of path below its allowed root may be a symbolic link: a
 * link there would carry a mount (and an unmount, and a rmdir) to wherever
 * it points, and leave the mount behind when the kubelet unpublishes.
 * Components that do not exist yet are made as directories; one that is a
 * mount whose FUSE connection is gone (ENOTCONN) is no link. The answer is
 * INVALID_ARGUMENT, not FAILED_PRECONDITION: the path is unacceptable as
 * sent, and no change of the volume's state would make it acceptable.
 */
static enum error_code check_no_links(const struct node *n, const char *field, const char *path,
				      struct error *err)
{
	char prefix[PATH_MAX_LEN];
	size_t start = 0, len = strlen(path);
	struct stat st;

	if (len >= sizeof(prefix))
		return ERR_OK; /* node_path_allowed refused it */
	for (size_t i = 0; i < n->nroots; i++) {
		size_t rl = strlen(n->roots[i]);

		if (strncmp(path, n->roots[i], rl) == 0 && (path[rl] == '/' || rl == 1) && rl > start)
			start = rl;
	}
	for (size_t end = start + 1; end <= len; end++) {
		if (path[end] != '/' && path[end] != '\0')
			continue;
		memcpy(prefix, path, end);
		prefix[end] = '\0';
		if (lstat(prefix, &st) != 0) {
			if (errno == ENOTCONN)
				continue;
			return ERR_OK; /* missing: made as directories */
		}
		if (S_ISLNK(st.st_mode))
			return error_set(err, ERR_INVALID,
					 "field '%s': '%s' is a symbolic link (in '%s'); staging and target paths must be plain directories under the allowed roots",
					 field, prefix, path);
	}
	return ERR_OK;
}

static enum error_code check_path(const struct node *n, const char *field, const char *path,
				  struct error *err)
{
	if (!path || !*path)
		return error_set(err, ERR_INVALID, "field '%s': required", field);
	if (!node_path_allowed(path, n->roots, n->nroots))
		return error_set(err, ERR_INVALID,
				 "field '%s': '%s' is not a clean absolute path under the allowed roots (allowed_roots)",
				 field, path);
	return check_no_links(n, field, path, err);
}

/* The id names the volume's files in STATE/node: never a path. */
enum error_code check_id(const char *id, struct error *err)
{
	return controller_check_id("volume_id", id, err);
}

/*
 * Registers the dataset again from the volume context after meta lost it
 * (a restart without its data_dir): the PV outlives meta's disk. Meta
 * joins identical registrations, so nodes doing this at once all wait for
 * one listing. credentials_ref stays empty: meta cannot read the node's
 * files, and lists with its own store credentials.
 */
static enum error_code reregister(struct node *n, const char *volume_id, const char *dataset,
				  const struct controller_params *reg, uint64_t timeout_ms,
				  struct error *err)
{
	Granary__V1__Dataset *ds = NULL;
	char why[ERROR_MSG_MAX];
	enum error_code rc;

	/* The controller's rule again: a volume context is only as good as
	 * whoever wrote the PV, and meta lists a file:// source on its host. */
	rc = store_file_root_check(reg->source, (const char *const *)n->file_roots,
				   n->nfile_roots, err);
	if (rc != ERR_OK) {
		err->code = ERR_INVALID;
		return error_wrap(err, "volume '%s': volume_context key 'source'", volume_id);
	}
	rc = controller_register(n->cfg.meta, dataset, reg, "", timeout_ms, &ds, err);
	if (rc == ERR_TIMEOUT)
		return error_set(err, ERR_TIMEOUT,
				 "dataset '%s' is still being registered again after %llu ms; it goes on, and a retry waits for it",
				 dataset, (unsigned long long)timeout_ms);
	if (rc == ERR_EXISTS) {
		/* Someone registered it with another spec meanwhile: a retry
		 * stages what meta has. */
		snprintf(why, sizeof(why), "%s", err->msg);
		return error_set(err, ERR_UNAVAILABLE,
				 "volume '%s': dataset '%s' was registered meanwhile with another spec (%.300s); try again",
				 volume_id, dataset, why);
	}
	if (rc != ERR_OK)
		return error_wrap(err, "volume '%s': registering dataset '%s' again from the volume context",
				  volume_id, dataset);
	log_info("dataset re-registered from the volume context", LOG_S("volume", volume_id),
		 LOG_S("dataset", dataset), LOG_S("source", reg->source), LOG_U("files", ds->files),
		 LOG_U("bytes", ds->bytes), LOG_U("generation", ds->generation));
	granary__v1__dataset__free_unpacked(ds, NULL);
	return ERR_OK;
}

/*
 * The dataset must exist in meta before a first stage. Unknown to meta (or
 * still being registered), it is registered again when the volume context
 * carries its registration (reg not NULL), within timeout_ms; else
 * ERR_NOT_FOUND saying how to recover.
 */
/* The volume_context value of key, or NULL. */
static const char *context_value(const struct controller_kv *kv, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (kv[i].key && strcmp(kv[i].key, key) == 0)
			return kv[i].value;
	return NULL;
}

static enum error_code check_dataset(struct node *n, const char *volume_id, const char *dataset,
				     const struct controller_params *reg, const char *object,
				     uint64_t timeout_ms, struct error *err)
{
	Granary__V1__Dataset *ds = NULL;
	enum error_code rc;
	uint64_t generation;

	if (!n->cfg.meta)
		return ERR_OK;
	rc = meta_client_get(n->cfg.meta, dataset, &ds, err);
	/* A Dataset's volume: granary-meta's controller registers it (a new
	 * leader does so after listing the Datasets). */
	if ((rc == ERR_NOT_FOUND || (rc == ERR_OK && ds->generation == 0)) && !reg && object) {
		if (ds)
			granary__v1__dataset__free_unpacked(ds, NULL);
		return error_set(err, ERR_UNAVAILABLE,
				 "volume '%s': dataset '%s' is not registered in granary-meta yet; the controller of Dataset %.300s registers it (kubectl describe dataset shows its phase)",
				 volume_id, dataset, object);
	}
	if (rc == ERR_NOT_FOUND && !reg)
		return error_set(err, ERR_NOT_FOUND,
				 "volume '%s': dataset '%s' not found in granary-meta, and the volume context does not carry its registration (a volume made by an older granary-csi): restore granary-meta's data_dir, or recreate the claim so that its new volume carries it",
				 volume_id, dataset);
	if (rc != ERR_OK && rc != ERR_NOT_FOUND)
		return rc;
	/* A dataset meta knows under the volume's id must be the one the
	 * volume context describes: the mount reads what meta lists, with
	 * this volume's node-stage Secret, at meta's endpoint. */
	if (rc == ERR_OK && reg && ds->spec &&
	    (strcmp(ds->spec->source_uri ? ds->spec->source_uri : "", reg->source) != 0 ||
	     strcmp(ds->spec->endpoint ? ds->spec->endpoint : "", reg->endpoint) != 0)) {
		rc = error_set(err, ERR_PRECONDITION,
			       "volume '%s': dataset '%s' in granary-meta reads '%.300s' at endpoint '%.200s', not the volume's '%.300s' at '%.200s': delete the dataset from granary-meta (or the claim and its volume) so that they agree",
			       volume_id, dataset, ds->spec->source_uri ? ds->spec->source_uri : "",
			       ds->spec->endpoint ? ds->spec->endpoint : "", reg->source,
			       reg->endpoint);
		granary__v1__dataset__free_unpacked(ds, NULL);
		return rc;
	}
	generation = rc == ERR_OK ? ds->generation : 0;
	if (ds)
		granary__v1__dataset__free_unpacked(ds, NULL);
	if (generation > 0)
		return ERR_OK;
	/* Not there, or being built (another node registering it again):
	 * registering the same spec joins that build. */
	if (reg)
		return reregister(n, volume_id, dataset, reg, timeout_ms, err);
	return error_set(err, ERR_UNAVAILABLE, "dataset '%s' is still being registered; try again",
			 dataset);
}

/* First stage of a volume on this node (v->mu held, v unstaged). */
static enum error_code stage_new(struct node *n, struct vol *v,
				 const struct node_stage_request *req, const char *staging,
				 const struct controller_secret *secret, bool has_secret,
				 const struct controller_params *reg, uint64_t timeout_ms,
				 struct error *err)
{
	char path[PATH_MAX_LEN], fstype[64] = "";
	uint64_t t0 = retry_now_ms(), spent;
	enum error_code rc;

	rc = check_dataset(n, req->volume_id, v->rec.dataset, reg,
			   context_value(req->context, req->ncontext, CONTROLLER_CONTEXT_OBJECT),
			   timeout_ms, err);
	if (rc != ERR_OK)
		return rc;
	/* A registration took part of the time; the daemon gets the rest. */
	spent = retry_now_ms() - t0;
	timeout_ms = spent < timeout_ms ? timeout_ms - spent : 1;
	if (!(v->rec.staging_path = strdup(staging)))
		return error_set(err, ERR_NOMEM, "out of memory");
	volume_path(n->dir, req->volume_id, NULL, path, sizeof(path));
	rc = fileio_mkdirs(path, 0700, err);
	if (rc != ERR_OK)
		return rc;
	volume_path(n->dir, req->volume_id, NODE_INIT_STATE, path, sizeof(path));
	if (!(v->rec.init_state = strdup(path)))
		return error_set(err, ERR_NOMEM, "out of memory");
	volume_path(n->dir, req->volume_id, NODE_CREDENTIALS, path, sizeof(path));
	if (!(v->rec.credentials_file = strdup(has_secret ? path : "")))
		return error_set(err, ERR_NOMEM, "out of memory");
	if (has_secret) {
		rc = controller_write_credentials(path, secret, err);
		if (rc != ERR_OK)
			return rc;
	}
	rc = fileio_mkdirs(staging, 0750, err);
	if (rc != ERR_OK)
		return rc;
	if (mount_lookup(staging, fstype, sizeof(fstype))) {
		/* A mount of ours that no record names (state lost): replace it. */
		if (strcmp(fstype, FUSE_TYPE) != 0)
			return error_set(err, ERR_EXISTS,
					 "field 'staging_target_path': '%s' already holds a %s mount",
					 staging, fstype);
	}
	rc = mount_and_start(n, v, err);
	if (rc != ERR_OK)
		return rc;
	return wait_serving(n, v, timeout_ms, err);
}

/* Undoes a first stage that failed: nothing of it stays. */
static void stage_undo(struct node *n, struct vol *v)
{
	char path[PATH_MAX_LEN];
	struct error ignored;

	if (stop_daemon(n, v, &ignored) != ERR_OK)
		log_warn("the volume's mount pod is left running", LOG_S("volume", v->rec.volume_id),
			 LOG_S("cause", ignored.msg));
	/* Only a mount this plugin made: never one that was there before. */
	if (v->rec.staging_path && v->fd >= 0)
		unmount_all(v->rec.staging_path, &ignored);
	if (v->fd >= 0) {
		close(v->fd);
		v->fd = -1;
	}
	volume_dir_remove(n, v->rec.volume_id, false);
	record_path(n->dir, v->rec.volume_id, path, sizeof(path));
	unlink(path);
}

enum error_code node_stage(struct node *n, const struct node_stage_request *req,
			   uint64_t timeout_ms, struct error *err)
{
	struct controller_secret secret = { 0 };
	struct controller_params reg = { 0 };
	char staging[PATH_MAX_LEN];
	bool has_secret = false, has_reg = false;
	enum error_code rc;
	struct vol *v;

	rc = check_id(req->volume_id, err);
	if (rc == ERR_OK)
		rc = check_path(n, "staging_target_path", req->staging_path, err);
	if (rc == ERR_OK && !req->cap)
		rc = error_set(err, ERR_INVALID, "field 'volume_capability': required");
	if (rc == ERR_OK)
		rc = controller_check_capability(req->cap, "volume_capability", err);
	/* The volume id is the dataset's name: a context naming another one
	 * would mount a dataset the volume was never made of. */
	if (rc == ERR_OK && req->dataset && *req->dataset && strcmp(req->dataset, req->volume_id))
		rc = error_set(err, ERR_INVALID,
			       "volume_context key '" CONTROLLER_CONTEXT_DATASET
			       "': '%.64s' is not the dataset of volume_id '%s' (a volume's dataset has the volume's id)",
			       req->dataset, req->volume_id);
	if (rc == ERR_OK)
		rc = controller_context_params(req->context, req->ncontext, &reg, &has_reg, err);
	if (rc == ERR_OK)
		rc = controller_parse_secret("secret", req->secrets, req->nsecrets, &secret,
					     &has_secret, err);
	if (rc != ERR_OK) {
		controller_params_release(&reg);
		return rc;
	}
	clean_path(req->staging_path, staging, sizeof(staging));
	if (!timeout_ms || timeout_ms > n->cfg.stage_timeout_ms)
		timeout_ms = n->cfg.stage_timeout_ms;

	v = vol_get(n, req->volume_id, true);
	if (!v) {
		controller_secret_release(&secret);
		controller_params_release(&reg);
		return error_set(err, ERR_NOMEM, "out of memory");
	}
	if (v->rec.staging_path) {
		/* Staged already: adopt what runs there. */
		if (strcmp(v->rec.staging_path, staging) != 0) {
			rc = error_set(err, ERR_EXISTS, "volume '%s' is staged at '%s', not '%s'",
				       req->volume_id, v->rec.staging_path, staging);
		} else {
			/* A rotated secret reaches the next daemon. */
			if (has_secret && *v->rec.credentials_file)
				rc = controller_write_credentials(v->rec.credentials_file, &secret, err);
			/* Not serving (its daemon exits, or the volume was
			 * mounted anew after a node restart): meta may have lost
			 * the dataset meanwhile, as at a first stage. */
			if (rc == ERR_OK && !(v->pods ? v->pod_serving : daemon_alive(v, NULL)))
				rc = check_dataset(n, req->volume_id, v->rec.dataset,
						   has_reg ? &reg : NULL,
						   context_value(req->context, req->ncontext,
								 CONTROLLER_CONTEXT_OBJECT),
						   timeout_ms, err);
			if (rc == ERR_OK && !v->pods && !daemon_alive(v, NULL))
				rc = revive(n, v, err);
			if (rc == ERR_OK)
				rc = wait_serving(n, v, timeout_ms, err);
		}
		vol_put(n, v);
		controller_secret_release(&secret);
		controller_params_release(&reg);
		return rc;
	}
	v->rec.dataset = strdup(req->volume_id);
	rc = v->rec.dataset ? stage_new(n, v, req, staging, &secret, has_secret,
					has_reg ? &reg : NULL, timeout_ms, err)
			    : error_set(err, ERR_NOMEM, "out of memory");
	controller_secret_release(&secret);
	controller_params_release(&reg);
	/* A daemon (or mount pod) still starting on a mount made here is
	 * kept for the retry; a stage that timed out before it mounted
	 * leaves nothing. */
	if (rc == ERR_OK || (rc == ERR_TIMEOUT && (v->rec.pid > 0 || (v->pods && v->fd >= 0)))) {
		if (rc == ERR_OK)
			log_info("volume staged", LOG_S("volume", req->volume_id),
				 LOG_S("dataset", v->rec.dataset), LOG_S("staging_path", staging),
				 LOG_I("pid", v->rec.pid));
		vol_put(n, v);
		return rc;
	}
	stage_undo(n, v);
	vol_remove(n, v);
	vol_put(n, v);
	return rc;
}

/*
 * Whether a staged volume other than id has its staging path at staging
 * (ERR_OK and *found), or might (ERR_UNAVAILABLE: one is busy with a call
 * and cannot be looked at now).
 */
static enum error_code staged_at(struct node *n, const char *id, const char *staging,
				 bool *found, struct error *err)
{
	size_t count = 0;
	struct vol **list = vol_list(n, &count);
	enum error_code rc = list ? ERR_OK : error_set(err, ERR_NOMEM, "out of memory");

	*found = false;
	for (size_t k = 0; k < count; k++) {
		struct vol *v = list[k];

		if (rc == ERR_OK && !*found && strcmp(v->rec.volume_id, id) != 0) {
			if (pthread_mutex_trylock(&v->mu) != 0) {
				rc = error_set(err, ERR_UNAVAILABLE,
					       "volume '%s' is busy with another call; try again",
					       v->rec.volume_id);
			} else {
				*found = v->rec.staging_path && strcmp(v->rec.staging_path, staging) == 0;
				pthread_mutex_unlock(&v->mu);
			}
		}
		vol_unref(n, v);
	}
	free(list);
	return rc;
}

enum error_code node_unstage(struct node *n, const char *volume_id, const char *staging_path,
			     struct error *err)
{
	bool theirs;
	char staging[PATH_MAX_LEN], fstype[64] = "";
	enum error_code rc;
	struct vol *v;

	rc = check_id(volume_id, err);
	if (rc == ERR_OK)
		rc = check_path(n, "staging_target_path", staging_path, err);
	if (rc != ERR_OK)
		return rc;
	clean_path(staging_path, staging, sizeof(staging));
	v = vol_get(n, volume_id, false);
	if (!v) {
		/* Unknown here: only a mount of ours that no record names is
		 * cleaned up, never another volume's. */
		if (!mount_lookup(staging, fstype, sizeof(fstype)) || strcmp(fstype, FUSE_TYPE) != 0)
			return ERR_OK;
		rc = staged_at(n, volume_id, staging, &theirs, err);
		if (rc != ERR_OK || theirs)
			return rc;
		return unmount_all(staging, err);
	}
	if (!v->rec.staging_path || strcmp(v->rec.staging_path, staging) != 0) {
		/* Staged elsewhere (or not at all): nothing of it is at this path. */
		vol_put(n, v);
		return ERR_OK;
	}
	rc = stop_daemon(n, v, err);
	if (rc != ERR_OK)
		log_warn("cannot unstage the volume yet: its mount pod is not stopped",
			 LOG_S("volume", volume_id), LOG_S("cause", err->msg));
	else
		rc = unmount_all(staging, err);
	if (rc != ERR_OK) {
		vol_put(n, v);
		return rc;
	}
	stage_undo(n, v);
	vol_remove(n, v);
	log_info("volume unstaged", LOG_S("volume", volume_id), LOG_S("staging_path", staging));
	vol_put(n, v);
	return ERR_OK;
}

enum error_code node_publish(struct node *n, const struct node_publish_request *req,
			     struct error *err)
{
	char staging[PATH_MAX_LEN], target[PATH_MAX_LEN], fstype[64] = "";
	enum error_code rc;
	struct vol *v;

	rc = check_id(req->volume_id, err);
	if (rc == ERR_OK)
		rc = check_path(n, "target_path", req->target_path, err);
	if (rc == ERR_OK && !req->cap)
		rc = error_set(err, ERR_INVALID, "field 'volume_capability': required");
	if (rc == ERR_OK)
		rc = controller_check_capability(req->cap, "volume_capability", err);
	/* The spec's code for a publish whose stage was not done. */
	if (rc == ERR_OK && (!req->staging_path || !*req->staging_path))
		rc = error_set(err, ERR_PRECONDITION,
			       "field 'staging_target_path': required: this plugin stages a volume first (STAGE_UNSTAGE_VOLUME)");
	if (rc == ERR_OK)
		rc = check_path(n, "staging_target_path", req->staging_path, err);
	if (rc != ERR_OK)
		return rc;
	clean_path(req->staging_path, staging, sizeof(staging));
	clean_path(req->target_path, target, sizeof(target));
	v = vol_get(n, req->volume_id, false);
	if (!v)
		return error_set(err, ERR_NOT_FOUND, "volume '%s' is not staged on this node",
				 req->volume_id);
	if (!v->rec.staging_path) {
		rc = error_set(err, ERR_NOT_FOUND, "volume '%s' is not staged on this node",
			       req->volume_id);
		goto out;
	}
	if (strcmp(v->rec.staging_path, staging) != 0) {
		rc = error_set(err, ERR_INVALID,
			       "field 'staging_target_path': volume '%s' is staged at '%s', not '%s'",
			       req->volume_id, v->rec.staging_path, staging);
		goto out;
	}
	rc = fileio_mkdirs(target, 0750, err);
	if (rc != ERR_OK)
		goto out;
	if (mount_lookup(target, fstype, sizeof(fstype))) {
		if (strcmp(fstype, FUSE_TYPE) != 0) {
			rc = error_set(err, ERR_EXISTS, "field 'target_path': '%s' already holds a %s mount",
				       target, fstype);
			goto out;
		}
	} else {
		rc = bind_readonly(staging, target, err);
		if (rc != ERR_OK)
			goto out;
		log_info("volume published", LOG_S("volume", req->volume_id), LOG_S("target", target));
	}
	rc = node_record_add_target(&v->rec, target, err);
	if (rc == ERR_OK)
		rc = save_vol(n, v, err);
out:
	vol_put(n, v);
	return rc;
}

enum error_code node_unpublish(struct node *n, const char *volume_id, const char *target_path,
			       struct error *err)
{
	char target[PATH_MAX_LEN];
	bool was_there;
	enum error_code rc;
	struct vol *v;

	rc = check_id(volume_id, err);
	if (rc == ERR_OK)
		rc = check_path(n, "target_path", target_path, err);
	if (rc != ERR_OK)
		return rc;
	clean_path(target_path, target, sizeof(target));
	was_there = access(target, F_OK) == 0 || mount_lookup(target, NULL, 0);
	rc = unmount_all(target, err);
	if (rc != ERR_OK)
		return rc;
	if (rmdir(target) != 0 && errno != ENOENT) {
		int saved = errno;

		/* kubelet may have made a file there for a block volume: not ours. */
		return error_set(err, error_from_errno(saved), "remove '%s': %s", target,
				 strerror(saved));
	}
	v = vol_get(n, volume_id, false);
	if (v) {
		node_record_remove_target(&v->rec, target);
		node_record_remove_target(&v->stale, target);
		if (v->rec.staging_path)
			rc = save_vol(n, v, err);
		vol_put(n, v);
	}
	if (rc == ERR_OK && was_there)
		log_info("volume unpublished", LOG_S("volume", volume_id), LOG_S("target", target));
	return rc;
}
