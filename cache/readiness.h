/*
 * readiness.h - what granary-worker's GET /readyz answers: whether the
 * worker can do its job now, and if not, why, in one line.
 *
 * Ready when
 *   1. the cache directory is usable (blockstore_check_usable: a file can
 *      be made in it, and it is not full beyond what eviction fixes); and
 *   2. with meta.address set, granary-meta accepted a heartbeat of this
 *      worker within the heartbeat expiry (the expiry_ms of meta's last
 *      HeartbeatReply; READINESS_DEFAULT_EXPIRY_MS until meta has answered
 *      once). Past it meta has dropped the worker from the membership: no
 *      mount picks it as a block owner, and the datasets it serves are the
 *      ones meta listed last. A worker that has never had a heartbeat
 *      accepted is not ready either.
 *
 * The membership thread (cache/worker_meta.c) reports each accepted
 * heartbeat and each failed call to meta; the HTTP server asks
 * readiness_check. The reasons, for /readyz's 503 body:
 *
 *   granary-meta unreachable at ADDRESS since 12s: <cause>
 *   granary-meta at ADDRESS refuses the heartbeat since 12s: <cause>
 *   no heartbeat accepted by granary-meta at ADDRESS for 20s
 *   not joined granary-meta at ADDRESS yet
 *   stopping: this worker left granary-meta at ADDRESS and serves only the
 *     requests in progress
 *   cache directory '/c' is not writable: ...   (blockstore.h)
 *
 * "since" counts from the first failed call after the last accepted
 * heartbeat (from start when none was). A change of verdict is logged once
 * (warn with the reason when it starts failing, info when it passes
 * again), not at every probe; a change of reason while failing is logged
 * too.
 *
 * Times are the caller's (retry_now_ms(), monotonic), so that tests can
 * set them. Thread-safe: one mutex guards the state.
 */
#ifndef GRANARY_CACHE_READINESS_H
#define GRANARY_CACHE_READINESS_H

#include <stdbool.h>
#include <stdint.h>

#include "cache/blockstore.h"
#include "common/error.h"

/* meta's default heartbeat.expiry, until meta names its own. */
#define READINESS_DEFAULT_EXPIRY_MS 15000

struct readiness;

/*
 * bs (borrowed, may be NULL: no cache check) must outlive the object.
 * meta_address: "" or NULL for a standalone worker (no meta check); it is
 * copied. started_ms: now. ERR_NOMEM.
 */
enum error_code readiness_new(struct blockstore *bs, const char *meta_address,
			      uint64_t started_ms, struct readiness **out, struct error *err);
void readiness_free(struct readiness *r);

/* granary-meta accepted a heartbeat at now_ms and named expiry_ms (0: keep
 * the last one). */
void readiness_heartbeat_ok(struct readiness *r, uint64_t now_ms, uint64_t expiry_ms);

/* The worker told meta it leaves (SIGTERM): not ready from now on, with
 * meta set (a standalone worker joined nothing to leave). */
void readiness_left(struct readiness *r);

/* A call to meta failed at now_ms: unreachable (UNAVAILABLE, TIMEOUT) or
 * refused; cause is the call's message. */
void readiness_meta_failed(struct readiness *r, uint64_t now_ms, bool unreachable,
			   const char *cause);

/* ERR_OK when ready; otherwise ERR_UNAVAILABLE with the reason (the first
 * check that fails). Logs a change of verdict. */
enum error_code readiness_check(struct readiness *r, uint64_t now_ms, struct error *err);

#endif
