/*
 * token.c - the workers' request signatures: the cluster token's HMAC over
 * method, path, query and timestamp (block/token.h), on common/token.h.
 */
#include "block/token.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* HMAC over the four lines of a request; computed into sig. */
static enum error_code compute(const struct token *tok, const char *method, const char *path,
			       const char *query, int64_t ts, unsigned char sig[TOKEN_SIG_LEN])
{
	char tsbuf[24];
	const char *lines[4] = { method, path, query ? query : "", tsbuf };

	snprintf(tsbuf, sizeof(tsbuf), "%" PRId64, ts);
	return token_mac(tok, lines, 4, sig);
}

enum error_code token_sign(const struct token *tok, const char *method, const char *path,
			   const char *query, int64_t ts, char *out, size_t size)
{
	unsigned char sig[TOKEN_SIG_LEN];
	char sighex[TOKEN_SIG_HEX + 1];
	int n;

	if (compute(tok, method, path, query, ts, sig) != ERR_OK)
		return ERR_INTERNAL;
	token_hex(sig, TOKEN_SIG_LEN, sighex);
	n = snprintf(out, size, TOKEN_SCHEME " ts=%" PRId64 ",sig=%s", ts, sighex);
	return n >= 0 && (size_t)n < size ? ERR_OK : ERR_INVALID;
}

/* The scheme and its spaces, then "ts=<digits>,sig=<64 hex>"; 0 when well
 * formed. */
static int parse_header(const char *h, int64_t *ts, unsigned char sig[TOKEN_SIG_LEN])
{
	h = token_skip_scheme(h);
	return h ? token_parse_ts_sig(h, ts, sig) : -1;
}

enum error_code token_verify_at(const struct token *tok, const char *method, const char *path,
				const char *query, const char *header, int64_t now,
				struct error *err)
{
	unsigned char want[TOKEN_SIG_LEN], got[TOKEN_SIG_LEN];
	int64_t ts = 0;

	if (!header || !*header)
		return error_set(err, ERR_UNAUTHENTICATED,
				 "missing Authorization header (" TOKEN_SCHEME " ts=...,sig=...)");
	if (parse_header(header, &ts, got) < 0)
		return error_set(err, ERR_UNAUTHENTICATED,
				 "malformed Authorization header: expected '" TOKEN_SCHEME
				 " ts=<unix seconds>,sig=<64 hex digits>'");
	if (compute(tok, method, path, query, ts, want) != ERR_OK)
		return error_set(err, ERR_INTERNAL, "token: HMAC-SHA256 failed");
	return token_check(want, got, ts, now, TOKEN_WINDOW_S, "request signature",
			   "the worker's", err);
}

enum error_code token_verify(const struct token *tok, const char *method, const char *path,
			     const char *query, const char *header, struct error *err)
{
	return token_verify_at(tok, method, path, query, header, (int64_t)time(NULL), err);
}
