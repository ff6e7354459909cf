/*
 * test_fileio.c - whole reads and writes, atomic replacement, directories
 * with their parents, hex digits, a file's pages in the page cache, I/O
 * buffers on huge pages.
 */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "common/fileio.h"
#include "unit/check_main.h"

/* Entries in dir, hidden ones included. */
static int count_entries(const char *dir)
{
	char cmd[300];
	FILE *p;
	int n = -1;

	snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", dir);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(fscanf(p, "%d", &n), 1);
	pclose(p);
	return n;
}

START_TEST(test_fileio_replace_writes_content_with_exact_mode)
{
	char dir[] = "/tmp/granary-fileio-XXXXXX", path[256], buf[64];
	struct error err;
	struct stat st;
	mode_t old = umask(077);
	int fd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/file", dir);
	ck_assert_int_eq(fileio_replace(path, "first", 5, 0644, &err), ERR_OK);
	ck_assert_int_eq(fileio_replace(path, "second!", 7, 0600, &err), ERR_OK);
	umask(old);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	fd = open(path, O_RDONLY);
	ck_assert_int_eq(fileio_pread_all(fd, buf, sizeof(buf), 0), 7);
	ck_assert_int_eq(memcmp(buf, "second!", 7), 0);
	ck_assert_int_eq(fileio_pread_all(fd, buf, sizeof(buf), 3), 4);
	close(fd);
	/* no temporary file is left behind */
	ck_assert_int_eq(count_entries(dir), 1);
	unlink(path);
	rmdir(dir);
}
END_TEST

START_TEST(test_fileio_replace_names_the_path_on_error)
{
	struct error err;

	ck_assert_int_eq(fileio_replace("/nonexistent-dir/granary/file", "x", 1, 0600, &err),
			 ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent-dir/granary/file"));
}
END_TEST

/* How many of this process's descriptors are open on files under dir:
 * the ones a failed replacement could leave (others, such as the test
 * framework's, come and go on their own). */
static int open_fds_under(const char *dir)
{
	char link[64], target[512];
	struct dirent *de;
	DIR *d = opendir("/proc/self/fd");
	size_t dlen = strlen(dir);
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)) != NULL) {
		ssize_t len;

		if (de->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "/proc/self/fd/%s", de->d_name);
		len = readlink(link, target, sizeof(target) - 1);
		if (len < 0)
			continue;
		target[len] = '\0';
		if (strncmp(target, dir, dlen) == 0 && target[dlen] == '/')
			n++;
	}
	closedir(d);
	return n;
}

static int write_then_fail(int fd, void *arg)
{
	(void)arg;
	if (fileio_write_all(fd, "partial", 7) != 0)
		return -1;
	errno = ENOSPC;
	return -1;
}

static int write_hello(int fd, void *arg)
{
	return fileio_write_all(fd, arg, strlen(arg));
}

/* One error rule: a writer that fails fails the call with its errno's
 * code, the old content stays, no temporary file and no descriptor is
 * left; a streamed writer's content replaces the file like a buffer's. */
START_TEST(test_fileio_replace_with_fails_cleanly_and_streams)
{
	char dir[] = "/tmp/granary-fileio-XXXXXX", path[256], *text = NULL;
	struct error err;
	size_t len = 0;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/record", dir);
	ck_assert_int_eq(fileio_replace(path, "old", 3, 0600, &err), ERR_OK);
	ck_assert_int_eq(fileio_replace_with(path, 0600, write_then_fail, NULL, &err),
			 ERR_NO_SPACE);
	ck_assert_msg(strstr(err.msg, "/.record.") != NULL, "%s", err.msg);
	ck_assert_int_eq(open_fds_under(dir), 0);
	ck_assert_int_eq(fileio_read_small(path, 100, &text, &len, &err), ERR_OK);
	ck_assert_str_eq(text, "old");
	free(text);
	ck_assert_int_eq(fileio_replace_with(path, 0600, write_hello, "hello", &err), ERR_OK);
	ck_assert_int_eq(fileio_read_small(path, 100, &text, &len, &err), ERR_OK);
	ck_assert_str_eq(text, "hello");
	free(text);
	ck_assert_int_eq(count_entries(dir), 1);
	unlink(path);
	rmdir(dir);
}
END_TEST

START_TEST(test_fileio_read_small_reads_whole_files_up_to_max)
{
	char dir[] = "/tmp/granary-fileio-XXXXXX", path[256], *text = NULL;
	static char big[100000];
	struct error err;
	size_t len = 0;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/big", dir);
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)('a' + i % 26);
	ck_assert_int_eq(fileio_replace(path, big, sizeof(big), 0600, &err), ERR_OK);
	ck_assert_int_eq(fileio_read_small(path, sizeof(big), &text, &len, &err), ERR_OK);
	ck_assert_uint_eq(len, sizeof(big));
	ck_assert_int_eq(memcmp(text, big, len), 0);
	ck_assert_int_eq(text[len], '\0');
	free(text);
	ck_assert_int_eq(fileio_read_small(path, sizeof(big) - 1, &text, &len, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "larger than 99999 bytes"));
	ck_assert_ptr_null(text);
	/* a file of unknown size (a pipe's, /proc's) is read to its end */
	ck_assert_int_eq(fileio_read_small("/proc/self/status", 1 << 20, &text, &len, &err),
			 ERR_OK);
	ck_assert_ptr_nonnull(strstr(text, "Name:"));
	free(text);
	ck_assert_int_eq(fileio_read_small(dir, 100, &text, &len, &err), ERR_INVALID);
	unlink(path);
	rmdir(dir);
}
END_TEST


START_TEST(test_fileio_read_text_fills_the_buffer_and_cuts_longer_files)
{
	char dir[] = "/tmp/granary-fileio-XXXXXX", path[256], buf[8];
	struct error err;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/f", dir);
	ck_assert_int_eq(fileio_replace(path, "abc", 3, 0600, &err), ERR_OK);
	ck_assert_int_eq(fileio_read_text(path, buf, sizeof(buf)), 3);
	ck_assert_str_eq(buf, "abc");
	ck_assert_int_eq(fileio_replace(path, "0123456789", 10, 0600, &err), ERR_OK);
	ck_assert_int_eq(fileio_read_text(path, buf, sizeof(buf)), 7);
	ck_assert_str_eq(buf, "0123456");
	ck_assert_int_eq(fileio_replace(path, "", 0, 0600, &err), ERR_OK);
	ck_assert_int_eq(fileio_read_text(path, buf, sizeof(buf)), 0);
	ck_assert_str_eq(buf, "");
	/* /proc's files have no size to trust: read to the end */
	ck_assert_int_gt(fileio_read_text("/proc/self/stat", buf, sizeof(buf)), 0);
	unlink(path);
	errno = 0;
	ck_assert_int_eq(fileio_read_text(path, buf, sizeof(buf)), -1);
	ck_assert_int_eq(errno, ENOENT);
	rmdir(dir);
}
END_TEST

START_TEST(test_fileio_write_and_pwrite_all_round_trip)
{
	char path[] = "/tmp/granary-fileio-w-XXXXXX", buf[16];
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fileio_write_all(fd, "abcdef", 6), 0);
	ck_assert_int_eq(fileio_pwrite_all(fd, "XY", 2, 2), 0);
	ck_assert_int_eq(fileio_pread_all(fd, buf, 6, 0), 6);
	ck_assert_int_eq(memcmp(buf, "abXYef", 6), 0);
	close(fd);
	ck_assert_int_eq(fileio_write_all(fd, "a", 1), -1);
	unlink(path);
}
END_TEST

/* The page cache is dropped and counted on a disk's file system, where
 * pages are a copy (tmpfs pages are the file: nothing to drop). */
#define PAGE_TEST_DIR "/var/tmp"
#define TMPFS_MAGIC_NUMBER 0x01021994

START_TEST(test_fileio_drop_cached_drops_whole_pages_of_the_range_only)
{
	char path[] = PAGE_TEST_DIR "/granary-fileio-pages-XXXXXX";
	static char buf[64 * 4096];
	uint64_t r = 1;
	struct statfs sf;
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstatfs(fd, &sf), 0);
	ck_assert_msg(sf.f_type != TMPFS_MAGIC_NUMBER, "%s is on tmpfs: needs a disk", path);
	ck_assert_int_eq(fileio_resident(fd, 0, 0, &r), 0);
	ck_assert_uint_eq(r, 0); /* empty */
	memset(buf, 'x', sizeof(buf));
	ck_assert_int_eq(fileio_pwrite_all(fd, buf, sizeof(buf) - 100, 0), 0);
	ck_assert_int_eq(fdatasync(fd), 0); /* clean pages: droppable */
	ck_assert_int_eq(fileio_pread_all(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf) - 100);
	ck_assert_int_eq(fileio_resident(fd, 0, 0, &r), 0);
	ck_assert_uint_eq(r, sizeof(buf)); /* the short last page counts whole */
	/* a range: the pages outside it stay (those inside go unless a
	 * large folio reaches out of it, so they are not counted here) */
	fileio_drop_cached(fd, 16 * 4096 + 10, 8 * 4096);
	ck_assert_int_eq(fileio_resident(fd, 0, 16 * 4096, &r), 0);
	ck_assert_uint_eq(r, 16 * 4096);
	ck_assert_int_eq(fileio_resident(fd, 25 * 4096, 0, &r), 0);
	ck_assert_uint_eq(r, sizeof(buf) - 25 * 4096);
	/* from 0 to the end, a short last page: everything goes */
	fileio_drop_cached(fd, 0, sizeof(buf) - 100);
	ck_assert_int_eq(fileio_resident(fd, 0, 0, &r), 0);
	ck_assert_uint_eq(r, 0);
	/* len 0: to the end */
	ck_assert_int_eq(fileio_pread_all(fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf) - 100);
	ck_assert_int_eq(fileio_resident(fd, 0, 0, &r), 0);
	ck_assert_uint_eq(r, sizeof(buf));
	fileio_drop_cached(fd, 0, 0);
	ck_assert_int_eq(fileio_resident(fd, 0, 0, &r), 0);
	ck_assert_uint_eq(r, 0);
	/* past the end: nothing, no error */
	ck_assert_int_eq(fileio_resident(fd, 1u << 30, 10, &r), 0);
	ck_assert_uint_eq(r, 0);
	close(fd);
	ck_assert_int_eq(fileio_resident(fd, 0, 0, &r), -1);
	unlink(path);
}
END_TEST

/* Whether the mapping that holds p may have transparent huge pages
 * (/proc/self/smaps, THPeligible); -1 when the kernel does not say. */
static int thp_eligible(const void *p)
{
	unsigned long a = (unsigned long)p, lo = 0, hi = 0;
	bool in = false;
	char line[512];
	int v = -1;
	FILE *f = fopen("/proc/self/smaps", "r");

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = a >= lo && a < hi;
		else if (in && sscanf(line, "THPeligible: %d", &v) == 1)
			break;
	}
	fclose(f);
	return v;
}

/* Whether this kernel gives huge pages to a range that asks (THP set to
 * "always" or "madvise"). */
static bool thp_on_request(void)
{
	char mode[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");

	if (!f)
		return false;
	if (!fgets(mode, sizeof(mode), f))
		mode[0] = 0;
	fclose(f);
	return strstr(mode, "[always]") || strstr(mode, "[madvise]");
}

START_TEST(test_fileio_buf_alloc_aligns_and_asks_for_huge_pages)
{
	size_t big = ((size_t)4 << 20) + 4096;
	char *small = fileio_buf_alloc(64 * 1024);
	char *p = fileio_buf_alloc(big);

	ck_assert_ptr_nonnull(small);
	ck_assert_ptr_nonnull(p);
	ck_assert_uint_eq((uintptr_t)small % 4096, 0);
	ck_assert_uint_eq((uintptr_t)p % ((uintptr_t)2 << 20), 0);
	memset(small, 0x5a, 64 * 1024);
	memset(p, 0xa5, big); /* every byte of it is usable */
	ck_assert_int_eq(p[big - 1], (char)0xa5);
	if (thp_on_request())
		ck_assert_int_eq(thp_eligible(p), 1);
	free(small);
	free(p);
}
END_TEST

START_TEST(test_fileio_thread_buf_is_kept_per_thread_and_use)
{
	char *a = fileio_thread_buf(FILEIO_BUF_REPLY, 100);
	char *b = fileio_thread_buf(FILEIO_BUF_BOUNCE, 100);

	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	ck_assert_ptr_ne(a, b);
	ck_assert_uint_eq((uintptr_t)a % 4096, 0);
	memset(a, 1, 4096); /* grown to whole pages */
	/* as large or smaller again: the same buffer */
	ck_assert_ptr_eq(fileio_thread_buf(FILEIO_BUF_REPLY, 4096), a);
	/* larger: a new one, aligned, of that size */
	a = fileio_thread_buf(FILEIO_BUF_REPLY, (size_t)3 << 20);
	ck_assert_ptr_nonnull(a);
	ck_assert_uint_eq((uintptr_t)a % ((uintptr_t)2 << 20), 0);
	memset(a, 2, (size_t)3 << 20);
	ck_assert_ptr_eq(fileio_thread_buf(FILEIO_BUF_BOUNCE, 50), b);
}
END_TEST

START_TEST(test_fileio_hex_value_accepts_both_cases_only)
{
	ck_assert_int_eq(fileio_hex_value('0'), 0);
	ck_assert_int_eq(fileio_hex_value('9'), 9);
	ck_assert_int_eq(fileio_hex_value('a'), 10);
	ck_assert_int_eq(fileio_hex_value('F'), 15);
	ck_assert_int_eq(fileio_hex_value('g'), -1);
	ck_assert_int_eq(fileio_hex_value('%'), -1);
}
END_TEST

START_TEST(test_fileio_mkdirs_makes_parents_and_names_the_failure)
{
	char dir[] = "/tmp/granary-fileio-XXXXXX", path[256];
	struct error err;
	struct stat st;
	mode_t old = umask(0);

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/a/b/c", dir);
	ck_assert_int_eq(fileio_mkdirs(path, 0700, &err), ERR_OK);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert(S_ISDIR(st.st_mode));
	ck_assert_int_eq(st.st_mode & 0777, 0700);
	/* Already there: fine. */
	ck_assert_int_eq(fileio_mkdirs(path, 0700, &err), ERR_OK);
	snprintf(path, sizeof(path), "%s/x/y/z.sock", dir);
	ck_assert_int_eq(fileio_mkdirs_parent(path, &err), ERR_OK);
	snprintf(path, sizeof(path), "%s/x/y", dir);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0755);
	snprintf(path, sizeof(path), "%s/x/y/z.sock", dir);
	ck_assert_int_ne(stat(path, &st), 0);
	ck_assert_int_eq(fileio_mkdirs_parent("relative.sock", &err), ERR_OK);
	/* A file in the way is named. */
	snprintf(path, sizeof(path), "%s/file", dir);
	ck_assert_int_eq(fileio_replace(path, "x", 1, 0600, &err), ERR_OK);
	snprintf(path, sizeof(path), "%s/file/sub", dir);
	ck_assert_int_ne(fileio_mkdirs(path, 0755, &err), ERR_OK);
	ck_assert_ptr_nonnull(strstr(err.msg, "mkdir '"));
	ck_assert_ptr_nonnull(strstr(err.msg, "/file/sub'"));
	umask(old);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(path), 0);
}
END_TEST

/* Makes n empty files NAME0..NAME(n-1) in dir. */
static void make_files(const char *dir, int n)
{
	char path[400];

	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/f%d", dir, i);
		close(open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
	}
}

START_TEST(test_fileio_remove_tree_removes_links_not_what_they_name)
{
	char base[] = "/tmp/granary-rmtree-XXXXXX", tree[200], sub[300], out[200], link[300];
	struct error err;

	ck_assert_ptr_nonnull(mkdtemp(base));
	snprintf(tree, sizeof(tree), "%s/tree", base);
	snprintf(sub, sizeof(sub), "%s/a/b", tree);
	snprintf(out, sizeof(out), "%s/outside", base);
	ck_assert_int_eq(fileio_mkdirs(sub, 0700, &err), ERR_OK);
	ck_assert_int_eq(fileio_mkdirs(out, 0700, &err), ERR_OK);
	make_files(sub, 3);
	make_files(out, 3);
	snprintf(link, sizeof(link), "%s/a/to-outside", tree);
	ck_assert_int_eq(symlink(out, link), 0);
	ck_assert_msg(fileio_remove_tree(tree, &err) == ERR_OK, "%s", err.msg);
	ck_assert_int_ne(access(tree, F_OK), 0);
	ck_assert_int_eq(count_entries(out), 3);
	/* Not there: fine. */
	ck_assert_int_eq(fileio_remove_tree(tree, &err), ERR_OK);
	ck_assert_int_eq(fileio_remove_tree(out, &err), ERR_OK);
	ck_assert_int_eq(rmdir(base), 0);
}
END_TEST

/* Renames sub away and puts a link to outside in its place, over and over,
 * as whoever else can write the tree could while it is removed. */
struct swapper {
	char sub[300], moved[310], outside[200];
	volatile bool stop;
};

static void *swap_loop(void *arg)
{
	struct swapper *w = arg;

	while (!w->stop) {
		if (rename(w->sub, w->moved) != 0)
			continue;
		if (symlink(w->outside, w->sub) == 0) {
			usleep(50);
			unlink(w->sub);
		}
		rename(w->moved, w->sub);
	}
	return NULL;
}

/*
 * A directory of the tree swapped for a link while the tree is removed
 * (a mount pod can write its volume's directory): nothing outside the tree
 * goes. The path-based walk this replaced removed thousands of files
 * outside it here.
 */
START_TEST(test_fileio_remove_tree_never_follows_a_directory_swapped_for_a_link)
{
	char base[] = "/tmp/granary-rmtree-XXXXXX", tree[200];
	struct swapper w;
	struct error err;
	pthread_t t;

	ck_assert_ptr_nonnull(mkdtemp(base));
	snprintf(w.outside, sizeof(w.outside), "%s/outside", base);
	ck_assert_int_eq(mkdir(w.outside, 0700), 0);
	make_files(w.outside, 500);
	for (int round = 0; round < 10; round++) {
		snprintf(tree, sizeof(tree), "%s/tree", base);
		snprintf(w.sub, sizeof(w.sub), "%s/a", tree);
		snprintf(w.moved, sizeof(w.moved), "%s/a2", tree);
		ck_assert_int_eq(fileio_mkdirs(w.sub, 0700, &err), ERR_OK);
		make_files(w.sub, 500);
		w.stop = false;
		ck_assert_int_eq(pthread_create(&t, NULL, swap_loop, &w), 0);
		fileio_remove_tree(tree, &err);
		w.stop = true;
		pthread_join(t, NULL);
		ck_assert_msg(count_entries(w.outside) == 500,
			      "round %d: %d of 500 files left outside the tree", round,
			      count_entries(w.outside));
		ck_assert_int_eq(fileio_remove_tree(tree, &err), ERR_OK);
	}
	ck_assert_int_eq(fileio_remove_tree(base, &err), ERR_OK);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fileio");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_fileio_replace_writes_content_with_exact_mode);
	tcase_add_test(tc, test_fileio_replace_names_the_path_on_error);
	tcase_add_test(tc, test_fileio_replace_with_fails_cleanly_and_streams);
	tcase_add_test(tc, test_fileio_read_small_reads_whole_files_up_to_max);
	tcase_add_test(tc, test_fileio_read_text_fills_the_buffer_and_cuts_longer_files);
	tcase_add_test(tc, test_fileio_write_and_pwrite_all_round_trip);
	tcase_add_test(tc, test_fileio_hex_value_accepts_both_cases_only);
	tcase_add_test(tc, test_fileio_buf_alloc_aligns_and_asks_for_huge_pages);
	tcase_add_test(tc, test_fileio_thread_buf_is_kept_per_thread_and_use);
	tcase_add_test(tc, test_fileio_drop_cached_drops_whole_pages_of_the_range_only);
	tcase_add_test(tc, test_fileio_mkdirs_makes_parents_and_names_the_failure);
	tcase_add_test(tc, test_fileio_remove_tree_removes_links_not_what_they_name);
	tcase_add_test(tc, test_fileio_remove_tree_never_follows_a_directory_swapped_for_a_link);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
