/*
 * datasets.h - the Dataset controller: keeps granary-meta's registry equal
 * to the cluster's Dataset objects (granary.io/v1alpha1), which, backed by
 * etcd, are the durable truth (docs/datasets.md).
 *
 * One thread lists the Datasets and then watches them from the list's
 * resourceVersion (bookmarks keep it fresh; 410 Gone lists again; a
 * broken stream reconnects with backoff). Each object is brought to its
 * spec by a job on its own thread, at most max_jobs at once:
 *   - a finalizer first, so that no Dataset goes without its cleanup;
 *   - register (phase Listing, then Ready with files, bytes and the
 *     snapshot's generation), with the store credentials of the Secret
 *     spec.secretRef names, read from the Dataset's own namespace only and
 *     written for meta alone (mode 0600 under credentials_dir); without
 *     one, with the cluster's credentials only where a rule of
 *     cluster_credentials (meta/credpolicy.h) allows the namespace the
 *     source: else nothing is registered (a registration made before the
 *     rule went is deleted) and the Dataset is Failed, reason NotAllowed,
 *     without retries, since only its spec (a secretRef) or the rules (at
 *     meta's next start) change the verdict;
 *   - the PersistentVolume "granary-N.D" and the claim D in N bound to it,
 *     so that pods and TFJobs in N mount the dataset by the claim's name;
 *   - refresh when spec.refresh changes (phase Refreshing; mounts keep the
 *     old generation until they stage again);
 *   - deletion waits while pods in N use the claim (an event names them),
 *     then removes claim, volume, registration and credentials, and the
 *     finalizer last.
 * Every 10 s, the bytes of each Dataset that the workers' caches hold (as
 * their heartbeats report, in all and per node) go to status when they
 * changed.
 * A failure sets phase Failed with its reason and message, an event, and
 * a retry with backoff (5 s doubling to 5 min), so that a Dataset recovers
 * by itself once the cause is gone. Status goes through the status
 * subresource; the finalizer's writes carry the resourceVersion read and
 * are retried on 409 Conflict.
 *
 * A claim of a StorageClass is mirrored by granary-csi as a Dataset of the
 * release namespace labelled granary.io/volume (csi/dsmirror.h): its
 * registry name is the volume id, it gets status like any other, no claim
 * is made for it, and a new leader registers it again with the cluster's
 * credentials, whatever cluster_credentials says (the StorageClass is the
 * administrator's).
 *
 * Runs only in the granary-meta that holds the Lease (meta/main.c): a new
 * leader lists every Dataset and registers what its registry lacks.
 */
#ifndef GRANARY_META_DATASETS_H
#define GRANARY_META_DATASETS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "kube/kubeapi.h"
#include "meta/membership.h"
#include "meta/registry.h"

struct datasets_config {
	struct kubeapi *kube;
	struct registry *registry;
	struct membership *membership; /* the workers' cached bytes per dataset */
	const char *credentials_dir; /* absolute; created 0700 */
	const char *driver;          /* the CSI driver's name, for the volumes */
	const char *mirror_ns;       /* the release namespace: claims' mirrors live there */
	/* datasets.cluster_credentials: who may use the cluster's
	 * credentials (credpolicy_parse's text; NULL or "": no namespace) */
	const char *cluster_credentials;
	unsigned max_jobs;           /* registrations, refreshes, deletions at once */
	bool (*stop)(void);          /* the daemon is stopping */
};

struct datasets;

/* Starts the controller's thread. ERR_INVALID as credpolicy_parse for bad
 * cluster_credentials; ERR_NOMEM; fileio_mkdirs's error for
 * credentials_dir. */
enum error_code datasets_start(const struct datasets_config *cfg, struct datasets **out,
			       struct error *err);

/* Ends the watch (within a second) or a backoff (at once), waits for a
 * call in flight (at most the Kubernetes API's timeout), then up to wait_ms
 * for the jobs to end; true when they did and d is freed, false when a job
 * is still listing a store (d is then left to the process's exit). */
bool datasets_stop(struct datasets *d, uint64_t wait_ms);

#endif
