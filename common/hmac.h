/*
 * hmac.h - HMAC-SHA256 through one OpenSSL context per thread.
 *
 * OpenSSL 3 looks an algorithm up by name (a locked lookup) whenever a
 * context is made or given a digest by name; a request's signature would
 * pay it each time. The MAC is fetched once per process, and each thread
 * keeps one context set to SHA-256, given a new key at each use. A
 * thread's context holds the pads of the last key it was given until the
 * thread ends (EVP_MAC_CTX_free cleanses them then).
 */
#ifndef GRANARY_COMMON_HMAC_H
#define GRANARY_COMMON_HMAC_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>

#define HMAC_SHA256_LEN 32

/* Whether OpenSSL gave the MAC (fetched at the first call of any of these). */
bool hmac_sha256_ready(void);

/* The calling thread's context, keyed with key; feed it with
 * EVP_MAC_update and finish with hmac_sha256_end. NULL when OpenSSL
 * failed (out of memory, or no default provider). */
EVP_MAC_CTX *hmac_sha256_begin(const void *key, size_t keylen);

/* The MAC of what was fed since hmac_sha256_begin; false when OpenSSL failed. */
bool hmac_sha256_end(EVP_MAC_CTX *ctx, unsigned char out[HMAC_SHA256_LEN]);

#endif
