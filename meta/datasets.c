/*
 * datasets.c - the Dataset controller (see datasets.h).
 */
#include "meta/datasets.h"

#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fileio.h"
#include "common/log.h"
#include "common/retry.h"
#include "meta/credpolicy.h"
#include "meta/dsobject.h"
#include "meta/dsqueue.h"
#include "meta/stopper.h"

#define API "/apis/" DSOBJECT_GROUP "/" DSOBJECT_VERSION
#define WATCH_MAX_S 300
#define IN_USE_RETRY_MS 10000
#define TERMINATING_RETRY_MS 1000
#define REPORT_EVERY_MS 10000
#define NODES_MAX 256
/* The reason of a Dataset refused the cluster's credentials. */
#define NOT_ALLOWED "NotAllowed"

enum job_kind { JOB_REGISTER, JOB_REFRESH, JOB_DELETE };

struct datasets {
	struct datasets_config cfg;
	char *cred_dir, *driver, *mirror_ns;
	struct credpolicy *policy; /* cfg.cluster_credentials */
	pthread_t thread;
	bool started;
	struct stopper stop;    /* datasets_stop: ends the backoffs at once */
	pthread_mutex_t mu;
	unsigned jobs;
	struct dsqueue *queue;  /* the objects waiting for a look; protected by mu */
	json_t *unwritten;      /* "N/D" -> status not taken yet (patch_status); protected by mu */
	char *rv;               /* the watch's resourceVersion; NULL: list */
	uint64_t next_due_ms;   /* the earliest look asked for (ends a watch) */
	uint64_t report_due_ms; /* the next report of cached bytes */
	struct reported *reported; /* cached bytes last written, per dataset */
	size_t nreported;
};

struct reported {
	char name[DSOBJECT_NAME_MAX + 1];
	char figures[96];       /* what was written: cached and preload */
	bool seen;
};

struct job {
	struct datasets *d;
	enum job_kind kind;
	json_t *obj;
};

/* ---- the objects waiting ------------------------------------------------ */

/* Look at key again in delay_ms (d->mu held). backoff: double the delay
 * of the last failure; else a plain wake-up that keeps it. */
static void again(struct datasets *d, const char *key, uint64_t delay_ms, bool backoff)
{
	uint64_t due = dsqueue_again(d->queue, key, retry_now_ms(), delay_ms, backoff);

	if (!due) {
		log_warn("cannot keep a Dataset for another look: out of memory",
			 LOG_S("dataset", key));
		return;
	}
	if (!d->next_due_ms || due < d->next_due_ms)
		d->next_due_ms = due;
}

/* SIGTERM (cfg.stop), or datasets_stop. */
static bool stop_now(struct datasets *d)
{
	return stopper_stopped(&d->stop) || d->cfg.stop();
}

/* ---- Kubernetes calls ---------------------------------------------------- */

static void object_path(const char *ns, const char *name, const char *sub, char *out,
			size_t size)
{
	snprintf(out, size, API "/namespaces/%s/datasets/%s%s", ns, name, sub);
}

static void event(struct datasets *d, const struct dsobject *o, const char *type,
		  const char *reason, const char *message)
{
	const struct kubeapi_ref about = { DSOBJECT_GROUP "/" DSOBJECT_VERSION, "Dataset", o->ns,
					   o->name, o->uid };
	struct error err;

	if (kubeapi_event(d->cfg.kube, &about, "granary-meta", type, reason, message, &err) !=
	    ERR_OK)
		log_warn("cannot record an event", LOG_S("dataset", o->name), LOG_S("reason", reason),
			 LOG_S("cause", err.msg));
}

/*
 * Merges status (taken) into the object's status subresource (no
 * conflicts: a merge patch carries no resourceVersion). One the apiserver
 * did not take (away, a 429, refused) is kept, merged with what was kept
 * before, and the object looked at again with backoff: its next look
 * writes it first (write_unwritten). Written, or the object gone (404:
 * nothing to write to), the fields it holds are no longer kept.
 */
static void patch_status(struct datasets *d, const struct dsobject *o, json_t *status)
{
	char path[512], key[DSQUEUE_KEY_LEN];
	json_t *body = json_pack("{s:O}", "status", status), *reply = NULL, *kept, *v;
	const char *field;
	struct error err;
	long code = 0;

	if (!body) {
		log_warn("cannot write a Dataset's status: out of memory",
			 LOG_S("namespace", o->ns), LOG_S("dataset", o->name));
		json_decref(status);
		return;
	}
	object_path(o->ns, o->name, "/status", path, sizeof(path));
	snprintf(key, sizeof(key), "%s/%s", o->ns, o->name);
	if (kubeapi_call_ct(d->cfg.kube, "PATCH", path, "application/merge-patch+json", body, &code,
			    &reply, &err) == ERR_OK &&
	    (code == 200 || code == 404)) {
		pthread_mutex_lock(&d->mu);
		kept = json_object_get(d->unwritten, key);
		json_object_foreach(status, field, v)
			json_object_del(kept, field);
		if (kept && !json_object_size(kept))
			json_object_del(d->unwritten, key);
		pthread_mutex_unlock(&d->mu);
	} else {
		log_warn("cannot write a Dataset's status", LOG_S("namespace", o->ns),
			 LOG_S("dataset", o->name),
			 LOG_S("cause", code ? kubeapi_message(reply) : err.msg));
		pthread_mutex_lock(&d->mu);
		kept = json_object_get(d->unwritten, key);
		if (kept ? json_object_update_recursive(kept, status) != 0
			 : json_object_set(d->unwritten, key, status) != 0)
			log_warn("cannot keep a Dataset's status to write: out of memory",
				 LOG_S("dataset", key));
		again(d, key, 0, true);
		pthread_mutex_unlock(&d->mu);
	}
	json_decref(reply);
	json_decref(body);
	json_decref(status);
}

/*
 * The status patch_status kept for obj written again and merged into obj,
 * so that what reconcile decides on obj, it decides on the status meant:
 * on the one read, a refresh whose Ready was not taken would list the
 * source again. Not while a job runs for obj: its own writes are newer
 * (and its end asks for a look).
 */
static void write_unwritten(struct datasets *d, json_t *obj)
{
	json_t *meta = json_object_get(obj, "metadata"), *kept, *st, *copy;
	struct dsobject o = { 0 };
	char key[DSQUEUE_KEY_LEN];

	o.ns = json_string_value(json_object_get(meta, "namespace"));
	o.name = json_string_value(json_object_get(meta, "name"));
	if (!o.ns || !o.name)
		return;
	snprintf(key, sizeof(key), "%s/%s", o.ns, o.name);
	pthread_mutex_lock(&d->mu);
	kept = dsqueue_running(d->queue, key) ? NULL : json_object_get(d->unwritten, key);
	if (kept) {
		json_incref(kept);
		json_object_del(d->unwritten, key);
	}
	pthread_mutex_unlock(&d->mu);
	if (!kept)
		return;
	/* A copy: obj goes to a job, kept may be merged into again. */
	copy = json_deep_copy(kept);
	st = json_object_get(obj, "status");
	if (!json_is_object(st))
		json_object_set_new(obj, "status", st = json_object());
	json_object_update_recursive(st, copy);
	json_decref(copy);
	patch_status(d, &o, kept);
}

static json_t *condition(bool ready, const char *reason, const char *message, int64_t generation)
{
	char now[40];

	kubeapi_time(retry_wall_ms(), now, sizeof(now));
	return json_pack("[{s:s, s:s, s:s, s:s, s:s, s:I}]", "type", "Ready", "status",
			 ready ? "True" : "False", "reason", reason, "message", message,
			 "lastTransitionTime", now, "observedGeneration", (json_int_t)generation);
}

/* phase with its reason and message, the Ready condition to match. */
static void set_phase(struct datasets *d, const struct dsobject *o, enum dsobject_phase phase,
		      const char *reason, const char *message, json_t *extra)
{
	json_t *st = extra ? extra : json_object();

	json_object_set_new(st, "phase", json_string(dsobject_phase_name(phase)));
	json_object_set_new(st, "reason", json_string(reason));
	json_object_set_new(st, "message", json_string(message));
	json_object_set_new(st, "observedGeneration", json_integer(o->generation));
	json_object_set_new(st, "conditions",
			    condition(phase == DSOBJECT_READY || phase == DSOBJECT_REFRESHING,
				      reason, message, o->generation));
	if (phase == DSOBJECT_FAILED) {
		char now[40];

		kubeapi_time(retry_wall_ms(), now, sizeof(now));
		json_object_set_new(st, "lastError",
				    json_pack("{s:s, s:s, s:s}", "reason", reason, "message", message,
					      "time", now));
	}
	patch_status(d, o, st);
}

/* The totals of a registered dataset, for status; claim NULL: none made
 * (a claim's mirror). */
static json_t *totals(const struct registry_dataset *rd, const char *claim)
{
	char size[32];
	json_t *st;

	dsobject_size(rd->totals.bytes, size, sizeof(size));
	st = json_pack("{s:I, s:I, s:I, s:s}", "snapshotGeneration", (json_int_t)rd->generation,
		       "files", (json_int_t)rd->totals.files, "bytes", (json_int_t)rd->totals.bytes,
		       "size", size);
	if (claim)
		json_object_set_new(st, "claim", json_string(claim));
	return st;
}

/* The finalizer added (add) or removed, by a PUT with the
 * resourceVersion read, again from a fresh read on 409 Conflict. */
static enum error_code set_finalizer(struct datasets *d, const char *ns, const char *name,
				     bool add, struct error *err)
{
	char path[512];
	long code = 0;

	object_path(ns, name, "", path, sizeof(path));
	for (int tries = 0; tries < 5; tries++) {
		json_t *obj = NULL, *reply = NULL, *meta, *fin, *v, *kept;
		bool has = false;
		size_t i;

		if (kubeapi_call(d->cfg.kube, "GET", path, NULL, &code, &obj, err) != ERR_OK)
			return err->code;
		if (code == 404) {
			json_decref(obj);
			return ERR_OK;
		}
		if (code != 200) {
			error_set(err, ERR_UNAVAILABLE, "read Dataset %s/%s: HTTP %ld: %s", ns, name,
				  code, kubeapi_message(obj));
			json_decref(obj);
			return ERR_UNAVAILABLE;
		}
		meta = json_object_get(obj, "metadata");
		fin = json_object_get(meta, "finalizers");
		kept = json_array();
		json_array_foreach(fin, i, v) {
			if (json_is_string(v) && strcmp(json_string_value(v), DSOBJECT_FINALIZER) == 0)
				has = true;
			else
				json_array_append(kept, v);
		}
		if (has == add) {
			json_decref(kept);
			json_decref(obj);
			return ERR_OK;
		}
		if (add)
			json_array_append_new(kept, json_string(DSOBJECT_FINALIZER));
		json_object_set_new(meta, "finalizers", kept);
		if (kubeapi_call(d->cfg.kube, "PUT", path, obj, &code, &reply, err) != ERR_OK) {
			json_decref(obj);
			return err->code;
		}
		json_decref(obj);
		json_decref(reply);
		if (code == 200 || code == 404)
			return ERR_OK;
		if (code != 409)
			return error_set(err, ERR_UNAVAILABLE, "update Dataset %s/%s: HTTP %ld", ns,
					 name, code);
	}
	return error_set(err, ERR_UNAVAILABLE, "update Dataset %s/%s: conflict after 5 tries", ns,
			 name);
}

/* ---- credentials --------------------------------------------------------- */

/* The credentials_ref a registration of o carries: "" (the cluster's
 * credentials), or DIR/DATASET/SECRET, the file its Secret is written to.
 * Named after the Secret, so that a secretRef added, changed or removed
 * is another credentials_ref, which reconcile sees against the registry. */
static void cred_ref(const struct datasets *d, const struct dsobject *o, const char *dataset,
		     char *out, size_t size)
{
	if (*o->secret)
		snprintf(out, size, "%s/%s/%s", d->cred_dir, dataset, o->secret);
	else
		out[0] = '\0';
}

/* Removes DATASET's credentials files but keep (NULL: all of them, and
 * their directory), and the file an earlier meta kept for it in DIR itself
 * (DIR/DATASET.credentials), which its registration no longer names. A
 * file that stays is logged, not an error: it holds no registration up. */
static void prune_credentials(struct datasets *d, const char *dataset, const char *keep)
{
	char dir[4200];
	struct dirent *de;
	DIR *dh;

	snprintf(dir, sizeof(dir), "%s/%s.credentials", d->cred_dir, dataset);
	if (unlink(dir) != 0 && errno != ENOENT)
		log_warn("cannot remove a Dataset's credentials file", LOG_S("path", dir),
			 LOG_S("cause", strerror(errno)));
	snprintf(dir, sizeof(dir), "%s/%s", d->cred_dir, dataset);
	dh = opendir(dir);
	if (!dh) {
		if (errno != ENOENT)
			log_warn("cannot read a Dataset's credentials directory",
				 LOG_S("path", dir), LOG_S("cause", strerror(errno)));
		return;
	}
	while ((de = readdir(dh))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    (keep && !strcmp(de->d_name, keep)))
			continue;
		if (unlinkat(dirfd(dh), de->d_name, 0) != 0 && errno != ENOENT)
			log_warn("cannot remove a Dataset's credentials file", LOG_S("path", dir),
				 LOG_S("file", de->d_name), LOG_S("cause", strerror(errno)));
	}
	closedir(dh);
	if (!keep && rmdir(dir) != 0 && errno != ENOENT)
		log_warn("cannot remove a Dataset's credentials directory", LOG_S("path", dir),
			 LOG_S("cause", strerror(errno)));
}

/* spec.secretRef's Secret, in the Dataset's namespace, as meta's file
 * path (cred_ref) in the directory DIR/DATASET. */
static enum error_code write_credentials(struct datasets *d, const struct dsobject *o,
					 const char *dataset, const char *path, struct error *err)
{
	char api[512], dir[4200];
	json_t *secret = NULL;
	char *text = NULL;
	size_t len = 0;
	enum error_code rc;
	long code;

	/* The name becomes a file name: the CRD's pattern allows no other. */
	if (strchr(o->secret, '/') || !strcmp(o->secret, ".") || !strcmp(o->secret, ".."))
		return error_set(err, ERR_INVALID,
				 "field 'spec.secretRef.name': '%.64s' is not the name of a Secret",
				 o->secret);
	snprintf(api, sizeof(api), "/api/v1/namespaces/%s/secrets/%s", o->ns, o->secret);
	rc = kubeapi_call(d->cfg.kube, "GET", api, NULL, &code, &secret, err);
	if (rc != ERR_OK)
		return rc;
	if (code != 200) {
		rc = error_set(err, code == 404 ? ERR_NOT_FOUND : ERR_PERMISSION,
			       "field 'spec.secretRef': Secret %s/%s: HTTP %ld: %s", o->ns, o->secret,
			       code, kubeapi_message(secret));
		json_decref(secret);
		return rc;
	}
	rc = dsobject_credentials(secret, &text, &len, err);
	json_decref(secret);
	if (rc != ERR_OK)
		return error_wrap(err, "field 'spec.secretRef' (Secret %s/%s)", o->ns, o->secret);
	snprintf(dir, sizeof(dir), "%s/%s", d->cred_dir, dataset);
	rc = fileio_mkdirs(dir, 0700, err);
	if (rc == ERR_OK)
		rc = fileio_replace(path, text, len, 0600, err);
	explicit_bzero(text, len);
	free(text);
	return rc;
}

/* ---- the claim ----------------------------------------------------------- */

static json_t *labels(const struct dsobject *o)
{
	return json_pack("{s:s, s:s, s:s}", "app.kubernetes.io/managed-by", "granary-meta",
			 "granary.io/dataset", o->name, "granary.io/dataset-namespace", o->ns);
}

/* Creates the PersistentVolume granary-NAME and the claim D in N bound to
 * it, when missing. A claim D that another made is refused. */
static enum error_code ensure_claim(struct datasets *d, const struct dsobject *o,
				   const char *dataset, uint64_t bytes, struct error *err)
{
	char pv[300], path[512], size[32], ref[600];
	json_t *body, *reply = NULL, *csi, *attrs;
	enum error_code rc;
	long code;

	snprintf(pv, sizeof(pv), "granary-%s", dataset);
	snprintf(size, sizeof(size), "%llu", (unsigned long long)(bytes ? bytes : 1));
	snprintf(ref, sizeof(ref), "%s/%s", o->ns, o->name);
	attrs = json_pack("{s:s, s:s}", "dataset", dataset, "datasetObject", ref);
	csi = json_pack("{s:s, s:s, s:b, s:o}", "driver", d->driver, "volumeHandle", dataset,
			"readOnly", 1, "volumeAttributes", attrs);
	if (*o->secret)
		json_object_set_new(csi, "nodeStageSecretRef",
				    json_pack("{s:s, s:s}", "name", o->secret, "namespace", o->ns));
	body = json_pack("{s:s, s:s, s:{s:s, s:o, s:{s:s}}, s:{s:{s:s}, s:[s], s:s, s:s, s:s, "
			 "s:{s:s, s:s}, s:o}}",
			 "apiVersion", "v1", "kind", "PersistentVolume", "metadata", "name", pv,
			 "labels", labels(o), "annotations", "pv.kubernetes.io/provisioned-by",
			 d->driver, "spec", "capacity", "storage", size, "accessModes",
			 "ReadOnlyMany", "persistentVolumeReclaimPolicy", "Retain",
			 "storageClassName", "", "volumeMode", "Filesystem", "claimRef", "namespace",
			 o->ns, "name", o->name, "csi", csi);
	rc = kubeapi_call(d->cfg.kube, "POST", "/api/v1/persistentvolumes", body, &code, &reply,
			  err);
	json_decref(body);
	if (rc == ERR_OK && code != 201 && code != 409)
		rc = error_set(err, ERR_UNAVAILABLE, "create PersistentVolume %s: HTTP %ld: %s", pv,
			       code, kubeapi_message(reply));
	json_decref(reply);
	reply = NULL;
	if (rc != ERR_OK)
		return rc;

	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/persistentvolumeclaims", o->ns);
	body = json_pack("{s:s, s:s, s:{s:s, s:s, s:o}, s:{s:[s], s:s, s:s, s:{s:{s:s}}}}",
			 "apiVersion", "v1", "kind", "PersistentVolumeClaim", "metadata", "name",
			 o->name, "namespace", o->ns, "labels", labels(o), "spec", "accessModes",
			 "ReadOnlyMany", "storageClassName", "", "volumeName", pv, "resources",
			 "requests", "storage", size);
	rc = kubeapi_call(d->cfg.kube, "POST", path, body, &code, &reply, err);
	json_decref(body);
	if (rc == ERR_OK && code == 409) {
		/* Ours from an earlier pass, or someone else's claim. */
		json_decref(reply);
		reply = NULL;
		snprintf(path, sizeof(path), "/api/v1/namespaces/%s/persistentvolumeclaims/%s",
			 o->ns, o->name);
		rc = kubeapi_call(d->cfg.kube, "GET", path, NULL, &code, &reply, err);
		if (rc == ERR_OK && code == 200 &&
		    strcmp(json_string_value(json_object_get(
				   json_object_get(reply, "spec"), "volumeName")) ?: "",
			   pv) != 0)
			rc = error_set(err, ERR_EXISTS,
				       "a PersistentVolumeClaim %s exists in %s that is not this Dataset's: rename one of them",
				       o->name, o->ns);
	} else if (rc == ERR_OK && code != 201) {
		rc = error_set(err, ERR_UNAVAILABLE, "create PersistentVolumeClaim %s/%s: HTTP %ld: %s",
			       o->ns, o->name, code, kubeapi_message(reply));
	}
	json_decref(reply);
	return rc;
}

/* Pods in N whose volumes name the claim and have not ended: their names,
 * comma-separated, in out ("" when none). */
static enum error_code claim_users(struct datasets *d, const struct dsobject *o, char *out,
				   size_t size, struct error *err)
{
	char path[512];
	json_t *list = NULL, *pod, *vol;
	size_t i, j, n = 0;
	long code;

	out[0] = '\0';
	/* Ended pods (a Job's, kept) hold no mount: not listed. */
	snprintf(path, sizeof(path),
		 "/api/v1/namespaces/%s/pods?fieldSelector="
		 "status.phase%%21%%3DSucceeded%%2Cstatus.phase%%21%%3DFailed",
		 o->ns);
	if (kubeapi_list(d->cfg.kube, path, &code, &list, err) != ERR_OK)
		return err->code;
	if (code != 200) {
		error_set(err, ERR_UNAVAILABLE, "list pods in %s: HTTP %ld: %s", o->ns, code,
			  kubeapi_message(list));
		json_decref(list);
		return ERR_UNAVAILABLE;
	}
	json_array_foreach(json_object_get(list, "items"), i, pod) {
		json_array_foreach(json_object_get(json_object_get(pod, "spec"), "volumes"), j, vol) {
			const char *claim = json_string_value(json_object_get(
				json_object_get(vol, "persistentVolumeClaim"), "claimName"));

			if (claim && strcmp(claim, o->name) == 0) {
				/* The names that fit (a message says them). */
				if (n < size)
					n += (size_t)snprintf(
						out + n, size - n, "%s%s", n ? ", " : "",
						json_string_value(json_object_get(
							json_object_get(pod, "metadata"), "name")));
				break;
			}
		}
	}
	json_decref(list);
	return ERR_OK;
}

static enum error_code delete_path(struct datasets *d, const char *path, struct error *err)
{
	json_t *reply = NULL;
	long code;

	if (kubeapi_call(d->cfg.kube, "DELETE", path, NULL, &code, &reply, err) != ERR_OK)
		return err->code;
	if (code != 200 && code != 202 && code != 404)
		error_set(err, ERR_UNAVAILABLE, "DELETE %s: HTTP %ld: %s", path, code,
			  kubeapi_message(reply));
	json_decref(reply);
	return code == 200 || code == 202 || code == 404 ? ERR_OK : ERR_UNAVAILABLE;
}

/* *there: the object at path still exists (a deleted one waits there for
 * its finalizers: a claim for the pods that mount it, a volume for its
 * claim). */
static enum error_code exists_path(struct datasets *d, const char *path, bool *there,
				   struct error *err)
{
	json_t *reply = NULL;
	long code;

	if (kubeapi_call(d->cfg.kube, "GET", path, NULL, &code, &reply, err) != ERR_OK)
		return err->code;
	if (code != 200 && code != 404)
		error_set(err, ERR_UNAVAILABLE, "GET %s: HTTP %ld: %s", path, code,
			  kubeapi_message(reply));
	json_decref(reply);
	*there = code == 200;
	return code == 200 || code == 404 ? ERR_OK : ERR_UNAVAILABLE;
}

/* ---- jobs ---------------------------------------------------------------- */

static const char *reason_of(enum error_code code)
{
	switch (code) {
	case ERR_INVALID:
		return "InvalidSpec";
	case ERR_PERMISSION:
	case ERR_UNAUTHENTICATED:
		return "PermissionDenied";
	case ERR_NOT_FOUND:
		return "NotFound";
	case ERR_EXISTS:
		return "Conflict";
	case ERR_TIMEOUT:
	case ERR_NO_SPACE:
		return "LimitReached";
	default:
		return "Unavailable";
	}
}

/* A job failed: Failed, an event, a retry with backoff. */
static void failed(struct datasets *d, const struct dsobject *o, const char *key,
		   const struct error *err)
{
	log_warn("Dataset failed", LOG_S("namespace", o->ns), LOG_S("dataset", o->name),
		 LOG_S("cause", err->msg));
	set_phase(d, o, DSOBJECT_FAILED, reason_of(err->code), err->msg, NULL);
	event(d, o, "Warning", reason_of(err->code), err->msg);
	pthread_mutex_lock(&d->mu);
	again(d, key, 0, true);
	pthread_mutex_unlock(&d->mu);
}

/*
 * Whether o may be registered with the credentials it gets: its own
 * Secret's always for an object store; the cluster's (no secretRef) where a
 * rule allows its namespace the source (else ERR_PERMISSION saying so). A
 * file:// source is a directory of meta's and the workers' hosts, which no
 * Secret opens: a rule must allow it, secretRef or not, both as written and
 * resolved (a link under an allowed directory may lead to another's). A
 * claim's mirror is its StorageClass's, which the administrator wrote.
 */
static enum error_code credentials_allowed(const struct datasets *d, const struct dsobject *o,
					   struct error *err)
{
	bool file = strncmp(o->source, "file://", 7) == 0;
	enum error_code rc;

	if (dsobject_is_mirror(o, d->mirror_ns) || (*o->secret && !file))
		return ERR_OK;
	rc = credpolicy_check(d->policy, o->ns, o->source, err);
	if (rc != ERR_OK || !file)
		return rc;
	return credpolicy_check_resolved(d->policy, o->ns, o->source, err);
}

/* o may not use the cluster's credentials (why): a registration made
 * before the rule went is deleted, and o is Failed with no retry, since
 * only its spec (a secretRef) or the rules (at meta's next start) change
 * the verdict, and either makes the controller look at it again. */
static void refuse(struct datasets *d, const struct dsobject *o, const char *dataset,
		   const char *key, const struct error *why)
{
	struct error err;
	enum error_code rc = registry_delete(d->cfg.registry, dataset, &err);

	if (rc != ERR_OK && rc != ERR_NOT_FOUND) {
		failed(d, o, key, &err);
		return;
	}
	prune_credentials(d, dataset, NULL);
	log_warn("Dataset not registered: the cluster's credentials are not allowed",
		 LOG_S("namespace", o->ns), LOG_S("dataset", o->name), LOG_S("source", o->source),
		 LOG_S("unregistered", rc == ERR_OK ? "yes" : "no"));
	set_phase(d, o, DSOBJECT_FAILED, NOT_ALLOWED, why->msg, NULL);
	event(d, o, "Warning", NOT_ALLOWED, why->msg);
	pthread_mutex_lock(&d->mu);
	dsqueue_settled(d->queue, key);
	pthread_mutex_unlock(&d->mu);
}

static bool same_str(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

/* Whether b lists the same objects as a, into the same blocks. */
static bool same_place(const Granary__V1__DatasetSpec *a, const Granary__V1__DatasetSpec *b)
{
	uint64_t ab = a->options ? a->options->block_size : 0;
	uint64_t bb = b->options ? b->options->block_size : 0;

	return same_str(a->source_uri, b->source_uri) && same_str(a->endpoint, b->endpoint) &&
	       same_str(a->region, b->region) && same_str(a->credentials_ref, b->credentials_ref) &&
	       ab == bb;
}

static void job_register(struct datasets *d, const struct dsobject *o, const char *dataset,
			 const char *key, bool refresh)
{
	Granary__V1__DatasetSpec spec;
	Granary__V1__DatasetOptions opts;
	struct registry_dataset rd = { 0 };
	char path[4200] = "", msg[600];
	struct error err;
	enum error_code rc;

	if (credentials_allowed(d, o, &err) != ERR_OK) {
		refuse(d, o, dataset, key, &err);
		return;
	}
	snprintf(msg, sizeof(msg), "%s %s", refresh ? "listing again" : "listing", o->source);
	set_phase(d, o, refresh ? DSOBJECT_REFRESHING : DSOBJECT_LISTING,
		  refresh ? "Refreshing" : "Listing", msg, NULL);
	cred_ref(d, o, dataset, path, sizeof(path));
	if (*path) {
		rc = write_credentials(d, o, dataset, path, &err);
		if (rc != ERR_OK) {
			failed(d, o, key, &err);
			return;
		}
	}
	dsobject_spec(o, dataset, path, &spec, &opts);
	if (refresh) {
		rc = registry_refresh(d->cfg.registry, dataset, &rd, &err);
	} else {
		struct registry_dataset cur = { 0 };
		struct error ignored;

		if (registry_get(d->cfg.registry, dataset, &cur, &ignored) == ERR_OK &&
		    cur.state == REGISTRY_READY && same_place(&spec, cur.spec)) {
			/* Only options that change no block nor the listing
			 * (cachePolicy, pin, preload, preloadPrefixes): changed in place, the
			 * snapshot and the workers' cached blocks kept. */
			rc = registry_set_options(d->cfg.registry, dataset, &opts, &rd, &err);
		} else {
			rc = registry_register(d->cfg.registry, &spec, &rd, &err);
			if (rc == ERR_EXISTS) {
				/* Region or secretRef changed: listed again. The
				 * registry changes options only in place, and
				 * new credentials are best tried at once. */
				log_info("Dataset registered again", LOG_S("dataset", dataset),
					 LOG_S("cause", err.msg));
				rc = registry_delete(d->cfg.registry, dataset, &err);
				if (rc == ERR_OK)
					rc = registry_register(d->cfg.registry, &spec, &rd, &err);
			}
		}
		registry_dataset_release(&cur);
	}
	if (rc == ERR_OK && !dsobject_is_mirror(o, d->mirror_ns))
		rc = ensure_claim(d, o, dataset, rd.totals.bytes, &err);
	if (rc != ERR_OK) {
		registry_dataset_release(&rd);
		failed(d, o, key, &err);
		return;
	}
	{
		json_t *st = totals(&rd, dsobject_is_mirror(o, d->mirror_ns) ? NULL : o->name);

		/* A registration lists the source as a refresh would: a refresh
		 * asked for at creation is done, not a second listing. */
		if (refresh || *o->refresh)
			json_object_set_new(st, "refreshed", json_string(o->refresh));
		snprintf(msg, sizeof(msg), "generation %llu: %llu files",
			 (unsigned long long)rd.generation, (unsigned long long)rd.totals.files);
		set_phase(d, o, DSOBJECT_READY, "Ready", msg, st);
	}
	/* The registration names path now: the files of other Secrets go (a
	 * refresh lists with the credentials_ref registered, kept). */
	if (!refresh)
		prune_credentials(d, dataset, *o->secret ? o->secret : NULL);
	event(d, o, "Normal", refresh ? "Refreshed" : "Registered", msg);
	log_info(refresh ? "Dataset refreshed" : "Dataset registered", LOG_S("namespace", o->ns),
		 LOG_S("dataset", o->name), LOG_U("generation", rd.generation),
		 LOG_U("files", rd.totals.files), LOG_U("bytes", rd.totals.bytes));
	registry_dataset_release(&rd);
	pthread_mutex_lock(&d->mu);
	dsqueue_settled(d->queue, key);
	pthread_mutex_unlock(&d->mu);
}

static void job_delete(struct datasets *d, const struct dsobject *o, const char *dataset,
		       const char *key)
{
	char users[1024], path[4200], pv_path[400], pv[300], msg[1200];
	struct error err;
	enum error_code rc;
	bool claim_there = false, pv_there = false;

	/* A mirror goes when its volume does: the claim is already gone. */
	if (dsobject_is_mirror(o, d->mirror_ns))
		users[0] = '\0', rc = ERR_OK;
	else
		rc = claim_users(d, o, users, sizeof(users), &err);
	if (rc == ERR_OK && *users) {
		snprintf(msg, sizeof(msg),
			 "deletion waits: pods still mount claim %s: %s", o->name, users);
		patch_status(d, o, json_pack("{s:s, s:s}", "reason", "InUse", "message", msg));
		event(d, o, "Warning", "InUse", msg);
		pthread_mutex_lock(&d->mu);
		again(d, key, IN_USE_RETRY_MS, false);
		pthread_mutex_unlock(&d->mu);
		return;
	}
	if (rc == ERR_OK && !dsobject_is_mirror(o, d->mirror_ns)) {
		snprintf(path, sizeof(path), "/api/v1/namespaces/%s/persistentvolumeclaims/%s", o->ns,
			 o->name);
		snprintf(pv, sizeof(pv), "granary-%s", dataset);
		snprintf(pv_path, sizeof(pv_path), "/api/v1/persistentvolumes/%s", pv);
		rc = delete_path(d, path, &err);
		if (rc == ERR_OK)
			rc = delete_path(d, pv_path, &err);
		if (rc == ERR_OK)
			rc = exists_path(d, path, &claim_there, &err);
		if (rc == ERR_OK)
			rc = exists_path(d, pv_path, &pv_there, &err);
	}
	if (rc == ERR_OK && (claim_there || pv_there)) {
		/* The registration outlives the claim: a pod that took the claim
		 * after the look at its users keeps a working mount, and the
		 * Dataset goes only once its claim and volume have. */
		snprintf(msg, sizeof(msg), "deletion waits: %s %s is terminating",
			 claim_there ? "PersistentVolumeClaim" : "PersistentVolume",
			 claim_there ? o->name : pv);
		patch_status(d, o, json_pack("{s:s, s:s}", "reason", "Terminating", "message", msg));
		pthread_mutex_lock(&d->mu);
		again(d, key, TERMINATING_RETRY_MS, false);
		pthread_mutex_unlock(&d->mu);
		return;
	}
	if (rc == ERR_OK) {
		rc = registry_delete(d->cfg.registry, dataset, &err);
		if (rc == ERR_NOT_FOUND)
			rc = ERR_OK;
	}
	if (rc == ERR_OK) {
		prune_credentials(d, dataset, NULL);
		rc = set_finalizer(d, o->ns, o->name, false, &err);
	}
	if (rc != ERR_OK) {
		failed(d, o, key, &err);
		return;
	}
	log_info("Dataset deleted", LOG_S("namespace", o->ns), LOG_S("dataset", o->name));
	pthread_mutex_lock(&d->mu);
	dsqueue_settled(d->queue, key);
	pthread_mutex_unlock(&d->mu);
}

static void *job_main(void *arg)
{
	struct job *j = arg;
	struct datasets *d = j->d;
	struct dsobject o;
	char dataset[DSOBJECT_NAME_MAX + 1], key[DSQUEUE_KEY_LEN];
	struct error err;

	if (dsobject_parse(j->obj, &o, &err) == ERR_OK &&
	    dsobject_dataset_name(&o, d->mirror_ns, dataset, sizeof(dataset), &err) == ERR_OK) {
		snprintf(key, sizeof(key), "%s/%s", o.ns, o.name);
		if (j->kind == JOB_DELETE)
			job_delete(d, &o, dataset, key);
		else
			job_register(d, &o, dataset, key, j->kind == JOB_REFRESH);
		pthread_mutex_lock(&d->mu);
		dsqueue_finished(d->queue, key, retry_now_ms());
		pthread_mutex_unlock(&d->mu);
	}
	json_decref(j->obj);
	pthread_mutex_lock(&d->mu);
	d->jobs--;
	pthread_mutex_unlock(&d->mu);
	free(j);
	return NULL;
}

/* Starts kind for obj unless a job runs for it already (its end looks at
 * the object again) or max_jobs do (then it is looked at again shortly). */
static void start_job(struct datasets *d, const char *key, enum job_kind kind, json_t *obj)
{
	struct job *j = NULL;
	pthread_attr_t attr;
	pthread_t t;

	pthread_mutex_lock(&d->mu);
	if (dsqueue_running(d->queue, key)) {
		pthread_mutex_unlock(&d->mu);
		return;
	}
	if (d->jobs >= d->cfg.max_jobs || !(j = calloc(1, sizeof(*j))) ||
	    !dsqueue_start(d->queue, key)) {
		free(j);
		again(d, key, 1000, false);
		pthread_mutex_unlock(&d->mu);
		return;
	}
	j->d = d;
	j->kind = kind;
	j->obj = json_incref(obj);
	d->jobs++;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, job_main, j) != 0) {
		dsqueue_finished(d->queue, key, retry_now_ms());
		again(d, key, 1000, false);
		d->jobs--;
		json_decref(j->obj);
		free(j);
	}
	pthread_attr_destroy(&attr);
	pthread_mutex_unlock(&d->mu);
}

/* ---- reconciling one object ---------------------------------------------- */

/* Status of a dataset already registered, when it does not say so yet. */
static void report_ready(struct datasets *d, const struct dsobject *o,
			 const struct registry_dataset *rd)
{
	char msg[200];

	if (strcmp(o->phase, "Ready") == 0 && o->observed == o->generation &&
	    o->snapshot == rd->generation)
		return;
	snprintf(msg, sizeof(msg), "generation %llu: %llu files", (unsigned long long)rd->generation,
		 (unsigned long long)rd->totals.files);
	set_phase(d, o, DSOBJECT_READY, "Ready", msg,
		  totals(rd, dsobject_is_mirror(o, d->mirror_ns) ? NULL : o->name));
}

/* Whether s is what o asks for, credentials_ref cred (cred_ref) included. */
static bool same_spec(const struct dsobject *o, const char *cred,
		      const Granary__V1__DatasetSpec *s)
{
	const Granary__V1__DatasetOptions *opt = s->options;

	if (!opt || opt->n_preload_prefixes != o->n_preload_prefixes)
		return false;
	for (size_t i = 0; i < o->n_preload_prefixes; i++)
		if (strcmp(opt->preload_prefixes[i], o->preload_prefixes[i]) != 0)
			return false;
	return opt->block_size == o->block_size &&
	       (int)opt->cache_policy == o->cache_policy && opt->pin == o->pin &&
	       opt->preload == o->preload && strcmp(s->source_uri, o->source) == 0 &&
	       strcmp(s->endpoint ? s->endpoint : "", o->endpoint) == 0 &&
	       strcmp(s->region ? s->region : "", o->region) == 0 &&
	       strcmp(s->credentials_ref ? s->credentials_ref : "", cred) == 0;
}

/* Whether obj's status says already that o's spec was refused the
 * cluster's credentials (refuse). */
static bool refusal_shown(json_t *obj, const struct dsobject *o)
{
	const char *reason =
		json_string_value(json_object_get(json_object_get(obj, "status"), "reason"));

	return strcmp(o->phase, "Failed") == 0 && o->observed == o->generation && reason &&
	       strcmp(reason, NOT_ALLOWED) == 0;
}

/* Whether key waits for its retry after a failure (failed, again). */
static bool backing_off(struct datasets *d, const char *key)
{
	bool waiting;

	pthread_mutex_lock(&d->mu);
	waiting = dsqueue_backing_off(d->queue, key, retry_now_ms());
	pthread_mutex_unlock(&d->mu);
	return waiting;
}

static void reconcile(struct datasets *d, json_t *obj)
{
	struct dsobject o;
	struct registry_dataset rd = { 0 };
	char dataset[DSOBJECT_NAME_MAX + 1], key[DSQUEUE_KEY_LEN], cred[4200];
	struct error err;
	enum error_code rc;

	write_unwritten(d, obj);
	if (dsobject_parse(obj, &o, &err) != ERR_OK) {
		log_warn("ignoring a Dataset", LOG_S("cause", err.msg));
		return;
	}
	snprintf(key, sizeof(key), "%s/%s", o.ns, o.name);
	if (dsobject_dataset_name(&o, d->mirror_ns, dataset, sizeof(dataset), &err) != ERR_OK) {
		if (strcmp(o.phase, "Failed") != 0)
			set_phase(d, &o, DSOBJECT_FAILED, "InvalidSpec", err.msg, NULL);
		return;
	}
	if (o.deleting) {
		if (o.has_finalizer)
			start_job(d, key, JOB_DELETE, obj);
		return;
	}
	if (!o.has_finalizer) {
		if (set_finalizer(d, o.ns, o.name, true, &err) != ERR_OK) {
			log_warn("cannot add the Dataset finalizer", LOG_S("dataset", key),
				 LOG_S("cause", err.msg));
			pthread_mutex_lock(&d->mu);
			again(d, key, 0, true);
			pthread_mutex_unlock(&d->mu);
		}
		/* The update comes back as a watch event. */
		return;
	}
	/* A spec that failed waits for its retry: an event that changes no
	 * spec (the Failed status itself, a report, a label) starts nothing,
	 * or the backoff would not hold. */
	if (strcmp(o.phase, "Failed") == 0 && o.observed == o.generation && backing_off(d, key))
		return;
	rc = registry_get(d->cfg.registry, dataset, &rd, &err);
	cred_ref(d, &o, dataset, cred, sizeof(cred));
	if (credentials_allowed(d, &o, &err) != ERR_OK) {
		/* Refused: the job deletes a registration made before the
		 * rule went and says why, once. */
		if (rc == ERR_OK || !refusal_shown(obj, &o))
			start_job(d, key, JOB_REGISTER, obj);
	} else if (rc != ERR_OK ||
		   /* A claim's mirror never replaces what CreateVolume
		    * registered (with the provisioner Secret); it only
		    * stands in when meta lost it. */
		   (!dsobject_is_mirror(&o, d->mirror_ns) && !same_spec(&o, cred, rd.spec))) {
		if (rc == ERR_OK && rd.state != REGISTRY_READY) {
			/* Being built (by a job, or a node staging it):
			 * looked at again when that is done. */
			registry_dataset_release(&rd);
			pthread_mutex_lock(&d->mu);
			again(d, key, 2000, false);
			pthread_mutex_unlock(&d->mu);
			return;
		}
		start_job(d, key, JOB_REGISTER, obj);
	} else if (rd.state == REGISTRY_READY && !dsobject_is_mirror(&o, d->mirror_ns) &&
		   strcmp(o.phase, "Ready") != 0 && o.snapshot == 0) {
		/* Registered but never Ready: the claim comes after the
		 * registration (ensure_claim), and one that failed (a claim of
		 * the name that is someone else's) left the dataset registered.
		 * The job lists nothing again (the options are the same) and
		 * makes the claim. */
		start_job(d, key, JOB_REGISTER, obj);
	} else if (strcmp(o.refresh, o.refreshed) != 0) {
		start_job(d, key, JOB_REFRESH, obj);
	} else if (rd.state == REGISTRY_READY) {
		report_ready(d, &o, &rd);
	}
	registry_dataset_release(&rd);
}

/* ---- list and watch ------------------------------------------------------ */

static enum error_code list_all(struct datasets *d, struct error *err)
{
	json_t *list = NULL, *item;
	const char *rv;
	size_t i;
	long code;

	if (kubeapi_list(d->cfg.kube, API "/datasets", &code, &list, err) != ERR_OK)
		return err->code;
	if (code != 200) {
		error_set(err, code == 403 ? ERR_PERMISSION : ERR_UNAVAILABLE,
			  "list Datasets: HTTP %ld: %s", code, kubeapi_message(list));
		json_decref(list);
		return err->code;
	}
	json_array_foreach(json_object_get(list, "items"), i, item) {
		/* Items of a list carry no apiVersion and kind. */
		reconcile(d, item);
	}
	rv = json_string_value(json_object_get(json_object_get(list, "metadata"),
					       "resourceVersion"));
	free(d->rv);
	d->rv = rv ? strdup(rv) : NULL;
	log_info("Datasets listed", LOG_U("count", json_array_size(json_object_get(list, "items"))),
		 LOG_S("resource_version", rv ? rv : ""));
	json_decref(list);
	return ERR_OK;
}

static bool on_event(const char *type, json_t *obj, void *arg)
{
	struct datasets *d = arg;
	const char *rv = json_string_value(
		json_object_get(json_object_get(obj, "metadata"), "resourceVersion"));

	if (strcmp(type, "ERROR") == 0) {
		/* 410 Gone: the resourceVersion is too old; list again. */
		log_info("Dataset watch ended by the apiserver",
			 LOG_S("cause", kubeapi_message(obj)));
		free(d->rv);
		d->rv = NULL;
		return false;
	}
	if (rv) {
		char *copy = strdup(rv);

		if (copy) {
			free(d->rv);
			d->rv = copy;
		}
	}
	if (strcmp(type, "ADDED") == 0 || strcmp(type, "MODIFIED") == 0)
		reconcile(d, obj);
	return !stop_now(d);
}

/* The watch ends for SIGTERM, and when a retry or a report falls due. */
static bool watch_stop(void *arg)
{
	struct datasets *d = arg;
	bool due;

	if (stop_now(d))
		return true;
	pthread_mutex_lock(&d->mu);
	due = (d->next_due_ms && retry_now_ms() >= d->next_due_ms) ||
	      retry_now_ms() >= d->report_due_ms;
	pthread_mutex_unlock(&d->mu);
	return due;
}

/* The objects due for another look, read afresh. Returns the ms until the
 * next one is due (WATCH_MAX_S s when none). */
static uint64_t run_due(struct datasets *d)
{
	char due[64][DSQUEUE_KEY_LEN];
	size_t n;
	uint64_t now = retry_now_ms(), next;

	pthread_mutex_lock(&d->mu);
	n = dsqueue_take_due(d->queue, now, due, 64, &next);
	d->next_due_ms = next;
	pthread_mutex_unlock(&d->mu);
	for (size_t i = 0; i < n; i++) {
		char path[600], *slash = strchr(due[i], '/');
		json_t *obj = NULL;
		struct error err;
		long code;

		*slash = '\0';
		object_path(due[i], slash + 1, "", path, sizeof(path));
		if (kubeapi_call(d->cfg.kube, "GET", path, NULL, &code, &obj, &err) == ERR_OK &&
		    code == 200) {
			reconcile(d, obj);
		} else if (code == 404) {
			*slash = '/';
			pthread_mutex_lock(&d->mu);
			dsqueue_forget(d->queue, due[i]);
			json_object_del(d->unwritten, due[i]);
			pthread_mutex_unlock(&d->mu);
		} else {
			*slash = '/';
			pthread_mutex_lock(&d->mu);
			again(d, due[i], 0, true);
			pthread_mutex_unlock(&d->mu);
		}
		json_decref(obj);
	}
	if (n)
		return 0;
	return next && next - now < WATCH_MAX_S * 1000ull ? next - now : WATCH_MAX_S * 1000ull;
}

/* The entry of name in d->reported, added when missing (NULL: no memory). */
static struct reported *reported(struct datasets *d, const char *name)
{
	struct reported *grown;

	for (size_t i = 0; i < d->nreported; i++)
		if (strcmp(d->reported[i].name, name) == 0)
			return &d->reported[i];
	grown = realloc(d->reported, (d->nreported + 1) * sizeof(*grown));
	if (!grown)
		return NULL;
	d->reported = grown;
	memset(&grown[d->nreported], 0, sizeof(*grown));
	snprintf(grown[d->nreported].name, sizeof(grown->name), "%s", name);
	return &grown[d->nreported++];
}

/* Cached bytes of each registered Dataset, in all and per node, written
 * to status when they changed since the last report. */
static void report_cached(struct datasets *d)
{
	struct registry_dataset *list = NULL;
	struct membership_cached *nodes = calloc(NODES_MAX, sizeof(*nodes));
	struct error err;
	size_t n = 0, kept = 0;

	if (!nodes || registry_list(d->cfg.registry, &list, &n, &err) != ERR_OK) {
		free(nodes);
		return;
	}
	for (size_t i = 0; i < d->nreported; i++)
		d->reported[i].seen = false;
	for (size_t i = 0; i < n; i++) {
		const char *name = list[i].spec->name, *dot = strchr(name, '.');
		struct dsobject o = { 0 };
		char ns[64], size[32], pct[16];
		struct reported *r;
		uint64_t cached, bytes = list[i].totals.bytes;
		size_t nn = 0;
		json_t *st, *per;

		if (list[i].state != REGISTRY_READY)
			continue;
		if (!dot) {
			/* A claim's volume: its mirror, if any (else a 404). */
			if (!d->mirror_ns)
				continue;
			o.ns = d->mirror_ns;
			o.name = name;
		} else {
			if (dot - name >= (ptrdiff_t)sizeof(ns))
				continue;
			snprintf(ns, sizeof(ns), "%.*s", (int)(dot - name), name);
			o.ns = ns;
			o.name = dot + 1;
		}
		cached = membership_cached(d->cfg.membership, name, nodes, NODES_MAX, &nn);
		if (cached > bytes)
			cached = bytes;
		r = reported(d, name);
		if (!r)
			continue;
		r->seen = true;
		per = json_array();
		{
			/* Preload: Failed on any node, else Running on any, else
			 * Done; blocks summed over the nodes. */
			uint64_t done = 0, total = 0;
			const char *state = NULL;
			char figures[sizeof(r->figures)];

			for (size_t j = 0; j < nn; j++) {
				json_t *node = json_pack("{s:s, s:I}", "node", nodes[j].worker,
							 "cachedBytes", (json_int_t)nodes[j].bytes);
				const char *p = nodes[j].preload;

				if (*p) {
					json_object_set_new(node, "preload", json_string(p));
					done += nodes[j].preload_done;
					total += nodes[j].preload_total;
					if (!strcmp(p, "failed"))
						state = "Failed";
					else if (!strcmp(p, "running") && (!state || strcmp(state, "Failed")))
						state = "Running";
					else if (!state)
						state = "Done";
				}
				json_array_append_new(per, node);
			}
			snprintf(figures, sizeof(figures), "%llu %s %llu/%llu", (unsigned long long)cached,
				 state ? state : "-", (unsigned long long)done,
				 (unsigned long long)total);
			if (strcmp(figures, r->figures) == 0) {
				json_decref(per);
				continue;
			}
			snprintf(r->figures, sizeof(r->figures), "%s", figures);
			dsobject_size(cached, size, sizeof(size));
			snprintf(pct, sizeof(pct), "%llu%%",
				 (unsigned long long)(bytes ? cached * 100 / bytes : 100));
			st = json_pack("{s:I, s:s, s:s, s:o}", "cachedBytes", (json_int_t)cached,
				       "cached", size, "cachedPercent", pct, "nodes", per);
			if (state)
				json_object_set_new(
					st, "preload",
					json_pack("{s:s, s:I, s:I}", "state", state, "blocksDone",
						  (json_int_t)done, "blocksTotal", (json_int_t)total));
		}
		/* Not written (the apiserver away, a 429): kept, and written
		 * at the Dataset's next look (patch_status). */
		patch_status(d, &o, st);
	}
	/* Forget the datasets that are gone. */
	for (size_t i = 0; i < d->nreported; i++)
		if (d->reported[i].seen)
			d->reported[kept++] = d->reported[i];
	d->nreported = kept;
	registry_list_free(list, n);
	free(nodes);
}

static void *controller_main(void *arg)
{
	struct datasets *d = arg;
	uint64_t backoff = 0, wait_ms = 0;

	while (!stop_now(d)) {
		struct error err;
		long code = 0;
		char path[256];
		unsigned timeout;

		if (!d->rv && list_all(d, &err) != ERR_OK) {
			backoff = kubeapi_backoff_ms(backoff);
			log_warn("cannot list Datasets", LOG_S("cause", err.msg),
				 LOG_U("retry_ms", backoff));
			stopper_wait(&d->stop, backoff);
			continue;
		}
		wait_ms = run_due(d);
		if (retry_now_ms() >= d->report_due_ms) {
			report_cached(d);
			d->report_due_ms = retry_now_ms() + REPORT_EVERY_MS;
		}
		if (wait_ms > d->report_due_ms - retry_now_ms())
			wait_ms = d->report_due_ms - retry_now_ms();
		if (!d->rv)
			continue;
		timeout = (unsigned)(wait_ms / 1000);
		if (timeout < 1)
			timeout = 1;
		snprintf(path, sizeof(path),
			 API "/datasets?watch=1&allowWatchBookmarks=true&resourceVersion=%s&timeoutSeconds=%u",
			 d->rv, timeout);
		if (kubeapi_watch(d->cfg.kube, path, timeout, on_event, d, watch_stop, &code,
				  &err) != ERR_OK) {
			backoff = kubeapi_backoff_ms(backoff);
			log_warn("Dataset watch broke", LOG_S("cause", err.msg),
				 LOG_U("retry_ms", backoff));
			stopper_wait(&d->stop, backoff);
			continue;
		}
		backoff = 0;
		if (code == 410) {
			free(d->rv);
			d->rv = NULL;
		}
	}
	return NULL;
}

enum error_code datasets_start(const struct datasets_config *cfg, struct datasets **out,
			       struct error *err)
{
	struct datasets *d = calloc(1, sizeof(*d));

	if (!d || !(d->cred_dir = strdup(cfg->credentials_dir)) ||
	    !(d->driver = strdup(cfg->driver)) ||
	    (cfg->mirror_ns && !(d->mirror_ns = strdup(cfg->mirror_ns)))) {
		if (d) {
			free(d->cred_dir);
			free(d->driver);
		}
		free(d);
		return error_set(err, ERR_NOMEM, "out of memory");
	}
	d->cfg = *cfg;
	d->cfg.credentials_dir = d->cred_dir;
	d->cfg.driver = d->driver;
	if (!d->cfg.max_jobs)
		d->cfg.max_jobs = 4;
	pthread_mutex_init(&d->mu, NULL);
	stopper_init(&d->stop);
	if (!(d->queue = dsqueue_new()) || !(d->unwritten = json_object())) {
		datasets_stop(d, 0);
		return error_set(err, ERR_NOMEM, "out of memory");
	}
	if (credpolicy_parse(cfg->cluster_credentials, &d->policy, err) != ERR_OK) {
		datasets_stop(d, 0);
		return err->code;
	}
	if (fileio_mkdirs(d->cred_dir, 0700, err) != ERR_OK) {
		datasets_stop(d, 0);
		return err->code;
	}
	if (pthread_create(&d->thread, NULL, controller_main, d) != 0) {
		datasets_stop(d, 0);
		return error_set(err, ERR_NOMEM, "cannot start the Dataset controller thread");
	}
	d->started = true;
	*out = d;
	return ERR_OK;
}

bool datasets_stop(struct datasets *d, uint64_t wait_ms)
{
	uint64_t until = retry_now_ms() + wait_ms;
	bool done;

	if (!d)
		return true;
	stopper_stop(&d->stop);
	if (d->started)
		pthread_join(d->thread, NULL);
	pthread_mutex_lock(&d->mu);
	while (d->jobs && retry_now_ms() < until) {
		pthread_mutex_unlock(&d->mu);
		retry_sleep_ms(50);
		pthread_mutex_lock(&d->mu);
	}
	done = d->jobs == 0;
	pthread_mutex_unlock(&d->mu);
	/* A job still listing uses d: left as it is for the exit. */
	if (!done)
		return false;
	pthread_mutex_destroy(&d->mu);
	stopper_release(&d->stop);
	free(d->rv);
	free(d->reported);
	dsqueue_free(d->queue);
	json_decref(d->unwritten);
	credpolicy_free(d->policy);
	free(d->cred_dir);
	free(d->driver);
	free(d->mirror_ns);
	free(d);
	return true;
}
