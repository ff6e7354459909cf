/*
 * lease.h - leader election with a coordination.k8s.io/v1 Lease, by the
 * rules client-go follows: a candidate takes the Lease when it has no
 * holder or when its renewTime has not changed for the record's
 * leaseDurationSeconds as seen by the candidate's own monotonic clock,
 * counted from when the candidate's read returned (no clock skew between
 * nodes matters); every write carries the resourceVersion read, so two
 * candidates cannot both win (one gets 409 Conflict).
 *
 * The holder hands the Lease to lease_keep, which renews it on a thread of
 * its own every third of the duration and watches the renew deadline on
 * another: the holder must stop acting as leader the moment it has not
 * renewed for two thirds of the duration or finds another holder, however
 * long a call to the apiserver hangs. The deadline counts from when the
 * holder sent its last successful write, which is before any candidate can
 * have read it, so a candidate's clock never starts earlier and the holder
 * stops at least a third of the duration before any candidate may take the
 * Lease.
 *
 * Threads: lease_try and lease_holder are for one thread, and not once
 * lease_keep has started; lease_release and lease_free stop the keeper.
 */
#ifndef GRANARY_KUBE_LEASE_H
#define GRANARY_KUBE_LEASE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "kube/kubeapi.h"

struct lease_config {
	const char *namespace_;
	const char *name;
	const char *identity;   /* this candidate: its pod name */
	unsigned duration_s;    /* leaseDurationSeconds this candidate writes; 0 = 15 */
};

struct lease;

enum error_code lease_new(struct kubeapi *k, const struct lease_config *cfg, struct lease **out,
			  struct error *err);

/* Stops the keeper, when it runs (as lease_release does), and frees l;
 * NULL is a no-op. The Lease is left as it is. */
void lease_free(struct lease *l);

/*
 * One round: creates the Lease when there is none, takes it when it is
 * free or expired (by the record's leaseDurationSeconds, this
 * candidate's own when the record has none), renews it when this identity
 * holds it. *held: whether it does now. ERR_OK also when another holds
 * it; ERR_UNAVAILABLE when the apiserver did not answer; ERR_PERMISSION
 * when RBAC refuses.
 */
enum error_code lease_try(struct lease *l, bool *held, struct error *err);

/* The holder last seen ("" when none). */
const char *lease_holder(const struct lease *l);

/* Called once, on the keeper's watchdog thread, when the holder must stop
 * acting as leader at once (granary-meta exits). */
typedef void (*lease_lost_fn)(void *arg);

/*
 * For the holder, after lease_try said *held: renews the Lease every third
 * of the duration (after a failed round, again within a second) until
 * lease_release or lease_free, and calls lost(arg) when this identity has
 * not renewed for two thirds of the duration or the Lease names another
 * holder, or none. It never takes the Lease back, and renews no more once
 * lost was called. The reason is logged. ERR_NOMEM when a thread cannot
 * start; ERR_INVALID when the keeper runs already.
 */
enum error_code lease_keep(struct lease *l, lease_lost_fn lost, void *arg, struct error *err);

/*
 * For the holder, once it has stopped acting as leader: stops the keeper
 * (waiting for a renewal in flight, up to the API calls' timeouts; the
 * watchdog goes on watching meanwhile), then clears the holder, when this
 * identity holds it, so that a candidate takes over at once instead of
 * after leaseDurationSeconds.
 */
void lease_release(struct lease *l);

#endif
