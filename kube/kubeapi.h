/*
 * kubeapi.h - Kubernetes API calls over HTTPS with libcurl and JSON with
 * jansson, as the pod's service account: the apiserver's address from
 * KUBERNETES_SERVICE_HOST/PORT, the CA and the token from the service
 * account's mounted files (the token is read again for every call: the
 * kubelet rotates it). Never logs the token. The node plugin's mount
 * pods and granary-meta's Dataset controller, Lease and worker identity
 * checks (TokenReview) use it.
 */
#ifndef GRANARY_KUBE_KUBEAPI_H
#define GRANARY_KUBE_KUBEAPI_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "common/error.h"

struct kubeapi;

/* base_url "" = in-cluster (https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT);
 * token_file and ca_file "" = the service account's. ERR_INVALID naming
 * what is missing. */
enum error_code kubeapi_new(const char *base_url, const char *token_file, const char *ca_file,
			    struct kubeapi **out, struct error *err);
void kubeapi_free(struct kubeapi *k);

/* The default of kubeapi_set_timeout. */
#define KUBEAPI_TIMEOUT_MS 10000

/*
 * How long one call may take, from the connection to the last byte of the
 * answer, before it fails with ERR_UNAVAILABLE naming the call and the
 * timeout ("GET https://10.96.0.1:443/api/v1/...: no answer within 10000
 * ms ..."), so that an apiserver that hangs holds no thread for longer;
 * 0 = KUBEAPI_TIMEOUT_MS. Every call but a watch (kubeapi_list: each page);
 * a watch gets this long to connect and its timeout_s plus this long in
 * all. Set it before k is shared between threads.
 */
void kubeapi_set_timeout(struct kubeapi *k, uint64_t timeout_ms);

/*
 * METHOD path (e.g. "/api/v1/namespaces/ns/pods") with body (may be
 * NULL). *status: the HTTP status (0 when no answer); *reply: the JSON
 * answer or NULL (may be NULL to drop it). ERR_OK for any answer;
 * ERR_UNAVAILABLE when the apiserver could not be reached, or did not
 * answer within the timeout (kubeapi_set_timeout);
 * ERR_NO_SPACE when the answer is larger than 4 MiB (a list: kubeapi_list).
 */
enum error_code kubeapi_call(struct kubeapi *k, const char *method, const char *path,
			     json_t *body, long *status, json_t **reply, struct error *err);

/* As kubeapi_call, with the body's Content-Type (for a PATCH:
 * "application/merge-patch+json" or "application/json-patch+json"). */
enum error_code kubeapi_call_ct(struct kubeapi *k, const char *method, const char *path,
				const char *content_type, json_t *body, long *status,
				json_t **reply, struct error *err);

/*
 * GET of a list (path: a collection, with its query, e.g.
 * "/api/v1/pods?labelSelector=x"), page by page as the API asks of large
 * ones (limit, continue), each answer within the 4 MiB of one answer: a
 * page over it is asked again with half the items. *status: the HTTP
 * status. On 200, *list is the first page with the items of every page
 * (its metadata.resourceVersion is the one snapshot all the pages show,
 * where a watch starts); else the apiserver's answer (a Status) or NULL.
 * A continue token that expired (410) lists again from the first page, up
 * to 3 times. The caller releases *list. Errors as kubeapi_call's.
 */
enum error_code kubeapi_list(struct kubeapi *k, const char *path, long *status, json_t **list,
			     struct error *err);

/*
 * One watch event: type is ADDED, MODIFIED, DELETED, BOOKMARK or ERROR
 * (object is then a Status). Returning false ends the watch.
 */
typedef bool (*kubeapi_event_fn)(const char *type, json_t *object, void *arg);

/*
 * GET path as a watch stream (path carries watch=1, resourceVersion and
 * timeoutSeconds): fn is called for each event as it arrives, until the
 * apiserver ends the stream (its timeoutSeconds), fn returns false, or
 * stop(arg) returns true (asked about once a second; may be NULL). *status:
 * the HTTP status (200, or 410 when resourceVersion is too old: list
 * again). ERR_OK when the stream ended in one of those ways;
 * ERR_UNAVAILABLE when the apiserver could not be reached or the stream
 * broke. A line that is not a JSON event ends the watch with ERR_PROTOCOL.
 */
enum error_code kubeapi_watch(struct kubeapi *k, const char *path, unsigned timeout_s,
			      kubeapi_event_fn fn, void *arg, bool (*stop)(void *arg),
			      long *status, struct error *err);

/* The object an event is about. */
struct kubeapi_ref {
	const char *api_version, *kind, *ns, *name, *uid;
};

/*
 * Records an event (type "Normal" or "Warning") about an object, as
 * component, in the object's namespace. ERR_OK once the apiserver took
 * it; otherwise the error names the reason and the apiserver's answer.
 */
enum error_code kubeapi_event(struct kubeapi *k, const struct kubeapi_ref *about,
			      const char *component, const char *type, const char *reason,
			      const char *message, struct error *err);

/*
 * What the apiserver says of a bearer token (a TokenReview): whether it
 * authenticated it for the audience asked, as whom, and the node of the
 * pod a projected service account token was issued to.
 */
#define KUBEAPI_NODE_NAME_EXTRA "authentication.kubernetes.io/node-name"

struct kubeapi_token_review {
	bool authenticated;     /* status.authenticated */
	bool audience_ok;       /* status.audiences holds the audience asked for */
	char username[256];     /* status.user.username, "" when none */
	char node_name[256];    /* status.user.extra[KUBEAPI_NODE_NAME_EXTRA][0], "" when none */
	char error[256];        /* status.error, "" when none */
};

/*
 * Asks the apiserver to review token for audience (POST
 * /apis/authentication.k8s.io/v1/tokenreviews; the caller's service
 * account needs create on tokenreviews). ERR_OK with *out filled whatever
 * the verdict; ERR_UNAVAILABLE when the apiserver could not be reached or
 * did not answer 201 (the message names the HTTP status and the
 * apiserver's message, never the token).
 */
enum error_code kubeapi_token_review(struct kubeapi *k, const char *token, const char *audience,
				     struct kubeapi_token_review *out, struct error *err);

/* The verdict of a TokenReview answer (the object) for audience: the pure
 * half of kubeapi_token_review. A field missing or of another type reads as
 * false or "". */
void kubeapi_token_review_parse(json_t *review, const char *audience,
				struct kubeapi_token_review *out);

/* The wait before trying the apiserver again after last_ms (0: the first
 * failure): 500 ms, doubling to 30 s. */
uint64_t kubeapi_backoff_ms(uint64_t last_ms);

/* The "message" of a Status answer, or "" . */
const char *kubeapi_message(json_t *reply);

/* Wall-clock time ms since the epoch as the API's MicroTime,
 * "2026-12-03T08:12:42.123000Z" (buf >= 32 bytes). */
void kubeapi_micro_time(int64_t unix_ms, char *buf, size_t size);

/* The same as the API's Time, to the second: "2026-12-03T08:12:42Z". */
void kubeapi_time(int64_t unix_ms, char *buf, size_t size);

#endif
