/*
 * metrics_http.c - the probe and scrape endpoint's HTTP server: route,
 * check (or render the metrics), answer.
 */
#include "common/metrics_http.h"

#include <microhttpd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/netaddr.h"

/* Probes come from the kubelet, one every few seconds per route, and
 * scrapes from Prometheus. */
#define METRICS_HTTP_MAX_CONNECTIONS 16u
#define METRICS_HTTP_IDLE_S 10u

struct metrics_http {
	struct metrics_http_ops ops;
	struct MHD_Daemon *mhd;
	char unix_path[108];                        /* "" for TCP */
	atomic_int failing[METRICS_HTTP_READY + 1]; /* per check: 1 once its last run failed */
};

enum error_code metrics_http_route_parse(const char *method, const char *path, bool has_ready,
					 struct metrics_http_route *out, struct error *err)
{
	memset(out, 0, sizeof(*out));
	if (strcmp(path, "/healthz") == 0)
		out->kind = METRICS_HTTP_LIVE;
	else if (has_ready && strcmp(path, "/readyz") == 0)
		out->kind = METRICS_HTTP_READY;
	else if (strcmp(path, "/metrics") == 0)
		out->kind = METRICS_HTTP_METRICS;
	else
		return error_set(err, ERR_NOT_FOUND, "no such route '%.200s' (known: /healthz, %s/metrics)",
				 path, has_ready ? "/readyz, " : "");
	out->allow = "GET";
	out->method_allowed = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
	return ERR_OK;
}

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

static enum MHD_Result reply_metrics(struct metrics_http *mh, struct MHD_Connection *conn)
{
	struct metrics_buf b = { 0 };
	struct MHD_Response *resp;
	enum MHD_Result ret;
	struct error err;

	if (mh->ops.metrics(mh->ops.arg, &b, &err) != ERR_OK || b.failed) {
		if (b.failed)
			error_set(&err, ERR_NOMEM, "metrics: out of memory");
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

/* Logs only when a check's verdict changes, not at every probe. */
static void note(struct metrics_http *mh, const char *path, enum metrics_http_route_kind kind,
		 const struct error *err)
{
	int now = err != NULL;

	if (atomic_exchange(&mh->failing[kind], now) == now)
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
	struct metrics_http *mh = cls;
	struct metrics_http_route route;
	enum error_code (*check)(void *, struct error *);
	struct error err;
	char msg[300];

	(void)version, (void)upload_data, (void)upload_data_size, (void)req_cls;
	if (metrics_http_route_parse(method, url, mh->ops.ready != NULL, &route, &err) != ERR_OK)
		return reply(conn, (unsigned)error_to_http(err.code), err.msg, NULL);
	if (!route.method_allowed) {
		snprintf(msg, sizeof(msg), "method '%.16s' is not allowed on '%.200s' (allowed: %s)",
			 method, url, route.allow);
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, msg, route.allow);
	}
	if (route.kind == METRICS_HTTP_METRICS)
		return reply_metrics(mh, conn);
	check = route.kind == METRICS_HTTP_READY ? mh->ops.ready : mh->ops.live;
	if (check && check(mh->ops.arg, &err) != ERR_OK) {
		note(mh, url, route.kind, &err);
		return reply(conn, (unsigned)error_to_http(err.code), err.msg, NULL);
	}
	note(mh, url, route.kind, NULL);
	return reply(conn, MHD_HTTP_OK, "ok", NULL);
}

enum error_code metrics_http_start(const char *address, const char *what,
				   const struct metrics_http_ops *ops, struct metrics_http **out,
				   struct error *err)
{
	struct metrics_http *mh;
	int fd;

	*out = NULL;
	mh = calloc(1, sizeof(*mh));
	if (!mh)
		return error_set(err, ERR_NOMEM, "out of memory");
	mh->ops = *ops;
	fd = netaddr_listen(address, what, mh->unix_path, sizeof(mh->unix_path), err);
	if (fd < 0) {
		free(mh);
		return err->code;
	}
	mh->mhd = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_THREAD_PER_CONNECTION |
					   MHD_USE_ITC,
				   0, NULL, NULL, on_request, mh, MHD_OPTION_LISTEN_SOCKET, fd,
				   MHD_OPTION_CONNECTION_LIMIT, METRICS_HTTP_MAX_CONNECTIONS,
				   MHD_OPTION_CONNECTION_TIMEOUT, METRICS_HTTP_IDLE_S, MHD_OPTION_END);
	if (!mh->mhd) {
		close(fd);
		if (mh->unix_path[0])
			unlink(mh->unix_path);
		free(mh);
		return error_set(err, ERR_UNAVAILABLE, "%s '%s': the HTTP server did not start", what,
				 address);
	}
	*out = mh;
	return ERR_OK;
}

void metrics_http_stop(struct metrics_http *mh)
{
	if (!mh)
		return;
	MHD_stop_daemon(mh->mhd);
	if (mh->unix_path[0])
		unlink(mh->unix_path);
	free(mh);
}
