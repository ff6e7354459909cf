/*
 * test_node.c - the node plugin's pure parts: the volume record's JSON
 * round trip (what a restarted plugin re-adopts from), its errors, target
 * lists, the allowed-roots rule, granary-fuse's command line (the
 * credentials file's path, never a secret), the volume conditions'
 * messages, which mount pods the plugin may delete, and what a loaded
 * record may name (node_impl.h's record_check).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "csi/mountpod.h"
#include "csi/node.h"
#include "csi/node_impl.h"
#include "unit/check_main.h"

static char dir[] = "/tmp/test_node_XXXXXX";

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_node_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[64];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

START_TEST(test_node_record_round_trip)
{
	struct node_record r = { 0 }, back;
	char path[128];
	struct error err;
	struct stat st;

	r.volume_id = strdup("pvc-1");
	r.dataset = strdup("pvc-1");
	r.staging_path = strdup("/var/lib/kubelet/plugins/kubernetes.io/csi/csi.granary.io/x/globalmount");
	r.credentials_file = strdup("/var/lib/granary/csi/node/pvc-1.credentials");
	r.init_state = strdup("/var/lib/granary/csi/node/pvc-1.init");
	r.pid = 4242;
	r.start_time = 123456789012ull;
	r.daemon_fd = 9;
	ck_assert_int_eq(node_record_add_target(&r, "/var/lib/kubelet/pods/a/volumes/x/mount", &err),
			 ERR_OK);
	ck_assert_int_eq(node_record_add_target(&r, "/var/lib/kubelet/pods/b/volumes/x/mount", &err),
			 ERR_OK);
	ck_assert_int_eq(node_record_add_target(&r, "/var/lib/kubelet/pods/a/volumes/x/mount", &err),
			 ERR_OK);
	ck_assert_uint_eq(r.ntargets, 2);
	snprintf(path, sizeof(path), "%s/pvc-1.json", dir);
	ck_assert_msg(node_record_save(path, &r, &err) == ERR_OK, "%s", err.msg);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	ck_assert_msg(node_record_load(path, &back, &err) == ERR_OK, "%s", err.msg);
	ck_assert_str_eq(back.volume_id, r.volume_id);
	ck_assert_str_eq(back.dataset, r.dataset);
	ck_assert_str_eq(back.staging_path, r.staging_path);
	ck_assert_str_eq(back.credentials_file, r.credentials_file);
	ck_assert_str_eq(back.init_state, r.init_state);
	ck_assert_int_eq(back.pid, 4242);
	ck_assert_uint_eq(back.start_time, 123456789012ull);
	ck_assert_int_eq(back.daemon_fd, 9);
	ck_assert_uint_eq(back.ntargets, 2);
	ck_assert_str_eq(back.targets[0], r.targets[0]);
	ck_assert_str_eq(back.targets[1], r.targets[1]);
	node_record_remove_target(&back, r.targets[0]);
	node_record_remove_target(&back, "/not/there");
	ck_assert_uint_eq(back.ntargets, 1);
	ck_assert_str_eq(back.targets[0], "/var/lib/kubelet/pods/b/volumes/x/mount");
	node_record_release(&back);
	node_record_release(&r);
	ck_assert_ptr_null(r.targets);
}
END_TEST

START_TEST(test_node_record_load_errors_name_path_and_field)
{
	struct node_record r;
	char path[128];
	struct error err;

	snprintf(path, sizeof(path), "%s/none.json", dir);
	ck_assert_int_eq(node_record_load(path, &r, &err), ERR_NOT_FOUND);
	node_record_release(&r);

	snprintf(path, sizeof(path), "%s/bad.json", dir);
	write_text(path, "{ not json");
	ck_assert_int_eq(node_record_load(path, &r, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, path));
	node_record_release(&r);

	write_text(path, "{\"volume_id\": \"v\", \"dataset\": \"v\", \"staging_path\": \"/s\","
			 " \"credentials_file\": \"\", \"init_state\": \"/i\", \"pid\": -3,"
			 " \"start_time\": 1, \"daemon_fd\": 3, \"targets\": []}");
	ck_assert_int_eq(node_record_load(path, &r, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "field 'pid'"), "%s", err.msg);
	node_record_release(&r);

	write_text(path, "{\"volume_id\": \"v\", \"staging_path\": \"/s\"}");
	ck_assert_int_eq(node_record_load(path, &r, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "field 'dataset'"), "%s", err.msg);
	node_record_release(&r);

	write_text(path, "{\"volume_id\": \"v\", \"dataset\": \"v\", \"staging_path\": \"/s\","
			 " \"credentials_file\": \"\", \"init_state\": \"/i\", \"pid\": 3,"
			 " \"start_time\": 1, \"daemon_fd\": 3, \"targets\": [7]}");
	ck_assert_int_eq(node_record_load(path, &r, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "field 'targets[0]'"), "%s", err.msg);
	node_record_release(&r);
}
END_TEST

START_TEST(test_node_path_allowed_only_strictly_under_roots)
{
	char *roots[] = { "/var/lib/kubelet", "/tmp/t" };
	char *slash[] = { "/" };
	static const char *const good[] = { "/var/lib/kubelet/pods/x/mount", "/tmp/t/a",
					    "/var/lib/kubelet/plugins/x/globalmount/" };
	static const char *const bad[] = { "", "relative/path", "/var/lib/kubelet",
					   "/var/lib/kubelet/", "/var/lib/kubeletX/a", "/etc/passwd",
					   "/var/lib/kubelet/../../etc", "/var/lib/kubelet/./a",
					   "/var/lib/kubelet//a", "/tmp/tt/a", "some/path" };

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_msg(node_path_allowed(good[i], roots, 2), "'%s' refused", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(!node_path_allowed(bad[i], roots, 2), "'%s' accepted", bad[i]);
	ck_assert(node_path_allowed("/anything/at/all", slash, 1));
	ck_assert(!node_path_allowed("/", slash, 1));
	ck_assert(!node_path_allowed("/a", roots, 0));
}
END_TEST

static int find_arg(const struct node_argv *a, const char *flag)
{
	for (int i = 0; a->argv[i]; i++)
		if (strcmp(a->argv[i], flag) == 0)
			return i;
	return -1;
}

START_TEST(test_node_fuse_argv_names_files_never_secrets)
{
	char *roots[] = { "/var/lib/kubelet" };
	struct node_config cfg = { .fuse_binary = "/usr/bin/granary-fuse",
				   .fuse_config = "/etc/granary/fuse.yaml",
				   .meta_address = "granary-meta.granary-system.svc:7400",
				   .roots = roots,
				   .nroots = 1 };
	struct node_record r = { .dataset = "imagenet",
				 .credentials_file = "/var/lib/granary/csi/node/imagenet.credentials",
				 .init_state = "/var/lib/granary/csi/node/imagenet.init" };
	struct node_argv a;
	int i;

	node_fuse_argv(&cfg, &r, 7, false, &a);
	ck_assert_str_eq(a.argv[0], "/usr/bin/granary-fuse");
	ck_assert_int_eq(i = find_arg(&a, "--config"), 1);
	ck_assert_str_eq(a.argv[i + 1], "/etc/granary/fuse.yaml");
	ck_assert_str_eq(a.argv[find_arg(&a, "--mountpoint") + 1], "/dev/fd/7");
	ck_assert_str_eq(a.argv[find_arg(&a, "--dataset") + 1], "imagenet");
	ck_assert_str_eq(a.argv[find_arg(&a, "--meta.address") + 1],
			 "granary-meta.granary-system.svc:7400");
	ck_assert_str_eq(a.argv[find_arg(&a, "--init_state") + 1], r.init_state);
	ck_assert_str_eq(a.argv[find_arg(&a, "--store.credentials_file") + 1], r.credentials_file);
	ck_assert_int_eq(find_arg(&a, "--takeover"), -1);
	/* the mount's max_read is the daemon's: one setting, 1 MiB by default */
	ck_assert_str_eq(a.argv[find_arg(&a, "--max_read") + 1], "1048576");
	cfg.max_read = 256u << 10;
	node_fuse_argv(&cfg, &r, 7, false, &a);
	ck_assert_str_eq(a.argv[find_arg(&a, "--max_read") + 1], "262144");

	cfg.fuse_config = "";
	r.credentials_file = "";
	node_fuse_argv(&cfg, &r, 12, true, &a);
	ck_assert_int_eq(find_arg(&a, "--config"), -1);
	ck_assert_int_eq(find_arg(&a, "--store.credentials_file"), -1);
	ck_assert_str_eq(a.argv[find_arg(&a, "--mountpoint") + 1], "/dev/fd/12");
	ck_assert_str_eq(a.argv[find_arg(&a, "--takeover") + 1], "true");
}
END_TEST

START_TEST(test_node_mount_condition_names_path_and_cause)
{
	struct node_condition c;

	node_mount_condition("/k/globalmount", 0, 0, &c);
	ck_assert(!c.abnormal);
	ck_assert_str_eq(c.message, "the mount at '/k/globalmount' serves");
	node_mount_condition("/k/globalmount", ENOTCONN, 0, &c);
	ck_assert(c.abnormal);
	ck_assert_str_eq(c.message,
			 "the mount at '/k/globalmount' answers 'Transport endpoint is not connected': its FUSE connection is gone; containers that use it must restart");
	node_mount_condition("/k/globalmount", 0, 2001, &c);
	ck_assert(c.abnormal);
	ck_assert_str_eq(c.message,
			 "the mount at '/k/globalmount' has not answered statfs for 2001 ms: granary-fuse hangs or is stopped, and reads there wait");
	node_mount_condition("/k/globalmount", EIO, 0, &c);
	ck_assert(c.abnormal);
	ck_assert_str_eq(c.message, "statfs of the mount at '/k/globalmount': Input/output error");
}
END_TEST

START_TEST(test_node_restart_delay_backs_off_only_after_failed_starts)
{
	uint64_t d = 0;
	const uint64_t want[] = { 100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000 };

	/* A daemon that ran a while: its successor starts at once, whatever
	 * the last delay was. */
	ck_assert_uint_eq(node_restart_delay(0, NODE_RESTART_STABLE_MS), 0);
	ck_assert_uint_eq(node_restart_delay(10000, NODE_RESTART_STABLE_MS), 0);
	ck_assert_uint_eq(node_restart_delay(800, UINT64_MAX), 0);
	/* Successors that end at once: 100 ms, doubling, 10 s at most. */
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		d = node_restart_delay(d, NODE_RESTART_STABLE_MS - 1);
		ck_assert_uint_eq(d, want[i]);
	}
	ck_assert_uint_eq(node_restart_delay(d, 0), 10000);
}
END_TEST

START_TEST(test_node_volume_stats_of_what_is_not_staged_is_not_found)
{
	char state[64], *roots[] = { "/var/lib/kubelet" };
	struct node_config cfg = { .state_dir = state, .fuse_binary = "/nonexistent/granary-fuse",
				   .roots = roots, .nroots = 1 };
	struct node_volume_health *list = NULL;
	struct node_condition cond;
	struct node_stats st;
	struct node *n = NULL;
	struct error err;
	size_t count = 1;

	snprintf(state, sizeof(state), "%s/state", dir);
	ck_assert_int_eq(node_new(&cfg, &n, &err), ERR_OK);
	ck_assert_int_eq(node_volume_stats(n, "pvc-x", "/var/lib/kubelet/pods/a/mount", &st, &cond,
					   &err),
			 ERR_NOT_FOUND);
	ck_assert_str_eq(err.msg, "volume 'pvc-x' is not staged on this node");
	ck_assert_int_eq(node_volume_stats(n, "pvc-x", "", &st, &cond, &err), ERR_INVALID);
	ck_assert_str_eq(err.msg, "field 'volume_path': required");
	ck_assert_int_eq(node_volumes_health(n, &list, &count, &err), ERR_OK);
	ck_assert_uint_eq(count, 0);
	node_volumes_health_free(list, count);
	node_free(n);
}
END_TEST

/* A plugin on dir/state with dir/mnt as its allowed root (no meta, a
 * granary-fuse that cannot run). */
static struct node *node_in_dir(char *state, size_t size, char **roots)
{
	struct node_config cfg = { .state_dir = state, .fuse_binary = "/nonexistent/granary-fuse",
				   .roots = roots, .nroots = 1, .stage_timeout_ms = 2000 };
	struct node *n = NULL;
	struct error err;

	snprintf(state, size, "%s/state", dir);
	ck_assert_msg(node_new(&cfg, &n, &err) == ERR_OK, "%s", err.msg);
	return n;
}

static void expect_text(const char *path, const char *want)
{
	char buf[64] = "";
	FILE *f = fopen(path, "r");

	ck_assert_msg(f != NULL, "'%s' is gone", path);
	ck_assert_ptr_nonnull(fgets(buf, sizeof(buf), f));
	fclose(f);
	ck_assert_str_eq(buf, want);
}

START_TEST(test_node_refuses_volume_ids_that_are_not_ids)
{
	static const struct controller_kv secret[] = { { "accessKeyID", "AKIAEXAMPLE" },
						       { "secretAccessKey", "hidden" } };
	struct controller_capability cap = { CONTROLLER_ACCESS_MOUNT,
					     CONTROLLER_MODE_MULTI_NODE_READER_ONLY };
	static const char *const bad[] = { "../../victim/v", "a/b", "..", "A", "pvc-1/../x" };
	char state[64], root[64], staging[128], target[128], victim[128], longid[300], *roots[] = { root };
	struct node_stage_request sr = { .staging_path = staging, .cap = &cap, .secrets = secret,
					 .nsecrets = 2 };
	struct node_publish_request pr = { .staging_path = staging, .target_path = target,
					   .cap = &cap };
	struct node_condition cond;
	struct node_stats st;
	struct error err;
	struct node *n;

	snprintf(root, sizeof(root), "%s/mnt", dir);
	snprintf(staging, sizeof(staging), "%s/s/globalmount", root);
	snprintf(target, sizeof(target), "%s/p/mount", root);
	n = node_in_dir(state, sizeof(state), roots);
	/* What "../../victim/v" would name from STATE/node. */
	snprintf(victim, sizeof(victim), "%s/victim", dir);
	ck_assert_int_eq(mkdir(victim, 0700), 0);
	snprintf(victim, sizeof(victim), "%s/victim/v.credentials", dir);
	write_text(victim, "precious\n");
	snprintf(victim, sizeof(victim), "%s/victim/v.json", dir);
	write_text(victim, "precious\n");

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char want[200];

		snprintf(want, sizeof(want), "field 'volume_id': '%s' is not a volume id", bad[i]);
		sr.volume_id = pr.volume_id = bad[i];
		ck_assert_int_eq(node_stage(n, &sr, 0, &err), ERR_INVALID);
		ck_assert_msg(strncmp(err.msg, want, strlen(want)) == 0, "%s", err.msg);
		ck_assert_msg(!strstr(err.msg, dir), "an internal path in '%s'", err.msg);
		ck_assert_int_eq(node_unstage(n, bad[i], staging, &err), ERR_INVALID);
		ck_assert_msg(strncmp(err.msg, want, strlen(want)) == 0, "%s", err.msg);
		ck_assert_int_eq(node_publish(n, &pr, &err), ERR_INVALID);
		ck_assert_msg(strncmp(err.msg, want, strlen(want)) == 0, "%s", err.msg);
		ck_assert_int_eq(node_unpublish(n, bad[i], target, &err), ERR_INVALID);
		ck_assert_msg(strncmp(err.msg, want, strlen(want)) == 0, "%s", err.msg);
		ck_assert_int_eq(node_volume_stats(n, bad[i], staging, &st, &cond, &err), ERR_INVALID);
		ck_assert_msg(strncmp(err.msg, want, strlen(want)) == 0, "%s", err.msg);
	}
	/* Nothing outside STATE/node was written or removed. */
	expect_text(victim, "precious\n");
	snprintf(victim, sizeof(victim), "%s/victim/v.credentials", dir);
	expect_text(victim, "precious\n");

	/* Over-long: refused, quoted cut short. */
	memset(longid, 'a', 129);
	longid[129] = '\0';
	ck_assert_int_eq(node_unstage(n, longid, staging, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "at most 128 bytes") && strlen(err.msg) < 250, "%s", err.msg);
	ck_assert_int_eq(node_unstage(n, "", staging, &err), ERR_INVALID);
	ck_assert_str_eq(err.msg, "field 'volume_id': required");
	node_free(n);
}
END_TEST

START_TEST(test_node_stage_refuses_a_context_naming_another_dataset)
{
	struct controller_capability cap = { CONTROLLER_ACCESS_MOUNT,
					     CONTROLLER_MODE_MULTI_NODE_READER_ONLY };
	static const struct controller_kv context[] = { { "dataset", "pvc-other" },
							{ "source", "s3://bucket/other/" } };
	char state[64], root[64], staging[128], *roots[] = { root };
	struct node_stage_request sr = { .volume_id = "pvc-mine", .staging_path = staging,
					 .dataset = "pvc-other", .context = context, .ncontext = 2,
					 .cap = &cap };
	struct error err;
	struct node *n;

	snprintf(root, sizeof(root), "%s/mnt", dir);
	snprintf(staging, sizeof(staging), "%s/s/globalmount", root);
	n = node_in_dir(state, sizeof(state), roots);
	ck_assert_int_eq(node_stage(n, &sr, 0, &err), ERR_INVALID);
	ck_assert_str_eq(err.msg,
			 "volume_context key 'dataset': 'pvc-other' is not the dataset of volume_id 'pvc-mine' (a volume's dataset has the volume's id)");
	ck_assert_int_eq(access(staging, F_OK), -1);
	node_free(n);
}
END_TEST

START_TEST(test_node_refuses_paths_through_symlinks)
{
	struct controller_capability cap = { CONTROLLER_ACCESS_MOUNT,
					     CONTROLLER_MODE_MULTI_NODE_READER_ONLY };
	char state[64], root[64], elsewhere[128], link[128], target[160], staging[160],
		*roots[] = { root };
	struct node_publish_request pr = { .volume_id = "pvc-1", .cap = &cap };
	struct error err;
	struct node *n;

	snprintf(root, sizeof(root), "%s/mnt", dir);
	snprintf(elsewhere, sizeof(elsewhere), "%s/elsewhere", dir);
	ck_assert_int_eq(mkdir(root, 0755), 0);
	ck_assert_int_eq(mkdir(elsewhere, 0755), 0);
	n = node_in_dir(state, sizeof(state), roots);
	/* The final component a link. */
	snprintf(link, sizeof(link), "%s/mount", root);
	ck_assert_int_eq(symlink(elsewhere, link), 0);
	snprintf(staging, sizeof(staging), "%s/s/globalmount", root);
	pr.staging_path = staging;
	pr.target_path = link;
	ck_assert_int_eq(node_publish(n, &pr, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "field 'target_path': ") &&
			      strstr(err.msg, "is a symbolic link"),
		      "%s", err.msg);
	ck_assert_int_eq(node_unpublish(n, "pvc-1", link, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "is a symbolic link"), "%s", err.msg);
	/* The link is left alone, and so is where it points. */
	ck_assert_int_eq(access(link, F_OK), 0);
	ck_assert_int_eq(access(elsewhere, F_OK), 0);
	/* A parent a link. */
	snprintf(link, sizeof(link), "%s/pods", root);
	ck_assert_int_eq(symlink(elsewhere, link), 0);
	snprintf(target, sizeof(target), "%s/pods/a/mount", root);
	pr.target_path = target;
	ck_assert_int_eq(node_publish(n, &pr, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "field 'target_path': ") && strstr(err.msg, link), "%s",
		      err.msg);
	ck_assert_int_eq(access(target, F_OK), -1);
	ck_assert_int_eq(node_unstage(n, "pvc-1", target, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "field 'staging_target_path': "), "%s", err.msg);
	/* What does not exist yet is fine: it is made as directories. */
	snprintf(target, sizeof(target), "%s/plain/a/mount", root);
	ck_assert_int_eq(node_unpublish(n, "pvc-1", target, &err), ERR_OK);
	node_free(n);
}
END_TEST

/*
 * A record read back from the disk may have been changed there: a loaded
 * record names only what the plugin writes itself, else it is refused
 * naming the field (and adopt leaves it alone).
 */
START_TEST(test_node_record_check_refuses_what_the_plugin_never_writes)
{
	char *roots[] = { "/var/lib/kubelet" };
	char state[] = "/var/lib/granary/csi/node";
	char init[] = "/var/lib/granary/csi/node/pvc-1/init";
	char cred[] = "/var/lib/granary/csi/node/pvc-1/credentials";
	char staging[] = "/var/lib/kubelet/plugins/x/globalmount";
	char target[] = "/var/lib/kubelet/pods/a/volumes/x/mount";
	char *targets[] = { target };
	struct node_record r = { .volume_id = "pvc-1", .dataset = "pvc-1",
				 .staging_path = staging, .credentials_file = cred,
				 .init_state = init, .targets = targets, .ntargets = 1 };
	struct error err;

	ck_assert_msg(record_check("r.json", &r, state, roots, 1, &err) == ERR_OK, "%s", err.msg);
	r.credentials_file = "";
	ck_assert_int_eq(record_check("r.json", &r, state, roots, 1, &err), ERR_OK);

	r.volume_id = "../../etc";
	ck_assert_int_eq(record_check("r.json", &r, state, roots, 1, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "record 'r.json': field 'volume_id': '../../etc'"), "%s",
		      err.msg);
	r.volume_id = "pvc-1";
	r.staging_path = "/etc";
	ck_assert_int_eq(record_check("r.json", &r, state, roots, 1, &err), ERR_INVALID);
	ck_assert_str_eq(err.msg,
			 "record 'r.json': field 'staging_path': '/etc' is not a clean absolute path under the allowed roots");
	r.staging_path = staging;
	targets[0] = "/var/lib/kubelet/../../etc";
	ck_assert_int_eq(record_check("r.json", &r, state, roots, 1, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "field 'targets'"), "%s", err.msg);
	targets[0] = target;
	/* Unlinked at unstage: another volume's file or the keeper's socket. */
	r.init_state = "/var/lib/granary/csi/node/pvc-1/keeper.sock";
	ck_assert_int_eq(record_check("r.json", &r, state, roots, 1, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "field 'init_state'"), "%s", err.msg);
	r.init_state = init;
	r.credentials_file = "/var/lib/granary/csi/node/pvc-2/credentials";
	ck_assert_int_eq(record_check("r.json", &r, state, roots, 1, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "field 'credentials_file'"), "%s", err.msg);
}
END_TEST

/* Mount pods of test_node's template on node (no Kubernetes API: a
 * call to it would crash the test). */
/* A template of image whose first container mounts the hostPaths paths
 * (name i: "v<i>") at the same paths. */
static const char *write_template(const char *image, const char *const *paths, size_t n)
{
	static char path[128];
	char text[2048], *p = text, *end = text + sizeof(text);

	snprintf(path, sizeof(path), "%s/template-%s.json", dir, image);
	p += snprintf(p, end - p,
		      "{\"metadata\": {\"name\": \"granary-mount\", \"namespace\": \"granary\"},"
		      " \"spec\": {\"containers\": [{\"image\": \"%s\", \"volumeMounts\": [",
		      image);
	for (size_t i = 0; i < n; i++)
		p += snprintf(p, end - p, "%s{\"name\": \"v%zu\", \"mountPath\": \"%s\"}",
			      i ? ", " : "", i, paths[i]);
	p += snprintf(p, end - p, "]}], \"volumes\": [");
	for (size_t i = 0; i < n; i++)
		p += snprintf(p, end - p, "%s{\"name\": \"v%zu\", \"hostPath\": {\"path\": \"%s\"}}",
			      i ? ", " : "", i, paths[i]);
	snprintf(p, end - p, "]}}");
	write_text(path, text);
	return path;
}

static struct mountpods *pods_on(const char *node, const char *image)
{
	const char *paths[] = { "/state/node", "/cache" };
	struct mountpods_config cfg = { .node = node, .volumes_dir = "/state/node" };
	struct mountpods *mp = NULL;
	struct error err;

	cfg.template_file = write_template(image, paths, 2);
	ck_assert_msg(mountpods_new(&cfg, NULL, &mp, &err) == ERR_OK, "%s", err.msg);
	return mp;
}

/*
 * Each mount pod gets its volume's directory in place of STATE/node, so a
 * template must mount STATE/node (at the same path), and no directory above
 * it: that would show every volume's credentials and keeper socket to
 * every mount pod.
 */
START_TEST(test_node_mount_pod_template_shows_no_other_volume)
{
	const char *state[] = { "/state" }, *above[] = { "/state/node", "/state/" };
	const char *elsewhere[] = { "/state/nodes" }, *root[] = { "/state/node", "/" };
	struct mountpods_config cfg = { .node = "node-a", .volumes_dir = "/state/node" };
	struct mountpods *mp = NULL;
	struct error err;

	cfg.template_file = write_template("a", state, 1);
	ck_assert_int_eq(mountpods_new(&cfg, NULL, &mp, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "hostPath '/state' would show every volume's directory"), "%s",
		      err.msg);
	cfg.template_file = write_template("b", above, 2);
	ck_assert_int_eq(mountpods_new(&cfg, NULL, &mp, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "hostPath '/state/'"), "%s", err.msg);
	cfg.template_file = write_template("c", root, 2);
	ck_assert_int_eq(mountpods_new(&cfg, NULL, &mp, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "hostPath '/'"), "%s", err.msg);
	cfg.template_file = write_template("d", elsewhere, 1);
	ck_assert_int_eq(mountpods_new(&cfg, NULL, &mp, &err), ERR_INVALID);
	ck_assert_msg(strstr(err.msg, "needs a hostPath volume of '/state/node' mounted at the same path"),
		      "%s", err.msg);
	ck_assert_ptr_null(mp);
}
END_TEST

/*
 * The names of the pods to delete come from granary-mount's hello, which a
 * mount pod could forge: only the volume's own pod on this node, from any
 * template, is ever deleted; any other name is refused before the API.
 */
START_TEST(test_node_mount_pods_delete_only_the_volume_own_pod)
{
	struct mountpods *mp = pods_on("node-a", "v1"), *upgraded = pods_on("node-a", "v2");
	struct mountpods *other_node = pods_on("node-b", "v1");
	char name[MOUNTPOD_NAME_MAX], old[MOUNTPOD_NAME_MAX], theirs[MOUNTPOD_NAME_MAX];
	char volume[64], forged[MOUNTPOD_NAME_MAX + 8];
	struct error err;

	mountpods_name(mp, "pvc-1", name);
	mountpods_name(upgraded, "pvc-1", old);
	ck_assert_str_ne(name, old);
	ck_assert(mountpods_owns(mp, "pvc-1", name));
	/* An upgrade deletes the pod of the template before. */
	ck_assert(mountpods_owns(mp, "pvc-1", old));
	ck_assert(!mountpods_owns(mp, "pvc-2", name));
	mountpods_name(other_node, "pvc-1", theirs);
	ck_assert(!mountpods_owns(mp, "pvc-1", theirs));
	snprintf(forged, sizeof(forged), "%s0", name);
	ck_assert(!mountpods_owns(mp, "pvc-1", forged));
	snprintf(forged, sizeof(forged), "%.*sABCDEF", (int)strlen(name) - 6, name);
	ck_assert(!mountpods_owns(mp, "pvc-1", forged));

	ck_assert_int_eq(mountpods_delete(mp, "pvc-1", "granary-meta-0", &err), ERR_PERMISSION);
	ck_assert_str_eq(err.msg,
			 "delete mount pod granary/granary-meta-0: refused, it is not the mount pod of volume 'pvc-1' on node 'node-a'");
	ck_assert_int_eq(mountpods_delete(mp, "pvc-1", theirs, &err), ERR_PERMISSION);
	ck_assert_int_eq(mountpods_delete(mp, "pvc-2", name, &err), ERR_PERMISSION);
	ck_assert_int_eq(mountpods_delete(mp, "pvc-1", "../../secrets/x", &err), ERR_PERMISSION);
	/* The sweep's look-up of a pod's volume goes nowhere else either. */
	ck_assert_int_eq(mountpods_volume_of(mp, "granary-meta-0", volume, sizeof(volume), &err),
			 ERR_PERMISSION);
	ck_assert_str_eq(volume, "");
	ck_assert_int_eq(mountpods_volume_of(mp, "granary-mount-x/../../../secrets/y", volume,
					     sizeof(volume), &err),
			 ERR_PERMISSION);
	mountpods_free(mp);
	mountpods_free(upgraded);
	mountpods_free(other_node);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("csi_node");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_node_record_round_trip);
	tcase_add_test(tc, test_node_record_load_errors_name_path_and_field);
	tcase_add_test(tc, test_node_path_allowed_only_strictly_under_roots);
	tcase_add_test(tc, test_node_fuse_argv_names_files_never_secrets);
	tcase_add_test(tc, test_node_mount_condition_names_path_and_cause);
	tcase_add_test(tc, test_node_restart_delay_backs_off_only_after_failed_starts);
	tcase_add_test(tc, test_node_volume_stats_of_what_is_not_staged_is_not_found);
	tcase_add_test(tc, test_node_refuses_volume_ids_that_are_not_ids);
	tcase_add_test(tc, test_node_stage_refuses_a_context_naming_another_dataset);
	tcase_add_test(tc, test_node_refuses_paths_through_symlinks);
	tcase_add_test(tc, test_node_mount_pods_delete_only_the_volume_own_pod);
	tcase_add_test(tc, test_node_mount_pod_template_shows_no_other_volume);
	tcase_add_test(tc, test_node_record_check_refuses_what_the_plugin_never_writes);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
