/*
 * token.c - HMAC-SHA256 request signatures with the cluster secret.
 */
#include "cache/token.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/fileio.h"

#define SIG_LEN 32 /* SHA-256 */

struct token {
	EVP_MAC *mac;        /* fetched once; shared read-only by all threads */
	size_t len;
	unsigned char secret[];
};

enum error_code token_new(const void *secret, size_t len, struct token **out,
			  struct error *err)
{
	struct token *tok;

	*out = NULL;
	if (len < TOKEN_SECRET_MIN)
		return error_set(err, ERR_INVALID,
				 "token secret is %zu bytes: it must have at least %d", len,
				 TOKEN_SECRET_MIN);
	if (len > TOKEN_SECRET_MAX)
		return error_set(err, ERR_INVALID,
				 "token secret is %zu bytes: it may have at most %d", len,
				 TOKEN_SECRET_MAX);
	tok = malloc(sizeof(*tok) + len);
	if (!tok)
		return error_set(err, ERR_NOMEM, "token: out of memory");
	tok->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (!tok->mac) {
		free(tok);
		return error_set(err, ERR_INTERNAL, "token: OpenSSL has no HMAC");
	}
	tok->len = len;
	memcpy(tok->secret, secret, len);
	*out = tok;
	return ERR_OK;
}

void token_free(struct token *tok)
{
	if (!tok)
		return;
	OPENSSL_cleanse(tok->secret, tok->len);
	EVP_MAC_free(tok->mac);
	free(tok);
}

enum error_code token_load_file(const char *path, struct token **out, struct error *err)
{
	unsigned char buf[TOKEN_SECRET_MAX + 2];
	struct stat sb;
	enum error_code rc;
	size_t len = 0;
	int fd = -1;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		int saved = errno;

		return error_set(err, error_from_errno(saved), "token file '%s': %s", path,
				 strerror(saved));
	}
	if (fstat(fd, &sb) < 0) {
		int saved = errno;

		rc = error_set(err, error_from_errno(saved), "token file '%s': %s", path,
			       strerror(saved));
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		rc = error_set(err, ERR_INVALID, "token file '%s': not a regular file", path);
		goto out;
	}
	if (sb.st_mode & (S_IRWXG | S_IRWXO)) {
		rc = error_set(err, ERR_PERMISSION,
			       "token file '%s' is readable or writable by group or others (mode %04o): chmod 600 it",
			       path, (unsigned)(sb.st_mode & 07777));
		goto out;
	}
	/* Read one byte more than the largest secret plus "\r\n" would need,
	 * so an oversized file is seen as such rather than cut. */
	while (len < sizeof(buf)) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int saved = errno;

			rc = error_set(err, error_from_errno(saved), "token file '%s': %s", path,
				       strerror(saved));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	rc = token_new(buf, len, out, err);
	if (rc != ERR_OK)
		error_wrap(err, "token file '%s'", path);
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	close(fd);
	return rc;
}

/* HMAC over the four lines; computed into sig. */
static int compute(const struct token *tok, const char *method, const char *path,
		   const char *query, int64_t ts, unsigned char sig[SIG_LEN])
{
	char tsbuf[24];
	EVP_MAC_CTX *ctx = NULL;
	OSSL_PARAM params[2];
	size_t outlen = 0;
	int ok = 0;

	snprintf(tsbuf, sizeof(tsbuf), "%" PRId64, ts);
	ctx = EVP_MAC_CTX_new(tok->mac);
	if (!ctx)
		goto out;
	params[0] = OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if (!EVP_MAC_init(ctx, tok->secret, tok->len, params))
		goto out;
	if (!EVP_MAC_update(ctx, (const unsigned char *)method, strlen(method)) ||
	    !EVP_MAC_update(ctx, (const unsigned char *)"\n", 1) ||
	    !EVP_MAC_update(ctx, (const unsigned char *)path, strlen(path)) ||
	    !EVP_MAC_update(ctx, (const unsigned char *)"\n", 1) ||
	    !EVP_MAC_update(ctx, (const unsigned char *)query, strlen(query)) ||
	    !EVP_MAC_update(ctx, (const unsigned char *)"\n", 1) ||
	    !EVP_MAC_update(ctx, (const unsigned char *)tsbuf, strlen(tsbuf)))
		goto out;
	if (!EVP_MAC_final(ctx, sig, &outlen, SIG_LEN) || outlen != SIG_LEN)
		goto out;
	ok = 1;
out:
	EVP_MAC_CTX_free(ctx);
	return ok;
}

enum error_code token_sign(const struct token *tok, const char *method, const char *path,
			   const char *query, int64_t ts, char *out, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char sig[SIG_LEN];
	char sighex[2 * SIG_LEN + 1];
	int n;

	if (!compute(tok, method, path, query ? query : "", ts, sig))
		return ERR_INTERNAL;
	for (int i = 0; i < SIG_LEN; i++) {
		sighex[2 * i] = hex[sig[i] >> 4];
		sighex[2 * i + 1] = hex[sig[i] & 15];
	}
	sighex[2 * SIG_LEN] = '\0';
	n = snprintf(out, size, TOKEN_SCHEME " ts=%" PRId64 ",sig=%s", ts, sighex);
	return n >= 0 && (size_t)n < size ? ERR_OK : ERR_INVALID;
}

/* "ts=<digits>,sig=<64 hex>" after the scheme; returns 0 when well formed. */
static int parse_header(const char *h, int64_t *ts, unsigned char sig[SIG_LEN])
{
	const size_t scheme_len = strlen(TOKEN_SCHEME);
	int64_t v = 0;
	int digits = 0;

	if (strncmp(h, TOKEN_SCHEME, scheme_len) != 0 || h[scheme_len] != ' ')
		return -1;
	h += scheme_len;
	while (*h == ' ')
		h++;
	if (strncmp(h, "ts=", 3) != 0)
		return -1;
	h += 3;
	for (; *h >= '0' && *h <= '9'; h++, digits++) {
		if (v > (INT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (*h - '0');
	}
	if (digits == 0 || strncmp(h, ",sig=", 5) != 0)
		return -1;
	h += 5;
	for (int i = 0; i < SIG_LEN; i++) {
		int hi = fileio_hex_value(h[2 * i]), lo;

		if (hi < 0)
			return -1;
		lo = fileio_hex_value(h[2 * i + 1]);
		if (lo < 0)
			return -1;
		sig[i] = (unsigned char)(hi << 4 | lo);
	}
	if (h[2 * SIG_LEN] != '\0')
		return -1;
	*ts = v;
	return 0;
}

enum error_code token_verify_at(const struct token *tok, const char *method, const char *path,
				const char *query, const char *header, int64_t now,
				struct error *err)
{
	unsigned char want[SIG_LEN], got[SIG_LEN];
	int64_t ts = 0;

	if (!header || !*header)
		return error_set(err, ERR_UNAUTHENTICATED,
				 "missing Authorization header (" TOKEN_SCHEME " ts=...,sig=...)");
	if (parse_header(header, &ts, got) < 0)
		return error_set(err, ERR_UNAUTHENTICATED,
				 "malformed Authorization header: expected '" TOKEN_SCHEME
				 " ts=<unix seconds>,sig=<64 hex digits>'");
	if (!compute(tok, method, path, query ? query : "", ts, want))
		return error_set(err, ERR_INTERNAL, "token: HMAC-SHA256 failed");
	if (CRYPTO_memcmp(want, got, SIG_LEN) != 0)
		return error_set(err, ERR_PERMISSION, "request signature does not match");
	if (ts < now - TOKEN_WINDOW_S || ts > now + TOKEN_WINDOW_S)
		return error_set(err, ERR_PERMISSION,
				 "request timestamp %" PRId64 " is %" PRId64
				 " s away from the worker's clock (at most %d allowed)",
				 ts, ts > now ? ts - now : now - ts, TOKEN_WINDOW_S);
	return ERR_OK;
}

enum error_code token_verify(const struct token *tok, const char *method, const char *path,
			     const char *query, const char *header, struct error *err)
{
	return token_verify_at(tok, method, path, query, header, (int64_t)time(NULL), err);
}
