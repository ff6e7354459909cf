/*
 * lease.h - leader election with a coordination.k8s.io/v1 Lease, by the
 * rules client-go follows: a candidate takes the Lease when it has no
 * holder or when its renewTime has not changed for leaseDurationSeconds
 * as seen by the candidate's own monotonic clock (no clock skew between
 * nodes matters); every write carries the resourceVersion read, so two
 * candidates cannot both win (one gets 409 Conflict).
 *
 * The holder renews well within the duration (lease_try again) and must
 * stop acting as leader when it has not renewed for its renew deadline:
 * lease_renewed_ms says when it last did.
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
	unsigned duration_s;    /* leaseDurationSeconds */
};

struct lease;

enum error_code lease_new(struct kubeapi *k, const struct lease_config *cfg, struct lease **out,
			  struct error *err);
void lease_free(struct lease *l);

/*
 * One round: creates the Lease when there is none, takes it when it is
 * free or expired, renews it when this identity holds it. *held: whether
 * it does now. ERR_OK also when another holds it; ERR_UNAVAILABLE when
 * the apiserver did not answer; ERR_PERMISSION when RBAC refuses.
 */
enum error_code lease_try(struct lease *l, bool *held, struct error *err);

/* The holder last seen ("" when none), and when this identity last wrote
 * the Lease as its holder (monotonic ms, 0 = never). */
const char *lease_holder(const struct lease *l);
uint64_t lease_renewed_ms(const struct lease *l);

/* Clears the holder, when this identity holds it, so that a candidate
 * takes over at once instead of after leaseDurationSeconds. */
void lease_release(struct lease *l);

#endif
