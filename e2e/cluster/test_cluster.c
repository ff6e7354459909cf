/*
 * test_cluster.c - a whole Granary data plane on one machine: granary-meta
 * on a unix socket, two granary-workers on loopback ports (separate cache
 * directories, one cluster token, meta.address set, a short heartbeat),
 * and granary-fuse mounting a dataset by name, all real processes (the
 * built binaries, $GRANARY_BIN_DIR), against the S3 server of the ctest
 * fixture ($GRANARY_S3_DIR/env, bucket granary-e2e).
 *
 * The dataset is registered in meta only; the workers take it from meta
 * by themselves (cache/worker_meta.h). The mount uses worker 1's cache
 * directory as "its node's" and reaches worker 2 as a peer.
 *
 * The objects are put once per run under a unique prefix (an unchecked
 * fixture in the parent); each test starts its own cluster.
 *
 * The "tls" case runs the same cluster with TLS on both planes: meta on a
 * loopback TCP port requiring client certificates (mutual TLS), the
 * workers serving HTTPS with one certificate for one name, every client
 * verifying (certificates made per test, harness_certs_make).
 *
 * The "preload" case runs three workers that reach the store through a
 * proxy the test can stall, and checks where each preloaded block lands
 * (the block files, against placement computed here as a mount does).
 *
 * The "membership" case runs one worker, with an expiry (10 s) far longer
 * than a leave takes, and a second process of its worker id.
 */
#include <arpa/inet.h>
#include <check.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "block/key.h"
#include "block/placement.h"
#include "block/token.h"
#include "common/fileio.h"
#include "common/retry.h"
#include "common/tls.h"
#include "e2e/harness.h"
#include "meta/meta_client.h"
#include "store/store.h"
#include "unit/check_main.h"

#define BUCKET "granary-e2e"
#define BS (64u << 10)     /* the dataset's block size, from its options */
#define SECRET "e2e-cluster-secret-0123456789abcdef"
#define DATASET "cluster-ds"
#define NWORKERS 2
#define WORKERS_MAX 3      /* the "preload" case's */

struct object {
	const char *key;
	size_t size;
};

/* Multi-block objects (short last blocks, exact multiples, a deep key). */
static const struct object objects[] = {
	{ "train/shard-0.rec", 40 * BS + 1234 },
	{ "train/shard-1.rec", 32 * BS },
	{ "train/shard-2.rec", 27 * BS + 7 },
	{ "val/shard-0.rec", 17 * BS + 60000 },
	{ "val/deep/x/labels.bin", 3 * BS + 1 },
	{ "README", 333 },
};
#define NOBJ (sizeof(objects) / sizeof(objects[0]))

static char endpoint[256], credentials[512], bin_dir[512];
static char prefix[128], source_uri[200];
static unsigned char *data[NOBJ];
static uint64_t total_blocks;

/* The cluster of one test. */
struct proc {
	pid_t pid;
	char log[300];
};

struct worker {
	struct proc p;
	int port;
	char id[16];
	char cache[256];
};

static char work[128], token_path[200], meta_sock[240], meta_data[200], meta_metrics[240];
/* meta's csi and worker role keys; the mount role's key is the cluster
 * token, as in the chart. */
static struct harness_meta_keys keys;
static struct proc meta;
static struct worker workers[WORKERS_MAX];
static int nworkers = NWORKERS; /* started by setup */
static struct token *tok;
/* The "tls" case: TLS on meta's port and the workers', with these files. */
static bool tls_on;
static struct harness_certs certs;

/* --- environment and data -------------------------------------------------- */

static void read_env(void)
{
	harness_s3_env(endpoint, sizeof(endpoint), credentials, sizeof(credentials));
	harness_bin_dir(bin_dir, sizeof(bin_dir));
}

/* Unchecked fixture: once, in the parent, before the tests fork. */
static void put_objects(void)
{
	struct store_config cfg = { .request_timeout_ms = 10000, .deadline_ms = 30000 };
	struct store *st = NULL;
	struct error err;
	char key[300];

	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_ALL);
	read_env();
	cfg.endpoint = endpoint;
	cfg.credentials_file = credentials;
	ck_assert_msg(store_open("s3://" BUCKET, &cfg, &st, &err) == ERR_OK, "%s", err.msg);
	snprintf(prefix, sizeof(prefix), "cluster-e2e-%d-%llu/", (int)getpid(),
		 (unsigned long long)retry_now_ms());
	snprintf(source_uri, sizeof(source_uri), "s3://" BUCKET "/%s", prefix);
	total_blocks = 0; /* once per case */
	for (size_t i = 0; i < NOBJ; i++) {
		data[i] = malloc(objects[i].size);
		harness_fill(data[i], objects[i].size, ((unsigned)i + 1) * 0x9e3779b97f4a7c15ull + 11);
		snprintf(key, sizeof(key), "%s%s", prefix, objects[i].key);
		ck_assert_msg(store_put(st, key, data[i], objects[i].size, &err) == ERR_OK,
			      "put '%s': %s", key, err.msg);
		total_blocks += (objects[i].size + BS - 1) / BS;
	}
	store_free(st);
	ck_assert_int_eq(token_new(SECRET, strlen(SECRET), &tok, &err), ERR_OK);
}

static void free_objects(void)
{
	for (size_t i = 0; i < NOBJ; i++)
		free(data[i]);
	token_free(tok);
}

/* --- processes ----------------------------------------------------------- */

/* SIGTERM and wait up to 20 s: the exit status (0 = graceful). */
static int proc_stop(struct proc *p)
{
	int status = harness_stop(&p->pid, 20000, NULL);

	if (status == -1)
		harness_dump_log(p->log);
	return status;
}

static bool proc_exited(struct proc *p, int *status)
{
	if (p->pid > 0 && waitpid(p->pid, status, WNOHANG) == p->pid) {
		p->pid = 0;
		return true;
	}
	return false;
}

/*
 * A csi-role client of meta; in the tls case with the TLS files given
 * (ca_file NULL: plaintext). ERR_OK or the error of meta_client_new.
 */
static enum error_code meta_client_with(const char *ca_file, const char *cert,
					const char *key, struct meta_client **c,
					struct error *err)
{
	struct tls_client_settings ts = { .ca_file = (char *)ca_file,
					  .server_name = ca_file ? HARNESS_TLS_META_NAME : NULL,
					  .cert_file = (char *)cert,
					  .key_file = (char *)key };
	struct tls_material tm = { 0 };
	struct meta_client_options opt = { .timeout_ms = 10000, .build_timeout_ms = 120000,
					   .key_file = keys.csi, .role = META_ROLE_CSI, .tls = &tm };
	enum error_code rc;

	*c = NULL;
	ck_assert_msg(tls_client_load("meta.tls.", &ts, &tm, err) == ERR_OK, "%s", err->msg);
	rc = meta_client_new(meta_sock, &opt, c, err);
	tls_material_release(&tm);
	return rc;
}

static struct meta_client *meta_client(void)
{
	struct meta_client *c = NULL;
	struct error err;

	ck_assert_msg(meta_client_with(tls_on ? certs.ca : NULL, certs.client_cert,
				       certs.client_key, &c, &err) == ERR_OK,
		      "%s", err.msg);
	return c;
}

/* Appends argv[*n..] the flags of the tls case for meta.tls.* (a client
 * of meta) and, with worker_client, worker.tls.*; a no-op otherwise. */
static void tls_client_flags(const char **argv, int *n, bool worker_client)
{
	const char *flags[][2] = {
		{ "--meta.tls.ca_file", certs.ca },
		{ "--meta.tls.server_name", HARNESS_TLS_META_NAME },
		{ "--meta.tls.cert_file", certs.client_cert },
		{ "--meta.tls.key_file", certs.client_key },
		{ "--worker.tls.ca_file", certs.ca },
		{ "--worker.tls.server_name", HARNESS_TLS_WORKER_NAME },
	};

	for (size_t i = 0; tls_on && i < (worker_client ? 6u : 4u); i++) {
		argv[(*n)++] = flags[i][0];
		argv[(*n)++] = flags[i][1];
	}
}

/* How many entries of argv (NULL-terminated) precede the NULL. */
static int argv_len(const char *const *argv)
{
	int n = 0;

	while (argv[n])
		n++;
	return n;
}

/* meta with a short heartbeat (interval 200 ms, expiry 1 s) and the
 * cluster's store settings, so that a spec may leave endpoint and
 * credentials_ref empty. Returns once it answers. */
static const char *meta_interval = "200ms", *meta_expiry = "1s";

static void meta_start(void)
{
	char exe[600];
	const char *argv[40] = { exe, "--listen", meta_sock, "--data_dir", meta_data,
				 "--heartbeat.interval", meta_interval, "--heartbeat.expiry", meta_expiry,
				 "--store.endpoint", endpoint, "--store.credentials_file",
				 credentials, "--log.level", "info", "--auth.csi_key_file", keys.csi,
				 "--auth.worker_key_file", keys.worker, "--auth.mount_key_file",
				 token_path, "--metrics.address", meta_metrics, NULL };
	struct meta_client *c = meta_client();
	uint64_t t0 = retry_now_ms();
	int n = argv_len(argv);

	if (tls_on) {
		argv[n++] = "--tls.cert_file";
		argv[n++] = certs.meta_cert;
		argv[n++] = "--tls.key_file";
		argv[n++] = certs.meta_key;
		argv[n++] = "--tls.client_ca_file";
		argv[n++] = certs.ca;
	}

	snprintf(exe, sizeof(exe), "%s/granary-meta", bin_dir);
	meta.pid = harness_spawn(argv, meta.log);
	for (;;) {
		Granary__V1__ListDatasetsReply *l = NULL;
		struct error err;
		int status;

		if (meta_client_list(c, &l, &err) == ERR_OK) {
			granary__v1__list_datasets_reply__free_unpacked(l, NULL);
			break;
		}
		if (proc_exited(&meta, &status)) {
			harness_dump_log(meta.log);
			ck_abort_msg("granary-meta exited at start (status %d)", status);
		}
		if (retry_now_ms() - t0 > 15000) {
			harness_dump_log(meta.log);
			ck_abort_msg("granary-meta did not answer within 15 s: %s", err.msg);
		}
		retry_sleep_ms(20);
	}
	meta_client_free(c);
}

/* --- HTTP to the workers ----------------------------------------------------- */

/* GET path (signed with the cluster token for /v1); *out is the body
 * (free it), the HTTP status is returned (0: no answer). */
static long http_get(int port, const char *path, char **out)
{
	char address[32], auth[TOKEN_HEADER_MAX + 32] = "Authorization: ";
	const char *header = NULL;

	snprintf(address, sizeof(address), "127.0.0.1:%d", port);
	if (strncmp(path, "/v1/", 4) == 0) {
		ck_assert_int_eq(token_sign(tok, "GET", path, "", (int64_t)time(NULL), auth + 15,
					    sizeof(auth) - 15), ERR_OK);
		header = auth;
	}
	if (tls_on)
		return harness_https_request(address, path, header, certs.ca,
					     HARNESS_TLS_WORKER_NAME, out, NULL);
	return harness_http_request(address, path, header, out);
}

/* A counter or gauge from the worker's /metrics. */
static uint64_t metric(const struct worker *w, const char *name)
{
	char *text = NULL, needle[128];
	unsigned long long v = 0;
	const char *at;

	ck_assert_int_eq(http_get(w->port, "/metrics", &text), 200);
	snprintf(needle, sizeof(needle), "\n%s ", name);
	at = strstr(text, needle);
	ck_assert_msg(at != NULL, "no metric %s", name);
	ck_assert_int_eq(sscanf(at + strlen(needle), "%llu", &v), 1);
	free(text);
	return v;
}

/* GET of a block from a worker, the query signed with the path; returns
 * the status and the time it took in *ms. */
static long block_get(int port, const char *dataset, const char *key, const char *etag,
		      uint64_t *ms)
{
	char address[32], path[300], query[600], url[1000], auth[TOKEN_HEADER_MAX + 32] =
		"Authorization: ";
	char *body = NULL, *k = curl_easy_escape(NULL, key, 0), *e = curl_easy_escape(NULL, etag, 0);
	uint64_t t0 = retry_now_ms();
	long status;

	snprintf(address, sizeof(address), "127.0.0.1:%d", port);
	snprintf(path, sizeof(path), "/v1/blocks/%s/0", dataset);
	snprintf(query, sizeof(query), "key=%s&etag=%s", k, e);
	snprintf(url, sizeof(url), "%s?%s", path, query);
	curl_free(k);
	curl_free(e);
	ck_assert_int_eq(token_sign(tok, "GET", path, query, (int64_t)time(NULL), auth + 15,
				    sizeof(auth) - 15), ERR_OK);
	status = tls_on ? harness_https_request(address, url, auth, certs.ca,
						HARNESS_TLS_WORKER_NAME, &body, NULL)
			: harness_http_request(address, url, auth, &body);
	*ms = retry_now_ms() - t0;
	free(body);
	return status;
}

static bool worker_has(const struct worker *w, const char *dataset, char **json)
{
	char path[300];

	snprintf(path, sizeof(path), "/v1/datasets/%s", dataset);
	return http_get(w->port, path, json) == 200;
}

/* The "preload" case: the workers reach the store through a proxy the
 * test can stall (at proxy_endpoint), with short store timeouts. */
static struct harness_proxy *store_proxy;
static char proxy_endpoint[64];

/* granary-worker --node_id id, its cache directory and log named name
 * (its id, or another name for a second process of one id). */
static void worker_start_as(struct worker *w, const char *id, const char *name)
{
	char exe[600], listen[64];
	const char *argv[48] = { exe, "--listen", listen, "--node_id", w->id, "--meta.address",
				 meta_sock, "--cache.dir", w->cache, "--cache.capacity", "256MiB",
				 "--token_file", token_path, "--store.endpoint",
				 store_proxy ? proxy_endpoint : endpoint,
				 "--store.credentials_file", credentials, "--http.shutdown_grace",
				 "2s", "--log.level", "info", "--meta.key_file", keys.worker,
				 "--placement.settle", "1s",
				 /* for datasets registered without a block size */
				 "--cache.block_size", "64KiB", NULL };
	uint64_t t0 = retry_now_ms();
	int n = argv_len(argv);

	tls_client_flags(argv, &n, false);
	if (store_proxy) {
		argv[n++] = "--store.request_timeout";
		argv[n++] = "1s";
		argv[n++] = "--store.max_attempts";
		argv[n++] = "2";
	}
	if (tls_on) {
		argv[n++] = "--tls.cert_file";
		argv[n++] = certs.worker_cert;
		argv[n++] = "--tls.key_file";
		argv[n++] = certs.worker_key;
	}

	snprintf(exe, sizeof(exe), "%s/granary-worker", bin_dir);
	snprintf(w->id, sizeof(w->id), "%s", id);
	snprintf(w->cache, sizeof(w->cache), "%s/cache-%s", work, name);
	snprintf(w->p.log, sizeof(w->p.log), "%s/%s.log", work, name);
	w->port = harness_free_port();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", w->port);
	w->p.pid = harness_spawn(argv, w->p.log);
	while (http_get(w->port, "/healthz", NULL) != 200) {
		int status;

		if (proc_exited(&w->p, &status)) {
			harness_dump_log(w->p.log);
			ck_abort_msg("granary-worker %s exited at start (status %d)", w->id, status);
		}
		if (retry_now_ms() - t0 > 15000) {
			harness_dump_log(w->p.log);
			ck_abort_msg("granary-worker %s did not serve within 15 s", w->id);
		}
		retry_sleep_ms(20);
	}
}

static void worker_start(struct worker *w, int i)
{
	char id[16];

	snprintf(id, sizeof(id), "w%d", i + 1);
	worker_start_as(w, id, id);
}

/* --- meta -------------------------------------------------------------------- */

struct spec {
	Granary__V1__DatasetSpec s;
	Granary__V1__DatasetOptions o;
};

/* Endpoint and credentials_ref left empty: meta's own store settings list
 * it, and the workers and mounts read it with theirs (the rule). */
static void spec_init(struct spec *sp, const char *name)
{
	granary__v1__dataset_spec__init(&sp->s);
	granary__v1__dataset_options__init(&sp->o);
	sp->s.name = (char *)name;
	sp->s.source_uri = source_uri;
	sp->s.options = &sp->o;
	sp->o.block_size = BS;
}

/* Registers sp, whose source holds files objects. */
static void register_files(struct spec *sp, uint64_t files)
{
	struct meta_client *c = meta_client();
	Granary__V1__Dataset *d = NULL;
	struct error err;

	ck_assert_msg(meta_client_register(c, &sp->s, &d, &err) == ERR_OK, "register '%s': %s",
		      sp->s.name, err.msg);
	ck_assert_uint_eq(d->files, files);
	granary__v1__dataset__free_unpacked(d, NULL);
	meta_client_free(c);
}

static void register_ok(struct spec *sp)
{
	register_files(sp, NOBJ);
}

static size_t live_workers(void)
{
	struct meta_client *c = meta_client();
	Granary__V1__ListWorkersReply *r = NULL;
	struct error err;
	size_t n;

	ck_assert_msg(meta_client_list_workers(c, &r, &err) == ERR_OK, "%s", err.msg);
	n = r->n_workers;
	granary__v1__list_workers_reply__free_unpacked(r, NULL);
	meta_client_free(c);
	return n;
}

/* The address meta lists for worker id, "" when it lists none. */
static void listed_address(const char *id, char *out, size_t size)
{
	struct meta_client *c = meta_client();
	Granary__V1__ListWorkersReply *r = NULL;
	struct error err;

	ck_assert_msg(meta_client_list_workers(c, &r, &err) == ERR_OK, "%s", err.msg);
	out[0] = '\0';
	for (size_t i = 0; i < r->n_workers; i++)
		if (strcmp(r->workers[i]->id, id) == 0)
			snprintf(out, size, "%s", r->workers[i]->address);
	granary__v1__list_workers_reply__free_unpacked(r, NULL);
	meta_client_free(c);
}

/* Polls cond(arg) every 20 ms for up to ms; false when it never held. */
static bool wait_for(bool (*cond)(void *), void *arg, uint64_t ms)
{
	uint64_t t0 = retry_now_ms();

	while (!cond(arg)) {
		if (retry_now_ms() - t0 > ms)
			return false;
		retry_sleep_ms(20);
	}
	return true;
}

/* Polls the log at path for needle every 20 ms for up to ms (a daemon may
 * log what it did after the effect a test waited for); false, with the
 * log's tail on stderr, when it never held. */
static bool wait_log(const char *path, const char *needle, uint64_t ms)
{
	uint64_t t0 = retry_now_ms();

	while (!harness_file_contains(path, needle)) {
		if (retry_now_ms() - t0 > ms) {
			harness_dump_log(path);
			return false;
		}
		retry_sleep_ms(20);
	}
	return true;
}

/* A poll of a worker's counter for a value, keeping the last one seen. */
struct metric_wait {
	const struct worker *w;
	const char *name;
	uint64_t want;
	uint64_t seen;
};

/* Whether the counter of the metric_wait arg points to is its want. */
static bool metric_is(void *arg)
{
	struct metric_wait *mw = arg;

	mw->seen = metric(mw->w, mw->name);
	return mw->seen == mw->want;
}

static bool all_joined(void *arg)
{
	return live_workers() == (size_t)(uintptr_t)arg;
}

static bool all_have(void *arg)
{
	for (int i = 0; i < nworkers; i++)
		if (workers[i].p.pid > 0 && !worker_has(&workers[i], arg, NULL))
			return false;
	return true;
}

static bool none_has(void *arg)
{
	for (int i = 0; i < nworkers; i++)
		if (workers[i].p.pid > 0 && worker_has(&workers[i], arg, NULL))
			return false;
	return true;
}

/* --- mounts ------------------------------------------------------------------ */

struct mnt {
	char dir[256];
	char log[300];
	struct proc p;
};

/*
 * granary-fuse --dataset NAME as the node plugin starts it, on worker 1's
 * node: its cache directory, the cluster token, meta, and the node's store
 * settings. extra (NULL-terminated, may be NULL) replaces values: pairs
 * "--flag", "value" that come last win. Returns 0 once mounted, or the exit
 * status when the daemon gave up.
 */
static int mount_start(struct mnt *m, const char *dataset, const char *const *extra,
		       const char *label)
{
	char exe[600];
	const char *argv[64];
	int n = 0, rc;

	snprintf(m->dir, sizeof(m->dir), "%s/mnt-%s", work, label);
	snprintf(m->log, sizeof(m->log), "%s/fuse-%s.log", work, label);
	snprintf(m->p.log, sizeof(m->p.log), "%s", m->log);
	ck_assert_int_eq(mkdir(m->dir, 0755), 0);
	snprintf(exe, sizeof(exe), "%s/granary-fuse", bin_dir);
	argv[n++] = exe;
	argv[n++] = "--mountpoint";
	argv[n++] = m->dir;
	argv[n++] = "--dataset";
	argv[n++] = dataset;
	argv[n++] = "--meta.address";
	argv[n++] = meta_sock;
	argv[n++] = "--token_file";
	argv[n++] = token_path;
	argv[n++] = "--meta.key_file"; /* the mount role's key: the cluster token */
	argv[n++] = token_path;
	argv[n++] = "--cache.dir";
	argv[n++] = workers[0].cache;
	argv[n++] = "--store.endpoint";
	argv[n++] = endpoint;
	argv[n++] = "--store.credentials_file";
	argv[n++] = credentials;
	argv[n++] = "--membership.refresh";
	argv[n++] = "200ms";
	argv[n++] = "--log.level";
	argv[n++] = "info";
	tls_client_flags(argv, &n, true);
	for (; extra && *extra && n < 62; extra++)
		argv[n++] = *extra;
	argv[n] = NULL;
	m->p.pid = harness_spawn(argv, m->log);
	rc = harness_wait_mount(&m->p.pid, m->dir, 10000, 25);
	if (rc > 0)
		rmdir(m->dir);
	if (rc < 0) {
		harness_dump_log(m->log);
		ck_abort_msg("mount at %s did not appear", m->dir);
	}
	return rc;
}

static void mount_stop(struct mnt *m)
{
	int status = proc_stop(&m->p);

	if (status != 0)
		harness_dump_log(m->log);
	ck_assert_msg(status == 0, "granary-fuse exit status %d", status);
	ck_assert_msg(!harness_is_mounted(m->dir), "stale mount left at %s", m->dir);
	rmdir(m->dir);
}

/* One number of the mount's user.granary.stats ("reads=1 ... fallbacks=0"). */
static uint64_t mount_stat(const struct mnt *m, const char *key)
{
	char buf[1024], needle[64];
	unsigned long long v = 0;
	ssize_t n = getxattr(m->dir, "user.granary.stats", buf, sizeof(buf) - 1);
	const char *at;

	ck_assert_msg(n > 0, "getxattr user.granary.stats: %s", strerror(errno));
	buf[n] = '\0';
	snprintf(needle, sizeof(needle), "%s=", key);
	at = strstr(buf, needle);
	ck_assert_msg(at != NULL, "no %s in '%s'", key, buf);
	ck_assert_int_eq(sscanf(at + strlen(needle), "%llu", &v), 1);
	return v;
}

/* Reads object i from fd to its end and compares it with what was put:
 * 0, -errno of a failed read, or 1 for different bytes. */
static int compare_object(int fd, size_t i)
{
	static const size_t chunk = 1u << 20;
	void *buf = NULL;
	size_t off = 0;
	int rc = 0;

	/* aligned, for O_DIRECT */
	ck_assert_int_eq(posix_memalign(&buf, 4096, chunk), 0);
	for (;;) {
		ssize_t n = pread(fd, buf, chunk, (off_t)off);

		if (n < 0) {
			rc = -errno;
			break;
		}
		if (n == 0)
			break;
		if (off + (size_t)n > objects[i].size ||
		    memcmp(buf, data[i] + off, (size_t)n) != 0) {
			rc = 1;
			break;
		}
		off += (size_t)n;
	}
	if (rc == 0 && off != objects[i].size)
		rc = 1;
	free(buf);
	return rc;
}

/*
 * Reads object i through the mount (opened with oflags) and compares it
 * with what was put. drop: first evict the file's pages from the page
 * cache (the mount keeps them across opens), so that the read reaches the
 * FUSE daemon; O_DIRECT skips the page cache altogether. Returns 0, or
 * -errno of a failed call, or 1 for different bytes.
 */
static int read_object_with(const struct mnt *m, size_t i, int oflags, bool drop)
{
	char path[600];
	int fd, rc;

	snprintf(path, sizeof(path), "%s/%s", m->dir, objects[i].key);
	fd = open(path, O_RDONLY | oflags);
	if (fd < 0)
		return -errno;
	if (drop)
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	rc = compare_object(fd, i);
	close(fd);
	return rc;
}

static int read_object(const struct mnt *m, size_t i, bool drop)
{
	return read_object_with(m, i, 0, drop);
}

static void read_all_exact(const struct mnt *m)
{
	for (size_t i = 0; i < NOBJ; i++) {
		int rc = read_object(m, i, false);

		ck_assert_msg(rc == 0, "'%s': %s", objects[i].key,
			      rc > 0 ? "bytes differ" : strerror(-rc));
	}
}

static long counted;

static int count_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	if (flag == FTW_F)
		counted++;
	return 0;
}

/* Flips one byte in the middle of a block file's data, in place: the
 * header and size stay valid, only the data checksum can tell. */
static int flip_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	unsigned char b;
	off_t at;
	int fd;

	if (flag != FTW_F || sb->st_size <= 4096)
		return 0;
	at = 4096 + (sb->st_size - 4096) / 2;
	fd = open(path, O_RDWR);
	ck_assert_msg(fd >= 0, "open block file '%s': %s", path, strerror(errno));
	ck_assert_int_eq(pread(fd, &b, 1, at), 1);
	b ^= 0x5a;
	ck_assert_int_eq(pwrite(fd, &b, 1, at), 1);
	close(fd);
	counted++;
	return 0;
}

/* Calls fn on every block file of a worker's cache directory; returns how
 * many it counted. */
static long walk_blocks(const struct worker *w,
			int (*fn)(const char *, const struct stat *, int, struct FTW *))
{
	char dir[300];

	counted = 0;
	snprintf(dir, sizeof(dir), "%s/blocks", w->cache);
	nftw(dir, fn, 16, FTW_PHYS);
	return counted;
}

/* Block files in a worker's cache directory. */
static long blocks_in(const struct worker *w)
{
	return walk_blocks(w, count_entry);
}

static bool one_owner_each(void *arg)
{
	return blocks_in(&workers[0]) + blocks_in(&workers[1]) == (long)total_blocks;
}

/* Corrupts every block file of a worker's cache directory (a failing disk
 * or a stray writer); returns how many. */
static long corrupt_blocks(const struct worker *w)
{
	return walk_blocks(w, flip_entry);
}

/* --- the cluster fixture ------------------------------------------------------ */

/* meta, the dataset registered in it, nworkers workers that joined and
 * took the dataset from meta. */
static void setup(void)
{
	struct spec sp;

	harness_tmpdir(work, sizeof(work), "/tmp/granary-cluster-XXXXXX");
	snprintf(token_path, sizeof(token_path), "%s/token", work);
	snprintf(meta_sock, sizeof(meta_sock), "unix://%s/meta.sock", work);
	if (tls_on) {
		char tls_dir[200];

		/* TLS is for TCP: a unix socket stays plaintext */
		snprintf(tls_dir, sizeof(tls_dir), "%s/tls", work);
		ck_assert_int_eq(mkdir(tls_dir, 0700), 0);
		harness_certs_make(tls_dir, &certs);
		snprintf(meta_sock, sizeof(meta_sock), "127.0.0.1:%d", harness_free_port());
	}
	snprintf(meta_data, sizeof(meta_data), "%s/meta-data", work);
	snprintf(meta_metrics, sizeof(meta_metrics), "unix://%s/meta-metrics.sock", work);
	snprintf(meta.log, sizeof(meta.log), "%s/meta.log", work);
	harness_write_file(token_path, SECRET "\n", 0600);
	harness_meta_keys(work, &keys);
	meta_start();
	spec_init(&sp, DATASET);
	register_ok(&sp);
	for (int i = 0; i < nworkers; i++)
		worker_start(&workers[i], i);
	ck_assert_msg(wait_for(all_joined, (void *)(uintptr_t)nworkers, 10000),
		      "the workers did not join meta");
	ck_assert_msg(wait_for(all_have, DATASET, 10000), "the workers did not take '%s' from meta",
		      DATASET);
}

/* A test that failed half-way may leave mounts under work: detach them so
 * that the directory can be removed (their daemons die with this process). */
static void detach_mounts(void)
{
	char line[4096];
	FILE *f = fopen("/proc/self/mounts", "r");

	while (f && fgets(line, sizeof(line), f)) {
		char dev[512], mnt[1024], type[64];

		if (sscanf(line, "%511s %1023s %63s", dev, mnt, type) == 3 &&
		    strncmp(mnt, work, strlen(work)) == 0 && strncmp(type, "fuse", 4) == 0)
			umount2(mnt, MNT_DETACH);
	}
	if (f)
		fclose(f);
}

static void teardown(void)
{
	int bad = 0;

	detach_mounts();

	for (int i = 0; i < nworkers; i++) {
		int status = proc_stop(&workers[i].p);

		if (status != 0) {
			harness_dump_log(workers[i].p.log);
			bad = status;
		}
	}
	if (proc_stop(&meta) != 0)
		harness_dump_log(meta.log);
	if (store_proxy)
		harness_proxy_stop(store_proxy);
	store_proxy = NULL;
	harness_rm_rf(work);
	ck_assert_msg(bad == 0, "a granary-worker exited with status %d at SIGTERM", bad);
}

/* --- tests -------------------------------------------------------------------- */

/*
 * First pass through a fresh mount: every byte right, and the blocks were
 * spread over both workers (each served some, each cached some, none
 * cached by both; worker 1, the mount's own, answers its misses "read it
 * from the cache directory", counted in served_in_dir). Second
 * pass through a new mount (an empty page cache): worker 1's blocks come
 * from its cache directory (short-circuit: worker 1 serves nothing), worker
 * 2's from worker 2's cache, and no worker asks the store for anything.
 */
START_TEST(test_cluster_mount_spreads_blocks_and_second_pass_needs_no_store)
{
	struct mnt m1, m2;
	uint64_t served1[NWORKERS], served2[NWORKERS], req1[NWORKERS], req2[NWORKERS];
	long blocks[NWORKERS];
	char *json = NULL;

	/* the workers took the dataset with meta's options and their own
	 * credentials */
	ck_assert(worker_has(&workers[1], DATASET, &json));
	ck_assert_msg(strstr(json, "\"block_size\":65536") != NULL, "%s", json);
	ck_assert_msg(strstr(json, credentials) != NULL, "%s", json);
	free(json);

	ck_assert_int_eq(mount_start(&m1, DATASET, NULL, "first"), 0);
	read_all_exact(&m1);
	ck_assert_uint_eq(mount_stat(&m1, "fallbacks"), 0);
	for (int i = 0; i < NWORKERS; i++) {
		/* the mount's own worker (w1) answers "in the directory" */
		served1[i] = metric(&workers[i], "granary_worker_served_bytes_total") +
			     metric(&workers[i], "granary_worker_served_in_dir_total");
		req1[i] = metric(&workers[i], "granary_worker_store_requests_total");
		blocks[i] = blocks_in(&workers[i]);
		ck_assert_msg(served1[i] > 0 && blocks[i] > 0,
			      "worker %s served %llu bytes and blocks, holds %ld blocks: blocks not spread",
			      workers[i].id, (unsigned long long)served1[i], blocks[i]);
	}
	fprintf(stderr,
		"cluster: %llu blocks; first pass: w1 served %llu bytes, holds %ld blocks, %llu store requests; "
		"w2 served %llu bytes, holds %ld blocks, %llu store requests\n",
		(unsigned long long)total_blocks, (unsigned long long)served1[0], blocks[0],
		(unsigned long long)req1[0], (unsigned long long)served1[1], blocks[1],
		(unsigned long long)req1[1]);
	/* one owner per block cluster-wide: no block is held twice (read-ahead
	 * stays with the owner) */
	ck_assert_int_eq(blocks[0] + blocks[1], (long)total_blocks);
	mount_stop(&m1);

	ck_assert_int_eq(mount_start(&m2, DATASET, NULL, "second"), 0);
	read_all_exact(&m2);
	ck_assert_uint_eq(mount_stat(&m2, "fallbacks"), 0);
	ck_assert_uint_ge(mount_stat(&m2, "read_bytes"), 1);
	for (int i = 0; i < NWORKERS; i++) {
		served2[i] = metric(&workers[i], "granary_worker_served_bytes_total") +
			     metric(&workers[i], "granary_worker_served_in_dir_total");
		req2[i] = metric(&workers[i], "granary_worker_store_requests_total");
	}
	fprintf(stderr,
		"cluster: second pass: w1 served +%llu bytes, w2 served +%llu bytes, store requests +%llu/+%llu\n",
		(unsigned long long)(served2[0] - served1[0]),
		(unsigned long long)(served2[1] - served1[1]),
		(unsigned long long)(req2[0] - req1[0]), (unsigned long long)(req2[1] - req1[1]));
	ck_assert_msg(req2[0] == req1[0] && req2[1] == req1[1],
		      "second pass made store requests: w1 %llu -> %llu, w2 %llu -> %llu",
		      (unsigned long long)req1[0], (unsigned long long)req2[0],
		      (unsigned long long)req1[1], (unsigned long long)req2[1]);
	ck_assert_msg(served2[0] == served1[0],
		      "worker 1 served %llu bytes in the second pass: the mount did not read its cache directory",
		      (unsigned long long)(served2[0] - served1[0]));
	ck_assert_msg(served2[1] > served1[1], "worker 2 served nothing in the second pass");
	mount_stop(&m2);
}
END_TEST

/* Bytes of the block files of worker w in the page cache. */
static uint64_t blocks_resident(const struct worker *w)
{
	struct fileio_residency r;
	struct error err;
	char dir[300];

	snprintf(dir, sizeof(dir), "%s/blocks", w->cache);
	ck_assert_msg(fileio_resident_tree(dir, &r, &err) == ERR_OK, "%s", err.msg);
	return r.resident;
}

/*
 * The node holds a byte in its page cache once (docs/ARCHITECTURE.md,
 * "Memory"): the block files keep at most a tenth of the bytes read, after
 * a cold pass (each owner fetched, wrote and sent its blocks with sendfile,
 * worker 1 to the mount on its own node too) and after a warm one (the
 * mount's pages dropped: worker 1's blocks read from its cache directory
 * by the mount, worker 2's sent again), once the workers have dropped what
 * they sent (at most 2 s). Before, they held all of it. The work directory
 * must be on a disk's file system: tmpfs pages are the files.
 */
START_TEST(test_cluster_block_files_leave_the_page_cache_once_read)
{
	uint64_t total = 0, held[NWORKERS], t0;
	struct statfs sf;
	struct mnt m;

	ck_assert_int_eq(statfs(work, &sf), 0);
	ck_assert_msg(sf.f_type != 0x01021994, "%s is on tmpfs: needs a disk", work);
	for (size_t i = 0; i < NOBJ; i++)
		total += objects[i].size;
	ck_assert_int_eq(mount_start(&m, DATASET, NULL, "pages"), 0);
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < NOBJ; i++) {
			int rc = read_object(&m, i, pass > 0);

			ck_assert_msg(rc == 0, "'%s': %s", objects[i].key,
				      rc > 0 ? "bytes differ" : strerror(-rc));
		}
		/* a worker drops what it sent once the client has read it: within
		 * HTTP_SENT_DROP_MS and a watchdog tick (cache/http.c) */
		t0 = retry_now_ms();
		do {
			retry_sleep_ms(50);
			for (int i = 0; i < NWORKERS; i++)
				held[i] = blocks_resident(&workers[i]);
		} while (held[0] + held[1] > 0 && retry_now_ms() - t0 < 2000);
		printf("page cache %llu ms after the %s pass of %llu bytes: block files of w1 %llu, of w2 %llu\n",
		       (unsigned long long)(retry_now_ms() - t0), pass ? "warm" : "cold",
		       (unsigned long long)total, (unsigned long long)held[0],
		       (unsigned long long)held[1]);
		ck_assert_msg(held[0] + held[1] <= total / 10,
			      "%s pass: the block files hold %llu + %llu bytes of %llu read",
			      pass ? "warm" : "cold", (unsigned long long)held[0],
			      (unsigned long long)held[1], (unsigned long long)total);
	}
	ck_assert_uint_eq(mount_stat(&m, "fallbacks"), 0);
	mount_stop(&m);
}
END_TEST

/*
 * A dataset whose name is as long as a CSI volume name may be (here 200
 * bytes: names of 64 and more were refused by the workers once, and every
 * read then went to the store without a word): both workers take it from
 * meta, the mount asks them for its blocks by that name, and no block
 * comes from the store nor falls back to it.
 */
START_TEST(test_cluster_long_dataset_name_is_served_by_the_workers)
{
	char name[201];
	uint64_t served0[NWORKERS], served1[NWORKERS];
	struct spec sp;
	struct mnt m;

	for (int i = 0; i < 200; i++)
		name[i] = i % 10 == 9 ? '-' : (char)('a' + i % 9);
	name[199] = 'z';
	name[200] = '\0';
	spec_init(&sp, name);
	register_ok(&sp);
	ck_assert_msg(wait_for(all_have, name, 10000),
		      "the workers did not take the dataset with a 200-byte name from meta");
	for (int i = 0; i < NWORKERS; i++)
		served0[i] = metric(&workers[i], "granary_worker_served_bytes_total") +
			     metric(&workers[i], "granary_worker_served_in_dir_total");

	ck_assert_int_eq(mount_start(&m, name, NULL, "long-name"), 0);
	read_all_exact(&m);
	fprintf(stderr, "cluster: 200-byte name: blocks local %llu, peer %llu, store %llu, fallbacks %llu\n",
		(unsigned long long)mount_stat(&m, "blocks_local"),
		(unsigned long long)mount_stat(&m, "blocks_peer"),
		(unsigned long long)mount_stat(&m, "blocks_store"),
		(unsigned long long)mount_stat(&m, "fallbacks"));
	ck_assert_uint_eq(mount_stat(&m, "fallbacks"), 0);
	ck_assert_uint_eq(mount_stat(&m, "blocks_store"), 0);
	ck_assert_uint_gt(mount_stat(&m, "blocks_peer"), 0);
	for (int i = 0; i < NWORKERS; i++) {
		served1[i] = metric(&workers[i], "granary_worker_served_bytes_total") +
			     metric(&workers[i], "granary_worker_served_in_dir_total");
		ck_assert_msg(served1[i] > served0[i], "worker %s served nothing of the dataset",
			      workers[i].id);
	}
	mount_stop(&m);
}
END_TEST

/*
 * A dataset registered without a block size takes each process's default,
 * which a rolling upgrade can leave different: here the workers number its
 * blocks by 64 KiB (their --cache.block_size), the mount by 128 KiB. Block
 * N of one is another range of the object than block N of the other: the
 * workers refuse the mount's requests (409, bs) and the mount reads the
 * store. A small O_DIRECT read at the start of each of the mount's blocks
 * asks for one 64 KiB chunk, which a worker answered with its own block N,
 * the checksums of those bytes with it.
 */
START_TEST(test_cluster_mount_and_workers_of_other_block_sizes_read_the_right_bytes)
{
	const char *const extra[] = { "--cache.block_size", "128KiB", NULL };
	const size_t mount_bs = 128u << 10;
	struct spec sp;
	struct mnt m;
	void *buf = NULL;

	spec_init(&sp, "bs-default");
	sp.o.block_size = 0;
	register_ok(&sp);
	ck_assert_msg(wait_for(all_have, "bs-default", 10000),
		      "the workers did not take the dataset from meta");
	ck_assert_int_eq(mount_start(&m, "bs-default", extra, "bs-default"), 0);
	ck_assert_int_eq(posix_memalign(&buf, 4096, 4096), 0);
	for (size_t i = 0; i < NOBJ; i++) {
		char path[600];
		int fd;

		snprintf(path, sizeof(path), "%s/%s", m.dir, objects[i].key);
		fd = open(path, O_RDONLY | O_DIRECT);
		ck_assert_msg(fd >= 0, "open '%s': %s", path, strerror(errno));
		for (size_t off = 0; off < objects[i].size; off += mount_bs) {
			size_t want = objects[i].size - off < 4096 ? objects[i].size - off : 4096;
			ssize_t n = pread(fd, buf, 4096, (off_t)off);

			ck_assert_msg(n == (ssize_t)want && memcmp(buf, data[i] + off, want) == 0,
				      "'%s' at %zu: %zd bytes, %s", objects[i].key, off, n,
				      n < 0 ? strerror(errno) : "not the object's");
		}
		close(fd);
	}
	free(buf);
	ck_assert_uint_gt(mount_stat(&m, "blocks_store"), 0);
	mount_stop(&m);
}
END_TEST

/* A reader that reads every file in a loop (evicting the page cache first),
 * byte-exact, until told to stop. */
struct reader_loop {
	const struct mnt *m;
	atomic_bool stop;
	atomic_ulong loops, reads, failures;
	char first_failure[256];
};

static void *reader_run(void *arg)
{
	struct reader_loop *r = arg;

	while (!atomic_load(&r->stop)) {
		for (size_t i = 0; i < NOBJ; i++) {
			int rc = read_object(r->m, i, true);

			atomic_fetch_add(&r->reads, 1);
			if (rc != 0 && atomic_fetch_add(&r->failures, 1) == 0)
				snprintf(r->first_failure, sizeof(r->first_failure), "'%s': %s",
					 objects[i].key, rc > 0 ? "bytes differ" : strerror(-rc));
		}
		atomic_fetch_add(&r->loops, 1);
	}
	return NULL;
}

START_TEST(test_cluster_worker_killed_mid_read_fails_no_read)
{
	struct reader_loop r = { .stop = false };
	struct mnt m;
	pthread_t t;
	unsigned long reads_at_kill, reads_at_drop, loops_at_drop;
	uint64_t fallbacks_at_drop, fallbacks_end, t_kill, t_drop;
	int status;

	ck_assert_int_eq(mount_start(&m, DATASET, NULL, "kill"), 0);
	r.m = &m;
	ck_assert_int_eq(pthread_create(&t, NULL, reader_run, &r), 0);
	/* some rounds with both workers up */
	while (atomic_load(&r.loops) < 2)
		retry_sleep_ms(5);
	ck_assert_uint_gt(metric(&workers[1], "granary_worker_served_bytes_total"), 0);

	reads_at_kill = atomic_load(&r.reads);
	t_kill = retry_now_ms();
	kill(workers[1].p.pid, SIGKILL);
	ck_assert_int_eq(waitpid(workers[1].p.pid, &status, 0), workers[1].p.pid);
	workers[1].p.pid = 0;

	/* meta drops it after the expiry; the mount follows within its
	 * refresh interval */
	ck_assert_msg(wait_for(all_joined, (void *)(uintptr_t)1, 10000),
		      "meta did not drop the killed worker");
	t_drop = retry_now_ms();
	retry_sleep_ms(600);
	reads_at_drop = atomic_load(&r.reads);
	loops_at_drop = atomic_load(&r.loops);
	fallbacks_at_drop = mount_stat(&m, "fallbacks");
	/* two more whole loops on the new membership */
	while (atomic_load(&r.loops) < loops_at_drop + 3)
		retry_sleep_ms(5);
	fallbacks_end = mount_stat(&m, "fallbacks");
	atomic_store(&r.stop, true);
	pthread_join(t, NULL);

	fprintf(stderr,
		"cluster: kill: %lu reads before the kill, %lu between the kill and the drop (%llu ms), "
		"%lu in all, %lu failed; mount fallbacks %llu at the drop, %llu at the end\n",
		reads_at_kill, reads_at_drop - reads_at_kill,
		(unsigned long long)(t_drop - t_kill), (unsigned long)atomic_load(&r.reads),
		(unsigned long)atomic_load(&r.failures), (unsigned long long)fallbacks_at_drop,
		(unsigned long long)fallbacks_end);
	ck_assert_msg(atomic_load(&r.failures) == 0, "%lu reads failed, first %s",
		      (unsigned long)atomic_load(&r.failures), r.first_failure);
	ck_assert_uint_gt(reads_at_drop - reads_at_kill, 0);
	/* the dead worker was asked and passed over, then no longer asked */
	ck_assert_uint_gt(fallbacks_at_drop, 0);
	ck_assert_uint_eq(fallbacks_end, fallbacks_at_drop);
	/* every fallback counted, but warned about once per source per 10 s */
	ck_assert_int_gt(harness_file_count(m.log, "block source failed"), 0);
	ck_assert_msg(harness_file_count(m.log, "block source failed") <= 6,
		      "%d fallback warnings for %llu fallbacks",
		      harness_file_count(m.log, "block source failed"),
		      (unsigned long long)fallbacks_end);
	ck_assert_msg(harness_file_contains(m.log, "workers=1"),
		      "the mount did not follow the membership");
	mount_stop(&m);
}
END_TEST

/* Mount-time failures exit non-zero with a message naming the cause. */
START_TEST(test_cluster_mount_errors_name_the_cause)
{
	const char *bad_meta[] = { "--meta.address", "127.0.0.1:1", NULL };
	const char *no_cred[] = { "--store.credentials_file", "/nonexistent/granary/credentials",
				  NULL };
	/* The csi role's key presented as the mount role's. */
	const char *wrong_key[] = { "--meta.key_file", keys.csi, NULL };
	struct mnt m;

	ck_assert_int_ne(mount_start(&m, "no-such-dataset", NULL, "unknown"), 0);
	ck_assert_msg(harness_file_contains(m.log, "no-such-dataset"), "log does not name the dataset");
	ck_assert_int_ne(mount_start(&m, DATASET, bad_meta, "nometa"), 0);
	ck_assert_msg(harness_file_contains(m.log, "127.0.0.1:1"), "log does not name the address");
	ck_assert_int_ne(mount_start(&m, DATASET, wrong_key, "wrongkey"), 0);
	ck_assert_msg(harness_file_contains(m.log, "signature of role 'mount' does not match"),
		      "log does not say the signature was refused");
	ck_assert_int_ne(mount_start(&m, DATASET, no_cred, "nocred"), 0);
	ck_assert_msg(harness_file_contains(m.log, "/nonexistent/granary/credentials"),
		      "log does not name the file");
}
END_TEST

static bool preload_done(void *arg)
{
	char *json = NULL;
	bool done;

	done = http_get(((struct worker *)arg)->port, "/v1/preload/1", &json) == 200 &&
	       strstr(json, "\"state\":\"done\"") != NULL;
	free(json);
	return done;
}

/*
 * The workers follow meta's registry: a new dataset with options.preload
 * is taken and preloaded, a deleted one is dropped, a dataset put over
 * HTTP is left alone; with meta down they keep serving (one warning), and
 * they join again when it is back.
 */
START_TEST(test_cluster_workers_follow_meta_and_survive_its_outage)
{
	static const char put_body[] = "{\"source\":\"s3://" BUCKET "/elsewhere/\"}";
	struct meta_client *c;
	struct spec sp;
	struct error err;
	char *json = NULL, path[200], auth[TOKEN_HEADER_MAX + 32] = "Authorization: ";
	struct curl_slist *hdrs;
	struct harness_body resp = { .buf = NULL };
	long status = 0;
	CURL *h;

	/* a dataset put over HTTP on worker 1 */
	h = curl_easy_init();
	snprintf(path, sizeof(path), "http://127.0.0.1:%d/v1/datasets/local-only", workers[0].port);
	ck_assert_int_eq(token_sign(tok, "PUT", "/v1/datasets/local-only", "", (int64_t)time(NULL),
				    auth + 15, sizeof(auth) - 15), ERR_OK);
	hdrs = curl_slist_append(NULL, auth);
	curl_easy_setopt(h, CURLOPT_URL, path);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, put_body);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, harness_body_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
	ck_assert_int_eq(curl_easy_perform(h), CURLE_OK);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	ck_assert_msg(status == 201, "PUT local-only: %ld %s", status, resp.buf ? resp.buf : "");
	free(resp.buf);

	/* a second meta dataset, preloaded by the workers: each block by its
	 * owner */
	spec_init(&sp, "warm");
	sp.o.preload = true;
	sp.o.pin = true;
	register_ok(&sp);
	ck_assert_msg(wait_for(all_have, "warm", 10000), "the workers did not take 'warm'");
	ck_assert(worker_has(&workers[0], "warm", &json));
	ck_assert_msg(strstr(json, "\"pin\":true") != NULL, "%s", json);
	free(json);
	for (int i = 0; i < NWORKERS; i++)
		ck_assert_msg(wait_for(preload_done, &workers[i], 20000),
			      "worker %s did not preload 'warm'", workers[i].id);
	ck_assert_msg(wait_for(one_owner_each, NULL, 10000),
		      "'warm' preloaded: w1 holds %ld blocks, w2 %ld, of %llu",
		      blocks_in(&workers[0]), blocks_in(&workers[1]),
		      (unsigned long long)total_blocks);

	/* deleted in meta: dropped by the workers; the HTTP one stays */
	c = meta_client();
	ck_assert_msg(meta_client_delete(c, "warm", &err) == ERR_OK, "%s", err.msg);
	meta_client_free(c);
	ck_assert_msg(wait_for(none_has, "warm", 10000), "the workers kept 'warm'");
	ck_assert(worker_has(&workers[0], "local-only", NULL));
	ck_assert(worker_has(&workers[0], DATASET, NULL));

	/* meta down for a while: both keep serving what they had */
	ck_assert_int_eq(proc_stop(&meta), 0);
	retry_sleep_ms(1500);
	for (int i = 0; i < NWORKERS; i++) {
		ck_assert_msg(worker_has(&workers[i], DATASET, NULL), "worker %s dropped '%s'",
			      workers[i].id, DATASET);
		ck_assert_int_eq(harness_file_count(workers[i].p.log, "granary-meta unreachable"), 1);
	}
	/* meta back (same data dir): the workers join again */
	meta_start();
	ck_assert_msg(wait_for(all_joined, (void *)(uintptr_t)NWORKERS, 10000),
		      "the workers did not join the restarted meta");
	/* A worker may log it after the heartbeat that listed it (a round
	 * whose ListDatasets failed): polled. */
	for (int i = 0; i < NWORKERS; i++)
		ck_assert_msg(wait_for(all_have, DATASET, 5000) &&
				      wait_log(workers[i].p.log, "granary-meta reachable again",
					       5000),
			      "worker %s did not log meta's return within 5 s", workers[i].id);
}
END_TEST

/*
 * A mount can ask a worker for a dataset meta registered after the
 * worker's last round (every heartbeat interval: 5 s here): the worker
 * asks meta then and there rather than answering 404, which would send
 * the mount to the store for every block read until the next round. A
 * name meta does not have is still 404, without waiting past the round.
 */
START_TEST(test_cluster_worker_serves_a_dataset_registered_since_its_last_round)
{
	struct store_config cfg = { .endpoint = endpoint, .credentials_file = credentials,
				    .request_timeout_ms = 10000 };
	struct store *st = NULL;
	struct store_object info;
	struct spec sp;
	struct error err;
	char key[300], etag[128];
	uint64_t ms = 0;
	long status;

	ck_assert_msg(store_open("s3://" BUCKET, &cfg, &st, &err) == ERR_OK, "%s", err.msg);
	snprintf(key, sizeof(key), "%s%s", prefix, objects[0].key);
	ck_assert_msg(store_head(st, key, &info, &err) == ERR_OK, "%s", err.msg);
	snprintf(etag, sizeof(etag), "%s", info.etag);
	store_object_release(&info);
	store_free(st);

	/* meta again, with rounds 5 s apart; the workers join it */
	ck_assert_int_eq(proc_stop(&meta), 0);
	meta_interval = "5s";
	meta_expiry = "20s";
	meta_start();
	ck_assert_msg(wait_for(all_joined, (void *)(uintptr_t)NWORKERS, 10000),
		      "the workers did not join the restarted meta");
	/* right after a round of worker 1's */
	retry_sleep_ms(300);
	spec_init(&sp, "late");
	register_ok(&sp);
	status = block_get(workers[0].port, "late", objects[0].key, etag, &ms);
	ck_assert_msg(status == 200, "block of 'late': status %ld after %llu ms", status,
		      (unsigned long long)ms);
	ck_assert_msg(ms < 3000, "block of 'late' took %llu ms", (unsigned long long)ms);
	status = block_get(workers[0].port, "never", objects[0].key, etag, &ms);
	ck_assert_int_eq(status, 404);
	ck_assert_msg(ms < 2000, "404 for 'never' took %llu ms", (unsigned long long)ms);
}
END_TEST

/* Blocks cached by all the workers, once two counts 300 ms apart agree. */
static long settled_blocks(void)
{
	long n = -1, last = -2;

	for (int i = 0; i < 50 && n != last; i++) {
		last = n;
		retry_sleep_ms(300);
		n = 0;
		for (int w = 0; w < NWORKERS; w++)
			n += blocks_in(&workers[w]);
	}
	return n;
}

/* Reads small/fNN.bin of the 'smalls' dataset through m and checks it. */
static void small_read_check(const struct mnt *m, int f)
{
	unsigned char want[1100], got[1100];
	char path[600];
	int fd;

	harness_fill(want, sizeof(want), 500 + (uint64_t)f);
	snprintf(path, sizeof(path), "%s/small/f%02d.bin", m->dir, f);
	fd = open(path, O_RDONLY);
	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	ck_assert_int_eq(read(fd, got, sizeof(got)), 1000 + f);
	ck_assert_msg(memcmp(got, want, (size_t)(1000 + f)) == 0, "f%02d read wrong bytes", f);
	close(fd);
}

/*
 * With meta, a second small file read from a worker in one directory
 * makes the mount ask the workers for the next prefetch.files files of it
 * (each owner caches its own), and no more; with prefetch.files 0 only
 * what was read is cached. Forty files of 1,000-1,039 bytes under
 * small/ in a dataset of their own (a prefix beside the main one).
 */
START_TEST(test_cluster_small_file_misses_prefetch_the_next_files_through_the_workers)
{
	struct store_config cfg = { .endpoint = endpoint, .credentials_file = credentials,
				    .request_timeout_ms = 10000 };
	const char *none[] = { "--prefetch.files", "0", NULL };
	const char *some[] = { "--prefetch.files", "16", NULL };
	const char *const *extras[] = { none, some };
	/* read: f10 and f15, then f20 and f21; the second read of round 1
	 * prefetches f22-f37 */
	const int first[] = { 10, 20 }, second[] = { 15, 21 };
	const long want[] = { 2, 2 + 16 };
	char key[300], uri[300];
	struct store *st = NULL;
	struct spec sp;
	struct error err;
	unsigned char buf[1100];

	ck_assert_msg(store_open("s3://" BUCKET, &cfg, &st, &err) == ERR_OK, "%s", err.msg);
	for (int i = 0; i < 40; i++) {
		harness_fill(buf, sizeof(buf), 500 + (uint64_t)i);
		/* beside the main dataset's prefix, not under it */
		snprintf(key, sizeof(key), "%.*s-smalls/small/f%02d.bin", (int)strlen(prefix) - 1,
			 prefix, i);
		ck_assert_msg(store_put(st, key, buf, 1000 + (size_t)i, &err) == ERR_OK, "%s",
			      err.msg);
	}
	store_free(st);
	snprintf(uri, sizeof(uri), "%.*s-smalls/", (int)strlen(source_uri) - 1, source_uri);
	spec_init(&sp, "smalls");
	sp.s.source_uri = uri;
	{
		struct meta_client *c = meta_client();
		Granary__V1__Dataset *d = NULL;

		ck_assert_msg(meta_client_register(c, &sp.s, &d, &err) == ERR_OK, "%s", err.msg);
		granary__v1__dataset__free_unpacked(d, NULL);
		meta_client_free(c);
	}
	ck_assert_msg(wait_for(all_have, "smalls", 10000), "the workers did not take 'smalls'");
	for (int round = 0; round < 2; round++) {
		struct mnt m;
		long before = settled_blocks(), after;

		ck_assert_int_eq(mount_start(&m, "smalls", extras[round], round ? "pf16" : "pf0"), 0);
		for (int k = 0; k < 2; k++)
			small_read_check(&m, k ? second[round] : first[round]);
		after = settled_blocks();
		ck_assert_msg(after - before == want[round], "round %d: %ld blocks cached, %ld before",
			      round, after, before);
		if (round == 1) {
			/* The prefetched files read exact, from the node's
			 * directory or their owner, with no fetch of their
			 * own. Reads within half of prefetch.files of f37
			 * ask for the next files, the directory's last two,
			 * f38 and f39: each file fetched once. */
			uint64_t served = mount_stat(&m, "blocks_local") + mount_stat(&m, "blocks_peer");

			for (int f = 22; f < 38; f++)
				small_read_check(&m, f);
			ck_assert_uint_eq(mount_stat(&m, "blocks_local") +
						  mount_stat(&m, "blocks_peer") - served, 16);
			ck_assert_uint_eq(mount_stat(&m, "blocks_store"), 0);
			ck_assert_uint_eq(mount_stat(&m, "fallbacks"), 0);
			ck_assert_int_eq(settled_blocks(), after + 2);
		}
		mount_stop(&m);
	}
}
END_TEST

enum corrupt_read { READ_BUFFERED, READ_DIRECT, READ_NEW_MOUNT };

/*
 * Blocks corrupted on disk after they were first served: the workers in
 * mask (bit i: worker i + 1) get a byte of every block file flipped, then
 * every object is read again, by how, and must come back exact. Worker 1's
 * blocks reach the mount by its short-circuit read of worker 1's cache
 * directory, worker 2's over the peer protocol. Each mismatch is counted
 * by the mount and by the owning worker, which drops the block and
 * fetches it again (a third pass needs no check to fail); warnings are
 * rate limited.
 */
static void corrupt_then_read(unsigned mask, enum corrupt_read how, const char *label)
{
	static const char *const names[] = { "buffered", "O_DIRECT", "new-mount" };
	struct mnt m, m2, *reader = &m;
	uint64_t before[NWORKERS], after[NWORKERS], seen;
	long flipped_n[NWORKERS] = { 0 };
	char label2[64];

	ck_assert_int_eq(mount_start(&m, DATASET, NULL, label), 0);
	read_all_exact(&m);
	for (int i = 0; i < NWORKERS; i++) {
		before[i] = metric(&workers[i], "granary_worker_corrupt_total");
		if (mask & (1u << i))
			flipped_n[i] = corrupt_blocks(&workers[i]);
		ck_assert_msg(!(mask & (1u << i)) || flipped_n[i] > 0,
			      "worker %s holds no block to corrupt", workers[i].id);
	}
	if (how == READ_NEW_MOUNT) {
		snprintf(label2, sizeof(label2), "%s-2", label);
		ck_assert_int_eq(mount_start(&m2, DATASET, NULL, label2), 0);
		reader = &m2;
	}
	for (size_t i = 0; i < NOBJ; i++) {
		int rc = read_object_with(reader, i, how == READ_DIRECT ? O_DIRECT : 0, true);

		ck_assert_msg(rc == 0, "%s read of '%s' after corruption: %s", names[how],
			      objects[i].key, rc > 0 ? "bytes differ" : strerror(-rc));
	}
	seen = mount_stat(reader, "corrupt_blocks");
	for (int i = 0; i < NWORKERS; i++)
		after[i] = metric(&workers[i], "granary_worker_corrupt_total");
	fprintf(stderr,
		"cluster: corrupt (%s): %ld + %ld blocks flipped; mount seen %llu, w1 +%llu, w2 +%llu\n",
		names[how], flipped_n[0], flipped_n[1], (unsigned long long)seen,
		(unsigned long long)(after[0] - before[0]), (unsigned long long)(after[1] - before[1]));
	ck_assert_msg(seen >= (uint64_t)(flipped_n[0] + flipped_n[1]),
		      "the mount seen %llu corrupt blocks of %ld", (unsigned long long)seen,
		      flipped_n[0] + flipped_n[1]);
	/* the owners dropped them (short-circuit: the mount asked worker 1 to
	 * check its copy; peer: worker 2's bytes failed the checksums it sent) */
	for (int i = 0; i < NWORKERS; i++)
		ck_assert_msg(after[i] - before[i] >= (uint64_t)flipped_n[i],
			      "worker %s dropped %llu of %ld corrupt blocks", workers[i].id,
			      (unsigned long long)(after[i] - before[i]), flipped_n[i]);
	/* fetched again: good copies now, nothing more to count */
	for (size_t i = 0; i < NOBJ; i++)
		ck_assert_int_eq(read_object(reader, i, true), 0);
	ck_assert_uint_eq(mount_stat(reader, "corrupt_blocks"), seen);
	ck_assert_int_ge(harness_file_count(reader->log, "failed its checksum"), 1);
	ck_assert_msg(harness_file_count(reader->log, "failed its checksum") <= 2,
		      "%d corruption warnings in the mount's log for %llu blocks: not rate limited",
		      harness_file_count(reader->log, "failed its checksum"),
		      (unsigned long long)seen);
	for (int i = 0; i < NWORKERS; i++)
		ck_assert_msg(harness_file_count(workers[i].p.log, "failed its checksum") <= 2,
			      "worker %s logged %d corruption warnings: not rate limited",
			      workers[i].id, harness_file_count(workers[i].p.log, "failed its checksum"));
	if (how == READ_NEW_MOUNT)
		mount_stop(&m2);
	mount_stop(&m);
}

START_TEST(test_cluster_corrupt_local_block_is_not_served)
{
	corrupt_then_read(1u << 0, READ_BUFFERED, "corrupt-local");
}
END_TEST

START_TEST(test_cluster_corrupt_peer_block_is_not_served)
{
	corrupt_then_read(1u << 1, READ_BUFFERED, "corrupt-peer");
}
END_TEST

START_TEST(test_cluster_corrupt_block_is_not_served_to_o_direct)
{
	corrupt_then_read(3u, READ_DIRECT, "corrupt-direct");
}
END_TEST

START_TEST(test_cluster_corrupt_block_is_not_served_to_a_new_mount)
{
	corrupt_then_read(3u, READ_NEW_MOUNT, "corrupt-new");
}
END_TEST

/*
 * Object i through the mount with O_DIRECT (every read reaches the
 * daemon), 1 MiB at a time, byte-exact; *longest gets the longest single
 * read in ms. Stops at the first read slower than give_up_ms. Returns as
 * compare_object.
 */
static int read_object_timed(const struct mnt *m, size_t i, uint64_t give_up_ms, uint64_t *longest)
{
	static const size_t chunk = 1u << 20;
	char path[600];
	void *buf = NULL;
	size_t off = 0;
	int fd, rc = 0;

	snprintf(path, sizeof(path), "%s/%s", m->dir, objects[i].key);
	fd = open(path, O_RDONLY | O_DIRECT);
	if (fd < 0)
		return -errno;
	ck_assert_int_eq(posix_memalign(&buf, 4096, chunk), 0);
	for (;;) {
		uint64_t t0 = retry_now_ms(), ms;
		ssize_t n = pread(fd, buf, chunk, (off_t)off);

		ms = retry_now_ms() - t0;
		if (ms > *longest)
			*longest = ms;
		if (n < 0) {
			rc = -errno;
			break;
		}
		if (n == 0 || ms > give_up_ms)
			break;
		if (off + (size_t)n > objects[i].size || memcmp(buf, data[i] + off, (size_t)n) != 0) {
			rc = 1;
			break;
		}
		off += (size_t)n;
	}
	if (rc == 0 && off != objects[i].size && *longest <= give_up_ms)
		rc = 1;
	free(buf);
	close(fd);
	return rc;
}

/*
 * One pass of every object, O_DIRECT, through a new mount (extra flags as
 * mount_start's) while worker 2 is stopped with SIGSTOP; worker 2 is
 * continued and has joined meta again when it returns. Fails on a failed
 * read or wrong bytes; prints and returns the longest read in ms.
 */
static uint64_t read_with_worker_stopped(const char *label, const char *const *extra,
					 uint64_t bound_ms, const char *expect_log)
{
	uint64_t longest = 0, t0, total, fallbacks;
	struct mnt m;

	ck_assert_int_eq(mount_start(&m, DATASET, extra, label), 0);
	read_all_exact(&m);
	ck_assert_int_eq(kill(workers[1].p.pid, SIGSTOP), 0);
	t0 = retry_now_ms();
	for (size_t i = 0; i < NOBJ && longest <= bound_ms; i++) {
		int rc = read_object_timed(&m, i, bound_ms, &longest);

		ck_assert_msg(rc == 0 || longest > bound_ms, "'%s' with worker 2 stopped: %s",
			      objects[i].key, rc > 0 ? "bytes differ" : strerror(-rc));
	}
	total = retry_now_ms() - t0;
	kill(workers[1].p.pid, SIGCONT);
	fallbacks = mount_stat(&m, "fallbacks");
	fprintf(stderr, "cluster: worker 2 stopped (SIGSTOP), %s: longest read %llu ms, every object "
			"in %llu ms, %llu fallbacks, abandoned because %s\n",
		label, (unsigned long long)longest, (unsigned long long)total,
		(unsigned long long)fallbacks,
		harness_file_contains(m.log, "the membership no longer lists it") ? "meta dropped it" :
		harness_file_contains(m.log, "its /healthz did not answer") ? "no answer, no /healthz" :
		"?");
	if (fallbacks == 0 || (expect_log && !harness_file_contains(m.log, expect_log)))
		harness_dump_log(m.log);
	ck_assert_msg(longest <= bound_ms, "a read waited %llu ms for the stopped worker",
		      (unsigned long long)longest);
	ck_assert_uint_gt(fallbacks, 0);
	if (expect_log)
		ck_assert_msg(harness_file_contains(m.log, expect_log), "the mount did not log '%s'",
			      expect_log);
	mount_stop(&m);
	ck_assert_msg(wait_for(all_joined, (void *)(uintptr_t)NWORKERS, 10000),
		      "worker 2 did not join meta again after SIGCONT");
	return longest;
}

/*
 * A worker stopped with SIGSTOP (alive to TCP, answering nothing): the
 * readers of the blocks it owns wait at most worker.first_byte_timeout
 * plus one /healthz probe (worker.timeout) and the progress callback's
 * tick, not worker.request_timeout (30 s), and the store serves them;
 * later blocks pass it over at once (circuit breaker); no read fails and
 * every byte is right. First with a mount that does not follow meta
 * (membership.refresh 10 min: only the timeouts help), then with one that
 * does (meta drops the worker after 1 s: the request in flight to it is
 * abandoned then). Worker 2 is stopped: the mount runs on worker 1's node,
 * whose blocks it reads from the cache directory.
 */
START_TEST(test_cluster_stopped_worker_stalls_readers_briefly)
{
	const char *frozen[] = { "--membership.refresh", "600s", NULL };

	read_with_worker_stopped("sigstop-frozen", frozen, 4000, "worker stopped answering");
	read_with_worker_stopped("sigstop-follows", NULL, 4000, NULL);
}
END_TEST

/*
 * A worker killed and started again on its cache directory comes back with
 * the blocks it held, while the peer that owned them in its absence
 * fetched and kept them too. Once the membership has settled
 * (placement.settle, 1 s here) each block has one owner again: the peer
 * drops its copies of the blocks placement gives back (counted and
 * logged), and a pass through a new mount asks the store for nothing.
 * The mount that passed the dead worker over (worker.skip, 10 s) asks it
 * again as soon as the membership lists it again: its blocks do not go
 * to the store meanwhile.
 */
START_TEST(test_cluster_restarted_worker_leaves_each_block_one_owner)
{
	struct mnt m, m2;
	uint64_t req[NWORKERS], fallbacks, served;
	struct metric_wait dropped = { .w = &workers[0],
				       .name = "granary_worker_unowned_dropped_total" };
	long held[NWORKERS];
	int status;

	ck_assert_int_eq(mount_start(&m, DATASET, NULL, "before-restart"), 0);
	read_all_exact(&m);
	ck_assert_int_eq(blocks_in(&workers[0]) + blocks_in(&workers[1]), (long)total_blocks);

	/* worker 2 away: the mount passes it over, then (meta dropped it)
	 * worker 1 owns every block and fetches worker 2's */
	kill(workers[1].p.pid, SIGKILL);
	ck_assert_int_eq(waitpid(workers[1].p.pid, &status, 0), workers[1].p.pid);
	workers[1].p.pid = 0;
	for (size_t i = 0; i < NOBJ; i++)
		ck_assert_int_eq(read_object(&m, i, true), 0);
	ck_assert_uint_gt(mount_stat(&m, "fallbacks"), 0);
	ck_assert_msg(harness_file_contains(m.log, "worker stopped answering"),
		      "the mount did not pass the dead worker over");
	ck_assert_msg(wait_for(all_joined, (void *)(uintptr_t)1, 10000),
		      "meta did not drop the killed worker");
	retry_sleep_ms(600); /* the mount follows */
	for (size_t i = 0; i < NOBJ; i++)
		ck_assert_int_eq(read_object(&m, i, true), 0);
	ck_assert_int_eq(blocks_in(&workers[0]), (long)total_blocks);

	/* back, with what its directory held: every block of worker 2's is
	 * held twice until the membership settles */
	worker_start(&workers[1], 1);
	ck_assert_msg(wait_for(all_joined, (void *)(uintptr_t)NWORKERS, 10000),
		      "the restarted worker did not join");
	held[0] = blocks_in(&workers[0]);
	held[1] = blocks_in(&workers[1]);
	ck_assert_msg(held[1] > 0, "the restarted worker holds no block");
	ck_assert_msg(wait_for(one_owner_each, NULL, 10000),
		      "blocks held twice 10 s after the restart: w1 %ld, w2 %ld, %llu blocks",
		      blocks_in(&workers[0]), blocks_in(&workers[1]),
		      (unsigned long long)total_blocks);
	/* worker 1 counts and logs the drop after its last unlink
	 * (blockstore_drop_unless, cache/worker_meta.c): polled */
	dropped.want = (uint64_t)held[1];
	ck_assert_msg(wait_for(metric_is, &dropped, 5000),
		      "worker 1 counted %llu blocks dropped 5 s after each block had one owner, "
		      "not the %llu worker 2 held",
		      (unsigned long long)dropped.seen, (unsigned long long)dropped.want);
	fprintf(stderr, "cluster: restart: held w1 %ld + w2 %ld of %llu blocks at the rejoin, then "
			"w1 %ld + w2 %ld; w1 dropped %llu\n",
		held[0], held[1], (unsigned long long)total_blocks, blocks_in(&workers[0]),
		blocks_in(&workers[1]), (unsigned long long)dropped.seen);
	ck_assert_uint_eq(metric(&workers[1], "granary_worker_unowned_dropped_total"), 0);
	ck_assert_msg(wait_log(workers[0].p.log, "dropped cached blocks another worker owns", 5000),
		      "worker 1 did not log what it dropped within 5 s");

	/* the first mount asks worker 2 again for its blocks, well within
	 * worker.skip of the kill */
	fallbacks = mount_stat(&m, "fallbacks");
	served = metric(&workers[1], "granary_worker_served_bytes_total");
	for (size_t i = 0; i < NOBJ; i++)
		ck_assert_int_eq(read_object(&m, i, true), 0);
	ck_assert_msg(mount_stat(&m, "fallbacks") == fallbacks,
		      "the mount still passed the restarted worker over: %llu more fallbacks",
		      (unsigned long long)(mount_stat(&m, "fallbacks") - fallbacks));
	ck_assert_uint_gt(metric(&workers[1], "granary_worker_served_bytes_total"), served);
	ck_assert_msg(harness_file_contains(m.log, "worker back in the membership"),
		      "the mount did not log the worker's return");
	mount_stop(&m);

	for (int i = 0; i < NWORKERS; i++)
		req[i] = metric(&workers[i], "granary_worker_store_requests_total");
	ck_assert_int_eq(mount_start(&m2, DATASET, NULL, "after-restart"), 0);
	read_all_exact(&m2);
	for (int i = 0; i < NWORKERS; i++)
		ck_assert_msg(metric(&workers[i], "granary_worker_store_requests_total") == req[i],
			      "worker %s asked the store after the handover", workers[i].id);
	ck_assert_uint_eq(mount_stat(&m2, "fallbacks"), 0);
	mount_stop(&m2);
}
END_TEST

/* --- preload ----------------------------------------------------------------- */

/* The blocks of some objects as the workers of the "preload" case key
 * them (their store endpoint is the proxy's): where each is cached. */
struct layout {
	size_t n;
	uint8_t (*hash)[BLOCK_HASH_LEN];
};

/* The layout of objs (keys under pfx), their ETags asked of the store. */
static void layout_make(struct layout *l, const char *pfx, const struct object *objs, size_t nobj)
{
	struct store_config cfg = { .endpoint = endpoint, .credentials_file = credentials,
				    .request_timeout_ms = 10000 };
	char *key_endpoint = block_key_endpoint("s3", proxy_endpoint, NULL);
	struct store *st = NULL;
	struct error err;
	size_t at = 0;

	ck_assert_ptr_nonnull(key_endpoint);
	ck_assert_msg(store_open("s3://" BUCKET, &cfg, &st, &err) == ERR_OK, "%s", err.msg);
	l->n = 0;
	for (size_t i = 0; i < nobj; i++)
		l->n += (objs[i].size + BS - 1) / BS;
	l->hash = calloc(l->n, sizeof(*l->hash));
	ck_assert_ptr_nonnull(l->hash);
	for (size_t i = 0; i < nobj; i++) {
		struct store_object info;
		char key[300];

		snprintf(key, sizeof(key), "%s%s", pfx, objs[i].key);
		ck_assert_msg(store_head(st, key, &info, &err) == ERR_OK, "%s", err.msg);
		for (uint64_t b = 0; b * BS < objs[i].size; b++)
			block_key_hash(&(struct block_key){ .endpoint = key_endpoint,
							    .bucket = BUCKET,
							    .object = key,
							    .etag = info.etag,
							    .block_size = BS,
							    .index = b },
				       l->hash[at++]);
		store_object_release(&info);
	}
	store_free(st);
	free(key_endpoint);
}

/* owner[b]: the index in workers of block b's owner by the membership
 * meta lists now, as a mount computes it. */
static void layout_owners(const struct layout *l, int *owner)
{
	struct meta_client *c = meta_client();
	Granary__V1__ListWorkersReply *r = NULL;
	struct placement_worker w[WORKERS_MAX];
	struct placement *p = NULL;
	struct error err;

	ck_assert_msg(meta_client_list_workers(c, &r, &err) == ERR_OK, "%s", err.msg);
	ck_assert_uint_le(r->n_workers, WORKERS_MAX);
	for (size_t i = 0; i < r->n_workers; i++)
		w[i] = (struct placement_worker){ r->workers[i]->id, r->workers[i]->address };
	ck_assert_int_eq(placement_new(&p, &err), ERR_OK);
	ck_assert_int_eq(placement_update(p, w, r->n_workers, r->version, &err), ERR_OK);
	for (size_t b = 0; b < l->n; b++) {
		char addr[PLACEMENT_ADDRESS_MAX], id[64];

		ck_assert_int_eq(placement_owner(p, l->hash[b], addr, id, sizeof(id)), ERR_OK);
		owner[b] = -1;
		for (int i = 0; i < nworkers; i++)
			if (strcmp(workers[i].id, id) == 0)
				owner[b] = i;
	}
	placement_free(p);
	granary__v1__list_workers_reply__free_unpacked(r, NULL);
	meta_client_free(c);
}

static bool block_held(const struct worker *w, const uint8_t hash[BLOCK_HASH_LEN])
{
	char hex[BLOCK_HASH_HEX], path[400];

	block_hash_hex(hash, hex);
	snprintf(path, sizeof(path), "%s/blocks/%.2s/%s", w->cache, hex, hex);
	return access(path, F_OK) == 0;
}

/* Blocks of l that are not cached on exactly one live worker, their
 * owner. */
static size_t misplaced(const struct layout *l)
{
	int *owner = calloc(l->n, sizeof(*owner));
	size_t bad = 0;

	ck_assert_ptr_nonnull(owner);
	layout_owners(l, owner);
	for (size_t b = 0; b < l->n; b++) {
		for (int i = 0; i < nworkers; i++) {
			if (workers[i].p.pid > 0 &&
			    block_held(&workers[i], l->hash[b]) != (owner[b] == i)) {
				bad++;
				break;
			}
		}
	}
	free(owner);
	return bad;
}

static bool placed_once(void *arg)
{
	return misplaced(arg) == 0;
}

/* Blocks of l that worker i owns now. */
static size_t owned_by(const struct layout *l, int i)
{
	int *owner = calloc(l->n, sizeof(*owner));
	size_t n = 0;

	ck_assert_ptr_nonnull(owner);
	layout_owners(l, owner);
	for (size_t b = 0; b < l->n; b++)
		n += owner[b] == i;
	free(owner);
	return n;
}

/* The preload jobs of one dataset on a worker (GET /v1/preload/N for
 * N = 1, 2, ... until one is unknown). */
struct preloads {
	int n, failed;
	int last;                       /* the newest one's id; 0: none */
	char state[16];                 /* the newest one's */
	uint64_t blocks_total;          /* the newest one's */
};

static struct preloads preloads_of(const struct worker *w, const char *dataset)
{
	struct preloads ps = { 0 };

	for (int id = 1;; id++) {
		char path[64], *body = NULL;
		json_t *job;
		long status;

		snprintf(path, sizeof(path), "/v1/preload/%d", id);
		status = http_get(w->port, path, &body);
		job = status == 200 ? json_loads(body, 0, NULL) : NULL;
		free(body);
		if (status == 404)
			break;
		ck_assert_msg(job, "GET %s of worker %s: status %ld", path, w->id, status);
		if (strcmp(json_string_value(json_object_get(job, "dataset")), dataset) == 0) {
			ps.n++;
			ps.last = id;
			snprintf(ps.state, sizeof(ps.state), "%s",
				 json_string_value(json_object_get(job, "state")));
			ps.failed += strcmp(ps.state, "failed") == 0;
			ps.blocks_total =
				(uint64_t)json_integer_value(json_object_get(job, "blocks_total"));
		}
		json_decref(job);
	}
	return ps;
}

/* Every live worker's newest preload of dataset is done and newer than
 * after[i]. */
struct preload_wait {
	const char *dataset;
	int after[WORKERS_MAX];
};

static bool preloaded(void *arg)
{
	const struct preload_wait *pw = arg;

	for (int i = 0; i < nworkers; i++) {
		struct preloads ps;

		if (workers[i].p.pid <= 0)
			continue;
		ps = preloads_of(&workers[i], pw->dataset);
		if (ps.last <= pw->after[i] || strcmp(ps.state, "done") != 0)
			return false;
	}
	return true;
}

/* Every worker acts on a settled membership of all nworkers (its log says
 * so): no preload places blocks by a membership that is still forming. */
static bool all_settled(void *arg)
{
	char needle[96];

	snprintf(needle, sizeof(needle),
		 "msg=\"placement follows a settled membership\" workers=%d", nworkers);
	for (int i = 0; i < nworkers; i++)
		if (!harness_file_contains(workers[i].p.log, needle))
			return false;
	return true;
}

/* Store fetches of block data the live workers made, all together. */
static uint64_t fetches_all(void)
{
	uint64_t n = 0;

	for (int i = 0; i < nworkers; i++)
		if (workers[i].p.pid > 0)
			n += metric(&workers[i], "granary_worker_store_fetches_total");
	return n;
}

/* The main objects as the dataset 'warm' (options.preload) once every
 * worker has preloaded it: each block read from the store once. */
static void preload_warm(struct layout *l)
{
	struct preload_wait pw = { "warm", { 0 } };
	uint64_t bytes = 0, want_bytes = 0, fetched, totals = 0;
	struct spec sp;

	ck_assert_msg(wait_for(all_settled, NULL, 10000), "the workers' membership did not settle");
	layout_make(l, prefix, objects, NOBJ);
	spec_init(&sp, "warm");
	sp.o.preload = true;
	register_ok(&sp);
	ck_assert_msg(wait_for(preloaded, &pw, 30000), "the workers did not preload 'warm'");
	fetched = fetches_all();
	for (int i = 0; i < nworkers; i++) {
		struct preloads ps = preloads_of(&workers[i], "warm");

		bytes += metric(&workers[i], "granary_worker_store_bytes_total");
		totals += ps.blocks_total;
		fprintf(stderr, "cluster: preload: %s fetched %llu blocks, holds %ld, "
				"its job %d of %llu blocks\n",
			workers[i].id,
			(unsigned long long)metric(&workers[i],
						   "granary_worker_store_fetches_total"),
			blocks_in(&workers[i]), ps.last, (unsigned long long)ps.blocks_total);
	}
	for (size_t i = 0; i < NOBJ; i++)
		want_bytes += objects[i].size;
	fprintf(stderr, "cluster: preload of %llu blocks (%llu bytes) by %d workers: "
			"%llu store fetches (%.2fx), %llu bytes, "
			"%zu blocks not on exactly their owner\n",
		(unsigned long long)total_blocks, (unsigned long long)want_bytes, nworkers,
		(unsigned long long)fetched, (double)fetched / (double)total_blocks,
		(unsigned long long)bytes, misplaced(l));
	ck_assert_msg(fetched == total_blocks, "%llu store fetches for %llu blocks",
		      (unsigned long long)fetched, (unsigned long long)total_blocks);
	ck_assert_uint_eq(bytes, want_bytes);
	/* the progress meta sums over the nodes adds up to the dataset */
	ck_assert_uint_eq(totals, total_blocks);
	ck_assert_uint_eq(misplaced(l), 0);
}

/*
 * Three workers preload a dataset (options.preload): each fetches only the
 * blocks placement gives it, so the store is read once per block (1.0x,
 * not 3x), and every block is cached on the worker the mounts ask for it.
 */
START_TEST(test_cluster_preload_reads_each_block_once_onto_its_owner)
{
	struct layout l;

	preload_warm(&l);
	free(l.hash);
}
END_TEST

/*
 * The membership changes after a preload. Worker 3 dies: once the
 * membership without it has settled, workers 1 and 2 preload again and
 * fetch exactly the blocks that were worker 3's, nothing else. Worker 3
 * comes back on its cache directory: it fetches nothing (it holds its
 * blocks), the others drop their copies of them, fetch nothing either and
 * start no preload (a worker joining only takes blocks from them).
 */
START_TEST(test_cluster_preload_follows_a_worker_leaving_and_coming_back)
{
	struct preload_wait pw = { "warm", { 0 } };
	uint64_t before, after_leave;
	size_t owned3;
	struct layout l;
	int status;

	preload_warm(&l);
	owned3 = owned_by(&l, 2);
	ck_assert_uint_gt(owned3, 0);
	for (int i = 0; i < nworkers; i++)
		pw.after[i] = preloads_of(&workers[i], "warm").last;

	kill(workers[2].p.pid, SIGKILL);
	ck_assert_int_eq(waitpid(workers[2].p.pid, &status, 0), workers[2].p.pid);
	workers[2].p.pid = 0;
	before = fetches_all(); /* workers 1 and 2 */
	ck_assert_msg(wait_for(all_joined, (void *)(uintptr_t)2, 10000),
		      "meta did not drop the killed worker");
	ck_assert_msg(wait_for(placed_once, &l, 20000),
		      "worker 3's blocks were not preloaded by their new owners: %zu misplaced",
		      misplaced(&l));
	ck_assert_msg(wait_for(preloaded, &pw, 20000), "workers 1 and 2 did not preload again");
	after_leave = fetches_all();
	fprintf(stderr, "cluster: preload: worker 3 left: %zu of its blocks, %llu fetched again\n",
		owned3, (unsigned long long)(after_leave - before));
	ck_assert_uint_eq(after_leave - before, owned3);

	/* workers 1 and 2: their newest job stands */
	for (int i = 0; i < nworkers; i++)
		pw.after[i] = i == 2 ? 0 : preloads_of(&workers[i], "warm").last - 1;
	worker_start(&workers[2], 2);
	ck_assert_msg(wait_for(all_joined, (void *)(uintptr_t)3, 10000),
		      "the restarted worker did not join");
	ck_assert_msg(wait_for(preloaded, &pw, 20000), "worker 3 did not preload");
	ck_assert_msg(wait_for(placed_once, &l, 10000),
		      "blocks not on exactly their owner after worker 3 came back: %zu",
		      misplaced(&l));
	/* Workers 1 and 2 have swept by the membership with worker 3: three
	 * rounds (200 ms each) later they have started no job. */
	retry_sleep_ms(600);
	for (int i = 0; i < 2; i++)
		ck_assert_msg(preloads_of(&workers[i], "warm").last == pw.after[i] + 1,
			      "worker %s preloaded again when worker 3 came back: job %d",
			      workers[i].id, preloads_of(&workers[i], "warm").last);
	fprintf(stderr, "cluster: preload: worker 3 back: it fetched %llu, the others %llu\n",
		(unsigned long long)metric(&workers[2], "granary_worker_store_fetches_total"),
		(unsigned long long)(fetches_all() -
				     metric(&workers[2], "granary_worker_store_fetches_total") -
				     after_leave));
	ck_assert_uint_eq(metric(&workers[2], "granary_worker_store_fetches_total"), 0);
	ck_assert_uint_eq(fetches_all(), after_leave);
	free(l.hash);
}
END_TEST

/*
 * A dataset deleted and registered again in meta between two of the
 * workers' rounds (here: with the workers stopped meanwhile) starts at
 * generation 1 again, with another listing: the new registration is
 * preloaded, not taken for the old one's. Its new object's blocks reach
 * their owners.
 */
START_TEST(test_cluster_preload_of_a_dataset_registered_again_runs_again)
{
	static const struct object again[] = {
		{ "a.bin", 5 * BS + 3 },
		{ "b.bin", 2 * BS },
		{ "c.bin", 7 * BS + 11 }, /* put before the second registration */
	};
	struct store_config cfg = { .endpoint = endpoint, .credentials_file = credentials,
				    .request_timeout_ms = 10000 };
	struct preload_wait pw = { "again", { 0 } };
	char pfx[200], uri[300], key[300];
	unsigned char *buf = calloc(1, 8 * BS);
	struct store *st = NULL;
	struct meta_client *c;
	struct layout l;
	struct spec sp;
	struct error err;

	ck_assert_ptr_nonnull(buf);
	ck_assert_msg(store_open("s3://" BUCKET, &cfg, &st, &err) == ERR_OK, "%s", err.msg);
	snprintf(pfx, sizeof(pfx), "%.*s-again/", (int)strlen(prefix) - 1, prefix);
	snprintf(uri, sizeof(uri), "s3://" BUCKET "/%s", pfx);
	for (size_t i = 0; i < 2; i++) {
		snprintf(key, sizeof(key), "%s%s", pfx, again[i].key);
		harness_fill(buf, again[i].size, 77 + i);
		ck_assert_msg(store_put(st, key, buf, again[i].size, &err) == ERR_OK, "%s",
			      err.msg);
	}
	ck_assert_msg(wait_for(all_settled, NULL, 10000), "the workers' membership did not settle");
	spec_init(&sp, "again");
	sp.s.source_uri = uri;
	sp.o.preload = true;
	register_files(&sp, 2);
	ck_assert_msg(wait_for(preloaded, &pw, 30000), "the workers did not preload 'again'");

	snprintf(key, sizeof(key), "%s%s", pfx, again[2].key);
	harness_fill(buf, again[2].size, 79);
	ck_assert_msg(store_put(st, key, buf, again[2].size, &err) == ERR_OK, "%s", err.msg);
	store_free(st);
	free(buf);
	for (int i = 0; i < nworkers; i++) {
		pw.after[i] = preloads_of(&workers[i], "again").last;
		ck_assert_int_eq(kill(workers[i].p.pid, SIGSTOP), 0);
	}
	c = meta_client();
	ck_assert_msg(meta_client_delete(c, "again", &err) == ERR_OK, "%s", err.msg);
	meta_client_free(c);
	register_files(&sp, 3);
	for (int i = 0; i < nworkers; i++)
		ck_assert_int_eq(kill(workers[i].p.pid, SIGCONT), 0);
	ck_assert_msg(wait_for(preloaded, &pw, 20000),
		      "the dataset registered again was not preloaded: newest jobs %d, %d, %d",
		      preloads_of(&workers[0], "again").last,
		      preloads_of(&workers[1], "again").last,
		      preloads_of(&workers[2], "again").last);
	layout_make(&l, pfx, again, 3);
	ck_assert_msg(wait_for(placed_once, &l, 10000), "%zu blocks of 'again' misplaced",
		      misplaced(&l));
	fprintf(stderr, "cluster: preload: 'again' registered again: jobs %d, %d, %d "
			"after %d, %d, %d\n",
		preloads_of(&workers[0], "again").last, preloads_of(&workers[1], "again").last,
		preloads_of(&workers[2], "again").last, pw.after[0], pw.after[1], pw.after[2]);
	free(l.hash);
}
END_TEST

/* Every worker has two failed preloads of dataset arg at least. */
static bool failed_twice(void *arg)
{
	for (int i = 0; i < nworkers; i++)
		if (preloads_of(&workers[i], arg).failed < 2)
			return false;
	return true;
}

/*
 * A preload that fails (the store does not answer: the workers' proxy to
 * it is stalled) starts again by itself, after 1-2 s, then 2-4 s, ...
 * (each failure logged once, with its cause), and once the store answers
 * again it ends done, each block read from the store once.
 */
START_TEST(test_cluster_failed_preload_starts_again_with_a_backoff)
{
	static const char failed[] = "msg=\"preload failed; it starts again\" dataset=flaky";
	struct preload_wait pw = { "flaky", { 0 } };
	struct spec sp;

	ck_assert_msg(wait_for(all_settled, NULL, 10000), "the workers' membership did not settle");
	harness_proxy_stall(store_proxy, 1);
	spec_init(&sp, "flaky");
	sp.o.preload = true;
	register_ok(&sp);
	ck_assert_msg(wait_for(failed_twice, "flaky", 30000),
		      "the failed preloads were not started again: %d, %d, %d jobs",
		      preloads_of(&workers[0], "flaky").n, preloads_of(&workers[1], "flaky").n,
		      preloads_of(&workers[2], "flaky").n);
	harness_proxy_stall(store_proxy, 0);
	ck_assert_msg(wait_for(preloaded, &pw, 30000), "the preload of 'flaky' did not end done");
	for (int i = 0; i < nworkers; i++) {
		struct preloads ps = preloads_of(&workers[i], "flaky");
		unsigned long long delay[2] = { 0, 0 };
		char line[4096];
		FILE *f = fopen(workers[i].p.log, "r");
		int k = 0;

		ck_assert_ptr_nonnull(f);
		while (k < 2 && fgets(line, sizeof(line), f)) {
			const char *at = strstr(line, failed) ? strstr(line, "retry_in_ms=") : NULL;

			if (at && sscanf(at, "retry_in_ms=%llu", &delay[k]) == 1) {
				ck_assert_msg(strstr(line, "cause=\"list dataset 'flaky'"), "%s",
					      line);
				k++;
			}
		}
		fclose(f);
		fprintf(stderr, "cluster: preload: %s: %d jobs of 'flaky', %d failed (%d logged), "
				"first retries after %llu and %llu ms\n",
			workers[i].id, ps.n, ps.failed,
			harness_file_count(workers[i].p.log, failed), delay[0], delay[1]);
		/* each failure logged once, the last job done */
		ck_assert_int_ge(ps.failed, 2);
		ck_assert_int_eq(ps.n, ps.failed + 1);
		ck_assert_int_eq(harness_file_count(workers[i].p.log, failed), ps.failed);
		ck_assert_int_eq(k, 2);
		ck_assert(delay[0] >= 1000 && delay[0] <= 2000);
		ck_assert(delay[1] >= 2000 && delay[1] <= 4000);
	}
	ck_assert_uint_eq(fetches_all(), total_blocks);
}
END_TEST

/* nworkers workers, reaching the store through a proxy the test stalls. */
static void setup_preload(void)
{
	store_proxy = harness_proxy_start(harness_url_port(endpoint));
	snprintf(proxy_endpoint, sizeof(proxy_endpoint), "http://127.0.0.1:%d",
		 harness_proxy_port(store_proxy));
	nworkers = WORKERS_MAX;
	setup();
}

/* --- membership --------------------------------------------------------------- */

/* One worker, and an expiry (10 s) far longer than a leave takes. */
static void setup_membership(void)
{
	nworkers = 1;
	meta_expiry = "10s";
	setup();
}

/* Whether meta lists w1 at the address of the worker arg points to. */
static bool w1_at(void *arg)
{
	const struct worker *w = arg;
	char at[64], want[64];

	snprintf(want, sizeof(want), "127.0.0.1:%d", w->port);
	listed_address("w1", at, sizeof(at));
	return strcmp(at, want) == 0;
}

/* A poll of w's /readyz for needle, keeping its last answer. */
struct readyz_wait {
	const struct worker *w;
	const char *needle;
	char body[1024]; /* "HTTP <status> <body>" */
};

/* Whether the /readyz answer of the readyz_wait arg points to holds its needle. */
static bool readyz_says(void *arg)
{
	struct readyz_wait *r = arg;
	char *body = NULL;
	long status = http_get(r->w->port, "/readyz", &body);

	snprintf(r->body, sizeof(r->body), "HTTP %ld %s", status, body ? body : "");
	free(body);
	return strstr(r->body, r->needle) != NULL;
}

/*
 * One worker id, one process: a second granary-worker with w1's id at
 * another address (two pods of one node in a rolling update) is refused
 * while w1 runs, naming it, and is not ready; the membership keeps w1's
 * address (it flipped between the two at every heartbeat). It joins
 * about a second after w1's SIGTERM, w1 having left, not at meta's
 * expiry (10 s).
 */
START_TEST(test_cluster_second_process_of_a_worker_id_joins_when_the_first_leaves)
{
	struct worker *first = &workers[0], *twin = &workers[1];
	char held[160];
	struct readyz_wait rw = { .w = twin, .needle = held };
	uint64_t t0, ms;

	worker_start_as(twin, "w1", "w1-twin");
	nworkers = 2; /* teardown stops it */
	/* Its heartbeats (every second while refused) move nothing. */
	t0 = retry_now_ms();
	while (retry_now_ms() - t0 < 2500) {
		ck_assert_msg(w1_at(first), "meta lists w1 away from the first process");
		retry_sleep_ms(50);
	}
	snprintf(held, sizeof(held),
		 "worker id 'w1' is held by another live process at 127.0.0.1:%d (instance ",
		 first->port);
	ck_assert_msg(wait_for(readyz_says, &rw, 2000), "the twin's /readyz: %s", rw.body);
	ck_assert_msg(strncmp(rw.body, "HTTP 503 ", 9) == 0, "%s", rw.body);
	ck_assert_msg(strstr(rw.body, "refuses the heartbeat"), "%s", rw.body);
	ck_assert_msg(harness_file_contains(twin->p.log, held), "the twin's log names no holder");

	t0 = retry_now_ms();
	kill(first->p.pid, SIGTERM);
	ck_assert_msg(wait_for(w1_at, twin, 5000), "the twin did not join within 5 s");
	ms = retry_now_ms() - t0;
	fprintf(stderr, "membership: the twin joined %llu ms after the first's SIGTERM\n",
		(unsigned long long)ms);
	ck_assert_int_eq(proc_stop(&first->p), 0);
	ck_assert_msg(ms < 2000, "the twin joined %llu ms after the first's SIGTERM",
		      (unsigned long long)ms);
	rw.needle = "ok";
	ck_assert_msg(wait_for(readyz_says, &rw, 2000), "the twin's /readyz: %s", rw.body);
}
END_TEST

/* A worker stopped (SIGTERM) leaves the membership at once, so mounts stop
 * asking it before it stops answering (it stayed there until meta's
 * expiry, 10 s here). */
START_TEST(test_cluster_stopped_worker_leaves_the_membership_at_once)
{
	uint64_t t0 = retry_now_ms(), ms;

	kill(workers[0].p.pid, SIGTERM);
	ck_assert_msg(wait_for(all_joined, (void *)(uintptr_t)0, 15000),
		      "meta still lists the stopped worker");
	ms = retry_now_ms() - t0;
	fprintf(stderr, "membership: the stopped worker left meta's list %llu ms after SIGTERM\n",
		(unsigned long long)ms);
	ck_assert_int_eq(proc_stop(&workers[0].p), 0);
	ck_assert_msg(ms < 1000, "the stopped worker was listed %llu ms after SIGTERM",
		      (unsigned long long)ms);
	ck_assert(harness_file_contains(workers[0].p.log, "msg=\"left granary-meta\""));
}
END_TEST

/* --- metrics ------------------------------------------------------------------ */

/* The /metrics text of a daemon at address (unix:// or host:port). */
static char *scrape(const char *address)
{
	char *text = NULL;
	long status = harness_http_get(address, "/metrics", &text);

	ck_assert_msg(status == 200, "GET %s/metrics: status %ld", address, status);
	return text;
}

/* One sample of a mount's /metrics (0 when absent: a source never asked). */
static double mount_metric(const char *address, const char *sample)
{
	char *text = scrape(address);
	double v = harness_metric(text, sample);

	free(text);
	return v < 0 ? 0 : v;
}

/* Adds the names of the families in text ("# TYPE name kind") to names,
 * with _bucket, _sum and _count for histograms. */
static void add_family_names(json_t *names, const char *text)
{
	for (const char *line = text; line && *line;) {
		char name[200], kind[32];

		if (sscanf(line, "# TYPE %199s %31s", name, kind) == 2) {
			json_object_set_new(names, name, json_true());
			if (strcmp(kind, "histogram") == 0) {
				static const char *const sfx[] = { "_bucket", "_sum", "_count" };

				for (int i = 0; i < 3; i++) {
					char full[240];

					snprintf(full, sizeof(full), "%s%s", name, sfx[i]);
					json_object_set_new(names, full, json_true());
				}
			}
		}
		line = strchr(line, '\n');
		if (line)
			line++;
	}
}

/* Every granary_* name in a PromQL expression must be in names; returns
 * how many names the expression used. */
static int check_expr(const json_t *names, const char *where, const char *expr)
{
	int used = 0;

	for (const char *p = strstr(expr, "granary_"); p; p = strstr(p, "granary_")) {
		char name[200];
		size_t n = 0;

		while (n + 1 < sizeof(name) && (isalnum((unsigned char)p[n]) || p[n] == '_')) {
			name[n] = p[n];
			n++;
		}
		name[n] = '\0';
		ck_assert_msg(json_object_get(names, name) != NULL,
			      "%s uses '%s', which no running daemon exports (expr: %s)", where, name,
			      expr);
		used++;
		p += n;
	}
	return used;
}

/*
 * The chart's Grafana dashboard, loaded as Grafana would (JSON): every
 * PromQL expression of every panel and template variable names only
 * series that the running daemons export, and every panel has one.
 */
static void check_dashboard(const json_t *names)
{
	const char *src = getenv("GRANARY_SOURCE_DIR");
	char path[600], where[300];
	json_error_t jerr;
	json_t *dash, *panels, *panel, *vars, *var;
	size_t i, j;
	int used = 0;

	ck_assert_ptr_nonnull(src);
	snprintf(path, sizeof(path), "%s/helm/granary/dashboards/granary.json", src);
	dash = json_load_file(path, 0, &jerr);
	ck_assert_msg(dash != NULL, "%s:%d: %s", path, jerr.line, jerr.text);
	panels = json_object_get(dash, "panels");
	ck_assert_msg(json_array_size(panels) >= 7, "the dashboard has %zu panels",
		      json_array_size(panels));
	json_array_foreach(panels, i, panel) {
		const json_t *targets = json_object_get(panel, "targets");
		const char *title = json_string_value(json_object_get(panel, "title"));
		json_t *t;
		int in_panel = 0;

		ck_assert_msg(json_array_size(targets) > 0, "panel '%s' has no query", title);
		json_array_foreach(targets, j, t) {
			const char *expr = json_string_value(json_object_get(t, "expr"));

			ck_assert_msg(expr != NULL, "panel '%s' target %zu has no expr", title, j);
			snprintf(where, sizeof(where), "panel '%s'", title);
			in_panel += check_expr(names, where, expr);
		}
		ck_assert_msg(in_panel > 0, "panel '%s' names no Granary series", title);
		used += in_panel;
	}
	vars = json_object_get(json_object_get(dash, "templating"), "list");
	json_array_foreach(vars, i, var) {
		const char *def = json_string_value(json_object_get(var, "definition"));

		if (def) {
			snprintf(where, sizeof(where), "variable '%s'",
				 json_string_value(json_object_get(var, "name")));
			used += check_expr(names, where, def);
		}
	}
	fprintf(stderr, "dashboard: %zu panels, %d series references, all exported\n",
		json_array_size(panels), used);
	json_decref(dash);
}

/*
 * A mount's counters split its reads by the source that answered. The
 * mount is on worker 1's node. Second pass through a new mount (worker
 * caches warm): worker 1's blocks come from the node's cache files
 * (local), worker 2's from worker 2 (peer), none from the store, and the
 * bytes by source add up to the bytes read. A mount whose cluster token
 * the workers refuse: local still answers, every peer request fails over
 * (fallbacks{source="peer"}) to the store. Then meta, a worker and a
 * mount answer /healthz, and the chart's dashboard names only series
 * these daemons export.
 */
START_TEST(test_cluster_mount_counters_split_reads_by_source)
{
	const char *extra2[] = { "--metrics.address", NULL, NULL };
	const char *extra3[] = { "--metrics.address", NULL, "--token_file", NULL, NULL };
	char addr2[300], addr3[300], bad_token[240], worker_addr[64];
	double local, peer, store, bytes, peer_bytes, local_bytes;
	uint64_t served_before, served_after, t0;
	struct mnt m1, m2, m3;
	json_t *names;
	char *text;

	snprintf(addr2, sizeof(addr2), "unix://%s/fuse-second.sock", work);
	snprintf(addr3, sizeof(addr3), "unix://%s/fuse-refused.sock", work);
	snprintf(bad_token, sizeof(bad_token), "%s/bad-token", work);
	harness_write_file(bad_token, "not-the-cluster-secret-0123456789\n", 0600);
	extra2[1] = addr2;
	extra3[1] = addr3;
	extra3[3] = bad_token;

	ck_assert_int_eq(mount_start(&m1, DATASET, NULL, "warm"), 0);
	read_all_exact(&m1);
	mount_stop(&m1);

	served_before = metric(&workers[1], "granary_worker_served_bytes_total");
	ck_assert_int_eq(mount_start(&m2, DATASET, extra2, "second"), 0);
	read_all_exact(&m2);
	local = mount_metric(addr2, "granary_fuse_source_reads_total{source=\"local\"}");
	peer = mount_metric(addr2, "granary_fuse_source_reads_total{source=\"peer\"}");
	store = mount_metric(addr2, "granary_fuse_source_reads_total{source=\"store\"}");
	local_bytes = mount_metric(addr2, "granary_fuse_source_bytes_total{source=\"local\"}");
	peer_bytes = mount_metric(addr2, "granary_fuse_source_bytes_total{source=\"peer\"}");
	bytes = mount_metric(addr2, "granary_fuse_read_bytes_total");
	/* Worker 2 counts a response once it is sent (on_completed,
	 * cache/http.c), which may be after the mount has read it: its
	 * counter is polled until it covers the peer bytes, or 5 s. */
	t0 = retry_now_ms();
	for (;;) {
		served_after = metric(&workers[1], "granary_worker_served_bytes_total");
		if ((double)(served_after - served_before) >= peer_bytes ||
		    retry_now_ms() - t0 > 5000)
			break;
		retry_sleep_ms(20);
	}
	fprintf(stderr,
		"metrics: second pass: %.0f local, %.0f peer, %.0f store block reads; %.0f + %.0f of %.0f bytes; worker 2 served %llu bytes\n",
		local, peer, store, local_bytes, peer_bytes, bytes,
		(unsigned long long)(served_after - served_before));
	ck_assert_msg(local > 0 && peer > 0, "local %.0f, peer %.0f: the split is wrong", local, peer);
	ck_assert_double_eq(store, 0);
	ck_assert_double_eq(local_bytes + peer_bytes, bytes);
	/* The peer bytes crossed the network from worker 2 (whole chunks, so
	 * it may have sent more than the mount kept). */
	ck_assert_msg(peer_bytes <= (double)(served_after - served_before),
		      "the mount read %.0f bytes from worker 2, which counted %llu bytes sent "
		      "(polled for 5 s)",
		      peer_bytes, (unsigned long long)(served_after - served_before));
	ck_assert_double_eq(mount_metric(addr2, "granary_fuse_fallbacks_total{source=\"peer\"}"), 0);
	ck_assert_double_gt(mount_metric(addr2, "granary_fuse_read_seconds_count"), 0);
	ck_assert_double_eq(mount_metric(addr2, "granary_fuse_read_seconds_count"),
			    mount_metric(addr2, "granary_fuse_reads_total"));
	ck_assert_int_eq(harness_http_get(addr2, "/healthz", NULL), 200);

	ck_assert_int_eq(mount_start(&m3, DATASET, extra3, "refused"), 0);
	read_all_exact(&m3);
	local = mount_metric(addr3, "granary_fuse_source_reads_total{source=\"local\"}");
	peer = mount_metric(addr3, "granary_fuse_source_reads_total{source=\"peer\"}");
	store = mount_metric(addr3, "granary_fuse_source_reads_total{source=\"store\"}");
	fprintf(stderr, "metrics: refused token: %.0f local, %.0f peer, %.0f store, %.0f peer fallbacks\n",
		local, peer, store,
		mount_metric(addr3, "granary_fuse_fallbacks_total{source=\"peer\"}"));
	ck_assert_msg(local > 0 && store > 0, "local %.0f, store %.0f", local, store);
	ck_assert_double_eq(peer, 0);
	ck_assert_double_ge(mount_metric(addr3, "granary_fuse_fallbacks_total{source=\"peer\"}"),
			    store);
	mount_stop(&m3);

	/* Every daemon kind answers; the dashboard names only what they export. */
	ck_assert_int_eq(harness_http_get(meta_metrics, "/healthz", NULL), 200);
	snprintf(worker_addr, sizeof(worker_addr), "127.0.0.1:%d", workers[0].port);
	ck_assert_int_eq(harness_http_get(worker_addr, "/healthz", NULL), 200);
	names = json_object();
	text = scrape(meta_metrics);
	ck_assert_msg(harness_metric(text, "granary_meta_workers") == NWORKERS, "%s", text);
	ck_assert_msg(harness_metric(text, "granary_meta_datasets{state=\"ready\"}") == 1, "%s", text);
	add_family_names(names, text);
	free(text);
	text = scrape(worker_addr);
	add_family_names(names, text);
	free(text);
	text = scrape(addr2);
	add_family_names(names, text);
	free(text);
	check_dashboard(names);
	json_decref(names);
	mount_stop(&m2);
}
END_TEST

/* --- TLS ------------------------------------------------------------------------ */

static void setup_tls(void)
{
	tls_on = true;
	setup();
}

/*
 * Through TLS on both planes: the mount reads every byte right, nothing
 * falls back to the store, and the peer worker sent its blocks over HTTPS.
 */
START_TEST(test_cluster_tls_mount_reads_through_tls_workers)
{
	struct mnt m;
	uint64_t served;

	ck_assert_int_eq(mount_start(&m, DATASET, NULL, "tls"), 0);
	read_all_exact(&m);
	ck_assert_uint_eq(mount_stat(&m, "fallbacks"), 0);
	served = metric(&workers[1], "granary_worker_served_bytes_total");
	ck_assert_msg(served > 0, "the peer worker sent no block bytes");
	fprintf(stderr, "cluster tls: the peer worker sent %llu bytes over HTTPS\n",
		(unsigned long long)served);
	mount_stop(&m);
}
END_TEST

/* A TLS worker answers only a client that speaks TLS, trusts its CA and
 * asks for the one name its certificate carries. */
START_TEST(test_cluster_tls_worker_refuses_plaintext_and_wrong_ca)
{
	char address[32];
	int cc = 0;

	snprintf(address, sizeof(address), "127.0.0.1:%d", workers[0].port);
	ck_assert_int_eq(harness_https_request(address, "/healthz", NULL, certs.ca,
					       HARNESS_TLS_WORKER_NAME, NULL, &cc), 200);
	/* plaintext to the HTTPS port: the handshake fails, no answer */
	ck_assert_int_eq(harness_https_request(address, "/healthz", NULL, NULL, NULL, NULL, &cc),
			 0);
	ck_assert_int_ne(cc, CURLE_OK);
	ck_assert_int_eq(harness_https_request(address, "/healthz", NULL, certs.other_ca,
					       HARNESS_TLS_WORKER_NAME, NULL, &cc), 0);
	ck_assert_msg(cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_SSL_CACERT,
		      "another CA: %s", curl_easy_strerror((CURLcode)cc));
	/* the right CA, but the certificate names the workers, not the IP */
	ck_assert_int_eq(harness_https_request(address, "/healthz", NULL, certs.ca, NULL, NULL,
					       &cc), 0);
	ck_assert_msg(cc == CURLE_PEER_FAILED_VERIFICATION, "by IP: %s",
		      curl_easy_strerror((CURLcode)cc));
}
END_TEST

/* A call to meta on a client of the given TLS files: ERR_OK or why not. */
static enum error_code meta_list_with(const char *ca_file, const char *cert, const char *key)
{
	Granary__V1__ListDatasetsReply *l = NULL;
	struct meta_client *c = NULL;
	struct error err;
	enum error_code rc;

	ck_assert_msg(meta_client_with(ca_file, cert, key, &c, &err) == ERR_OK, "%s", err.msg);
	rc = meta_client_list(c, &l, &err);
	if (l)
		granary__v1__list_datasets_reply__free_unpacked(l, NULL);
	meta_client_free(c);
	return rc;
}

/* Meta with mutual TLS serves a configured client; a plaintext one, one
 * without a client certificate and one trusting another CA are
 * UNAVAILABLE: the handshake fails before any call. */
START_TEST(test_cluster_tls_meta_refuses_plaintext_and_clients_without_certificate)
{
	ck_assert_int_eq(meta_list_with(certs.ca, certs.client_cert, certs.client_key), ERR_OK);
	ck_assert_int_eq(meta_list_with(NULL, NULL, NULL), ERR_UNAVAILABLE);
	ck_assert_int_eq(meta_list_with(certs.ca, NULL, NULL), ERR_UNAVAILABLE);
	ck_assert_int_eq(meta_list_with(certs.other_ca, certs.client_cert, certs.client_key),
			 ERR_UNAVAILABLE);
}
END_TEST

/* Bad TLS files stop a worker at start (status 2) with the setting and
 * the file named, and nothing of a key in its output. */
START_TEST(test_cluster_tls_bad_files_are_named_at_start)
{
	const char *cases[][2] = {
		{ token_path, certs.worker_key },       /* not a certificate */
		{ certs.worker_cert, certs.client_key }, /* another certificate's key */
		{ certs.worker_cert, "/nonexistent/tls.key" },
	};
	const char *expect[] = { "key 'tls.cert_file'", "is not the private key",
				 "key 'tls.key_file'" };
	char exe[600], listen[64], log[300], cache[300];

	snprintf(exe, sizeof(exe), "%s/granary-worker", bin_dir);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", harness_free_port());
	snprintf(cache, sizeof(cache), "%s/cache-bad", work);
	for (int i = 0; i < 3; i++) {
		const char *argv[] = { exe, "--listen", listen, "--cache.dir", cache,
				       "--token_file", token_path, "--tls.cert_file", cases[i][0],
				       "--tls.key_file", cases[i][1], NULL };
		pid_t pid;
		int status = 0;

		snprintf(log, sizeof(log), "%s/bad-%d.log", work, i);
		pid = harness_spawn(argv, log);
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		if (!harness_file_contains(log, expect[i]))
			harness_dump_log(log);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 2, "case %d: status %d",
			      i, status);
		ck_assert_msg(harness_file_contains(log, expect[i]), "case %d: no \"%s\"", i,
			      expect[i]);
		ck_assert(!harness_file_contains(log, "PRIVATE KEY"));
	}
}
END_TEST

/* A case of s: its own cluster per test (setup_fn), the objects put once. */
static TCase *cluster_case(Suite *s, const char *name, void (*setup_fn)(void))
{
	TCase *tc = tcase_create(name);

	tcase_add_unchecked_fixture(tc, put_objects, free_objects);
	tcase_add_checked_fixture(tc, setup_fn, teardown);
	tcase_set_timeout(tc, 180);
	suite_add_tcase(s, tc);
	return tc;
}

int main(void)
{
	Suite *s = suite_create("cluster");
	TCase *tc = cluster_case(s, "cluster", setup);

	tcase_add_test(tc, test_cluster_mount_spreads_blocks_and_second_pass_needs_no_store);
	tcase_add_test(tc, test_cluster_long_dataset_name_is_served_by_the_workers);
	tcase_add_test(tc, test_cluster_mount_and_workers_of_other_block_sizes_read_the_right_bytes);
	tcase_add_test(tc, test_cluster_block_files_leave_the_page_cache_once_read);
	tcase_add_test(tc, test_cluster_worker_killed_mid_read_fails_no_read);
	tcase_add_test(tc, test_cluster_stopped_worker_stalls_readers_briefly);
	tcase_add_test(tc, test_cluster_restarted_worker_leaves_each_block_one_owner);
	tcase_add_test(tc, test_cluster_mount_errors_name_the_cause);
	tcase_add_test(tc, test_cluster_workers_follow_meta_and_survive_its_outage);
	tcase_add_test(tc, test_cluster_worker_serves_a_dataset_registered_since_its_last_round);
	tcase_add_test(tc, test_cluster_small_file_misses_prefetch_the_next_files_through_the_workers);
	tcase_add_test(tc, test_cluster_corrupt_local_block_is_not_served);
	tcase_add_test(tc, test_cluster_corrupt_peer_block_is_not_served);
	tcase_add_test(tc, test_cluster_corrupt_block_is_not_served_to_o_direct);
	tcase_add_test(tc, test_cluster_corrupt_block_is_not_served_to_a_new_mount);
	/* Its own case, so that CK_RUN_CASE=metrics runs only it. */
	tc = cluster_case(s, "metrics", setup);
	tcase_add_test(tc, test_cluster_mount_counters_split_reads_by_source);
	/* CK_RUN_CASE=tls: the same cluster with TLS on both planes. */
	tc = cluster_case(s, "tls", setup_tls);
	tcase_add_test(tc, test_cluster_tls_mount_reads_through_tls_workers);
	tcase_add_test(tc, test_cluster_tls_worker_refuses_plaintext_and_wrong_ca);
	tcase_add_test(tc, test_cluster_tls_meta_refuses_plaintext_and_clients_without_certificate);
	tcase_add_test(tc, test_cluster_tls_bad_files_are_named_at_start);
	/* CK_RUN_CASE=membership: one process per worker id, leaving at SIGTERM. */
	tc = cluster_case(s, "membership", setup_membership);
	tcase_add_test(tc, test_cluster_second_process_of_a_worker_id_joins_when_the_first_leaves);
	tcase_add_test(tc, test_cluster_stopped_worker_leaves_the_membership_at_once);
	/* CK_RUN_CASE=preload: three workers preloading, their store behind
	 * a proxy. Last: it leaves nworkers at 3. */
	tc = cluster_case(s, "preload", setup_preload);
	tcase_add_test(tc, test_cluster_preload_reads_each_block_once_onto_its_owner);
	tcase_add_test(tc, test_cluster_preload_follows_a_worker_leaving_and_coming_back);
	tcase_add_test(tc, test_cluster_preload_of_a_dataset_registered_again_runs_again);
	tcase_add_test(tc, test_cluster_failed_preload_starts_again_with_a_backoff);
	return check_main_run(s);
}
