/*
 * worker_identity.h - in Kubernetes, only the worker pod of a node may
 * heartbeat as that node's worker.
 *
 * Every worker holds the same `worker` role key (meta/meta_auth.h), so the
 * key alone lets any worker, or whoever took a worker pod's key, send
 * heartbeats under any worker id and point it at an address of its choice.
 * With kube.enabled a Heartbeat must also carry, under the metadata key
 * META_IDENTITY_METADATA, the worker pod's own projected service account
 * token (audience kube.token_audience, a short expiry, read from its file
 * for every heartbeat as the kubelet rotates it). granary-meta asks the
 * apiserver to review it (kubeapi_token_review) and accepts the heartbeat
 * when:
 *
 *   the token is authenticated for the audience      else ERR_UNAUTHENTICATED
 *   its user is system:serviceaccount:NS:SA           else ERR_PERMISSION
 *     (NS the release namespace, SA kube.worker_service_account)
 *   the pod it was issued to runs on the node the     else ERR_PERMISSION
 *     heartbeat names as its worker id (the user's
 *     extra authentication.kubernetes.io/node-name)
 *
 * A heartbeat without a token is ERR_UNAUTHENTICATED; an apiserver that
 * cannot be reached is ERR_UNAVAILABLE (the worker retries; the membership
 * is not touched, so a member stays until its normal expiry).
 *
 * Cache: heartbeats come every few seconds, so an authenticated review is
 * kept, under the SHA-256 of the token (never the token), until the
 * earlier of cache_ms after the review and the token's own expiry (the
 * `exp` of its JWT payload, trusted once the apiserver accepted the
 * token). At most cache_max reviews are kept; a full cache drops the
 * expired ones, then the one that expires first. Reviews that did not
 * authenticate are not kept. The verdict is judged again at every
 * heartbeat, so a cached token claiming another worker id is still
 * refused.
 *
 * Thread-safe: heartbeats run on many threads; the cache has its own
 * lock, not held during a review. Messages name the worker id, the node
 * and the service account, never the token.
 */
#ifndef GRANARY_META_WORKER_IDENTITY_H
#define GRANARY_META_WORKER_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "kube/kubeapi.h"
#include "meta/meta_auth.h"

#define WORKER_IDENTITY_CACHE_MS 60000 /* default cache_ms */
#define WORKER_IDENTITY_CACHE_MAX 4096 /* default cache_max */
#define WORKER_IDENTITY_TOKEN_MAX META_IDENTITY_TOKEN_MAX

/* Reviews token for audience: kubeapi_token_review, or a test's stand-in.
 * ERR_OK with *out filled, or ERR_UNAVAILABLE. */
typedef enum error_code (*worker_identity_review_fn)(const char *token, const char *audience,
						     struct kubeapi_token_review *out, void *arg,
						     struct error *err);

struct worker_identity_config {
	const char *ns;              /* the release namespace */
	const char *service_account; /* the workers' service account there */
	const char *audience;        /* the tokens' audience */
	worker_identity_review_fn review;
	void *review_arg;
	uint64_t cache_ms;           /* 0 = WORKER_IDENTITY_CACHE_MS */
	size_t cache_max;            /* 0 = WORKER_IDENTITY_CACHE_MAX */
};

struct worker_identity;

/* Copies cfg's strings. ERR_INVALID when ns, service_account, audience or
 * review is missing; ERR_NOMEM. Free with worker_identity_free. */
enum error_code worker_identity_new(const struct worker_identity_config *cfg,
				    struct worker_identity **out, struct error *err);
void worker_identity_free(struct worker_identity *wi);

/*
 * The verdict of review r on a heartbeat that claims worker_id, for a
 * worker expected to be user (system:serviceaccount:NS:SA) with tokens
 * for audience: ERR_OK, ERR_UNAUTHENTICATED or ERR_PERMISSION as in the
 * table above. Pure.
 */
enum error_code worker_identity_judge(const struct kubeapi_token_review *r, const char *user,
				      const char *audience, const char *worker_id,
				      struct error *err);

/*
 * The unix seconds of the `exp` claim of a JWT's payload, read without
 * checking the signature (only for a token the apiserver accepted), or 0
 * when there is none or it cannot be read. Pure.
 */
int64_t worker_identity_token_expiry(const char *token);

/* Checks a heartbeat that claims worker_id with token (NULL: it carried
 * none) at wall-clock time now_ms: the cache, else a review; then the
 * verdict. */
enum error_code worker_identity_check_at(struct worker_identity *wi, const char *token,
					 const char *worker_id, uint64_t now_ms,
					 struct error *err);

/* worker_identity_check_at with the current time. */
enum error_code worker_identity_check(struct worker_identity *wi, const char *token,
				      const char *worker_id, struct error *err);

/* Reviews done and answered from the cache so far (tests, metrics). */
void worker_identity_counts(struct worker_identity *wi, uint64_t *reviews, uint64_t *hits);

#endif
