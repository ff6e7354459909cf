/*
 * s3_sign.h - AWS Signature Version 4 for S3 requests, and S3's URI
 * encoding rules.
 *
 * We sign ourselves (OpenSSL HMAC-SHA256) rather than through libcurl's
 * CURLOPT_AWS_SIGV4, so that the canonical request is ours to see and test
 * against the published examples, the session token and payload hash are
 * signed like every other header, and one code path serves all libcurl
 * versions. Thread-safe, no I/O; each thread that signs keeps one HMAC
 * context of its own (common/hmac.h). ERR_NOMEM below is OpenSSL failing to
 * allocate or to load its default provider.
 */
#ifndef GRANARY_STORE_S3_SIGN_H
#define GRANARY_STORE_S3_SIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "store/store.h"

/* SHA-256 of the empty body: the payload hash of GET and HEAD. */
#define S3_EMPTY_PAYLOAD_SHA256 \
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct s3_header {
	const char *name;  /* lowercase */
	const char *value;
};

struct s3_sign_request {
	const char *method;          /* "GET" */
	const char *canonical_uri;   /* URI-encoded path, "/bucket/key" */
	const char *canonical_query; /* sorted, encoded "a=1&b=2"; "" when none */
	const struct s3_header *headers; /* to sign; any order; must include host,
					    x-amz-date, x-amz-content-sha256 */
	size_t nheaders;
	const char *payload_hash;    /* hex SHA-256 or "UNSIGNED-PAYLOAD" */
	const char *amz_date;        /* "20130524T000000Z", as in x-amz-date */
	const char *region;          /* "us-east-1" */
};

/*
 * Writes the Authorization header value ("AWS4-HMAC-SHA256 Credential=...,
 * SignedHeaders=..., Signature=...") into out. Returns ERR_OK, or
 * ERR_INVALID when out is too small, a header name is not lowercase,
 * there are more than 16 headers, or the secret or the region is too long;
 * ERR_NOMEM.
 */
enum error_code s3_sign_v4(const struct store_credentials *cred,
			   const struct s3_sign_request *req, char *out,
			   size_t out_size, struct error *err);

/*
 * The key that signs one day's requests in one region (SigV4's signing
 * key: four HMACs chained from the secret over the date, the region, "s3"
 * and "aws4_request"). Derived once a day instead of for every request,
 * it saves four of a signature's five HMACs. As secret as the secret
 * access key it comes from: never logged; explicit_bzero it when done.
 */
/* The longest region a signing key holds; a store refuses a longer one
 * when it opens. */
#define S3_REGION_MAX 63

struct s3_signing_key {
	char date[9];          /* "YYYYMMDD" */
	char region[S3_REGION_MAX + 1];
	unsigned char key[32];
};

/* Derives cred's signing key for date (its first 8 characters: an
 * x-amz-date value will do) and region. ERR_INVALID for a secret or a
 * region too long, or a date of fewer than 8 characters; ERR_NOMEM when
 * OpenSSL fails, and then out holds no key and no date. */
enum error_code s3_signing_key_derive(const struct store_credentials *cred, const char *date,
				      const char *region, struct s3_signing_key *out,
				      struct error *err);

/* s3_sign_v4 with a key derived for req's date and region; ERR_INVALID,
 * naming both days or regions, for a key of another; ERR_NOMEM. */
enum error_code s3_sign_v4_key(const struct store_credentials *cred,
			       const struct s3_signing_key *key,
			       const struct s3_sign_request *req, char *out, size_t out_size,
			       struct error *err);

/* Hex SHA-256 of a request body, for x-amz-content-sha256; ERR_NOMEM. */
enum error_code s3_payload_sha256(const void *data, size_t len, char out[65], struct error *err);

/* Formats t as the x-amz-date value "YYYYMMDDTHHMMSSZ" (16 chars + NUL). */
void s3_amz_date(time_t t, char out[17]);

/*
 * Percent-encodes in the way S3 signs it: A-Z a-z 0-9 - . _ ~ are kept,
 * '/' too when keep_slash (object key paths), everything else is %XX with
 * uppercase hex. Writes at most out_size bytes including the NUL and
 * returns the length the full encoding needs (like snprintf).
 */
size_t s3_uri_encode(const char *in, bool keep_slash, char *out, size_t out_size);

#endif
