/*
 * test_mountstats.c - a mount's counters file: made, continued by a
 * successor, replaced when of another layout, read by another process
 * without writing, and rendered with and without the volume label.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fileio.h"
#include "fuse/mountstats.h"
#include "unit/check_main.h"

static const char *const cluster_sources[] = { "local", "peer", "store" };

static void temp_stats(char *dir, size_t dsize, char *path, size_t psize)
{
	snprintf(dir, dsize, "/tmp/granary-mstats-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, psize, "%s/init%s", dir, MOUNTSTATS_SUFFIX);
}

START_TEST(test_mountstats_path_is_init_state_with_suffix)
{
	char out[64];

	ck_assert(mountstats_path("/state/node/vol-1.init", out, sizeof(out)));
	ck_assert_str_eq(out, "/state/node/vol-1.init.stats");
	ck_assert(!mountstats_path("/a/very/long/path/that/does/not/fit", out, 16));
}
END_TEST

START_TEST(test_mountstats_successor_continues_the_file_a_killed_daemon_left)
{
	char dir[64], path[128];
	struct mountstats *ms = NULL;
	struct mountstats_values v;
	struct error err;
	bool continued = true;
	pid_t pid;
	int status;

	temp_stats(dir, sizeof(dir), path, sizeof(path));
	/* A daemon in a child process counts, then dies by SIGKILL. */
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (mountstats_open(path, cluster_sources, 3, &ms, &continued, &err) != ERR_OK ||
		    continued)
			_exit(1);
		for (int i = 0; i < 1000; i++)
			mountstats_read_done(&ms->c, 0.0003, 4096);
		atomic_fetch_add(&ms->c.source_blocks[1], 7);
		atomic_fetch_add(&ms->c.errors[MOUNTSTATS_CAUSE_DEADLINE], 2);
		kill(getpid(), SIGKILL);
		_exit(2);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	/* The node plugin reads it while no daemon runs. */
	ck_assert_int_eq(mountstats_load(path, &v, &err), ERR_OK);
	ck_assert_uint_eq(v.reads, 1000);
	ck_assert_uint_eq(v.bytes, 4096000);
	ck_assert_uint_eq(v.latency[2], 1000); /* 0.0003 s: in le=0.0005 */
	ck_assert_uint_eq(v.latency_sum_ns, 300000000ull);
	ck_assert_uint_eq(v.source_blocks[1], 7);
	ck_assert_str_eq(v.sources[1], "peer");
	ck_assert_str_eq(v.sources[3], "");
	ck_assert_uint_eq(v.daemons, 1);
	/* The successor goes on from there. */
	ck_assert_int_eq(mountstats_open(path, cluster_sources, 3, &ms, &continued, &err), ERR_OK);
	ck_assert(continued);
	mountstats_read_done(&ms->c, 2.0, 1);
	mountstats_get(ms, &v);
	ck_assert_uint_eq(v.reads, 1001);
	ck_assert_uint_eq(v.latency[13], 1); /* 2 s: in le=2.5 */
	ck_assert_uint_eq(v.errors[MOUNTSTATS_CAUSE_DEADLINE], 2);
	ck_assert_uint_eq(v.daemons, 2);
	mountstats_tick(ms);
	mountstats_get(ms, &v);
	ck_assert_uint_gt(v.memory_bytes, 0);
	ck_assert_uint_gt(v.updated_ms, 0);
	mountstats_close(ms);
	unlink(path);
	rmdir(dir);
}
END_TEST

START_TEST(test_mountstats_file_of_another_layout_starts_again)
{
	char dir[64], path[128], junk[100] = "GRNSTATS";
	struct mountstats *ms = NULL;
	struct mountstats_values v;
	struct error err;
	bool continued = true;

	temp_stats(dir, sizeof(dir), path, sizeof(path));
	ck_assert_int_eq(fileio_replace(path, junk, sizeof(junk), 0600, &err), ERR_OK);
	ck_assert_int_eq(mountstats_load(path, &v, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "not a mount stats file"));
	ck_assert_int_eq(mountstats_open(path, cluster_sources, 3, &ms, &continued, &err), ERR_OK);
	ck_assert(!continued);
	mountstats_get(ms, &v);
	ck_assert_uint_eq(v.reads, 0);
	ck_assert_uint_eq(v.daemons, 1);
	mountstats_close(ms);
	/* A symbolic link or a FIFO in its place is refused at once. */
	unlink(path);
	ck_assert_int_eq(symlink("/etc/passwd", path), 0);
	ck_assert_int_eq(mountstats_load(path, &v, &err), ERR_INVALID);
	unlink(path);
	ck_assert_int_eq(mkfifo(path, 0600), 0);
	ck_assert_int_eq(mountstats_load(path, &v, &err), ERR_INVALID);
	/* Nothing there is ERR_NOT_FOUND, for the plugin to skip. */
	unlink(path);
	ck_assert_int_eq(mountstats_load(path, &v, &err), ERR_NOT_FOUND);
	/* No path: counters in memory. */
	ck_assert_int_eq(mountstats_open(NULL, cluster_sources, 3, &ms, &continued, &err), ERR_OK);
	ck_assert(!continued);
	mountstats_close(ms);
	ck_assert_int_eq(mountstats_open(NULL, cluster_sources, 5, &ms, &continued, &err),
			 ERR_INVALID);
	rmdir(dir);
}
END_TEST

START_TEST(test_mountstats_render_one_family_per_metric_a_sample_per_volume)
{
	struct mountstats_view views[2] = { { .volume = "pvc-a" }, { .volume = "pvc-b" } };
	struct metrics_buf b = { 0 };
	const char *p;

	for (int i = 0; i < 2; i++) {
		memcpy(views[i].v.sources[0], "local", 6);
		memcpy(views[i].v.sources[1], "store", 6);
		views[i].v.reads = 10 + (uint64_t)i;
		views[i].v.source_bytes[0] = 4096;
		views[i].v.latency[0] = 3;
		views[i].v.latency_sum_ns = 250000;
	}
	views[1].v.errors[MOUNTSTATS_CAUSE_CHANGED] = 4;
	mountstats_render(&b, views, 2);
	ck_assert_int_eq(b.failed, 0);
	ck_assert_ptr_nonnull(strstr(b.data, "# TYPE granary_fuse_reads_total counter\n"
					     "granary_fuse_reads_total{volume=\"pvc-a\"} 10\n"
					     "granary_fuse_reads_total{volume=\"pvc-b\"} 11\n"));
	ck_assert_ptr_nonnull(strstr(b.data,
				     "granary_fuse_source_bytes_total{volume=\"pvc-a\",source=\"local\"} 4096\n"
				     "granary_fuse_source_bytes_total{volume=\"pvc-a\",source=\"store\"} 0\n"));
	ck_assert_ptr_nonnull(strstr(b.data,
				     "granary_fuse_read_errors_total{volume=\"pvc-b\",cause=\"object_changed\"} 4\n"));
	ck_assert_ptr_nonnull(strstr(b.data,
				     "granary_fuse_read_seconds_bucket{volume=\"pvc-b\",le=\"0.0001\"} 3\n"));
	ck_assert_ptr_nonnull(strstr(b.data, "granary_fuse_read_seconds_sum{volume=\"pvc-a\"} 0.00025\n"));
	ck_assert_ptr_nonnull(strstr(b.data, "granary_fuse_read_seconds_count{volume=\"pvc-a\"} 3\n"));
	/* Each family's HELP and TYPE once, however many volumes. */
	p = strstr(b.data, "# TYPE granary_fuse_reads_total");
	ck_assert_ptr_null(strstr(p + 1, "# TYPE granary_fuse_reads_total"));
	ck_assert_ptr_null(strstr(b.data, "source=\"\""));
	metrics_buf_release(&b);
	/* A daemon's own: no volume label; none at all: nothing. */
	views[0].volume = NULL;
	mountstats_render(&b, views, 1);
	ck_assert_ptr_nonnull(strstr(b.data, "\ngranary_fuse_reads_total 10\n"));
	ck_assert_ptr_nonnull(strstr(b.data, "\ngranary_fuse_source_reads_total{source=\"local\"} 0\n"));
	ck_assert_ptr_nonnull(strstr(b.data, "\ngranary_fuse_read_seconds_count 3\n"));
	metrics_buf_release(&b);
	mountstats_render(&b, views, 0);
	ck_assert_uint_eq(b.len, 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("mountstats");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_mountstats_path_is_init_state_with_suffix);
	tcase_add_test(tc, test_mountstats_successor_continues_the_file_a_killed_daemon_left);
	tcase_add_test(tc, test_mountstats_file_of_another_layout_starts_again);
	tcase_add_test(tc, test_mountstats_render_one_family_per_metric_a_sample_per_volume);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
