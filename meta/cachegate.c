/*
 * cachegate.c - pods held back until their datasets are cached
 * (cachegate.h).
 */
#include "meta/cachegate.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/retry.h"
#include "meta/dsobject.h"
#include "meta/stopper.h"

#define DATASETS_API "/apis/" DSOBJECT_GROUP "/" DSOBJECT_VERSION "/namespaces/%s/datasets/%s"
/* The pods labelled that are not scheduled yet, as a gated one never is:
 * a pod the gate let go leaves them when it is scheduled (a DELETED event
 * of the watch), where the label would keep every pod ever gated. */
#define GATED_PODS \
	"/api/v1/pods?labelSelector=" CACHEGATE_LABEL "&fieldSelector=spec.nodeName%3D"

/* --- judging one pod ------------------------------------------------------- */

static const char *str_at(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

enum error_code cachegate_ask(json_t *pod, struct cachegate_ask *out, struct error *err)
{
	json_t *meta = json_object_get(pod, "metadata");
	const char *pct = str_at(json_object_get(meta, "labels"), CACHEGATE_LABEL);
	const char *secs = str_at(json_object_get(meta, "annotations"), CACHEGATE_TIMEOUT_ANNOTATION);
	char *end;
	unsigned long long v;

	v = strtoull(pct, &end, 10);
	if (!*pct || *end || v < 1 || v > 100)
		return error_set(err, ERR_INVALID,
				 "label %s: '%.32s' is not a percentage from 1 to 100", CACHEGATE_LABEL,
				 pct);
	out->percent = (unsigned)v;
	out->timeout_s = CACHEGATE_TIMEOUT_S;
	if (!*secs)
		return ERR_OK;
	v = strtoull(secs, &end, 10);
	if (*end || v < 1 || v > 7 * 86400)
		return error_set(err, ERR_INVALID,
				 "annotation %s: '%.32s' is not a number of seconds from 1 to 604800",
				 CACHEGATE_TIMEOUT_ANNOTATION, secs);
	out->timeout_s = v;
	return ERR_OK;
}

int cachegate_index(json_t *pod)
{
	json_t *gates = json_object_get(json_object_get(pod, "spec"), "schedulingGates"), *g;
	size_t i;

	json_array_foreach(gates, i, g)
		if (strcmp(str_at(g, "name"), CACHEGATE_GATE) == 0)
			return (int)i;
	return -1;
}

size_t cachegate_claims(json_t *pod, const char **out, size_t max)
{
	json_t *vols = json_object_get(json_object_get(pod, "spec"), "volumes"), *v;
	size_t i, n = 0;

	json_array_foreach(vols, i, v) {
		const char *claim = str_at(json_object_get(v, "persistentVolumeClaim"), "claimName");

		if (*claim && n < max)
			out[n++] = claim;
	}
	return n;
}

/* Appends to msg (a "; "-separated list), never past size. */
static void say(char *msg, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *msg, size_t size, const char *fmt, ...)
{
	size_t at = strlen(msg);
	va_list ap;

	if (at && at + 2 < size) {
		memcpy(msg + at, "; ", 3);
		at += 2;
	}
	va_start(ap, fmt);
	vsnprintf(msg + at, size - at, fmt, ap);
	va_end(ap);
}

enum cachegate_verdict cachegate_judge(const struct cachegate_ask *ask,
				       const char *const *claims, json_t *const *datasets,
				       size_t n, uint64_t waited_s, const char **reason, char *msg,
				       size_t size)
{
	size_t found = 0;
	bool short_of = false;

	msg[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		json_t *st = json_object_get(datasets[i], "status");
		const char *phase = str_at(st, "phase");
		const char *name = str_at(json_object_get(datasets[i], "metadata"), "name");
		json_int_t bytes = json_integer_value(json_object_get(st, "bytes"));
		json_int_t cached = json_integer_value(json_object_get(st, "cachedBytes"));
		unsigned pct;

		if (!datasets[i])
			continue; /* not a Dataset's claim */
		found++;
		if (strcmp(phase, "Failed") == 0) {
			*reason = "DatasetFailed";
			msg[0] = '\0';
			say(msg, size, "Dataset %s (claim %s) is Failed: %s; scheduling gate removed",
			    name, claims[i], str_at(st, "message"));
			return CACHEGATE_OPEN_WARNING;
		}
		if (strcmp(phase, "Ready") != 0 && strcmp(phase, "Refreshing") != 0) {
			say(msg, size, "Dataset %s is %s", name, *phase ? phase : "Pending");
			short_of = true;
			continue;
		}
		if (cached > bytes)
			cached = bytes;
		pct = bytes > 0 ? (unsigned)(cached * 100 / bytes) : 100;
		say(msg, size, "Dataset %s %u%% cached", name, pct);
		if (pct < ask->percent)
			short_of = true;
	}
	if (!found) {
		*reason = "NoDataset";
		snprintf(msg, size, "the pod mounts no Dataset's claim; scheduling gate removed");
		return CACHEGATE_OPEN_WARNING;
	}
	say(msg, size, "%u%% asked", ask->percent);
	if (!short_of) {
		*reason = "DatasetCached";
		say(msg, size, "scheduling gate removed");
		return CACHEGATE_OPEN;
	}
	if (waited_s >= ask->timeout_s) {
		*reason = "CacheWaitTimedOut";
		say(msg, size, "waited %llu s (%s); scheduling gate removed",
		    (unsigned long long)waited_s, CACHEGATE_TIMEOUT_ANNOTATION);
		return CACHEGATE_OPEN_WARNING;
	}
	*reason = "WaitingForCache";
	return CACHEGATE_WAIT;
}

/* --- the controller ---------------------------------------------------------- */

struct cachegate {
	struct cachegate_config cfg;
	pthread_t thread;
	json_t *pods;    /* "ns/name" -> the pod, while it carries the gate */
	json_t *told;    /* "ns/name" -> true once its waiting event is out */
	char *rv;        /* resourceVersion to watch from; NULL: list again */
	struct stopper stop;     /* cachegate_stop: ends the backoffs at once */
	atomic_uint_least64_t judged; /* verdicts so far (cachegate_judged) */
};

static bool stop_now(struct cachegate *g)
{
	return stopper_stopped(&g->stop) || g->cfg.stop();
}

static void pod_key(json_t *pod, char *out, size_t size)
{
	json_t *meta = json_object_get(pod, "metadata");

	snprintf(out, size, "%s/%s", str_at(meta, "namespace"), str_at(meta, "name"));
}

/* Follows one pod's state: kept while it carries the gate. */
static void track(struct cachegate *g, json_t *pod, bool deleted)
{
	char key[600];

	pod_key(pod, key, sizeof(key));
	if (deleted || cachegate_index(pod) < 0) {
		json_object_del(g->pods, key);
		json_object_del(g->told, key);
		return;
	}
	json_object_set(g->pods, key, pod);
}

static void set_rv(struct cachegate *g, json_t *obj)
{
	const char *rv = str_at(json_object_get(obj, "metadata"), "resourceVersion");

	if (*rv) {
		free(g->rv);
		g->rv = strdup(rv);
	}
}

static enum error_code list_pods(struct cachegate *g, struct error *err)
{
	json_t *list = NULL, *item, *tmp;
	const char *key;
	size_t i;
	long code = 0;

	if (kubeapi_list(g->cfg.kube, GATED_PODS, &code, &list, err) != ERR_OK)
		return err->code;
	if (code != 200) {
		error_set(err, code == 403 ? ERR_PERMISSION : ERR_UNAVAILABLE,
			  "list pods labelled %s: HTTP %ld: %s", CACHEGATE_LABEL, code,
			  kubeapi_message(list));
		json_decref(list);
		return err->code;
	}
	json_object_clear(g->pods);
	json_array_foreach(json_object_get(list, "items"), i, item)
		track(g, item, false);
	/* Pods deleted while no watch ran: their events forgotten too. */
	json_object_foreach_safe(g->told, tmp, key, item)
		if (!json_object_get(g->pods, key))
			json_object_del(g->told, key);
	set_rv(g, list);
	json_decref(list);
	return ERR_OK;
}

/* The Dataset behind a claim, or NULL (not a Dataset's, or not readable
 * now: *unsure then). */
static json_t *read_dataset(struct cachegate *g, const char *ns, const char *claim, bool *unsure)
{
	char path[800];
	json_t *obj = NULL, *pvc = NULL;
	struct error err;
	long code = 0;
	const char *volume;

	snprintf(path, sizeof(path), DATASETS_API, ns, claim);
	if (kubeapi_call(g->cfg.kube, "GET", path, NULL, &code, &obj, &err) == ERR_OK &&
	    code == 200)
		return obj;
	json_decref(obj);
	obj = NULL;
	if (code != 404) {
		*unsure = true;
		return NULL;
	}
	/* A StorageClass claim: its volume's Dataset in the release namespace. */
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/persistentvolumeclaims/%s", ns, claim);
	if (kubeapi_call(g->cfg.kube, "GET", path, NULL, &code, &pvc, &err) != ERR_OK ||
	    code != 200) {
		*unsure = code != 404;
		json_decref(pvc);
		return NULL;
	}
	volume = str_at(json_object_get(pvc, "spec"), "volumeName");
	if (!*volume) {
		*unsure = true; /* not bound yet */
	} else if (g->cfg.mirror_ns && *g->cfg.mirror_ns) {
		snprintf(path, sizeof(path), DATASETS_API, g->cfg.mirror_ns, volume);
		if (kubeapi_call(g->cfg.kube, "GET", path, NULL, &code, &obj, &err) != ERR_OK ||
		    code != 200) {
			*unsure = code != 404;
			json_decref(obj);
			obj = NULL;
		}
	}
	json_decref(pvc);
	return obj;
}

/* read_dataset, once per claim for all the pods judged together (seen:
 * "ns/claim" -> the Dataset, null when none, false when unsure). The
 * caller releases what it returns. */
static json_t *dataset_of(struct cachegate *g, json_t *seen, const char *ns, const char *claim,
			  bool *unsure)
{
	char key[600];
	json_t *ds;
	bool not_now = false;

	snprintf(key, sizeof(key), "%s/%s", ns, claim);
	ds = json_object_get(seen, key);
	if (ds) {
		not_now = json_is_false(ds);
		ds = json_is_object(ds) ? json_incref(ds) : NULL;
	} else {
		ds = read_dataset(g, ns, claim, &not_now);
		json_object_set_new(seen, key,
				    ds ? json_incref(ds) : not_now ? json_false() : json_null());
	}
	if (not_now)
		*unsure = true;
	return ds;
}

static void pod_event(struct cachegate *g, json_t *pod, const char *type, const char *reason,
		      const char *message)
{
	json_t *meta = json_object_get(pod, "metadata");
	const struct kubeapi_ref about = { "v1", "Pod", str_at(meta, "namespace"),
					   str_at(meta, "name"), str_at(meta, "uid") };
	struct error err;

	if (kubeapi_event(g->cfg.kube, &about, "granary-meta", type, reason, message, &err) !=
	    ERR_OK)
		log_warn("cannot record an event", LOG_S("pod", about.name), LOG_S("reason", reason),
			 LOG_S("cause", err.msg));
}

/* Removes the gate (a JSON patch that first tests it is still where it
 * was). True when it is gone. */
static bool open_gate(struct cachegate *g, json_t *pod, int index)
{
	json_t *meta = json_object_get(pod, "metadata"), *patch, *reply = NULL;
	char path[600], at[64];
	struct error err;
	long code = 0;

	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s", str_at(meta, "namespace"),
		 str_at(meta, "name"));
	snprintf(at, sizeof(at), "/spec/schedulingGates/%d", index);
	patch = json_pack("[{s:s, s:s+, s:s}, {s:s, s:s}]", "op", "test", "path", at, "/name",
			  "value", CACHEGATE_GATE, "op", "remove", "path", at);
	if (!patch)
		return false;
	if (kubeapi_call_ct(g->cfg.kube, "PATCH", path, "application/json-patch+json", patch,
			    &code, &reply, &err) != ERR_OK ||
	    (code != 200 && code != 404)) {
		/* 422: the gates changed under us; looked at again next round. */
		log_warn("cannot remove a pod's scheduling gate", LOG_S("pod", path),
			 LOG_S("cause", code ? kubeapi_message(reply) : err.msg));
		json_decref(reply);
		json_decref(patch);
		return false;
	}
	json_decref(reply);
	json_decref(patch);
	return true;
}

/* Seconds since the pod was created (0 when unknown). */
static uint64_t waited_s(json_t *pod)
{
	const char *t = str_at(json_object_get(pod, "metadata"), "creationTimestamp");
	struct tm tm = { 0 };
	int64_t now = retry_wall_ms() / 1000, made;

	if (!strptime(t, "%Y-%m-%dT%H:%M:%SZ", &tm))
		return 0;
	made = (int64_t)timegm(&tm);
	return now > made ? (uint64_t)(now - made) : 0;
}

/* The verdict on one gated pod, acted on; its Datasets read through
 * seen (dataset_of). */
static void judge_pod(struct cachegate *g, json_t *seen, const char *key, json_t *pod)
{
	const char *claims[CACHEGATE_CLAIMS_MAX], *reason = "";
	json_t *datasets[CACHEGATE_CLAIMS_MAX] = { 0 };
	const char *ns = str_at(json_object_get(pod, "metadata"), "namespace");
	struct cachegate_ask ask;
	enum cachegate_verdict v;
	struct error err;
	bool unsure = false;
	char msg[1024];
	size_t n;

	g->judged++;
	if (cachegate_ask(pod, &ask, &err) != ERR_OK) {
		/* A pod cannot be left gated by a typo: say why and let it go. */
		snprintf(msg, sizeof(msg), "%s; scheduling gate removed", err.msg);
		v = CACHEGATE_OPEN_WARNING;
		reason = "BadCacheGate";
	} else {
		n = cachegate_claims(pod, claims, CACHEGATE_CLAIMS_MAX);
		for (size_t i = 0; i < n; i++)
			datasets[i] = dataset_of(g, seen, ns, claims[i], &unsure);
		v = cachegate_judge(&ask, claims, datasets, n, waited_s(pod), &reason, msg,
				    sizeof(msg));
		for (size_t i = 0; i < n; i++)
			json_decref(datasets[i]);
		/* A claim not read this time might be a Dataset's still. */
		if (unsure && v != CACHEGATE_OPEN)
			v = CACHEGATE_WAIT;
	}
	if (v == CACHEGATE_WAIT) {
		if (!json_object_get(g->told, key)) {
			pod_event(g, pod, "Normal", "WaitingForCache", msg);
			json_object_set_new(g->told, key, json_true());
		}
		return;
	}
	if (!open_gate(g, pod, cachegate_index(pod)))
		return;
	log_info("scheduling gate removed", LOG_S("pod", key), LOG_S("reason", reason),
		 LOG_S("why", msg));
	pod_event(g, pod, v == CACHEGATE_OPEN ? "Normal" : "Warning", reason, msg);
	json_object_del(g->told, key);
}

/* A round: every gated pod judged, each Dataset read once. */
static void judge_all(struct cachegate *g)
{
	json_t *pods = json_deep_copy(g->pods), *seen = json_object(), *pod;
	const char *key;

	json_object_foreach(pods, key, pod) {
		if (stop_now(g))
			break;
		judge_pod(g, seen, key, pod);
	}
	json_decref(seen);
	json_decref(pods);
}

static bool on_event(const char *type, json_t *obj, void *arg)
{
	struct cachegate *g = arg;
	char key[600];
	json_t *seen;

	if (strcmp(type, "ERROR") == 0) {
		free(g->rv);
		g->rv = NULL;
		return false;
	}
	set_rv(g, obj);
	if (strcmp(type, "BOOKMARK") == 0)
		return true;
	track(g, obj, strcmp(type, "DELETED") == 0);
	/* A pod gated anew or changed is judged at once, alone: the others'
	 * verdicts have not changed with it (they wait for the round). */
	pod_key(obj, key, sizeof(key));
	if (strcmp(type, "DELETED") != 0 && json_object_get(g->pods, key)) {
		seen = json_object();
		judge_pod(g, seen, key, obj);
		json_decref(seen);
	}
	return true;
}

static bool watch_stop(void *arg)
{
	return stop_now(arg);
}

static void *gate_main(void *arg)
{
	struct cachegate *g = arg;
	uint64_t backoff = 0;

	while (!stop_now(g)) {
		char path[512];
		struct error err;
		long code = 0;

		if (!g->rv && list_pods(g, &err) != ERR_OK) {
			backoff = kubeapi_backoff_ms(backoff);
			log_warn("cannot list the pods waiting for a cache", LOG_S("cause", err.msg),
				 LOG_U("retry_ms", backoff));
			stopper_wait(&g->stop, backoff);
			continue;
		}
		judge_all(g);
		if (!g->rv)
			continue;
		snprintf(path, sizeof(path),
			 "%s&watch=1&allowWatchBookmarks=true&resourceVersion=%s&timeoutSeconds=%u",
			 GATED_PODS, g->rv, CACHEGATE_EVERY_MS / 1000);
		if (kubeapi_watch(g->cfg.kube, path, CACHEGATE_EVERY_MS / 1000, on_event, g,
				  watch_stop, &code, &err) != ERR_OK) {
			backoff = kubeapi_backoff_ms(backoff);
			log_warn("the watch of pods waiting for a cache broke",
				 LOG_S("cause", err.msg), LOG_U("retry_ms", backoff));
			stopper_wait(&g->stop, backoff);
			continue;
		}
		backoff = 0;
		if (code == 410) {
			free(g->rv);
			g->rv = NULL;
		}
	}
	return NULL;
}

enum error_code cachegate_start(const struct cachegate_config *cfg, struct cachegate **out,
				struct error *err)
{
	struct cachegate *g = calloc(1, sizeof(*g));
	int e;

	*out = NULL;
	if (!g)
		return error_set(err, ERR_NOMEM, "cache gate: out of memory");
	g->cfg = *cfg;
	g->pods = json_object();
	g->told = json_object();
	stopper_init(&g->stop);
	e = g->pods && g->told ? pthread_create(&g->thread, NULL, gate_main, g) : ENOMEM;
	if (e != 0) {
		stopper_release(&g->stop);
		json_decref(g->pods);
		json_decref(g->told);
		free(g);
		return error_set(err, e == ENOMEM ? ERR_NOMEM : ERR_UNAVAILABLE,
				 "cache gate: cannot start: %s", strerror(e));
	}
	log_info("cache gate following pods", LOG_S("label", CACHEGATE_LABEL),
		 LOG_S("gate", CACHEGATE_GATE));
	*out = g;
	return ERR_OK;
}

uint64_t cachegate_judged(struct cachegate *g)
{
	return g->judged;
}

void cachegate_stop(struct cachegate *g)
{
	if (!g)
		return;
	stopper_stop(&g->stop);
	pthread_join(g->thread, NULL);
	stopper_release(&g->stop);
	json_decref(g->pods);
	json_decref(g->told);
	free(g->rv);
	free(g);
}
