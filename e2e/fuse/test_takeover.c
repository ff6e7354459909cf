/*
 * test_takeover.c - a granary-fuse killed mid-read is replaced on the same
 * mount without a reader ever seeing an error.
 *
 * The test plays the CSI node plugin's part: it opens /dev/fuse, mounts
 * with mount(2) itself and keeps the descriptor; granary-fuse serves it as
 * /dev/fd/N. Reader threads read with O_DIRECT (so every read reaches the
 * daemon) while the daemon is SIGKILLed and a successor started with
 * --takeover; all reads must complete byte-exact and the mount must never
 * answer ENOTCONN.
 *
 * The mount's counters outlive the daemon: each daemon serves /healthz and
 * /metrics on a unix socket; the counts the killed one made are in the
 * stats file beside init_state, and the successor's /metrics starts from
 * them (not from zero) and counts two daemons.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fusemount.h"
#include "common/retry.h"
#include "e2e/harness.h"
#include "fuse/mountstats.h"
#include "unit/check_main.h"

#define FILE_SIZE (8u << 20)
#define NREADERS 4

static char bin_dir[512], work[256], src[300], mnt[300], init_state[320], metrics_addr[340];
static unsigned char expect[FILE_SIZE];
static char mnt_file[400]; /* mnt/data.bin */
static int fuse_fd = -1;

static pid_t start_daemon(int takeover)
{
	char exe[600], fdpath[32], source[320], cache[320], logp[320];
	const char *argv[] = { exe, "--mountpoint", fdpath, "--source", source, "--cache.dir", cache,
			       "--cache.block_size", "1MiB", "--init_state", init_state, "--takeover",
			       takeover ? "true" : "false", "--metrics.address", metrics_addr, NULL };

	snprintf(exe, sizeof(exe), "%s/granary-fuse", bin_dir);
	snprintf(fdpath, sizeof(fdpath), "/dev/fd/%d", fuse_fd);
	snprintf(source, sizeof(source), "file://%s", src);
	snprintf(cache, sizeof(cache), "%s/cache", work);
	snprintf(logp, sizeof(logp), "%s/fuse-%d.log", work, takeover);
	return harness_spawn(argv, logp);
}

/* The mount's device, noted while it still answers: a stat of a hung
 * mount would hang too. */
static dev_t mnt_dev;

/* A failed check while readers may be blocked on the connection (which
 * this process holds) aborts it first, so the failure does not hang. */
#define check_or_abort(cond, ...)                         \
	do {                                              \
		if (!(cond)) {                            \
			harness_fuse_abort(mnt_dev);      \
			ck_abort_msg(__VA_ARGS__);        \
		}                                         \
	} while (0)

/* One sample of the running daemon's /metrics; -1 when it does not answer
 * or has no such sample. */
static double scrape(const char *sample)
{
	char *text = NULL;
	double v = -1;

	if (harness_http_get(metrics_addr, "/metrics", &text) == 200)
		v = harness_metric(text, sample);
	free(text);
	return v;
}

static int wait_serving(void)
{
	char path[400];
	struct stat st;

	snprintf(path, sizeof(path), "%s/data.bin", mnt);
	for (int i = 0; i < 200; i++) {
		if (stat(path, &st) == 0 && st.st_size == FILE_SIZE)
			return 0;
		usleep(50 * 1000);
	}
	return -1;
}

START_TEST(test_takeover_sigkill_mid_read_loses_no_read)
{
	char opts[200], path[400];
	pthread_t t[NREADERS];
	struct harness_reader r[NREADERS];
	atomic_int stop = 0;
	pid_t first, second;
	int status = 0, flags;
	double before, after;
	struct mountstats_values at_death;
	char stats_path[400];
	struct error err;
	enum error_code load_rc;
	long total = 0;
	FILE *f;

	harness_bin_dir(bin_dir, sizeof(bin_dir));
	harness_tmpdir(work, sizeof(work), "/tmp/granary-takeover-XXXXXX");
	snprintf(src, sizeof(src), "%s/src", work);
	snprintf(mnt, sizeof(mnt), "%s/mnt", work);
	snprintf(mnt_file, sizeof(mnt_file), "%s/data.bin", mnt);
	snprintf(init_state, sizeof(init_state), "%s/init", work);
	snprintf(metrics_addr, sizeof(metrics_addr), "unix://%s/metrics.sock", work);
	ck_assert_int_eq(mkdir(src, 0755), 0);
	ck_assert_int_eq(mkdir(mnt, 0755), 0);
	harness_fill(expect, sizeof(expect), 0x9e3779b97f4a7c15ull);
	snprintf(path, sizeof(path), "%s/data.bin", src);
	f = fopen(path, "w");
	ck_assert_uint_eq(fwrite(expect, 1, sizeof(expect), f), sizeof(expect));
	fclose(f);

	/* The supervisor's part: open the device and mount it ourselves. */
	fuse_fd = open("/dev/fuse", O_RDWR);
	ck_assert_msg(fuse_fd >= 0, "open /dev/fuse: %s", strerror(errno));
	flags = fcntl(fuse_fd, F_GETFD);
	fcntl(fuse_fd, F_SETFD, flags & ~FD_CLOEXEC);
	snprintf(opts, sizeof(opts),
		 "fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions,max_read=1048576",
		 fuse_fd);
	ck_assert_msg(mount("granary:takeover", mnt, "fuse.granary", MS_RDONLY | MS_NOSUID | MS_NODEV,
			    opts) == 0, "mount: %s", strerror(errno));

	first = start_daemon(0);
	ck_assert_int_eq(wait_serving(), 0);
	/* ...and its first open and close, as the node plugin does. */
	ck_assert(fusemount_prime(mnt));
	{
		struct stat st;

		ck_assert_int_eq(stat(mnt, &st), 0);
		mnt_dev = st.st_dev;
	}
	for (int i = 0; i < NREADERS; i++) {
		r[i] = (struct harness_reader){ .stop = &stop, .path = mnt_file, .expect = expect,
					       .size = FILE_SIZE, .seed = (unsigned)i + 7 };
		pthread_create(&t[i], NULL, harness_direct_reader, &r[i]);
	}
	usleep(300 * 1000);
	check_or_abort(harness_http_get(metrics_addr, "/healthz", NULL) == 200,
		       "the first daemon's /healthz does not answer 200");
	before = scrape("granary_fuse_reads_total");
	check_or_abort(before > 0, "the first daemon counted no reads (%.0f)", before);
	check_or_abort(scrape("granary_fuse_daemons_total") == 1, "not one daemon counted");
	/* Kill without warning, mid-read, and hand the live connection over. */
	kill(first, SIGKILL);
	ck_assert_int_eq(waitpid(first, &status, 0), first);
	usleep(200 * 1000); /* readers now wait on the kernel's queue */
	/* What the killed daemon counted, read as the node plugin reads it. */
	mountstats_path(init_state, stats_path, sizeof(stats_path));
	load_rc = mountstats_load(stats_path, &at_death, &err);
	second = start_daemon(1);
	for (int i = 0; i < 100 && harness_http_get(metrics_addr, "/healthz", NULL) != 200; i++)
		usleep(20 * 1000);
	check_or_abort(load_rc == ERR_OK, "the killed daemon left no counters: %s", err.msg);
	check_or_abort(at_death.reads >= (uint64_t)before, "the file holds fewer reads than scraped");
	/* The successor's first answer goes on from the last value. */
	after = scrape("granary_fuse_reads_total");
	check_or_abort(after >= (double)at_death.reads,
		       "the successor's reads_total %.0f is below the %llu its predecessor left",
		       after, (unsigned long long)at_death.reads);
	check_or_abort(scrape("granary_fuse_daemons_total") == 2, "not two daemons counted");
	usleep(700 * 1000);
	atomic_store(&stop, 1);
	for (int i = 0; i < NREADERS; i++) {
		struct timespec until = retry_deadline_ts(CLOCK_REALTIME, 20000);

		if (pthread_timedjoin_np(t[i], NULL, &until) != 0) {
			/* A reader stuck in the kernel would never return: abort
			 * the connection so the failure does not hang the run. */
			harness_fuse_abort(mnt_dev);
			ck_abort_msg("reader %d still blocked 20 s after the takeover", i);
		}
		total += r[i].reads;
		ck_assert_msg(r[i].enotconn == 0, "reader %d saw ENOTCONN %ld times", i, r[i].enotconn);
		ck_assert_msg(r[i].errors == 0, "reader %d: %ld failed or wrong reads", i, r[i].errors);
	}
	ck_assert_int_gt(total, 20);
	/* Every read of the run is in the successor's counters, in the
	 * histogram too, and served by the in-process cache or the store. */
	after = scrape("granary_fuse_reads_total");
	ck_assert_double_ge(after, (double)at_death.reads);
	ck_assert_double_eq(scrape("granary_fuse_read_seconds_count"), after);
	ck_assert_double_gt(scrape("granary_fuse_source_reads_total{source=\"cache\"}"), 0);
	ck_assert_double_gt(scrape("granary_fuse_resident_memory_bytes"), 1 << 20);

	status = harness_stop(&second, 120000, NULL);
	ck_assert_msg(status == 0, "successor exit status %d", status);
	ck_assert_int_eq(umount2(mnt, MNT_DETACH), 0);
	close(fuse_fd);
	ck_assert_int_eq(harness_rm_rf(work), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fuse_takeover");
	TCase *tc = tcase_create("takeover");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_takeover_sigkill_mid_read_loses_no_read);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
