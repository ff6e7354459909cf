/*
 * store.h - the object-store interface: one header, two backends.
 *
 *   s3://BUCKET    an S3-compatible service over HTTP(S) (store_s3.c):
 *                  AWS Signature V4, path-style or virtual-host addressing,
 *                  pooled keep-alive connections, per-request timeouts and
 *                  bounded retries with backoff on 5xx, 429, resets and
 *                  timeouts (never on other 4xx).
 *   file:///DIR    a local directory whose files are the objects
 *                  (store_file.c), for the embedded default and tests.
 *
 * Keys are object keys relative to the bucket (or directory), without a
 * leading '/'. A dataset URI "s3://bucket/prefix/" is split by
 * store_uri_parse(); the store itself is opened on the bucket.
 *
 * All calls on one struct store are thread-safe; the store keeps a pool of
 * connections and each call borrows one. Every call that can fail returns
 * an enum error_code and fills err (when not NULL) with a message naming the
 * operation, the endpoint, the bucket and the key; credentials never appear.
 */
#ifndef GRANARY_STORE_STORE_H
#define GRANARY_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/error.h"

enum store_addressing {
	STORE_ADDR_AUTO = 0, /* virtual-host for AWS endpoints, path-style otherwise */
	STORE_ADDR_PATH,     /* http://endpoint/bucket/key */
	STORE_ADDR_VIRTUAL,  /* http://bucket.endpoint/key */
};

struct store_credentials {
	char *access_key_id;
	char *secret_access_key; /* never logged */
	char *session_token;     /* optional; never logged */
};

struct store_config {
	const char *endpoint;   /* "http://127.0.0.1:7070"; NULL = https://s3.REGION.amazonaws.com */
	const char *region;     /* "us-east-1" when NULL */
	enum store_addressing addressing;
	/*
	 * Credentials, first match wins: credentials_file (an AWS shared
	 * credentials file, section `profile`), then the environment
	 * (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), then
	 * AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials. No credentials at
	 * all means anonymous (unsigned) requests.
	 */
	const char *credentials_file;
	const char *profile;    /* "default" when NULL */
	uint64_t connect_timeout_ms; /* 0 = 3000 */
	uint64_t request_timeout_ms; /* one attempt; 0 = 30000 */
	uint64_t deadline_ms;        /* all attempts of one call; 0 = 60000 */
	unsigned max_attempts;       /* 0 = 5 */
	uint64_t retry_base_ms;      /* 0 = 50 */
	uint64_t retry_max_ms;       /* 0 = 2000 */
	unsigned max_connections;    /* pooled connections kept; 0 = 64 */
	bool insecure_skip_verify;   /* TLS: do not verify the peer (tests only) */
	/*
	 * Unsigned requests, whatever credentials the chain above would find
	 * (granary-meta listing an endpoint it must not sign for).
	 */
	bool anonymous;
	/*
	 * Every failure that is not an S3 answer - a refused, reset or timed
	 * out connection, a name that does not resolve, a server that does not
	 * speak HTTP, an HTTP answer without an S3 error document, a listing
	 * that is not ListObjectsV2 XML - is ERR_UNAVAILABLE "the endpoint did
	 * not answer as an S3 server", its detail logged at debug level only.
	 * For a service that lists endpoints its callers name and must not
	 * tell them what listens at an address (granary-meta). S3 errors
	 * (AccessDenied, NoSuchBucket, SlowDown ...) keep their detail.
	 */
	bool uniform_errors;
};

/* The largest object S3 stores (5 TiB): a listing that reports more is
 * not an S3 listing, and sizes above it would wrap the sums of a dataset. */
#define STORE_OBJECT_MAX ((uint64_t)5 << 40)

struct store_object {
	char *key;
	uint64_t size;
	char etag[80];          /* without quotes; "" when unknown */
	int64_t mtime;          /* seconds since the epoch; 0 when unknown */
};

/* One page of a listing. Objects and common prefixes are sorted by key. */
struct store_list_page {
	struct store_object *objects;
	size_t nobjects;
	char **prefixes;        /* with delimiter: the "directories" */
	size_t nprefixes;
	char *next_token;       /* NULL on the last page */
};

/* Counters since store_open; all monotonic. */
struct store_stats {
	uint64_t requests;      /* attempts sent, retries included */
	uint64_t retries;
	uint64_t bytes_read;    /* body bytes received by get */
	uint64_t errors;        /* calls that returned an error */
};

struct store;

/*
 * Opens a store on "s3://bucket" or "file:///abs/dir" (a path after the
 * bucket is refused: use store_uri_parse for dataset URIs). Validates the
 * URI, the endpoint URL and the bucket name before any request is made:
 * a malformed one gives ERR_INVALID naming it. Loads credentials (a missing
 * credentials_file is ERR_NOT_FOUND, an unreadable one ERR_PERMISSION, a
 * malformed one ERR_INVALID, each naming the path). Does no I/O against the
 * service. *out is freed with store_free.
 */
enum error_code store_open(const char *uri, const struct store_config *cfg,
			   struct store **out, struct error *err);
void store_free(struct store *st);

/*
 * Reads len bytes at offset off of key into buf (a ranged GET). *got gets
 * the bytes read: less than len only at the end of the object. off past the
 * end is ERR_RANGE; a missing key ERR_NOT_FOUND. If etag is not NULL and
 * not "", the object must still have that ETag (If-Match): an object that
 * changed is ERR_NOT_FOUND too, since the version asked for is gone, with a
 * message saying it changed. len 0 reads nothing.
 */
enum error_code store_get(struct store *st, const char *key, uint64_t off,
			  size_t len, void *buf, size_t *got,
			  const char *etag, struct error *err);

/*
 * Streams len bytes at off of key to sink, in order, each byte once, as
 * they arrive (no copy into a caller buffer: the worker writes them
 * straight to its cache file). sink returns 0 to go on; non-zero stops
 * the transfer with ERR_IO. A retry resumes after the bytes delivered.
 * *delivered gets the count (less than len at the end of the object).
 * Errors as store_get.
 */
typedef int (*store_sink_fn)(const void *data, size_t len, void *arg);
enum error_code store_get_stream(struct store *st, const char *key,
				 uint64_t off, uint64_t len, store_sink_fn sink,
				 void *arg, const char *etag, uint64_t *delivered,
				 struct error *err);

/*
 * store_get and store_get_stream ending by until_ms at the latest (a
 * monotonic time, retry_now_ms's clock), whatever store.deadline would
 * allow: a reader's deadline carried through every source and retry, not
 * restarted per call. Attempts and backoff stop there; a call that starts
 * at or past it fails at once. Either way ERR_TIMEOUT names the store, the
 * key and "deadline". until_ms 0 is store_get / store_get_stream.
 */
enum error_code store_get_until(struct store *st, const char *key, uint64_t off,
				size_t len, void *buf, size_t *got, const char *etag,
				uint64_t until_ms, struct error *err);
enum error_code store_get_stream_until(struct store *st, const char *key, uint64_t off,
				       uint64_t len, store_sink_fn sink, void *arg,
				       const char *etag, uint64_t until_ms,
				       uint64_t *delivered, struct error *err);

/*
 * Writes a whole object (one PUT; for datasets, tests and benchmarks; the
 * read path never writes). Replaces an existing object atomically.
 */
enum error_code store_put(struct store *st, const char *key, const void *data,
			  size_t len, struct error *err);

/* Size, ETag and mtime of key; missing key is ERR_NOT_FOUND. info->key is
 * set to a heap copy of key; release with store_object_release. */
enum error_code store_head(struct store *st, const char *key,
			   struct store_object *info, struct error *err);

/*
 * Lists one page of keys under prefix ("" for all), starting after the
 * continuation token (NULL for the first page). With delimiter "/" keys
 * below a further '/' are folded into common prefixes. max_keys 0 means the
 * service's default (1000). Free the page with store_list_page_release.
 */
enum error_code store_list(struct store *st, const char *prefix,
			   const char *delimiter, const char *token,
			   unsigned max_keys, struct store_list_page *page,
			   struct error *err);

/*
 * Calls fn for every object under prefix across all pages (no delimiter).
 * fn returns 0 to go on; a non-zero return stops the walk and is returned
 * as ERR_CANCELLED. A service that answers a continuation token with the
 * same token again would keep the walk going forever: that is ERR_INVALID
 * naming the store and its endpoint.
 */
typedef int (*store_list_fn)(const struct store_object *obj, void *arg);
enum error_code store_list_all(struct store *st, const char *prefix,
			       store_list_fn fn, void *arg, struct error *err);

/* Bounds on one store_list_all_limited walk; 0 = no bound. */
struct store_list_limits {
	uint64_t max_pages;
	uint64_t max_objects;
	uint64_t max_ms;        /* checked between pages: one page's request
				   is bounded by the store's deadline_ms */
};

/*
 * store_list_all within limits: past max_pages pages or max_objects
 * objects, ERR_NO_SPACE; past max_ms, ERR_TIMEOUT; each message names the
 * store, its endpoint and the limit. lim NULL = no limits.
 */
enum error_code store_list_all_limited(struct store *st, const char *prefix,
				       const struct store_list_limits *lim, store_list_fn fn,
				       void *arg, struct error *err);

void store_object_release(struct store_object *obj);
void store_list_page_release(struct store_list_page *page);

void store_get_stats(struct store *st, struct store_stats *out);

/* "s3://data" or "file:///srv/x": for messages and metrics labels. */
const char *store_describe(const struct store *st);

/* "s3://data at http://10.0.0.5:7070" (the endpoint as configured) or
 * "file:///srv/x": for messages that must say which service answered. */
const char *store_describe_at(const struct store *st);

/*
 * Splits a dataset URI into scheme ("s3" or "file"), bucket (or directory
 * for file://) and key prefix. "s3://b/train/" -> s3, b, "train/". The
 * outputs are heap copies; free them with free(). ERR_INVALID names what is
 * wrong: unknown scheme, missing or malformed bucket, relative file path,
 * a prefix or path with an empty ("a//b"), "." or ".." segment (it would
 * name keys or files outside itself; a final '/' is fine).
 */
enum error_code store_uri_parse(const char *uri, char **scheme, char **bucket,
				char **prefix, struct error *err);

/*
 * Whether a dataset URI may name its source, for every daemon that takes
 * one from a caller (granary-meta, the worker, the CSI controller and node
 * plugin): a file:// source is a directory of the host that lists or reads
 * it, which every pod mounting the dataset could then read, so it must lie
 * strictly under one of roots[0..n) (the daemons' allowed_file_roots
 * setting, split by config_split_dirs). n 0 refuses every file:// URI. The
 * path is compared as written first (store_uri_parse refuses '.' and '..'
 * segments), so nothing outside the roots is ever looked up, then resolved
 * (realpath), so that a symbolic link cannot lead out of a root. Any other
 * scheme is ERR_OK (store_uri_parse judges it). Errors quote the URI
 * (callers prefix the field):
 *   ERR_INVALID "file:// sources are off (allowed_file_roots is empty),
 *               got 'file:///etc/'"
 *   ERR_INVALID "'file:///etc/' is outside allowed_file_roots"
 *   ERR_INVALID "'file:///srv/data/link/' resolves to '/etc', outside
 *               allowed_file_roots"
 *   ERR_INVALID store_uri_parse's, for a malformed file:// URI
 *   ERR_NOT_FOUND (or the code of another errno) "'file:///srv/data/gone/':
 *               No such file or directory": written under a root, but it
 *               does not resolve; a caller taking the URI from a request
 *               answers ERR_INVALID, one that loads what it accepted
 *               before may keep it.
 */
#define STORE_FILE_ROOTS_MAX 16 /* entries of an allowed_file_roots list */
enum error_code store_file_root_check(const char *uri, const char *const *roots, size_t n,
				      struct error *err);

/*
 * Whether a dataset whose source is uri may be read at endpoint, for every
 * daemon that takes a dataset from a caller and reads it with credentials
 * of its own (granary-meta's listings, the worker's fetches and preload
 * listings, the CSI controller's check of a StorageClass): only the
 * cluster's own endpoint (default_endpoint, the daemon's store.endpoint;
 * "" or NULL is AWS for the region) and the endpoints of allowed (the
 * store.allowed_endpoints setting: comma-separated URLs, spaces around
 * each allowed) may be named, so that a registration can neither make a
 * daemon send its credentials, nor any request, to an address of the
 * registrant's choice. endpoint "" or NULL is the default. Endpoints
 * compare without a trailing '/' and without regard to case. A file://
 * uri is ERR_OK (nothing is sent anywhere). Errors quote the endpoint
 * (callers prefix the field):
 *   ERR_INVALID "endpoint 'http://10.0.0.9:9000' is not allowed: the
 *               endpoints a dataset may name are store.endpoint and
 *               store.allowed_endpoints"
 */
enum error_code store_endpoint_check(const char *uri, const char *endpoint,
				     const char *default_endpoint, const char *allowed,
				     struct error *err);

/*
 * A store.allowed_endpoints setting: each comma-separated item (spaces
 * around it allowed) passes store_check_endpoint. ERR_INVALID naming key
 * and the item.
 */
enum error_code store_check_endpoint_list(const char *key, const char *list,
					  struct error *err);

/* S3 bucket naming rules (3-63 chars, lowercase, digits, '.', '-', ...).
 * Returns ERR_OK or ERR_INVALID saying which rule the name breaks. */
enum error_code store_check_bucket_name(const char *name, struct error *err);

/* Region names: letters, digits, '-' and '_', at most S3_REGION_MAX
 * characters; "" (the default region) passes. Returns ERR_OK or
 * ERR_INVALID naming what is wrong without echoing a control byte. */
enum error_code store_check_region(const char *region, struct error *err);

/* Endpoint URL rules: http or https, a host, optional port, no user info,
 * query or fragment. Returns ERR_OK or ERR_INVALID saying what is wrong. */
enum error_code store_check_endpoint(const char *url, struct error *err);

#endif
