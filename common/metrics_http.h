/*
 * metrics_http.h - a daemon's probe and scrape endpoint: GET /healthz
 * (alive), /readyz (can do its job now; only where the daemon has a
 * readiness check) and /metrics (Prometheus text 0.0.4), over HTTP
 * (libmicrohttpd) on one listen address. granary-meta, granary-fuse and
 * granary-csi serve it; granary-worker answers the same routes on its data
 * plane (cache/http.c).
 *
 * The daemon supplies the checks and the renderer (struct
 * metrics_http_ops); this module routes, maps the result once with
 * error_to_http(): 200 "ok", 503 with the reason, 404 for another path,
 * 405 (Allow: GET) for another method, and logs a change of a check's
 * verdict (warn when it starts failing, with the reason; info when it
 * passes again), not every probe.
 *
 * The router (metrics_http_route_parse) is pure and unit-tested; it is
 * the only part of this file that a test calls without a socket. It lives
 * in its own library (granary_metrics_http) so that granary_common, which
 * every core links, does not pull libmicrohttpd.
 *
 * Threading: one thread per connection (at most a few: probes and scrapes
 * are rare), because a check may wait (the CSI controller asks meta) and a
 * scrape may probe mounts. The ops run on those threads, concurrently.
 */
#ifndef GRANARY_COMMON_METRICS_HTTP_H
#define GRANARY_COMMON_METRICS_HTTP_H

#include <stdbool.h>

#include "common/error.h"
#include "common/metrics.h"

struct metrics_http_ops {
	/* /healthz: ERR_OK, or ERR_UNAVAILABLE with the reason. NULL: the
	 * daemon answers, so it is alive. */
	enum error_code (*live)(void *arg, struct error *err);
	/* /readyz, the same way. NULL: the route does not exist (404). */
	enum error_code (*ready)(void *arg, struct error *err);
	/* /metrics: appends the text to out; ERR_NOMEM or the cause. */
	enum error_code (*metrics)(void *arg, struct metrics_buf *out, struct error *err);
	void *arg;
};

enum metrics_http_route_kind {
	METRICS_HTTP_LIVE = 1, /* GET /healthz */
	METRICS_HTTP_READY,    /* GET /readyz */
	METRICS_HTTP_METRICS,  /* GET /metrics */
};

struct metrics_http_route {
	enum metrics_http_route_kind kind;
	bool method_allowed;  /* false: answer 405 with Allow: allow */
	const char *allow;    /* "GET" (HEAD is GET without the body) */
};

/*
 * Routes a request by method and path (without the query). ERR_NOT_FOUND
 * "no such route 'PATH' (known: /healthz, /readyz, /metrics)" for any
 * other path (/readyz only when has_ready); a known path with another
 * method than GET or HEAD is ERR_OK with method_allowed false.
 */
enum error_code metrics_http_route_parse(const char *method, const char *path, bool has_ready,
					 struct metrics_http_route *out, struct error *err);

struct metrics_http;

/*
 * Listens on address (":9808", "0.0.0.0:9808", "unix:///path"; see
 * common/netaddr.h; a unix socket's stale file is replaced) and serves
 * ops, which must outlive the server. what names the setting in errors
 * ("metrics.address"). ERR_INVALID, ERR_UNAVAILABLE (in use) naming the
 * setting and the address; ERR_NOMEM.
 */
enum error_code metrics_http_start(const char *address, const char *what,
				   const struct metrics_http_ops *ops, struct metrics_http **out,
				   struct error *err);

/* Stops serving (a request in flight finishes first), removes a unix
 * socket and frees. NULL is fine. */
void metrics_http_stop(struct metrics_http *mh);

#endif
