/*
 * node_pods.c - the node plugin's mount pod mode: a volume's granary-fuse
 * runs in a pod of its own, its FUSE connection held by the keeper
 * (csi/keeper.h); starting, watching, upgrading and deleting those pods.
 */
#include "csi/node_impl.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/fileio.h"
#include "common/log.h"
#include "common/retry.h"
#include "csi/fdchan.h"
#include "csi/keeper.h"
#include "csi/mountpod.h"

/* ---- mount pods ------------------------------------------------------------ */

/* granary-fuse's argv for the volume's mount pod, without --mountpoint
 * (granary-mount adds its descriptor) and --takeover (it decides). */
static json_t *pod_argv(const struct node *n, const struct vol *v)
{
	struct node_argv a;
	json_t *out = json_array();

	node_fuse_argv(&n->cfg, &v->rec, 0, false, &a);
	for (size_t i = 0; out && a.argv[i]; i++) {
		if (strcmp(a.argv[i], "--mountpoint") == 0) {
			i++;
			continue;
		}
		if (json_array_append_new(out, json_string(a.argv[i])) != 0) {
			json_decref(out);
			out = NULL;
		}
	}
	return out;
}

/* A new connection id: positive, fits a JSON integer, never reused in practice. */
uint64_t new_conn_id(void)
{
	uint64_t id = 0;

	if (getrandom(&id, sizeof(id), 0) != (ssize_t)sizeof(id))
		id = retry_now_ms() ^ ((uint64_t)getpid() << 32);
	id &= (1ULL << 62) - 1;
	return id ? id : 1;
}

enum error_code pod_keep(struct node *n, struct vol *v, int fd, struct error *err)
{
	char sock[PATH_MAX_LEN];
	json_t *argv;
	enum error_code rc;

	/* A record whose directory was lost gets a new one: the pod's
	 * hostPath must be there. */
	volume_path(n->dir, v->rec.volume_id, NULL, sock, sizeof(sock));
	rc = fileio_mkdirs(sock, 0700, err);
	if (rc != ERR_OK)
		return rc;
	volume_path(n->dir, v->rec.volume_id, KEEPER_SOCKET, sock, sizeof(sock));
	rc = keeper_listen(n->cfg.keeper, v->rec.volume_id, sock, err);
	if (rc != ERR_OK)
		return rc;
	argv = pod_argv(n, v);
	if (!argv)
		return error_set(err, ERR_NOMEM, "out of memory");
	rc = keeper_put(n->cfg.keeper, v->rec.volume_id, argv, v->rec.init_state, fd, v->rec.conn,
			err);
	json_decref(argv);
	return rc;
}

/* Hands the volume's connection (v->fd, when held) to the keeper and makes
 * sure its mount pod exists. */
enum error_code pod_start(struct node *n, struct vol *v, struct error *err)
{
	enum error_code rc = pod_keep(n, v, v->fd, err);

	if (rc == ERR_OK)
		rc = mountpods_create(n->cfg.pods, v->rec.volume_id, err);
	if (rc == ERR_OK) {
		char name[MOUNTPOD_NAME_MAX];

		mountpods_name(n->cfg.pods, v->rec.volume_id, name);
		log_info("mount pod requested", LOG_S("volume", v->rec.volume_id), LOG_S("pod", name),
			 LOG_U("conn", v->rec.conn));
		v->next_pod_check_ms = retry_now_ms() + POD_GRACE_MS;
	}
	return rc;
}

/* Refreshes v->pod_serving and the restart count from the keeper. */
static void pod_refresh(struct node *n, struct vol *v, struct keeper_status *st)
{
	unsigned restarts = 0;
	bool serving = false;

	keeper_status(n->cfg.keeper, v->rec.volume_id, st);
	for (size_t i = 0; i < st->nsup && i < KEEPER_LISTED; i++) {
		serving = serving || st->sup[i].daemon_pid > 0;
		restarts += st->sup[i].restarts;
	}
	v->pod_serving = serving;
	/* Reported per supervisor: keep the count from going back when one
	 * restarts with its container. */
	if (restarts > atomic_load(&v->restarts))
		atomic_store(&v->restarts, restarts);
}

/* Why the volume's pod does not serve, into v->down_how; a pod that is
 * gone (deleted by someone) is created again. */
static void pod_explain(struct node *n, struct vol *v, const struct keeper_status *st)
{
	char name[MOUNTPOD_NAME_MAX], why[160] = "";
	struct error err;
	bool exists = false, ended = false;

	if (st->nsup) {
		const struct keeper_supervisor *s = &st->sup[0];

		snprintf(v->down_how, sizeof(v->down_how),
			 "%s; granary-mount in pod %s starts another in %llu ms",
			 *s->last_exit ? s->last_exit : "is starting", s->pod,
			 (unsigned long long)s->backoff_ms);
		return;
	}
	mountpods_name(n->cfg.pods, v->rec.volume_id, name);
	if (mountpods_describe(n->cfg.pods, name, &exists, &ended, why, sizeof(why), &err) !=
	    ERR_OK) {
		snprintf(v->down_how, sizeof(v->down_how), "has no mount pod in touch: %s", err.msg);
		return;
	}
	/* A pod that ended for good (Failed after a node's graceful shutdown)
	 * keeps its name: it goes, and the next look creates it again. */
	if (exists && ended) {
		log_warn("the volume's mount pod ended for good; deleting it to create it again",
			 LOG_S("volume", v->rec.volume_id), LOG_S("pod", name), LOG_S("why", why));
		if (mountpods_delete(n->cfg.pods, v->rec.volume_id, name, &err) != ERR_OK)
			log_limited_warn(&n->lim, "cannot delete a mount pod",
					 LOG_S("pod", name), LOG_S("cause", err.msg));
		snprintf(v->down_how, sizeof(v->down_how), "is in mount pod %s, which ended (%s)",
			 name, why);
		return;
	}
	if (!exists) {
		log_warn("the volume's mount pod is gone; creating it again",
			 LOG_S("volume", v->rec.volume_id), LOG_S("pod", name));
		if (mountpods_create(n->cfg.pods, v->rec.volume_id, &err) != ERR_OK)
			log_limited_warn(&n->lim, "cannot create a mount pod",
					 LOG_S("volume", v->rec.volume_id), LOG_S("cause", err.msg));
		snprintf(v->down_how, sizeof(v->down_how), "lost its mount pod %s (created again)", name);
		return;
	}
	snprintf(v->down_how, sizeof(v->down_how), "is in mount pod %s, %s", name,
		 *why ? why : "which has not reached the node plugin yet");
	if (*why)
		log_limited_warn(&n->lim, "a mount pod does not run", LOG_S("volume", v->rec.volume_id),
				 LOG_S("pod", name), LOG_S("why", why));
}

/*
 * An upgrade: supervisors from an older template are replaced by a pod
 * from the current one, which takes over the connection beside them;
 * then they are deleted, and once they are gone the kernel is asked to
 * resend what they had read. Only while the plugin holds the connection
 * itself, so that deleting a pod never ends it.
 */
static void pod_upgrade(struct node *n, struct vol *v, const struct keeper_status *st,
			uint64_t now)
{
	const char *cur = mountpods_template_hash(n->cfg.pods);
	bool old = false, current = false;
	struct error err;

	for (size_t i = 0; i < st->nsup && i < KEEPER_LISTED; i++) {
		if (strcmp(st->sup[i].template_hash, cur) != 0)
			old = true;
		else if (st->sup[i].daemon_pid > 0)
			current = true;
	}
	if (!old) {
		if (v->resend_pending && v->fd >= 0) {
			if (fdchan_fuse_resend(v->fd) != 0)
				log_warn("the kernel refused FUSE_NOTIFY_RESEND after an upgrade",
					 LOG_S("volume", v->rec.volume_id), LOG_S("cause", strerror(errno)));
			else
				log_info("mount pod upgraded", LOG_S("volume", v->rec.volume_id),
					 LOG_S("template", cur));
			v->resend_pending = false;
		}
		return;
	}
	if (v->fd < 0)
		return;
	if (!current) {
		char name[MOUNTPOD_NAME_MAX], why[160] = "";
		bool exists = false;

		if (now < v->next_pod_check_ms)
			return;
		v->next_pod_check_ms = now + POD_CHECK_MS;
		/* The replacement exists but does not serve (a bad image, a
		 * missing binary): the old pods keep serving; say why. */
		mountpods_name(n->cfg.pods, v->rec.volume_id, name);
		if (mountpods_describe(n->cfg.pods, name, &exists, NULL, why, sizeof(why), &err) ==
			    ERR_OK &&
		    exists) {
			/* Still being made is no fault. */
			if (*why && !strstr(why, "ContainerCreating") && !strstr(why, "PodInitializing"))
				log_limited_warn(&n->lim,
						 "the upgraded mount pod does not run; the old one keeps serving",
						 LOG_S("volume", v->rec.volume_id), LOG_S("pod", name),
						 LOG_S("why", why));
			return;
		}
		log_info("mount pod from an older template: starting its replacement",
			 LOG_S("volume", v->rec.volume_id), LOG_S("template", cur));
		if (mountpods_create(n->cfg.pods, v->rec.volume_id, &err) != ERR_OK)
			log_limited_warn(&n->lim, "cannot create a mount pod",
					 LOG_S("volume", v->rec.volume_id), LOG_S("cause", err.msg));
		return;
	}
	for (size_t i = 0; i < st->nsup && i < KEEPER_LISTED; i++) {
		if (strcmp(st->sup[i].template_hash, cur) == 0 || !*st->sup[i].pod)
			continue;
		if (mountpods_delete(n->cfg.pods, v->rec.volume_id, st->sup[i].pod, &err) != ERR_OK)
			log_limited_warn(&n->lim, "cannot delete an old mount pod",
					 LOG_S("pod", st->sup[i].pod), LOG_S("cause", err.msg));
		else
			v->resend_pending = true;
	}
}

/* The monitor's pass over a volume whose daemon runs in a mount pod. */
void pod_check(struct node *n, struct vol *v)
{
	struct keeper_status st;
	uint64_t now = retry_now_ms();
	struct error err;

	if (v->gone || !v->rec.staging_path)
		return;
	pod_refresh(n, v, &st);
	if (v->fd < 0 && st.holds_fd && st.conn == v->rec.conn) {
		v->fd = keeper_dup_fd(n->cfg.keeper, v->rec.volume_id, v->rec.conn);
		if (v->fd >= 0)
			log_info("holding the FUSE connection again (given back by its mount pod)",
				 LOG_S("volume", v->rec.volume_id), LOG_U("conn", v->rec.conn));
	}
	if (v->pod_serving) {
		v->down_since_ms = 0;
		atomic_store(&v->backoff_ms, 0);
		pod_upgrade(n, v, &st, now);
		return;
	}
	if (!v->down_since_ms) {
		v->down_since_ms = now;
		snprintf(v->down_how, sizeof(v->down_how), "is not running");
	}
	/* Nobody holds the connection: the node restarted, or the plugin and
	 * the mount pod ended together. Only a new mount helps. */
	if (v->fd < 0 && now - n->started_ms >= ADOPT_GRACE_MS &&
	    now - v->down_since_ms >= ADOPT_GRACE_MS && now >= v->next_restart_ms) {
		uint64_t delay = node_restart_delay(atomic_load(&v->backoff_ms), 0);

		atomic_store(&v->backoff_ms, delay);
		v->next_restart_ms = now + delay;
		log_warn("no process holds the volume's FUSE connection any more; mounting anew",
			 LOG_S("volume", v->rec.volume_id), LOG_S("staging_path", v->rec.staging_path));
		if (mount_and_start(n, v, &err) != ERR_OK) {
			log_error("cannot mount the volume anew", LOG_S("volume", v->rec.volume_id),
				  LOG_S("cause", err.msg), LOG_U("retry_in_ms", delay));
			snprintf(v->down_how, sizeof(v->down_how), "cannot be mounted anew: %s", err.msg);
		}
		return;
	}
	if (st.nsup || (st.alone_since_ms && now - st.alone_since_ms >= POD_GRACE_MS &&
			now >= v->next_pod_check_ms)) {
		pod_explain(n, v, &st);
		if (!st.nsup)
			v->next_pod_check_ms = now + POD_CHECK_MS;
	}
}

/*
 * Mount pods of volumes this node does not stage (an unstage the plugin
 * missed, a record lost): deleted once the records have had time to load
 * and their supervisors to reconnect. The names come from hellos, which
 * a mount pod could forge: the volume is the pod's own annotation, which
 * the plugin wrote, and only that volume's pod on this node is deleted,
 * and only when the volume is not staged here.
 */
void sweep_unknown_pods(struct node *n)
{
	char names[8][KEEPER_NAME_MAX], volume[KEEPER_NAME_MAX];
	struct keeper_status st;
	struct error err;
	size_t count;

	if (!n->cfg.pods || retry_now_ms() - n->started_ms < POD_GRACE_MS)
		return;
	count = keeper_take_unknown(n->cfg.keeper, names, 8);
	for (size_t i = 0; i < count; i++) {
		if (mountpods_volume_of(n->cfg.pods, names[i], volume, sizeof(volume), &err) !=
		    ERR_OK) {
			if (err.code != ERR_NOT_FOUND)
				log_warn("cannot delete a mount pod", LOG_S("pod", names[i]),
					 LOG_S("cause", err.msg));
			continue;
		}
		keeper_status(n->cfg.keeper, volume, &st);
		if (st.known) {
			log_warn("not deleting the mount pod of a staged volume named by a granary-mount of another volume",
				 LOG_S("pod", names[i]), LOG_S("volume", volume));
			continue;
		}
		log_warn("deleting a mount pod of a volume this node does not stage",
			 LOG_S("pod", names[i]), LOG_S("volume", volume));
		if (mountpods_delete(n->cfg.pods, volume, names[i], &err) != ERR_OK)
			log_warn("cannot delete a mount pod", LOG_S("pod", names[i]),
				 LOG_S("cause", err.msg));
	}
}

/*
 * The directories of volumes this node does not stage (node.c, orphan):
 * once nothing is connected through its socket (a mount pod still there
 * said hello and was deleted above), the socket closes and the directory
 * goes. A stage of the volume meanwhile makes the directory its own.
 */
void sweep_orphan_dirs(struct node *n)
{
	char name[MOUNTPOD_NAME_MAX];
	struct keeper_status st;
	struct error err;

	if (!n->norphans || retry_now_ms() - n->started_ms < POD_GRACE_MS)
		return;
	for (size_t i = n->norphans; i-- > 0;) {
		const char *id = n->orphans[i];
		/* Held, a stage of the volume waits until this is done. */
		struct vol *v = vol_get(n, id, true);

		if (!v)
			continue;
		keeper_status(n->cfg.keeper, id, &st);
		if (!v->rec.staging_path && st.nsup) {
			vol_remove(n, v);
			vol_put(n, v);
			continue;
		}
		if (!v->rec.staging_path) {
			/* A pod that never came (crash-looping) is gone too. */
			mountpods_name(n->cfg.pods, id, name);
			if (mountpods_delete(n->cfg.pods, id, name, &err) != ERR_OK)
				log_warn("cannot delete a mount pod", LOG_S("pod", name),
					 LOG_S("cause", err.msg));
			keeper_forget(n->cfg.keeper, id);
			volume_dir_remove(n, id, true);
			vol_remove(n, v);
		}
		vol_put(n, v);
		free(n->orphans[i]);
		n->orphans[i] = n->orphans[--n->norphans];
	}
}

/*
 * Deletes every mount pod of the volume and waits until none is in touch.
 * A pod that cannot be deleted (the API away or refusing) or that is still
 * connected after the wait leaves everything as it was: its granary-fuse
 * still serves the mount, and the caller fails (the kubelet retries).
 */
enum error_code pod_stop(struct node *n, struct vol *v, struct error *err)
{
	char deleted[8][MOUNTPOD_NAME_MAX];
	size_t ndeleted = 1;
	struct keeper_status st;
	uint64_t t0 = retry_now_ms();
	struct error derr;

	mountpods_name(n->cfg.pods, v->rec.volume_id, deleted[0]);
	if (mountpods_delete(n->cfg.pods, v->rec.volume_id, deleted[0], err) != ERR_OK) {
		err->code = ERR_UNAVAILABLE;
		return error_wrap(err, "volume '%s' stays staged", v->rec.volume_id);
	}
	for (;;) {
		keeper_status(n->cfg.keeper, v->rec.volume_id, &st);
		for (size_t i = 0; i < st.nsup && i < KEEPER_LISTED; i++) {
			size_t k = 0;

			while (k < ndeleted && strcmp(deleted[k], st.sup[i].pod) != 0)
				k++;
			if (k < ndeleted || !*st.sup[i].pod || ndeleted == 8)
				continue;
			snprintf(deleted[ndeleted++], MOUNTPOD_NAME_MAX, "%s", st.sup[i].pod);
			if (mountpods_delete(n->cfg.pods, v->rec.volume_id, st.sup[i].pod, &derr) !=
			    ERR_OK)
				log_warn("cannot delete a mount pod", LOG_S("pod", st.sup[i].pod),
					 LOG_S("cause", derr.msg));
		}
		if (!st.nsup || retry_now_ms() - t0 > STOP_GRACE_MS + 20000)
			break;
		retry_sleep_ms(100);
	}
	if (st.nsup)
		return error_set(err, ERR_UNAVAILABLE,
				 "volume '%s' stays staged: its mount pod %s is still running %llu s after it was deleted",
				 v->rec.volume_id, st.sup[0].pod,
				 (unsigned long long)(retry_now_ms() - t0) / 1000);
	keeper_forget(n->cfg.keeper, v->rec.volume_id);
	v->pod_serving = false;
	return ERR_OK;
}

/* wait_serving for a mount pod: its supervisor reports a running daemon
 * and the INIT was taken. */
enum error_code pod_wait_serving(struct node *n, struct vol *v, uint64_t timeout_ms,
				 struct error *err)
{
	uint64_t t0 = retry_now_ms();
	struct keeper_status st;

	for (;;) {
		/* What the monitor would do: it passes over a volume busy with
		 * this call (a connection nobody holds is mounted anew). */
		pod_check(n, v);
		pod_refresh(n, v, &st);
		if (v->pod_serving && access(v->rec.init_state, F_OK) == 0)
			return ERR_OK;
		for (size_t i = 0; i < st.nsup && i < KEEPER_LISTED; i++)
			if (strcmp(st.sup[i].last_exit, "exited with status 2") == 0)
				return error_set(err, ERR_INVALID,
						 "granary-fuse for dataset '%s' refused its settings (its reason is in the log of mount pod %s)",
						 v->rec.dataset, st.sup[i].pod);
		if (retry_now_ms() - t0 >= timeout_ms) {
			pod_explain(n, v, &st);
			return error_set(err, ERR_TIMEOUT,
					 "granary-fuse for dataset '%s' is not serving after %llu ms: it %s; it goes on, and a retry waits for it",
					 v->rec.dataset, (unsigned long long)timeout_ms, v->down_how);
		}
		retry_sleep_ms(50);
	}
}
