/*
 * harness.c - shared helpers of the e2e tests; see harness.h.
 */
#include "e2e/harness.h"

#include <arpa/inet.h>
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/retry.h"

static void sleep_ms(uint64_t ms)
{
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int decode_status(int status)
{
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void harness_fixture_env(const char *dir_var, const char *fixture, const char *key, char *out,
			 size_t size)
{
	const char *dir = getenv(dir_var);
	char path[600], line[1024];
	size_t klen = strlen(key);
	FILE *f;

	ck_assert_msg(dir != NULL, "%s is not set (run through ctest)", dir_var);
	snprintf(path, sizeof(path), "%s/env", dir);
	f = fopen(path, "r");
	ck_assert_msg(f != NULL, "cannot read %s: is the %s fixture running?", path, fixture);
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, key, klen) == 0 && line[klen] == '=')
			snprintf(out, size, "%s", line + klen + 1);
	}
	fclose(f);
}

void harness_s3_env(char *endpoint, size_t endpoint_size, char *credentials,
		    size_t credentials_size)
{
	harness_fixture_env("GRANARY_S3_DIR", "S3 server", "GRANARY_S3_ENDPOINT", endpoint,
			    endpoint_size);
	harness_fixture_env("GRANARY_S3_DIR", "S3 server", "GRANARY_S3_CREDENTIALS", credentials,
			    credentials_size);
}

void harness_bin_dir(char *out, size_t size)
{
	const char *bin = getenv("GRANARY_BIN_DIR");

	ck_assert_msg(bin != NULL, "GRANARY_BIN_DIR is not set (run through ctest)");
	snprintf(out, size, "%s", bin);
}

pid_t harness_spawn(const char *const *argv, const char *log)
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		/* Never outlive the test, whatever way it ends. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			if (fd > 2)
				close(fd);
		}
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

int harness_stop(pid_t *pid, uint64_t timeout_ms, uint64_t *ms)
{
	uint64_t t0 = retry_now_ms();
	int status = 0;

	if (*pid <= 0)
		return 0;
	kill(*pid, SIGTERM);
	while (waitpid(*pid, &status, WNOHANG) != *pid) {
		if (retry_now_ms() - t0 > timeout_ms) {
			kill(*pid, SIGKILL);
			waitpid(*pid, &status, 0);
			*pid = 0;
			return -1;
		}
		sleep_ms(5);
	}
	*pid = 0;
	if (ms)
		*ms = retry_now_ms() - t0;
	return decode_status(status);
}

int harness_is_mounted(const char *dir)
{
	char line[4096];
	FILE *f = fopen("/proc/self/mounts", "r");
	int found = 0;

	while (f && fgets(line, sizeof(line), f)) {
		char dev[512], mnt[1024], type[64];

		if (sscanf(line, "%511s %1023s %63s", dev, mnt, type) == 3 &&
		    strcmp(mnt, dir) == 0 && strncmp(type, "fuse", 4) == 0)
			found = 1;
	}
	if (f)
		fclose(f);
	return found;
}

int harness_wait_mount(pid_t *pid, const char *dir, uint64_t timeout_ms, uint64_t poll_ms)
{
	for (uint64_t waited = 0; waited < timeout_ms; waited += poll_ms) {
		int status;

		if (harness_is_mounted(dir))
			return 0;
		if (*pid > 0 && waitpid(*pid, &status, WNOHANG) == *pid) {
			*pid = 0;
			return decode_status(status);
		}
		sleep_ms(poll_ms);
	}
	return -1;
}

int harness_free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

void harness_tmpdir(char *buf, size_t size, const char *template)
{
	snprintf(buf, size, "%s", template);
	ck_assert_msg(mkdtemp(buf) != NULL, "mkdtemp '%s': %s", template, strerror(errno));
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

int harness_rm_rf(const char *path)
{
	return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

void harness_write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

	ck_assert_msg(fd >= 0, "open '%s': %s", path, strerror(errno));
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

void harness_meta_keys(const char *dir, struct harness_meta_keys *k)
{
	snprintf(k->csi, sizeof(k->csi), "%s/csi.key", dir);
	snprintf(k->worker, sizeof(k->worker), "%s/worker.key", dir);
	snprintf(k->mount, sizeof(k->mount), "%s/mount.key", dir);
	harness_write_file(k->csi, "e2e-csi-role-key-0123456789\n", 0600);
	harness_write_file(k->worker, "e2e-worker-role-key-0123456789\n", 0600);
	harness_write_file(k->mount, "e2e-mount-role-key-0123456789\n", 0600);
	k->args[0] = "--auth.csi_key_file";
	k->args[1] = k->csi;
	k->args[2] = "--auth.worker_key_file";
	k->args[3] = k->worker;
	k->args[4] = "--auth.mount_key_file";
	k->args[5] = k->mount;
}

void harness_file_roots(const char *roots, const char *file)
{
	char path[4200];

	ck_assert_msg(mkdir(roots, 0755) == 0, "mkdir '%s': %s", roots, strerror(errno));
	snprintf(path, sizeof(path), "%s/ds", roots);
	ck_assert_msg(mkdir(path, 0755) == 0, "mkdir '%s': %s", path, strerror(errno));
	snprintf(path, sizeof(path), "%s/ds/%s", roots, file);
	harness_write_file(path, "0123456789", 0644);
	snprintf(path, sizeof(path), "%s/etc", roots);
	ck_assert_msg(symlink("/etc", path) == 0, "symlink '%s': %s", path, strerror(errno));
}

int harness_file_count(const char *path, const char *needle)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	int n = 0;

	while (f && fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	if (f)
		fclose(f);
	return n;
}

int harness_file_contains(const char *path, const char *needle)
{
	return harness_file_count(path, needle) > 0;
}

void harness_dump_log(const char *path)
{
	char cmd[1200];

	snprintf(cmd, sizeof(cmd), "echo '--- %s ---' >&2; tail -n 40 '%s' >&2", path, path);
	if (system(cmd) != 0)
		fprintf(stderr, "(no log at %s)\n", path);
}

void harness_fill(unsigned char *buf, size_t n, uint64_t x)
{
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (unsigned char)x;
	}
}

/* --- a TCP proxy that can stall ----------------------------------------- */

#define PROXY_CONNS 128

struct harness_proxy {
	int listen_fd, port, target_port;
	int wake[2];                   /* a byte wakes the thread's poll */
	pthread_t thread;
	pthread_mutex_t mu;
	int stalled, stopping;         /* protected by mu */
	unsigned accepted;             /* protected by mu */
	int client[PROXY_CONNS], server[PROXY_CONNS]; /* -1: none; thread only */
};

int harness_url_port(const char *url)
{
	const char *colon = strrchr(url, ':');

	if (!colon || !strstr(url, "://") || colon < strstr(url, "://") + 3)
		return -1;
	return atoi(colon + 1);
}

static int proxy_dial(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

static void proxy_close(struct harness_proxy *p, int i)
{
	if (p->client[i] >= 0)
		close(p->client[i]);
	if (p->server[i] >= 0)
		close(p->server[i]);
	p->client[i] = p->server[i] = -1;
}

/* Moves what one side has to the other; -1 when the pair is done. */
static int proxy_pump(int from, int to)
{
	char buf[65536];
	ssize_t n = read(from, buf, sizeof(buf));

	if (n <= 0)
		return -1;
	for (ssize_t off = 0; off < n;) {
		ssize_t w = write(to, buf + off, (size_t)(n - off));

		if (w <= 0)
			return -1;
		off += w;
	}
	return 0;
}

static void *proxy_run(void *arg)
{
	struct harness_proxy *p = arg;

	for (;;) {
		struct pollfd fds[2 + 2 * PROXY_CONNS];
		int idx[2 + 2 * PROXY_CONNS], nfds = 0, stalled;

		pthread_mutex_lock(&p->mu);
		stalled = p->stalled;
		if (p->stopping) {
			pthread_mutex_unlock(&p->mu);
			break;
		}
		pthread_mutex_unlock(&p->mu);
		fds[nfds++] = (struct pollfd){ .fd = p->wake[0], .events = POLLIN };
		fds[nfds++] = (struct pollfd){ .fd = p->listen_fd, .events = POLLIN };
		for (int i = 0; i < PROXY_CONNS && !stalled; i++) {
			if (p->client[i] < 0 || p->server[i] < 0)
				continue;
			idx[nfds] = i;
			fds[nfds++] = (struct pollfd){ .fd = p->client[i], .events = POLLIN };
			idx[nfds] = i;
			fds[nfds++] = (struct pollfd){ .fd = p->server[i], .events = POLLIN };
		}
		if (poll(fds, (nfds_t)nfds, 1000) < 0)
			continue;
		if (fds[0].revents) {
			char c;

			if (read(p->wake[0], &c, 1) < 0)
				continue;
		}
		if (fds[1].revents & POLLIN) {
			int fd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC), slot = -1;

			for (int i = 0; i < PROXY_CONNS && fd >= 0 && slot < 0; i++)
				if (p->client[i] < 0)
					slot = i;
			if (fd >= 0 && slot < 0) {
				close(fd);
			} else if (fd >= 0) {
				pthread_mutex_lock(&p->mu);
				p->accepted++;
				pthread_mutex_unlock(&p->mu);
				p->client[slot] = fd;
				/* stalled: held, never read, never forwarded */
				p->server[slot] = stalled ? -1 : proxy_dial(p->target_port);
				if (!stalled && p->server[slot] < 0)
					proxy_close(p, slot);
			}
		}
		for (int k = 2; k < nfds; k++) {
			int i = idx[k], other;

			if (!fds[k].revents || p->client[i] < 0)
				continue;
			other = fds[k].fd == p->client[i] ? p->server[i] : p->client[i];
			if (proxy_pump(fds[k].fd, other) != 0)
				proxy_close(p, i);
		}
	}
	return NULL;
}

struct harness_proxy *harness_proxy_start(int target_port)
{
	struct harness_proxy *p = calloc(1, sizeof(*p));
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof(a);

	ck_assert_ptr_nonnull(p);
	p->target_port = target_port;
	for (int i = 0; i < PROXY_CONNS; i++)
		p->client[i] = p->server[i] = -1;
	pthread_mutex_init(&p->mu, NULL);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_msg(p->listen_fd >= 0 && bind(p->listen_fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
			      listen(p->listen_fd, 64) == 0 &&
			      getsockname(p->listen_fd, (struct sockaddr *)&a, &alen) == 0,
		      "proxy: cannot listen on loopback: %s", strerror(errno));
	p->port = ntohs(a.sin_port);
	ck_assert_msg(pipe2(p->wake, O_CLOEXEC) == 0, "proxy: pipe: %s", strerror(errno));
	ck_assert_msg(pthread_create(&p->thread, NULL, proxy_run, p) == 0, "proxy: no thread");
	return p;
}

int harness_proxy_port(const struct harness_proxy *p)
{
	return p->port;
}

void harness_proxy_stall(struct harness_proxy *p, int stalled)
{
	pthread_mutex_lock(&p->mu);
	p->stalled = stalled;
	pthread_mutex_unlock(&p->mu);
	if (write(p->wake[1], "x", 1) < 0)
		return;
}

unsigned harness_proxy_accepted(struct harness_proxy *p)
{
	unsigned n;

	pthread_mutex_lock(&p->mu);
	n = p->accepted;
	pthread_mutex_unlock(&p->mu);
	return n;
}

void harness_proxy_stop(struct harness_proxy *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = 1;
	pthread_mutex_unlock(&p->mu);
	if (write(p->wake[1], "x", 1) < 0)
		return; /* the thread ends at its next poll timeout anyway */
	pthread_join(p->thread, NULL);
	for (int i = 0; i < PROXY_CONNS; i++)
		proxy_close(p, i);
	close(p->listen_fd);
	close(p->wake[0]);
	close(p->wake[1]);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

/* ---- the attacker endpoint ---------------------------------------------- */

struct harness_recorder {
	int fd;
	char url[64];
	pthread_t t;
	pthread_mutex_t mu;
	int stop;               /* protected by mu */
	unsigned requests;      /* protected by mu */
	unsigned signed_requests; /* protected by mu */
};

static void recorder_answer(struct harness_recorder *r, int c)
{
	char req[8192], head[256], body[1024];
	size_t have = 0;
	unsigned nth;
	int hl, bl;

	while (have < sizeof(req) - 1) {
		struct pollfd p = { .fd = c, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 2000) <= 0)
			return;
		n = read(c, req + have, sizeof(req) - 1 - have);
		if (n <= 0)
			return;
		have += (size_t)n;
		req[have] = '\0';
		if (strstr(req, "\r\n\r\n"))
			break;
	}
	pthread_mutex_lock(&r->mu);
	nth = ++r->requests;
	if (strcasestr(req, "\r\nauthorization:"))
		r->signed_requests++;
	pthread_mutex_unlock(&r->mu);
#define OBJ(key, size)                                                                     \
	"<Contents><Key>" key "</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified>" \
	"<ETag>&quot;0a&quot;</ETag><Size>" size "</Size></Contents>"
	bl = snprintf(body, sizeof(body),
		      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		      "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
		      "<Name>x</Name>");
	if (strstr(req, "prefix=pages"))
		bl += snprintf(body + bl, sizeof(body) - (size_t)bl,
			       "<IsTruncated>true</IsTruncated>"
			       "<NextContinuationToken>t%u</NextContinuationToken>",
			       nth);
	else if (strstr(req, "prefix=loop"))
		bl += snprintf(body + bl, sizeof(body) - (size_t)bl,
			       "<IsTruncated>true</IsTruncated>"
			       "<NextContinuationToken>again</NextContinuationToken>" OBJ("loop/a",
											 "1"));
	else if (strstr(req, "prefix=huge"))
		bl += snprintf(body + bl, sizeof(body) - (size_t)bl,
			       "<IsTruncated>false</IsTruncated>" OBJ("huge/a",
								      "18446744073709551615"));
	else if (strstr(req, "prefix=clash"))
		bl += snprintf(body + bl, sizeof(body) - (size_t)bl,
			       "<IsTruncated>false</IsTruncated>" OBJ("clash/a", "1")
				       OBJ("clash/a/b", "2"));
	else
		bl += snprintf(body + bl, sizeof(body) - (size_t)bl,
			       "<IsTruncated>false</IsTruncated>");
#undef OBJ
	bl += snprintf(body + bl, sizeof(body) - (size_t)bl, "</ListBucketResult>");
	hl = snprintf(head, sizeof(head),
		      "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n"
		      "Content-Length: %d\r\nConnection: close\r\n\r\n",
		      bl);
	if (write(c, head, (size_t)hl) == hl)
		(void)!write(c, body, (size_t)bl);
}

static void *recorder_loop(void *arg)
{
	struct harness_recorder *r = arg;

	for (;;) {
		struct pollfd p = { .fd = r->fd, .events = POLLIN };
		int stop, c;

		pthread_mutex_lock(&r->mu);
		stop = r->stop;
		pthread_mutex_unlock(&r->mu);
		if (stop)
			return NULL;
		if (poll(&p, 1, 50) <= 0)
			continue;
		c = accept(r->fd, NULL, NULL);
		if (c < 0)
			continue;
		recorder_answer(r, c);
		close(c);
	}
}

struct harness_recorder *harness_recorder_start(void)
{
	struct harness_recorder *r = calloc(1, sizeof(*r));
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof(a);

	ck_assert_ptr_nonnull(r);
	pthread_mutex_init(&r->mu, NULL);
	r->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(r->fd, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(r->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(r->fd, 64), 0);
	ck_assert_int_eq(getsockname(r->fd, (struct sockaddr *)&a, &alen), 0);
	snprintf(r->url, sizeof(r->url), "http://127.0.0.1:%d", ntohs(a.sin_port));
	ck_assert_int_eq(pthread_create(&r->t, NULL, recorder_loop, r), 0);
	return r;
}

const char *harness_recorder_url(const struct harness_recorder *r)
{
	return r->url;
}

unsigned harness_recorder_requests(struct harness_recorder *r)
{
	unsigned n;

	pthread_mutex_lock(&r->mu);
	n = r->requests;
	pthread_mutex_unlock(&r->mu);
	return n;
}

unsigned harness_recorder_signed(struct harness_recorder *r)
{
	unsigned n;

	pthread_mutex_lock(&r->mu);
	n = r->signed_requests;
	pthread_mutex_unlock(&r->mu);
	return n;
}

void harness_recorder_stop(struct harness_recorder *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stop = 1;
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->t, NULL);
	close(r->fd);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

void *harness_direct_reader(void *arg)
{
	struct harness_reader *r = arg;
	void *buf = NULL;
	int fd;

	if (posix_memalign(&buf, 4096, 1u << 20) != 0) {
		r->errors++;
		return NULL;
	}
	fd = open(r->path, O_RDONLY | O_DIRECT);
	if (fd < 0) {
		r->errors++;
		free(buf);
		return NULL;
	}
	while (!atomic_load(r->stop)) {
		off_t off = (off_t)(rand_r(&r->seed) % (r->size / 4096)) * 4096;
		size_t len = 4096u * (1 + rand_r(&r->seed) % 256);
		uint64_t t0 = retry_now_ms(), took;
		ssize_t n;

		if ((size_t)off + len > r->size)
			len = r->size - (size_t)off;
		n = pread(fd, buf, len, off);
		took = retry_now_ms() - t0;
		if (took > r->longest_ms)
			r->longest_ms = took;
		r->reads++;
		if (n < 0 && errno == ENOTCONN)
			r->enotconn++;
		if (n != (ssize_t)len || memcmp(buf, r->expect + off, len) != 0)
			r->errors++;
	}
	close(fd);
	free(buf);
	return NULL;
}

void harness_fuse_abort(dev_t dev)
{
	char path[128];
	FILE *f;

	mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, NULL);
	snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%u/abort", minor(dev));
	f = fopen(path, "w");
	if (f) {
		fputs("1", f);
		fclose(f);
	}
}

size_t harness_body_write(char *p, size_t size, size_t n, void *arg)
{
	struct harness_body *b = arg;
	char *grown = realloc(b->buf, b->len + size * n + 1);

	if (!grown)
		return 0;
	memcpy(grown + b->len, p, size * n);
	b->buf = grown;
	b->len += size * n;
	b->buf[b->len] = '\0';
	return size * n;
}

long harness_http_get(const char *address, const char *path, char **body)
{
	return harness_http_request(address, path, NULL, body);
}

long harness_http_request(const char *address, const char *path, const char *header,
			  char **body)
{
	return harness_https_request(address, path, header, NULL, NULL, body, NULL);
}

long harness_https_request(const char *address, const char *path, const char *header,
			   const char *ca_file, const char *name, char **body, int *cc)
{
	struct harness_body b = { .buf = NULL };
	struct curl_slist *hdrs = NULL, *connect_to = NULL;
	const char *scheme = ca_file ? "https" : "http", *port;
	char url[600], connect[400];
	long status = 0;
	CURL *c = curl_easy_init();
	CURLcode rc;

	ck_assert_ptr_nonnull(c);
	if (strncmp(address, "unix://", 7) == 0) {
		curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, address + 7);
		snprintf(url, sizeof(url), "%s://%s%s", scheme, name ? name : "localhost", path);
	} else if (name && (port = strrchr(address, ':'))) {
		snprintf(url, sizeof(url), "https://%s%s%s", name, port, path);
		snprintf(connect, sizeof(connect), "%s%s:%s", name, port, address);
		connect_to = curl_slist_append(NULL, connect);
		curl_easy_setopt(c, CURLOPT_CONNECT_TO, connect_to);
	} else {
		snprintf(url, sizeof(url), "%s://%s%s", scheme, address, path);
	}
	if (ca_file)
		curl_easy_setopt(c, CURLOPT_CAINFO, ca_file);
	if (header) {
		hdrs = curl_slist_append(NULL, header);
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, harness_body_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (cc)
		*cc = (int)rc;
	curl_slist_free_all(hdrs);
	curl_slist_free_all(connect_to);
	curl_easy_cleanup(c);
	if (body)
		*body = b.buf ? b.buf : strdup("");
	else
		free(b.buf);
	return status;
}

/* A key and a certificate NAME.key, NAME.crt under dir: self-signed (a
 * CA) when san is NULL, else for san signed by the CA ca.crt/ca.key. */
static void make_cert(const char *dir, const char *name, const char *san)
{
	char cmd[2048];
	int rc;

	snprintf(cmd, sizeof(cmd),
		 "cd '%s' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
		 " -subj '/CN=%s' -days 2 %s%s%s -keyout %s.key -out %s.crt 2>/dev/null",
		 dir, name, san ? "-addext 'subjectAltName=" : "", san ? san : "",
		 san ? "' -addext 'basicConstraints=critical,CA:FALSE' -CA ca.crt -CAkey ca.key"
		     : "",
		 name, name);
	rc = system(cmd);
	ck_assert_msg(rc == 0, "openssl: making '%s' under %s failed (status %d)", name, dir, rc);
}

void harness_certs_make(const char *dir, struct harness_certs *c)
{
	snprintf(c->ca, sizeof(c->ca), "%s/ca.crt", dir);
	snprintf(c->other_ca, sizeof(c->other_ca), "%s/other-ca.crt", dir);
	snprintf(c->meta_cert, sizeof(c->meta_cert), "%s/meta.crt", dir);
	snprintf(c->meta_key, sizeof(c->meta_key), "%s/meta.key", dir);
	snprintf(c->worker_cert, sizeof(c->worker_cert), "%s/worker.crt", dir);
	snprintf(c->worker_key, sizeof(c->worker_key), "%s/worker.key", dir);
	snprintf(c->client_cert, sizeof(c->client_cert), "%s/client.crt", dir);
	snprintf(c->client_key, sizeof(c->client_key), "%s/client.key", dir);
	make_cert(dir, "ca", NULL);
	make_cert(dir, "other-ca", NULL);
	make_cert(dir, "meta", "DNS:" HARNESS_TLS_META_NAME);
	make_cert(dir, "worker", "DNS:" HARNESS_TLS_WORKER_NAME);
	make_cert(dir, "client", "DNS:granary-client.test");
}

double harness_metric(const char *text, const char *sample)
{
	size_t n = strlen(sample);
	const char *line = text;

	while (line && *line) {
		if (strncmp(line, sample, n) == 0 && line[n] == ' ')
			return strtod(line + n + 1, NULL);
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	return -1;
}
