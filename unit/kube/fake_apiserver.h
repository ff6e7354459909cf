/*
 * fake_apiserver.h - a fake Kubernetes apiserver in the test's process, for
 * the suites that drive kube/ clients (unit/kube/test_kubeapi, the meta
 * controllers): an HTTP server on 127.0.0.1 that answers each request as
 * the test's function says, one connection at a time, one request each
 * (Connection: close), and counts them. A fake, because what those tests
 * need cannot be had of a real apiserver on demand: an answer that never
 * comes, a continue token that expires, a page over the cap on one answer,
 * errors at every call. (unit/kube/test_lease has a fake of its own that
 * keeps a Lease.)
 */
#ifndef GRANARY_UNIT_KUBE_FAKE_APISERVER_H
#define GRANARY_UNIT_KUBE_FAKE_APISERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>

#include "common/retry.h"
#include "kube/kubeapi.h"
#include "unit/check_main.h"

#define FAKE_REQUESTS 16

/* What an answer function returns to answer nothing: the connection is
 * held, unanswered, until the client hangs up (as an apiserver that hangs). */
#define FAKE_HANG 0

/* Answers request n (from 0) for target (path and query): its status, and
 * *body its text (heap, the fake frees it; none for FAKE_HANG). */
typedef int (*fake_answer_fn)(unsigned n, const char *target, char **body);

struct fake {
	int fd;
	char url[64];
	pthread_t thread;
	fake_answer_fn answer;
	char targets[FAKE_REQUESTS][256]; /* the first requests, in order */
	atomic_uint n;                    /* requests so far */
};

/* A copy of s on the heap, for an answer's body. */
static inline char *fake_text(const char *s)
{
	char *t = strdup(s);

	ck_assert_ptr_nonnull(t);
	return t;
}

static inline void *fake_main(void *arg)
{
	struct fake *f = arg;
	int c;

	while ((c = accept(f->fd, NULL, NULL)) >= 0) {
		char req[4096], head[256], target[256] = "", *body = NULL;
		size_t len = 0;
		ssize_t got;
		unsigned i;
		int status, n;

		while (len < sizeof(req) - 1 &&
		       (got = recv(c, req + len, sizeof(req) - 1 - len, 0)) > 0) {
			len += (size_t)got;
			req[len] = '\0';
			if (strstr(req, "\r\n\r\n"))
				break;
		}
		req[len] = '\0';
		sscanf(req, "%*s %255s ", target);
		i = f->n;
		if (i < FAKE_REQUESTS)
			snprintf(f->targets[i], sizeof(f->targets[0]), "%s", target);
		status = f->answer(i, target, &body);
		f->n = i + 1;
		if (status == FAKE_HANG) {
			/* Until the client gives up and closes. */
			while (recv(c, req, sizeof(req), 0) > 0)
				;
			close(c);
			continue;
		}
		n = snprintf(head, sizeof(head),
			     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
			     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
			     status, strlen(body));
		/* The client may hang up on an answer over its cap. */
		send(c, head, (size_t)n, MSG_NOSIGNAL);
		send(c, body, strlen(body), MSG_NOSIGNAL);
		free(body);
		close(c);
	}
	return NULL;
}

static inline void fake_start(struct fake *f, fake_answer_fn answer)
{
	memset(f, 0, sizeof(*f));
	f->answer = answer;
	f->fd = check_loopback_listener(8, f->url, sizeof(f->url));
	ck_assert_int_eq(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

/* Waits for the request being answered (a held one: until its client
 * hung up), then stops. */
static inline void fake_stop(struct fake *f)
{
	shutdown(f->fd, SHUT_RDWR);
	pthread_join(f->thread, NULL);
	close(f->fd);
}

/* A client of the fake, with a token file of its own written at token
 * (size bytes; the caller unlinks it). */
static inline struct kubeapi *fake_client_new(const struct fake *f, char *token, size_t size)
{
	struct kubeapi *k = NULL;
	struct error err;

	check_write_temp(token, size, "not-a-real-token\n");
	ck_assert_msg(kubeapi_new(f->url, token, "", &k, &err) == ERR_OK, "%s", err.msg);
	return k;
}

/* An answer function: every request refused with 500 and a Status, as an
 * apiserver that lost its etcd answers. */
static inline int fake_refuse_all(unsigned n, const char *target, char **body)
{
	(void)n, (void)target;
	*body = fake_text("{\"kind\":\"Status\",\"code\":500,"
			  "\"message\":\"etcdserver: request timed out\"}");
	return 500;
}

/* Polls until the fake has had n requests (true) or timeout_ms passed. */
static inline bool fake_wait_requests(struct fake *f, unsigned n, uint64_t timeout_ms)
{
	uint64_t until = retry_now_ms() + timeout_ms;

	while (f->n < n && retry_now_ms() < until)
		retry_sleep_ms(10);
	return f->n >= n;
}

#endif
