/*
 * node_condition.c - the node plugin's volume conditions: statfs probes of
 * the mounts, targets left stale by a remount, NodeGetVolumeStats and the
 * health of every staged volume.
 */
#include "csi/node_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "common/log.h"
#include "common/retry.h"
#include "fuse/mountstats.h"

#define PROBE_TIMEOUT_MS 2000

/* ---- conditions ---------------------------------------------------------- */

/*
 * A statfs of a mount in a thread of its own. statfs always reaches the
 * FUSE daemon (nothing caches it), so it tells a mount that serves from
 * one whose connection is gone (ENOTCONN) or whose daemon does not answer
 * (hung, stopped, dead while the plugin holds the connection: the call
 * waits in the kernel). The caller waits at most a deadline; a probe that
 * hangs stays with its volume (vol->probe), and the next check waits on
 * it again instead of leaving one more thread stuck in the kernel.
 */
struct probe {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	unsigned refs;          /* protected by mu */
	bool done;              /* protected by mu */
	int errnum;             /* statvfs' errno, 0 = answered; protected by mu */
	struct statvfs st;      /* protected by mu */
	uint64_t started_ms;    /* immutable */
	char path[];            /* immutable */
};

void probe_put(struct probe *p)
{
	bool last;

	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	last = --p->refs == 0;
	pthread_mutex_unlock(&p->mu);
	if (!last)
		return;
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

static void *probe_main(void *arg)
{
	struct probe *p = arg;
	struct statvfs st;
	int errnum = statvfs(p->path, &st) == 0 ? 0 : errno;

	pthread_mutex_lock(&p->mu);
	p->st = st;
	p->errnum = errnum;
	p->done = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	probe_put(p);
	return NULL;
}

/* Starts a probe of path, with a reference for the caller; NULL when no
 * thread can be started. */
static struct probe *probe_start(const char *path)
{
	size_t len = strlen(path) + 1;
	struct probe *p = calloc(1, sizeof(*p) + len);
	pthread_condattr_t ca;
	pthread_attr_t attr;
	pthread_t t;
	int rc;

	if (!p)
		return NULL;
	memcpy(p->path, path, len);
	pthread_mutex_init(&p->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cv, &ca);
	pthread_condattr_destroy(&ca);
	p->refs = 2; /* the caller's and the thread's */
	p->started_ms = retry_now_ms();
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 << 10);
	rc = pthread_create(&t, &attr, probe_main, p);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		p->refs = 1;
		probe_put(p);
		return NULL;
	}
	return p;
}

/* Waits until the probe is done or deadline_ms (monotonic) passes. */
static bool probe_wait(struct probe *p, uint64_t deadline_ms, int *errnum, struct statvfs *st)
{
	struct timespec until = { .tv_sec = (time_t)(deadline_ms / 1000),
				  .tv_nsec = (long)(deadline_ms % 1000) * 1000000L };
	bool done;

	pthread_mutex_lock(&p->mu);
	while (!p->done && pthread_cond_timedwait(&p->cv, &p->mu, &until) == 0)
		;
	done = p->done;
	if (done) {
		*errnum = p->errnum;
		*st = p->st;
	}
	pthread_mutex_unlock(&p->mu);
	return done;
}

static bool probe_pending(struct probe *p)
{
	bool pending;

	pthread_mutex_lock(&p->mu);
	pending = !p->done;
	pthread_mutex_unlock(&p->mu);
	return pending;
}

void node_mount_condition(const char *path, int errnum, uint64_t pending_ms,
			  struct node_condition *out)
{
	out->abnormal = true;
	if (pending_ms)
		snprintf(out->message, sizeof(out->message),
			 "the mount at '%s' has not answered statfs for %llu ms: granary-fuse hangs or is stopped, and reads there wait",
			 path, (unsigned long long)pending_ms);
	else if (errnum == ENOTCONN)
		snprintf(out->message, sizeof(out->message),
			 "the mount at '%s' answers 'Transport endpoint is not connected': its FUSE connection is gone; containers that use it must restart",
			 path);
	else if (errnum)
		snprintf(out->message, sizeof(out->message), "statfs of the mount at '%s': %s",
			 path, strerror(errnum));
	else {
		out->abnormal = false;
		snprintf(out->message, sizeof(out->message), "the mount at '%s' serves", path);
	}
}

/* What a condition check takes from its volume, under v->mu. */
struct check {
	char path[PATH_MAX_LEN];
	struct node_condition cond;  /* final when probe is NULL */
	struct probe *probe;         /* a reference; NULL: nothing to wait for */
};

/* Whether path of v (v->mu held) is a target published before the volume
 * was mounted anew, or, for the staging path, whether any such target is
 * left; if so, cond says so. */
static bool stale_condition(const struct vol *v, const char *path, struct node_condition *cond)
{
	struct tm tm;
	char when[32] = "?";
	bool is_stale = false;

	if (!v->stale.ntargets)
		return false;
	for (size_t i = 0; !is_stale && i < v->stale.ntargets; i++)
		is_stale = strcmp(v->stale.targets[i], path) == 0;
	if (!is_stale && strcmp(path, v->rec.staging_path) != 0)
		return false;
	if (gmtime_r(&v->stale_since, &tm))
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	cond->abnormal = true;
	if (is_stale)
		snprintf(cond->message, sizeof(cond->message),
			 "volume '%s' was mounted anew at %s after its FUSE connection ended (the node plugin's container stopped): the containers that mounted it before keep the ended connection and get 'Transport endpoint is not connected'; restart them",
			 v->rec.volume_id, when);
	else
		snprintf(cond->message, sizeof(cond->message),
			 "volume '%s' was mounted anew at %s after its FUSE connection ended: %zu pod mount(s) from before keep the ended connection until their pods restart",
			 v->rec.volume_id, when, v->stale.ntargets);
	return true;
}

/* Starts checking path of v (v->mu held): the daemon first, then a probe
 * of the mount (or the one still pending). */
static void check_begin(struct vol *v, const char *path, struct check *c)
{
	uint64_t now = retry_now_ms();

	memset(c, 0, sizeof(*c));
	snprintf(c->path, sizeof(c->path), "%s", path);
	if (v->pods && !v->pod_serving) {
		c->cond.abnormal = true;
		snprintf(c->cond.message, sizeof(c->cond.message),
			 "granary-fuse of volume '%s' is not running%s%s; reads wait, the connection is held",
			 v->rec.volume_id, v->down_since_ms ? ": it " : "",
			 v->down_since_ms ? v->down_how : "");
		return;
	}
	if (!v->pods && !daemon_running(v)) {
		/* The monitor restarts it; until then reads wait (the plugin
		 * holds the connection) or fail. Probing would only wait too. */
		c->cond.abnormal = true;
		if (v->down_since_ms && v->next_restart_ms > now)
			snprintf(c->cond.message, sizeof(c->cond.message),
				 "granary-fuse of volume '%s' is not running for %llu s: it %s; the node plugin starts another in %llu s",
				 v->rec.volume_id,
				 (unsigned long long)((now - v->down_since_ms) / 1000), v->down_how,
				 (unsigned long long)((v->next_restart_ms - now + 999) / 1000));
		else if (v->down_since_ms)
			snprintf(c->cond.message, sizeof(c->cond.message),
				 "granary-fuse of volume '%s' is not running for %llu s: it %s; the node plugin starts another",
				 v->rec.volume_id,
				 (unsigned long long)((now - v->down_since_ms) / 1000), v->down_how);
		else
			snprintf(c->cond.message, sizeof(c->cond.message),
				 "granary-fuse of volume '%s' is not running; the node plugin starts another within a second",
				 v->rec.volume_id);
		return;
	}
	if (!mount_lookup(path, NULL, 0)) {
		c->cond.abnormal = true;
		snprintf(c->cond.message, sizeof(c->cond.message),
			 "nothing is mounted at '%s', where volume '%s' should be", path,
			 v->rec.volume_id);
		return;
	}
	if (stale_condition(v, path, &c->cond))
		return;
	if (!v->probe || !probe_pending(v->probe)) {
		probe_put(v->probe);
		v->probe = probe_start(path);
		if (!v->probe) {
			c->cond.abnormal = true;
			snprintf(c->cond.message, sizeof(c->cond.message),
				 "cannot check the mount at '%s': no thread for the probe", path);
			return;
		}
	} else {
		/* Pending: the same FUSE connection hangs for every path of it. */
		snprintf(c->path, sizeof(c->path), "%s", v->probe->path);
	}
	pthread_mutex_lock(&v->probe->mu);
	v->probe->refs++;
	pthread_mutex_unlock(&v->probe->mu);
	c->probe = v->probe;
}

/* Waits for the probe (without the volume's lock) until deadline_ms. */
static void check_end(struct check *c, uint64_t deadline_ms, struct node_stats *stats)
{
	struct statvfs st;
	int errnum = 0;

	if (stats)
		memset(stats, 0, sizeof(*stats));
	if (!c->probe)
		return;
	if (!probe_wait(c->probe, deadline_ms, &errnum, &st)) {
		uint64_t now = retry_now_ms();

		node_mount_condition(c->path, 0,
				     now > c->probe->started_ms ? now - c->probe->started_ms : 1,
				     &c->cond);
	} else {
		node_mount_condition(c->path, errnum, 0, &c->cond);
		if (!errnum && stats) {
			stats->bytes_total = (int64_t)(st.f_blocks * st.f_frsize);
			stats->bytes_available = (int64_t)(st.f_bavail * st.f_frsize);
			stats->bytes_used = (int64_t)((st.f_blocks - st.f_bfree) * st.f_frsize);
			stats->inodes_total = (int64_t)st.f_files;
			stats->inodes_available = (int64_t)st.f_favail;
			stats->inodes_used = (int64_t)(st.f_files - st.f_ffree);
		}
	}
	probe_put(c->probe);
	c->probe = NULL;
}

/* Logs a change of a volume's condition, once (v->mu held). */
static void note_condition(struct vol *v, const struct node_condition *cond)
{
	int now = cond->abnormal ? 2 : 1, was = atomic_exchange(&v->condition, now);

	if (was == now || (was == 0 && now == 1))
		return;
	if (cond->abnormal)
		log_warn("volume abnormal", LOG_S("volume", v->rec.volume_id),
			 LOG_S("cause", cond->message));
	else
		log_info("volume serves again", LOG_S("volume", v->rec.volume_id));
}

static uint64_t probe_timeout(const struct node *n)
{
	return n->cfg.probe_timeout_ms ? n->cfg.probe_timeout_ms : PROBE_TIMEOUT_MS;
}

enum error_code node_volume_stats(struct node *n, const char *volume_id, const char *path,
				  struct node_stats *out, struct node_condition *cond,
				  struct error *err)
{
	char clean[PATH_MAX_LEN];
	bool known = false;
	struct check c;
	struct vol *v;

	memset(out, 0, sizeof(*out));
	memset(cond, 0, sizeof(*cond));
	if (check_id(volume_id, err) != ERR_OK)
		return err->code;
	if (!path || !*path)
		return error_set(err, ERR_INVALID, "field 'volume_path': required");
	clean_path(path, clean, sizeof(clean));
	v = vol_get(n, volume_id, false);
	if (!v || !v->rec.staging_path) {
		if (v)
			vol_put(n, v);
		return error_set(err, ERR_NOT_FOUND, "volume '%s' is not staged on this node",
				 volume_id);
	}
	known = strcmp(v->rec.staging_path, clean) == 0;
	for (size_t i = 0; !known && i < v->rec.ntargets; i++)
		known = strcmp(v->rec.targets[i], clean) == 0;
	if (!known) {
		vol_put(n, v);
		return error_set(err, ERR_NOT_FOUND, "volume '%s' is not mounted at '%s'", volume_id,
				 clean);
	}
	check_begin(v, clean, &c);
	pthread_mutex_unlock(&v->mu);
	check_end(&c, retry_now_ms() + probe_timeout(n), out);
	pthread_mutex_lock(&v->mu);
	note_condition(v, &c.cond);
	vol_put(n, v);
	*cond = c.cond;
	return ERR_OK;
}

static int by_volume_id(const void *a, const void *b)
{
	return strcmp(((const struct node_volume_health *)a)->volume_id,
		      ((const struct node_volume_health *)b)->volume_id);
}

enum error_code node_volumes_health(struct node *n, struct node_volume_health **out,
				    size_t *count, struct error *err)
{
	struct node_volume_health *list = NULL;
	struct vol **vols = NULL;
	struct check *checks = NULL;
	bool *busy = NULL;
	size_t k = 0;
	uint64_t deadline;

	*out = NULL;
	*count = 0;
	vols = vol_list(n, &k);
	checks = calloc(k ? k : 1, sizeof(*checks));
	busy = calloc(k ? k : 1, sizeof(*busy));
	list = calloc(k ? k : 1, sizeof(*list));
	if (!vols || !checks || !busy || !list) {
		for (size_t i = 0; i < k; i++)
			vol_unref(n, vols[i]);
		free(vols);
		free(checks);
		free(busy);
		free(list);
		return error_set(err, ERR_NOMEM, "out of memory");
	}
	/* Every probe first, then one deadline for all: a scrape takes one
	 * timeout however many mounts hang. A volume busy with a call (a
	 * stage may wait minutes) is not waited for: its last condition is
	 * reported. */
	for (size_t i = 0; i < k; i++) {
		struct vol *v = vols[i];

		if (pthread_mutex_trylock(&v->mu) != 0) {
			busy[i] = true;
			continue;
		}
		if (!v->gone && v->rec.staging_path)
			check_begin(v, v->rec.staging_path, &checks[i]);
		if (!v->gone && v->rec.init_state && *v->rec.init_state) {
			char path[PATH_MAX_LEN];

			if (mountstats_path(v->rec.init_state, path, sizeof(path)))
				list[i].stats_file = strdup(path);
		}
		pthread_mutex_unlock(&v->mu);
	}
	deadline = retry_now_ms() + probe_timeout(n);
	for (size_t i = 0; i < k; i++) {
		struct vol *v = vols[i];
		struct node_volume_health *h = &list[*count];

		if (busy[i]) {
			int last = atomic_load(&v->condition);

			if (last != 0) {
				h->cond.abnormal = last == 2;
				snprintf(h->cond.message, sizeof(h->cond.message),
					 "busy with a call; the last check found it %s",
					 last == 2 ? "abnormal" : "serving");
				h->volume_id = strdup(v->rec.volume_id);
			}
		} else if (checks[i].path[0]) {
			check_end(&checks[i], deadline, NULL);
			h->cond = checks[i].cond;
			h->volume_id = strdup(v->rec.volume_id);
			if (pthread_mutex_trylock(&v->mu) == 0) {
				note_condition(v, &h->cond);
				pthread_mutex_unlock(&v->mu);
			}
		}
		if (h->volume_id) {
			h->restarts = atomic_load(&v->restarts);
			h->restart_delay_ms = atomic_load(&v->backoff_ms);
			/* list[i] held the stats file found under the lock. */
			if (h != &list[i]) {
				h->stats_file = list[i].stats_file;
				list[i].stats_file = NULL;
			}
			(*count)++;
		} else {
			free(list[i].stats_file);
			list[i].stats_file = NULL;
		}
		vol_unref(n, v);
	}
	free(vols);
	free(checks);
	free(busy);
	qsort(list, *count, sizeof(*list), by_volume_id);
	*out = list;
	return ERR_OK;
}

void node_volumes_health_free(struct node_volume_health *list, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		free(list[i].volume_id);
		free(list[i].stats_file);
	}
	free(list);
}
