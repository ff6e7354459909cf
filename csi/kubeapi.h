/*
 * kubeapi.h - the few Kubernetes API calls the node plugin makes (its
 * mount pods: create, read, delete), over HTTPS with libcurl and JSON
 * with jansson, as the pod's service account: the apiserver's address
 * from KUBERNETES_SERVICE_HOST/PORT, the CA and the token from the
 * service account's mounted files (the token is read again for every
 * call: the kubelet rotates it). Never logs the token.
 */
#ifndef GRANARY_CSI_KUBEAPI_H
#define GRANARY_CSI_KUBEAPI_H

#include <jansson.h>

#include "common/error.h"

struct kubeapi;

/* base_url "" = in-cluster (https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT);
 * token_file and ca_file "" = the service account's. ERR_INVALID naming
 * what is missing. */
enum error_code kubeapi_new(const char *base_url, const char *token_file, const char *ca_file,
			    struct kubeapi **out, struct error *err);
void kubeapi_free(struct kubeapi *k);

/*
 * METHOD path (e.g. "/api/v1/namespaces/ns/pods") with body (may be
 * NULL). *status: the HTTP status (0 when no answer); *reply: the JSON
 * answer or NULL (may be NULL to drop it). ERR_OK for any answer;
 * ERR_UNAVAILABLE when the apiserver could not be reached in time.
 */
enum error_code kubeapi_call(struct kubeapi *k, const char *method, const char *path,
			     json_t *body, long *status, json_t **reply, struct error *err);

/* The "message" of a Status answer, or "" . */
const char *kubeapi_message(json_t *reply);

#endif
