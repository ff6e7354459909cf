/*
 * token.h - shared secrets kept in files, and HMAC-SHA256 signatures made
 * with them.
 *
 * Two schemes sign with a struct token: the workers' HTTP requests with the
 * cluster token (block/token.h, docs/worker-api.md) and granary-meta's gRPC
 * calls with a role key (meta/meta_auth.h, docs/meta.md). Both send
 *
 *     Granary-HMAC [role=<role>,]ts=<unix seconds>,sig=<64 lowercase hex>
 *
 * where sig is HMAC-SHA256 over lines of text joined with "\n" (the scheme
 * decides which lines), compared in constant time, and ts must lie within a
 * window of the checker's clock. This file holds what the two share: the
 * secret file's rules, the MAC, the "ts=...,sig=..." syntax and the check.
 *
 * A struct token is immutable after token_load_file/token_new and may be
 * shared by any number of threads. The secret is wiped on token_free and
 * never appears in messages or logs.
 */
#ifndef GRANARY_COMMON_TOKEN_H
#define GRANARY_COMMON_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define TOKEN_SECRET_MIN 16        /* bytes a secret must have at least */
#define TOKEN_SECRET_MAX 4096      /* a larger file is not a token */
#define TOKEN_SCHEME "Granary-HMAC"
#define TOKEN_SIG_LEN 32           /* HMAC-SHA256 */
#define TOKEN_SIG_HEX (2 * TOKEN_SIG_LEN)

struct token;

/*
 * Reads the secret from path: the whole file, one trailing "\n" (or
 * "\r\n") stripped. Refuses a file that group or others may read or write
 * (ERR_PERMISSION: "token file '/x' is readable or writable by group or
 * others (mode 0644): chmod 600 it"), one shorter than TOKEN_SECRET_MIN or
 * longer than TOKEN_SECRET_MAX bytes (ERR_INVALID), a missing one
 * (ERR_NOT_FOUND). *out is freed with token_free.
 */
enum error_code token_load_file(const char *path, struct token **out, struct error *err);

/* Same from memory (tests, and clients that hold the secret already). */
enum error_code token_new(const void *secret, size_t len, struct token **out,
			  struct error *err);

void token_free(struct token *tok);

/*
 * HMAC-SHA256 keyed with the secret over the n strings joined with "\n"
 * (no "\n" after the last). Returns ERR_INTERNAL when OpenSSL fails.
 */
enum error_code token_mac(const struct token *tok, const char *const *lines, size_t n,
			  unsigned char sig[TOKEN_SIG_LEN]);

/* Lowercase hex of len bytes into out (2 * len + 1 bytes, NUL-terminated). */
void token_hex(const unsigned char *bytes, size_t len, char *out);

/* After TOKEN_SCHEME, one space and any more spaces at the start of h:
 * what follows them, or NULL when h does not start with the scheme. */
const char *token_skip_scheme(const char *h);

/*
 * Parses "ts=<decimal seconds>,sig=<64 hex digits>" that ends the string.
 * Returns 0 with *ts and sig set, -1 when s is not exactly that.
 */
int token_parse_ts_sig(const char *s, int64_t *ts, unsigned char sig[TOKEN_SIG_LEN]);

/*
 * The check both schemes end with: got must equal want (constant time),
 * else ERR_PERMISSION "<what> does not match"; then ts must be at most
 * window_s seconds from now, else ERR_PERMISSION "<what> is from <ts>, <n>
 * s away from <clock> clock (at most <window_s> allowed)", clock being
 * "the worker's" or "granary-meta's". Neither signature is ever written
 * into err.
 */
enum error_code token_check(const unsigned char want[TOKEN_SIG_LEN],
			    const unsigned char got[TOKEN_SIG_LEN], int64_t ts, int64_t now,
			    int64_t window_s, const char *what, const char *clock,
			    struct error *err);

#endif
