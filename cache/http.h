/*
 * http.h - granary-worker's HTTP service (libmicrohttpd): the block data
 * plane, the dataset and preload API, /metrics, /healthz and /readyz
 * (cache/readiness.h). The routes, the Authorization header and the status
 * codes are documented in docs/worker-api.md.
 *
 * Two halves. The parsers below (route, query, Range, JSON bodies) are
 * pure functions of their text, exported so that unit tests can reach
 * them; they never see a microhttpd type. The server (worker_http_start)
 * is the adapter: each request is parsed, the core (fetch.h, preload.h,
 * token.h) is called, its error is mapped once with error_to_http() and
 * the answer is sent: blocks zero-copy from the cache file (sendfile), the
 * rest as short text or JSON.
 *
 * Threading: one thread per connection, because a miss blocks its request
 * on a store fetch (or on another request's fetch, single flight) for up
 * to the store deadline; with a fixed pool of event threads every miss
 * would stall the hits queued behind it. Connections are bounded by
 * http.max_connections and closed after http.idle_timeout.
 *
 * Clients that hold connections without sending requests must not lock
 * the others out: a TCP address may hold at most
 * http.max_connections_per_address of them (further ones are closed at
 * accept), and a request must arrive whole within http.request_timeout
 * (a new connection's first request counts from the accept), else a
 * watchdog thread shuts the connection down. A request whose body length
 * is ambiguous (worker_http_check_framing) is answered and the connection
 * closed.
 *
 * Those limits must not make a busy worker look dead: with probe_listen
 * set, GET /healthz and /readyz are also served on a listener of their own
 * (one event thread, WORKER_HTTP_PROBE_CONNECTIONS connections, a few per
 * address, closed after WORKER_HTTP_PROBE_TIMEOUT_S idle), which serves
 * nothing else, so that a data port full of clients does not fail the
 * kubelet's probes and restart the worker under its heaviest load.
 */
#ifndef GRANARY_CACHE_HTTP_H
#define GRANARY_CACHE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/token.h"
#include "block/url.h"
#include "cache/fetch.h"
#include "cache/preload.h"
#include "cache/readiness.h"
#include "common/error.h"
#include "common/metrics.h"
#include "common/tls.h"
#include "store/store.h"

#define WORKER_HTTP_BODY_MAX (1u << 20)   /* JSON bodies */
#define WORKER_HTTP_PROBE_CONNECTIONS 32
#define WORKER_HTTP_PROBE_PER_ADDRESS 2
#define WORKER_HTTP_PROBE_TIMEOUT_S 5
#define BLOCK_URL_READAHEAD_MAX 256

/* --- parsers (pure) ----------------------------------------------------- */

enum worker_http_route_kind {
	WORKER_HTTP_BLOCK = 1,       /* GET /v1/blocks/{dataset}/{index} */
	WORKER_HTTP_DATASETS,        /* GET /v1/datasets */
	WORKER_HTTP_DATASET,         /* GET, PUT, DELETE /v1/datasets/{name} */
	WORKER_HTTP_PRELOAD_START,   /* POST /v1/preload/{dataset} */
	WORKER_HTTP_PRELOAD_STATUS,  /* GET /v1/preload/{id} */
	WORKER_HTTP_PREFETCH,        /* POST /v1/prefetch/{dataset} */
	WORKER_HTTP_METRICS,         /* GET /metrics */
	WORKER_HTTP_HEALTHZ,         /* GET /healthz */
	WORKER_HTTP_READYZ,          /* GET /readyz */
};

struct worker_http_route {
	enum worker_http_route_kind kind;
	bool method_allowed;         /* false: answer 405 with Allow: allow */
	const char *allow;           /* "GET", "GET, PUT, DELETE" ... */
	bool needs_token;            /* every /v1 route */
	char dataset[BLOCK_DATASET_MAX + 1];
	uint64_t number;             /* block index, or preload id */
};

/*
 * Routes a request by method and raw path (as on the request line, without
 * the query). ERR_NOT_FOUND "no such route 'PATH'" for an unknown path;
 * ERR_INVALID for a known shape with a bad part ("block index 'abc' is not
 * a number", "dataset name ..."). A known path with a method it does not
 * take is ERR_OK with method_allowed false.
 */
enum error_code worker_http_route_parse(const char *method, const char *path,
					struct worker_http_route *out, struct error *err);

/* A decimal number of 1..20 digits without sign or spaces that fits 64
 * bits; ERR_INVALID "WHAT 'TEXT' is not a number". */
enum error_code worker_http_parse_u64(const char *what, const char *text, uint64_t *out,
				      struct error *err);

/*
 * Finds parameter name in a raw query ("key=a%2Fb&etag=x") and decodes it
 * (%XX escapes; '+' is a space, as in forms) into out. *found says whether
 * it was there. ERR_INVALID for a bad escape, a decoded NUL, a value that
 * does not fit size, or the parameter given twice.
 */
enum error_code worker_http_query_get(const char *query, const char *name, char *out,
				      size_t size, bool *found, struct error *err);

/* The query of a block request. */
struct worker_http_block_query {
	char key[BLOCK_KEY_MAX + 1];
	char etag[80];
	uint64_t size;               /* the object's size; 0 when absent */
	uint64_t block_size;         /* bs: the client's block size; 0 when absent */
	unsigned readahead;          /* 0 when absent */
	bool verify;                 /* verify=1: the client found the bytes corrupt */
	/* cache=ID: the cache directory the client reads (block_dir_id_valid),
	 * "" when absent (block_url_query_into) */
	char cache_id[BLOCK_DIR_ID_LEN + 1];
};

/* key and etag are required, size and bs optional (1 or more), readahead optional
 * (0..BLOCK_URL_READAHEAD_MAX), verify optional ("0" or "1"), cache
 * optional (a cache directory id);
 * ERR_INVALID "missing query parameter 'key'"
 * and the like. */
enum error_code worker_http_parse_block_query(const char *query,
					      struct worker_http_block_query *out,
					      struct error *err);

/* One byte range: "bytes=a-b", "bytes=a-" or "bytes=-n". */
struct worker_http_range {
	bool present;                /* false: no Range header, whole block */
	bool suffix;                 /* "bytes=-n": the last n bytes */
	bool open_end;               /* "bytes=a-" */
	uint64_t first, last;        /* last unused when open_end; first = n when suffix */
};

/* Parses a Range header value (NULL or "" is no range). ERR_INVALID
 * "range 'bytes=9-3' is malformed" for anything but one range of bytes. */
enum error_code worker_http_range_parse(const char *header, struct worker_http_range *out,
					struct error *err);

/* Applies a parsed range to a block of length bytes: *off and *len of the
 * bytes to send. ERR_RANGE "range 'bytes=...' is past the end of the block
 * (N bytes)" when no byte of it is inside. header is for the message. */
enum error_code worker_http_range_resolve(const struct worker_http_range *r, const char *header,
					  uint64_t length, uint64_t *off, uint64_t *len,
					  struct error *err);

/* The body of PUT /v1/datasets/{name}, fields present or not (an empty
 * endpoint or region is not present: the worker's store settings apply). */
struct worker_http_dataset_body {
	char source[BLOCK_KEY_MAX + 512];
	char endpoint[512];
	char region[64];
	char credentials_file[4096];
	bool has_endpoint, has_region, has_credentials_file;
	bool has_block_size, has_policy, has_pin;
	uint64_t block_size;
	enum blockstore_policy policy;
	bool pin;
};

/*
 * Parses {"source":"s3://b/p/","endpoint":"http://...","region":"...",
 * "credentials_file":"/path","block_size":4194304 or "4MiB",
 * "policy":"lru"|"scan-resistant","pin":false}. source is required;
 * unknown fields, wrong types and malformed JSON are ERR_INVALID naming
 * the field (or the line and column).
 */
enum error_code worker_http_parse_dataset_body(const char *body, size_t len,
					       struct worker_http_dataset_body *out,
					       struct error *err);

/*
 * Parses {"objects":["a","b"]} (the objects to preload) or {} / an empty
 * body (the whole dataset: *objects NULL). The array and strings are
 * malloc'd; free with worker_http_free_objects.
 */
enum error_code worker_http_parse_preload_body(const char *body, size_t len, char ***objects,
					       size_t *n, struct error *err);
void worker_http_free_objects(char **objects, size_t n);

#define WORKER_HTTP_PREFETCH_MAX 64 /* objects one prefetch request may name */

/* One object of a prefetch request: its first block is wanted. */
struct worker_http_hint {
	char key[BLOCK_KEY_MAX + 1]; /* relative to the dataset's prefix */
	char etag[80];
	uint64_t size;               /* 1 or more */
};

/*
 * Parses {"objects":[{"key":"a/1.jpg","etag":"...","size":123}, ...]}
 * (1..WORKER_HTTP_PREFETCH_MAX objects, every field required) into a
 * malloc'd array (free it). ERR_INVALID naming the item and the field.
 */
enum error_code worker_http_parse_prefetch_body(const char *body, size_t len,
						struct worker_http_hint **out, size_t *n,
						struct error *err);

/* The headers that frame a request's body (RFC 9112 section 6). */
struct worker_http_framing {
	unsigned content_lengths;        /* Content-Length headers */
	unsigned transfer_encodings;     /* Transfer-Encoding headers */
	const char *transfer_encoding;   /* the first one's value; NULL when none */
};

/*
 * Refuses a request whose body length is ambiguous, since two parties
 * reading the same connection (a proxy and the worker) could then split
 * the bytes into different requests (request smuggling): Content-Length
 * with Transfer-Encoding, or either header twice, is ERR_INVALID ("request
 * has both Content-Length and Transfer-Encoding ..."); a transfer coding
 * other than chunked is ERR_UNSUPPORTED. The connection must be closed
 * after the answer.
 */
enum error_code worker_http_check_framing(const struct worker_http_framing *f,
					  struct error *err);

/* --- the server ---------------------------------------------------------- */

struct worker_http_config {
	const char *listen;                 /* "host:port" or "unix:///path" */
	/* "" or NULL: none. Else a listener of its own for the kubelet's
	 * probes (worker_http_start). */
	const char *probe_listen;
	struct fetcher *fetcher;            /* borrowed */
	struct preloader *preloader;        /* borrowed */
	const struct token *token;          /* borrowed; required */
	/* Defaults for what a dataset body leaves out (borrowed strings). */
	struct store_config store_defaults;
	uint64_t block_size;
	enum blockstore_policy policy;
	unsigned max_connections;
	unsigned max_connections_per_address; /* per client TCP address; 0: none */
	uint64_t idle_timeout_ms;
	uint64_t request_timeout_ms;        /* a whole request must arrive within */
	struct readiness *readiness;        /* borrowed; /readyz's verdict; NULL: always ready */
	/* NULL or without a certificate: plain HTTP. Else HTTPS with its
	 * certificate and key (borrowed for the server's life). */
	const struct tls_material *tls;
	/*
	 * A block request names a dataset not registered here: called once
	 * (granary-worker: a round with meta, which may have registered it
	 * since the last one), and the dataset looked up again if it returns
	 * true. NULL: such requests get 404 at once.
	 */
	bool (*dataset_unknown)(void *arg);
	void *dataset_unknown_arg;
	/* PUT and DELETE /v1/datasets/{name} answer 403 unless set. */
	bool dataset_writes;
};

struct worker_http;

/* Binds listen and starts serving. ERR_INVALID for a bad address,
 * ERR_UNAVAILABLE "listen '...': address in use" and the like;
 * ERR_UNSUPPORTED when TLS is asked of a libmicrohttpd built without it. */
enum error_code worker_http_start(const struct worker_http_config *cfg, struct worker_http **out,
				  struct error *err);

/*
 * Graceful stop: closes the listening socket at once (no new
 * connections), lets the requests in progress finish for at most grace_ms,
 * then closes every connection and frees the server.
 */
void worker_http_stop(struct worker_http *h, uint64_t grace_ms);

/* The /metrics text: fetch, blockstore and preload counters, served
 * bytes, blocks the node's mounts were told to read from the cache
 * directory (cache=ID), the fetch latency histogram. */
void worker_http_render_metrics(struct fetcher *f, struct preloader *p, uint64_t served_bytes,
				uint64_t served_in_dir, struct metrics_buf *out);

#endif
