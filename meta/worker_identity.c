/*
 * worker_identity.c - a Heartbeat's worker id checked against the worker
 * pod's service account token (see worker_identity.h).
 */
#include "meta/worker_identity.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/retry.h"
#include "meta/meta_auth.h"

struct entry {
	unsigned char hash[32];        /* SHA-256 of the token */
	struct kubeapi_token_review r; /* authenticated */
	uint64_t fresh_ms;             /* wall clock: trusted until then */
	uint64_t until_ms;             /* wall clock: kept until then, for an outage */
};

struct worker_identity {
	char *user, *audience;
	worker_identity_review_fn review;
	void *review_arg;
	uint64_t cache_ms, stale_ms;
	size_t cache_max;
	unsigned reviews_max;

	pthread_mutex_t mu;
	struct entry *cache;           /* protected by mu */
	size_t n;                      /* protected by mu */
	unsigned in_flight;            /* protected by mu: reviews asked, not answered */
	uint64_t reviews, hits, stale; /* protected by mu */
};

enum error_code worker_identity_new(const struct worker_identity_config *cfg,
				    struct worker_identity **out, struct error *err)
{
	struct worker_identity *wi;

	*out = NULL;
	if (!cfg->ns || !*cfg->ns || !cfg->service_account || !*cfg->service_account ||
	    !cfg->audience || !*cfg->audience || !cfg->review)
		return error_set(err, ERR_INVALID,
				 "worker identity: namespace, service account, audience and a review are required");
	wi = calloc(1, sizeof(*wi));
	if (!wi)
		return error_set(err, ERR_NOMEM, "worker identity: out of memory");
	pthread_mutex_init(&wi->mu, NULL);
	wi->review = cfg->review;
	wi->review_arg = cfg->review_arg;
	wi->cache_ms = cfg->cache_ms ? cfg->cache_ms : WORKER_IDENTITY_CACHE_MS;
	wi->stale_ms = cfg->stale_ms ? cfg->stale_ms : WORKER_IDENTITY_STALE_MS;
	wi->cache_max = cfg->cache_max ? cfg->cache_max : WORKER_IDENTITY_CACHE_MAX;
	wi->reviews_max = cfg->reviews_max ? cfg->reviews_max : 1;
	if (wi->stale_ms < wi->cache_ms) {
		uint64_t stale = wi->stale_ms, cache = wi->cache_ms;

		worker_identity_free(wi);
		return error_set(err, ERR_INVALID,
				 "worker identity: stale_ms (%llu) is shorter than cache_ms (%llu)",
				 (unsigned long long)stale, (unsigned long long)cache);
	}
	wi->cache = calloc(wi->cache_max, sizeof(*wi->cache));
	if (!wi->cache || asprintf(&wi->user, "system:serviceaccount:%s:%s", cfg->ns,
				   cfg->service_account) < 0 ||
	    !(wi->audience = strdup(cfg->audience))) {
		worker_identity_free(wi);
		return error_set(err, ERR_NOMEM, "worker identity: out of memory");
	}
	*out = wi;
	return ERR_OK;
}

void worker_identity_free(struct worker_identity *wi)
{
	if (!wi)
		return;
	pthread_mutex_destroy(&wi->mu);
	free(wi->cache);
	free(wi->user);
	free(wi->audience);
	free(wi);
}

enum error_code worker_identity_judge(const struct kubeapi_token_review *r, const char *user,
				      const char *audience, const char *worker_id,
				      struct error *err)
{
	if (!r->authenticated)
		return error_set(err, ERR_UNAUTHENTICATED,
				 "heartbeat of worker '%s': the Kubernetes API did not authenticate its identity token%s%.120s",
				 worker_id, r->error[0] ? ": " : "", r->error);
	if (!r->audience_ok)
		return error_set(err, ERR_UNAUTHENTICATED,
				 "heartbeat of worker '%s': its identity token is not for audience '%s'",
				 worker_id, audience);
	if (strcmp(r->username, user) != 0)
		return error_set(err, ERR_PERMISSION,
				 "heartbeat of worker '%s': its identity token is of '%.200s', not of the workers' service account '%s'",
				 worker_id, r->username, user);
	if (!r->node_name[0])
		return error_set(err, ERR_PERMISSION,
				 "heartbeat of worker '%s': its identity token names no node (not a worker pod's projected token)",
				 worker_id);
	if (strcmp(r->node_name, worker_id) != 0)
		return error_set(err, ERR_PERMISSION,
				 "heartbeat of worker '%s': its identity token is of a worker pod on node '%.200s', not on '%s'",
				 worker_id, r->node_name, worker_id);
	return ERR_OK;
}

int64_t worker_identity_token_expiry(const char *token)
{
	const char *p = strchr(token, '.'), *q = p ? strchr(p + 1, '.') : NULL;
	size_t len = q ? (size_t)(q - p - 1) : 0, padded = (len + 3) / 4 * 4, out_len;
	unsigned char *text = NULL, *raw = NULL;
	json_t *payload = NULL, *exp;
	int64_t at = 0;

	if (!len || len > WORKER_IDENTITY_TOKEN_MAX)
		return 0;
	text = malloc(padded + 1);
	raw = malloc(padded + 1);
	if (!text || !raw)
		goto out;
	/* base64url without padding, as JWTs write it, to base64. */
	for (size_t i = 0; i < padded; i++) {
		char c = i < len ? p[1 + i] : '=';

		text[i] = c == '-' ? '+' : c == '_' ? '/' : (unsigned char)c;
	}
	text[padded] = '\0';
	if (len % 4 == 1 || EVP_DecodeBlock(raw, text, (int)padded) < 0)
		goto out;
	out_len = padded / 4 * 3 - (padded - len);
	payload = json_loadb((const char *)raw, out_len, 0, NULL);
	exp = json_object_get(payload, "exp");
	if (json_is_integer(exp) && json_integer_value(exp) > 0)
		at = (int64_t)json_integer_value(exp);
out:
	json_decref(payload);
	free(text);
	free(raw);
	return at;
}

static void hash_token(const char *token, unsigned char out[32])
{
	unsigned int len = 0;

	if (!EVP_Digest(token, strlen(token), out, &len, EVP_sha256(), NULL) || len != 32)
		memset(out, 0, 32);
}

/* The review of hash kept at now_ms (fresh or not), or NULL; one kept no
 * longer is dropped. Under mu. */
static struct entry *cache_find(struct worker_identity *wi, const unsigned char hash[32],
				uint64_t now_ms)
{
	for (size_t i = 0; i < wi->n; i++) {
		if (memcmp(wi->cache[i].hash, hash, 32) != 0)
			continue;
		if (wi->cache[i].until_ms <= now_ms) {
			wi->cache[i] = wi->cache[--wi->n];
			return NULL;
		}
		return &wi->cache[i];
	}
	return NULL;
}

/* Keeps r, trusted until fresh_ms, until until_ms. Under mu. */
static void cache_put(struct worker_identity *wi, const unsigned char hash[32],
		      const struct kubeapi_token_review *r, uint64_t fresh_ms, uint64_t until_ms,
		      uint64_t now_ms)
{
	size_t slot = wi->n;

	for (size_t i = 0; i < wi->n; i++)
		if (memcmp(wi->cache[i].hash, hash, 32) == 0)
			slot = i;
	if (slot == wi->n && wi->n == wi->cache_max) {
		/* Full: drop what has expired, else the one that expires first. */
		for (size_t i = 0; i < wi->n;)
			if (wi->cache[i].until_ms <= now_ms)
				wi->cache[i] = wi->cache[--wi->n];
			else
				i++;
		slot = wi->n;
		if (wi->n == wi->cache_max) {
			slot = 0;
			for (size_t i = 1; i < wi->n; i++)
				if (wi->cache[i].until_ms < wi->cache[slot].until_ms)
					slot = i;
		}
	}
	memcpy(wi->cache[slot].hash, hash, 32);
	wi->cache[slot].r = *r;
	wi->cache[slot].fresh_ms = fresh_ms;
	wi->cache[slot].until_ms = until_ms;
	if (slot == wi->n)
		wi->n++;
}

/* Forgets the review of hash (the apiserver refused the token since). Under mu. */
static void cache_drop(struct worker_identity *wi, const unsigned char hash[32])
{
	for (size_t i = 0; i < wi->n; i++)
		if (memcmp(wi->cache[i].hash, hash, 32) == 0) {
			wi->cache[i] = wi->cache[--wi->n];
			return;
		}
}

/* The earlier of now_ms + ms and the token's expiry (exp_s, 0: none). */
static uint64_t bounded(uint64_t now_ms, uint64_t ms, int64_t exp_s)
{
	uint64_t until = now_ms + ms;

	return exp_s > 0 && (uint64_t)exp_s * 1000 < until ? (uint64_t)exp_s * 1000 : until;
}

/* The review of hash for the heartbeat: the kept one while fresh, else the
 * apiserver's; when the apiserver gives none (it did not answer, or
 * reviews_max are in flight), the kept one until it is dropped. */
static enum error_code review_of(struct worker_identity *wi, const char *token,
				 const unsigned char hash[32], uint64_t now_ms,
				 struct kubeapi_token_review *r, struct error *err)
{
	struct entry *e;
	bool kept = false;
	enum error_code rc;

	pthread_mutex_lock(&wi->mu);
	e = cache_find(wi, hash, now_ms);
	if (e) {
		*r = e->r;
		kept = true;
	}
	if (e && now_ms < e->fresh_ms) {
		wi->hits++;
		pthread_mutex_unlock(&wi->mu);
		return ERR_OK;
	}
	if (wi->in_flight >= wi->reviews_max) {
		/* The apiserver is slow or hangs: no more of meta's threads
		 * wait on it. */
		if (kept)
			wi->stale++;
		pthread_mutex_unlock(&wi->mu);
		return kept ? ERR_OK
			    : error_set(err, ERR_UNAVAILABLE,
					"as many reviews as granary-meta asks of the Kubernetes API at once (%u) are waiting for an answer",
					wi->reviews_max);
	}
	wi->in_flight++;
	pthread_mutex_unlock(&wi->mu);

	rc = wi->review(token, wi->audience, r, wi->review_arg, err);

	pthread_mutex_lock(&wi->mu);
	wi->in_flight--;
	if (rc != ERR_OK) {
		/* Looked up again: another heartbeat's review may have changed it. */
		e = cache_find(wi, hash, now_ms);
		if (e) {
			*r = e->r;
			wi->stale++;
			rc = ERR_OK;
		}
	} else {
		wi->reviews++;
		if (r->authenticated) {
			int64_t exp = worker_identity_token_expiry(token);
			uint64_t until = bounded(now_ms, wi->stale_ms, exp);

			if (until > now_ms)
				cache_put(wi, hash, r, bounded(now_ms, wi->cache_ms, exp), until,
					  now_ms);
		} else {
			cache_drop(wi, hash);
		}
	}
	pthread_mutex_unlock(&wi->mu);
	return rc;
}

enum error_code worker_identity_check_at(struct worker_identity *wi, const char *token,
					 const char *worker_id, uint64_t now_ms,
					 struct error *err)
{
	struct kubeapi_token_review r;
	unsigned char hash[32];

	if (!token || !*token)
		return error_set(err, ERR_UNAUTHENTICATED,
				 "heartbeat of worker '%s': no identity token (metadata '%s'); in Kubernetes a worker sends its pod's service account token (meta.identity_token_file)",
				 worker_id, META_IDENTITY_METADATA);
	if (strlen(token) > WORKER_IDENTITY_TOKEN_MAX)
		return error_set(err, ERR_UNAUTHENTICATED,
				 "heartbeat of worker '%s': identity token over %d bytes", worker_id,
				 WORKER_IDENTITY_TOKEN_MAX);
	hash_token(token, hash);
	if (review_of(wi, token, hash, now_ms, &r, err) != ERR_OK)
		return error_wrap(err, "heartbeat of worker '%s': cannot review its identity token",
				  worker_id);
	return worker_identity_judge(&r, wi->user, wi->audience, worker_id, err);
}

enum error_code worker_identity_check(struct worker_identity *wi, const char *token,
				      const char *worker_id, struct error *err)
{
	int64_t now = retry_wall_ms();

	return worker_identity_check_at(wi, token, worker_id, now > 0 ? (uint64_t)now : 0, err);
}

void worker_identity_counts(struct worker_identity *wi, uint64_t *reviews, uint64_t *hits,
			    uint64_t *stale)
{
	pthread_mutex_lock(&wi->mu);
	*reviews = wi->reviews;
	*hits = wi->hits;
	*stale = wi->stale;
	pthread_mutex_unlock(&wi->mu);
}
