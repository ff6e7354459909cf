/*
 * test_node.c - granary-csi --mode all as a real process (fork/exec of the
 * built binaries, $GRANARY_BIN_DIR) with a real granary-meta, the S3
 * fixture ($GRANARY_S3_DIR, bucket granary-e2e) and real FUSE mounts,
 * driven over its CSI socket like kubelet and the provisioner would:
 *
 *   CreateVolume -> NodeStage twice (the second adopts the same daemon) ->
 *   NodePublish twice -> read files through the target, writes refused ->
 *   kill -9 the plugin, start it again: the same daemon is re-adopted ->
 *   kill -9 the daemon: a successor serves the same mount (--takeover) ->
 *   NodeUnpublish / NodeUnstage -> no mount, no process, no record left ->
 *   DeleteVolume.
 *
 * And meta losing its data_dir: CreateVolume's volume context carries the
 * registration, so NodeStage with it registers the dataset again (two
 * stages of the volume at once both succeed) and the files read back; a
 * context without it is NOT_FOUND saying how to recover.
 *
 * And the volume condition (NodeGetVolumeStats, /metrics on the health
 * address): normal while the mount serves; abnormal, with why, while the
 * daemon is stopped (a hung mount) and while it is killed and no successor
 * can start (its binary, reached through a link in the test's directory,
 * removed); normal again once a successor takes over.
 *
 * Needs root and /dev/fuse. GRANARY_CSI_LOG=FILE keeps the plugin's log.
 */
#include <check.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/fileio.h"
#include "common/fusemount.h"
#include "common/retry.h"
#include "csi.pb-c.h"
#include "e2e/harness.h"
#include "rpc/rpc_client.h"
#include "store/store.h"
#include "unit/check_main.h"

#define BUCKET "granary-e2e"

static char endpoint[256], credentials[512], bin_dir[512], key_id[128], secret[128];
static char work[128], prefix[128], csi_addr[200], meta_addr[200], health_addr[64];
static struct harness_meta_keys keys; /* meta's csi role key, granary-csi signs with it */
static pid_t meta_pid, csi_pid;

/* ---- environment ------------------------------------------------------- */

static void read_env(void)
{
	char line[1024];
	FILE *f;

	harness_s3_env(endpoint, sizeof(endpoint), credentials, sizeof(credentials));
	harness_bin_dir(bin_dir, sizeof(bin_dir));
	f = fopen(credentials, "r");
	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (sscanf(line, "aws_access_key_id = %127s", key_id) == 1)
			continue;
		sscanf(line, "aws_secret_access_key = %127s", secret);
	}
	fclose(f);
	ck_assert(key_id[0] && secret[0]);
}

static const char *const files[][2] = {
	{ "train/a.rec", "first shard\n" },
	{ "train/b.rec", "second shard, read after a takeover\n" },
	{ "val/c.rec", "third\n" },
};

static void setup(void)
{
	struct store_config cfg = { 0 };
	struct store *st = NULL;
	struct error err;
	char path[300], key[300];

	signal(SIGPIPE, SIG_IGN);
	ck_assert_msg(geteuid() == 0 && access("/dev/fuse", R_OK | W_OK) == 0,
		      "needs root and /dev/fuse");
	read_env();
	harness_tmpdir(work, sizeof(work), "/tmp/granary-csi-node-XXXXXX");
	snprintf(prefix, sizeof(prefix), "csi-node-%d-%llu/", (int)getpid(),
		 (unsigned long long)retry_now_ms());
	cfg.endpoint = endpoint;
	cfg.credentials_file = credentials;
	cfg.request_timeout_ms = 10000;
	cfg.deadline_ms = 30000;
	ck_assert_msg(store_open("s3://" BUCKET, &cfg, &st, &err) == ERR_OK, "%s", err.msg);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(key, sizeof(key), "%s%s", prefix, files[i][0]);
		ck_assert_msg(store_put(st, key, files[i][1], strlen(files[i][1]), &err) == ERR_OK,
			      "%s", err.msg);
	}
	store_free(st);
	snprintf(path, sizeof(path), "%s/token", work);
	harness_write_file(path, "0123456789abcdef0123456789abcdef", 0600);
	harness_meta_keys(work, &keys);
	snprintf(path, sizeof(path), "%s/fuse.yaml", work);
	{
		char yaml[600];

		/* As in the chart, the mount role's key is the cluster token. */
		snprintf(yaml, sizeof(yaml),
			 "cache:\n  dir: %s/cache\n  capacity: 64MiB\ntoken_file: %s/token\n"
			 "meta:\n  key_file: %s/token\n",
			 work, work, work);
		harness_write_file(path, yaml, 0644);
	}
	snprintf(path, sizeof(path), "%s/mnt", work);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	snprintf(meta_addr, sizeof(meta_addr), "unix://%s/meta.sock", work);
	snprintf(csi_addr, sizeof(csi_addr), "unix://%s/csi.sock", work);
	snprintf(health_addr, sizeof(health_addr), "127.0.0.1:%d", harness_free_port());
	/* The plugin starts granary-fuse through a link the tests may remove,
	 * so that no successor can start. */
	{
		char real[600], link[200];

		snprintf(real, sizeof(real), "%s/granary-fuse", bin_dir);
		snprintf(link, sizeof(link), "%s/granary-fuse", work);
		ck_assert_int_eq(symlink(real, link), 0);
	}
}

static void teardown(void)
{
	char cmd[1024];

	if (csi_pid > 0)
		kill(csi_pid, SIGKILL), waitpid(csi_pid, NULL, 0);
	if (meta_pid > 0)
		kill(meta_pid, SIGKILL), waitpid(meta_pid, NULL, 0);
	csi_pid = meta_pid = 0;
	if (getenv("GRANARY_CSI_LOG")) {
		/* Keep the plugin's log (and the daemons' lines in it) for a look. */
		snprintf(cmd, sizeof(cmd), "cat '%s/csi.log' >> '%s'", work, getenv("GRANARY_CSI_LOG"));
		if (system(cmd) != 0)
			fprintf(stderr, "no log kept\n");
	}
	/* Daemons a failed test left (they outlive the plugin by design), what
	 * it left mounted under work, then the tree. */
	snprintf(cmd, sizeof(cmd),
		 "for r in '%s'/state/node/*.json; do [ -f \"$r\" ] || continue; "
		 "p=$(sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p' \"$r\"); "
		 "[ -n \"$p\" ] && [ \"$p\" -gt 0 ] && kill -9 \"$p\"; done; "
		 "awk -v w='%s' 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r | "
		 "while read -r m; do umount -l \"$m\"; done; rm -rf '%s'",
		 work, work, work);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", work);
}

/* ---- processes --------------------------------------------------------- */

static void dump_log(void)
{
	char path[200];

	snprintf(path, sizeof(path), "%s/csi.log", work);
	harness_dump_log(path);
}

static void wait_socket(const char *addr, pid_t pid)
{
	struct stat st;
	uint64_t t0 = retry_now_ms();

	while (stat(addr + strlen("unix://"), &st) != 0) {
		ck_assert_msg(waitpid(pid, NULL, WNOHANG) == 0, "%s: process exited at start", addr);
		ck_assert_msg(retry_now_ms() - t0 < 15000, "%s: no socket after 15 s", addr);
		retry_sleep_ms(20);
	}
}

/* cluster_credentials: meta gets the fixture's store as its own
 * store.endpoint and the fixture's credentials as its store.credentials_file,
 * as the Helm chart gives meta the cluster's (meta signs with its own
 * credentials only for its own store). */
static void start_meta(bool cluster_credentials)
{
	char exe[600], data[200], log[200];
	char mount_key[200];
	const char *argv[] = { exe, "--listen", meta_addr, "--data_dir", data,
			       "--auth.csi_key_file", keys.csi, "--auth.mount_key_file", mount_key,
			       "--store.endpoint", endpoint,
			       cluster_credentials ? "--store.credentials_file" : NULL, credentials,
			       NULL };

	snprintf(mount_key, sizeof(mount_key), "%s/token", work);

	snprintf(exe, sizeof(exe), "%s/granary-meta", bin_dir);
	snprintf(data, sizeof(data), "%s/meta", work);
	snprintf(log, sizeof(log), "%s/meta.log", work);
	meta_pid = harness_spawn(argv, log);
	wait_socket(meta_addr, meta_pid);
}

static void start_csi(void)
{
	char exe[600], fuse[600], state[200], roots[200], cfg[200], log[200];
	const char *argv[] = { exe, "--mode", "all", "--endpoint", csi_addr, "--node_id", "node-1",
			       "--meta.address", meta_addr, "--state_dir", state, "--allowed_roots",
			       roots, "--fuse_binary", fuse, "--fuse_config", cfg,
			       "--health_address", health_addr, "--meta.key_file", keys.csi,
			       /* the endpoint StorageClasses name: meta's, as the chart renders */
			       "--store.endpoint", endpoint, NULL };
	char sock[200];

	snprintf(exe, sizeof(exe), "%s/granary-csi", bin_dir);
	snprintf(fuse, sizeof(fuse), "%s/granary-fuse", work);
	snprintf(state, sizeof(state), "%s/state", work);
	snprintf(roots, sizeof(roots), "%s/mnt", work);
	snprintf(cfg, sizeof(cfg), "%s/fuse.yaml", work);
	snprintf(log, sizeof(log), "%s/csi.log", work);
	snprintf(sock, sizeof(sock), "%s/csi.sock", work);
	unlink(sock);
	csi_pid = harness_spawn(argv, log);
	wait_socket(csi_addr, csi_pid);
}

/* ---- CSI calls --------------------------------------------------------- */

static enum error_code call(const char *method, const void *req,
			    const ProtobufCMessageDescriptor *reply_desc, struct error *err)
{
	struct rpc_client_options opt = { .wait_for_ready = true };
	struct rpc_client *c = NULL;
	ProtobufCMessage *reply = NULL;
	enum error_code rc;

	ck_assert_int_eq(rpc_client_new(csi_addr, &opt, &c, err), ERR_OK);
	rc = rpc_client_call(c, method, req, reply_desc, 120000, &reply, err);
	if (reply)
		protobuf_c_message_free_unpacked(reply, NULL);
	rpc_client_free(c);
	return rc;
}

static void call_ok(const char *method, const void *req, const ProtobufCMessageDescriptor *desc)
{
	struct error err;

	if (call(method, req, desc, &err) != ERR_OK) {
		dump_log();
		ck_abort_msg("%s: %s", method, err.msg);
	}
}

/* A single mount capability in the mode Kubernetes' ReadOnlyMany gives. */
struct cap {
	Csi__V1__VolumeCapability c;
	Csi__V1__VolumeCapability__MountVolume m;
	Csi__V1__VolumeCapability__AccessMode a;
};

static void cap_init(struct cap *k)
{
	csi__v1__volume_capability__init(&k->c);
	csi__v1__volume_capability__mount_volume__init(&k->m);
	csi__v1__volume_capability__access_mode__init(&k->a);
	k->a.mode = CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__MULTI_NODE_READER_ONLY;
	k->c.access_type_case = CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_MOUNT;
	k->c.mount = &k->m;
	k->c.access_mode = &k->a;
}

/* A volume_context as CreateVolume returned it. */
struct context {
	char key[16][64];
	char value[16][300];
	size_t n;
};

static const char *context_get(const struct context *c, const char *key)
{
	for (size_t i = 0; i < c->n; i++)
		if (strcmp(c->key[i], key) == 0)
			return c->value[i];
	return NULL;
}

static void create_volume(char *id, size_t size, struct context *ctx)
{
	Csi__V1__CreateVolumeRequest req = CSI__V1__CREATE_VOLUME_REQUEST__INIT;
	Csi__V1__CreateVolumeRequest__ParametersEntry p[2] = {
		CSI__V1__CREATE_VOLUME_REQUEST__PARAMETERS_ENTRY__INIT,
		CSI__V1__CREATE_VOLUME_REQUEST__PARAMETERS_ENTRY__INIT
	};
	Csi__V1__CreateVolumeRequest__SecretsEntry s[2] = {
		CSI__V1__CREATE_VOLUME_REQUEST__SECRETS_ENTRY__INIT,
		CSI__V1__CREATE_VOLUME_REQUEST__SECRETS_ENTRY__INIT
	};
	Csi__V1__CreateVolumeRequest__ParametersEntry *pp[2] = { &p[0], &p[1] };
	Csi__V1__CreateVolumeRequest__SecretsEntry *sp[2] = { &s[0], &s[1] };
	struct rpc_client_options opt = { .wait_for_ready = true };
	Csi__V1__CreateVolumeResponse *reply = NULL;
	struct rpc_client *c = NULL;
	Csi__V1__VolumeCapability *caps[1];
	struct cap k;
	struct error err;
	char source[300];

	cap_init(&k);
	caps[0] = &k.c;
	snprintf(source, sizeof(source), "s3://" BUCKET "/%s", prefix);
	p[0].key = "source", p[0].value = source;
	p[1].key = "endpoint", p[1].value = endpoint;
	s[0].key = "accessKeyID", s[0].value = key_id;
	s[1].key = "secretAccessKey", s[1].value = secret;
	req.name = "pvc-node-e2e";
	req.n_parameters = 2, req.parameters = pp;
	req.n_secrets = 2, req.secrets = sp;
	req.n_volume_capabilities = 1, req.volume_capabilities = caps;
	ck_assert_int_eq(rpc_client_new(csi_addr, &opt, &c, &err), ERR_OK);
	if (rpc_client_call(c, "/csi.v1.Controller/CreateVolume", &req.base,
			    &csi__v1__create_volume_response__descriptor, 120000,
			    (ProtobufCMessage **)&reply, &err) != ERR_OK) {
		dump_log();
		ck_abort_msg("CreateVolume: %s", err.msg);
	}
	ck_assert_str_eq(reply->volume->volume_id, "pvc-node-e2e");
	ck_assert_int_gt(reply->volume->capacity_bytes, 0);
	/* The dataset and the registration, normalised. */
	ck_assert_uint_eq(reply->volume->n_volume_context, 8);
	ctx->n = reply->volume->n_volume_context;
	for (size_t i = 0; i < ctx->n; i++) {
		snprintf(ctx->key[i], sizeof(ctx->key[i]), "%s", reply->volume->volume_context[i]->key);
		snprintf(ctx->value[i], sizeof(ctx->value[i]), "%s",
			 reply->volume->volume_context[i]->value);
	}
	ck_assert_str_eq(context_get(ctx, "dataset"), "pvc-node-e2e");
	ck_assert_str_eq(context_get(ctx, "source"), source);
	ck_assert_str_eq(context_get(ctx, "endpoint"), endpoint);
	ck_assert_str_eq(context_get(ctx, "region"), "");
	ck_assert_str_eq(context_get(ctx, "blockSize"), "");
	ck_assert_str_eq(context_get(ctx, "cachePolicy"), "");
	ck_assert_str_eq(context_get(ctx, "pin"), "false");
	ck_assert_str_eq(context_get(ctx, "preload"), "false");
	snprintf(id, size, "%s", reply->volume->volume_id);
	csi__v1__create_volume_response__free_unpacked(reply, NULL);
	rpc_client_free(c);
}

/* NodeStageVolume with the node-stage secret and ctx (NULL: no context). */
static enum error_code stage_with(const char *id, const char *staging, const struct context *ctx,
				  struct error *err)
{
	Csi__V1__NodeStageVolumeRequest req = CSI__V1__NODE_STAGE_VOLUME_REQUEST__INIT;
	Csi__V1__NodeStageVolumeRequest__SecretsEntry s[2] = {
		CSI__V1__NODE_STAGE_VOLUME_REQUEST__SECRETS_ENTRY__INIT,
		CSI__V1__NODE_STAGE_VOLUME_REQUEST__SECRETS_ENTRY__INIT
	};
	Csi__V1__NodeStageVolumeRequest__SecretsEntry *sp[2] = { &s[0], &s[1] };
	Csi__V1__NodeStageVolumeRequest__VolumeContextEntry c[16];
	Csi__V1__NodeStageVolumeRequest__VolumeContextEntry *cp[16];
	struct cap k;

	cap_init(&k);
	s[0].key = "accessKeyID", s[0].value = key_id;
	s[1].key = "secretAccessKey", s[1].value = secret;
	req.volume_id = (char *)id;
	req.staging_target_path = (char *)staging;
	req.volume_capability = &k.c;
	req.n_secrets = 2, req.secrets = sp;
	for (size_t i = 0; ctx && i < ctx->n; i++) {
		csi__v1__node_stage_volume_request__volume_context_entry__init(&c[i]);
		c[i].key = (char *)ctx->key[i];
		c[i].value = (char *)ctx->value[i];
		cp[i] = &c[i];
	}
	req.n_volume_context = ctx ? ctx->n : 0;
	req.volume_context = cp;
	return call("/csi.v1.Node/NodeStageVolume", &req,
		    &csi__v1__node_stage_volume_response__descriptor, err);
}

static void stage(const char *id, const char *staging)
{
	struct error err;

	if (stage_with(id, staging, NULL, &err) != ERR_OK) {
		dump_log();
		ck_abort_msg("NodeStageVolume: %s", err.msg);
	}
}

static void unstage(const char *id, const char *staging)
{
	Csi__V1__NodeUnstageVolumeRequest req = CSI__V1__NODE_UNSTAGE_VOLUME_REQUEST__INIT;

	req.volume_id = (char *)id;
	req.staging_target_path = (char *)staging;
	call_ok("/csi.v1.Node/NodeUnstageVolume", &req,
		&csi__v1__node_unstage_volume_response__descriptor);
}

static void publish(const char *id, const char *staging, const char *target)
{
	Csi__V1__NodePublishVolumeRequest req = CSI__V1__NODE_PUBLISH_VOLUME_REQUEST__INIT;
	struct cap k;

	cap_init(&k);
	req.volume_id = (char *)id;
	req.staging_target_path = (char *)staging;
	req.target_path = (char *)target;
	req.volume_capability = &k.c;
	req.readonly = true;
	call_ok("/csi.v1.Node/NodePublishVolume", &req,
		&csi__v1__node_publish_volume_response__descriptor);
}

static void unpublish(const char *id, const char *target)
{
	Csi__V1__NodeUnpublishVolumeRequest req = CSI__V1__NODE_UNPUBLISH_VOLUME_REQUEST__INIT;

	req.volume_id = (char *)id;
	req.target_path = (char *)target;
	call_ok("/csi.v1.Node/NodeUnpublishVolume", &req,
		&csi__v1__node_unpublish_volume_response__descriptor);
}

/* Meta and the plugin, a volume staged and published to one pod (id,
 * staging and target hold 256, 300 and 300 bytes). */
static void start_published(char *id, char *staging, char *target)
{
	struct context ctx;

	start_meta(false);
	start_csi();
	create_volume(id, 256, &ctx);
	snprintf(staging, 300, "%s/mnt/plugins/csi.granary.io/%s/globalmount", work, id);
	snprintf(target, 300, "%s/mnt/pods/a/volumes/%s/mount", work, id);
	stage(id, staging);
	publish(id, staging, target);
}

/* ---- checks ------------------------------------------------------------ */

/* The pid the plugin's record names for the volume. */
static long record_pid(const char *id)
{
	char path[300], buf[4096];
	const char *p;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/state/node/%s.json", work, id);
	n = fileio_read_text(path, buf, sizeof(buf));
	if (n < 0)
		return -1;
	ck_assert_int_gt(n, 0);
	p = strstr(buf, "\"pid\":");
	ck_assert_ptr_nonnull(p);
	return strtol(p + 6, NULL, 10);
}

static void expect_content(const char *dir, const char *name, const char *want)
{
	char path[400], buf[256];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	ck_assert_msg(fileio_read_text(path, buf, sizeof(buf)) >= 0, "read '%s': %s", path,
		      strerror(errno));
	ck_assert_str_eq(buf, want);
}

/* The read-ahead of the mount at path, in KiB, from its bdi; -1 when
 * none is found. */
static long mount_read_ahead_kb(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char line[4096], sys[128];
	unsigned major = 0, minor = 0, ma, mi;
	bool found = false;
	long kb = -1;

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f))
		if (fusemount_parse_line(line, path, &ma, &mi)) {
			major = ma;
			minor = mi;
			found = true;
		}
	fclose(f);
	if (!found)
		return -1;
	snprintf(sys, sizeof(sys), "/sys/class/bdi/%u:%u/read_ahead_kb", major, minor);
	f = fopen(sys, "r");
	if (f && fscanf(f, "%ld", &kb) != 1)
		kb = -1;
	if (f)
		fclose(f);
	return kb;
}

static int mounts_under_work(void)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char line[2048], mnt[1024];
	int count = 0;

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%*s %*s %*s %*s %1023s", mnt) == 1 &&
		    strncmp(mnt, work, strlen(work)) == 0)
			count++;
	fclose(f);
	return count;
}

static bool alive(long pid)
{
	char path[64], state = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return false;
	if (fscanf(f, "%*d %*s %c", &state) != 1)
		state = 'X';
	fclose(f);
	return state != 'Z' && state != 'X';
}

START_TEST(test_node_stage_publish_restart_takeover_unstage)
{
	char id[256], staging[300], t1[300], t2[300], path[400];
	Csi__V1__NodeUnpublishVolumeRequest unpub = CSI__V1__NODE_UNPUBLISH_VOLUME_REQUEST__INIT;
	Csi__V1__DeleteVolumeRequest del = CSI__V1__DELETE_VOLUME_REQUEST__INIT;
	long pid, pid2;
	uint64_t t0;
	int fd, mounts;

	struct context ctx;

	start_meta(false);
	start_csi();
	create_volume(id, sizeof(id), &ctx);
	snprintf(staging, sizeof(staging), "%s/mnt/plugins/csi.granary.io/%s/globalmount", work, id);
	snprintf(t1, sizeof(t1), "%s/mnt/pods/a/volumes/%s/mount", work, id);
	snprintf(t2, sizeof(t2), "%s/mnt/pods/b/volumes/%s/mount", work, id);

	/* Stage twice: the second call adopts the daemon of the first. */
	stage(id, staging);
	/* The plugin made the mount: it set the read-ahead a mount of
	 * granary-fuse's own gets (fuse_read_ahead, 1 MiB; the kernel's is
	 * 128 KiB), since granary-fuse on /dev/fd/N leaves it. */
	ck_assert_int_eq(mount_read_ahead_kb(staging), 1024);
	pid = record_pid(id);
	ck_assert_int_gt(pid, 0);
	ck_assert(alive(pid));
	stage(id, staging);
	ck_assert_int_eq(record_pid(id), pid);

	/* Two pods, one daemon; both see the files, neither may write. */
	publish(id, staging, t1);
	publish(id, staging, t1);
	publish(id, staging, t2);
	expect_content(t1, files[0][0], files[0][1]);
	expect_content(t2, files[2][0], files[2][1]);
	snprintf(path, sizeof(path), "%s/new-file", t1);
	fd = open(path, O_WRONLY | O_CREAT, 0644);
	ck_assert_int_lt(fd, 0);
	ck_assert_int_eq(errno, EROFS);

	/* An unstage of a volume not staged here, at this one's staging path
	 * (no kubelet sends one; another CO might): this volume's mount stays. */
	mounts = mounts_under_work();
	unstage("pvc-not-staged-here", staging);
	ck_assert_int_eq(mounts_under_work(), mounts);
	ck_assert_int_eq(mount_read_ahead_kb(staging), 1024);

	/* The plugin dies hard and comes back: it re-adopts the daemon. */
	kill(csi_pid, SIGKILL);
	waitpid(csi_pid, NULL, 0);
	ck_assert(alive(pid));
	start_csi();
	stage(id, staging);
	ck_assert_int_eq(record_pid(id), pid);

	/* The daemon dies hard: a successor takes the live connection over,
	 * so the mount keeps serving (a file not read before: no page cache). */
	kill((pid_t)pid, SIGKILL);
	t0 = retry_now_ms();
	while ((pid2 = record_pid(id)) == pid || pid2 <= 0 || !alive(pid2)) {
		if (retry_now_ms() - t0 > 15000) {
			dump_log();
			ck_abort_msg("no successor daemon after 15 s");
		}
		retry_sleep_ms(50);
	}
	expect_content(t2, files[1][0], files[1][1]);

	/* Unpublish both, unstage (twice: idempotent). */
	unpub.volume_id = id;
	unpub.target_path = t1;
	call_ok("/csi.v1.Node/NodeUnpublishVolume", &unpub,
		&csi__v1__node_unpublish_volume_response__descriptor);
	call_ok("/csi.v1.Node/NodeUnpublishVolume", &unpub,
		&csi__v1__node_unpublish_volume_response__descriptor);
	ck_assert_int_ne(access(t1, F_OK), 0);
	unpub.target_path = t2;
	call_ok("/csi.v1.Node/NodeUnpublishVolume", &unpub,
		&csi__v1__node_unpublish_volume_response__descriptor);
	unstage(id, staging);
	unstage(id, staging);
	ck_assert_int_eq(mounts_under_work(), 0);
	ck_assert(!alive(pid2));
	ck_assert_int_eq(record_pid(id), -1);

	del.volume_id = id;
	call_ok("/csi.v1.Controller/DeleteVolume", &del, &csi__v1__delete_volume_response__descriptor);
	call_ok("/csi.v1.Controller/DeleteVolume", &del, &csi__v1__delete_volume_response__descriptor);
}
END_TEST

START_TEST(test_node_refuses_bad_requests_with_their_codes)
{
	Csi__V1__NodeStageVolumeRequest req = CSI__V1__NODE_STAGE_VOLUME_REQUEST__INIT;
	Csi__V1__NodePublishVolumeRequest pub = CSI__V1__NODE_PUBLISH_VOLUME_REQUEST__INIT;
	struct cap k;
	struct error err;
	char staging[300];

	start_meta(false);
	start_csi();
	cap_init(&k);
	snprintf(staging, sizeof(staging), "%s/mnt/staging", work);
	/* A path outside the allowed roots. */
	req.volume_id = "pvc-x";
	req.staging_target_path = "/etc/granary-stage";
	req.volume_capability = &k.c;
	ck_assert_int_eq(call("/csi.v1.Node/NodeStageVolume", &req,
			      &csi__v1__node_stage_volume_response__descriptor, &err),
			 ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "staging_target_path"), "%s", err.msg);
	/* A volume meta does not know. */
	req.staging_target_path = staging;
	ck_assert_int_eq(call("/csi.v1.Node/NodeStageVolume", &req,
			      &csi__v1__node_stage_volume_response__descriptor, &err),
			 ERR_NOT_FOUND);
	ck_assert_int_eq(mounts_under_work(), 0);
	/* Block access. */
	k.c.access_type_case = CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_BLOCK;
	ck_assert_int_eq(call("/csi.v1.Node/NodeStageVolume", &req,
			      &csi__v1__node_stage_volume_response__descriptor, &err),
			 ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "block"), "%s", err.msg);
	/* Publishing what is not staged. */
	cap_init(&k);
	pub.volume_id = "pvc-x";
	pub.staging_target_path = staging;
	pub.target_path = staging;
	pub.volume_capability = &k.c;
	ck_assert_int_eq(call("/csi.v1.Node/NodePublishVolume", &pub,
			      &csi__v1__node_publish_volume_response__descriptor, &err),
			 ERR_NOT_FOUND);
	/* No staging path: the stage was not done (FAILED_PRECONDITION). */
	pub.staging_target_path = NULL;
	ck_assert_int_eq(call("/csi.v1.Node/NodePublishVolume", &pub,
			      &csi__v1__node_publish_volume_response__descriptor, &err),
			 ERR_PRECONDITION);
	ck_assert_msg(strstr(err.msg, "field 'staging_target_path': required"), "%s", err.msg);
}
END_TEST

/* One NodeStageVolume in a thread of its own. */
struct bg_stage {
	pthread_t t;
	const char *id, *staging;
	const struct context *ctx;
	enum error_code rc;
	struct error err;
};

static void *bg_stage(void *arg)
{
	struct bg_stage *b = arg;

	b->rc = stage_with(b->id, b->staging, b->ctx, &b->err);
	return NULL;
}

static bool log_has(const char *name, const char *text)
{
	char path[300], cmd[700];

	snprintf(path, sizeof(path), "%s/%s", work, name);
	snprintf(cmd, sizeof(cmd), "grep -qF '%s' '%s'", text, path);
	return system(cmd) == 0;
}

START_TEST(test_node_registers_again_from_the_volume_context)
{
	char id[256], staging[300], cmd[400];
	Csi__V1__DeleteVolumeRequest del = CSI__V1__DELETE_VOLUME_REQUEST__INIT;
	struct bg_stage a = { 0 }, b = { 0 };
	struct context ctx, bare, bad;
	struct error err;
	enum error_code rc;
	uint64_t t0;

	start_meta(true);
	start_csi();
	create_volume(id, sizeof(id), &ctx);
	snprintf(staging, sizeof(staging), "%s/mnt/plugins/csi.granary.io/%s/globalmount", work, id);

	/* Meta restarts without its data dir: the registry is empty. */
	kill(meta_pid, SIGKILL);
	waitpid(meta_pid, NULL, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s/meta'", work);
	ck_assert_int_eq(system(cmd), 0);
	start_meta(true);

	/* A volume made before the context carried the registration. The
	 * plugin's channel to meta reconnects after a back-off: retry while
	 * UNAVAILABLE, as the kubelet does. */
	bare.n = 1;
	snprintf(bare.key[0], sizeof(bare.key[0]), "dataset");
	snprintf(bare.value[0], sizeof(bare.value[0]), "%s", id);
	t0 = retry_now_ms();
	while ((rc = stage_with(id, staging, &bare, &err)) == ERR_UNAVAILABLE &&
	       retry_now_ms() - t0 < 30000)
		retry_sleep_ms(200);
	ck_assert_msg(rc == ERR_NOT_FOUND, "%s", err.msg);
	ck_assert_msg(strstr(err.msg, "not found in granary-meta") &&
			      strstr(err.msg, "recreate the claim"),
		      "%s", err.msg);
	ck_assert_int_eq(mounts_under_work(), 0);

	/* A bad value is refused by the StorageClass rules, naming the key. */
	bad = ctx;
	for (size_t i = 0; i < bad.n; i++)
		if (strcmp(bad.key[i], "blockSize") == 0)
			snprintf(bad.value[i], sizeof(bad.value[i]), "3MiB");
	ck_assert_int_eq(stage_with(id, staging, &bad, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "volume_context key 'blockSize'"), "%s", err.msg);

	/* A context naming a file:// source: the node refuses it as the
	 * controller would (this plugin has no allowed_file_roots) before
	 * meta hears of it. */
	bad = ctx;
	for (size_t i = 0; i < bad.n; i++)
		if (strcmp(bad.key[i], "source") == 0)
			snprintf(bad.value[i], sizeof(bad.value[i]), "file:///etc/");
	ck_assert_int_eq(stage_with(id, staging, &bad, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "volume_context key 'source': file:// sources are off "
				      "(allowed_file_roots is empty), got 'file:///etc/'"),
		      "%s", err.msg);
	ck_assert_int_eq(mounts_under_work(), 0);

	/* With the context: registered again, by two stages at once (a
	 * kubelet retrying while the first still waits: a volume's dataset is
	 * its id, so a second volume cannot share it), and the files read
	 * back. */
	a.id = id, a.staging = staging, a.ctx = &ctx;
	b.id = id, b.staging = staging, b.ctx = &ctx;
	pthread_create(&a.t, NULL, bg_stage, &a);
	pthread_create(&b.t, NULL, bg_stage, &b);
	pthread_join(a.t, NULL);
	pthread_join(b.t, NULL);
	if (a.rc != ERR_OK || b.rc != ERR_OK) {
		dump_log();
		ck_abort_msg("NodeStageVolume after meta lost the dataset: '%s' / '%s'",
			     a.rc ? a.err.msg : "ok", b.rc ? b.err.msg : "ok");
	}
	ck_assert(log_has("csi.log", "dataset re-registered from the volume context"));
	expect_content(staging, files[0][0], files[0][1]);
	expect_content(staging, files[1][0], files[1][1]);
	expect_content(staging, files[2][0], files[2][1]);

	unstage(id, staging);
	ck_assert_int_eq(mounts_under_work(), 0);

	/* A context that describes another source than the dataset meta
	 * holds under the volume's id: not mounted, the two named. */
	bad = ctx;
	for (size_t i = 0; i < bad.n; i++)
		if (strcmp(bad.key[i], "source") == 0)
			snprintf(bad.value[i], sizeof(bad.value[i]), "s3://granary-e2e/elsewhere/");
	ck_assert_int_eq(stage_with(id, staging, &bad, &err), ERR_PRECONDITION);
	ck_assert_msg(strstr(err.msg, "reads '") && strstr(err.msg, context_get(&ctx, "source")) &&
			      strstr(err.msg, "not the volume's 's3://granary-e2e/elsewhere/'"),
		      "%s", err.msg);
	ck_assert_int_eq(mounts_under_work(), 0);

	del.volume_id = id;
	call_ok("/csi.v1.Controller/DeleteVolume", &del, &csi__v1__delete_volume_response__descriptor);
}
END_TEST

/* ---- volume conditions ----------------------------------------------------- */

struct stats {
	bool has_condition, abnormal;
	char message[600];
	int64_t bytes_total;
	size_t n_usage;
	uint64_t ms;             /* how long the call took */
};

static enum error_code volume_stats(const char *id, const char *path, struct stats *out,
				    struct error *err)
{
	Csi__V1__NodeGetVolumeStatsRequest req = CSI__V1__NODE_GET_VOLUME_STATS_REQUEST__INIT;
	struct rpc_client_options opt = { .wait_for_ready = true };
	Csi__V1__NodeGetVolumeStatsResponse *reply = NULL;
	struct rpc_client *c = NULL;
	uint64_t t0 = retry_now_ms();
	enum error_code rc;

	memset(out, 0, sizeof(*out));
	req.volume_id = (char *)id;
	req.volume_path = (char *)path;
	ck_assert_int_eq(rpc_client_new(csi_addr, &opt, &c, err), ERR_OK);
	rc = rpc_client_call(c, "/csi.v1.Node/NodeGetVolumeStats", &req.base,
			     &csi__v1__node_get_volume_stats_response__descriptor, 60000,
			     (ProtobufCMessage **)&reply, err);
	out->ms = retry_now_ms() - t0;
	if (rc == ERR_OK) {
		out->n_usage = reply->n_usage;
		for (size_t i = 0; i < reply->n_usage; i++)
			if (reply->usage[i]->unit == CSI__V1__VOLUME_USAGE__UNIT__BYTES)
				out->bytes_total = reply->usage[i]->total;
		if (reply->volume_condition) {
			out->has_condition = true;
			out->abnormal = reply->volume_condition->abnormal;
			snprintf(out->message, sizeof(out->message), "%s",
				 reply->volume_condition->message);
		}
		csi__v1__node_get_volume_stats_response__free_unpacked(reply, NULL);
	}
	rpc_client_free(c);
	return rc;
}

/* Polls NodeGetVolumeStats until its condition is abnormal (or not) with
 * needle in the message. */
static struct stats stats_wait(const char *id, const char *path, bool abnormal,
			       const char *needle, uint64_t timeout_ms)
{
	uint64_t t0 = retry_now_ms();
	struct stats st;
	struct error err;

	for (;;) {
		if (volume_stats(id, path, &st, &err) != ERR_OK) {
			dump_log();
			ck_abort_msg("NodeGetVolumeStats: %s", err.msg);
		}
		if (st.has_condition && st.abnormal == abnormal && strstr(st.message, needle))
			return st;
		if (retry_now_ms() - t0 > timeout_ms) {
			dump_log();
			ck_abort_msg("NodeGetVolumeStats: no %s condition with '%s' after %llu ms; last: %s '%s'",
				     abnormal ? "abnormal" : "normal", needle,
				     (unsigned long long)timeout_ms,
				     st.has_condition ? (st.abnormal ? "abnormal" : "normal") : "none",
				     st.message);
		}
		retry_sleep_ms(200);
	}
}

/* The plugin's /metrics text (free it). */
static char *metrics_text(void)
{
	char *body = NULL;

	ck_assert_int_eq(harness_http_get(health_addr, "/metrics", &body), 200);
	return body;
}

/* The value of a /metrics sample, or -1 when there is none. */
static double metric_value(const char *name, const char *id)
{
	char *body = metrics_text(), want[300];
	double v;

	snprintf(want, sizeof(want), "%s{volume=\"%s\"}", name, id);
	v = harness_metric(body, want);
	free(body);
	return v;
}

static void expect_metric(const char *line)
{
	char *body = metrics_text();

	ck_assert_msg(strstr(body, line), "no line '%s' in /metrics:\n%s", line, body);
	free(body);
}

static int log_count(const char *needle)
{
	char path[300];

	snprintf(path, sizeof(path), "%s/csi.log", work);
	return harness_file_count(path, needle);
}

START_TEST(test_node_volume_condition_tells_a_mount_that_cannot_serve)
{
	char id[256], staging[300], t1[300], link[200], real[600], want[300];
	struct stats st;
	struct error err;
	long pid, pid2;
	uint64_t t0;

	start_published(id, staging, t1);
	pid = record_pid(id);

	/* Serving: a condition that says so, and the usage. Unknown volumes
	 * and paths stay NOT_FOUND. */
	st = stats_wait(id, t1, false, "serves", 0);
	ck_assert_uint_eq(st.n_usage, 2);
	expect_metric("\ngranary_csi_volumes_staged 1\n");
	snprintf(want, sizeof(want), "\ngranary_csi_volume_abnormal{volume=\"%s\"} 0\n", id);
	expect_metric(want);
	ck_assert_int_eq(volume_stats("pvc-unknown", t1, &st, &err), ERR_NOT_FOUND);
	ck_assert_int_eq(volume_stats(id, "/somewhere/else", &st, &err), ERR_NOT_FOUND);

	/* The daemon hangs (stopped): its mount answers nothing. The call
	 * says so within its probe timeout instead of hanging with it. */
	kill((pid_t)pid, SIGSTOP);
	st = stats_wait(id, t1, true, "has not answered statfs", 10000);
	ck_assert_msg(st.ms < 10000, "NodeGetVolumeStats took %llu ms on a hung mount",
		      (unsigned long long)st.ms);
	ck_assert_uint_eq(st.n_usage, 2);
	snprintf(want, sizeof(want), "\ngranary_csi_volume_abnormal{volume=\"%s\"} 1\n", id);
	expect_metric(want);
	kill((pid_t)pid, SIGCONT);
	stats_wait(id, t1, false, "serves", 10000);
	ck_assert_int_eq(record_pid(id), pid);

	/* The daemon is killed while no successor can start (its binary is
	 * gone): abnormal, naming the daemon, and /metrics says so. */
	snprintf(link, sizeof(link), "%s/granary-fuse", work);
	snprintf(real, sizeof(real), "%s/granary-fuse", bin_dir);
	ck_assert_int_eq(unlink(link), 0);
	kill((pid_t)pid, SIGKILL);
	snprintf(want, sizeof(want), "granary-fuse of volume '%s' is not running", id);
	st = stats_wait(id, t1, true, want, 5000);
	ck_assert_uint_eq(st.n_usage, 2);
	/* The plugin's successors fail to start (exit 127) and back off. */
	st = stats_wait(id, t1, true, "exited with status 127", 10000);
	ck_assert_msg(strstr(st.message, "the node plugin starts another"), "%s", st.message);
	snprintf(want, sizeof(want), "\ngranary_csi_volume_abnormal{volume=\"%s\"} 1\n", id);
	expect_metric(want);
	expect_metric("\ngranary_csi_volumes_staged 1\n");

	/* The binary is back: the next successor takes the connection over and
	 * the volume serves again, the same files through the same target. */
	ck_assert_int_eq(symlink(real, link), 0);
	stats_wait(id, t1, false, "serves", 45000);
	pid2 = record_pid(id);
	ck_assert_int_gt(pid2, 0);
	ck_assert_int_ne(pid2, pid);
	expect_content(t1, files[1][0], files[1][1]);
	snprintf(want, sizeof(want), "\ngranary_csi_volume_abnormal{volume=\"%s\"} 0\n", id);
	expect_metric(want);
	/* The mount's counters, read from the file its daemons keep, with
	 * the volume as label: both daemons that started counted in it (the
	 * successors that could not start never opened it), and the reads
	 * went to the store (no worker here). */
	ck_assert_double_eq(metric_value("granary_fuse_daemons_total", id), 2);
	ck_assert_double_gt(metric_value("granary_fuse_reads_total", id), 0);
	snprintf(want, sizeof(want), "granary_fuse_source_reads_total{volume=\"%s\",source=\"store\"}",
		 id);
	{
		char *body = metrics_text();

		ck_assert_msg(harness_metric(body, want) > 0, "no '%s' above 0 in:\n%s", want, body);
		free(body);
	}
	/* Each episode logged once, however often it was asked about. */
	ck_assert_int_eq(log_count("msg=\"volume abnormal\""), 2);
	ck_assert_int_eq(log_count("msg=\"volume serves again\""), 2);

	unpublish(id, t1);
	unstage(id, staging);
	t0 = retry_now_ms();
	ck_assert_int_eq(mounts_under_work(), 0);
	expect_metric("\ngranary_csi_volumes_staged 0\n");
	ck_assert_msg(retry_now_ms() - t0 < 5000, "/metrics was slow with nothing staged");
	/* Unstaged: its counters' file is gone with its init state. */
	ck_assert_double_eq(metric_value("granary_fuse_reads_total", id), -1);
}
END_TEST

/* ---- repeated takeovers ----------------------------------------------------- */

#define BIG_FILES 4
#define BIG_SIZE (1u << 20)
#define READERS 4
#define KILLS 200
/* A daemon that ran this long counts as started (csi/node.c): killing it
 * later restarts the next one at once rather than after a back-off. */
#define STABLE_MS 200

static unsigned char big[BIG_FILES][BIG_SIZE];
static atomic_long reads_done;

/* Files big enough that readers keep the daemon busy; uploaded under the
 * volume's prefix before CreateVolume lists it. */
static void put_big_files(void)
{
	struct store_config cfg = { 0 };
	struct store *st = NULL;
	struct error err;
	char key[300];

	cfg.endpoint = endpoint;
	cfg.credentials_file = credentials;
	cfg.request_timeout_ms = 10000;
	cfg.deadline_ms = 30000;
	ck_assert_msg(store_open("s3://" BUCKET, &cfg, &st, &err) == ERR_OK, "%s", err.msg);
	for (int i = 0; i < BIG_FILES; i++) {
		harness_fill(big[i], BIG_SIZE, 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1));
		snprintf(key, sizeof(key), "%sbig/%d.bin", prefix, i);
		ck_assert_msg(store_put(st, key, big[i], BIG_SIZE, &err) == ERR_OK, "%s", err.msg);
	}
	store_free(st);
}

struct reader {
	pthread_t t;
	const char *dir;
	atomic_int *stop;
	unsigned seed;
	long reads, failed, wrong, enotconn;
	char last_error[200];
};

static void reader_fail(struct reader *r, const char *what, int errnum)
{
	r->failed++;
	if (errnum == ENOTCONN)
		r->enotconn++;
	snprintf(r->last_error, sizeof(r->last_error), "%s: %s", what, strerror(errnum));
}

/* Opens a file, reads a few random ranges with O_DIRECT (every read
 * reaches the daemon), compares each byte, closes; again and again, so
 * that opens and releases of the same files from several readers cross
 * every takeover. */
static void *read_loop(void *arg)
{
	struct reader *r = arg;
	void *buf = NULL;
	char path[400];

	ck_assert_int_eq(posix_memalign(&buf, 4096, 256u << 10), 0);
	while (!atomic_load(r->stop)) {
		int i = (int)(rand_r(&r->seed) % BIG_FILES), fd;

		snprintf(path, sizeof(path), "%s/big/%d.bin", r->dir, i);
		fd = open(path, O_RDONLY | O_DIRECT);
		if (fd < 0) {
			reader_fail(r, "open", errno);
			continue;
		}
		for (int k = 0; k < 3; k++) {
			size_t off = (size_t)(rand_r(&r->seed) % (BIG_SIZE / 4096)) * 4096;
			size_t len = 4096u * (1 + rand_r(&r->seed) % 64);
			ssize_t n;

			if (off + len > BIG_SIZE)
				len = BIG_SIZE - off;
			n = pread(fd, buf, len, (off_t)off);
			r->reads++;
			if (n < 0)
				reader_fail(r, "pread", errno);
			else if ((size_t)n != len || memcmp(buf, big[i] + off, len) != 0)
				r->wrong++;
			else
				atomic_fetch_add(&reads_done, 1);
		}
		close(fd);
	}
	free(buf);
	return NULL;
}

/* Children of pid that have ended but were not reaped. */
static int zombie_children(pid_t pid)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	int zombies = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d))) {
		char path[300], buf[512], state = 0, *p;
		int ppid = 0;
		FILE *f;

		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		p = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
		fclose(f);
		if (p && sscanf(p + 1, " %c %d", &state, &ppid) == 2 && ppid == pid && state == 'Z')
			zombies++;
	}
	closedir(d);
	return zombies;
}

/* Waits for a daemon other than prev that runs, then until it ran
 * STABLE_MS and readers got bytes from it; returns its pid. */
static long wait_new_daemon(const char *id, long prev)
{
	uint64_t t0 = retry_now_ms(), seen;
	long pid, base;

	while ((pid = record_pid(id)) == prev || pid <= 0 || !alive(pid)) {
		if (retry_now_ms() - t0 > 10000) {
			dump_log();
			ck_abort_msg("no successor of daemon %ld after 10 s", prev);
		}
		retry_sleep_ms(2);
	}
	seen = retry_now_ms();
	base = atomic_load(&reads_done);
	while (retry_now_ms() - seen < STABLE_MS || atomic_load(&reads_done) - base < READERS) {
		if (retry_now_ms() - seen > 10000) {
			dump_log();
			ck_abort_msg("readers got no bytes from daemon %ld in 10 s", pid);
		}
		retry_sleep_ms(5);
	}
	return pid;
}

START_TEST(test_node_survives_200_sigkills_of_its_daemon_under_readers)
{
	char id[256], staging[300], t1[300], want[300], *body;
	struct reader r[READERS];
	atomic_int stop = 0;
	long pid = 0, total = 0, failed = 0, wrong = 0, enotconn = 0;
	int zombies = 0, ended, killed;
	uint64_t t0;

	put_big_files();
	start_published(id, staging, t1);
	for (int i = 0; i < READERS; i++) {
		r[i] = (struct reader){ .dir = t1, .stop = &stop, .seed = (unsigned)i * 7919u + 1 };
		pthread_create(&r[i].t, NULL, read_loop, &r[i]);
	}
	t0 = retry_now_ms();
	for (int k = 0; k < KILLS; k++) {
		pid = wait_new_daemon(id, pid);
		zombies += zombie_children(csi_pid);
		kill((pid_t)pid, SIGKILL);
	}
	wait_new_daemon(id, pid);
	zombies += zombie_children(csi_pid);
	atomic_store(&stop, 1);
	for (int i = 0; i < READERS; i++) {
		struct timespec until = retry_deadline_ts(CLOCK_REALTIME, 20000);

		if (pthread_timedjoin_np(r[i].t, NULL, &until) != 0) {
			dump_log();
			ck_abort_msg("reader %d still blocked 20 s after the last takeover", i);
		}
		total += r[i].reads;
		failed += r[i].failed;
		wrong += r[i].wrong;
		enotconn += r[i].enotconn;
		if (r[i].failed)
			fprintf(stderr, "reader %d: %ld failed calls, the last '%s'\n", i, r[i].failed,
				r[i].last_error);
	}
	ended = log_count("msg=\"granary-fuse ended\"");
	killed = log_count("how=\"was killed by signal 9\"");
	fprintf(stderr,
		"%d kills in %llu ms: %ld reads, %ld failed, %ld wrong, %ld ENOTCONN; %d daemons ended (%d by SIGKILL); %d zombies seen\n",
		KILLS, (unsigned long long)(retry_now_ms() - t0), total, failed, wrong, enotconn, ended,
		killed, zombies);
	if (failed || wrong || ended != KILLS || killed != KILLS || zombies) {
		/* What went wrong, rather than the log's last lines. */
		char cmd[600];

		snprintf(cmd, sizeof(cmd),
			 "grep -E 'level=error|granary-fuse ended|free|corrupt|Sanitizer' '%s/csi.log' | grep -v 'signal 9' | head -n 30 >&2",
			 work);
		if (system(cmd) != 0)
			dump_log();
	}
	ck_assert_int_gt(total, KILLS);
	ck_assert_int_eq(enotconn, 0);
	ck_assert_int_eq(failed, 0);
	ck_assert_int_eq(wrong, 0);
	ck_assert_msg(zombies == 0, "%d zombie children of the plugin seen", zombies);
	/* Every daemon ended by the test's SIGKILL, none by itself. */
	ck_assert_int_eq(ended, KILLS);
	ck_assert_int_eq(killed, KILLS);
	snprintf(want, sizeof(want), "\ngranary_csi_fuse_restarts_total{volume=\"%s\"} %d\n", id,
		 KILLS);
	body = metrics_text();
	ck_assert_msg(strstr(body, want), "no line '%s' in /metrics:\n%s", want, body);
	snprintf(want, sizeof(want), "\ngranary_csi_fuse_restart_backoff_seconds{volume=\"%s\"} 0\n",
		 id);
	ck_assert_msg(strstr(body, want), "no line '%s' in /metrics:\n%s", want, body);
	/* The mount's counters went on through every daemon: each of the
	 * KILLS + 1 counted itself in the same file. */
	snprintf(want, sizeof(want), "granary_fuse_daemons_total{volume=\"%s\"}", id);
	ck_assert_double_eq(harness_metric(body, want), KILLS + 1);
	snprintf(want, sizeof(want), "granary_fuse_reads_total{volume=\"%s\"}", id);
	ck_assert_double_gt(harness_metric(body, want), 0);
	free(body);
	unpublish(id, t1);
	unstage(id, staging);
	ck_assert_int_eq(mounts_under_work(), 0);
}
END_TEST

/* One whole-file read in a thread of its own (it may wait on the mount). */
struct slow_read {
	pthread_t t;
	char path[400];
	atomic_int done;
	int errnum;
	char buf[256];
};

static void *slow_read_main(void *arg)
{
	struct slow_read *sr = arg;
	int fd = open(sr->path, O_RDONLY);
	ssize_t n = -1;

	if (fd >= 0) {
		n = read(fd, sr->buf, sizeof(sr->buf) - 1);
		close(fd);
	}
	sr->errnum = n < 0 ? errno : 0;
	if (n >= 0)
		sr->buf[n] = '\0';
	atomic_store(&sr->done, 1);
	return NULL;
}

START_TEST(test_node_successor_that_cannot_start_backs_off_while_readers_wait)
{
	char id[256], staging[300], t1[300], link[200], real[600], script[200];
	struct slow_read sr = { 0 };
	double restarts, backoff;
	uint64_t t0;

	start_published(id, staging, t1);
	ck_assert_double_eq(metric_value("granary_csi_fuse_restarts_total", id), 0);

	/* The daemon dies while no successor can start (its binary is gone);
	 * a reader comes meanwhile. */
	snprintf(link, sizeof(link), "%s/granary-fuse", work);
	snprintf(real, sizeof(real), "%s/granary-fuse", bin_dir);
	ck_assert_int_eq(unlink(link), 0);
	kill((pid_t)record_pid(id), SIGKILL);
	snprintf(sr.path, sizeof(sr.path), "%s/%s", t1, files[1][0]);
	pthread_create(&sr.t, NULL, slow_read_main, &sr);
	retry_sleep_ms(2500);

	/* The reader waits on the connection the plugin holds: no error, no
	 * aborted mount. The volume is abnormal and says why. */
	ck_assert_msg(!atomic_load(&sr.done), "the read returned while no daemon ran: %s",
		      strerror(sr.errnum));
	stats_wait(id, t1, true, "exited with status 127", 5000);
	/* Successors at 0, 0.1, 0.3, 0.7, 1.5 s: a back-off, not a loop. */
	restarts = metric_value("granary_csi_fuse_restarts_total", id);
	backoff = metric_value("granary_csi_fuse_restart_backoff_seconds", id);
	ck_assert_msg(restarts >= 3 && restarts <= 6, "%g restarts in 2.5 s", restarts);
	ck_assert_msg(backoff >= 0.4 && backoff <= 3.2, "back-off %g s after %g restarts", backoff,
		      restarts);
	/* One line for the cause, however often it recurred. */
	ck_assert_int_eq(log_count("msg=\"granary-fuse ended at start; the next one starts after a back-off\""), 1);
	ck_assert_int_eq(log_count("cause=\"exited with status 127"), 1);

	/* Another cause (the binary exits at once by itself): its own line. */
	snprintf(script, sizeof(script), "%s/exits.sh", work);
	harness_write_file(script, "#!/bin/sh\nexit 3\n", 0755);
	ck_assert_int_eq(symlink(script, link), 0);
	stats_wait(id, t1, true, "exited with status 3", 10000);
	ck_assert(!atomic_load(&sr.done));
	ck_assert_int_eq(log_count("cause=\"exited with status 3\""), 1);

	/* The binary is back: the next successor takes over, the reader gets
	 * its bytes, and once the daemon ran a while the back-off is gone. */
	ck_assert_int_eq(unlink(link), 0);
	ck_assert_int_eq(symlink(real, link), 0);
	stats_wait(id, t1, false, "serves", 20000);
	pthread_join(sr.t, NULL);
	ck_assert_msg(sr.errnum == 0, "the waiting read failed: %s", strerror(sr.errnum));
	ck_assert_str_eq(sr.buf, files[1][1]);
	t0 = retry_now_ms();
	while (metric_value("granary_csi_fuse_restart_backoff_seconds", id) != 0) {
		ck_assert_msg(retry_now_ms() - t0 < 5000, "the back-off stays after the daemon runs");
		retry_sleep_ms(100);
	}
	ck_assert_int_ge(metric_value("granary_csi_fuse_restarts_total", id), restarts + 2);

	unpublish(id, t1);
	unstage(id, staging);
	ck_assert_int_eq(mounts_under_work(), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("csi_node_e2e");
	TCase *tc = tcase_create("node");

	tcase_set_timeout(tc, 300);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_node_stage_publish_restart_takeover_unstage);
	tcase_add_test(tc, test_node_refuses_bad_requests_with_their_codes);
	tcase_add_test(tc, test_node_registers_again_from_the_volume_context);
	tcase_add_test(tc, test_node_volume_condition_tells_a_mount_that_cannot_serve);
	suite_add_tcase(s, tc);
	/* Its own ctest (CK_RUN_CASE=restarts), short enough for the ASan run. */
	tc = tcase_create("restarts");
	tcase_set_timeout(tc, 300);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_node_survives_200_sigkills_of_its_daemon_under_readers);
	tcase_add_test(tc, test_node_successor_that_cannot_start_backs_off_while_readers_wait);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
