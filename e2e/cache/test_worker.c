/*
 * test_worker.c - granary-worker as a real process (fork/exec of the built
 * binary, found through $GRANARY_BIN_DIR) on a free loopback port, with a
 * temp cache directory and token file, against the real S3 server of the
 * ctest fixture ($GRANARY_S3_DIR/env). The client is libcurl, signing
 * with token_sign exactly as granary-fuse will.
 *
 * Each test starts its own worker on a fresh cache directory; the objects
 * are put once under a prefix of this run. The readiness tests also start
 * granary-meta (on TCP, after the worker) to join.
 */
#include <arpa/inet.h>
#include <check.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache/blockstore.h"
#include "cache/http.h"
#include "cache/preload.h"
#include "block/token.h"
#include "common/retry.h"
#include "e2e/harness.h"
#include "store/store.h"
#include "unit/check_main.h"

#define BS (64u << 10)        /* dataset "ds": small blocks, many of them */
#define BIG_BS (1u << 20)     /* dataset "big": 1 MiB blocks */
#define SECRET "e2e-cluster-secret-0123456789abcdef"
#define OTHER_SECRET "some-other-cluster-secret-xyz"

/* The objects, put once per run under prefix. */
static const struct {
	const char *key;
	size_t size;
} objects[] = {
	{ "a.bin", 3 * BS + 1000 },            /* short last block */
	{ "dir/b.bin", 2 * BS },               /* ends on a block boundary */
	{ "c.bin", 100 },                      /* smaller than a block */
	{ "dir/with space+plus.bin", BS + 7 }, /* a key that needs escaping */
	{ "big.bin", 8 * BIG_BS },             /* for dataset "big" */
};
#define NOBJ (sizeof(objects) / sizeof(objects[0]))
#define OBJ_BIG 4

static char endpoint[256], credentials[512], bucket[64] = "granary-e2e";
static char prefix[64], bin[512];
static char etags[NOBJ][80];
static struct token *tok, *other_tok;

struct worker {
	pid_t pid;
	int port;
	char dir[64];       /* temp dir: cache/, token, log */
	char cache[96];
	char token_path[96];
	struct harness_meta_keys meta_keys; /* when meta_address is set */
	char log_path[96];
	char capacity[32];
	char meta_address[64];  /* "" = standalone */
	const char *extra[8];   /* more arguments, NULL-terminated */
};

static struct worker w;
static long client_timeout_s = 60; /* of each curl request */

/* --- data ---------------------------------------------------------------- */

static unsigned char *object_data(size_t i)
{
	unsigned char *buf = malloc(objects[i].size);

	harness_fill(buf, objects[i].size, ((unsigned)i + 1) * 2654435761u + 1);
	return buf;
}

static void read_env(void)
{
	char bindir[400];

	harness_s3_env(endpoint, sizeof(endpoint), credentials, sizeof(credentials));
	harness_bin_dir(bindir, sizeof(bindir));
	snprintf(bin, sizeof(bin), "%s/granary-worker", bindir);
}

/* Unchecked fixture: runs once, in the parent, before the tests fork. */
static void put_objects(void)
{
	static bool done;
	struct store_config cfg = { .endpoint = NULL };
	struct store *st = NULL;
	struct error err;
	char uri[128], key[256];

	if (done)
		return;
	done = true;
	read_env();
	cfg.endpoint = endpoint;
	cfg.credentials_file = credentials;
	snprintf(uri, sizeof(uri), "s3://%s", bucket);
	ck_assert_msg(store_open(uri, &cfg, &st, &err) == ERR_OK, "open: %s", err.msg);
	snprintf(prefix, sizeof(prefix), "worker-e2e-%d-%ld/", (int)getpid(), (long)time(NULL));
	for (size_t i = 0; i < NOBJ; i++) {
		unsigned char *data = object_data(i);
		struct store_object info;

		snprintf(key, sizeof(key), "%s%s", prefix, objects[i].key);
		ck_assert_msg(store_put(st, key, data, objects[i].size, &err) == ERR_OK, "put: %s",
			      err.msg);
		ck_assert_msg(store_head(st, key, &info, &err) == ERR_OK, "head: %s", err.msg);
		snprintf(etags[i], sizeof(etags[i]), "%s", info.etag);
		store_object_release(&info);
		free(data);
	}
	store_free(st);
	ck_assert_int_eq(token_new(SECRET, strlen(SECRET), &tok, &err), ERR_OK);
	ck_assert_int_eq(token_new(OTHER_SECRET, strlen(OTHER_SECRET), &other_tok, &err), ERR_OK);
}

static void free_tokens(void)
{
	/* Shared by both test cases; freed at exit. */
}

/* --- the worker process -------------------------------------------------- */

static void print_log(void)
{
	char line[1024];
	FILE *f = fopen(w.log_path, "r");

	if (!f)
		return;
	fprintf(stderr, "--- %s ---\n", w.log_path);
	while (fgets(line, sizeof(line), f))
		fputs(line, stderr);
	fclose(f);
}

static void http_healthz_wait(void);

static void worker_start(void)
{
	char port[16], listen[64];
	char *argv[48];
	char wrapper[256];
	int argc = 0;

	snprintf(wrapper, sizeof(wrapper), "%s",
		 getenv("GRANARY_TEST_WRAPPER") ? getenv("GRANARY_TEST_WRAPPER") : "");

	w.port = harness_free_port();
	snprintf(port, sizeof(port), "%d", w.port);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", w.port);
	/* GRANARY_TEST_WRAPPER="valgrind -q --leak-check=full" runs the
	 * worker under a tool (words split on spaces). */
	if (wrapper[0]) {
		char *save = NULL;

		for (char *t = strtok_r(wrapper, " ", &save); t && argc < 12;
		     t = strtok_r(NULL, " ", &save))
			argv[argc++] = t;
	}
	argv[argc++] = bin;
	argv[argc++] = "--listen";
	argv[argc++] = listen;
	argv[argc++] = "--cache.dir";
	argv[argc++] = w.cache;
	argv[argc++] = "--cache.capacity";
	argv[argc++] = w.capacity;
	argv[argc++] = "--cache.block_size";
	argv[argc++] = "64KiB";
	argv[argc++] = "--token_file";
	argv[argc++] = w.token_path;
	argv[argc++] = "--store.endpoint";
	argv[argc++] = endpoint;
	argv[argc++] = "--store.credentials_file";
	argv[argc++] = credentials;
	argv[argc++] = "--http.shutdown_grace";
	argv[argc++] = "5s";
	argv[argc++] = "--log.level";
	argv[argc++] = "info";
	if (w.meta_address[0]) {
		/* The worker signs its calls to meta with the worker role's key. */
		harness_meta_keys(w.dir, &w.meta_keys);
		argv[argc++] = "--meta.address";
		argv[argc++] = w.meta_address;
		argv[argc++] = "--meta.key_file";
		argv[argc++] = w.meta_keys.worker;
	}
	for (size_t i = 0; i < sizeof(w.extra) / sizeof(w.extra[0]) && w.extra[i]; i++)
		argv[argc++] = (char *)w.extra[i];
	argv[argc] = NULL;

	w.pid = harness_spawn((const char *const *)argv, w.log_path);
	http_healthz_wait();
}

/* SIGTERM; returns the exit status (or -1 if it did not exit within
 * 10 s) and the time it took in *ms. */
static int worker_stop(uint64_t *ms)
{
	return harness_stop(&w.pid, 10000, ms);
}

/* Checked fixture: a fresh directory and a running worker per test. */
static void setup_capacity(const char *capacity)
{
	harness_tmpdir(w.dir, sizeof(w.dir), "/tmp/test_worker_XXXXXX");
	snprintf(w.cache, sizeof(w.cache), "%s/cache", w.dir);
	snprintf(w.token_path, sizeof(w.token_path), "%s/token", w.dir);
	snprintf(w.log_path, sizeof(w.log_path), "%s/worker.log", w.dir);
	snprintf(w.capacity, sizeof(w.capacity), "%s", capacity);
	harness_write_file(w.token_path, SECRET "\n", 0600);
	worker_start();
}

static void setup(void)
{
	setup_capacity("256MiB");
}

static void setup_small(void)
{
	/* Four 64 KiB blocks with their 4 KiB headers. */
	setup_capacity("272KiB");
}

/* Every test ends with a graceful stop, so that each one also checks that
 * the worker exits 0 at SIGTERM (and, under a wrapper, frees everything). */
static void teardown(void)
{
	int status = 0;

	if (w.pid > 0)
		status = worker_stop(NULL);
	if (status != 0)
		print_log();
	umount2(w.cache, MNT_DETACH); /* the full-disk tests' tmpfs; else nothing */
	harness_rm_rf(w.dir);
	ck_assert_msg(status == 0, "granary-worker exited with status %d at SIGTERM", status);
}

/* --- the HTTP client ----------------------------------------------------- */

enum auth { AUTH_OK, AUTH_NONE, AUTH_OTHER_SECRET, AUTH_STALE, AUTH_MALFORMED, AUTH_OTHER_QUERY };

struct resp {
	long status;
	unsigned char *body;
	size_t len, cap;
	char cache[16];          /* X-Granary-Cache */
	char content_range[96];
	char allow[64];
	char crc[BLOCK_CRC_HEADER_MAX]; /* X-Granary-Crc32c */
};

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	struct resp *r = arg;

	if (r->len + size * n + 1 > r->cap) {
		size_t cap = r->cap ? r->cap : 64 << 10;
		unsigned char *grown;

		while (cap < r->len + size * n + 1)
			cap *= 2;
		grown = realloc(r->body, cap);
		if (!grown)
			return 0;
		r->body = grown;
		r->cap = cap;
	}
	memcpy(r->body + r->len, data, size * n);
	r->len += size * n;
	r->body[r->len] = '\0';
	return size * n;
}

static void header_value(const char *line, size_t n, const char *name, char *out, size_t size)
{
	size_t nl = strlen(name);

	if (n > nl + 1 && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
		const char *v = line + nl + 1;
		size_t len = n - nl - 1;

		while (len && (*v == ' '))
			v++, len--;
		while (len && (v[len - 1] == '\r' || v[len - 1] == '\n'))
			len--;
		snprintf(out, size, "%.*s", (int)len, v);
	}
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
	struct resp *r = arg;

	header_value(data, size * n, "X-Granary-Cache", r->cache, sizeof(r->cache));
	header_value(data, size * n, "Content-Range", r->content_range, sizeof(r->content_range));
	header_value(data, size * n, "Allow", r->allow, sizeof(r->allow));
	header_value(data, size * n, BLOCK_CRC_HEADER, r->crc, sizeof(r->crc));
	return size * n;
}

static void resp_free(struct resp *r)
{
	free(r->body);
	memset(r, 0, sizeof(*r));
}

/*
 * One request on handle c (NULL: a fresh one). path and query go on the
 * wire as given and are what is signed.
 */
static struct resp request_on(CURL *c, const char *method, const char *path, const char *query,
			      const char *body, const char *range, enum auth auth)
{
	struct resp r = { 0 };
	struct curl_slist *hdrs = NULL;
	char url[4096], h[TOKEN_HEADER_MAX + 32], value[TOKEN_HEADER_MAX];
	int64_t now = (int64_t)time(NULL);
	bool own = c == NULL;
	CURLcode rc;

	if (own)
		c = curl_easy_init();
	ck_assert_ptr_nonnull(c);
	curl_easy_reset(c);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s%s%s", w.port, path,
		 query && *query ? "?" : "", query ? query : "");
	switch (auth) {
	case AUTH_OK:
		token_sign(tok, method, path, query, now, value, sizeof(value));
		break;
	case AUTH_OTHER_SECRET:
		token_sign(other_tok, method, path, query, now, value, sizeof(value));
		break;
	case AUTH_STALE:
		token_sign(tok, method, path, query, now - 1000, value, sizeof(value));
		break;
	case AUTH_OTHER_QUERY:
		token_sign(tok, method, path, "key=c.bin", now, value, sizeof(value));
		break;
	case AUTH_MALFORMED:
		snprintf(value, sizeof(value), "Granary-HMAC ts=%lld", (long long)now);
		break;
	case AUTH_NONE:
		value[0] = '\0';
		break;
	}
	if (value[0]) {
		snprintf(h, sizeof(h), "Authorization: %s", value);
		hdrs = curl_slist_append(hdrs, h);
	}
	if (range) {
		snprintf(h, sizeof(h), "Range: %s", range);
		hdrs = curl_slist_append(hdrs, h);
	}
	if (body)
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, client_timeout_s);
	rc = curl_easy_perform(c);
	ck_assert_msg(rc == CURLE_OK, "%s %s: %s", method, url, curl_easy_strerror(rc));
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
	curl_slist_free_all(hdrs);
	if (own)
		curl_easy_cleanup(c);
	return r;
}

static struct resp request(const char *method, const char *path, const char *query,
			   const char *body, const char *range, enum auth auth)
{
	return request_on(NULL, method, path, query, body, range, auth);
}

static void http_healthz_wait(void)
{
	uint64_t deadline = retry_now_ms() + (getenv("GRANARY_TEST_WRAPPER") ? 60000 : 15000);
	char url[64];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz", w.port);
	for (;;) {
		CURL *c = curl_easy_init();
		long status = 0;

		curl_easy_setopt(c, CURLOPT_URL, url);
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
		curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 500L);
		if (curl_easy_perform(c) == CURLE_OK)
			curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_cleanup(c);
		if (status == 200)
			return;
		if (waitpid(w.pid, NULL, WNOHANG) == w.pid || retry_now_ms() > deadline) {
			print_log();
			ck_abort_msg("granary-worker did not answer /healthz on port %d", w.port);
		}
		retry_sleep_ms(20);
	}
}

/* "key=<escaped>&etag=<escaped>[&readahead=N]" for object i. */
static void block_query(size_t i, char *out, size_t size, unsigned readahead)
{
	char *k = curl_easy_escape(NULL, objects[i].key, 0);
	char *e = curl_easy_escape(NULL, etags[i], 0);

	if (readahead)
		snprintf(out, size, "key=%s&etag=%s&readahead=%u", k, e, readahead);
	else
		snprintf(out, size, "key=%s&etag=%s", k, e);
	curl_free(k);
	curl_free(e);
}

static struct resp get_block_on(CURL *c, const char *ds, size_t obj, uint64_t index,
				const char *range)
{
	char path[128], query[1024];

	snprintf(path, sizeof(path), "/v1/blocks/%s/%llu", ds, (unsigned long long)index);
	block_query(obj, query, sizeof(query), 0);
	return request_on(c, "GET", path, query, NULL, range, AUTH_OK);
}

static struct resp get_block(const char *ds, size_t obj, uint64_t index, const char *range)
{
	return get_block_on(NULL, ds, obj, index, range);
}

/* Checks a whole-block answer against the source bytes. */
static void expect_block(const struct resp *r, size_t obj, uint64_t index, uint32_t bs)
{
	unsigned char *data = object_data(obj);
	uint64_t off = index * bs, len = objects[obj].size - off < bs ? objects[obj].size - off : bs;

	ck_assert_msg(r->status == 200, "block %llu of %s: HTTP %ld: %s",
		      (unsigned long long)index, objects[obj].key, r->status,
		      r->body ? (char *)r->body : "");
	ck_assert_uint_eq(r->len, len);
	ck_assert_msg(memcmp(r->body, data + off, len) == 0, "block %llu of %s differs",
		      (unsigned long long)index, objects[obj].key);
	free(data);
}

static void register_dataset(const char *name, uint32_t bs, const char *policy)
{
	char path[128], body[2048];
	struct resp r;

	snprintf(path, sizeof(path), "/v1/datasets/%s", name);
	snprintf(body, sizeof(body),
		 "{\"source\":\"s3://%s/%s\",\"endpoint\":\"%s\",\"credentials_file\":\"%s\","
		 "\"block_size\":%u,\"policy\":\"%s\"}",
		 bucket, prefix, endpoint, credentials, bs, policy);
	r = request("PUT", path, NULL, body, NULL, AUTH_OK);
	ck_assert_msg(r.status == 201 || r.status == 200, "PUT %s: HTTP %ld: %s", path, r.status,
		      r.body ? (char *)r.body : "");
	resp_free(&r);
}

/* The value of one sample line of /metrics. */
static uint64_t metric(const char *name)
{
	struct resp r = request("GET", "/metrics", NULL, NULL, NULL, AUTH_NONE);
	char pat[128];
	const char *p;
	uint64_t v;

	ck_assert_int_eq(r.status, 200);
	snprintf(pat, sizeof(pat), "\n%s ", name);
	p = strstr((char *)r.body, pat);
	ck_assert_msg(p != NULL, "no metric %s in:\n%s", name, r.body);
	v = strtoull(p + strlen(pat), NULL, 10);
	resp_free(&r);
	return v;
}

static uint64_t blocks_of(size_t obj, uint32_t bs)
{
	return (objects[obj].size + bs - 1) / bs;
}


/* --- raw connections ----------------------------------------------------- */

/* A TCP connection to the worker from source address src (NULL: any):
 * 127.0.0.0/8 is all loopback on Linux, so 127.0.0.2 is another client. */
static int raw_connect(const char *src)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	if (src) {
		ck_assert_int_eq(inet_pton(AF_INET, src, &a.sin_addr), 1);
		ck_assert_msg(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0, "bind '%s': %s", src,
			      strerror(errno));
	}
	a.sin_port = htons((uint16_t)w.port);
	ck_assert_int_eq(inet_pton(AF_INET, "127.0.0.1", &a.sin_addr), 1);
	ck_assert_msg(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0, "connect port %d: %s",
		      w.port, strerror(errno));
	return fd;
}

/* Reads into buf (NUL-terminated) until the worker closes the connection
 * or timeout_ms pass; *closed says which. */
static size_t raw_read(int fd, char *buf, size_t size, uint64_t timeout_ms, bool *closed)
{
	uint64_t deadline = retry_now_ms() + timeout_ms;
	size_t got = 0;

	*closed = false;
	for (;;) {
		uint64_t now = retry_now_ms();
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, now >= deadline ? 0 : (int)(deadline - now)) <= 0)
			break;
		n = recv(fd, buf + got, size - 1 - got, 0);
		if (n <= 0) {
			*closed = n == 0 || errno == ECONNRESET;
			break;
		}
		got += (size_t)n;
		if (got == size - 1)
			break;
	}
	buf[got] = '\0';
	return got;
}

/* --- tests --------------------------------------------------------------- */

START_TEST(test_worker_serves_exact_blocks_and_ranges)
{
	unsigned char *a = object_data(0);
	struct resp r;

	register_dataset("ds", BS, "lru");
	for (size_t i = 0; i < OBJ_BIG; i++) {
		for (uint64_t b = 0; b < blocks_of(i, BS); b++) {
			r = get_block("ds", i, b, NULL);
			expect_block(&r, i, b, BS);
			ck_assert_str_eq(r.cache, "miss");
			resp_free(&r);
			r = get_block("ds", i, b, NULL);
			expect_block(&r, i, b, BS);
			ck_assert_str_eq(r.cache, "hit");
			resp_free(&r);
		}
	}

	r = get_block("ds", 0, 0, "bytes=10-99");
	ck_assert_int_eq(r.status, 206);
	ck_assert_str_eq(r.content_range, "bytes 10-99/65536");
	ck_assert_uint_eq(r.len, 90);
	ck_assert(memcmp(r.body, a + 10, 90) == 0);
	resp_free(&r);
	r = get_block("ds", 0, 1, "bytes=-100");
	ck_assert_int_eq(r.status, 206);
	ck_assert_str_eq(r.content_range, "bytes 65436-65535/65536");
	ck_assert(memcmp(r.body, a + 2 * BS - 100, 100) == 0);
	resp_free(&r);
	r = get_block("ds", 0, 3, "bytes=900-5000"); /* the short last block: 1000 bytes */
	ck_assert_int_eq(r.status, 206);
	ck_assert_str_eq(r.content_range, "bytes 900-999/1000");
	ck_assert(r.len == 100 && memcmp(r.body, a + 3 * BS + 900, 100) == 0);
	resp_free(&r);

	r = get_block("ds", 0, 3, "bytes=1000-");
	ck_assert_int_eq(r.status, 416);
	ck_assert_str_eq(r.content_range, "bytes */1000");
	ck_assert_ptr_nonnull(strstr((char *)r.body, "past the end of the block (1000 bytes)"));
	resp_free(&r);
	r = get_block("ds", 0, 0, "bytes=9-3");
	ck_assert_int_eq(r.status, 400);
	ck_assert_ptr_nonnull(strstr((char *)r.body, "range 'bytes=9-3' is malformed"));
	resp_free(&r);
	/* Blocks past the end of the object, on and off a block boundary. */
	r = get_block("ds", 0, 4, NULL);
	ck_assert_int_eq(r.status, 416);
	resp_free(&r);
	r = get_block("ds", 1, 2, NULL);
	ck_assert_int_eq(r.status, 416);
	resp_free(&r);
	/* With the object's size in the request (size=, as the mount sends
	 * it), a block past it is 416 without a store request. */
	{
		uint64_t before = metric("granary_worker_store_requests_total");
		char query[1100], sized[1200];

		block_query(0, query, sizeof(query), 0);
		snprintf(sized, sizeof(sized), "%s&size=%zu", query, objects[0].size);
		r = request("GET", "/v1/blocks/ds/4", sized, NULL, NULL, AUTH_OK);
		ck_assert_int_eq(r.status, 416);
		ck_assert_msg(strstr((char *)r.body, "block 4 is past the end of its 197608 bytes"),
			      "%s", (char *)r.body);
		resp_free(&r);
		ck_assert_uint_eq(metric("granary_worker_store_requests_total"), before);
	}
	free(a);

	ck_assert_uint_eq(metric("granary_worker_misses_total"), 9);
	/* Every block twice, then four ranges of cached blocks (one of them 416). */
	ck_assert_uint_eq(metric("granary_worker_hits_total"), 9 + 4);
	ck_assert_uint_gt(metric("granary_worker_served_bytes_total"), 2 * (3 * BS + 1000));
}
END_TEST

struct reader {
	pthread_barrier_t *start;
	int ok;
	char cache[16];
};

static void *concurrent_reader(void *arg)
{
	struct reader *rd = arg;
	CURL *c = curl_easy_init();
	struct resp r;
	unsigned char *data = object_data(OBJ_BIG);

	pthread_barrier_wait(rd->start);
	r = get_block_on(c, "big", OBJ_BIG, 2, NULL);
	rd->ok = r.status == 200 && r.len == BIG_BS && memcmp(r.body, data + 2 * BIG_BS, BIG_BS) == 0;
	snprintf(rd->cache, sizeof(rd->cache), "%s", r.cache);
	resp_free(&r);
	free(data);
	curl_easy_cleanup(c);
	return NULL;
}

START_TEST(test_worker_concurrent_readers_of_a_cold_block_cause_one_get)
{
	enum { N = 100 };
	static struct reader rd[N];
	pthread_t t[N];
	pthread_barrier_t start;
	uint64_t before, after, t0;
	int misses = 0, hits = 0;

	register_dataset("big", BIG_BS, "lru");
	before = metric("granary_worker_store_requests_total");
	pthread_barrier_init(&start, NULL, N);
	t0 = retry_now_ms();
	for (int i = 0; i < N; i++) {
		rd[i] = (struct reader){ .start = &start };
		ck_assert_int_eq(pthread_create(&t[i], NULL, concurrent_reader, &rd[i]), 0);
	}
	for (int i = 0; i < N; i++) {
		pthread_join(t[i], NULL);
		ck_assert_msg(rd[i].ok, "reader %d got a wrong answer", i);
		misses += strcmp(rd[i].cache, "miss") == 0;
		hits += strcmp(rd[i].cache, "hit") == 0;
	}
	pthread_barrier_destroy(&start);
	after = metric("granary_worker_store_requests_total");
	fprintf(stderr,
		"concurrent readers: %d of one cold 1 MiB block in %llu ms: %llu store GET(s), "
		"%d answered as miss (waited for the fetch), %d as hit\n",
		N, (unsigned long long)(retry_now_ms() - t0), (unsigned long long)(after - before),
		misses, hits);
	ck_assert_uint_eq(after - before, 1);
	ck_assert_uint_eq(metric("granary_worker_store_fetches_total"), 1);
	ck_assert_int_eq(misses + hits, N);
}
END_TEST

START_TEST(test_worker_restart_keeps_the_cache)
{
	struct resp r;
	uint64_t ms = 0;

	register_dataset("ds", BS, "scan-resistant");
	r = get_block("ds", 0, 1, NULL);
	expect_block(&r, 0, 1, BS);
	ck_assert_str_eq(r.cache, "miss");
	resp_free(&r);
	ck_assert_int_eq(worker_stop(&ms), 0);

	worker_start();
	register_dataset("ds", BS, "scan-resistant");
	r = get_block("ds", 0, 1, NULL);
	expect_block(&r, 0, 1, BS);
	ck_assert_str_eq(r.cache, "hit");
	resp_free(&r);
	ck_assert_uint_eq(metric("granary_worker_hits_total"), 1);
	ck_assert_uint_eq(metric("granary_worker_misses_total"), 0);
	ck_assert_uint_eq(metric("granary_worker_store_requests_total"), 0);
	ck_assert_uint_eq(metric("granary_worker_blocks"), 1);
}
END_TEST

START_TEST(test_worker_sigterm_exits_zero_promptly)
{
	CURL *c = curl_easy_init();
	struct resp r;
	uint64_t ms = 0;
	int status;

	/* A keep-alive connection stays open across the stop. */
	register_dataset("ds", BS, "lru");
	r = get_block_on(c, "ds", 2, 0, NULL);
	expect_block(&r, 2, 0, BS);
	resp_free(&r);
	status = worker_stop(&ms);
	curl_easy_cleanup(c);
	fprintf(stderr, "SIGTERM to exit: %llu ms\n", (unsigned long long)ms);
	ck_assert_int_eq(status, 0);
	ck_assert_uint_lt(ms, 2000);
}
END_TEST

/* Sums the file sizes under dir, each rounded up to 4 KiB (what the
 * capacity counts). */
static uint64_t disk_used;

static int add_size(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	if (flag == FTW_F)
		disk_used += ((uint64_t)sb->st_size + 4095) / 4096 * 4096;
	return 0;
}

START_TEST(test_worker_capacity_is_never_exceeded)
{
	const uint64_t capacity = 272u << 10;
	char blocks[128];
	struct resp r;

	register_dataset("ds", BS, "lru");
	snprintf(blocks, sizeof(blocks), "%s/blocks", w.cache);
	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < OBJ_BIG; i++) {
			for (uint64_t b = 0; b < blocks_of(i, BS); b++) {
				r = get_block("ds", i, b, NULL);
				expect_block(&r, i, b, BS);
				resp_free(&r);
				ck_assert_uint_le(metric("granary_worker_used_bytes"), capacity);
				disk_used = 0;
				nftw(blocks, add_size, 16, FTW_PHYS);
				ck_assert_uint_le(disk_used, capacity);
			}
		}
	}
	ck_assert_uint_eq(metric("granary_worker_capacity_bytes"), capacity);
	ck_assert_uint_le(metric("granary_worker_blocks"), 4);
	ck_assert_uint_gt(metric("granary_worker_evictions_total"), 0);
}
END_TEST

static char block_file[512];

static int remember_block(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	if (flag == FTW_F && sb->st_size > 4096)
		snprintf(block_file, sizeof(block_file), "%s", path);
	return 0;
}

/* Whether a whole-block answer's bytes match the checksums it carries. */
static bool body_matches_its_crcs(const struct resp *r)
{
	struct block_sums sums;
	struct error err;

	ck_assert_msg(block_crc_header_parse(r->crc, block_chunk_size(BS), 0, r->len, r->len,
					    &sums, &err) == ERR_OK, "%s", err.msg);
	return block_sums_check(&sums, 0, r->body, r->len);
}

/*
 * A data byte flipped in a served block's file: every answer carries the
 * block's chunk checksums from its header, so the client sees the bytes
 * do not match (the worker does not read what it sends); asked again with
 * verify=1, the worker reads its copy, drops it (counted) and fetches the
 * block again, once.
 */
START_TEST(test_worker_corrupt_block_is_detected_and_fetched_again)
{
	char blocks[128], path[128], query[1100];
	struct resp r;
	unsigned char byte;
	int fd;

	register_dataset("ds", BS, "lru");
	r = get_block("ds", 0, 1, NULL);
	expect_block(&r, 0, 1, BS);
	ck_assert(body_matches_its_crcs(&r));
	resp_free(&r);
	snprintf(blocks, sizeof(blocks), "%s/blocks", w.cache);
	block_file[0] = '\0';
	nftw(blocks, remember_block, 16, FTW_PHYS);
	ck_assert_msg(block_file[0], "no block file under %s", blocks);
	fd = open(block_file, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &byte, 1, 4096 + 1234), 1);
	byte ^= 0x01;
	ck_assert_int_eq(pwrite(fd, &byte, 1, 4096 + 1234), 1);
	close(fd);

	r = get_block("ds", 0, 1, NULL);
	ck_assert_int_eq(r.status, 200);
	ck_assert_msg(!body_matches_its_crcs(&r), "a flipped byte passed the checksums: %s", r.crc);
	resp_free(&r);
	ck_assert_uint_eq(metric("granary_worker_corrupt_total"), 0);

	snprintf(path, sizeof(path), "/v1/blocks/ds/1");
	block_query(0, query, sizeof(query) - 16, 0);
	strcat(query, "&verify=1");
	r = request_on(NULL, "GET", path, query, NULL, NULL, AUTH_OK);
	expect_block(&r, 0, 1, BS);
	ck_assert_str_eq(r.cache, "miss");
	ck_assert(body_matches_its_crcs(&r));
	resp_free(&r);
	ck_assert_uint_eq(metric("granary_worker_corrupt_total"), 1);
	ck_assert_uint_eq(metric("granary_worker_store_requests_total"), 2);
	ck_assert_int_eq(harness_file_count(w.log_path, "failed its checksum"), 1);
	r = get_block("ds", 0, 1, NULL);
	expect_block(&r, 0, 1, BS);
	ck_assert_str_eq(r.cache, "hit");
	resp_free(&r);
}
END_TEST

START_TEST(test_worker_requests_without_the_token_get_no_data)
{
	static const struct {
		enum auth auth;
		long status;
		const char *expect;
	} cases[] = {
		{ AUTH_NONE, 401, "missing Authorization header" },
		{ AUTH_MALFORMED, 401, "malformed Authorization header" },
		{ AUTH_OTHER_SECRET, 403, "signature does not match" },
		{ AUTH_OTHER_QUERY, 403, "signature does not match" },
		{ AUTH_STALE, 403, "away from the worker's clock" },
	};
	char query[1024];
	struct resp r;

	register_dataset("ds", BS, "lru");
	block_query(0, query, sizeof(query), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		r = request("GET", "/v1/blocks/ds/0", query, NULL, NULL, cases[i].auth);
		ck_assert_msg(r.status == cases[i].status, "case %zu: HTTP %ld", i, r.status);
		ck_assert_msg(r.len < 200 && strstr((char *)r.body, cases[i].expect), "case %zu: %s",
			      i, r.body);
		ck_assert_str_eq(r.cache, "");
		resp_free(&r);
	}
	/* Even errors say nothing without the token. */
	r = request("GET", "/v1/blocks/nope/abc", NULL, NULL, NULL, AUTH_NONE);
	ck_assert_int_eq(r.status, 401);
	resp_free(&r);
	r = request("PUT", "/v1/datasets/evil", NULL, "{\"source\":\"s3://granary-e2e/\"}", NULL,
		    AUTH_OTHER_SECRET);
	ck_assert_int_eq(r.status, 403);
	resp_free(&r);
	r = request("GET", "/v1/datasets/evil", NULL, NULL, NULL, AUTH_OK);
	ck_assert_int_eq(r.status, 404);
	resp_free(&r);
	/* No byte of a body is taken in without the token: the answer comes
	 * before microhttpd would ask for it (100 Continue) or buffer it. */
	{
		static const char head[] = "POST /v1/preload/ds HTTP/1.1\r\nHost: w\r\n"
					   "Content-Length: 1048576\r\nExpect: 100-continue\r\n\r\n";
		char out[4096];
		int fd = raw_connect(NULL);
		bool closed;

		ck_assert_int_eq(send(fd, head, strlen(head), MSG_NOSIGNAL), (ssize_t)strlen(head));
		raw_read(fd, out, sizeof(out), 3000, &closed);
		close(fd);
		ck_assert_msg(strncmp(out, "HTTP/1.1 401 ", 13) == 0 &&
				      strstr(out, "missing Authorization header"),
			      "answered:\n%.600s", out);
		ck_assert_msg(closed, "the connection stayed open after:\n%.600s", out);
	}
	/* Nothing was fetched for anyone. */
	ck_assert_uint_eq(metric("granary_worker_store_requests_total"), 0);
	/* /metrics, /healthz and /readyz need no token. A standalone worker
	 * with a usable cache directory is ready. */
	r = request("GET", "/healthz", NULL, NULL, NULL, AUTH_NONE);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq((char *)r.body, "ok\n");
	resp_free(&r);
	r = request("GET", "/readyz", NULL, NULL, NULL, AUTH_NONE);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq((char *)r.body, "ok\n");
	resp_free(&r);
}
END_TEST

START_TEST(test_worker_bad_requests_say_what_is_wrong)
{
	static const struct {
		const char *method, *path, *query;
		long status;
		const char *expect;
	} cases[] = {
		{ "GET", "/v1/blocks/ds/abc", "key=a.bin&etag=x", 400, "block index 'abc' is not a number" },
		{ "GET", "/v1/blocks/ds", NULL, 400, "missing block index" },
		{ "GET", "/v1/blocks/nope/0", "key=a.bin&etag=x", 404, "unknown dataset 'nope'" },
		{ "GET", "/v1/blocks/ds/0", "etag=x", 400, "missing query parameter 'key'" },
		{ "GET", "/v1/blocks/ds/0", "key=a.bin", 400, "missing query parameter 'etag'" },
		{ "GET", "/v1/blocks/ds/0", "key=..%2Fother&etag=x", 400, "'..' segment" },
		{ "GET", "/v1/blocks/ds/0", "key=a.bin&etag=%zz", 400, "malformed %-escape" },
		{ "GET", "/v1/blocks/ds/0", "key=a.bin&etag=stale", 404, "a.bin" },
		{ "GET", "/v1/blocks/ds/0", "key=missing.bin&etag=x", 404, "missing.bin" },
		{ "GET", "/v1/nothing", NULL, 404, "no such route '/v1/nothing'" },
		{ "GET", "/nothing", NULL, 404, "no such route" },
		{ "DELETE", "/v1/blocks/ds/0", NULL, 405, "not allowed" },
		{ "PUT", "/v1/datasets/x", NULL, 400, "malformed JSON" },
		{ "GET", "/v1/datasets/bad%20name", NULL, 400, "dataset name 'bad%20name'" },
		{ "GET", "/v1/preload/99", NULL, 404, "unknown preload job 99" },
		{ "POST", "/v1/preload/nope", NULL, 404, "unknown dataset 'nope'" },
	};
	struct resp r;

	register_dataset("ds", BS, "lru");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		r = request(cases[i].method, cases[i].path, cases[i].query, NULL, NULL, AUTH_OK);
		ck_assert_msg(r.status == cases[i].status, "%s %s?%s: HTTP %ld (%s), want %ld",
			      cases[i].method, cases[i].path, cases[i].query ? cases[i].query : "",
			      r.status, r.body ? (char *)r.body : "", cases[i].status);
		ck_assert_msg(r.body && strstr((char *)r.body, cases[i].expect),
			      "%s %s: '%s' lacks '%s'", cases[i].method, cases[i].path,
			      r.body ? (char *)r.body : "", cases[i].expect);
		/* One line of text. */
		ck_assert_ptr_eq(strchr((char *)r.body, '\n'), (char *)r.body + r.len - 1);
		if (r.status == 405)
			ck_assert_str_eq(r.allow, "GET");
		resp_free(&r);
	}
	r = request("PUT", "/v1/datasets/x", NULL, "{\"source\":\"s3://granary-e2e/p\"}", NULL,
		    AUTH_OK);
	ck_assert_int_eq(r.status, 400);
	ck_assert_ptr_nonnull(strstr((char *)r.body, "the prefix must end with '/'"));
	resp_free(&r);
}
END_TEST

START_TEST(test_worker_dataset_api_registers_lists_and_removes)
{
	char body[2048];
	struct resp r;

	snprintf(body, sizeof(body),
		 "{\"source\":\"s3://%s/%s\",\"endpoint\":\"%s\",\"credentials_file\":\"%s\","
		 "\"block_size\":\"64KiB\",\"pin\":true}",
		 bucket, prefix, endpoint, credentials);
	r = request("PUT", "/v1/datasets/ds", NULL, body, NULL, AUTH_OK);
	ck_assert_int_eq(r.status, 201);
	ck_assert_ptr_nonnull(strstr((char *)r.body, "\"block_size\":65536"));
	ck_assert_ptr_nonnull(strstr((char *)r.body, "\"pin\":true"));
	ck_assert_ptr_nonnull(strstr((char *)r.body, "\"policy\":\"scan-resistant\""));
	resp_free(&r);
	r = request("PUT", "/v1/datasets/ds", NULL, body, NULL, AUTH_OK);
	ck_assert_int_eq(r.status, 200);
	resp_free(&r);
	register_dataset("other", BS, "lru");
	r = request("GET", "/v1/datasets", NULL, NULL, NULL, AUTH_OK);
	ck_assert_int_eq(r.status, 200);
	ck_assert_msg(strstr((char *)r.body, "{\"datasets\":[{\"name\":\"ds\",") &&
			      strstr((char *)r.body, "\"name\":\"other\""),
		      "%s", r.body);
	resp_free(&r);
	ck_assert_uint_eq(metric("granary_worker_datasets"), 2);

	r = get_block("ds", 0, 0, NULL);
	expect_block(&r, 0, 0, BS);
	resp_free(&r);
	r = request("DELETE", "/v1/datasets/ds", NULL, NULL, NULL, AUTH_OK);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq((char *)r.body, "{\"name\":\"ds\",\"dropped_blocks\":1}");
	resp_free(&r);
	r = get_block("ds", 0, 0, NULL);
	ck_assert_int_eq(r.status, 404);
	ck_assert_str_eq((char *)r.body, "unknown dataset 'ds'\n");
	resp_free(&r);
	r = request("DELETE", "/v1/datasets/ds", NULL, NULL, NULL, AUTH_OK);
	ck_assert_int_eq(r.status, 404);
	resp_free(&r);
}
END_TEST

/*
 * With http.dataset_writes off (the chart's setting: the worker's datasets
 * come from granary-meta), a token holder can neither register a dataset
 * (which could name a credentials file of the worker's) nor drop one:
 * 403 naming the setting, before the dataset is looked at, and nothing is
 * registered. (On, the same requests register and remove: see
 * test_worker_dataset_api_registers_lists_and_removes.)
 */
START_TEST(test_worker_dataset_writes_off_refuse_put_and_delete)
{
	char body[2048];
	struct resp r;

	ck_assert_int_eq(worker_stop(NULL), 0);
	w.extra[0] = "--http.dataset_writes=false";
	w.extra[1] = NULL;
	worker_start();
	snprintf(body, sizeof(body), "{\"source\":\"s3://%s/%s\",\"credentials_file\":\"%s\"}",
		 bucket, prefix, credentials);
	r = request("PUT", "/v1/datasets/other", NULL, body, NULL, AUTH_OK);
	ck_assert_int_eq(r.status, 403);
	ck_assert_str_eq((char *)r.body, "PUT of dataset 'other' refused: this worker takes its "
					 "datasets from granary-meta alone (http.dataset_writes is off)\n");
	resp_free(&r);
	r = request("DELETE", "/v1/datasets/ds", NULL, NULL, NULL, AUTH_OK);
	ck_assert_int_eq(r.status, 403);
	ck_assert_ptr_nonnull(strstr((char *)r.body, "DELETE of dataset 'ds' refused"));
	resp_free(&r);
	r = request("GET", "/v1/datasets/other", NULL, NULL, NULL, AUTH_OK);
	ck_assert_int_eq(r.status, 404);
	resp_free(&r);
	ck_assert_uint_eq(metric("granary_worker_datasets"), 0);
	w.extra[0] = NULL;
}
END_TEST

/* The number after "name": in a JSON text (flat objects only). */
static long long json_num(const char *json, const char *name)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", name);
	p = strstr(json, pat);
	ck_assert_msg(p != NULL, "no %s in %s", name, json);
	return strtoll(p + strlen(pat), NULL, 10);
}

START_TEST(test_worker_preload_reports_progress_then_reads_hit)
{
	uint64_t total = 0, requests;
	uint64_t deadline = retry_now_ms() + 60000;
	char *status = NULL;
	long long id;
	struct resp r;

	for (size_t i = 0; i < OBJ_BIG; i++)
		total += blocks_of(i, BS);
	total += blocks_of(OBJ_BIG, BS);
	register_dataset("ds", BS, "lru");
	r = request("POST", "/v1/preload/ds", NULL, "{}", NULL, AUTH_OK);
	ck_assert_msg(r.status == 202, "HTTP %ld: %s", r.status, r.body);
	id = json_num((char *)r.body, "id");
	ck_assert_int_ge(id, 1);
	resp_free(&r);
	for (;;) {
		char path[64];

		snprintf(path, sizeof(path), "/v1/preload/%lld", id);
		r = request("GET", path, NULL, NULL, NULL, AUTH_OK);
		ck_assert_int_eq(r.status, 200);
		/* blocks_total is 0 until the listing is in. */
		ck_assert(json_num((char *)r.body, "blocks_total") == 0 ||
			  json_num((char *)r.body, "blocks_done") <=
				  json_num((char *)r.body, "blocks_total"));
		if (!strstr((char *)r.body, "\"state\":\"running\"") || retry_now_ms() > deadline) {
			status = strdup((char *)r.body);
			resp_free(&r);
			break;
		}
		resp_free(&r);
		retry_sleep_ms(20);
	}
	fprintf(stderr, "preload: %s\n", status);
	ck_assert_msg(strstr(status, "\"state\":\"done\"") && strstr(status, "\"code\":\"ok\"") &&
			      strstr(status, "\"lasting\":false"),
		      "%s", status);
	ck_assert_int_eq(json_num(status, "blocks_total"), (long long)total);
	ck_assert_int_eq(json_num(status, "blocks_done"), (long long)total);
	ck_assert_int_eq(json_num(status, "errors"), 0);
	ck_assert_int_eq(json_num(status, "bytes_done"), json_num(status, "bytes_total"));
	free(status);

	requests = metric("granary_worker_store_requests_total");
	for (size_t i = 0; i < OBJ_BIG; i++) {
		for (uint64_t b = 0; b < blocks_of(i, BS); b++) {
			r = get_block("ds", i, b, NULL);
			expect_block(&r, i, b, BS);
			ck_assert_msg(strcmp(r.cache, "hit") == 0, "%s block %llu: %s",
				      objects[i].key, (unsigned long long)b, r.cache);
			resp_free(&r);
		}
	}
	ck_assert_uint_eq(metric("granary_worker_store_requests_total"), requests);
	ck_assert_uint_eq(metric("granary_worker_preload_jobs_running"), 0);
}
END_TEST

START_TEST(test_worker_readahead_warms_the_next_blocks)
{
	char query[1024];
	struct resp r;
	uint64_t deadline = retry_now_ms() + 20000;

	register_dataset("big", BIG_BS, "lru");
	block_query(OBJ_BIG, query, sizeof(query), 4);
	r = request("GET", "/v1/blocks/big/0", query, NULL, NULL, AUTH_OK);
	expect_block(&r, OBJ_BIG, 0, BIG_BS);
	resp_free(&r);
	while (metric("granary_worker_readahead_fetched_total") < 4 && retry_now_ms() < deadline)
		retry_sleep_ms(20);
	ck_assert_uint_eq(metric("granary_worker_readahead_fetched_total"), 4);
	for (uint64_t b = 1; b <= 4; b++) {
		r = get_block("big", OBJ_BIG, b, NULL);
		expect_block(&r, OBJ_BIG, b, BIG_BS);
		ck_assert_str_eq(r.cache, "hit");
		resp_free(&r);
	}
}
END_TEST

/* POST /v1/prefetch/{ds} of the first block of each object named; later
 * reads of those blocks are hits, and bad requests say what is wrong. */
START_TEST(test_worker_prefetch_caches_the_first_block_of_each_object)
{
	static const size_t named[] = { 2, 0, 3 }; /* c.bin, a.bin, dir/with space+plus.bin */
	uint64_t deadline = retry_now_ms() + 20000, fetches0;
	char body[4096];
	size_t len = 0;
	struct resp r;

	/* the read-ahead begins at the pool's 128 threads, and tries fewer
	 * (down to threads_min) only once the rate is steady */
	ck_assert_uint_eq(metric("granary_worker_readahead_limit"), 128);
	register_dataset("ds", BS, "lru");
	fetches0 = metric("granary_worker_store_fetches_total");
	len += (size_t)snprintf(body + len, sizeof(body) - len, "{\"objects\":[");
	for (size_t i = 0; i < 3; i++)
		len += (size_t)snprintf(body + len, sizeof(body) - len,
					"%s{\"key\":\"%s\",\"etag\":\"%s\",\"size\":%zu}", i ? "," : "",
					objects[named[i]].key, etags[named[i]], objects[named[i]].size);
	snprintf(body + len, sizeof(body) - len, "]}");
	/* the same objects twice: a block queued or held costs no second GET */
	for (int round = 0; round < 2; round++) {
		r = request("POST", "/v1/prefetch/ds", NULL, body, NULL, AUTH_OK);
		ck_assert_msg(r.status == 204, "HTTP %ld: %s", r.status, r.body ? (char *)r.body : "");
		ck_assert_uint_eq(r.len, 0);
		resp_free(&r);
	}
	while (metric("granary_worker_readahead_fetched_total") < 3 && retry_now_ms() < deadline)
		retry_sleep_ms(20);
	ck_assert_uint_eq(metric("granary_worker_readahead_fetched_total"), 3);
	ck_assert_uint_eq(metric("granary_worker_store_fetches_total") - fetches0, 3);
	for (size_t i = 0; i < 3; i++) {
		r = get_block("ds", named[i], 0, NULL);
		expect_block(&r, named[i], 0, BS);
		ck_assert_str_eq(r.cache, "hit");
		resp_free(&r);
	}
	/* only the first block of each: a.bin's second is not held */
	r = get_block("ds", 0, 1, NULL);
	expect_block(&r, 0, 1, BS);
	ck_assert_str_eq(r.cache, "miss");
	resp_free(&r);

	r = request("POST", "/v1/prefetch/ds", NULL, "{\"objects\":[{\"key\":\"c.bin\",\"size\":100}]}",
		    NULL, AUTH_OK);
	ck_assert_int_eq(r.status, 400);
	ck_assert_ptr_nonnull(strstr((char *)r.body, "item 0 has no etag"));
	resp_free(&r);
	r = request("POST", "/v1/prefetch/nosuch", NULL, body, NULL, AUTH_OK);
	ck_assert_int_eq(r.status, 404);
	resp_free(&r);
	r = request("POST", "/v1/prefetch/ds", NULL, body, NULL, AUTH_NONE);
	ck_assert_int_eq(r.status, 401);
	resp_free(&r);
	r = request("GET", "/v1/prefetch/ds", NULL, NULL, NULL, AUTH_OK);
	ck_assert_int_eq(r.status, 405);
	resp_free(&r);
}
END_TEST

struct hot_reader {
	uint64_t deadline;
	uint64_t bytes;
	int ok;
};

static void *hot_reader(void *arg)
{
	struct hot_reader *hr = arg;
	CURL *c = curl_easy_init();

	hr->ok = 1;
	while (retry_now_ms() < hr->deadline) {
		struct resp r = get_block_on(c, "big", OBJ_BIG, hr->bytes / BIG_BS % 8, NULL);

		hr->ok &= r.status == 200 && r.len == BIG_BS;
		hr->bytes += r.len;
		resp_free(&r);
	}
	curl_easy_cleanup(c);
	return NULL;
}

/* Not a benchmark (the machine is shared and small): it reports the rate
 * of warm 1 MiB block reads over keep-alive connections, sendfile path. */
START_TEST(test_worker_warm_block_throughput_is_reported)
{
	enum { N = 4 };
	struct hot_reader hr[N];
	pthread_t t[N];
	uint64_t total = 0, t0;
	struct resp r;

	register_dataset("big", BIG_BS, "lru");
	for (uint64_t b = 0; b < 8; b++) {
		r = get_block("big", OBJ_BIG, b, NULL);
		expect_block(&r, OBJ_BIG, b, BIG_BS);
		resp_free(&r);
	}
	t0 = retry_now_ms();
	for (int i = 0; i < N; i++) {
		hr[i] = (struct hot_reader){ .deadline = t0 + 2000 };
		pthread_create(&t[i], NULL, hot_reader, &hr[i]);
	}
	for (int i = 0; i < N; i++) {
		pthread_join(t[i], NULL);
		ck_assert(hr[i].ok);
		total += hr[i].bytes;
	}
	fprintf(stderr, "warm 1 MiB blocks, %d keep-alive clients: %.0f MB/s (%.1f GB in %.1f s)\n",
		N, (double)total / 1e6 / ((double)(retry_now_ms() - t0) / 1000),
		(double)total / 1e9, (double)(retry_now_ms() - t0) / 1000);
	ck_assert_uint_eq(metric("granary_worker_store_requests_total"), 8);
}
END_TEST

/* --- readiness ------------------------------------------------------------ */

static pid_t meta_pid;
static int meta_port;

/* Checked fixture: a worker joined to a granary-meta that is not there
 * yet (its port is free, nothing listens). */
static void setup_meta(void)
{
	meta_port = harness_free_port();
	snprintf(w.meta_address, sizeof(w.meta_address), "127.0.0.1:%d", meta_port);
	setup();
}

static void teardown_meta(void)
{
	harness_stop(&meta_pid, 5000, NULL);
	w.meta_address[0] = '\0';
	teardown();
}

static char meta_log[128];

/* granary-meta on meta_port with the heartbeat interval and expiry given,
 * its data under the worker's temp dir, each call in its log (debug). */
static void meta_start_with(const char *interval, const char *expiry)
{
	char exe[600], listen[64], data[128];
	const char *argv[] = { exe, "--listen", listen, "--data_dir", data,
			       "--heartbeat.interval", interval, "--heartbeat.expiry", expiry,
			       "--log.level", "debug",
			       w.meta_keys.args[0], w.meta_keys.args[1], w.meta_keys.args[2],
			       w.meta_keys.args[3], w.meta_keys.args[4], w.meta_keys.args[5], NULL };

	snprintf(exe, sizeof(exe), "%.*s/granary-meta", (int)(strrchr(bin, '/') - bin), bin);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", meta_port);
	snprintf(data, sizeof(data), "%s/meta", w.dir);
	snprintf(meta_log, sizeof(meta_log), "%s/meta.log", w.dir);
	meta_pid = harness_spawn(argv, meta_log);
}

/* A short heartbeat: interval 200 ms, expiry 1 s. */
static void meta_start(void)
{
	meta_start_with("200ms", "1s");
}

/* Polls /readyz until its status is want and its body holds needle;
 * returns the last body (caller frees). */
static char *readyz_wait(long want, const char *needle, uint64_t timeout_ms)
{
	uint64_t t0 = retry_now_ms();

	for (;;) {
		struct resp r = request("GET", "/readyz", NULL, NULL, NULL, AUTH_NONE);
		char *body = strdup(r.body ? (char *)r.body : "");
		long status = r.status;

		resp_free(&r);
		if (status == want && strstr(body, needle))
			return body;
		if (retry_now_ms() - t0 > timeout_ms) {
			print_log();
			ck_abort_msg("/readyz: no HTTP %ld with '%s' after %llu ms; last: HTTP %ld '%s'",
				     want, needle, (unsigned long long)timeout_ms, status, body);
		}
		free(body);
		retry_sleep_ms(100);
	}
}

/* The log line of a change to "not ready" because of meta. */
#define NOT_READY_META "msg=\"not ready\" cause=\"granary-meta unreachable"

START_TEST(test_worker_readyz_follows_granary_meta)
{
	char want[128], *body;
	struct resp r;

	/* Nothing listens at meta's address: not ready, and why. Live all
	 * the same: a restart would not bring meta back. */
	snprintf(want, sizeof(want), "granary-meta unreachable at 127.0.0.1:%d since ", meta_port);
	body = readyz_wait(503, want, 15000);
	ck_assert_msg(strstr(body, "s: "), "no cause in '%s'", body);
	free(body);
	r = request("GET", "/healthz", NULL, NULL, NULL, AUTH_NONE);
	ck_assert_int_eq(r.status, 200);
	resp_free(&r);
	/* Many probes, one log line for the change. */
	body = readyz_wait(503, want, 1000);
	free(body);
	ck_assert_int_eq(harness_file_count(w.log_path, NOT_READY_META), 1);

	/* meta comes up: the next heartbeat makes the worker ready. */
	meta_start();
	free(readyz_wait(200, "ok", 20000));
	ck_assert_int_eq(harness_file_count(w.log_path, "msg=ready"), 1);

	/* meta goes away: past its expiry (1 s) the worker is not ready. */
	harness_stop(&meta_pid, 5000, NULL);
	body = readyz_wait(503, want, 15000);
	free(body);
	ck_assert_int_eq(harness_file_count(w.log_path, NOT_READY_META), 2);
	ck_assert_int_eq(harness_file_count(w.log_path, "msg=ready"), 1);
}
END_TEST

/*
 * Requests for a dataset the worker does not have ask meta for its
 * datasets again (meta may have registered it since the last round), at
 * most every WORKER_META_ASKED_GAP_MS: those rounds list the datasets and
 * send no heartbeat. Requests for a dataset meta lost made each a
 * heartbeat as well: a storm on meta from every worker.
 */
START_TEST(test_worker_requests_for_unknown_datasets_send_no_heartbeats)
{
	int beats, lists;
	uint64_t t0;

	meta_start_with("3s", "10s");
	free(readyz_wait(200, "ok", 20000));
	beats = harness_file_count(meta_log, "method=/granary.v1.Meta/Heartbeat");
	lists = harness_file_count(meta_log, "method=/granary.v1.Meta/ListDatasets");
	t0 = retry_now_ms();
	while (retry_now_ms() - t0 < 2000) {
		struct resp r = request("GET", "/v1/blocks/nope/0", "key=a.bin&etag=x", NULL, NULL,
					AUTH_OK);

		ck_assert_int_eq(r.status, 404);
		resp_free(&r);
	}
	beats = harness_file_count(meta_log, "method=/granary.v1.Meta/Heartbeat") - beats;
	lists = harness_file_count(meta_log, "method=/granary.v1.Meta/ListDatasets") - lists;
	fprintf(stderr, "2 s of requests for an unknown dataset: %d ListDatasets, %d heartbeats\n",
		lists, beats);
	ck_assert_msg(lists >= 4, "only %d rounds asked for in 2 s", lists);
	ck_assert_msg(beats <= 1, "%d heartbeats in 2 s at an interval of 3 s", beats);
}
END_TEST

/* Runs granary-probe (the chart's exec readiness probe) on /readyz; returns
 * its exit status and puts its output in out. */
static int probe_readyz(char *out, size_t size)
{
	char bindir[4096], cmd[4300];
	size_t n;
	FILE *p;
	int st;

	harness_bin_dir(bindir, sizeof(bindir));
	snprintf(cmd, sizeof(cmd), "'%s/granary-probe' http://127.0.0.1:%d/readyz 2>&1", bindir,
		 w.port);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	n = fread(out, 1, size - 1, p);
	out[n] = '\0';
	st = pclose(p);
	ck_assert_msg(WIFEXITED(st), "granary-probe did not exit: %d", st);
	return WEXITSTATUS(st);
}

START_TEST(test_worker_readyz_fails_when_the_cache_directory_is_gone)
{
	char tmp[160], out[4096], *body;

	free(readyz_wait(200, "ok", 1000));
	ck_assert_int_eq(probe_readyz(out, sizeof(out)), 0);
	ck_assert_str_eq(out, "ok\n");
	/* Writers make their files in DIR/tmp: without it nothing can be cached. */
	snprintf(tmp, sizeof(tmp), "%s/tmp", w.cache);
	ck_assert_int_eq(rmdir(tmp), 0);
	body = readyz_wait(503, "is not writable", 1000);
	ck_assert_msg(strstr(body, w.cache), "%s", body);
	/* The exec probe fails and says why: the kubelet's event shows it. */
	ck_assert_int_eq(probe_readyz(out, sizeof(out)), 1);
	ck_assert_msg(strstr(out, ": 503: cache directory ") && strstr(out, "is not writable"),
		      "probe said '%s'", out);
	free(body);
}
END_TEST

/*
 * A request with both Content-Length and Transfer-Encoding has two
 * lengths: a proxy in front that believes the other one would see the
 * bytes after it as a request of its own (request smuggling). The worker
 * answers 400 naming the conflict and closes the connection, so the
 * request pipelined behind it is never answered.
 */
START_TEST(test_worker_refuses_a_request_with_two_lengths_and_closes)
{
	static const struct {
		const char *head;
		int status;
		const char *expect;
	} cases[] = {
		{ "GET /healthz HTTP/1.1\r\nHost: w\r\nContent-Length: 5\r\n"
		  "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		  400, "both Content-Length and Transfer-Encoding" },
		{ "POST /v1/preload/ds HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\n"
		  "Content-Length: 4\r\n\r\n0\r\n\r\n",
		  400, "both Content-Length and Transfer-Encoding" },
		{ "PUT /v1/datasets/x HTTP/1.1\r\nHost: w\r\nContent-Length: 0\r\n"
		  "transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
		  400, "both Content-Length and Transfer-Encoding" },
		{ "PUT /v1/datasets/x HTTP/1.1\r\nHost: w\r\nContent-Length: 2\r\n"
		  "Content-Length: 0\r\n\r\n{}",
		  400, "2 Content-Length headers" },
		{ "POST /v1/preload/ds HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: xchunked\r\n\r\n"
		  "0\r\n\r\n",
		  501, "transfer coding 'xchunked'" },
	};
	static const char next[] = "GET /metrics HTTP/1.1\r\nHost: w\r\n\r\n";

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[8192], want[32], msg[256];
		int fd = raw_connect(NULL);
		bool closed;

		snprintf(msg, sizeof(msg), "%s%s", cases[i].head, next);
		ck_assert_int_eq(send(fd, msg, strlen(msg), MSG_NOSIGNAL), (ssize_t)strlen(msg));
		raw_read(fd, out, sizeof(out), 5000, &closed);
		close(fd);
		snprintf(want, sizeof(want), "HTTP/1.1 %d ", cases[i].status);
		ck_assert_msg(strncmp(out, want, strlen(want)) == 0, "case %zu: answered:\n%.600s", i, out);
		ck_assert_msg(strstr(out, cases[i].expect), "case %zu: '%.600s' lacks '%s'", i, out,
			      cases[i].expect);
		ck_assert_msg(strstr(out + 1, "HTTP/1.1 ") == NULL,
			      "case %zu: the pipelined request was answered too:\n%.600s", i, out);
		ck_assert_msg(closed, "case %zu: the connection stayed open after:\n%.600s", i, out);
	}
}
END_TEST

struct trickler {
	int *fds;
	int n;
	atomic_bool stop;
};

/* A byte a quarter second on every connection: never a whole request,
 * never idle long enough for an inactivity timeout. */
static void *trickle(void *arg)
{
	struct trickler *t = arg;

	while (!atomic_load(&t->stop)) {
		for (int i = 0; i < t->n; i++)
			(void)send(t->fds[i], "X", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		retry_sleep_ms(250);
	}
	return NULL;
}

/*
 * More slow clients from one address than the worker's connection limit,
 * each trickling a request that never ends: a client from another address
 * still gets its block at once, those beyond the per-address limit are
 * refused (and logged with a count), and the ones let in are closed when
 * their request has not arrived within http.request_timeout.
 */
START_TEST(test_worker_slow_clients_from_one_address_leave_room_for_others)
{
	enum { SLOW = 48 };
	static const char *const extra[] = { "--http.max_connections", "32",
					     "--http.max_connections_per_address", "8",
					     "--http.request_timeout", "2s", NULL };
	int fds[SLOW];
	struct trickler t = { .fds = fds, .n = SLOW };
	pthread_t th;
	uint64_t t0, took;
	struct resp r;
	int closed_n = 0;

	worker_stop(NULL);
	memcpy(w.extra, extra, sizeof(extra));
	worker_start();
	register_dataset("ds", BS, "lru");

	t0 = retry_now_ms();
	for (int i = 0; i < SLOW; i++) {
		fds[i] = raw_connect("127.0.0.2");
		(void)send(fds[i], "GET /v1/blocks/ds/0?key=", 24, MSG_NOSIGNAL);
	}
	ck_assert_int_eq(pthread_create(&th, NULL, trickle, &t), 0);
	retry_sleep_ms(500);

	client_timeout_s = 5;
	r = get_block("ds", 0, 0, NULL);
	took = retry_now_ms() - t0;
	expect_block(&r, 0, 0, BS);
	resp_free(&r);
	fprintf(stderr, "%d slow clients from one address: a block for another in %llu ms\n", SLOW,
		(unsigned long long)took);

	/* 2 s after they connected, every slow connection is closed: refused
	 * at once, or cut at http.request_timeout. */
	retry_sleep_ms(t0 + 4000 > retry_now_ms() ? t0 + 4000 - retry_now_ms() : 0);
	atomic_store(&t.stop, true);
	pthread_join(th, NULL);
	for (int i = 0; i < SLOW; i++) {
		char buf[256];
		bool closed;

		raw_read(fds[i], buf, sizeof(buf), 1000, &closed);
		closed_n += closed;
		close(fds[i]);
	}
	ck_assert_int_eq(closed_n, SLOW);
	ck_assert_msg(harness_file_contains(w.log_path, "too many connections from one address") &&
			      harness_file_contains(w.log_path, "address=127.0.0.2"),
		      "no refusal in the log");
	ck_assert_msg(harness_file_contains(w.log_path, "request did not arrive within"),
		      "no timeout in the log");
	/* One line each, with a count, not one per connection. */
	ck_assert_int_eq(harness_file_count(w.log_path, "too many connections from one address"), 1);
	ck_assert_int_eq(harness_file_count(w.log_path, "request did not arrive within"), 1);
	ck_assert_int_le(harness_file_count(w.log_path, "msg=\"http server\""), 2);

	/* The worker serves as before. */
	r = get_block("ds", 0, 1, NULL);
	expect_block(&r, 0, 1, BS);
	resp_free(&r);
}
END_TEST

/* method path on 127.0.0.1:port without a token: status and body. */
static struct resp plain_request(int port, const char *method, const char *path)
{
	struct resp r = { 0 };
	CURL *c = curl_easy_init();
	char url[256];
	CURLcode rc;

	ck_assert_ptr_nonnull(c);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 5L);
	rc = curl_easy_perform(c);
	ck_assert_msg(rc == CURLE_OK, "%s %s: %s", method, url, curl_easy_strerror(rc));
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
	curl_easy_cleanup(c);
	return r;
}

/*
 * The kubelet's probes on probe_listen. Every connection the block port
 * lets one address hold is taken from 127.0.0.1 (as a node plugin's mounts
 * on the node's address, the kubelet's too, would): the block port refuses
 * that address, and the probe listener still answers /healthz and /readyz,
 * through granary-probe (the chart's exec probe) too. It serves nothing
 * else.
 */
START_TEST(test_worker_probes_are_answered_with_the_block_port_full)
{
	enum { HELD = 4 };
	static char probe_listen[64];
	static const char *const extra[] = { "--http.max_connections_per_address", "4",
					     "--probe_listen", probe_listen, NULL };
	char bindir[4096], cmd[4400], out[512], buf[256];
	int fds[HELD], over, probe_port, st;
	struct resp r;
	bool closed;
	size_t n;
	FILE *p;

	worker_stop(NULL);
	probe_port = harness_free_port();
	snprintf(probe_listen, sizeof(probe_listen), "127.0.0.1:%d", probe_port);
	memcpy(w.extra, extra, sizeof(extra));
	worker_start();

	for (int i = 0; i < HELD; i++)
		fds[i] = raw_connect(NULL);
	over = raw_connect(NULL);
	(void)send(over, "GET /healthz HTTP/1.1\r\nHost: w\r\n\r\n", 35, MSG_NOSIGNAL);
	ck_assert_uint_eq(raw_read(over, buf, sizeof(buf), 2000, &closed), 0);
	ck_assert_msg(closed, "the block port answered a fifth connection from one address");
	close(over);

	r = plain_request(probe_port, "GET", "/healthz");
	ck_assert_int_eq(r.status, 200);
	ck_assert_uint_eq(r.len, 3);
	ck_assert_int_eq(memcmp(r.body, "ok\n", 3), 0);
	resp_free(&r);
	r = plain_request(probe_port, "GET", "/readyz");
	ck_assert_int_eq(r.status, 200);
	resp_free(&r);
	harness_bin_dir(bindir, sizeof(bindir));
	snprintf(cmd, sizeof(cmd), "'%s/granary-probe' http://127.0.0.1:%d/readyz 2>&1", bindir,
		 probe_port);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = '\0';
	st = pclose(p);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "granary-probe: %d: %s", st, out);

	r = plain_request(probe_port, "GET", "/metrics");
	ck_assert_int_eq(r.status, 404);
	ck_assert_msg(r.body && strstr((char *)r.body, "it serves /healthz and /readyz"),
		      "%.*s", (int)r.len, r.body);
	resp_free(&r);
	r = plain_request(probe_port, "POST", "/healthz");
	ck_assert_int_eq(r.status, 405);
	ck_assert_str_eq(r.allow, "GET, HEAD");
	resp_free(&r);
	for (int i = 0; i < HELD; i++)
		close(fds[i]);
}
END_TEST

/* PUT /v1/datasets/NAME of a file:// source: the HTTP status and body. */
static struct resp put_file_dataset(const char *name, const char *uri)
{
	char path[128], body[600];

	snprintf(path, sizeof(path), "/v1/datasets/%s", name);
	snprintf(body, sizeof(body), "{\"source\":\"%s\"}", uri);
	return request("PUT", path, NULL, body, NULL, AUTH_OK);
}

/*
 * Any holder of the cluster token may put a dataset, and a file:// source
 * is a directory of the worker's host that the block API then serves: off
 * unless allowed_file_roots lists roots, then only strictly inside one,
 * resolved. A 404 for a changed object names the ETag asked for, never
 * the object's own.
 */
START_TEST(test_worker_file_datasets_only_under_allowed_file_roots)
{
	char roots[128], dir[160], uri[200], query[300];
	struct store_object info;
	struct store *st = NULL;
	struct error err;
	struct resp r;

	r = put_file_dataset("host", "file:///etc/");
	ck_assert_msg(r.status == 400, "HTTP %ld: %s", r.status, r.body ? (char *)r.body : "");
	ck_assert_str_eq((char *)r.body, "dataset 'host': field 'source': file:// sources are off "
					 "(allowed_file_roots is empty), got 'file:///etc/'\n");
	resp_free(&r);
	r = request("GET", "/v1/datasets/host", NULL, NULL, NULL, AUTH_OK);
	ck_assert_int_eq(r.status, 404);
	resp_free(&r);
	ck_assert_int_eq(worker_stop(NULL), 0);

	snprintf(roots, sizeof(roots), "%s/roots", w.dir);
	snprintf(dir, sizeof(dir), "%s/ds", roots);
	harness_file_roots(roots, "x.bin");
	w.extra[0] = "--allowed_file_roots";
	w.extra[1] = roots;
	w.extra[2] = NULL;
	worker_start();

	r = put_file_dataset("host", "file:///etc/");
	ck_assert_int_eq(r.status, 400);
	ck_assert_ptr_nonnull(strstr((char *)r.body, "'file:///etc/' is outside allowed_file_roots"));
	resp_free(&r);
	snprintf(uri, sizeof(uri), "file://%s/etc/", roots);
	r = put_file_dataset("link", uri);
	ck_assert_int_eq(r.status, 400);
	ck_assert_ptr_nonnull(strstr((char *)r.body, "resolves to '/etc', outside allowed_file_roots"));
	resp_free(&r);
	snprintf(uri, sizeof(uri), "file://%s/", dir);
	r = put_file_dataset("files", uri);
	ck_assert_msg(r.status == 201, "HTTP %ld: %s", r.status, r.body ? (char *)r.body : "");
	resp_free(&r);

	snprintf(uri, sizeof(uri), "file://%s", dir);
	ck_assert_msg(store_open(uri, &(struct store_config){ 0 }, &st, &err) == ERR_OK, "%s",
		      err.msg);
	ck_assert_msg(store_head(st, "x.bin", &info, &err) == ERR_OK, "%s", err.msg);
	snprintf(query, sizeof(query), "key=x.bin&etag=%s", info.etag);
	r = request("GET", "/v1/blocks/files/0", query, NULL, NULL, AUTH_OK);
	ck_assert_int_eq(r.status, 200);
	ck_assert_uint_eq(r.len, 10);
	resp_free(&r);
	r = request("GET", "/v1/blocks/files/0", "key=x.bin&etag=stale", NULL, NULL, AUTH_OK);
	ck_assert_int_eq(r.status, 404);
	ck_assert_msg(strstr((char *)r.body, "'stale'") && !strstr((char *)r.body, info.etag),
		      "%s (the object's ETag is '%s')", r.body, info.etag);
	resp_free(&r);
	store_object_release(&info);
	store_free(st);
	w.extra[0] = NULL;
}
END_TEST

static struct resp put_endpoint_dataset(const char *name, const char *source, const char *ep,
					const char *creds);

/* The store refusing the worker's credentials is 502 with the store's
 * reason: 401 and 403 stay the client's token's, and no secret is in the
 * answer. */
START_TEST(test_worker_store_refusals_are_502_not_the_token_statuses)
{
	char creds[600], source[300], query[1024];
	FILE *f;
	struct resp r;

	snprintf(creds, sizeof(creds), "%s/bad-credentials", w.dir);
	f = fopen(creds, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "[default]\naws_access_key_id = granary-test\n"
		   "aws_secret_access_key = wrong-secret-value-42\n");
	fclose(f);
	ck_assert_int_eq(chmod(creds, 0600), 0);
	snprintf(source, sizeof(source), "s3://%s/%s", bucket, prefix);
	r = put_endpoint_dataset("denied", source, endpoint, creds);
	ck_assert_msg(r.status == 201, "PUT: HTTP %ld: %s", r.status, r.body ? (char *)r.body : "");
	resp_free(&r);
	block_query(0, query, sizeof(query), 0);
	r = request("GET", "/v1/blocks/denied/0", query, NULL, NULL, AUTH_OK);
	ck_assert_msg(r.status == 502, "HTTP %ld: %s", r.status, r.body ? (char *)r.body : "");
	ck_assert_msg(r.body && strstr((char *)r.body, bucket) &&
			      !strstr((char *)r.body, "wrong-secret-value-42"),
		      "%s", r.body ? (char *)r.body : "");
	resp_free(&r);
}
END_TEST

static struct resp put_endpoint_dataset(const char *name, const char *source, const char *ep,
					const char *creds)
{
	char path[128], body[1024];

	snprintf(path, sizeof(path), "/v1/datasets/%s", name);
	if (creds)
		snprintf(body, sizeof(body),
			 "{\"source\":\"%s\",\"endpoint\":\"%s\",\"credentials_file\":\"%s\"}",
			 source, ep, creds);
	else
		snprintf(body, sizeof(body), "{\"source\":\"%s\",\"endpoint\":\"%s\"}", source,
			 ep);
	return request("PUT", path, NULL, body, NULL, AUTH_OK);
}

/* The state of preload job id once it is no longer running (or after
 * timeout_ms), malloc'd. */
static char *preload_wait(long long id, uint64_t timeout_ms)
{
	uint64_t deadline = retry_now_ms() + timeout_ms;
	char path[64], *status;
	struct resp r;

	snprintf(path, sizeof(path), "/v1/preload/%lld", id);
	for (;;) {
		r = request("GET", path, NULL, NULL, NULL, AUTH_OK);
		ck_assert_int_eq(r.status, 200);
		if (!strstr((char *)r.body, "\"state\":\"running\"") || retry_now_ms() > deadline)
			break;
		resp_free(&r);
		retry_sleep_ms(50);
	}
	status = strdup((char *)r.body);
	resp_free(&r);
	return status;
}

/*
 * Any holder of the cluster token may put a dataset, naming its endpoint:
 * the worker fetched its blocks and listed it for a preload there with the
 * cluster's store credentials (and with any credentials file it can read,
 * named in the body). An endpoint that is neither store.endpoint nor in
 * store.allowed_endpoints is refused before anything is sent to it; one the
 * administrator allows is read with the cluster's credentials.
 */
START_TEST(test_worker_sends_nothing_to_endpoints_not_allowed)
{
	struct harness_recorder *rec = harness_recorder_start();
	const char *ep = harness_recorder_url(rec);
	char want[256], *status;
	struct resp r;

	snprintf(want, sizeof(want),
		 "dataset 'evil': field 'endpoint': endpoint '%s' is not allowed: the endpoints a "
		 "dataset may name are store.endpoint and store.allowed_endpoints\n",
		 ep);
	for (int with_creds = 0; with_creds < 2; with_creds++) {
		r = put_endpoint_dataset("evil", "s3://granary-e2e/x/", ep,
					 with_creds ? credentials : NULL);
		if (r.status != 400) {
			/* Taken: a block read and a preload reach the endpoint. */
			resp_free(&r);
			r = request("GET", "/v1/blocks/evil/0", "key=a.bin&etag=e", NULL, NULL,
				    AUTH_OK);
			resp_free(&r);
			r = request("POST", "/v1/preload/evil", NULL, "{}", NULL, AUTH_OK);
			if (r.status == 202)
				free(preload_wait(json_num((char *)r.body, "id"), 10000));
			resp_free(&r);
			ck_abort_msg("endpoint %s taken (credentials_file %s): %u requests reached "
				     "it, %u signed",
				     ep, with_creds ? "named" : "not named",
				     harness_recorder_requests(rec), harness_recorder_signed(rec));
		}
		ck_assert_str_eq((char *)r.body, want);
		resp_free(&r);
	}
	r = request("GET", "/v1/datasets/evil", NULL, NULL, NULL, AUTH_OK);
	ck_assert_int_eq(r.status, 404);
	resp_free(&r);
	ck_assert_uint_eq(harness_recorder_requests(rec), 0);

	/* Allowed by the administrator: read with the cluster's credentials. */
	ck_assert_int_eq(worker_stop(NULL), 0);
	w.extra[0] = "--store.allowed_endpoints";
	w.extra[1] = ep;
	w.extra[2] = NULL;
	worker_start();
	r = put_endpoint_dataset("ok", "s3://granary-e2e/x/", ep, NULL);
	ck_assert_msg(r.status == 201, "HTTP %ld: %s", r.status, (char *)r.body);
	resp_free(&r);
	r = request("POST", "/v1/preload/ok", NULL, "{}", NULL, AUTH_OK);
	ck_assert_int_eq(r.status, 202);
	status = preload_wait(json_num((char *)r.body, "id"), 10000);
	resp_free(&r);
	ck_assert_msg(strstr(status, "\"state\":\"done\""), "%s", status);
	free(status);
	ck_assert_uint_eq(harness_recorder_signed(rec), 1);
	w.extra[0] = NULL;
	harness_recorder_stop(rec);
}
END_TEST

/*
 * A preload job lists the dataset's prefix: an endpoint that never ends a
 * listing kept the job listing until the worker stopped. Its listing is
 * bounded like meta's (listing.max_pages, listing.max_objects,
 * listing.max_time), and the job fails naming the limit.
 */
/* The worker started again with the recorder's endpoint allowed and one
 * setting more (flag, value), and dataset "endless" at the recorder's
 * listing that never ends. */
static void endless_dataset(const char *ep, const char *flag, const char *value)
{
	struct resp r;

	ck_assert_int_eq(worker_stop(NULL), 0);
	w.extra[0] = "--store.allowed_endpoints";
	w.extra[1] = ep;
	w.extra[2] = flag;
	w.extra[3] = value;
	w.extra[4] = NULL;
	worker_start();
	r = put_endpoint_dataset("endless", "s3://granary-e2e/pages/", ep, NULL);
	ck_assert_msg(r.status == 201, "HTTP %ld: %s", r.status, (char *)r.body);
	resp_free(&r);
}

START_TEST(test_worker_preload_listing_is_bounded)
{
	struct harness_recorder *rec = harness_recorder_start();
	char *status;
	struct resp r;

	endless_dataset(harness_recorder_url(rec), "--listing.max_pages", "5");
	r = request("POST", "/v1/preload/endless", NULL, "{}", NULL, AUTH_OK);
	ck_assert_int_eq(r.status, 202);
	status = preload_wait(json_num((char *)r.body, "id"), 10000);
	resp_free(&r);
	/* Another run would list as many pages: lasting. */
	ck_assert_msg(strstr(status, "\"state\":\"failed\"") &&
			      strstr(status, "more than 5 pages") &&
			      strstr(status, "listing.max_pages") &&
			      strstr(status, "\"code\":\"no space\"") &&
			      strstr(status, "\"lasting\":true"),
		      "%s", status);
	free(status);
	ck_assert_uint_eq(harness_recorder_requests(rec), 6);
	w.extra[0] = NULL;
	harness_recorder_stop(rec);
}
END_TEST

/*
 * A token holder may ask for any number of preloads, each a thread, its
 * fetch threads and its listing: at most PRELOAD_RUNNING_MAX run at once,
 * the next is 503 until one has ended. Jobs listing an endpoint whose
 * listing never ends stay running until listing.max_time.
 */
START_TEST(test_worker_preload_jobs_running_at_once_are_bounded)
{
	struct harness_recorder *rec = harness_recorder_start();
	long long last = 0;
	char *status;
	struct resp r;

	endless_dataset(harness_recorder_url(rec), "--listing.max_time", "4s");
	for (int i = 0; i < PRELOAD_RUNNING_MAX; i++) {
		r = request("POST", "/v1/preload/endless", NULL, "{}", NULL, AUTH_OK);
		ck_assert_msg(r.status == 202, "job %d: HTTP %ld: %s", i, r.status, (char *)r.body);
		last = json_num((char *)r.body, "id");
		resp_free(&r);
	}
	ck_assert_uint_eq(metric("granary_worker_preload_jobs_running"), PRELOAD_RUNNING_MAX);
	r = request("POST", "/v1/preload/endless", NULL, "{}", NULL, AUTH_OK);
	ck_assert_msg(r.status == 503 && strstr((char *)r.body, "at most 8 at once"), "HTTP %ld: %s",
		      r.status, (char *)r.body);
	resp_free(&r);
	/* Once they have ended (listing.max_time), one more may start. */
	status = preload_wait(last, 15000);
	ck_assert_msg(strstr(status, "listing.max_time"), "%s", status);
	free(status);
	while (metric("granary_worker_preload_jobs_running") > 0)
		retry_sleep_ms(50);
	r = request("POST", "/v1/preload/endless", NULL, "{}", NULL, AUTH_OK);
	ck_assert_msg(r.status == 202, "HTTP %ld: %s", r.status, (char *)r.body);
	resp_free(&r);
	w.extra[0] = NULL;
	harness_recorder_stop(rec);
}
END_TEST

/*
 * A standalone granary-fuse given the worker's cache.dir (the default is
 * the same path) would empty the worker's tmp/ at start and count the same
 * disk twice: it must exit at once, naming the directory, and leave the
 * worker's files alone.
 */
START_TEST(test_worker_cache_dir_refuses_a_standalone_mount)
{
	char exe[600], src[320], source[340], mnt[320], logp[320], inflight[400];
	const char *argv[] = { exe, "--mountpoint", mnt, "--source", source, "--cache.dir",
			       w.cache, NULL };
	struct stat st;
	pid_t pid;
	int rc;

	snprintf(exe, sizeof(exe), "%s", bin);
	ck_assert_ptr_nonnull(strrchr(exe, '/'));
	snprintf(strrchr(exe, '/') + 1, sizeof(exe) - (size_t)(strrchr(exe, '/') + 1 - exe),
		 "granary-fuse");
	snprintf(src, sizeof(src), "%s/src", w.dir);
	snprintf(mnt, sizeof(mnt), "%s/mnt", w.dir);
	snprintf(logp, sizeof(logp), "%s/fuse.log", w.dir);
	snprintf(source, sizeof(source), "file://%s", src);
	ck_assert_int_eq(mkdir(src, 0755), 0);
	ck_assert_int_eq(mkdir(mnt, 0755), 0);
	snprintf(inflight, sizeof(inflight), "%s/tmp/0123.1.2", w.cache);
	harness_write_file(inflight, "a block being written", 0644);

	pid = harness_spawn(argv, logp);
	rc = harness_wait_mount(&pid, mnt, 10000, 50);
	if (rc == 0) {
		harness_stop(&pid, 10000, NULL);
		ck_abort_msg("granary-fuse mounted on the worker's cache directory");
	}
	ck_assert_msg(rc > 0, "granary-fuse did not exit");
	ck_assert_msg(harness_file_contains(logp, "another process owns this cache directory"),
		      "the log does not say the directory is owned");
	ck_assert_msg(harness_file_contains(logp, w.cache), "the log does not name '%s'", w.cache);
	ck_assert_msg(stat(inflight, &st) == 0, "the worker's '%s' was removed", inflight);
	ck_assert_uint_eq((uint64_t)st.st_size, strlen("a block being written"));
}
END_TEST

/* --- a cache directory on a full disk ------------------------------------ */

#define FULL_DISK_SIZE (1024u << 10)

static char filler_path[600];

/*
 * The cache directory is a tmpfs of 1 MiB (smaller than the dataset's 9
 * blocks of 68 KiB on disk), mounted by the test, with a filler file that
 * leaves about two blocks free; the worker's capacity is 256 MiB, far more
 * than the disk holds. Needs root (mount).
 */
static void setup_full_disk(void)
{
	struct statvfs sv;
	uint64_t fill;
	char opts[64];
	int fd;

	harness_tmpdir(w.dir, sizeof(w.dir), "/tmp/test_worker_XXXXXX");
	snprintf(w.cache, sizeof(w.cache), "%s/cache", w.dir);
	ck_assert_int_eq(mkdir(w.cache, 0755), 0);
	snprintf(opts, sizeof(opts), "size=%u", FULL_DISK_SIZE);
	ck_assert_msg(mount("tmpfs", w.cache, "tmpfs", 0, opts) == 0, "mount tmpfs at %s: %s",
		      w.cache, strerror(errno));
	ck_assert_int_eq(statvfs(w.cache, &sv), 0);
	fill = (uint64_t)sv.f_bavail * sv.f_frsize - 150 * 1024;
	snprintf(filler_path, sizeof(filler_path), "%s/filler", w.cache);
	fd = open(filler_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(posix_fallocate(fd, 0, (off_t)fill), 0);
	close(fd);
	snprintf(w.token_path, sizeof(w.token_path), "%s/token", w.dir);
	snprintf(w.log_path, sizeof(w.log_path), "%s/worker.log", w.dir);
	snprintf(w.capacity, sizeof(w.capacity), "256MiB");
	harness_write_file(w.token_path, SECRET "\n", 0600);
	worker_start();
}

/*
 * Every block of the dataset is asked for once, on a disk that fills up
 * after two: every answer is 200 with the right bytes (what does not fit
 * is served from memory), the store is asked once per block (not once by
 * the worker and again by a mount that got an error), the capacity drops
 * to what the disk holds and blocks are evicted to make room, and the
 * warning is written once, not per block.
 */
START_TEST(test_worker_full_cache_disk_evicts_and_serves_every_block_once)
{
	uint64_t blocks = 0, req0, req, evictions, capacity, full;

	register_dataset("ds", BS, "lru");
	req0 = metric("granary_worker_store_requests_total");
	for (size_t i = 0; i < NOBJ; i++) {
		if (i == OBJ_BIG)
			continue;
		for (uint64_t b = 0; b < blocks_of(i, BS); b++) {
			struct resp r = get_block("ds", i, b, NULL);

			expect_block(&r, i, b, BS);
			resp_free(&r);
			blocks++;
		}
	}
	req = metric("granary_worker_store_requests_total") - req0;
	evictions = metric("granary_worker_evictions_total");
	capacity = metric("granary_worker_capacity_bytes");
	full = metric("granary_worker_disk_full_total");
	printf("full cache disk (%u KiB tmpfs, about 150 KiB free, capacity 256 MiB): %llu blocks "
	       "read, %llu S3 GETs, %llu evictions, capacity now %llu bytes, %d warnings\n",
	       FULL_DISK_SIZE >> 10, (unsigned long long)blocks, (unsigned long long)req,
	       (unsigned long long)evictions, (unsigned long long)capacity,
	       harness_file_count(w.log_path, "level=warn"));
	fflush(stdout);
	ck_assert_msg(req == blocks, "%llu store requests for %llu blocks",
		      (unsigned long long)req, (unsigned long long)blocks);
	ck_assert_uint_ge(full, 1);
	ck_assert_uint_lt(capacity, FULL_DISK_SIZE);
	ck_assert_uint_gt(evictions, 0);
	ck_assert_int_eq(harness_file_count(w.log_path, "cache disk full"), 1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("worker");
	TCase *tc = tcase_create("worker");
	TCase *small = tcase_create("small cache");
	TCase *member = tcase_create("member of a cluster");
	TCase *full = tcase_create("full cache disk");
	TCase *endpoints = tcase_create("endpoints");
	int rc;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	tcase_add_unchecked_fixture(tc, put_objects, free_tokens);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_worker_serves_exact_blocks_and_ranges);
	tcase_add_test(tc, test_worker_concurrent_readers_of_a_cold_block_cause_one_get);
	tcase_add_test(tc, test_worker_restart_keeps_the_cache);
	tcase_add_test(tc, test_worker_sigterm_exits_zero_promptly);
	tcase_add_test(tc, test_worker_corrupt_block_is_detected_and_fetched_again);
	tcase_add_test(tc, test_worker_requests_without_the_token_get_no_data);
	tcase_add_test(tc, test_worker_store_refusals_are_502_not_the_token_statuses);
	tcase_add_test(tc, test_worker_bad_requests_say_what_is_wrong);
	tcase_add_test(tc, test_worker_dataset_api_registers_lists_and_removes);
	tcase_add_test(tc, test_worker_dataset_writes_off_refuse_put_and_delete);
	tcase_add_test(tc, test_worker_preload_reports_progress_then_reads_hit);
	tcase_add_test(tc, test_worker_readahead_warms_the_next_blocks);
	tcase_add_test(tc, test_worker_prefetch_caches_the_first_block_of_each_object);
	tcase_add_test(tc, test_worker_warm_block_throughput_is_reported);
	tcase_add_test(tc, test_worker_readyz_fails_when_the_cache_directory_is_gone);
	tcase_add_test(tc, test_worker_refuses_a_request_with_two_lengths_and_closes);
	tcase_add_test(tc, test_worker_slow_clients_from_one_address_leave_room_for_others);
	tcase_add_test(tc, test_worker_probes_are_answered_with_the_block_port_full);
	tcase_add_test(tc, test_worker_file_datasets_only_under_allowed_file_roots);
	tcase_add_test(tc, test_worker_cache_dir_refuses_a_standalone_mount);
	suite_add_tcase(s, tc);

	tcase_add_unchecked_fixture(member, put_objects, free_tokens);
	tcase_add_checked_fixture(member, setup_meta, teardown_meta);
	tcase_set_timeout(member, 120);
	tcase_add_test(member, test_worker_readyz_follows_granary_meta);
	tcase_add_test(member, test_worker_requests_for_unknown_datasets_send_no_heartbeats);
	suite_add_tcase(s, member);

	tcase_add_unchecked_fixture(small, put_objects, free_tokens);
	tcase_add_checked_fixture(small, setup_small, teardown);
	tcase_set_timeout(small, 120);
	tcase_add_test(small, test_worker_capacity_is_never_exceeded);
	suite_add_tcase(s, small);

	tcase_add_unchecked_fixture(full, put_objects, free_tokens);
	tcase_add_checked_fixture(full, setup_full_disk, teardown);
	tcase_set_timeout(full, 120);
	tcase_add_test(full, test_worker_full_cache_disk_evicts_and_serves_every_block_once);
	suite_add_tcase(s, full);

	/* Where the worker may send requests (CK_RUN_CASE=endpoints runs these alone). */
	tcase_add_unchecked_fixture(endpoints, put_objects, free_tokens);
	tcase_add_checked_fixture(endpoints, setup, teardown);
	tcase_set_timeout(endpoints, 120);
	tcase_add_test(endpoints, test_worker_sends_nothing_to_endpoints_not_allowed);
	tcase_add_test(endpoints, test_worker_preload_listing_is_bounded);
	tcase_add_test(endpoints, test_worker_preload_jobs_running_at_once_are_bounded);
	suite_add_tcase(s, endpoints);

	rc = check_main_run(s);
	curl_global_cleanup();
	return rc;
}
