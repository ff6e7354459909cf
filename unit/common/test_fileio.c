/*
 * test_fileio.c - whole reads and writes, atomic replacement, directories
 * with their parents, hex digits.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileio.h"
#include "unit/check_main.h"

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
	snprintf(buf, sizeof(buf), "ls -A '%s' | wc -l", dir);
	{
		FILE *p = popen(buf, "r");
		int n = 0;

		ck_assert_int_eq(fscanf(p, "%d", &n), 1);
		pclose(p);
		ck_assert_int_eq(n, 1);
	}
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

int main(void)
{
	Suite *s = suite_create("fileio");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_fileio_replace_writes_content_with_exact_mode);
	tcase_add_test(tc, test_fileio_replace_names_the_path_on_error);
	tcase_add_test(tc, test_fileio_write_and_pwrite_all_round_trip);
	tcase_add_test(tc, test_fileio_hex_value_accepts_both_cases_only);
	tcase_add_test(tc, test_fileio_mkdirs_makes_parents_and_names_the_failure);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
