/*
 * dsmirror.h - a claim of a StorageClass shown as a Dataset: CreateVolume
 * makes a Dataset object named after the volume in the release namespace
 * (label granary.io/volume), DeleteVolume removes it, so that
 * `kubectl get datasets -A` lists every dataset with its phase, size and
 * cached bytes. granary-meta's controller keeps such an object's status and
 * registers it again, with the cluster's credentials, when a new leader
 * lacks it; it makes no claim for it (the claim exists) (docs/datasets.md).
 * The adapter between the controller core and the Kubernetes API.
 */
#ifndef GRANARY_CSI_DSMIRROR_H
#define GRANARY_CSI_DSMIRROR_H

#include "common/error.h"
#include "csi/controller.h"
#include "kube/kubeapi.h"

/* Creates the Dataset for volume id (an existing one is kept). */
enum error_code dsmirror_create(struct kubeapi *k, const char *ns, const char *id,
				const struct controller_params *p, struct error *err);

/* Deletes it: ERR_OK when the apiserver took the deletion or there is none
 * (404); ERR_UNAVAILABLE when it could not be reached, did not answer in
 * time or answered 429 or 5xx (a retry may do); ERR_INTERNAL for another
 * answer (granary-csi's RBAC refused, say). The message names the Dataset,
 * the HTTP status and the apiserver's message. */
enum error_code dsmirror_delete(struct kubeapi *k, const char *ns, const char *id,
				struct error *err);

#endif
