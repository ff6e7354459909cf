/*
 * meta_auth.h - who may call granary-meta: signed calls, three roles.
 *
 * Each role has a key of its own (a secret file, common/token.h's rules):
 *
 *   csi     granary-csi, controller and node plugin: every method but
 *           Heartbeat (RegisterDataset, DeleteDataset and RefreshDataset
 *           are theirs alone)
 *   worker  granary-worker: Heartbeat (theirs alone), GetDataset,
 *           ListDatasets, GetSnapshot, ListWorkers
 *   mount   granary-fuse: GetDataset, GetSnapshot, ListWorkers
 *
 * A client sends with every call the gRPC metadata
 *
 *     authorization: Granary-HMAC role=<role>,ts=<unix seconds>,sig=<64 lowercase hex>
 *
 * where sig is HMAC-SHA256, keyed with the role's key, over
 *
 *     "granary-meta" "\n" ROLE "\n" METHOD "\n" TS "\n" BODY
 *
 * METHOD the full method name ("/granary.v1.Meta/Heartbeat"), TS the
 * decimal seconds of ts=, BODY the lowercase hex SHA-256 of the request
 * message's bytes as sent. The first line keeps these signatures apart from
 * the workers' HTTP ones (block/token.h) even where a key is the cluster
 * token; the body binds the signature to one request, so one seen on the
 * network cannot carry another worker address or dataset.
 *
 * granary-meta checks, in this order: the metadata is there
 * (ERR_UNAUTHENTICATED), it is well formed and names a known role
 * (ERR_UNAUTHENTICATED), meta has that role's key, the signature matches,
 * ts is within META_AUTH_WINDOW_S of its clock, and the role may call the
 * method (each ERR_PERMISSION). Messages name the role, the method and what
 * is wrong, never a key or a signature.
 */
#ifndef GRANARY_META_META_AUTH_H
#define GRANARY_META_META_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/token.h"

#define META_AUTH_METADATA "authorization" /* the gRPC metadata key */
#define META_AUTH_WINDOW_S 300             /* accepted clock difference, seconds */
#define META_AUTH_HEADER_MAX 160           /* a signature's value always fits */
/* A Heartbeat's second credential in Kubernetes: the worker pod's service
 * account token (meta/worker_identity.h). A bearer token: never logged. */
#define META_IDENTITY_METADATA "granary-worker-identity"
#define META_IDENTITY_TOKEN_MAX 16384 /* the longest token sent or accepted */

enum meta_role { META_ROLE_CSI, META_ROLE_WORKER, META_ROLE_MOUNT, META_ROLES };

/* "csi", "worker", "mount". */
const char *meta_role_name(enum meta_role role);

/* True when role may call method (a full method name). */
bool meta_role_allows(enum meta_role role, const char *method);

/*
 * The metadata value for a call of method with the request bytes body/len
 * at time ts, signed with key as role, into out (at least
 * META_AUTH_HEADER_MAX bytes). ERR_INVALID when out is too small,
 * ERR_INTERNAL when OpenSSL fails.
 */
enum error_code meta_auth_sign(const struct token *key, enum meta_role role,
			       const char *method, const void *body, size_t len, int64_t ts,
			       char *out, size_t size);

/* What granary-meta accepts. */
struct meta_auth {
	struct token *keys[META_ROLES]; /* NULL: calls as that role are refused */
	bool insecure;                  /* no key at all: every call is served */
};

/*
 * Loads the key file of each role (files[role]; NULL or "" = no key for the
 * role) into a. With no file at all, insecure must be true (a meta for
 * local tests and demos that serves unsigned calls); with any file it must
 * be false. Two roles' keys must differ (the mount role's key is the cluster
 * token): the same secret for two is ERR_INVALID naming both settings.
 * ERR_INVALID naming what is missing or contradictory, or token_load_file's
 * error naming the file. Release with meta_auth_release.
 */
enum error_code meta_auth_load(struct meta_auth *a, const char *const files[META_ROLES],
			       bool insecure, struct error *err);
void meta_auth_release(struct meta_auth *a);

/* Checks the metadata value header (NULL when the call has none) of a call
 * of method with request bytes body/len at time now; see above. */
enum error_code meta_auth_check_at(const struct meta_auth *a, const char *method,
				   const char *header, const void *body, size_t len, int64_t now,
				   struct error *err);

/* meta_auth_check_at with the current time, as an rpc_server_auth_fn (arg
 * is the struct meta_auth). */
enum error_code meta_auth_check(const char *method, const char *header, const void *body,
				size_t len, void *arg, struct error *err);

#endif
