/*
 * test_s3_store.c - the s3:// backend against a real S3 server (versitygw,
 * started by the ctest fixture through scripts/s3-server.sh; its settings
 * are read from $GRANARY_S3_DIR/env).
 *
 * Faults the real server cannot be made to produce on demand (a stall, 503
 * and 429 answers) come from small sockets opened by the test itself; each
 * such test says so.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/retry.h"
#include "e2e/harness.h"
#include "store/store.h"
#include "unit/check_main.h"

#define MANY_DIRS 100
#define MANY_PER_DIR 100

static char endpoint[256], credentials[512], bucket[64];
static struct store *st;

static void read_env(void)
{
	harness_s3_env(endpoint, sizeof(endpoint), credentials, sizeof(credentials));
	snprintf(bucket, sizeof(bucket), "%s", getenv("GRANARY_S3_BUCKET") ? getenv("GRANARY_S3_BUCKET") : "granary-e2e");
}

static struct store_config base_config(void)
{
	struct store_config cfg = {
		.endpoint = endpoint,
		.credentials_file = credentials,
		.request_timeout_ms = 10000,
		.deadline_ms = 20000,
	};
	return cfg;
}

static struct store *open_store(const struct store_config *cfg)
{
	char uri[128];
	struct store *s = NULL;
	struct error err;

	snprintf(uri, sizeof(uri), "s3://%s", bucket);
	ck_assert_msg(store_open(uri, cfg, &s, &err) == ERR_OK, "open: %s", err.msg);
	return s;
}

static void setup(void)
{
	struct store_config cfg;

	read_env();
	cfg = base_config();
	st = open_store(&cfg);
}

static void teardown(void)
{
	store_free(st);
	st = NULL;
}

static void fill_random(unsigned char *buf, size_t n, unsigned seed)
{
	harness_fill(buf, n, seed * 2654435761u + 1);
}

static void put_ok(const char *key, const void *data, size_t len)
{
	struct error err;

	ck_assert_msg(store_put(st, key, data, len, &err) == ERR_OK, "put '%s': %s", key, err.msg);
}

/* --- the 10,000-object listing ------------------------------------------ */

struct upload {
	int next;
	pthread_mutex_t mu;
	int failed;
};

static void *upload_many(void *arg)
{
	struct upload *u = arg;
	char key[64];
	struct error err;

	for (;;) {
		int i;

		pthread_mutex_lock(&u->mu);
		i = u->next++;
		pthread_mutex_unlock(&u->mu);
		if (i >= MANY_DIRS * MANY_PER_DIR)
			return NULL;
		snprintf(key, sizeof(key), "many/d%02d/obj%05d", i / MANY_PER_DIR, i);
		if (store_put(st, key, key, strlen(key), &err) != ERR_OK) {
			fprintf(stderr, "put %s: %s\n", key, err.msg);
			pthread_mutex_lock(&u->mu);
			u->failed = 1;
			pthread_mutex_unlock(&u->mu);
			return NULL;
		}
	}
}

static void ensure_many(void)
{
	struct store_list_page page;
	struct upload u = { .mu = PTHREAD_MUTEX_INITIALIZER };
	pthread_t t[8];
	struct error err;

	/* The objects stay for later runs against the same fixture. */
	ck_assert_int_eq(store_list(st, "many/d99/", NULL, NULL, 0, &page, &err), ERR_OK);
	size_t have = page.nobjects;

	store_list_page_release(&page);
	if (have == MANY_PER_DIR)
		return;
	for (int i = 0; i < 8; i++)
		pthread_create(&t[i], NULL, upload_many, &u);
	for (int i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	ck_assert_int_eq(u.failed, 0);
}

struct walk {
	int count;
	char last[64];
	int sorted;
};

static int count_object(const struct store_object *obj, void *arg)
{
	struct walk *w = arg;

	if (strcmp(obj->key, w->last) <= 0)
		w->sorted = 0;
	snprintf(w->last, sizeof(w->last), "%s", obj->key);
	w->count++;
	return 0;
}

START_TEST(test_s3_lists_ten_thousand_objects_across_pages)
{
	struct store_list_page page;
	struct walk w = { .sorted = 1 };
	struct store_stats before, after;
	struct error err;
	char *token = NULL;
	int pages = 0, total = 0;

	ensure_many();
	store_get_stats(st, &before);
	ck_assert_msg(store_list_all(st, "many/", count_object, &w, &err) == ERR_OK, "%s", err.msg);
	store_get_stats(st, &after);
	ck_assert_int_eq(w.count, MANY_DIRS * MANY_PER_DIR);
	ck_assert_int_eq(w.sorted, 1);
	/* 1000 keys a page by default: ten pages at least. */
	ck_assert_uint_ge(after.requests - before.requests, 10);

	/* Explicit small pages: every key once, in order, tokens chained. */
	do {
		ck_assert_int_eq(store_list(st, "many/d0", NULL, token, 333, &page, &err), ERR_OK);
		free(token);
		ck_assert_uint_le(page.nobjects, 333);
		total += (int)page.nobjects;
		pages++;
		token = page.next_token;
		page.next_token = NULL;
		store_list_page_release(&page);
	} while (token);
	ck_assert_int_eq(total, 10 * MANY_PER_DIR);
	ck_assert_int_eq(pages, (10 * MANY_PER_DIR + 332) / 333);
}
END_TEST

START_TEST(test_s3_lists_with_delimiter_as_directories)
{
	struct store_list_page page;
	struct error err;

	ensure_many();
	ck_assert_int_eq(store_list(st, "many/", "/", NULL, 0, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nprefixes, MANY_DIRS);
	ck_assert_uint_eq(page.nobjects, 0);
	ck_assert_str_eq(page.prefixes[0], "many/d00/");
	ck_assert_str_eq(page.prefixes[MANY_DIRS - 1], "many/d99/");
	store_list_page_release(&page);

	ck_assert_int_eq(store_list(st, "many/d42/", "/", NULL, 0, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, MANY_PER_DIR);
	ck_assert_uint_eq(page.nprefixes, 0);
	ck_assert_str_eq(page.objects[0].key, "many/d42/obj04200");
	ck_assert_uint_eq(page.objects[0].size, strlen("many/d42/obj04200"));
	store_list_page_release(&page);
}
END_TEST

/* --- keys, ranges, HEAD, empty objects --------------------------------- */

static const char *const odd_keys[] = {
	"odd/with space.bin",
	"odd/plus+sign.bin",
	"odd/percent%20literal.bin",
	"odd/unicode-\xc3\xa9t\xc3\xa9-\xe6\x95\xb0\xe6\x8d\xae.bin",
	"odd/a/b/c/d/e/f/g/h/i/j/deep.bin",
	"odd/tilde~and=equals&amp.bin",
};

START_TEST(test_s3_round_trips_keys_with_odd_characters)
{
	size_t n = sizeof(odd_keys) / sizeof(odd_keys[0]);
	struct store_list_page page;
	struct error err;
	char buf[256];

	for (size_t i = 0; i < n; i++)
		put_ok(odd_keys[i], odd_keys[i], strlen(odd_keys[i]));
	for (size_t i = 0; i < n; i++) {
		size_t got = 0;

		ck_assert_msg(store_get(st, odd_keys[i], 0, sizeof(buf), buf, &got, NULL, &err) == ERR_OK,
			      "get '%s': %s", odd_keys[i], err.msg);
		ck_assert_uint_eq(got, strlen(odd_keys[i]));
		ck_assert_int_eq(memcmp(buf, odd_keys[i], got), 0);
	}
	ck_assert_int_eq(store_list(st, "odd/", NULL, NULL, 0, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, n);
	for (size_t i = 0; i < n; i++) {
		int seen = 0;

		for (size_t j = 0; j < page.nobjects; j++)
			seen += strcmp(page.objects[j].key, odd_keys[i]) == 0;
		ck_assert_msg(seen == 1, "key '%s' listed %d times", odd_keys[i], seen);
	}
	store_list_page_release(&page);
}
END_TEST

START_TEST(test_s3_ranged_reads_are_byte_exact)
{
	const size_t size = 10u << 20;
	unsigned char *src = malloc(size), *buf = malloc(size);
	struct error err;
	size_t got;

	fill_random(src, size, 7);
	put_ok("ranges/ten-mib.bin", src, size);
	for (unsigned i = 0; i < 40; i++) {
		uint64_t off = ((uint64_t)i * 2654435761u) % size;
		size_t len = 1 + (size_t)(((uint64_t)i * 40503u * 977u) % (3u << 20));

		ck_assert_int_eq(store_get(st, "ranges/ten-mib.bin", off, len, buf, &got, NULL, &err), ERR_OK);
		ck_assert_uint_eq(got, off + len > size ? size - off : len);
		ck_assert_int_eq(memcmp(buf, src + off, got), 0);
	}
	/* The whole object in one read, and a read that runs past the end. */
	ck_assert_int_eq(store_get(st, "ranges/ten-mib.bin", 0, size, buf, &got, NULL, &err), ERR_OK);
	ck_assert_uint_eq(got, size);
	ck_assert_int_eq(memcmp(buf, src, size), 0);
	ck_assert_int_eq(store_get(st, "ranges/ten-mib.bin", size - 10, 100, buf, &got, NULL, &err), ERR_OK);
	ck_assert_uint_eq(got, 10);
	ck_assert_int_eq(memcmp(buf, src + size - 10, 10), 0);
	ck_assert_int_eq(store_get(st, "ranges/ten-mib.bin", size + 5, 10, buf, &got, NULL, &err), ERR_RANGE);
	free(src);
	free(buf);
}
END_TEST

START_TEST(test_s3_head_gives_size_and_md5_etag)
{
	unsigned char data[100000], md5[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char hex[2 * EVP_MAX_MD_SIZE + 1];
	struct store_object obj;
	struct error err;

	fill_random(data, sizeof(data), 11);
	put_ok("head/object.bin", data, sizeof(data));
	EVP_Digest(data, sizeof(data), md5, &mdlen, EVP_md5(), NULL);
	for (unsigned i = 0; i < mdlen; i++)
		sprintf(hex + 2 * i, "%02x", md5[i]);
	ck_assert_int_eq(store_head(st, "head/object.bin", &obj, &err), ERR_OK);
	ck_assert_uint_eq(obj.size, sizeof(data));
	ck_assert_str_eq(obj.etag, hex);
	ck_assert_int_gt(obj.mtime, 1600000000);
	store_object_release(&obj);
}
END_TEST

START_TEST(test_s3_zero_byte_objects_read_as_empty)
{
	struct store_list_page page;
	struct store_object obj;
	struct error err;
	char buf[16];
	size_t got = 99;

	put_ok("empty/zero.bin", "", 0);
	ck_assert_int_eq(store_head(st, "empty/zero.bin", &obj, &err), ERR_OK);
	ck_assert_uint_eq(obj.size, 0);
	store_object_release(&obj);
	ck_assert_msg(store_get(st, "empty/zero.bin", 0, sizeof(buf), buf, &got, NULL, &err) == ERR_OK,
		      "%s", err.msg);
	ck_assert_uint_eq(got, 0);
	ck_assert_int_eq(store_list(st, "empty/", NULL, NULL, 0, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, 1);
	ck_assert_uint_eq(page.objects[0].size, 0);
	store_list_page_release(&page);
}
END_TEST

START_TEST(test_s3_get_with_stale_etag_says_object_changed)
{
	struct store_object obj;
	struct error err;
	char buf[8];
	size_t got;

	put_ok("change/x.bin", "version-1", 9);
	ck_assert_int_eq(store_head(st, "change/x.bin", &obj, &err), ERR_OK);
	ck_assert_int_eq(store_get(st, "change/x.bin", 0, 8, buf, &got, obj.etag, &err), ERR_OK);
	/* Its bytes, though the pool's one handle last sent a HEAD and a PUT. */
	ck_assert_uint_eq(got, 8);
	ck_assert_mem_eq(buf, "version-", 8);
	put_ok("change/x.bin", "version-2", 9);
	ck_assert_int_eq(store_get(st, "change/x.bin", 0, 8, buf, &got, obj.etag, &err), ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "changed"));
	store_object_release(&obj);
}
END_TEST

START_TEST(test_s3_virtual_host_addressing_reaches_the_same_objects)
{
	struct store_config cfg = base_config();
	char vh[256], buf[64];
	const char *port = strrchr(endpoint, ':');
	struct store *v;
	struct error err;
	size_t got;

	/* bucket.localhost resolves to loopback; the server runs with
	 * --virtual-domain localhost. */
	snprintf(vh, sizeof(vh), "http://localhost%s", port);
	cfg.endpoint = vh;
	cfg.addressing = STORE_ADDR_VIRTUAL;
	v = open_store(&cfg);
	put_ok("vhost/k.txt", "virtual", 7);
	ck_assert_msg(store_get(v, "vhost/k.txt", 0, sizeof(buf), buf, &got, NULL, &err) == ERR_OK,
		      "%s", err.msg);
	ck_assert_uint_eq(got, 7);
	ck_assert_int_eq(memcmp(buf, "virtual", 7), 0);
	store_free(v);
}
END_TEST

/* Copies one connection's bytes both ways until either side closes. */
static void *forward_conn(void *arg)
{
	int *fds = arg, a = fds[0], b = fds[1];
	char buf[65536];

	for (;;) {
		struct pollfd p[2] = { { .fd = a, .events = POLLIN }, { .fd = b, .events = POLLIN } };
		ssize_t n;
		int from, to;

		if (poll(p, 2, 10000) <= 0)
			break;
		from = p[0].revents ? a : b;
		to = from == a ? b : a;
		n = recv(from, buf, sizeof(buf), 0);
		if (n <= 0 || send(to, buf, (size_t)n, MSG_NOSIGNAL) != n)
			break;
	}
	close(a);
	close(b);
	free(fds);
	return NULL;
}

struct forwarder {
	int listener, to_port;
	pthread_t t;
};

static void *forward_accept(void *arg)
{
	struct forwarder *f = arg;
	int c;

	while ((c = accept(f->listener, NULL, NULL)) >= 0) {
		struct sockaddr_in a = { .sin_family = AF_INET,
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
					 .sin_port = htons((uint16_t)f->to_port) };
		int *fds = malloc(2 * sizeof(int));
		pthread_t t;

		fds[0] = c;
		fds[1] = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(fds[1], (struct sockaddr *)&a, sizeof(a)) != 0) {
			close(fds[0]);
			close(fds[1]);
			free(fds);
			continue;
		}
		pthread_create(&t, NULL, forward_conn, fds);
		pthread_detach(t);
	}
	return NULL;
}

/*
 * An endpoint that names its scheme's own port (http://...:80, as
 * https://...:443) reaches the server: curl leaves that port out of the
 * Host header it sends, so the host signed must leave it out too (every
 * request was refused, SignatureDoesNotMatch). The S3 server is reached
 * through a forwarder on 127.0.0.1:80 (the tests run as root).
 */
START_TEST(test_s3_endpoint_with_its_scheme_port_signs_the_host_sent)
{
	struct forwarder f = { .to_port = atoi(strrchr(endpoint, ':') + 1) };
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				 .sin_port = htons(80) };
	struct store_config cfg = base_config();
	char buf[64];
	struct store *p80;
	struct error err;
	size_t got;
	int one = 1;

	f.listener = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(f.listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	ck_assert_msg(bind(f.listener, (struct sockaddr *)&a, sizeof(a)) == 0,
		      "bind 127.0.0.1:80: %s", strerror(errno));
	ck_assert_int_eq(listen(f.listener, 16), 0);
	pthread_create(&f.t, NULL, forward_accept, &f);
	put_ok("port80/k.txt", "port 80", 7);
	cfg.endpoint = "http://127.0.0.1:80";
	p80 = open_store(&cfg);
	ck_assert_msg(store_get(p80, "port80/k.txt", 0, sizeof(buf), buf, &got, NULL, &err) ==
			      ERR_OK,
		      "%s", err.msg);
	ck_assert_uint_eq(got, 7);
	ck_assert_int_eq(memcmp(buf, "port 80", 7), 0);
	store_free(p80);
	shutdown(f.listener, SHUT_RDWR);
	pthread_join(f.t, NULL);
	close(f.listener);
}
END_TEST

/* --- bad input and faults ----------------------------------------------- */

START_TEST(test_s3_missing_key_is_not_found_naming_it)
{
	struct error err;
	char buf[4];
	size_t got;

	ck_assert_int_eq(store_get(st, "no/such/key.bin", 0, 4, buf, &got, NULL, &err), ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "no/such/key.bin"));
	ck_assert_ptr_nonnull(strstr(err.msg, bucket));
}
END_TEST

START_TEST(test_s3_wrong_credentials_are_refused_once_naming_endpoint_and_bucket)
{
	char path[] = "/tmp/granary-badcred-XXXXXX";
	struct store_config cfg = base_config();
	struct store_stats stats;
	struct store *bad;
	struct error err;
	char buf[4];
	size_t got;
	int fd = mkstemp(path);
	const char *text = "[default]\naws_access_key_id = granary-test\n"
			   "aws_secret_access_key = not-the-right-secret-value\n";

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (int)strlen(text));
	close(fd);
	cfg.credentials_file = path;
	bad = open_store(&cfg);
	ck_assert_int_eq(store_get(bad, "head/object.bin", 0, 4, buf, &got, NULL, &err), ERR_PERMISSION);
	ck_assert_ptr_nonnull(strstr(err.msg, endpoint));
	ck_assert_ptr_nonnull(strstr(err.msg, bucket));
	ck_assert_ptr_null(strstr(err.msg, "not-the-right-secret-value"));
	store_get_stats(bad, &stats);
	ck_assert_uint_eq(stats.requests, 1); /* 4xx is never retried */
	ck_assert_uint_eq(stats.retries, 0);
	store_free(bad);
	unlink(path);
}
END_TEST

/* Opens a loopback listener; returns its fd and port. With accept_none the
 * kernel still completes connections (a hung server). */
static int listen_loopback(int *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(fd, 64), 0);
	getsockname(fd, (struct sockaddr *)&a, &len);
	*port = ntohs(a.sin_port);
	return fd;
}

START_TEST(test_s3_stopped_server_gives_bounded_retries_then_clear_error)
{
	struct store_config cfg = base_config();
	struct store_stats stats;
	struct store *down;
	struct error err;
	char ep[64], buf[4];
	size_t got;
	int port, fd = listen_loopback(&port);
	uint64_t t0, took;

	close(fd); /* nothing listens there now: a stopped server */
	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", port);
	cfg.endpoint = ep;
	cfg.max_attempts = 4;
	cfg.retry_base_ms = 20;
	cfg.deadline_ms = 3000;
	down = open_store(&cfg);
	t0 = retry_now_ms();
	ck_assert_int_eq(store_get(down, "k", 0, 4, buf, &got, NULL, &err), ERR_UNAVAILABLE);
	took = retry_now_ms() - t0;
	store_get_stats(down, &stats);
	ck_assert_uint_eq(stats.requests, 4);
	ck_assert_uint_eq(stats.retries, 3);
	ck_assert_uint_lt(took, 3000);
	ck_assert_ptr_nonnull(strstr(err.msg, ep));
	ck_assert_ptr_nonnull(strstr(err.msg, "4 attempts"));
	store_free(down);
}
END_TEST

START_TEST(test_s3_hung_server_times_out_within_deadline)
{
	/* A socket that accepts connections and never answers: the stall a
	 * real server shows when it hangs, which versitygw cannot be told to do. */
	struct store_config cfg = base_config();
	struct store *hung;
	struct error err;
	char ep[64], buf[4];
	size_t got;
	int port, fd = listen_loopback(&port);
	uint64_t t0, took;

	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", port);
	cfg.endpoint = ep;
	cfg.request_timeout_ms = 300;
	cfg.deadline_ms = 1200;
	cfg.max_attempts = 100;
	hung = open_store(&cfg);
	t0 = retry_now_ms();
	ck_assert_int_eq(store_get(hung, "k", 0, 4, buf, &got, NULL, &err), ERR_TIMEOUT);
	took = retry_now_ms() - t0;
	ck_assert_uint_ge(took, 250);
	ck_assert_uint_lt(took, 1200 + 400);
	ck_assert_ptr_nonnull(strstr(err.msg, ep));
	store_free(hung);
	close(fd);
}
END_TEST

/* A one-thread HTTP responder that answers the first `failures` requests
 * with `status` (and a body of fail_body bytes, as a proxy's error page)
 * and then 206 with a fixed body: 503 and 429 are faults a real server
 * gives under load, not on request. */
struct flaky {
	int fd, failures, status, served;
	size_t fail_body;
};

static void *flaky_serve(void *arg)
{
	struct flaky *f = arg;
	char req[8192];

	for (;;) {
		int c = accept(f->fd, NULL, NULL);

		if (c < 0)
			return NULL;
		for (;;) {
			ssize_t n = recv(c, req, sizeof(req), 0);
			char resp[256];

			if (n <= 0)
				break;
			bool failing = f->served++ < f->failures;

			if (failing)
				snprintf(resp, sizeof(resp),
					 "HTTP/1.1 %d Busy\r\nContent-Length: %zu\r\n\r\n", f->status,
					 f->fail_body);
			else
				snprintf(resp, sizeof(resp),
					 "HTTP/1.1 206 Partial Content\r\nContent-Length: 4\r\n\r\nabcd");
			if (send(c, resp, strlen(resp), MSG_NOSIGNAL) < 0)
				break;
			for (size_t sent = 0; failing && sent < f->fail_body;) {
				static const char page[4096] = { [0 ... 4095] = 'x' };
				size_t k = f->fail_body - sent < sizeof(page) ? f->fail_body - sent
									       : sizeof(page);
				ssize_t w = send(c, page, k, MSG_NOSIGNAL);

				if (w <= 0)
					break;
				sent += (size_t)w;
			}
		}
		close(c);
	}
}

static void check_retried(int status, int failures, size_t fail_body, enum error_code want)
{
	struct store_config cfg = base_config();
	struct flaky f = { .failures = failures, .status = status, .fail_body = fail_body };
	struct store_stats stats;
	struct store *s;
	struct error err;
	pthread_t t;
	char ep[64], buf[4];
	size_t got = 0;
	int port;

	f.fd = listen_loopback(&port);
	pthread_create(&t, NULL, flaky_serve, &f);
	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", port);
	cfg.endpoint = ep;
	cfg.retry_base_ms = 10;
	cfg.max_attempts = 4;
	s = open_store(&cfg);
	ck_assert_int_eq(store_get(s, "k", 0, 4, buf, &got, NULL, &err), want);
	store_get_stats(s, &stats);
	if (want == ERR_OK) {
		ck_assert_uint_eq(got, 4);
		ck_assert_int_eq(memcmp(buf, "abcd", 4), 0);
		ck_assert_uint_eq(stats.retries, (uint64_t)failures);
	} else {
		ck_assert_uint_eq(stats.requests, status >= 500 || status == 429 ? 4 : 1);
	}
	store_free(s);
	shutdown(f.fd, SHUT_RDWR);
	close(f.fd);
	pthread_join(t, NULL);
}

/* A responder that keeps the head of the one request it answers (206,
 * "abcd"). */
struct recorder {
	int fd;
	char head[16384];
};

static void *record_serve(void *arg)
{
	static const char resp[] = "HTTP/1.1 206 Partial Content\r\nContent-Length: 4\r\n\r\nabcd";
	struct recorder *r = arg;
	size_t got = 0;
	int c = accept(r->fd, NULL, NULL);

	if (c < 0)
		return NULL;
	while (got + 1 < sizeof(r->head) && !strstr(r->head, "\r\n\r\n")) {
		ssize_t n = recv(c, r->head + got, sizeof(r->head) - 1 - got, 0);

		if (n <= 0)
			break;
		got += (size_t)n;
		r->head[got] = '\0';
	}
	(void)send(c, resp, strlen(resp), MSG_NOSIGNAL);
	close(c);
	return NULL;
}

/* A session token from STS has no fixed size: one of 3,000 bytes is sent
 * whole (a header line of 1,200 bytes cut it, while the signature covered
 * all of it). */
START_TEST(test_s3_long_session_token_is_sent_whole)
{
	struct store_config cfg = base_config();
	struct recorder r = { 0 };
	static char token[3001];
	char path[] = "/tmp/test_s3_token_XXXXXX", ep[64], buf[4], *at;
	struct store *s;
	struct error err;
	pthread_t t;
	size_t got;
	int port, fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");

	memset(token, 'T', sizeof(token) - 1);
	ck_assert_ptr_nonnull(f);
	fprintf(f, "[default]\naws_access_key_id = granary-test\n"
		   "aws_secret_access_key = some-secret-value\naws_session_token = %s\n", token);
	fclose(f);
	r.fd = listen_loopback(&port);
	pthread_create(&t, NULL, record_serve, &r);
	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", port);
	cfg.endpoint = ep;
	cfg.credentials_file = path;
	s = open_store(&cfg);
	ck_assert_msg(store_get(s, "k", 0, 4, buf, &got, NULL, &err) == ERR_OK, "%s", err.msg);
	pthread_join(t, NULL);
	at = strstr(r.head, "x-amz-security-token: ");
	ck_assert_ptr_nonnull(at);
	at += strlen("x-amz-security-token: ");
	ck_assert_uint_eq(strcspn(at, "\r"), sizeof(token) - 1);
	store_free(s);
	close(r.fd);
	unlink(path);
}
END_TEST

START_TEST(test_s3_retries_5xx_and_429_but_not_other_4xx)
{
	check_retried(503, 2, 0, ERR_OK);
	check_retried(429, 3, 0, ERR_OK);
	check_retried(500, 10, 0, ERR_UNAVAILABLE);
	check_retried(400, 10, 0, ERR_INVALID);
	check_retried(403, 10, 0, ERR_PERMISSION);
	/* An error page longer than the error body kept is still a 503 to
	 * retry, not a failed write. */
	check_retried(503, 1, 70u << 10, ERR_OK);
}
END_TEST

/* A responder that cuts its first answer after two body bytes, as a
 * connection reset mid-transfer does, then serves whatever range is asked
 * of the 4-byte object "abcd" (a reset cannot be ordered from versitygw). */
struct cutter {
	int fd, requests;
	char second_range[64];
	/* replaced: the first answer is version "v1", and the object is
	 * replaced by "WXYZ" (version "v2") before the second request, which
	 * gets 412 when it asks If-Match "v1" */
	bool replaced;
};

static void *cutter_serve(void *arg)
{
	struct cutter *c = arg;
	char req[8192];

	for (;;) {
		int fd = accept(c->fd, NULL, NULL);
		ssize_t n;

		if (fd < 0)
			return NULL;
		n = recv(fd, req, sizeof(req) - 1, 0);
		if (n > 0) {
			char resp[256], *r;
			unsigned a = 0, b = 3;

			req[n] = '\0';
			r = strcasestr(req, "range: bytes=");
			if (r)
				sscanf(r + 13, "%u-%u", &a, &b);
			if (c->requests++ == 0) {
				snprintf(resp, sizeof(resp),
					 "HTTP/1.1 206 Partial Content\r\n%sContent-Length: 4\r\n\r\nab",
					 c->replaced ? "ETag: \"v1\"\r\n" : "");
			} else if (c->replaced && strcasestr(req, "if-match: \"v1\"")) {
				snprintf(resp, sizeof(resp),
					 "HTTP/1.1 412 Precondition Failed\r\nContent-Length: 0\r\n\r\n");
			} else if (c->replaced) {
				snprintf(resp, sizeof(resp),
					 "HTTP/1.1 206 Partial Content\r\nETag: \"v2\"\r\nContent-Length: %u\r\n\r\n%.*s",
					 b - a + 1, (int)(b - a + 1), "WXYZ" + a);
			} else {
				snprintf(c->second_range, sizeof(c->second_range), "%u-%u", a, b);
				snprintf(resp, sizeof(resp),
					 "HTTP/1.1 206 Partial Content\r\nContent-Length: %u\r\n\r\n%.*s",
					 b - a + 1, (int)(b - a + 1), "abcd" + a);
			}
			send(fd, resp, strlen(resp), MSG_NOSIGNAL);
		}
		close(fd);
	}
}

static int collect_bytes(const void *data, size_t len, void *arg)
{
	strncat(arg, data, len);
	return 0;
}

/* A store at cutter c, which serves on its own thread *t until
 * cutter_stop. */
static struct store *cutter_start(struct cutter *c, pthread_t *t)
{
	struct store_config cfg = base_config();
	char ep[64];
	int port;

	c->fd = listen_loopback(&port);
	pthread_create(t, NULL, cutter_serve, c);
	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", port);
	cfg.endpoint = ep;
	cfg.retry_base_ms = 10;
	return open_store(&cfg);
}

static void cutter_stop(struct cutter *c, pthread_t t, struct store *s)
{
	store_free(s);
	shutdown(c->fd, SHUT_RDWR);
	close(c->fd);
	pthread_join(t, NULL);
}

START_TEST(test_s3_stream_resumes_after_a_cut_without_repeating_bytes)
{
	struct cutter c = { 0 };
	struct store_stats stats;
	struct error err;
	pthread_t t;
	struct store *s = cutter_start(&c, &t);
	char out[16] = "";
	uint64_t delivered = 0;

	ck_assert_msg(store_get_stream(s, "k", 0, 4, collect_bytes, out, NULL, &delivered, &err) == ERR_OK,
		      "%s", err.msg);
	ck_assert_str_eq(out, "abcd");
	ck_assert_uint_eq(delivered, 4);
	ck_assert_str_eq(c.second_range, "2-3");
	store_get_stats(s, &stats);
	ck_assert_uint_eq(stats.retries, 1);
	cutter_stop(&c, t, s);
}
END_TEST

/* A GET asked for no version (no ETag given) and cut after two bytes of
 * "v1" resumes on "v1" only: the object replaced meanwhile is "changed",
 * not "ab" from one version and "YZ" from the next. */
START_TEST(test_s3_resumed_stream_stays_on_the_version_it_began)
{
	struct cutter c = { .replaced = true };
	struct error err;
	pthread_t t;
	struct store *s = cutter_start(&c, &t);
	char out[16] = "";
	uint64_t delivered = 0;

	ck_assert_int_eq(store_get_stream(s, "k", 0, 4, collect_bytes, out, NULL, &delivered, &err),
			 ERR_NOT_FOUND);
	ck_assert_msg(strstr(err.msg, "object changed"), "%s", err.msg);
	ck_assert_str_eq(out, "ab");
	ck_assert_uint_eq(delivered, 2);
	cutter_stop(&c, t, s);
}
END_TEST

START_TEST(test_s3_malformed_endpoint_or_bucket_is_rejected_before_any_request)
{
	static const char *const endpoints[] = {
		"127.0.0.1:7070", "ftp://127.0.0.1", "http://", "http://user:pw@host",
		"http://host/path", "http://host?x=1", "not a url",
	};
	static const char *const buckets[] = {
		"s3://AB", "s3://Upper-Case", "s3://bad_underscore", "s3://-dash",
		"s3://a..b", "s3://192.168.1.1", "s3://", "s3://bucket/with-prefix",
	};
	struct store_config cfg = base_config();
	struct store *s = NULL;
	struct error err;

	for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++) {
		cfg.endpoint = endpoints[i];
		ck_assert_msg(store_open("s3://fine-bucket", &cfg, &s, &err) == ERR_INVALID,
			      "endpoint %s accepted", endpoints[i]);
		ck_assert_ptr_null(s);
		ck_assert_ptr_nonnull(strstr(err.msg, "endpoint"));
		ck_assert_ptr_null(strstr(err.msg, "pw@"));
	}
	cfg = base_config();
	for (size_t i = 0; i < sizeof(buckets) / sizeof(buckets[0]); i++) {
		ck_assert_msg(store_open(buckets[i], &cfg, &s, &err) == ERR_INVALID,
			      "bucket %s accepted", buckets[i]);
		ck_assert_ptr_null(s);
	}
}
END_TEST

/* --- concurrency through the pool --------------------------------------- */

static void *read_many(void *arg)
{
	unsigned char *expect = arg, buf[65536];
	struct error err;

	for (int i = 0; i < 50; i++) {
		uint64_t off = ((uint64_t)i * 7919u * 131u) % (1u << 20);
		size_t got;

		if (store_get(st, "pool/one-mib.bin", off, sizeof(buf), buf, &got, NULL, &err) != ERR_OK ||
		    memcmp(buf, expect + off, got) != 0)
			return (void *)1;
	}
	return NULL;
}

START_TEST(test_s3_concurrent_readers_share_the_pool)
{
	unsigned char *src = malloc(1u << 20);
	struct store_stats stats;
	pthread_t t[16];

	fill_random(src, 1u << 20, 3);
	put_ok("pool/one-mib.bin", src, 1u << 20);
	for (int i = 0; i < 16; i++)
		pthread_create(&t[i], NULL, read_many, src);
	for (int i = 0; i < 16; i++) {
		void *rv;

		pthread_join(t[i], &rv);
		ck_assert_ptr_null(rv);
	}
	store_get_stats(st, &stats);
	ck_assert_uint_eq(stats.retries, 0);
	free(src);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("s3_store");
	TCase *tc = tcase_create("real-server");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_s3_lists_ten_thousand_objects_across_pages);
	tcase_add_test(tc, test_s3_lists_with_delimiter_as_directories);
	tcase_add_test(tc, test_s3_round_trips_keys_with_odd_characters);
	tcase_add_test(tc, test_s3_ranged_reads_are_byte_exact);
	tcase_add_test(tc, test_s3_head_gives_size_and_md5_etag);
	tcase_add_test(tc, test_s3_zero_byte_objects_read_as_empty);
	tcase_add_test(tc, test_s3_get_with_stale_etag_says_object_changed);
	tcase_add_test(tc, test_s3_endpoint_with_its_scheme_port_signs_the_host_sent);
	tcase_add_test(tc, test_s3_virtual_host_addressing_reaches_the_same_objects);
	tcase_add_test(tc, test_s3_missing_key_is_not_found_naming_it);
	tcase_add_test(tc, test_s3_wrong_credentials_are_refused_once_naming_endpoint_and_bucket);
	tcase_add_test(tc, test_s3_stopped_server_gives_bounded_retries_then_clear_error);
	tcase_add_test(tc, test_s3_hung_server_times_out_within_deadline);
	tcase_add_test(tc, test_s3_long_session_token_is_sent_whole);
	tcase_add_test(tc, test_s3_retries_5xx_and_429_but_not_other_4xx);
	tcase_add_test(tc, test_s3_resumed_stream_stays_on_the_version_it_began);
	tcase_add_test(tc, test_s3_stream_resumes_after_a_cut_without_repeating_bytes);
	tcase_add_test(tc, test_s3_malformed_endpoint_or_bucket_is_rejected_before_any_request);
	tcase_add_test(tc, test_s3_concurrent_readers_share_the_pool);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
