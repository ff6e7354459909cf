/*
 * test_faults.c - the fault suite: one fault at a time against a whole
 * cluster of real processes while two readers check every byte, and a
 * table of what each fault cost.
 *
 * The cluster: an S3 server (versitygw through scripts/s3-server.sh) in a
 * network namespace of its own, reached over a veth pair, so that it can
 * be stopped, killed, slowed (tc tbf on its side of the pair) and made
 * lossy (an nftables rule dropping a share of its packets at random);
 * granary-meta; three granary-workers whose cache directories are small
 * tmpfs mounts (so that a disk can fill); granary-fuse in cluster mode on
 * worker 1's node; and granary-csi's node plugin with a granary-fuse of
 * its own for the same dataset (the last row kills that daemon).
 *
 * Two readers (buffered, with the file's pages dropped before each read
 * of it, and O_DIRECT) read every object in 256 KiB preads and compare
 * each byte with what was put. Each row: the readers go on over the warm
 * objects; the fault is made; from then on they also read objects of the
 * row's own that nothing has read yet (so that blocks are missed and
 * fetched during the fault); the fault is undone; the row ends once each
 * reader has read everything once more with no failure.
 *
 * Per row: reads, failed reads (and of them the ones the goal allows: EIO
 * within the deadline for an object the store cannot serve at the time),
 * wrong bytes, ENOTCONN, the longest single call, the bytes the S3 server
 * sent (an nftables counter on its side of the pair), and the blocks two
 * workers hold once the membership has settled (the row waits for that).
 * The goals: 0 wrong bytes, 0 ENOTCONN and no block held twice in every
 * row; failed reads only for the row's new objects while the store is
 * stopped or killed, or for objects overwritten after the snapshot, and
 * then EIO; no call longer than a read's deadline (store.deadline +
 * worker.first_byte_timeout + worker.timeout) and 1 s of slack; repeated
 * warnings rate limited. Every fault is real (processes, signals, the
 * kernel's network and disks): nothing is mocked.
 *
 * Needs root (network namespaces, tmpfs, FUSE), ip, tc, nft, and
 * versitygw from scripts/setup.sh. GRANARY_FAULTS_TABLE=FILE also writes
 * the table there; GRANARY_FAULTS_ROWS=0,4 runs only those rows;
 * GRANARY_FAULTS_KEEP=1 keeps the daemons' logs. docs/faults.md has the
 * figures.
 */
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fileio.h"
#include "common/retry.h"
#include "csi.pb-c.h"
#include "e2e/harness.h"
#include "meta/meta_client.h"
#include "rpc/rpc_client.h"
#include "store/store.h"
#include "unit/check_main.h"

#define BUCKET "granary-faults"
#define BS (64u << 10)
#define SECRET "e2e-faults-secret-0123456789abcdef"
#define DATASET "faults-ds"
#define NWORKERS 3
#define CHUNK (256u << 10)

/* The deadlines every daemon runs with. A mount's read deadline is
 * store.deadline plus one stopped worker's cost (worker.first_byte_timeout
 * + worker.timeout: fuse/mount_settings.h); the longest call allowed is
 * that and 1 s of slack for a shared machine. */
#define STORE_REQUEST_TIMEOUT "2s"
#define STORE_DEADLINE_MS 5000
#define STORE_DEADLINE "5s"
#define WORKER_TIMEOUT_MS 500
#define WORKER_TIMEOUT "500ms"
#define FIRST_BYTE_MS 1000
#define FIRST_BYTE "1s"
#define READ_DEADLINE_MS (STORE_DEADLINE_MS + FIRST_BYTE_MS + WORKER_TIMEOUT_MS)
#define STALL_BOUND_MS (READ_DEADLINE_MS + 1000)
/* The workers' placement.settle: a block held by two workers is dropped by
 * the one that does not own it once the membership has held this long. */
#define SETTLE_MS 2000
#define SETTLE "2s"

enum fault {
	F_NONE,
	F_WORKER_KILL,
	F_WORKER_STOP,
	F_META_KILL,
	F_S3_STOP,
	F_S3_KILL,
	F_S3_SLOW,
	F_S3_LOSSY,
	F_DISK_FULL,
	F_CORRUPT,
	F_OVERWRITE,
	F_FUSE_KILL,
	NROWS
};

static const struct {
	const char *name;
	/* The store cannot serve the row's new objects while the fault
	 * lasts: their reads may fail, with EIO. */
	bool store_gone;
	/* A goal the row misses for a reason found and not yet fixed
	 * (printed with the table); NULL for none. */
	const char *known;
} rows[NROWS] = {
	[F_NONE] = { "no fault", false, NULL },
	[F_WORKER_KILL] = { "worker killed (SIGKILL), restarted", false, NULL },
	[F_WORKER_STOP] = { "worker stopped (SIGSTOP 4 s), continued", false, NULL },
	[F_META_KILL] = { "meta killed (SIGKILL), restarted after 3 s", false, NULL },
	[F_S3_STOP] = { "S3 stopped (SIGSTOP 7 s), continued", true, NULL },
	[F_S3_KILL] = { "S3 killed (SIGKILL), restarted after 7 s", true, NULL },
	[F_S3_SLOW] = { "S3 slowed (tbf 4 Mbit/s, 6 s)", false, NULL },
	[F_S3_LOSSY] = { "S3 lossy (30% of its packets dropped, 6 s)", false, NULL },
	[F_DISK_FULL] = { "cache disks full (every worker's tmpfs)", false, NULL },
	[F_CORRUPT] = { "cached blocks corrupted (every block file)", false, NULL },
	[F_OVERWRITE] = { "objects overwritten after the snapshot", true, NULL },
	[F_FUSE_KILL] = { "granary-fuse killed 3x under the node plugin", false, NULL },
};

/* --- the dataset ------------------------------------------------------------ */

/* Warm objects are read in every row; each row has two objects of its own
 * that nothing reads before its fault is made (row -1: warm). */
#define NWARM 4
#define NOBJ (NWARM + 2 * NROWS)

struct object {
	char key[128];
	size_t size;
	unsigned char *data; /* what the snapshot holds */
	int row;
};

static struct object objs[NOBJ];
static const size_t warm_sizes[NWARM] = { 24 * BS + 1234, 16 * BS, 19 * BS + 7, 333 };

/* --- the environment (made in the parent, before the test forks) ---------- */

static char work[128], bin_dir[512], s3_script[512], s3_dir[200];
static char netns[32], veth_host[16], veth_ns[16], host_ip[20], ns_ip[20];
static char endpoint[256], credentials[512], prefix[96], source_uri[200];
static int s3_port;

/* Runs a shell command; returns its exit status (-1: it did not run). */
static int sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

#define SH_OK(...)                                                                   \
	do {                                                                             \
		char cmd_[2048];                                                         \
		snprintf(cmd_, sizeof(cmd_), __VA_ARGS__);                               \
		ck_assert_msg(sh("%s", cmd_) == 0, "command failed: %s", cmd_);          \
	} while (0)

static int s3_pid(void)
{
	char path[300];
	int pid = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/pid", s3_dir);
	f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%d", &pid) != 1)
			pid = 0;
		fclose(f);
	}
	return pid;
}

/* Sends sig to the S3 server (never to pid 0, this process group). */
static void signal_s3(int sig)
{
	int pid = s3_pid();

	ck_assert_msg(pid > 0, "no pid of the S3 server in %s/pid", s3_dir);
	ck_assert_msg(kill(pid, sig) == 0, "signal %d to the S3 server (pid %d): %s", sig, pid,
		      strerror(errno));
}

/* (Re)starts the S3 server inside the namespace, on s3_port once known. */
static void s3_start(void)
{
	char port[16] = "";

	if (s3_port)
		snprintf(port, sizeof(port), "%d", s3_port);
	SH_OK("ip netns exec %s env GRANARY_S3_BIND=%s '%s' start '%s' %s >/dev/null", netns, ns_ip,
	      s3_script, s3_dir, port);
}

/* Bytes the S3 server has sent so far (nftables counter in its namespace). */
static uint64_t s3_bytes(void)
{
	char cmd[300], line[512];
	unsigned long long v = 0;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "ip netns exec %s nft list chain inet granary_faults count", netns);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	while (fgets(line, sizeof(line), p)) {
		const char *at = strstr(line, " bytes ");

		if (at)
			sscanf(at + 7, "%llu", &v);
	}
	pclose(p);
	return v;
}

/* The bucket, with the server's credentials. */
static struct store *bucket(void)
{
	struct store_config cfg = { .request_timeout_ms = 10000, .deadline_ms = 30000 };
	struct store *st = NULL;
	struct error err;

	cfg.endpoint = endpoint;
	cfg.credentials_file = credentials;
	ck_assert_msg(store_open("s3://" BUCKET, &cfg, &st, &err) == ERR_OK, "%s", err.msg);
	return st;
}

static void put_objects(void)
{
	struct store *st = bucket();
	struct error err;
	char key[300];

	snprintf(prefix, sizeof(prefix), "faults-%d/", (int)getpid());
	snprintf(source_uri, sizeof(source_uri), "s3://" BUCKET "/%s", prefix);
	for (int i = 0; i < NOBJ; i++) {
		struct object *o = &objs[i];

		if (i < NWARM) {
			o->row = -1;
			o->size = warm_sizes[i];
			snprintf(o->key, sizeof(o->key), "warm/shard-%d.rec", i);
		} else {
			o->row = (i - NWARM) / 2;
			o->size = (i % 2) ? 8 * BS + 100 : 6 * BS;
			snprintf(o->key, sizeof(o->key), "rows/%02d/%c.rec", o->row, 'a' + i % 2);
		}
		o->data = malloc(o->size);
		ck_assert_ptr_nonnull(o->data);
		harness_fill(o->data, o->size, (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ull + 3);
		snprintf(key, sizeof(key), "%s%s", prefix, o->key);
		ck_assert_msg(store_put(st, key, o->data, o->size, &err) == ERR_OK, "put '%s': %s",
			      key, err.msg);
	}
	store_free(st);
}

/* Overwrites the objects of row in the bucket with other bytes. */
static void overwrite_row(int row)
{
	struct store *st = bucket();
	struct error err;
	char key[300];

	for (int i = NWARM; i < NOBJ; i++) {
		unsigned char *other;

		if (objs[i].row != row)
			continue;
		other = malloc(objs[i].size);
		harness_fill(other, objs[i].size, 0xdeadbeefull + (uint64_t)i);
		snprintf(key, sizeof(key), "%s%s", prefix, objs[i].key);
		ck_assert_msg(store_put(st, key, other, objs[i].size, &err) == ERR_OK, "%s", err.msg);
		free(other);
	}
	store_free(st);
}

/* Unchecked fixture: the namespace, the S3 server in it, the objects. */
static void env_up(void)
{
	const char *script = getenv("GRANARY_S3_SCRIPT");
	int n = (int)(getpid() % 200) + 20;

	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_ALL);
	ck_assert_msg(geteuid() == 0 && access("/dev/fuse", R_OK | W_OK) == 0,
		      "needs root and /dev/fuse");
	ck_assert_msg(script && *script, "GRANARY_S3_SCRIPT is not set");
	snprintf(s3_script, sizeof(s3_script), "%s", script);
	harness_bin_dir(bin_dir, sizeof(bin_dir));
	ck_assert_msg(sh("command -v ip tc nft >/dev/null") == 0,
		      "needs ip, tc and nft (iproute2, nftables: scripts/setup.sh)");
	harness_tmpdir(work, sizeof(work), "/tmp/granary-faults-XXXXXX");
	snprintf(s3_dir, sizeof(s3_dir), "%s/s3", work);
	snprintf(netns, sizeof(netns), "granary-faults-%d", (int)getpid());
	snprintf(veth_host, sizeof(veth_host), "gfh%d", (int)getpid() % 100000);
	snprintf(veth_ns, sizeof(veth_ns), "gfn%d", (int)getpid() % 100000);
	snprintf(host_ip, sizeof(host_ip), "10.251.%d.1", n);
	snprintf(ns_ip, sizeof(ns_ip), "10.251.%d.2", n);
	SH_OK("ip netns add %s", netns);
	SH_OK("ip link add %s type veth peer name %s && ip link set %s netns %s", veth_host, veth_ns,
	      veth_ns, netns);
	SH_OK("ip addr add %s/30 dev %s && ip link set %s up", host_ip, veth_host, veth_host);
	SH_OK("ip netns exec %s sh -c 'ip addr add %s/30 dev %s && ip link set %s up && ip link set lo up'",
	      netns, ns_ip, veth_ns, veth_ns);
	s3_start();
	{
		char env_dir[300];

		/* harness_s3_env reads DIR/env, which the script wrote */
		snprintf(env_dir, sizeof(env_dir), "%s", s3_dir);
		setenv("GRANARY_S3_DIR", env_dir, 1);
		harness_s3_env(endpoint, sizeof(endpoint), credentials, sizeof(credentials));
	}
	s3_port = harness_url_port(endpoint);
	ck_assert_int_gt(s3_port, 0);
	SH_OK("ip netns exec %s '%s' mkbucket '%s' " BUCKET, netns, s3_script, s3_dir);
	/* loss (empty until the lossy row) runs before the counter, so that
	 * the counter sees what left the server */
	SH_OK("ip netns exec %s nft -f - <<'EOF'\n"
	      "table inet granary_faults {\n"
	      "  chain loss { type filter hook output priority 10; }\n"
	      "  chain count { type filter hook output priority 20; tcp sport %d counter; }\n"
	      "}\nEOF",
	      netns, s3_port);
	put_objects();
}

static void env_down(void)
{
	int pid = s3_pid();

	/* Daemons the node plugin left (they outlive it by design), what is
	 * mounted under work, the server, the namespace, the tree. */
	sh("for r in '%s'/csi-state/node/*.json; do [ -f \"$r\" ] || continue; "
	   "p=$(sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p' \"$r\"); "
	   "[ -n \"$p\" ] && [ \"$p\" -gt 0 ] && kill -9 \"$p\"; done 2>/dev/null",
	   work);
	sh("awk -v w='%s' 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r | "
	   "while read -r m; do umount -l \"$m\"; done",
	   work);
	if (pid > 0) {
		kill(pid, SIGCONT);
		kill(pid, SIGKILL);
	}
	sh("ip netns del %s 2>/dev/null", netns);
	sh("ip link del %s 2>/dev/null", veth_host);
	if (getenv("GRANARY_FAULTS_KEEP"))
		fprintf(stderr, "faults: logs kept in %s\n", work);
	else
		harness_rm_rf(work);
	for (int i = 0; i < NOBJ; i++)
		free(objs[i].data);
}

/* --- processes --------------------------------------------------------------- */

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

static char token_path[200], meta_sock[240], meta_data[200];
static struct harness_meta_keys keys;
static struct proc meta, fuse_proc, csi;
static struct worker workers[NWORKERS];
static char mnt_dir[256], csi_sock[240], staging[300];

static bool proc_exited(struct proc *p, int *status)
{
	if (p->pid > 0 && waitpid(p->pid, status, WNOHANG) == p->pid) {
		p->pid = 0;
		return true;
	}
	return false;
}

/* SIGKILL and reap. */
static void proc_kill(struct proc *p)
{
	if (p->pid > 0) {
		kill(p->pid, SIGCONT);
		kill(p->pid, SIGKILL);
		waitpid(p->pid, NULL, 0);
		p->pid = 0;
	}
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
	(void)p, (void)arg;
	return size * n;
}

static long http_status(int port, const char *path)
{
	char url[300];
	long status = 0;
	CURL *c = curl_easy_init();

	ck_assert_ptr_nonnull(c);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 2000L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	return status;
}

static struct meta_client *meta_client(void)
{
	struct meta_client_options opt = { .timeout_ms = 5000, .build_timeout_ms = 120000,
					   .key_file = keys.csi, .role = META_ROLE_CSI };
	struct meta_client *c = NULL;
	struct error err;

	ck_assert_msg(meta_client_new(meta_sock, &opt, &c, &err) == ERR_OK, "%s", err.msg);
	return c;
}

static void meta_start(void)
{
	char exe[600];
	const char *argv[] = { exe, "--listen", meta_sock, "--data_dir", meta_data,
			       "--heartbeat.interval", "200ms", "--heartbeat.expiry", "1s",
			       "--store.endpoint", endpoint, "--store.credentials_file",
			       credentials, "--auth.csi_key_file", keys.csi,
			       "--auth.worker_key_file", keys.worker, "--auth.mount_key_file",
			       token_path, NULL };
	struct meta_client *c = meta_client();
	uint64_t t0 = retry_now_ms();

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
		ck_assert_msg(retry_now_ms() - t0 < 15000, "granary-meta did not answer in 15 s: %s",
			      err.msg);
		retry_sleep_ms(20);
	}
	meta_client_free(c);
}

/* A worker on its port (kept across restarts) and its tmpfs cache. */
static void worker_start(struct worker *w)
{
	char exe[600], listen[64];
	const char *argv[] = { exe, "--listen", listen, "--node_id", w->id, "--meta.address",
			       meta_sock, "--cache.dir", w->cache, "--cache.capacity", "256MiB",
			       "--token_file", token_path, "--store.endpoint", endpoint,
			       "--store.credentials_file", credentials, "--store.request_timeout",
			       STORE_REQUEST_TIMEOUT, "--store.deadline", STORE_DEADLINE,
			       "--store.connect_timeout", "1s", "--http.shutdown_grace", "1s",
			       "--meta.key_file", keys.worker, "--placement.settle", SETTLE, NULL };
	uint64_t t0 = retry_now_ms();

	snprintf(exe, sizeof(exe), "%s/granary-worker", bin_dir);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", w->port);
	w->p.pid = harness_spawn(argv, w->p.log);
	while (http_status(w->port, "/healthz") != 200) {
		int status;

		if (proc_exited(&w->p, &status)) {
			harness_dump_log(w->p.log);
			ck_abort_msg("granary-worker %s exited at start (status %d)", w->id, status);
		}
		ck_assert_msg(retry_now_ms() - t0 < 15000, "granary-worker %s did not serve in 15 s",
			      w->id);
		retry_sleep_ms(20);
	}
}

static size_t live_workers(void)
{
	struct meta_client *c = meta_client();
	Granary__V1__ListWorkersReply *r = NULL;
	struct error err;
	size_t n = 0;

	if (meta_client_list_workers(c, &r, &err) == ERR_OK) {
		n = r->n_workers;
		granary__v1__list_workers_reply__free_unpacked(r, NULL);
	}
	meta_client_free(c);
	return n;
}

static void wait_joined(size_t n)
{
	uint64_t t0 = retry_now_ms();

	while (live_workers() != n) {
		ck_assert_msg(retry_now_ms() - t0 < 15000, "meta does not list %zu workers after 15 s",
			      n);
		retry_sleep_ms(50);
	}
}

/* The cluster mount, on worker 1's node, with the suite's deadlines. */
static void fuse_start(void)
{
	char exe[600];
	const char *argv[] = { exe, "--mountpoint", mnt_dir, "--dataset", DATASET,
			       "--meta.address", meta_sock, "--token_file", token_path,
			       "--meta.key_file", token_path, "--cache.dir", workers[0].cache,
			       "--store.endpoint", endpoint, "--store.credentials_file", credentials,
			       "--store.request_timeout", STORE_REQUEST_TIMEOUT, "--store.deadline",
			       STORE_DEADLINE, "--store.connect_timeout", "1s", "--worker.timeout",
			       WORKER_TIMEOUT, "--worker.first_byte_timeout", FIRST_BYTE,
			       "--membership.refresh", "200ms", NULL };
	int rc;

	snprintf(exe, sizeof(exe), "%s/granary-fuse", bin_dir);
	snprintf(fuse_proc.log, sizeof(fuse_proc.log), "%s/fuse.log", work);
	ck_assert_int_eq(mkdir(mnt_dir, 0755), 0);
	fuse_proc.pid = harness_spawn(argv, fuse_proc.log);
	rc = harness_wait_mount(&fuse_proc.pid, mnt_dir, 15000, 25);
	if (rc != 0)
		harness_dump_log(fuse_proc.log);
	ck_assert_msg(rc == 0, "granary-fuse did not mount %s (%d)", mnt_dir, rc);
}

/* --- the node plugin --------------------------------------------------------- */

static void csi_start(void)
{
	char exe[600], fuse[600], state[200], roots[200], cfg[200], yaml[1500], health[64];
	const char *argv[] = { exe, "--mode", "node", "--endpoint", csi_sock, "--node_id", "node-1",
			       "--meta.address", meta_sock, "--state_dir", state, "--allowed_roots",
			       roots, "--fuse_binary", fuse, "--fuse_config", cfg,
			       "--health_address", health, "--meta.key_file", keys.csi, NULL };
	uint64_t t0 = retry_now_ms();
	struct stat sb;

	snprintf(exe, sizeof(exe), "%s/granary-csi", bin_dir);
	snprintf(fuse, sizeof(fuse), "%s/granary-fuse", bin_dir);
	snprintf(state, sizeof(state), "%s/csi-state", work);
	snprintf(roots, sizeof(roots), "%s/csi-mnt", work);
	snprintf(cfg, sizeof(cfg), "%s/fuse.yaml", work);
	snprintf(health, sizeof(health), "127.0.0.1:%d", harness_free_port());
	snprintf(csi.log, sizeof(csi.log), "%s/csi.log", work);
	ck_assert_int_eq(mkdir(roots, 0755), 0);
	/* the plugin's daemons: worker 1's node, the suite's deadlines; the
	 * mount role's key is the cluster token, as in the chart */
	snprintf(yaml, sizeof(yaml),
		 "cache:\n  dir: %s\ntoken_file: %s\nmeta:\n  key_file: %s\n"
		 "store:\n  endpoint: %s\n  credentials_file: %s\n  request_timeout: "
		 STORE_REQUEST_TIMEOUT "\n  deadline: " STORE_DEADLINE "\n  connect_timeout: 1s\n"
		 "worker:\n  timeout: " WORKER_TIMEOUT "\n  first_byte_timeout: " FIRST_BYTE "\nmembership:\n  refresh: 200ms\n",
		 workers[0].cache, token_path, token_path, endpoint, credentials);
	harness_write_file(cfg, yaml, 0644);
	csi.pid = harness_spawn(argv, csi.log);
	while (stat(csi_sock + strlen("unix://"), &sb) != 0) {
		int status;

		if (proc_exited(&csi, &status)) {
			harness_dump_log(csi.log);
			ck_abort_msg("granary-csi exited at start (status %d)", status);
		}
		ck_assert_msg(retry_now_ms() - t0 < 15000, "granary-csi: no socket after 15 s");
		retry_sleep_ms(20);
	}
}

static void csi_stage(void)
{
	Csi__V1__NodeStageVolumeRequest req = CSI__V1__NODE_STAGE_VOLUME_REQUEST__INIT;
	Csi__V1__VolumeCapability cap = CSI__V1__VOLUME_CAPABILITY__INIT;
	Csi__V1__VolumeCapability__MountVolume mv = CSI__V1__VOLUME_CAPABILITY__MOUNT_VOLUME__INIT;
	Csi__V1__VolumeCapability__AccessMode am = CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__INIT;
	struct rpc_client_options opt = { .wait_for_ready = true };
	struct rpc_client *c = NULL;
	ProtobufCMessage *reply = NULL;
	struct error err;

	am.mode = CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__MULTI_NODE_READER_ONLY;
	cap.access_type_case = CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_MOUNT;
	cap.mount = &mv;
	cap.access_mode = &am;
	snprintf(staging, sizeof(staging), "%s/csi-mnt/staging", work);
	req.volume_id = DATASET;
	req.staging_target_path = staging;
	req.volume_capability = &cap;
	ck_assert_int_eq(rpc_client_new(csi_sock, &opt, &c, &err), ERR_OK);
	if (rpc_client_call(c, "/csi.v1.Node/NodeStageVolume", &req.base,
			    &csi__v1__node_stage_volume_response__descriptor, 60000, &reply,
			    &err) != ERR_OK) {
		harness_dump_log(csi.log);
		ck_abort_msg("NodeStageVolume: %s", err.msg);
	}
	protobuf_c_message_free_unpacked(reply, NULL);
	rpc_client_free(c);
}

/* The pid of the plugin's daemon for the volume (its record), or -1. */
static long plugin_daemon_pid(void)
{
	char path[300], buf[4096];
	const char *p;

	snprintf(path, sizeof(path), "%s/csi-state/node/%s.json", work, DATASET);
	if (fileio_read_text(path, buf, sizeof(buf)) <= 0)
		return -1;
	p = strstr(buf, "\"pid\":");
	return p ? strtol(p + 6, NULL, 10) : -1;
}

/* --- readers ----------------------------------------------------------------- */

enum phase { BEFORE, DURING, AFTER };

struct row_stats {
	uint64_t reads, failed, allowed, wrong_bytes, enotconn, longest_ms, longest_eio_ms;
	uint64_t s3_bytes;
	long held_twice;
	bool ran, recovered;
	unsigned clean_after[2];
	char first_bad[300];
};

static struct row_stats stats[NROWS];
static pthread_mutex_t stats_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int cur_row = -1;  /* -1: between rows, nothing counted */
static atomic_int phase = BEFORE;
static atomic_bool cold_on, stop_readers;
static const char *_Atomic read_dir;

struct reader {
	pthread_t t;
	int idx;
	bool direct;
	void *buf;
};

static void bad(struct row_stats *s, const char *fmt, ...)
{
	va_list ap;

	if (s->first_bad[0])
		return;
	va_start(ap, fmt);
	vsnprintf(s->first_bad, sizeof(s->first_bad), fmt, ap);
	va_end(ap);
}

/* One call's outcome in the row: n bytes (or -errnum) in ms. */
static void account(struct reader *r, int row, const struct object *o, int started_phase,
		    int errnum, uint64_t wrong, uint64_t ms, size_t off)
{
	struct row_stats *s;

	if (row < 0)
		return;
	s = &stats[row];
	pthread_mutex_lock(&stats_mu);
	s->reads++;
	if (ms > s->longest_ms)
		s->longest_ms = ms;
	if (ms > STALL_BOUND_MS)
		bad(s, "%s read of '%s' at %zu took %llu ms", r->direct ? "O_DIRECT" : "buffered",
		    o->key, off, (unsigned long long)ms);
	if (wrong) {
		s->wrong_bytes += wrong;
		bad(s, "%s read of '%s' at %zu: %llu wrong bytes", r->direct ? "O_DIRECT" : "buffered",
		    o->key, off, (unsigned long long)wrong);
	}
	if (errnum) {
		bool own = o->row == row;
		bool allowed = errnum == EIO && own && rows[row].store_gone &&
			       (row == F_OVERWRITE || started_phase == DURING);

		s->failed++;
		if (errnum == ENOTCONN)
			s->enotconn++;
		if (errnum == EIO && ms > s->longest_eio_ms)
			s->longest_eio_ms = ms;
		if (allowed)
			s->allowed++;
		else
			bad(s, "%s read of '%s' at %zu failed after %llu ms: %s",
			    r->direct ? "O_DIRECT" : "buffered", o->key, off, (unsigned long long)ms,
			    strerror(errnum));
	}
	pthread_mutex_unlock(&stats_mu);
}

/* Reads object o whole through dir; false on a failed call or wrong bytes. */
static bool read_object(struct reader *r, const char *dir, const struct object *o, int row)
{
	char path[600];
	size_t off = 0;
	int started = atomic_load(&phase), fd;
	uint64_t t0 = retry_now_ms();
	bool ok = true;

	snprintf(path, sizeof(path), "%s/%s", dir, o->key);
	fd = open(path, O_RDONLY | (r->direct ? O_DIRECT : 0));
	if (fd < 0) {
		account(r, row, o, started, errno, 0, retry_now_ms() - t0, 0);
		return false;
	}
	if (!r->direct)
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	for (;;) {
		ssize_t n;
		uint64_t wrong = 0, ms;

		t0 = retry_now_ms();
		n = pread(fd, r->buf, CHUNK, (off_t)off);
		ms = retry_now_ms() - t0;
		if (n < 0) {
			account(r, row, o, started, errno, 0, ms, off);
			ok = false;
			break;
		}
		if (n == 0) {
			if (off != o->size)
				account(r, row, o, started, 0, o->size - off, ms, off);
			ok = ok && off == o->size;
			break;
		}
		for (ssize_t k = 0; k < n; k++)
			if (off + (size_t)k >= o->size ||
			    ((unsigned char *)r->buf)[k] != o->data[off + (size_t)k])
				wrong++;
		account(r, row, o, started, 0, wrong, ms, off);
		if (wrong)
			ok = false;
		off += (size_t)n;
	}
	close(fd);
	return ok;
}

static void *reader_main(void *arg)
{
	struct reader *r = arg;

	while (!atomic_load(&stop_readers)) {
		int row = atomic_load(&cur_row), started = atomic_load(&phase);
		bool cold = atomic_load(&cold_on), clean = true;
		const char *dir = atomic_load(&read_dir);

		for (int i = 0; i < NOBJ && !atomic_load(&stop_readers); i++) {
			if (objs[i].row >= 0 && (!cold || objs[i].row != row))
				continue;
			if (!read_object(r, dir, &objs[i], row) &&
			    !(row == F_OVERWRITE && objs[i].row == row))
				clean = false;
		}
		if (row < 0 || atomic_load(&cur_row) != row)
			continue;
		if (clean && cold && started == AFTER) {
			pthread_mutex_lock(&stats_mu);
			stats[row].clean_after[r->idx]++;
			pthread_mutex_unlock(&stats_mu);
		}
	}
	return NULL;
}

/* --- faults ----------------------------------------------------------------- */

static long flipped;

/* Flips one byte in the middle of a block file's data, past its header. */
static int flip_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	unsigned char b;
	off_t at;
	int fd;

	(void)ftw;
	if (flag != FTW_F || sb->st_size <= 4096)
		return 0;
	at = 4096 + (sb->st_size - 4096) / 2;
	fd = open(path, O_RDWR);
	if (fd < 0)
		return 0; /* evicted meanwhile */
	if (pread(fd, &b, 1, at) == 1) {
		b ^= 0x5a;
		if (pwrite(fd, &b, 1, at) == 1)
			flipped++;
	}
	close(fd);
	return 0;
}

/* The names of the block files of every worker (one owner each), and how
 * many of them more than one worker holds. */
#define MAX_NAMES 8192
static char (*names)[40];
static size_t nnames;

static int name_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	if (flag == FTW_F && nnames < MAX_NAMES)
		snprintf(names[nnames++], sizeof(names[0]), "%s", path + ftw->base);
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

static long blocks_held_twice(void)
{
	char path[300];
	long twice = 0;

	names = calloc(MAX_NAMES, sizeof(*names));
	ck_assert_ptr_nonnull(names);
	nnames = 0;
	for (int i = 0; i < NWORKERS; i++) {
		snprintf(path, sizeof(path), "%s/blocks", workers[i].cache);
		nftw(path, name_entry, 16, FTW_PHYS);
	}
	qsort(names, nnames, sizeof(names[0]), name_cmp);
	for (size_t i = 1; i < nnames; i++)
		if (strcmp(names[i], names[i - 1]) == 0 && (i < 2 || strcmp(names[i - 1], names[i - 2]) != 0))
			twice++;
	free(names);
	return twice;
}

/* Fills the tmpfs of a worker's cache to the last byte. */
static void fill_disk(const struct worker *w)
{
	static char block[1 << 16];
	char path[300];
	int fd;

	snprintf(path, sizeof(path), "%s/filler", w->cache);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_msg(fd >= 0, "open '%s': %s", path, strerror(errno));
	memset(block, 0xee, sizeof(block));
	while (write(fd, block, sizeof(block)) > 0)
		;
	ck_assert_msg(errno == ENOSPC, "filling '%s': %s", path, strerror(errno));
	/* the last partial page too */
	while (write(fd, block, 512) > 0)
		;
	close(fd);
}

static void hold(uint64_t ms)
{
	retry_sleep_ms(ms);
}

/* Makes the fault of row and holds it; returns once it is undone and the
 * cluster is whole again. The row's own objects are read from the moment
 * the fault is made. */
static void run_fault(int row)
{
	struct worker *w2 = &workers[1];
	char path[300];

	switch (row) {
	case F_NONE:
		break;
	case F_WORKER_KILL:
		kill(w2->p.pid, SIGKILL);
		waitpid(w2->p.pid, NULL, 0);
		w2->p.pid = 0;
		break;
	case F_WORKER_STOP:
		kill(w2->p.pid, SIGSTOP);
		break;
	case F_META_KILL:
		proc_kill(&meta);
		break;
	case F_S3_STOP:
		signal_s3(SIGSTOP);
		break;
	case F_S3_KILL:
		signal_s3(SIGKILL);
		break;
	case F_S3_SLOW:
		SH_OK("ip netns exec %s tc qdisc add dev %s root tbf rate 4mbit burst 16kb latency 200ms",
		      netns, veth_ns);
		break;
	case F_S3_LOSSY:
		SH_OK("ip netns exec %s nft add rule inet granary_faults loss tcp sport %d numgen random mod 10 '<' 3 drop",
		      netns, s3_port);
		break;
	case F_DISK_FULL:
		for (int i = 0; i < NWORKERS; i++)
			fill_disk(&workers[i]);
		break;
	case F_CORRUPT:
		flipped = 0;
		for (int i = 0; i < NWORKERS; i++) {
			snprintf(path, sizeof(path), "%s/blocks", workers[i].cache);
			nftw(path, flip_entry, 16, FTW_PHYS);
		}
		ck_assert_msg(flipped > 0, "no block file to corrupt");
		break;
	case F_OVERWRITE:
		overwrite_row(row);
		break;
	case F_FUSE_KILL:
		break;
	}
	atomic_store(&cold_on, true);
	atomic_store(&phase, DURING);

	switch (row) {
	case F_WORKER_KILL:
		hold(3000);
		worker_start(w2);
		wait_joined(NWORKERS);
		break;
	case F_WORKER_STOP:
		hold(4000);
		kill(w2->p.pid, SIGCONT);
		wait_joined(NWORKERS);
		break;
	case F_META_KILL:
		hold(3000);
		meta_start();
		wait_joined(NWORKERS);
		break;
	case F_S3_STOP:
		hold(7000);
		signal_s3(SIGCONT);
		break;
	case F_S3_KILL:
		hold(7000);
		s3_start();
		break;
	case F_S3_SLOW:
		hold(6000);
		SH_OK("ip netns exec %s tc qdisc del dev %s root", netns, veth_ns);
		break;
	case F_S3_LOSSY:
		hold(6000);
		SH_OK("ip netns exec %s nft flush chain inet granary_faults loss", netns);
		break;
	case F_DISK_FULL:
		hold(5000);
		for (int i = 0; i < NWORKERS; i++) {
			snprintf(path, sizeof(path), "%s/filler", workers[i].cache);
			unlink(path);
		}
		break;
	case F_FUSE_KILL:
		for (int k = 0; k < 3; k++) {
			long pid = plugin_daemon_pid(), next;
			uint64_t t0 = retry_now_ms();

			hold(1000);
			ck_assert_msg(pid > 0 && kill((pid_t)pid, SIGKILL) == 0,
				      "no daemon of the node plugin to kill (record pid %ld)", pid);
			while ((next = plugin_daemon_pid()) == pid || next <= 0) {
				ck_assert_msg(retry_now_ms() - t0 < 15000,
					      "the node plugin started no successor of %ld", pid);
				retry_sleep_ms(10);
			}
		}
		hold(1000);
		break;
	default:
		hold(3000);
		break;
	}
	atomic_store(&phase, AFTER);
}

static void run_row(int row)
{
	const char *dir = row == F_FUSE_KILL ? staging : mnt_dir;
	uint64_t s3_before = s3_bytes(), t0;
	bool done = false;
	long held;

	memset(&stats[row], 0, sizeof(stats[row]));
	stats[row].ran = true;
	atomic_store(&cold_on, false);
	atomic_store(&phase, BEFORE);
	atomic_store(&read_dir, dir);
	atomic_store(&cur_row, row);
	retry_sleep_ms(500);
	run_fault(row);
	/* each reader reads everything once more, cleanly */
	t0 = retry_now_ms();
	while (!done && retry_now_ms() - t0 < 40000) {
		retry_sleep_ms(50);
		pthread_mutex_lock(&stats_mu);
		done = stats[row].clean_after[0] > 0 && stats[row].clean_after[1] > 0;
		pthread_mutex_unlock(&stats_mu);
	}
	atomic_store(&cur_row, -1);
	pthread_mutex_lock(&stats_mu);
	stats[row].recovered = done;
	stats[row].s3_bytes = s3_bytes() - s3_before;
	pthread_mutex_unlock(&stats_mu);
	/* one owner per block once the membership has settled
	 * (placement.settle) */
	t0 = retry_now_ms();
	while ((held = blocks_held_twice()) > 0 && retry_now_ms() - t0 < SETTLE_MS + 4000)
		retry_sleep_ms(100);
	pthread_mutex_lock(&stats_mu);
	stats[row].held_twice = held;
	if (held)
		bad(&stats[row], "%ld blocks held by two workers %u ms after the row", held,
		    SETTLE_MS + 4000);
	if (!done)
		bad(&stats[row], "the readers did not read everything cleanly within 40 s of the end of the fault");
	/* repeated warnings are rate limited: meta away for 3 s with the
	 * mount refreshing every 200 ms, or an object overwritten and read
	 * again and again, is one line each */
	if (row == F_OVERWRITE && harness_file_count(fuse_proc.log, "object changed since the snapshot") > 1)
		bad(&stats[row], "the mount logged %d lines for 2 objects changed since the snapshot",
		    harness_file_count(fuse_proc.log, "object changed since the snapshot"));
	if (row == F_META_KILL && harness_file_count(fuse_proc.log, "cannot refresh the worker list") > 1)
		bad(&stats[row], "the mount warned %d times that it could not refresh the worker list",
		    harness_file_count(fuse_proc.log, "cannot refresh the worker list"));
	pthread_mutex_unlock(&stats_mu);
}

static bool row_ok(int row)
{
	const struct row_stats *s = &stats[row];

	return s->wrong_bytes == 0 && s->enotconn == 0 && s->failed == s->allowed &&
	       s->longest_ms <= STALL_BOUND_MS && s->recovered && s->held_twice == 0 &&
	       !s->first_bad[0];
}

static void print_table(FILE *f)
{
	fprintf(f, "\nfault suite: 3 workers, meta, granary-fuse (cluster mode; under the node plugin in "
		   "the last row); block %u KiB; store.request_timeout " STORE_REQUEST_TIMEOUT
		   ", store.deadline " STORE_DEADLINE ", worker.first_byte_timeout " FIRST_BYTE
		   ", worker.timeout " WORKER_TIMEOUT "; a read's deadline %u ms; bound on one call %u ms\n\n",
		BS >> 10, READ_DEADLINE_MS, STALL_BOUND_MS);
	fprintf(f, "| fault | reads | failed (allowed) | wrong bytes | ENOTCONN | longest call ms | "
		   "slowest EIO ms | S3 bytes sent | blocks held twice | goal |\n");
	fprintf(f, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
	for (int i = 0; i < NROWS; i++) {
		const struct row_stats *s = &stats[i];

		fprintf(f, "| %s | %llu | %llu (%llu) | %llu | %llu | %llu | %llu | %llu | %ld | %s |\n",
			rows[i].name, (unsigned long long)s->reads, (unsigned long long)s->failed,
			(unsigned long long)s->allowed, (unsigned long long)s->wrong_bytes,
			(unsigned long long)s->enotconn, (unsigned long long)s->longest_ms,
			(unsigned long long)s->longest_eio_ms, (unsigned long long)s->s3_bytes,
			s->held_twice,
			!s->ran ? "not run" : row_ok(i) ? "met" : rows[i].known ? "KNOWN FAILURE" : "MISSED");
	}
	for (int i = 0; i < NROWS; i++) {
		if (row_ok(i))
			continue;
		fprintf(f, "\n%s: %s", rows[i].name, stats[i].first_bad);
		if (rows[i].known)
			fprintf(f, " (known: %s)", rows[i].known);
	}
	fprintf(f, "\n");
	fflush(f);
}

/* --- the suite ---------------------------------------------------------------- */

static void cluster_up(void)
{
	struct meta_client *c;
	Granary__V1__DatasetSpec spec = GRANARY__V1__DATASET_SPEC__INIT;
	Granary__V1__DatasetOptions o = GRANARY__V1__DATASET_OPTIONS__INIT;
	Granary__V1__Dataset *d = NULL;
	struct error err;

	snprintf(token_path, sizeof(token_path), "%s/token", work);
	snprintf(meta_sock, sizeof(meta_sock), "unix://%s/meta.sock", work);
	snprintf(meta_data, sizeof(meta_data), "%s/meta-data", work);
	snprintf(meta.log, sizeof(meta.log), "%s/meta.log", work);
	snprintf(mnt_dir, sizeof(mnt_dir), "%s/mnt", work);
	snprintf(csi_sock, sizeof(csi_sock), "unix://%s/csi.sock", work);
	harness_write_file(token_path, SECRET "\n", 0600);
	harness_meta_keys(work, &keys);
	meta_start();
	spec.name = DATASET;
	spec.source_uri = source_uri;
	spec.options = &o;
	o.block_size = BS;
	c = meta_client();
	ck_assert_msg(meta_client_register(c, &spec, &d, &err) == ERR_OK, "register: %s", err.msg);
	ck_assert_uint_eq(d->files, NOBJ);
	granary__v1__dataset__free_unpacked(d, NULL);
	meta_client_free(c);
	for (int i = 0; i < NWORKERS; i++) {
		struct worker *w = &workers[i];

		snprintf(w->id, sizeof(w->id), "w%d", i + 1);
		snprintf(w->cache, sizeof(w->cache), "%s/cache-w%d", work, i + 1);
		snprintf(w->p.log, sizeof(w->p.log), "%s/w%d.log", work, i + 1);
		ck_assert_int_eq(mkdir(w->cache, 0755), 0);
		ck_assert_msg(mount("tmpfs", w->cache, "tmpfs", 0, "size=64m") == 0,
			      "tmpfs at %s: %s", w->cache, strerror(errno));
		w->port = harness_free_port();
		worker_start(w);
	}
	wait_joined(NWORKERS);
	fuse_start();
	csi_start();
	csi_stage();
}

/* GRANARY_FAULTS_ROWS=2,5 runs only those rows (0 is "no fault"). */
static bool row_selected(int row)
{
	const char *only = getenv("GRANARY_FAULTS_ROWS");
	char *end;

	if (!only || !*only)
		return true;
	for (const char *p = only; *p; p = *end ? end + 1 : end)
		if (strtol(p, &end, 10) == row)
			return true;
		else if (end == p)
			break;
	return false;
}

START_TEST(test_faults_table)
{
	struct reader r[2] = { { .idx = 0, .direct = false }, { .idx = 1, .direct = true } };
	const char *table = getenv("GRANARY_FAULTS_TABLE");
	int missed = 0;

	cluster_up();
	atomic_store(&read_dir, mnt_dir);
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(posix_memalign(&r[i].buf, 4096, CHUNK), 0);
		ck_assert_int_eq(pthread_create(&r[i].t, NULL, reader_main, &r[i]), 0);
	}
	/* a first pass warms the caches */
	retry_sleep_ms(1000);
	for (int row = 0; row < NROWS; row++) {
		uint64_t t0 = retry_now_ms();

		if (!row_selected(row)) {
			stats[row].recovered = true;
			continue;
		}
		run_row(row);
		fprintf(stderr, "faults: %s: %llu ms, %s\n", rows[row].name,
			(unsigned long long)(retry_now_ms() - t0), row_ok(row) ? "goal met" : "goal missed");
	}
	atomic_store(&stop_readers, true);
	for (int i = 0; i < 2; i++) {
		pthread_join(r[i].t, NULL);
		free(r[i].buf);
	}
	print_table(stdout);
	if (table) {
		FILE *f = fopen(table, "w");

		if (f) {
			print_table(f);
			fclose(f);
		}
	}
	for (int i = 0; i < NROWS; i++)
		if (!row_ok(i) && !rows[i].known)
			missed++;
	if (missed) {
		char cmd[600];

		snprintf(cmd, sizeof(cmd), "grep -h 'level=warn\\|level=error' '%s/fuse.log' '%s/csi.log' | tail -n 40 >&2",
			 work, work);
		if (sh("%s", cmd) != 0)
			harness_dump_log(fuse_proc.log);
	}
	ck_assert_msg(missed == 0, "%d rows missed their goal (table above)", missed);
	proc_kill(&csi);
	proc_kill(&fuse_proc);
	for (int i = 0; i < NWORKERS; i++)
		proc_kill(&workers[i].p);
	proc_kill(&meta);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("faults");
	TCase *tc = tcase_create("faults");

	tcase_add_unchecked_fixture(tc, env_up, env_down);
	tcase_set_timeout(tc, 500);
	tcase_add_test(tc, test_faults_table);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
