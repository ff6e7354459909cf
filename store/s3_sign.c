/*
 * s3_sign.c - AWS Signature Version 4 (header form) for S3.
 */
#include "store/s3_sign.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "common/hmac.h"

#define SIGN_MAX_HEADERS 16

size_t s3_uri_encode(const char *in, bool keep_slash, char *out, size_t out_size)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;

	for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
		unsigned char c = *p;
		int keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			   (c >= '0' && c <= '9') || c == '-' || c == '.' ||
			   c == '_' || c == '~' || (keep_slash && c == '/');

		if (keep) {
			if (n + 1 < out_size)
				out[n] = (char)c;
			n++;
		} else {
			if (n + 3 < out_size) {
				out[n] = '%';
				out[n + 1] = hex[c >> 4];
				out[n + 2] = hex[c & 15];
			}
			n += 3;
		}
	}
	if (out_size > 0)
		out[n < out_size ? n : out_size - 1] = '\0';
	return n;
}

void s3_amz_date(time_t t, char out[17])
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

static void to_hex(const unsigned char *in, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[in[i] >> 4];
		out[2 * i + 1] = hex[in[i] & 15];
	}
	out[2 * n] = '\0';
}

/*
 * OpenSSL 3's one-shot SHA256() looks its algorithm up by name at every
 * call (a locked lookup): the digest is fetched once. The HMACs go
 * through common/hmac.h for the same reason.
 */
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256_md;

static void sha256_fetch(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static bool sha256(const void *data, size_t len, unsigned char out[SHA256_DIGEST_LENGTH])
{
	pthread_once(&sha256_once, sha256_fetch);
	return sha256_md && EVP_Digest(data, len, out, NULL, sha256_md, NULL) == 1;
}

/* OpenSSL fails only where it cannot allocate or load its default provider. */
static enum error_code crypto_failed(const char *what, struct error *err)
{
	return error_set(err, ERR_NOMEM, "sign: %s failed in OpenSSL (out of memory?)", what);
}

enum error_code s3_payload_sha256(const void *data, size_t len, char out[65], struct error *err)
{
	unsigned char digest[SHA256_DIGEST_LENGTH];

	if (!sha256(data, len, digest))
		return crypto_failed("SHA-256", err);
	to_hex(digest, sizeof(digest), out);
	return ERR_OK;
}

/* HMAC-SHA256 of msg under key; false when OpenSSL failed (out of memory). */
static bool hmac(const void *key, size_t keylen, const char *msg,
		 unsigned char out[SHA256_DIGEST_LENGTH])
{
	EVP_MAC_CTX *ctx = hmac_sha256_begin(key, keylen);
	unsigned char md[HMAC_SHA256_LEN];
	bool ok;

	/* Through md: callers chain the key into the output buffer. */
	ok = ctx && EVP_MAC_update(ctx, (const unsigned char *)msg, strlen(msg)) == 1 &&
	     hmac_sha256_end(ctx, md);
	if (ok)
		memcpy(out, md, sizeof(md));
	OPENSSL_cleanse(md, sizeof(md));
	return ok;
}

static int cmp_header(const void *a, const void *b)
{
	return strcmp(((const struct s3_header *)a)->name,
		      ((const struct s3_header *)b)->name);
}

/* Appends to a fixed buffer; *len counts what was wanted so overflow is
 * detected once at the end. */
static void append(char *buf, size_t size, size_t *len, const char *s)
{
	size_t n = strlen(s);

	if (*len + n < size)
		memcpy(buf + *len, s, n + 1);
	*len += n;
}

enum error_code s3_signing_key_derive(const struct store_credentials *cred, const char *date,
				      const char *region, struct s3_signing_key *out,
				      struct error *err)
{
	char secret_key[256];
	bool ok;
	int n;

	if (strnlen(date, 8) != 8)
		return error_set(err, ERR_INVALID, "sign: date '%s' is not YYYYMMDD", date);
	if (strlen(region) >= sizeof(out->region))
		return error_set(err, ERR_INVALID, "sign: region '%s' is too long", region);
	n = snprintf(secret_key, sizeof(secret_key), "AWS4%s", cred->secret_access_key);
	if (n < 0 || (size_t)n >= sizeof(secret_key)) {
		OPENSSL_cleanse(secret_key, sizeof(secret_key));
		return error_set(err, ERR_INVALID, "sign: secret access key too long");
	}
	memcpy(out->date, date, 8);
	out->date[8] = '\0';
	snprintf(out->region, sizeof(out->region), "%s", region);
	ok = hmac(secret_key, (size_t)n, out->date, out->key);
	OPENSSL_cleanse(secret_key, sizeof(secret_key));
	ok = ok && hmac(out->key, sizeof(out->key), region, out->key) &&
	     hmac(out->key, sizeof(out->key), "s3", out->key) &&
	     hmac(out->key, sizeof(out->key), "aws4_request", out->key);
	if (!ok) {
		/* No date either: a caller that keeps the key for the day
		 * (store_s3.c) derives it again at the next request instead
		 * of signing with zeros until midnight. */
		OPENSSL_cleanse(out->key, sizeof(out->key));
		out->date[0] = '\0';
		return crypto_failed("HMAC-SHA256", err);
	}
	return ERR_OK;
}

enum error_code s3_sign_v4(const struct store_credentials *cred,
			   const struct s3_sign_request *req, char *out,
			   size_t out_size, struct error *err)
{
	struct s3_signing_key key;
	enum error_code rc;

	rc = s3_signing_key_derive(cred, req->amz_date, req->region, &key, err);
	if (rc == ERR_OK)
		rc = s3_sign_v4_key(cred, &key, req, out, out_size, err);
	OPENSSL_cleanse(&key, sizeof(key));
	return rc;
}

enum error_code s3_sign_v4_key(const struct store_credentials *cred,
			       const struct s3_signing_key *key,
			       const struct s3_sign_request *req, char *out, size_t out_size,
			       struct error *err)
{
	struct s3_header sorted[SIGN_MAX_HEADERS];
	unsigned char digest[SHA256_DIGEST_LENGTH];
	char canonical[8192], signed_headers[512], to_sign[512];
	char hash_hex[2 * SHA256_DIGEST_LENGTH + 1], sig_hex[2 * SHA256_DIGEST_LENGTH + 1];
	char scope[128];
	size_t clen = 0, slen = 0;
	int n;

	if (strncmp(req->amz_date, key->date, 8) != 0 || strcmp(req->region, key->region) != 0)
		return error_set(err, ERR_INVALID,
				 "sign: a request of %.8s in '%s' with the key of %s in '%s'",
				 req->amz_date, req->region, key->date, key->region);
	if (req->nheaders > SIGN_MAX_HEADERS)
		return error_set(err, ERR_INVALID, "sign: %zu headers, at most %d",
				 req->nheaders, SIGN_MAX_HEADERS);
	for (size_t i = 0; i < req->nheaders; i++)
		sorted[i] = req->headers[i];
	qsort(sorted, req->nheaders, sizeof(*sorted), cmp_header);

	append(canonical, sizeof(canonical), &clen, req->method);
	append(canonical, sizeof(canonical), &clen, "\n");
	append(canonical, sizeof(canonical), &clen, req->canonical_uri);
	append(canonical, sizeof(canonical), &clen, "\n");
	append(canonical, sizeof(canonical), &clen, req->canonical_query);
	append(canonical, sizeof(canonical), &clen, "\n");
	signed_headers[0] = '\0';
	for (size_t i = 0; i < req->nheaders; i++) {
		for (const char *p = sorted[i].name; *p; p++)
			if (*p >= 'A' && *p <= 'Z')
				return error_set(err, ERR_INVALID,
						 "sign: header '%s' is not lowercase",
						 sorted[i].name);
		append(canonical, sizeof(canonical), &clen, sorted[i].name);
		append(canonical, sizeof(canonical), &clen, ":");
		append(canonical, sizeof(canonical), &clen, sorted[i].value);
		append(canonical, sizeof(canonical), &clen, "\n");
		if (i > 0)
			append(signed_headers, sizeof(signed_headers), &slen, ";");
		append(signed_headers, sizeof(signed_headers), &slen, sorted[i].name);
	}
	append(canonical, sizeof(canonical), &clen, "\n");
	append(canonical, sizeof(canonical), &clen, signed_headers);
	append(canonical, sizeof(canonical), &clen, "\n");
	append(canonical, sizeof(canonical), &clen, req->payload_hash);
	if (clen >= sizeof(canonical) || slen >= sizeof(signed_headers))
		return error_set(err, ERR_INVALID, "sign: request too long to sign");

	if (!sha256(canonical, clen, digest))
		return crypto_failed("SHA-256", err);
	to_hex(digest, sizeof(digest), hash_hex);
	snprintf(scope, sizeof(scope), "%s/%s/s3/aws4_request", key->date, key->region);
	snprintf(to_sign, sizeof(to_sign), "AWS4-HMAC-SHA256\n%s\n%s\n%s",
		 req->amz_date, scope, hash_hex);
	if (!hmac(key->key, sizeof(key->key), to_sign, digest))
		return crypto_failed("HMAC-SHA256", err);
	to_hex(digest, sizeof(digest), sig_hex);

	n = snprintf(out, out_size,
		     "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
		     cred->access_key_id, scope, signed_headers, sig_hex);
	if (n < 0 || (size_t)n >= out_size)
		return error_set(err, ERR_INVALID, "sign: authorization header too long");
	return ERR_OK;
}
