/*
 * health_http.h - /healthz, /readyz and /metrics over HTTP
 * (libmicrohttpd) on health_address: the adapter of csi/health.h. Each
 * request is routed, checked, and the result mapped once with
 * error_to_http(): 200 "ok", 503 with the reason, 404 for another path,
 * 405 (Allow: GET) for another method; /metrics answers the Prometheus
 * text. A change of a route's verdict is logged (warn when it starts
 * failing, with the reason; info when it passes again), not every probe.
 *
 * Threading: one thread per connection (at most a few: probes and scrapes
 * are rare), because a check may wait up to the meta probe's deadline and
 * a scrape up to the volume probes'.
 */
#ifndef GRANARY_CSI_HEALTH_HTTP_H
#define GRANARY_CSI_HEALTH_HTTP_H

#include "common/error.h"
#include "csi/health.h"

struct health_http;

/*
 * Listens on address (":9808", "0.0.0.0:9808", "unix:///path"; see
 * common/netaddr.h) and serves h, which must outlive the server.
 * ERR_INVALID, ERR_UNAVAILABLE (in use) naming the address; ERR_NOMEM.
 */
enum error_code health_http_start(const char *address, const struct health *h,
				  struct health_http **out, struct error *err);

/* Stops serving (a request in flight finishes first) and frees. NULL is fine. */
void health_http_stop(struct health_http *hh);

#endif
