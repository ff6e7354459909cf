/*
 * lease.c - leader election with a Lease (see lease.h).
 *
 * The keeper: a renewer thread that calls the apiserver and a watchdog
 * thread that never does, so that a call hanging for its whole timeout
 * cannot keep the holder acting past its deadline. They share
 * renewed_ms and keep under mu; the renewer alone touches the rest of
 * struct lease while they run.
 */
#include "kube/lease.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/retry.h"

/* After a renewal round that failed, the next comes at most this soon. */
#define LEASE_RETRY_MS 1000

/* The keeper's life: NONE -> RUNNING -> RELEASING -> STOPPING -> NONE,
 * or RUNNING or RELEASING -> LOST -> NONE. */
enum keep_state {
	KEEP_NONE,      /* no keeper threads */
	KEEP_RUNNING,   /* renewing and watching */
	KEEP_RELEASING, /* the renewer ends; the watchdog goes on watching */
	KEEP_LOST,      /* lost is called or was: renew no more */
	KEEP_STOPPING,  /* the watchdog ends too */
};

struct lease {
	struct kubeapi *k;
	char *ns, *name, *identity;
	unsigned duration_s;
	char holder[256];
	char renew_time[64];    /* the holder's renewTime as last read */
	uint64_t observed_ms;   /* when holder or renewTime last changed */

	pthread_mutex_t mu;
	pthread_cond_t cond;    /* monotonic: renewed_ms or keep changed */
	uint64_t renewed_ms;    /* protected by mu: this identity's last write sent */
	enum keep_state keep;   /* protected by mu */
	pthread_t renewer, watchdog;
	lease_lost_fn lost;
	void *lost_arg;
};

enum error_code lease_new(struct kubeapi *k, const struct lease_config *cfg, struct lease **out,
			  struct error *err)
{
	struct lease *l = NULL;
	pthread_condattr_t ca;

	if (!cfg->identity || !*cfg->identity || strlen(cfg->identity) >= sizeof(l->holder))
		return error_set(err, ERR_INVALID, "a Lease candidate needs an identity of 1 to %zu bytes",
				 sizeof(l->holder) - 1);
	l = calloc(1, sizeof(*l));
	if (!l)
		return error_set(err, ERR_NOMEM, "out of memory");
	pthread_mutex_init(&l->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (!(l->ns = strdup(cfg->namespace_)) || !(l->name = strdup(cfg->name)) ||
	    !(l->identity = strdup(cfg->identity))) {
		lease_free(l);
		return error_set(err, ERR_NOMEM, "out of memory");
	}
	l->k = k;
	l->duration_s = cfg->duration_s ? cfg->duration_s : 15;
	*out = l;
	return ERR_OK;
}

/* Ends the keeper's threads, when they run. */
static void keep_stop(struct lease *l)
{
	bool started;

	pthread_mutex_lock(&l->mu);
	started = l->keep != KEEP_NONE;
	if (l->keep == KEEP_RUNNING)
		l->keep = KEEP_RELEASING;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->mu);
	if (!started)
		return;
	/* The renewer first: the watchdog watches while a renewal is in flight. */
	pthread_join(l->renewer, NULL);
	pthread_mutex_lock(&l->mu);
	if (l->keep == KEEP_RELEASING)
		l->keep = KEEP_STOPPING;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->mu);
	pthread_join(l->watchdog, NULL);
	l->keep = KEEP_NONE;
}

void lease_free(struct lease *l)
{
	if (!l)
		return;
	keep_stop(l);
	pthread_cond_destroy(&l->cond);
	pthread_mutex_destroy(&l->mu);
	free(l->ns);
	free(l->name);
	free(l->identity);
	free(l);
}

const char *lease_holder(const struct lease *l)
{
	return l->holder;
}

static uint64_t deadline_ms(const struct lease *l)
{
	return (uint64_t)l->duration_s * 1000 * 2 / 3;
}

static enum error_code status_error(const char *what, long status, json_t *reply,
				    struct error *err)
{
	return error_set(err, status == 401 || status == 403 ? ERR_PERMISSION : ERR_UNAVAILABLE,
			 "%s: HTTP %ld: %s", what, status, kubeapi_message(reply));
}

/* spec with this identity as holder, renewed now. */
static json_t *holder_spec(const struct lease *l, json_t *old_spec, bool taking)
{
	char now[40];
	json_t *spec = old_spec ? json_deep_copy(old_spec) : json_object();
	json_int_t transitions = json_integer_value(json_object_get(spec, "leaseTransitions"));

	kubeapi_micro_time(retry_wall_ms(), now, sizeof(now));
	json_object_set_new(spec, "holderIdentity", json_string(l->identity));
	json_object_set_new(spec, "leaseDurationSeconds", json_integer(l->duration_s));
	json_object_set_new(spec, "renewTime", json_string(now));
	if (taking) {
		json_object_set_new(spec, "acquireTime", json_string(now));
		json_object_set_new(spec, "leaseTransitions",
				    json_integer(old_spec ? transitions + 1 : 0));
	}
	return spec;
}

/* This identity wrote the Lease as its holder; sent_ms: when the write
 * left, before the apiserver can have applied it. */
static void wrote(struct lease *l, const char *renew, uint64_t sent_ms)
{
	snprintf(l->holder, sizeof(l->holder), "%s", l->identity);
	snprintf(l->renew_time, sizeof(l->renew_time), "%s", renew ? renew : "");
	l->observed_ms = retry_now_ms();
	pthread_mutex_lock(&l->mu);
	l->renewed_ms = sent_ms;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->mu);
}

/* Whether the keeper may still write (it renews no more once lost). */
static bool keeping(struct lease *l)
{
	bool on;

	pthread_mutex_lock(&l->mu);
	on = l->keep == KEEP_RUNNING;
	pthread_mutex_unlock(&l->mu);
	return on;
}

/*
 * lease_try; renewing (the keeper): only renew, never create or take the
 * Lease, and write nothing once the keeper stopped (ERR_CANCELLED).
 */
static enum error_code lease_round(struct lease *l, bool renewing, bool *held, struct error *err)
{
	char path[512], holder[256];
	json_t *reply = NULL, *spec, *body;
	const char *renew;
	enum error_code rc;
	uint64_t now, sent, duration_ms;
	json_int_t record_s;
	bool mine, taking;
	long status;

	*held = false;
	snprintf(path, sizeof(path), "/apis/coordination.k8s.io/v1/namespaces/%s/leases/%s", l->ns,
		 l->name);
	rc = kubeapi_call(l->k, "GET", path, NULL, &status, &reply, err);
	if (rc != ERR_OK)
		return rc;
	/* After the answer, as client-go: the read may have happened as late
	 * as this, so the record's age counts from here. */
	now = retry_now_ms();
	if (status == 404 && renewing) {
		l->holder[0] = '\0';
		json_decref(reply);
		return ERR_OK;
	}
	if (status == 404) {
		char list[512];

		json_decref(reply);
		body = json_pack("{s:s, s:s, s:{s:s, s:s}, s:o}", "apiVersion",
				 "coordination.k8s.io/v1", "kind", "Lease", "metadata", "name", l->name,
				 "namespace", l->ns, "spec", holder_spec(l, NULL, true));
		snprintf(list, sizeof(list), "/apis/coordination.k8s.io/v1/namespaces/%s/leases",
			 l->ns);
		sent = retry_now_ms();
		rc = kubeapi_call(l->k, "POST", list, body, &status, &reply, err);
		json_decref(body);
		if (rc == ERR_OK && status == 201) {
			spec = json_object_get(reply, "spec");
			wrote(l, json_string_value(json_object_get(spec, "renewTime")), sent);
			*held = true;
		} else if (rc == ERR_OK && status != 409) {
			rc = status_error("create the Lease", status, reply, err);
		}
		json_decref(reply);
		return rc;
	}
	if (status != 200) {
		rc = status_error("read the Lease", status, reply, err);
		json_decref(reply);
		return rc;
	}
	spec = json_object_get(reply, "spec");
	snprintf(holder, sizeof(holder), "%s",
		 json_string_value(json_object_get(spec, "holderIdentity")) ?: "");
	renew = json_string_value(json_object_get(spec, "renewTime"));
	renew = renew ? renew : "";
	if (strcmp(holder, l->holder) != 0 || strcmp(renew, l->renew_time) != 0) {
		snprintf(l->holder, sizeof(l->holder), "%s", holder);
		snprintf(l->renew_time, sizeof(l->renew_time), "%s", renew);
		l->observed_ms = now;
	}
	mine = strcmp(holder, l->identity) == 0;
	/* The holder's duration, not ours: replicas may be configured apart
	 * (an upgrade that changes it), and the holder renews by its own. */
	record_s = json_integer_value(json_object_get(spec, "leaseDurationSeconds"));
	duration_ms = (uint64_t)(record_s > 0 ? record_s : l->duration_s) * 1000;
	/* Another live holder: its renewTime moved within the duration. */
	if (!mine && (renewing || (*holder && now - l->observed_ms < duration_ms))) {
		json_decref(reply);
		return ERR_OK;
	}
	taking = !mine;
	body = json_deep_copy(reply);
	json_object_set_new(body, "spec", holder_spec(l, spec, taking));
	json_decref(reply);
	if (renewing && !keeping(l)) {
		json_decref(body);
		return error_set(err, ERR_CANCELLED, "the Lease's keeper stopped");
	}
	sent = retry_now_ms();
	rc = kubeapi_call(l->k, "PUT", path, body, &status, &reply, err);
	json_decref(body);
	if (rc == ERR_OK && status == 200) {
		spec = json_object_get(reply, "spec");
		wrote(l, json_string_value(json_object_get(spec, "renewTime")), sent);
		*held = true;
		if (taking)
			log_info("took the Lease", LOG_S("lease", l->name), LOG_S("namespace", l->ns),
				 LOG_S("previous_holder", holder));
	} else if (rc == ERR_OK && (status != 409 || renewing)) {
		/* A conflict on a renewal: the Lease changed since the read (not
		 * necessarily its holder); the next round reads it again. */
		rc = status_error("write the Lease", status, reply, err);
	}
	json_decref(reply);
	return rc;
}

enum error_code lease_try(struct lease *l, bool *held, struct error *err)
{
	return lease_round(l, false, held, err);
}

/* Sets keep to lost, when it runs; true when it did. Called with mu held. */
static bool keep_lose(struct lease *l)
{
	if (l->keep != KEEP_RUNNING && l->keep != KEEP_RELEASING)
		return false;
	l->keep = KEEP_LOST;
	pthread_cond_broadcast(&l->cond);
	return true;
}

static void wait_until(struct lease *l, uint64_t until_ms)
{
	uint64_t now = retry_now_ms();
	struct timespec ts;

	if (now >= until_ms)
		return;
	ts = retry_deadline_ts(CLOCK_MONOTONIC, until_ms - now);
	pthread_cond_timedwait(&l->cond, &l->mu, &ts);
}

static void *renew_main(void *arg)
{
	struct lease *l = arg;
	uint64_t period = (uint64_t)l->duration_s * 1000 / 3, next;

	pthread_mutex_lock(&l->mu);
	next = l->renewed_ms + period;
	while (l->keep == KEEP_RUNNING) {
		struct error err;
		enum error_code rc;
		bool held;

		if (retry_now_ms() < next) {
			wait_until(l, next);
			continue;
		}
		pthread_mutex_unlock(&l->mu);
		rc = lease_round(l, true, &held, &err);
		pthread_mutex_lock(&l->mu);
		if (l->keep != KEEP_RUNNING)
			break;
		if (rc != ERR_OK) {
			next = retry_now_ms() + (period < LEASE_RETRY_MS ? period : LEASE_RETRY_MS);
			log_warn("cannot renew the Lease", LOG_S("lease", l->name),
				 LOG_S("cause", err.msg), LOG_U("retry_ms", next - retry_now_ms()));
		} else if (!held) {
			keep_lose(l);
			log_error("this replica no longer holds the Lease: stopping",
				  LOG_S("lease", l->name), LOG_S("holder", l->holder));
		} else {
			next = l->renewed_ms + period;
		}
	}
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

static void *watch_main(void *arg)
{
	struct lease *l = arg;
	bool lost = false;

	pthread_mutex_lock(&l->mu);
	for (;;) {
		uint64_t now = retry_now_ms(), until = l->renewed_ms + deadline_ms(l);

		if (l->keep == KEEP_LOST) {
			lost = true;
			break;
		}
		if (l->keep != KEEP_RUNNING && l->keep != KEEP_RELEASING)
			break;
		if (now >= until) {
			lost = keep_lose(l);
			log_error("the Lease was not renewed in time: stopping",
				  LOG_S("lease", l->name),
				  LOG_U("last_renewal_ms_ago", now - l->renewed_ms),
				  LOG_U("renew_deadline_ms", deadline_ms(l)));
			break;
		}
		wait_until(l, until);
	}
	pthread_mutex_unlock(&l->mu);
	if (lost)
		l->lost(l->lost_arg);
	return NULL;
}

enum error_code lease_keep(struct lease *l, lease_lost_fn lost, void *arg, struct error *err)
{
	pthread_mutex_lock(&l->mu);
	if (l->keep != KEEP_NONE) {
		pthread_mutex_unlock(&l->mu);
		return error_set(err, ERR_INVALID, "the Lease '%s' is kept already", l->name);
	}
	l->lost = lost;
	l->lost_arg = arg;
	l->keep = KEEP_RUNNING;
	pthread_mutex_unlock(&l->mu);
	if (pthread_create(&l->watchdog, NULL, watch_main, l) != 0) {
		l->keep = KEEP_NONE;
		return error_set(err, ERR_NOMEM, "cannot start the Lease's watchdog thread");
	}
	if (pthread_create(&l->renewer, NULL, renew_main, l) != 0) {
		pthread_mutex_lock(&l->mu);
		l->keep = KEEP_STOPPING;
		pthread_cond_broadcast(&l->cond);
		pthread_mutex_unlock(&l->mu);
		pthread_join(l->watchdog, NULL);
		l->keep = KEEP_NONE;
		return error_set(err, ERR_NOMEM, "cannot start the Lease's renewal thread");
	}
	return ERR_OK;
}

void lease_release(struct lease *l)
{
	char path[512];
	json_t *reply = NULL, *spec;
	struct error err;
	long status;

	keep_stop(l);
	snprintf(path, sizeof(path), "/apis/coordination.k8s.io/v1/namespaces/%s/leases/%s", l->ns,
		 l->name);
	if (kubeapi_call(l->k, "GET", path, NULL, &status, &reply, &err) != ERR_OK || status != 200)
		goto out;
	spec = json_object_get(reply, "spec");
	if (!json_is_object(spec) ||
	    strcmp(json_string_value(json_object_get(spec, "holderIdentity")) ?: "", l->identity))
		goto out;
	json_object_set_new(spec, "holderIdentity", json_string(""));
	json_object_set_new(spec, "leaseDurationSeconds", json_integer(1));
	{
		json_t *again = NULL;

		if (kubeapi_call(l->k, "PUT", path, reply, &status, &again, &err) == ERR_OK &&
		    status == 200)
			log_info("gave the Lease up", LOG_S("lease", l->name));
		json_decref(again);
	}
out:
	json_decref(reply);
}
