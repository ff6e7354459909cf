/*
 * test_mount.c - granary-fuse on real mounts: the built binary is started
 * on a temporary mountpoint over a file:// or s3:// source (the S3 server
 * fixture), and the tests use plain system calls against the mount.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "common/fileio.h"
#include "common/retry.h"
#include "e2e/harness.h"
#include "store/store.h"
#include "unit/check_main.h"

struct mnt {
	char dir[256];
	pid_t pid;
};

static char bin_dir[512], s3_endpoint[256], s3_credentials[512];

static void read_env(void)
{
	harness_bin_dir(bin_dir, sizeof(bin_dir));
	harness_s3_env(s3_endpoint, sizeof(s3_endpoint), s3_credentials, sizeof(s3_credentials));
}

/* Starts granary-fuse with extra flags (NULL-terminated); waits until the
 * mount shows up. Returns 0, or the exit status when the daemon exited. */
static int start_mount(struct mnt *m, const char *const *flags, char *log_path)
{
	char exe[600];
	const char *argv[64];
	int n = 0, rc;

	harness_tmpdir(m->dir, sizeof(m->dir), "/tmp/granary-mnt-XXXXXX");
	snprintf(exe, sizeof(exe), "%s/granary-fuse", bin_dir);
	argv[n++] = exe;
	argv[n++] = "--mountpoint";
	argv[n++] = m->dir;
	for (int i = 0; flags[i]; i++)
		argv[n++] = flags[i];
	argv[n] = NULL;
	m->pid = harness_spawn(argv, log_path);
	rc = harness_wait_mount(&m->pid, m->dir, 10000, 50);
	if (rc > 0)
		rmdir(m->dir);
	ck_assert_msg(rc >= 0, "mount at %s did not appear", m->dir);
	return rc;
}

/* SIGTERM, then the daemon must exit 0 and leave no mount behind. */
static void stop_mount(struct mnt *m)
{
	int status;

	if (m->pid <= 0)
		return;
	status = harness_stop(&m->pid, 60000, NULL);
	ck_assert_msg(status == 0, "exit status %d", status);
	ck_assert_msg(!harness_is_mounted(m->dir), "stale mount left at %s", m->dir);
	rmdir(m->dir);
}

/* --- a source tree on local disk ---------------------------------------- */

static char src[256];

static void fill(unsigned char *buf, size_t n, unsigned seed)
{
	harness_fill(buf, n, seed * 0x9e3779b97f4a7c15ull + 7);
}

static void write_file(const char *rel, size_t size, unsigned seed)
{
	char path[1024], *slash;
	unsigned char *buf = malloc(size ? size : 1);
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", src, rel);
	for (slash = strchr(path + strlen(src) + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		mkdir(path, 0755);
		*slash = '/';
	}
	fill(buf, size, seed);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(buf, 1, size, f), size);
	fclose(f);
	free(buf);
}

/* Sizes around the 64 KiB block size used below: empty, tiny, exactly one
 * block, one byte over, several blocks and a partial one. */
static const struct { const char *name; size_t size; } files[] = {
	{ "empty.bin", 0 },
	{ "tiny.txt", 13 },
	{ "one-block.bin", 65536 },
	{ "block-plus-one.bin", 65537 },
	{ "dir/sub/many-blocks.bin", 10 * 65536 + 1234 },
	{ "dir/with space & more.bin", 200000 },
	{ "big.bin", 5u << 20 },
};
#define NFILES (sizeof(files) / sizeof(files[0]))

static void make_source(void)
{
	harness_tmpdir(src, sizeof(src), "/tmp/granary-src-XXXXXX");
	for (size_t i = 0; i < NFILES; i++)
		write_file(files[i].name, files[i].size, (unsigned)i + 1);
}

static void compare_file(const char *a, const char *b)
{
	FILE *fa = fopen(a, "r"), *fb = fopen(b, "r");
	char x[65536], y[65536];
	size_t na, nb;

	ck_assert_msg(fa && fb, "open %s / %s: %s", a, b, strerror(errno));
	do {
		na = fread(x, 1, sizeof(x), fa);
		nb = fread(y, 1, sizeof(y), fb);
		ck_assert_uint_eq(na, nb);
		ck_assert_msg(memcmp(x, y, na) == 0, "%s differs from %s", b, a);
	} while (na > 0);
	fclose(fa);
	fclose(fb);
}

static char log_path[256];

static void file_mount(struct mnt *m)
{
	char source[300];
	const char *flags[8] = { "--source", source, "--cache.block_size", "64KiB", NULL };

	snprintf(source, sizeof(source), "file://%s", src);
	snprintf(log_path, sizeof(log_path), "%s.log", src);
	ck_assert_int_eq(start_mount(m, flags, log_path), 0);
}

static void setup(void)
{
	read_env();
	make_source();
}

static void teardown(void)
{
	ck_assert_int_eq(harness_rm_rf(src), 0);
}

START_TEST(test_mount_every_file_reads_byte_exact)
{
	struct mnt m;
	char a[1024], b[1024];

	file_mount(&m);
	for (size_t i = 0; i < NFILES; i++) {
		struct stat st;

		snprintf(a, sizeof(a), "%s/%s", src, files[i].name);
		snprintf(b, sizeof(b), "%s/%s", m.dir, files[i].name);
		ck_assert_int_eq(stat(b, &st), 0);
		ck_assert_uint_eq((uint64_t)st.st_size, files[i].size);
		ck_assert(S_ISREG(st.st_mode));
		ck_assert_int_eq(st.st_mode & 0777, 0444);
		compare_file(a, b);
	}
	stop_mount(&m);
}
END_TEST

/* big.bin is the last file, written with seed NFILES. */
static unsigned char big_expect[5u << 20];

struct racer {
	const char *dir;
	unsigned seed;
	int failures;
};

static void *race_reads(void *arg)
{
	struct racer *r = arg;
	char path[1024], buf[100000];
	int fd;

	snprintf(path, sizeof(path), "%s/big.bin", r->dir);
	fd = open(path, O_RDONLY);
	if (fd < 0) {
		r->failures++;
		return NULL;
	}
	for (int i = 0; i < 200; i++) {
		size_t len = 1 + rand_r(&r->seed) % sizeof(buf);
		off_t off = rand_r(&r->seed) % (5u << 20);
		size_t want = (size_t)off + len > sizeof(big_expect) ? sizeof(big_expect) - (size_t)off : len;
		ssize_t n = pread(fd, buf, len, off);

		if (n != (ssize_t)want || memcmp(buf, big_expect + off, want) != 0)
			r->failures++;
	}
	close(fd);
	return NULL;
}

START_TEST(test_mount_concurrent_readers_see_the_right_bytes)
{
	struct mnt m;
	pthread_t t[16];
	struct racer r[16];

	fill(big_expect, sizeof(big_expect), NFILES);
	file_mount(&m);
	for (int i = 0; i < 16; i++) {
		r[i] = (struct racer){ .dir = m.dir, .seed = (unsigned)i + 1 };
		pthread_create(&t[i], NULL, race_reads, &r[i]);
	}
	for (int i = 0; i < 16; i++) {
		pthread_join(t[i], NULL);
		ck_assert_int_eq(r[i].failures, 0);
	}
	stop_mount(&m);
}
END_TEST

START_TEST(test_mount_stat_and_readdir_of_ten_thousand_files)
{
	struct mnt m;
	char path[1024];
	struct dirent *e;
	DIR *d;
	int seen = 0;

	snprintf(path, sizeof(path), "%s/many", src);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	for (int i = 0; i < 10000; i++) {
		FILE *f;

		snprintf(path, sizeof(path), "%s/many/f%05d", src, i);
		f = fopen(path, "w");

		ck_assert_ptr_nonnull(f);
		fprintf(f, "%d", i);
		fclose(f);
	}
	file_mount(&m);
	snprintf(path, sizeof(path), "%s/many", m.dir);
	d = opendir(path);
	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		seen++;
	}
	closedir(d);
	ck_assert_int_eq(seen, 10000);
	for (int i = 0; i < 10000; i++) {
		struct stat st;
		char want[16];

		snprintf(path, sizeof(path), "%s/many/f%05d", m.dir, i);
		ck_assert_int_eq(stat(path, &st), 0);
		ck_assert_int_eq(st.st_size, snprintf(want, sizeof(want), "%d", i));
	}
	snprintf(path, sizeof(path), "%s/many/f10000", m.dir);
	ck_assert_int_eq(access(path, F_OK), -1);
	ck_assert_int_eq(errno, ENOENT);
	stop_mount(&m);
}
END_TEST

/* FUSE mounts of any type at dir (a dead one included). */
static int mounts_at(const char *dir)
{
	char line[4096], mnt[1024], type[64];
	FILE *f = fopen("/proc/self/mounts", "r");
	int n = 0;

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%*s %1023s %63s", mnt, type) == 2 && strcmp(mnt, dir) == 0 &&
		    strncmp(type, "fuse", 4) == 0)
			n++;
	fclose(f);
	return n;
}

/*
 * A daemon killed with nothing else holding its connection leaves a dead
 * mount (ENOTCONN). A new granary-fuse on the same mountpoint detaches it
 * lazily and says so, rather than mounting over it: one mount serves
 * there, and once stopped nothing is left.
 */
START_TEST(test_mount_start_clears_a_dead_mount_at_its_mountpoint)
{
	struct mnt m;
	struct statfs sfs;
	char exe[600], a[1024], b[1024], source[300];
	const char *argv[] = { exe, "--mountpoint", m.dir, "--source", source,
			       "--cache.block_size", "64KiB", NULL };
	uint64_t t0;

	file_mount(&m);
	ck_assert_int_eq(kill(m.pid, SIGKILL), 0);
	ck_assert_int_eq(waitpid(m.pid, NULL, 0), m.pid);
	/* statfs: a stat may be answered from cached attributes */
	ck_assert_msg(statfs(m.dir, &sfs) != 0 && errno == ENOTCONN,
		      "a killed daemon's mount is not dead: statfs says %s", strerror(errno));

	snprintf(exe, sizeof(exe), "%s/granary-fuse", bin_dir);
	snprintf(source, sizeof(source), "file://%s", src);
	snprintf(log_path, sizeof(log_path), "%s.dead.log", src);
	m.pid = harness_spawn(argv, log_path);
	t0 = time(NULL);
	while (!harness_file_contains(log_path, "msg=mounted")) {
		ck_assert_msg(waitpid(m.pid, NULL, WNOHANG) == 0, "granary-fuse exited at start");
		ck_assert_msg(time(NULL) - t0 < 10, "granary-fuse did not mount in 10 s");
		usleep(20000);
	}
	ck_assert_msg(harness_file_contains(log_path, "a dead FUSE mount was at the mountpoint"),
		      "the dead mount was not reported");
	ck_assert_int_eq(mounts_at(m.dir), 1);
	snprintf(a, sizeof(a), "%s/%s", src, files[3].name);
	snprintf(b, sizeof(b), "%s/%s", m.dir, files[3].name);
	compare_file(a, b);
	stop_mount(&m);
	ck_assert_int_eq(mounts_at(m.dir), 0);
}
END_TEST

START_TEST(test_mount_every_write_operation_fails_with_erofs)
{
	struct mnt m;
	char f[1024], g[1024], d[1024];

	file_mount(&m);
	snprintf(f, sizeof(f), "%s/tiny.txt", m.dir);
	snprintf(g, sizeof(g), "%s/new.txt", m.dir);
	snprintf(d, sizeof(d), "%s/dir", m.dir);
#define EXPECT_EROFS(call)                                                        \
	do {                                                                      \
		errno = 0;                                                        \
		ck_assert_msg((call) == -1 && errno == EROFS, #call ": errno %d", errno); \
	} while (0)
	EXPECT_EROFS(open(f, O_WRONLY));
	EXPECT_EROFS(open(f, O_RDWR));
	EXPECT_EROFS(open(g, O_WRONLY | O_CREAT, 0644));
	EXPECT_EROFS(open(f, O_RDONLY | O_TRUNC));
	EXPECT_EROFS(mkdir(g, 0755));
	EXPECT_EROFS(unlink(f));
	EXPECT_EROFS(rmdir(d));
	EXPECT_EROFS(rename(f, g));
	EXPECT_EROFS(link(f, g));
	EXPECT_EROFS(symlink("x", g));
	EXPECT_EROFS(truncate(f, 0));
	EXPECT_EROFS(chmod(f, 0644));
	EXPECT_EROFS(chown(f, 1, 1));
	EXPECT_EROFS(utimensat(AT_FDCWD, f, NULL, 0));
	EXPECT_EROFS(mknod(g, S_IFIFO | 0644, 0));
	EXPECT_EROFS(setxattr(f, "user.x", "v", 1, 0));
	EXPECT_EROFS(removexattr(f, "user.granary.etag"));
	/* the file is untouched */
	compare_file(f, f);
	stop_mount(&m);
}
END_TEST

START_TEST(test_mount_exposes_etag_and_key_as_xattrs)
{
	struct mnt m;
	char f[1024], v[256], list[512];
	ssize_t n;

	file_mount(&m);
	snprintf(f, sizeof(f), "%s/dir/sub/many-blocks.bin", m.dir);
	n = getxattr(f, "user.granary.key", v, sizeof(v));
	ck_assert_int_eq(n, (ssize_t)strlen("dir/sub/many-blocks.bin"));
	ck_assert_int_eq(memcmp(v, "dir/sub/many-blocks.bin", (size_t)n), 0);
	n = getxattr(f, "user.granary.etag", v, sizeof(v));
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(getxattr(f, "user.other", v, sizeof(v)), -1);
	ck_assert_int_eq(errno, ENODATA);
	n = listxattr(f, list, sizeof(list));
	ck_assert_int_gt(n, 0);
	ck_assert_ptr_nonnull(memmem(list, (size_t)n, "user.granary.etag", 18));
	stop_mount(&m);
}
END_TEST

/* Copies the source tree to the bucket under fuse-src/. */
static void put_source_to_s3(void)
{
	struct store_config cfg = { 0 };
	struct store *st = NULL;
	struct error err;

	cfg.endpoint = s3_endpoint;
	cfg.credentials_file = s3_credentials;
	ck_assert_int_eq(store_open("s3://granary-e2e", &cfg, &st, &err), ERR_OK);
	for (size_t i = 0; i < NFILES; i++) {
		char key[512], path[1024];
		FILE *f;
		unsigned char *buf = malloc(files[i].size + 1);

		snprintf(key, sizeof(key), "fuse-src/%s", files[i].name);
		snprintf(path, sizeof(path), "%s/%s", src, files[i].name);
		f = fopen(path, "r");
		ck_assert_uint_eq(fread(buf, 1, files[i].size, f), files[i].size);
		fclose(f);
		ck_assert_msg(store_put(st, key, buf, files[i].size, &err) == ERR_OK, "%s", err.msg);
		free(buf);
	}
	store_free(st);
}

/* The flags of a mount of the bucket's fuse-src/ through endpoint, 64 KiB
 * blocks, from flags[*n] on (not terminated). */
static void s3_mount_flags(const char **flags, int *n, const char *endpoint)
{
	static char uri[300], cred[600], ep[300];

	snprintf(uri, sizeof(uri), "s3://granary-e2e/fuse-src/");
	snprintf(ep, sizeof(ep), "%s", endpoint);
	snprintf(cred, sizeof(cred), "%s", s3_credentials);
	flags[(*n)++] = "--source";
	flags[(*n)++] = uri;
	flags[(*n)++] = "--store.endpoint";
	flags[(*n)++] = ep;
	flags[(*n)++] = "--store.credentials_file";
	flags[(*n)++] = cred;
	flags[(*n)++] = "--cache.block_size";
	flags[(*n)++] = "64KiB";
}

START_TEST(test_mount_reads_an_s3_source_byte_exact)
{
	const char *flags[16];
	struct mnt m;
	int n = 0;

	put_source_to_s3();
	s3_mount_flags(flags, &n, s3_endpoint);
	flags[n] = NULL;
	snprintf(log_path, sizeof(log_path), "%s.s3.log", src);
	ck_assert_int_eq(start_mount(&m, flags, log_path), 0);
	for (size_t i = 0; i < NFILES; i++) {
		char a[1024], b[1024];

		snprintf(a, sizeof(a), "%s/%s", src, files[i].name);
		snprintf(b, sizeof(b), "%s/%s", m.dir, files[i].name);
		compare_file(a, b);
	}
	stop_mount(&m);
}
END_TEST

/* --- prefetch of the small files of a directory --- */

static long blocks_counted;

static int count_block(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb, (void)ftw;
	if (flag == FTW_F && strstr(path, "/blocks/"))
		blocks_counted++;
	return 0;
}

/* Block files under cache directory dir. */
static long cached_blocks(const char *dir)
{
	blocks_counted = 0;
	nftw(dir, count_block, 16, FTW_PHYS);
	return blocks_counted;
}

/* Block files under dir once read-ahead has settled: two looks 300 ms
 * apart agree. */
static long settled_blocks(const char *dir)
{
	long n = -1, last = -2;

	for (int i = 0; i < 50 && n != last; i++) {
		last = n;
		retry_sleep_ms(300);
		n = cached_blocks(dir);
	}
	return n;
}

static void read_flat(const struct mnt *m, int f)
{
	char a[1024], b[1024];

	snprintf(a, sizeof(a), "%s/flat/f%02d.bin", src, f);
	snprintf(b, sizeof(b), "%s/flat/f%02d.bin", m->dir, f);
	compare_file(a, b);
}

/* Forty small files, flat/f00 to flat/f39, in src. */
static void write_flat(void)
{
	for (int i = 0; i < 40; i++) {
		char name[32];

		snprintf(name, sizeof(name), "flat/f%02d.bin", i);
		write_file(name, 1000 + (size_t)i, 100 + (unsigned)i);
	}
}

/* Mounts src with prefetch.files set to prefetch, on a cache directory of
 * its own, made in cache (300 bytes). prefetch.files_max the same: the
 * files asked for do not follow a read-ahead limit found by trying. */
static void prefetch_mount(struct mnt *m, const char *prefetch, char *cache)
{
	char source[300];
	const char *flags[] = { "--source", source, "--cache.block_size", "64KiB", "--cache.dir", cache,
				"--prefetch.files", prefetch, "--prefetch.files_max", prefetch, NULL };

	snprintf(source, sizeof(source), "file://%s", src);
	harness_tmpdir(cache, 300, "/tmp/granary-cache-XXXXXX");
	snprintf(log_path, sizeof(log_path), "%s.prefetch.log", src);
	ck_assert_int_eq(start_mount(m, flags, log_path), 0);
}

/* Mounts as prefetch_mount; reads flat/f10 then flat/f20 (two misses in
 * one directory), lets the cache settle, then reads f21 to f<upto> (none
 * below 21) and returns how many blocks the cache holds once it has
 * settled again. */
static long blocks_after_reads(const char *prefetch, int upto)
{
	char cache[300];
	struct mnt m;
	long n;

	prefetch_mount(&m, prefetch, cache);
	read_flat(&m, 10);
	read_flat(&m, 20);
	n = settled_blocks(cache);
	for (int f = 21; f <= upto; f++)
		read_flat(&m, f);
	if (upto >= 21)
		n = settled_blocks(cache);
	stop_mount(&m);
	ck_assert_int_eq(harness_rm_rf(cache), 0);
	return n;
}

/* A second small file missed in a directory makes the next prefetch.files
 * files of it (listing order) read ahead; the first miss alone, or
 * prefetch.files 0, fetches nothing beyond what was read. Reads of the
 * files read ahead ask for more only once they come within half of
 * prefetch.files of the last one asked for. */
START_TEST(test_mount_small_file_misses_prefetch_the_next_files_of_their_directory)
{
	write_flat();
	ck_assert_int_eq(blocks_after_reads("0", 0), 2);
	/* f10 (no prefetch yet), f20, and f21 to f36 */
	ck_assert_int_eq(blocks_after_reads("16", 0), 2 + 16);
	/* f27 is 9 before f36: nothing more */
	ck_assert_int_eq(blocks_after_reads("16", 27), 2 + 16);
	/* f28 is 8 before it: f37 to f44 asked, f37-f39 there */
	ck_assert_int_eq(blocks_after_reads("16", 28), 2 + 16 + 3);
}
END_TEST

/* Later misses of the directory ask for the files no miss asked for yet:
 * from where the last ask stopped, round to the directory's first file,
 * and no further than where the first ask began. */
START_TEST(test_mount_small_file_misses_go_round_their_directory_once)
{
	char cache[300];
	struct mnt m;

	write_flat();
	prefetch_mount(&m, "16", cache);
	read_flat(&m, 10);
	read_flat(&m, 20);
	/* f10, f20, and f21 to f36 */
	ck_assert_int_eq(settled_blocks(cache), 2 + 16);
	/* f05 asks f37-f39 and, round, f00-f12: 14 not held */
	read_flat(&m, 5);
	ck_assert_int_eq(settled_blocks(cache), 2 + 16 + 1 + 14);
	/* f15 asks f13-f20, where the lap began: every file held */
	read_flat(&m, 15);
	ck_assert_int_eq(settled_blocks(cache), 40);
	for (int f = 0; f < 40; f++)
		read_flat(&m, f);
	stop_mount(&m);
	ck_assert_int_eq(harness_rm_rf(cache), 0);
}
END_TEST

/* Once two sibling directories started their laps (two misses each), a
 * third sibling's first miss starts its own; a directory under another
 * parent still waits for its second. */
START_TEST(test_mount_small_file_pass_over_sibling_directories_prefetches_at_first_miss)
{
	const char *dirs[] = { "tree/da", "tree/db", "tree/dc", "other/dd" };
	char cache[300], a[1024], b[1024];
	struct mnt m;

	for (int d = 0; d < 4; d++)
		for (int i = 0; i < 10; i++) {
			snprintf(a, sizeof(a), "%s/f%02d.bin", dirs[d], i);
			write_file(a, 2000 + (size_t)i, 200 + (unsigned)(10 * d + i));
		}
	prefetch_mount(&m, "16", cache);
	for (int d = 0; d < 4; d++) {
		snprintf(a, sizeof(a), "%s/%s/f01.bin", src, dirs[d]);
		snprintf(b, sizeof(b), "%s/%s/f01.bin", m.dir, dirs[d]);
		compare_file(a, b);
		if (d < 2) {
			/* the second miss: the lap asks the other eight */
			ck_assert_int_eq(settled_blocks(cache), 10 * d + 1);
			snprintf(a, sizeof(a), "%s/%s/f02.bin", src, dirs[d]);
			snprintf(b, sizeof(b), "%s/%s/f02.bin", m.dir, dirs[d]);
			compare_file(a, b);
			ck_assert_int_eq(settled_blocks(cache), 10 * (d + 1));
		}
	}
	/* tree/dc: all ten at its first miss; other/dd: the one read */
	ck_assert_int_eq(settled_blocks(cache), 10 * 3 + 1);
	stop_mount(&m);
	ck_assert_int_eq(harness_rm_rf(cache), 0);
}
END_TEST

static int log_contains(const char *needle)
{
	return harness_file_contains(log_path, needle);
}

/* The snapshot pins each object's ETag: an object rewritten in the bucket
 * afterwards has no bytes left to serve. Its reads fail with EIO (the name
 * still exists), the mount counts and logs it once, and the other files
 * stay readable. */
START_TEST(test_mount_object_changed_after_the_snapshot_reads_eio)
{
	struct mnt m;
	char a[1024], b[1024], stats[1024], buf[64];
	ssize_t n;
	int fd;

	file_mount(&m);
	snprintf(a, sizeof(a), "%s/tiny.txt", src);
	harness_write_file(a, "rewritten after the snapshot\n", 0644);
	snprintf(b, sizeof(b), "%s/tiny.txt", m.dir);
	fd = open(b, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(read(fd, buf, sizeof(buf)), -1);
	ck_assert_int_eq(errno, EIO);
	ck_assert_int_eq(pread(fd, buf, sizeof(buf), 0), -1);
	ck_assert_int_eq(errno, EIO);
	close(fd);
	snprintf(a, sizeof(a), "%s/one-block.bin", src);
	snprintf(b, sizeof(b), "%s/one-block.bin", m.dir);
	compare_file(a, b);
	n = getxattr(m.dir, "user.granary.stats", stats, sizeof(stats) - 1);
	ck_assert_int_gt(n, 0);
	stats[n] = '\0';
	ck_assert_msg(strstr(stats, " changed_objects=1"), "stats: %s", stats);
	stop_mount(&m);
	ck_assert_int_eq(harness_file_count(log_path, "object changed since the snapshot"), 1);
	ck_assert(log_contains("key=tiny.txt"));
	ck_assert(log_contains("ETag is no longer"));
}
END_TEST

/* One read of len bytes at off of the mount's file name, O_DIRECT or
 * buffered; returns its errno (0 when it read) and its time in *ms. */
static int timed_read(const struct mnt *m, const char *name, int oflags, off_t off, size_t len,
		      uint64_t *ms)
{
	char path[1024];
	void *buf = NULL;
	uint64_t t0;
	ssize_t n;
	int fd, e = 0;

	snprintf(path, sizeof(path), "%s/%s", m->dir, name);
	ck_assert_int_eq(posix_memalign(&buf, 4096, len), 0);
	fd = open(path, O_RDONLY | oflags);
	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	t0 = retry_now_ms();
	n = pread(fd, buf, len, off);
	if (n < 0)
		e = errno;
	*ms = retry_now_ms() - t0;
	close(fd);
	free(buf);
	return e;
}

/*
 * A store that accepts connections and never answers (the test's own TCP
 * proxy in front of the S3 server, stalled; not a mock: the mount's
 * client meets a real hung peer): every read fails with EIO, not
 * ETIMEDOUT, within store.deadline and a small margin, however many
 * sources and retries there are and whatever the kernel asks again
 * (buffered reads: read-ahead, then the page again), and the cause is
 * logged. Once the store answers again, reads succeed.
 */
START_TEST(test_mount_stalled_store_fails_reads_with_eio_within_the_deadline)
{
	const uint64_t deadline_ms = 2000, margin_ms = 1000;
	char ep[300], cache[256], a[1024], b[1024], stats[1024];
	struct harness_proxy *proxy;
	const char *flags[24];
	uint64_t direct_ms, buffered_ms, again_ms;
	struct mnt m;
	int n = 0, e[3];

	put_source_to_s3();
	proxy = harness_proxy_start(harness_url_port(s3_endpoint));
	snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", harness_proxy_port(proxy));
	harness_tmpdir(cache, sizeof(cache), "/tmp/granary-stall-cache-XXXXXX");
	s3_mount_flags(flags, &n, ep);
	flags[n++] = "--cache.dir";
	flags[n++] = cache;
	flags[n++] = "--store.request_timeout";
	flags[n++] = "1s";
	flags[n++] = "--store.deadline";
	flags[n++] = "2s";
	flags[n] = NULL;
	snprintf(log_path, sizeof(log_path), "%s.stall.log", src);
	ck_assert_int_eq(start_mount(&m, flags, log_path), 0);

	harness_proxy_stall(proxy, 1);
	e[0] = timed_read(&m, "big.bin", O_DIRECT, 1 << 20, 1 << 20, &direct_ms);
	e[1] = timed_read(&m, "dir/sub/many-blocks.bin", 0, 0, 65536, &buffered_ms);
	e[2] = timed_read(&m, "big.bin", 0, 3 << 20, 4096, &again_ms);
	printf("stalled store (deadline %llu ms): time to error O_DIRECT %llu ms (%s), buffered %llu ms (%s), "
	       "buffered again %llu ms (%s)\n",
	       (unsigned long long)deadline_ms, (unsigned long long)direct_ms, strerror(e[0]),
	       (unsigned long long)buffered_ms, strerror(e[1]), (unsigned long long)again_ms,
	       strerror(e[2]));
	fflush(stdout);
	for (int i = 0; i < 3; i++)
		ck_assert_msg(e[i] == EIO, "read %d on a stalled store: errno %d (%s), want EIO", i,
			      e[i], strerror(e[i]));
	ck_assert_msg(direct_ms <= deadline_ms + margin_ms, "O_DIRECT read failed after %llu ms",
		      (unsigned long long)direct_ms);
	ck_assert_msg(buffered_ms <= deadline_ms + margin_ms, "buffered read failed after %llu ms",
		      (unsigned long long)buffered_ms);
	ck_assert_msg(again_ms <= deadline_ms + margin_ms, "buffered read failed after %llu ms",
		      (unsigned long long)again_ms);
	ck_assert_msg(log_contains("msg=\"read failed\" key=fuse-src/big.bin") &&
			      log_contains("deadline of 2000 ms passed"),
		      "the cause is not logged");
	n = (int)getxattr(m.dir, "user.granary.stats", stats, sizeof(stats) - 1);
	ck_assert_int_gt(n, 0);
	stats[n] = '\0';
	ck_assert_msg(strstr(stats, " failed_reads="), "stats: %s", stats);
	ck_assert_msg(!strstr(stats, " failed_reads=0"), "failed reads not counted: %s", stats);

	harness_proxy_stall(proxy, 0);
	snprintf(a, sizeof(a), "%s/big.bin", src);
	snprintf(b, sizeof(b), "%s/big.bin", m.dir);
	compare_file(a, b);
	stop_mount(&m);
	harness_proxy_stop(proxy);
	ck_assert_int_eq(harness_rm_rf(cache), 0);
}
END_TEST

/* Bytes of the files under dir in the page cache. */
static uint64_t resident_under(const char *dir)
{
	struct fileio_residency r;
	struct error err;

	ck_assert_msg(fileio_resident_tree(dir, &r, &err) == ERR_OK, "%s", err.msg);
	return r.resident;
}

/* Bytes of the mount's file path in the page cache. */
static uint64_t resident_file(const char *path)
{
	uint64_t r = 0;
	int fd = open(path, O_RDONLY);

	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	ck_assert_int_eq(fileio_resident(fd, 0, 0, &r), 0);
	close(fd);
	return r;
}

/*
 * The node holds a byte in its page cache once (docs/ARCHITECTURE.md,
 * "Memory"): after a cold read (fetched, written to the block cache, read
 * back) and after a warm one (the mount's pages dropped, so the daemon
 * reads its block files), the mount's file is cached whole and the block
 * files hold at most a tenth of it (a block read to its end leaves
 * nothing; before, they held all of it). The cache directory is on a
 * disk's file system (/var/tmp): tmpfs pages are the files.
 */
START_TEST(test_mount_block_files_leave_the_page_cache_once_read)
{
	char cache[256], a[1024], b[1024];
	const size_t size = 5u << 20; /* big.bin */
	const char *flags[24];
	struct statfs sf;
	struct mnt m;
	uint64_t blocks, file;
	int n = 0, fd;

	put_source_to_s3();
	harness_tmpdir(cache, sizeof(cache), "/var/tmp/granary-pages-cache-XXXXXX");
	ck_assert_int_eq(statfs(cache, &sf), 0);
	ck_assert_msg(sf.f_type != 0x01021994, "%s is on tmpfs: needs a disk", cache);
	s3_mount_flags(flags, &n, s3_endpoint);
	flags[n++] = "--cache.dir";
	flags[n++] = cache;
	flags[n] = NULL;
	snprintf(log_path, sizeof(log_path), "%s.pages.log", src);
	ck_assert_int_eq(start_mount(&m, flags, log_path), 0);
	snprintf(a, sizeof(a), "%s/big.bin", src);
	snprintf(b, sizeof(b), "%s/big.bin", m.dir);

	compare_file(a, b);
	blocks = resident_under(cache);
	file = resident_file(b);
	printf("page cache after a cold read of %zu bytes: mount's file %llu, block files %llu\n",
	       size, (unsigned long long)file, (unsigned long long)blocks);
	ck_assert_uint_eq(file, size);
	ck_assert_msg(blocks <= size / 10, "cold: the block files hold %llu bytes of %zu read",
		      (unsigned long long)blocks, size);

	fd = open(b, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	fileio_drop_cached(fd, 0, 0);
	close(fd);
	ck_assert_uint_eq(resident_file(b), 0);
	compare_file(a, b);
	blocks = resident_under(cache);
	file = resident_file(b);
	printf("page cache after a warm read from the block cache: mount's file %llu, block files %llu\n",
	       (unsigned long long)file, (unsigned long long)blocks);
	ck_assert_uint_eq(file, size);
	ck_assert_msg(blocks <= size / 10, "warm: the block files hold %llu bytes of %zu read",
		      (unsigned long long)blocks, size);
	stop_mount(&m);
	ck_assert_int_eq(harness_rm_rf(cache), 0);
}
END_TEST

START_TEST(test_mount_missing_credentials_file_fails_clearly_at_mount_time)
{
	const char *flags[] = { "--source", "s3://granary-e2e/fuse-src/", "--store.endpoint",
				s3_endpoint, "--store.credentials_file",
				"/nonexistent/granary/credentials", NULL };
	struct mnt m;

	snprintf(log_path, sizeof(log_path), "%s.cred.log", src);
	ck_assert_int_eq(start_mount(&m, flags, log_path), 1);
	ck_assert_msg(log_contains("/nonexistent/granary/credentials"), "log does not name the file");
}
END_TEST

START_TEST(test_mount_unreachable_store_fails_clearly_at_mount_time)
{
	const char *flags[] = { "--source", "s3://granary-e2e/fuse-src/", "--store.endpoint",
				"http://127.0.0.1:1", "--store.credentials_file", s3_credentials,
				"--store.deadline", "2s", NULL };
	struct mnt m;

	snprintf(log_path, sizeof(log_path), "%s.down.log", src);
	ck_assert_int_eq(start_mount(&m, flags, log_path), 1);
	ck_assert_msg(log_contains("127.0.0.1:1"), "log does not name the endpoint");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fuse_mount");
	TCase *tc = tcase_create("mount");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_mount_every_file_reads_byte_exact);
	tcase_add_test(tc, test_mount_concurrent_readers_see_the_right_bytes);
	tcase_add_test(tc, test_mount_stat_and_readdir_of_ten_thousand_files);
	tcase_add_test(tc, test_mount_every_write_operation_fails_with_erofs);
	tcase_add_test(tc, test_mount_start_clears_a_dead_mount_at_its_mountpoint);
	tcase_add_test(tc, test_mount_exposes_etag_and_key_as_xattrs);
	tcase_add_test(tc, test_mount_object_changed_after_the_snapshot_reads_eio);
	tcase_add_test(tc, test_mount_reads_an_s3_source_byte_exact);
	tcase_add_test(tc, test_mount_stalled_store_fails_reads_with_eio_within_the_deadline);
	tcase_add_test(tc, test_mount_block_files_leave_the_page_cache_once_read);
	tcase_add_test(tc, test_mount_small_file_misses_prefetch_the_next_files_of_their_directory);
	tcase_add_test(tc, test_mount_small_file_pass_over_sibling_directories_prefetches_at_first_miss);
	tcase_add_test(tc, test_mount_small_file_misses_go_round_their_directory_once);
	tcase_add_test(tc, test_mount_missing_credentials_file_fails_clearly_at_mount_time);
	tcase_add_test(tc, test_mount_unreachable_store_fails_clearly_at_mount_time);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
