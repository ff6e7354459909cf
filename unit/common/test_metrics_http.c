/*
 * test_metrics_http.c - the probe and scrape endpoint: its routes (pure),
 * then a real server on a unix socket answering each route with the
 * status its check maps to.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/metrics_http.h"
#include "unit/check_main.h"

START_TEST(test_metrics_http_routes_three_paths_get_only)
{
	struct metrics_http_route r;
	struct error err;

	ck_assert_int_eq(metrics_http_route_parse("GET", "/healthz", true, &r, &err), ERR_OK);
	ck_assert_int_eq(r.kind, METRICS_HTTP_LIVE);
	ck_assert(r.method_allowed);
	ck_assert_int_eq(metrics_http_route_parse("HEAD", "/readyz", true, &r, &err), ERR_OK);
	ck_assert_int_eq(r.kind, METRICS_HTTP_READY);
	ck_assert(r.method_allowed);
	ck_assert_int_eq(metrics_http_route_parse("POST", "/readyz", true, &r, &err), ERR_OK);
	ck_assert(!r.method_allowed);
	ck_assert_str_eq(r.allow, "GET");
	ck_assert_int_eq(metrics_http_route_parse("GET", "/healthz/", true, &r, &err), ERR_NOT_FOUND);
	ck_assert_int_eq(error_to_http(err.code), 404);
	ck_assert_str_eq(err.msg, "no such route '/healthz/' (known: /healthz, /readyz, /metrics)");
	ck_assert_int_eq(metrics_http_route_parse("GET", "/metrics", true, &r, &err), ERR_OK);
	ck_assert_int_eq(r.kind, METRICS_HTTP_METRICS);
	ck_assert(r.method_allowed);
	ck_assert_int_eq(metrics_http_route_parse("GET", "/", true, &r, &err), ERR_NOT_FOUND);
}
END_TEST

START_TEST(test_metrics_http_no_readyz_without_a_ready_check)
{
	struct metrics_http_route r;
	struct error err;

	ck_assert_int_eq(metrics_http_route_parse("GET", "/readyz", false, &r, &err), ERR_NOT_FOUND);
	ck_assert_str_eq(err.msg, "no such route '/readyz' (known: /healthz, /metrics)");
	ck_assert_int_eq(metrics_http_route_parse("GET", "/healthz", false, &r, &err), ERR_OK);
}
END_TEST

struct fake {
	int live_fails;
	int renders;
};

static enum error_code fake_live(void *arg, struct error *err)
{
	struct fake *f = arg;

	if (f->live_fails)
		return error_set(err, ERR_UNAVAILABLE, "the fake is not alive");
	return ERR_OK;
}

static enum error_code fake_metrics(void *arg, struct metrics_buf *out, struct error *err)
{
	struct fake *f = arg;

	(void)err;
	f->renders++;
	metrics_render_counter(out, "granary_fake_total", "a counter", 7);
	return ERR_OK;
}

/* One request over the unix socket; returns the whole answer. */
static char *get(const char *sock, const char *method, const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	static char buf[8192];
	size_t n = 0;
	ssize_t k;
	char req[256];
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", sock);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", method,
		 path);
	ck_assert_int_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	while (n + 1 < sizeof(buf) && (k = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0)
		n += (size_t)k;
	buf[n] = '\0';
	close(fd);
	return buf;
}

START_TEST(test_metrics_http_serves_checks_and_text_on_a_unix_socket)
{
	char dir[] = "/tmp/granary-mhttp-XXXXXX", sock[128], addr[160];
	struct fake f = { 0 };
	struct metrics_http_ops ops = { .live = fake_live, .metrics = fake_metrics, .arg = &f };
	struct metrics_http *mh = NULL;
	struct error err;
	char *r;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(sock, sizeof(sock), "%s/m.sock", dir);
	snprintf(addr, sizeof(addr), "unix://%s", sock);
	ck_assert_int_eq(metrics_http_start(addr, "metrics.address", &ops, &mh, &err), ERR_OK);
	r = get(sock, "GET", "/healthz");
	ck_assert_ptr_nonnull(strstr(r, "HTTP/1.1 200"));
	ck_assert_ptr_nonnull(strstr(r, "\r\n\r\nok\n"));
	f.live_fails = 1;
	r = get(sock, "GET", "/healthz");
	ck_assert_ptr_nonnull(strstr(r, "HTTP/1.1 503"));
	ck_assert_ptr_nonnull(strstr(r, "the fake is not alive"));
	r = get(sock, "GET", "/metrics");
	ck_assert_ptr_nonnull(strstr(r, "HTTP/1.1 200"));
	ck_assert_ptr_nonnull(strstr(r, "text/plain; version=0.0.4"));
	ck_assert_ptr_nonnull(strstr(r, "\ngranary_fake_total 7\n"));
	ck_assert_int_eq(f.renders, 1);
	r = get(sock, "GET", "/readyz");
	ck_assert_ptr_nonnull(strstr(r, "HTTP/1.1 404"));
	r = get(sock, "DELETE", "/metrics");
	ck_assert_ptr_nonnull(strstr(r, "HTTP/1.1 405"));
	ck_assert_ptr_nonnull(strstr(r, "Allow: GET"));
	/* Stopping removes the socket; a malformed address names the setting. */
	metrics_http_stop(mh);
	ck_assert_int_ne(access(sock, F_OK), 0);
	ck_assert_int_eq(metrics_http_start("nonsense", "metrics.address", &ops, &mh, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "metrics.address"));
	rmdir(dir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("metrics_http");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_metrics_http_routes_three_paths_get_only);
	tcase_add_test(tc, test_metrics_http_no_readyz_without_a_ready_check);
	tcase_add_test(tc, test_metrics_http_serves_checks_and_text_on_a_unix_socket);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
