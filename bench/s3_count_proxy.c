/*
 * s3_count_proxy.c - a TCP forwarder in front of the S3 server that counts
 * what every client fetched, the same way for every system compared.
 *
 * Each client connection gets its own connection to --upstream and two
 * threads: server -> client bytes move with splice(2) through a pipe (no
 * copy through user space) and are counted after they were written to the
 * client, so an aborted transfer counts only what the client received;
 * client -> server bytes are read, scanned for HTTP request heads (method,
 * target, Content-Length, so request bodies are skipped) and written on.
 *
 * --delay holds each request for that long before it goes on to the server,
 * as a store across a network would answer later (no CPU is spent on it).
 *
 * A connection to --stats_listen gets one line and is closed:
 *   connections=C requests=R gets=G heads=H lists=L other=O bytes_down=B bytes_up=U
 * bytes_down is every byte the server sent (HTTP heads included).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench/bench_tool.h"

static atomic_uint_fast64_t n_conns, n_requests, n_gets, n_heads, n_lists, n_other, n_down, n_up;
static struct addrinfo *upstream_ai;
static uint64_t delay_ms;

struct conn {
	int cfd, ufd;
	atomic_int refs;
};

static void conn_put(struct conn *c)
{
	if (atomic_fetch_sub(&c->refs, 1) == 1) {
		close(c->cfd);
		close(c->ufd);
		free(c);
	}
}

static int resolve(const char *hostport, struct addrinfo **out)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	char host[256];
	const char *colon = strrchr(hostport, ':');
	int rc;

	if (!colon || colon == hostport || (size_t)(colon - hostport) >= sizeof(host)) {
		fprintf(stderr, "granary-bench: proxy: '%s' is not host:port\n", hostport);
		return -1;
	}
	memcpy(host, hostport, (size_t)(colon - hostport));
	host[colon - hostport] = '\0';
	rc = getaddrinfo(host, colon + 1, &hints, out);
	if (rc != 0) {
		fprintf(stderr, "granary-bench: proxy: resolve '%s': %s\n", hostport, gai_strerror(rc));
		return -1;
	}
	return 0;
}

static int listen_on(const char *hostport)
{
	struct addrinfo *ai;
	int fd, one = 1;

	if (resolve(hostport, &ai) != 0)
		return -1;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
		fprintf(stderr, "granary-bench: proxy: listen on '%s': %s\n", hostport, strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd;
}

/* Server -> client, spliced through a pipe, counted once written. */
static void *down_main(void *arg)
{
	struct conn *c = arg;
	int p[2];

	if (pipe2(p, O_CLOEXEC) == 0) {
		fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
		for (;;) {
			ssize_t n = splice(c->ufd, NULL, p[1], NULL, 1 << 20, SPLICE_F_MOVE);
			ssize_t left = n;

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			while (left > 0) {
				/* No SPLICE_F_MORE here: it corks the socket, and
				 * the tail of a small reply would wait for more. */
				ssize_t w = splice(p[0], NULL, c->cfd, NULL, (size_t)left,
						   SPLICE_F_MOVE);

				if (w < 0 && errno == EINTR)
					continue;
				if (w <= 0)
					break;
				left -= w;
				n_down += (uint64_t)w;
			}
			if (left > 0)
				break;
		}
		close(p[0]);
		close(p[1]);
	}
	/* Either side is done: end both directions so the other thread wakes. */
	shutdown(c->cfd, SHUT_RDWR);
	shutdown(c->ufd, SHUT_RDWR);
	conn_put(c);
	return NULL;
}

struct scan {
	char head[16384];
	size_t have;
	uint64_t body_left;
	bool overflow;
};

static void count_request(const char *head)
{
	char method[16], target[2048];

	n_requests++;
	if (sscanf(head, "%15s %2047s", method, target) != 2) {
		n_other++;
		return;
	}
	if (strcmp(method, "HEAD") == 0)
		n_heads++;
	else if (strcmp(method, "GET") == 0 &&
		 (strstr(target, "list-type=") || strstr(target, "delimiter=") ||
		  strstr(target, "prefix=")))
		n_lists++;
	else if (strcmp(method, "GET") == 0)
		n_gets++;
	else
		n_other++;
}

static uint64_t content_length(const char *head)
{
	for (const char *p = strchr(head, '\n'); p; p = strchr(p + 1, '\n'))
		if (strncasecmp(p + 1, "content-length:", 15) == 0)
			return strtoull(p + 16, NULL, 10);
	return 0;
}

/* Feeds client bytes through the request-head scanner; returns how many
 * request heads they completed. */
static unsigned scan_bytes(struct scan *s, const char *b, size_t n)
{
	unsigned heads = 0;

	while (n > 0) {
		if (s->body_left > 0) {
			size_t k = n < s->body_left ? n : (size_t)s->body_left;

			s->body_left -= k;
			b += k;
			n -= k;
			continue;
		}
		if (s->have < sizeof(s->head) - 1)
			s->head[s->have++] = *b;
		else
			s->overflow = true;
		b++;
		n--;
		if (s->have >= 4 && memcmp(s->head + s->have - 4, "\r\n\r\n", 4) == 0) {
			s->head[s->have] = '\0';
			if (!s->overflow) {
				count_request(s->head);
				s->body_left = content_length(s->head);
			}
			s->have = 0;
			s->overflow = false;
			heads++;
		}
	}
	return heads;
}

static void *up_main(void *arg)
{
	struct conn *c = arg;
	struct scan *s = calloc(1, sizeof(*s));
	char *buf = malloc(65536);

	while (s && buf) {
		ssize_t n = read(c->cfd, buf, 65536), off = 0;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (scan_bytes(s, buf, (size_t)n) > 0 && delay_ms > 0)
			usleep((useconds_t)(delay_ms * 1000));
		n_up += (uint64_t)n;
		while (off < n) {
			ssize_t w = send(c->ufd, buf + off, (size_t)(n - off), MSG_NOSIGNAL);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				break;
			off += w;
		}
		if (off < n)
			break;
	}
	/* The client is done sending: let the server finish its replies. */
	shutdown(c->ufd, SHUT_WR);
	free(buf);
	free(s);
	conn_put(c);
	return NULL;
}

static void *stats_main(void *arg)
{
	int lfd = (int)(intptr_t)arg;

	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		char line[512];
		int n;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			break;
		}
		n = snprintf(line, sizeof(line),
			     "connections=%llu requests=%llu gets=%llu heads=%llu lists=%llu other=%llu "
			     "bytes_down=%llu bytes_up=%llu\n",
			     (unsigned long long)n_conns, (unsigned long long)n_requests,
			     (unsigned long long)n_gets, (unsigned long long)n_heads,
			     (unsigned long long)n_lists, (unsigned long long)n_other,
			     (unsigned long long)n_down, (unsigned long long)n_up);
		if (send(fd, line, (size_t)n, MSG_NOSIGNAL) != n)
			fprintf(stderr, "granary-bench: proxy: stats reply cut short\n");
		close(fd);
	}
	return NULL;
}

int bench_proxy(const struct bench_settings *set)
{
	pthread_attr_t attr;
	pthread_t t;
	int lfd, sfd, one = 1;

	if (!*set->listen || !*set->upstream || !*set->stats_listen) {
		fprintf(stderr, "granary-bench: proxy needs --listen, --upstream and --stats_listen\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	delay_ms = set->delay_ms;
	if (resolve(set->upstream, &upstream_ai) != 0)
		return 1;
	lfd = listen_on(set->listen);
	sfd = listen_on(set->stats_listen);
	if (lfd < 0 || sfd < 0)
		return 1;
	if (pthread_create(&t, NULL, stats_main, (void *)(intptr_t)sfd) != 0)
		return 1;
	pthread_detach(t);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 << 10);
	for (;;) {
		int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC), ufd;
		struct conn *c;

		if (cfd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE)
				continue;
			fprintf(stderr, "granary-bench: proxy: accept: %s\n", strerror(errno));
			return 1;
		}
		ufd = socket(upstream_ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (ufd < 0 || connect(ufd, upstream_ai->ai_addr, upstream_ai->ai_addrlen) != 0) {
			fprintf(stderr, "granary-bench: proxy: connect upstream: %s\n", strerror(errno));
			if (ufd >= 0)
				close(ufd);
			close(cfd);
			continue;
		}
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = malloc(sizeof(*c));
		if (!c) {
			close(cfd);
			close(ufd);
			continue;
		}
		c->cfd = cfd;
		c->ufd = ufd;
		c->refs = 2;
		n_conns++;
		if (pthread_create(&t, &attr, down_main, c) != 0) {
			close(cfd);
			close(ufd);
			free(c);
			continue;
		}
		if (pthread_create(&t, &attr, up_main, c) != 0) {
			shutdown(cfd, SHUT_RDWR);
			conn_put(c);
		}
	}
}
