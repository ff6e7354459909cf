/*
 * token.h - the cluster token that authenticates data-plane requests.
 *
 * Every node shares one secret (a Kubernetes Secret mounted as a file). A
 * client signs each request with HMAC-SHA256 over
 *
 *     METHOD "\n" PATH "\n" QUERY "\n" TIMESTAMP
 *
 * where PATH and QUERY are exactly the bytes sent on the request line
 * (percent-encoded as on the wire, QUERY without the '?', "" when there is
 * none) and TIMESTAMP is the decimal Unix time in seconds. It sends
 *
 *     Authorization: Granary-HMAC ts=<seconds>,sig=<64 lowercase hex>
 *
 * and the worker recomputes the signature, compares in constant time and
 * accepts a timestamp within TOKEN_WINDOW_S of its own clock. The body is
 * not signed: the data plane runs inside the cluster network, and the token
 * keeps other tenants' pods out, not a man in the middle.
 *
 * The secret file, the MAC and the final check are common/token.h's,
 * shared with granary-meta's call signatures.
 */
#ifndef GRANARY_BLOCK_TOKEN_H
#define GRANARY_BLOCK_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/token.h"

#define TOKEN_WINDOW_S 300         /* accepted clock difference, seconds */
#define TOKEN_HEADER_MAX 128       /* the Authorization value always fits */

/*
 * Writes the Authorization header value for a request into out (at least
 * TOKEN_HEADER_MAX bytes): "Granary-HMAC ts=1700000000,sig=ab12...".
 * query may be NULL (same as ""). Returns ERR_OK, or ERR_INVALID if out is
 * too small.
 */
enum error_code token_sign(const struct token *tok, const char *method, const char *path,
			   const char *query, int64_t ts, char *out, size_t size);

/*
 * Checks an Authorization header value against the request at time now.
 * ERR_OK when it is valid; ERR_UNAUTHENTICATED when the header is missing
 * (NULL or "") or malformed; ERR_PERMISSION when the signature does not
 * match or the timestamp is more than TOKEN_WINDOW_S away from now. err
 * says which, without echoing the signature.
 */
enum error_code token_verify_at(const struct token *tok, const char *method, const char *path,
				const char *query, const char *header, int64_t now,
				struct error *err);

/* token_verify_at with the current time. */
enum error_code token_verify(const struct token *tok, const char *method, const char *path,
			     const char *query, const char *header, struct error *err);

#endif
