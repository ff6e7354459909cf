/*
 * health_http.c - the health endpoint's HTTP server: route, check (or
 * render the metrics), answer.
 */
#include "csi/health_http.h"

#include <microhttpd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/netaddr.h"

/* Probes come from the kubelet, one every few seconds per route. */
#define HEALTH_HTTP_MAX_CONNECTIONS 16u
#define HEALTH_HTTP_IDLE_S 10u

struct health_http {
	const struct health *health;
	struct MHD_Daemon *mhd;
	char unix_path[108];        /* "" for TCP */
	atomic_int failing[HEALTH_READY + 1]; /* per route: 1 once its last check failed */
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *text,
			     const char *allow)
{
	struct MHD_Response *resp;
	char body[ERROR_MSG_MAX + 2];
	enum MHD_Result ret;
	int n = snprintf(body, sizeof(body), "%s\n", text);

	if (n < 0 || (size_t)n >= sizeof(body))
		n = (int)sizeof(body) - 1;
	resp = MHD_create_response_from_buffer((size_t)n, body, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	if (allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result reply_metrics(struct health_http *hh, struct MHD_Connection *conn)
{
	struct metrics_buf b = { 0 };
	struct MHD_Response *resp;
	enum MHD_Result ret;
	struct error err;

	if (health_metrics(hh->health, &b, &err) != ERR_OK) {
		metrics_buf_release(&b);
		return reply(conn, (unsigned)error_to_http(err.code), err.msg, NULL);
	}
	resp = MHD_create_response_from_buffer(b.len, b.data ? b.data : (void *)"",
					       b.data ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (!resp) {
		metrics_buf_release(&b);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
				"text/plain; version=0.0.4; charset=utf-8");
	ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* Logs only when a route's verdict changes, not at every probe. */
static void note(struct health_http *hh, const char *path, enum health_route_kind kind,
		 const struct error *err)
{
	int now = err != NULL;

	if (atomic_exchange(&hh->failing[kind], now) == now)
		return;
	if (err)
		log_warn("health check failing", LOG_S("path", path), LOG_S("cause", err->msg));
	else
		log_info("health check passing", LOG_S("path", path));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_data_size,
				  void **req_cls)
{
	struct health_http *hh = cls;
	struct health_route route;
	struct error err;
	char msg[300];

	if (health_route_parse(method, url, &route, &err) != ERR_OK)
		return reply(conn, (unsigned)error_to_http(err.code), err.msg, NULL);
	if (!route.method_allowed) {
		snprintf(msg, sizeof(msg), "method '%.16s' is not allowed on '%.200s' (allowed: %s)",
			 method, url, route.allow);
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, msg, route.allow);
	}
	if (route.kind == HEALTH_METRICS)
		return reply_metrics(hh, conn);
	if (health_check(hh->health, route.kind, &err) != ERR_OK) {
		note(hh, url, route.kind, &err);
		return reply(conn, (unsigned)error_to_http(err.code), err.msg, NULL);
	}
	note(hh, url, route.kind, NULL);
	return reply(conn, MHD_HTTP_OK, "ok", NULL);
}

enum error_code health_http_start(const char *address, const struct health *h,
				  struct health_http **out, struct error *err)
{
	struct health_http *hh;
	int fd;

	*out = NULL;
	hh = calloc(1, sizeof(*hh));
	if (!hh)
		return error_set(err, ERR_NOMEM, "out of memory");
	hh->health = h;
	fd = netaddr_listen(address, "health_address", hh->unix_path, sizeof(hh->unix_path), err);
	if (fd < 0) {
		free(hh);
		return err->code;
	}
	hh->mhd = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_THREAD_PER_CONNECTION |
					   MHD_USE_ITC,
				   0, NULL, NULL, on_request, hh, MHD_OPTION_LISTEN_SOCKET, fd,
				   MHD_OPTION_CONNECTION_LIMIT, HEALTH_HTTP_MAX_CONNECTIONS,
				   MHD_OPTION_CONNECTION_TIMEOUT, HEALTH_HTTP_IDLE_S, MHD_OPTION_END);
	if (!hh->mhd) {
		close(fd);
		if (hh->unix_path[0])
			unlink(hh->unix_path);
		free(hh);
		return error_set(err, ERR_UNAVAILABLE,
				 "health_address '%s': the HTTP server did not start", address);
	}
	*out = hh;
	return ERR_OK;
}

void health_http_stop(struct health_http *hh)
{
	if (!hh)
		return;
	MHD_stop_daemon(hh->mhd);
	if (hh->unix_path[0])
		unlink(hh->unix_path);
	free(hh);
}
