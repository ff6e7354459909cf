/*
 * readiness.c - the verdict behind granary-worker's /readyz.
 */
#include "cache/readiness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

/* Why the worker is not ready; a change of kind is logged. */
enum verdict {
	READY = 0,
	CACHE_UNUSABLE,
	META_UNREACHABLE,
	META_REFUSES,
	META_SILENT,
	META_NOT_JOINED,
	LEFT,
};

struct readiness {
	struct blockstore *bs;         /* borrowed; NULL: no cache check */
	char *meta_address;            /* NULL: standalone */
	pthread_mutex_t mu;
	bool joined;                   /* a heartbeat was accepted; protected by mu */
	uint64_t last_ok_ms;           /* the last accepted one; protected by mu */
	uint64_t expiry_ms;            /* protected by mu */
	bool failing;                  /* a call failed since last_ok_ms; protected by mu */
	uint64_t failing_since_ms;     /* the first such failure; protected by mu */
	bool unreachable;              /* the last failure's kind; protected by mu */
	char cause[ERROR_MSG_MAX];     /* the last failure's message; protected by mu */
	enum verdict logged;           /* the last verdict logged; protected by mu */
	bool left;                     /* readiness_left; protected by mu */
};

enum error_code readiness_new(struct blockstore *bs, const char *meta_address,
			      uint64_t started_ms, struct readiness **out, struct error *err)
{
	struct readiness *r = calloc(1, sizeof(*r));

	*out = NULL;
	if (!r)
		return error_set(err, ERR_NOMEM, "readiness: out of memory");
	r->bs = bs;
	if (meta_address && *meta_address) {
		r->meta_address = strdup(meta_address);
		if (!r->meta_address) {
			free(r);
			return error_set(err, ERR_NOMEM, "readiness: out of memory");
		}
	}
	pthread_mutex_init(&r->mu, NULL);
	r->expiry_ms = READINESS_DEFAULT_EXPIRY_MS;
	/* Not joined yet counts from start: the first round's failure, if
	 * any, is the outage's beginning. */
	r->failing_since_ms = started_ms;
	*out = r;
	return ERR_OK;
}

void readiness_free(struct readiness *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->mu);
	free(r->meta_address);
	free(r);
}

void readiness_heartbeat_ok(struct readiness *r, uint64_t now_ms, uint64_t expiry_ms)
{
	pthread_mutex_lock(&r->mu);
	r->joined = true;
	r->last_ok_ms = now_ms;
	if (expiry_ms)
		r->expiry_ms = expiry_ms;
	r->failing = false;
	pthread_mutex_unlock(&r->mu);
}

void readiness_meta_failed(struct readiness *r, uint64_t now_ms, bool unreachable,
			   const char *cause)
{
	pthread_mutex_lock(&r->mu);
	if (!r->failing) {
		r->failing = true;
		r->failing_since_ms = r->joined ? now_ms : r->failing_since_ms;
	}
	r->unreachable = unreachable;
	snprintf(r->cause, sizeof(r->cause), "%s", cause ? cause : "");
	pthread_mutex_unlock(&r->mu);
}

static unsigned long long seconds(uint64_t from_ms, uint64_t to_ms)
{
	return to_ms > from_ms ? (unsigned long long)((to_ms - from_ms) / 1000) : 0;
}

/* The meta half of the verdict; r->mu held. */
static enum verdict meta_verdict(struct readiness *r, uint64_t now_ms, struct error *err)
{
	const char *addr = r->meta_address;

	if (!addr)
		return READY;
	if (r->left) {
		error_set(err, ERR_UNAVAILABLE,
			  "stopping: this worker left granary-meta at %s and serves only the requests in progress",
			  addr);
		return LEFT;
	}
	if (r->joined && (now_ms <= r->last_ok_ms || now_ms - r->last_ok_ms <= r->expiry_ms))
		return READY;
	if (r->failing && r->unreachable) {
		error_set(err, ERR_UNAVAILABLE, "granary-meta unreachable at %s since %llus: %s", addr,
			  seconds(r->failing_since_ms, now_ms), r->cause);
		return META_UNREACHABLE;
	}
	if (r->failing) {
		error_set(err, ERR_UNAVAILABLE, "granary-meta at %s refuses the heartbeat since %llus: %s",
			  addr, seconds(r->failing_since_ms, now_ms), r->cause);
		return META_REFUSES;
	}
	if (r->joined) {
		error_set(err, ERR_UNAVAILABLE, "no heartbeat accepted by granary-meta at %s for %llus",
			  addr, seconds(r->last_ok_ms, now_ms));
		return META_SILENT;
	}
	error_set(err, ERR_UNAVAILABLE, "not joined granary-meta at %s yet", addr);
	return META_NOT_JOINED;
}

void readiness_left(struct readiness *r)
{
	pthread_mutex_lock(&r->mu);
	r->left = true;
	pthread_mutex_unlock(&r->mu);
}

enum error_code readiness_check(struct readiness *r, uint64_t now_ms, struct error *err)
{
	enum verdict v = READY;
	struct error why;

	/* The cache check does file I/O: outside the lock. */
	if (r->bs && blockstore_check_usable(r->bs, &why) != ERR_OK) {
		error_set(err, ERR_UNAVAILABLE, "%s", why.msg);
		v = CACHE_UNUSABLE;
	}
	pthread_mutex_lock(&r->mu);
	if (v == READY)
		v = meta_verdict(r, now_ms, err);
	if (v != r->logged) {
		if (v == READY)
			log_info("ready");
		else
			log_warn("not ready", LOG_S("cause", err->msg));
		r->logged = v;
	}
	pthread_mutex_unlock(&r->mu);
	return v == READY ? ERR_OK : ERR_UNAVAILABLE;
}
