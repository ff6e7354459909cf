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
 * A heartbeat without a token is ERR_UNAUTHENTICATED; one that cannot be
 * reviewed is ERR_UNAVAILABLE (the worker retries; the membership is not
 * touched, so a member stays until its normal expiry).
 *
 * Cache: heartbeats come every few seconds, so an authenticated review is
 * kept, under the SHA-256 of the token (never the token), and trusted
 * until the earlier of cache_ms after the review and the token's own
 * expiry (the `exp` of its JWT payload, trusted once the apiserver
 * accepted the token); then the token is reviewed again.
 *
 * Outages: a review the apiserver does not give (it cannot be reached,
 * does not answer within the API client's timeout, answers an error) is
 * answered from the review kept for the token, up to stale_ms after that
 * review and never past the token's expiry, so that an apiserver that is
 * away for a few minutes expires no worker whose token it had reviewed
 * (a token it refuses meanwhile is dropped at once). The price: a token
 * revoked during the outage (its pod deleted) is accepted until then. And
 * at most reviews_max reviews wait for the apiserver at once, each on the
 * heartbeat's thread: one more is answered from the review kept, or
 * refused with ERR_UNAVAILABLE without asking, so that an apiserver that
 * hangs holds at most reviews_max of meta's threads, each for at most the
 * client's timeout, whatever the number of workers.
 *
 * At most cache_max reviews are kept; a full cache drops those past
 * stale_ms, then the one to be dropped first. Reviews that did not
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

#define WORKER_IDENTITY_CACHE_MS 60000  /* default cache_ms */
#define WORKER_IDENTITY_STALE_MS 300000 /* default stale_ms */
#define WORKER_IDENTITY_CACHE_MAX 4096  /* default cache_max */
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
	uint64_t stale_ms;           /* 0 = WORKER_IDENTITY_STALE_MS; >= cache_ms */
	size_t cache_max;            /* 0 = WORKER_IDENTITY_CACHE_MAX */
	unsigned reviews_max;        /* reviews waiting at once; 0 = 1 */
};

struct worker_identity;

/* Copies cfg's strings. ERR_INVALID when ns, service_account, audience or
 * review is missing, or stale_ms is shorter than cache_ms; ERR_NOMEM. Free
 * with worker_identity_free. */
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
 * none) at wall-clock time now_ms: the cache, else a review (else the
 * cache, past cache_ms: see Outages); then the verdict. */
enum error_code worker_identity_check_at(struct worker_identity *wi, const char *token,
					 const char *worker_id, uint64_t now_ms,
					 struct error *err);

/* worker_identity_check_at with the current time. */
enum error_code worker_identity_check(struct worker_identity *wi, const char *token,
				      const char *worker_id, struct error *err);

/* Reviews done, answered from the cache while trusted, and answered from
 * it past cache_ms for want of a review, so far (tests, metrics). */
void worker_identity_counts(struct worker_identity *wi, uint64_t *reviews, uint64_t *hits,
			    uint64_t *stale);

#endif
