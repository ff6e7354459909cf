/*
 * cachegate.h - pods held back until their datasets are cached.
 *
 * A pod created with the scheduling gate "granary.io/cache" and the label
 * granary.io/wait-for-cache: "P" (a percentage, 1-100) is not scheduled
 * until every Dataset its claims name shows at least P% of its bytes
 * cached (status.cachedBytes of status.bytes, summed over the nodes):
 * the leading granary-meta then removes the gate and records an event on
 * the pod. A claim D in the pod's namespace names the Dataset D there; a
 * claim of a Granary StorageClass names its volume's Dataset in the
 * release namespace. Claims of other drivers are passed over.
 *
 * No pod waits forever: the gate goes too, with a Warning event, when a
 * Dataset it waits for is Failed, when the pod mounts no Dataset, or when
 * the pod has waited granary.io/wait-for-cache-seconds (annotation;
 * CACHEGATE_TIMEOUT_S by default). The pods are followed with a list and a
 * watch of that label. A pod's ADDED or MODIFIED event judges that pod
 * alone, so that a job of N gated pods costs N verdicts as it starts, not
 * N^2. Every CACHEGATE_EVERY_MS a round judges every gated pod again,
 * reading each Dataset they name once: the cached figures change with the
 * workers' heartbeats, not with an API event of the pod, and a round is
 * how a Dataset's new status reaches the pods gated on it.
 */
#ifndef GRANARY_META_CACHEGATE_H
#define GRANARY_META_CACHEGATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "kube/kubeapi.h"

#define CACHEGATE_GATE "granary.io/cache"
#define CACHEGATE_LABEL "granary.io/wait-for-cache"
#define CACHEGATE_TIMEOUT_ANNOTATION "granary.io/wait-for-cache-seconds"
#define CACHEGATE_TIMEOUT_S 1800
#define CACHEGATE_EVERY_MS 5000
#define CACHEGATE_CLAIMS_MAX 16

/* --- judging one pod (pure) ------------------------------------------------ */

/* What a pod asks: the percentage and the longest wait. */
struct cachegate_ask {
	unsigned percent;
	uint64_t timeout_s;
};

/* The label and the annotation. ERR_INVALID naming which and why. */
enum error_code cachegate_ask(json_t *pod, struct cachegate_ask *out, struct error *err);

/* The index of the gate in spec.schedulingGates, or -1. */
int cachegate_index(json_t *pod);

/* The claims the pod's volumes name, at most max; returns how many. */
size_t cachegate_claims(json_t *pod, const char **out, size_t max);

enum cachegate_verdict {
	CACHEGATE_WAIT,
	CACHEGATE_OPEN,          /* every Dataset is cached enough */
	CACHEGATE_OPEN_WARNING,  /* opened for another reason (says which) */
};

/*
 * The verdict for a pod that asks ask and has waited waited_s, given the
 * Dataset object of each of its n claims (NULL: the claim is not a
 * Dataset's). *reason is the event's reason; msg says what was seen
 * ("Dataset imagenet 42% cached of 90% asked").
 */
enum cachegate_verdict cachegate_judge(const struct cachegate_ask *ask,
				       const char *const *claims, json_t *const *datasets,
				       size_t n, uint64_t waited_s, const char **reason, char *msg,
				       size_t size);

/* --- the controller ---------------------------------------------------------- */

struct cachegate_config {
	struct kubeapi *kube;
	const char *mirror_ns;   /* the release namespace: StorageClass claims' Datasets */
	bool (*stop)(void);      /* the daemon is stopping */
};

struct cachegate;

enum error_code cachegate_start(const struct cachegate_config *cfg, struct cachegate **out,
				struct error *err);
/* Verdicts so far, one per pod judged (an event's or a round's): the
 * tests' measure of the work done. */
uint64_t cachegate_judged(struct cachegate *g);

/* Ends the watch (within a second) or a backoff (at once), waits for a call
 * in flight (at most the Kubernetes API's timeout) and frees g; NULL is a
 * no-op. */
void cachegate_stop(struct cachegate *g);

#endif
