/*
 * test_store_file.c - the file:// backend against a tree in a temp dir.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileio.h"
#include "store/store_impl.h"

#define BIG_SIZE 10000

/* Created in the parent process and removed there even when a forked
 * test fails before its own teardown; holds root and outside. */
static char base[48];
static char root[64];
static char outside[80]; /* a file next to root that no key may reach */
static struct store *st;

/* Every object in the tree, in no particular order. */
static const char *all_keys[] = {
	"a.txt",
	"a+b",
	"empty",
	"tr.txt",
	"train-b.txt",
	"train/index.json",
	"train/shard-0/part-0000.rec",
	"train/shard-0/part-0001.rec",
	"train/shard-1/part-0000.rec",
	"deep/a/b/c/d/e/f.bin",
	"with space/file name.txt",
	"unicod\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac.txt",
	"big.bin",
	".hidden",
};
#define NKEYS (sizeof(all_keys) / sizeof(all_keys[0]))

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void rm_tree(const char *path)
{
	nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void make_parents(const char *path)
{
	char buf[512];

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + strlen(root) + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) < 0)
			ck_assert_int_eq(errno, EEXIST);
		*p = '/';
	}
}

static void put(const char *key, const void *data, size_t len)
{
	char path[512];
	int fd = -1;

	snprintf(path, sizeof(path), "%s/%s", root, key);
	make_parents(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
	ck_assert_int_eq(close(fd), 0);
}

static void put_str(const char *key, const char *s)
{
	put(key, s, strlen(s));
}

/*
 * Replaces key with new contents through a rename, as writers do, keeping
 * the old mtime (as rsync -t or a restore would) so that only the inode
 * tells the versions apart.
 */
static void replace(const char *key, const char *s)
{
	char path[512];
	char tmp[520];
	struct stat sb;
	struct timespec times[2];

	snprintf(path, sizeof(path), "%s/%s", root, key);
	ck_assert_int_eq(stat(path, &sb), 0);
	snprintf(tmp, sizeof(tmp), "%s.new", key);
	put_str(tmp, s);
	snprintf(tmp, sizeof(tmp), "%s/%s.new", root, key);
	times[0] = sb.st_atim;
	times[1] = sb.st_mtim;
	ck_assert_int_eq(utimensat(AT_FDCWD, tmp, times, 0), 0);
	ck_assert_int_eq(rename(tmp, path), 0);
}

static unsigned char big_byte(size_t i)
{
	return (unsigned char)((i * 131 + i / 256) & 0xff);
}

static void setup(void)
{
	unsigned char big[BIG_SIZE];
	struct error err;
	char dir[512];
	int fd = -1;

	snprintf(root, sizeof(root), "%s/root.XXXXXX", base);
	ck_assert_ptr_nonnull(mkdtemp(root));
	for (size_t i = 0; i < BIG_SIZE; i++)
		big[i] = big_byte(i);
	for (size_t i = 0; i < NKEYS; i++)
		put_str(all_keys[i], all_keys[i]);
	put("empty", "", 0);
	put("big.bin", big, sizeof(big));
	put_str("a.txt", "hello world");
	/* Not objects: in-progress writes, empty directories, a FIFO. */
	put_str("b.granary-tmp", "partial");
	put_str("onlytmp/x.granary-tmp", "partial");
	snprintf(dir, sizeof(dir), "%s/emptydir", root);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	snprintf(dir, sizeof(dir), "%s/emptytree/sub", root);
	make_parents(dir);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	snprintf(dir, sizeof(dir), "%s/fifo", root);
	ck_assert_int_eq(mkfifo(dir, 0644), 0);

	snprintf(outside, sizeof(outside), "%s.outside", root);
	ck_assert_int_eq(mkdir(outside, 0755), 0);
	snprintf(dir, sizeof(dir), "%s/secret", outside);
	fd = open(dir, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "outside", 7), 7);
	ck_assert_int_eq(close(fd), 0);

	error_clear(&err);
	ck_assert_int_eq(store_file_open(root, NULL, &st, &err), ERR_OK);
	ck_assert_ptr_nonnull(st);
}

static void teardown(void)
{
	store_free(st);
	st = NULL;
	rm_tree(root);
	rm_tree(outside);
}

static void setup_base(void)
{
	strcpy(base, "/tmp/test_store_file.XXXXXX");
	if (!mkdtemp(base))
		abort();
}

static void teardown_base(void)
{
	rm_tree(base);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The expected listing: all keys starting with prefix, sorted bytewise. */
static size_t expected_keys(const char *prefix, const char **out)
{
	size_t n = 0;

	for (size_t i = 0; i < NKEYS; i++)
		if (strncmp(all_keys[i], prefix, strlen(prefix)) == 0)
			out[n++] = all_keys[i];
	qsort(out, n, sizeof(*out), cmp_str);
	return n;
}

START_TEST(test_store_file_open_rejects_relative_missing_and_non_directory)
{
	struct store *s = NULL;
	struct error err;
	char path[128];

	ck_assert_int_eq(store_file_open("relative/dir", NULL, &s, &err), ERR_INVALID);
	ck_assert_ptr_null(s);
	ck_assert_ptr_nonnull(strstr(err.msg, "'relative/dir'"));

	snprintf(path, sizeof(path), "%s/nope", root);
	ck_assert_int_eq(store_file_open(path, NULL, &s, &err), ERR_NOT_FOUND);
	ck_assert_ptr_null(s);
	ck_assert_ptr_nonnull(strstr(err.msg, path));

	snprintf(path, sizeof(path), "%s/a.txt", root);
	ck_assert_int_eq(store_file_open(path, NULL, &s, &err), ERR_INVALID);
	ck_assert_ptr_null(s);
	ck_assert_ptr_nonnull(strstr(err.msg, path));
	ck_assert_ptr_nonnull(strstr(err.msg, "not a directory"));
}
END_TEST

START_TEST(test_store_file_open_describes_store_without_trailing_slash)
{
	struct store *s = NULL;
	struct error err;
	char path[128];
	char want[128];

	snprintf(path, sizeof(path), "%s//", root);
	snprintf(want, sizeof(want), "file://%s", root);
	ck_assert_int_eq(store_file_open(path, NULL, &s, &err), ERR_OK);
	ck_assert_str_eq(store_describe(s), want);
	store_free(s);
}
END_TEST

START_TEST(test_store_file_get_reads_exact_ranges)
{
	static const struct {
		uint64_t off;
		size_t len;
	} ranges[] = { { 0, 1 }, { 0, BIG_SIZE }, { 1, 4095 }, { 4096, 4096 }, { 9999, 1 },
		       { 1234, 5678 } };
	unsigned char buf[BIG_SIZE];
	struct error err;
	size_t got = 0;

	for (size_t r = 0; r < sizeof(ranges) / sizeof(ranges[0]); r++) {
		memset(buf, 0xAA, sizeof(buf));
		ck_assert_int_eq(store_get(st, "big.bin", ranges[r].off, ranges[r].len, buf,
					   &got, NULL, &err), ERR_OK);
		ck_assert_uint_eq(got, ranges[r].len);
		for (size_t i = 0; i < got; i++)
			ck_assert_uint_eq(buf[i], big_byte(ranges[r].off + i));
	}
}
END_TEST

START_TEST(test_store_file_get_is_short_only_at_end_of_object)
{
	unsigned char buf[100];
	struct error err;
	size_t got = 0;

	memset(buf, 0, sizeof(buf));
	ck_assert_int_eq(store_get(st, "big.bin", BIG_SIZE - 10, sizeof(buf), buf, &got,
				   NULL, &err), ERR_OK);
	ck_assert_uint_eq(got, 10);
	for (size_t i = 0; i < got; i++)
		ck_assert_uint_eq(buf[i], big_byte(BIG_SIZE - 10 + i));
	ck_assert_uint_eq(buf[10], 0);

	ck_assert_int_eq(store_get(st, "a.txt", 6, sizeof(buf), buf, &got, "", &err), ERR_OK);
	ck_assert_uint_eq(got, 5);
	ck_assert_mem_eq(buf, "world", 5);
}
END_TEST

START_TEST(test_store_file_get_past_end_is_range_error)
{
	char buf[16];
	struct error err;
	size_t got = 99;

	ck_assert_int_eq(store_get(st, "a.txt", 11, sizeof(buf), buf, &got, NULL, &err),
			 ERR_RANGE);
	ck_assert_uint_eq(got, 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "'a.txt'"));
	ck_assert_int_eq(store_get(st, "a.txt", 12, sizeof(buf), buf, &got, NULL, &err),
			 ERR_RANGE);
	ck_assert_int_eq(store_get(st, "a.txt", UINT64_MAX, 1, buf, &got, NULL, &err),
			 ERR_RANGE);
}
END_TEST

START_TEST(test_store_file_get_zero_byte_object_reads_nothing)
{
	char buf[16];
	struct error err;
	size_t got = 99;

	ck_assert_int_eq(store_get(st, "empty", 0, sizeof(buf), buf, &got, NULL, &err), ERR_OK);
	ck_assert_uint_eq(got, 0);
	ck_assert_int_eq(store_get(st, "empty", 1, sizeof(buf), buf, &got, NULL, &err),
			 ERR_RANGE);
}
END_TEST

START_TEST(test_store_file_get_missing_key_is_not_found)
{
	char buf[16];
	struct error err;
	size_t got = 0;
	struct store_object info;

	ck_assert_int_eq(store_get(st, "train/nope.rec", 0, sizeof(buf), buf, &got, NULL, &err),
			 ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "'train/nope.rec'"));
	ck_assert_int_eq(store_head(st, "nope/deeper/x", &info, &err), ERR_NOT_FOUND);
	ck_assert_ptr_null(info.key);
	/* A path through a file is missing too, not a system error. */
	ck_assert_int_eq(store_head(st, "a.txt/x", &info, &err), ERR_NOT_FOUND);
}
END_TEST

START_TEST(test_store_file_rejects_keys_escaping_the_root)
{
	static const char *bad[] = {
		"../x", "..", ".", "/etc/passwd", "a//b", "./a.txt", "train/../a.txt",
		"train/./index.json", "train/..", "/", "//a.txt",
	};
	char escape[160];
	char buf[16];
	struct error err;
	struct store_object info;
	size_t got = 0;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(store_get(st, bad[i], 0, sizeof(buf), buf, &got, NULL, &err) ==
			      ERR_INVALID, "get accepted '%s'", bad[i]);
		ck_assert_msg(store_head(st, bad[i], &info, &err) == ERR_INVALID,
			      "head accepted '%s'", bad[i]);
		ck_assert_ptr_null(info.key);
	}
	/* The file next to the root exists, yet no key reaches it. */
	snprintf(escape, sizeof(escape), "../%s/secret", strrchr(outside, '/') + 1);
	ck_assert_int_eq(store_get(st, escape, 0, sizeof(buf), buf, &got, NULL, &err),
			 ERR_INVALID);
	ck_assert_uint_eq(got, 0);
	ck_assert_int_eq(store_get(st, "", 0, sizeof(buf), buf, &got, NULL, &err), ERR_INVALID);
	/* A name that merely contains dots is an ordinary key. */
	put_str("v1..2", "x");
	ck_assert_int_eq(store_head(st, "v1..2", &info, &err), ERR_OK);
	store_object_release(&info);
}
END_TEST

/* A symbolic link at root/key pointing to target. */
static void link_at(const char *key, const char *target)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/%s", root, key);
	make_parents(path);
	ck_assert_int_eq(symlink(target, path), 0);
}

/*
 * Symbolic links are followed while they stay inside the directory (a
 * dataset's shards linked into a split, relative or absolute) and are no
 * objects when they lead out, absolutely or through "..": not listed,
 * refused by get and head naming the link, also as a directory on the way
 * to a key or as the listing's prefix.
 */
START_TEST(test_store_file_links_leading_out_of_the_root_are_no_objects)
{
	char target[200], up[200], inside[200], buf[32];
	struct store_list_page page;
	struct store_object info;
	struct error err;
	size_t got = 0;

	link_at("lnk/in", "../a.txt");
	link_at("lnk/in-deep", "../train/shard-0/part-0000.rec");
	snprintf(target, sizeof(target), "%s/secret", outside);
	link_at("lnk/out-abs", target);
	snprintf(up, sizeof(up), "../../%s/secret", strrchr(outside, '/') + 1);
	link_at("lnk/out-rel", up);
	link_at("lnk/dir-out", outside);
	link_at("lnk/train", "../train");
	snprintf(inside, sizeof(inside), "%s/a.txt", root);
	link_at("lnk/abs-in", inside);

	ck_assert_int_eq(store_list(st, "lnk/", NULL, NULL, 0, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, 3);
	ck_assert_str_eq(page.objects[0].key, "lnk/abs-in");
	ck_assert_str_eq(page.objects[1].key, "lnk/in");
	ck_assert_uint_eq(page.objects[1].size, strlen("hello world"));
	ck_assert_str_eq(page.objects[2].key, "lnk/in-deep");
	store_list_page_release(&page);
	ck_assert_int_eq(store_get(st, "lnk/abs-in", 0, sizeof(buf), buf, &got, NULL, &err),
			 ERR_OK);
	ck_assert_uint_eq(got, strlen("hello world"));
	ck_assert_int_eq(store_get(st, "lnk/in", 0, sizeof(buf), buf, &got, NULL, &err), ERR_OK);
	ck_assert_uint_eq(got, strlen("hello world"));
	ck_assert_int_eq(memcmp(buf, "hello world", got), 0);
	/* Through a linked directory that stays inside: read, not listed. */
	ck_assert_int_eq(store_head(st, "lnk/train/index.json", &info, &err), ERR_OK);
	store_object_release(&info);

	for (size_t i = 0; i < 3; i++) {
		const char *key = (const char *[]){ "lnk/out-abs", "lnk/out-rel",
						    "lnk/dir-out/secret" }[i];

		got = 0;
		ck_assert_int_eq(store_get(st, key, 0, sizeof(buf), buf, &got, NULL, &err),
				 ERR_PERMISSION);
		ck_assert_uint_eq(got, 0);
		ck_assert_msg(strstr(err.msg, key) && strstr(err.msg, "leads out"), "%s", err.msg);
		ck_assert_int_eq(store_head(st, key, &info, &err), ERR_PERMISSION);
		ck_assert_ptr_null(info.key);
	}
	ck_assert_int_eq(store_list(st, "lnk/dir-out/", NULL, NULL, 0, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, 0);
	store_list_page_release(&page);

	/* Folded: a directory holding only links out is no common prefix. */
	link_at("fold/out/x", target);
	link_at("fold/deep/out/y", target);
	link_at("fold/in/x", "../../a.txt");
	ck_assert_int_eq(store_list(st, "fold/", "/", NULL, 0, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, 0);
	ck_assert_uint_eq(page.nprefixes, 1);
	ck_assert_str_eq(page.prefixes[0], "fold/in/");
	store_list_page_release(&page);
}
END_TEST

/*
 * The directory is looked up by its path at each call: replaced (a link
 * flipped to a new version of the dataset), the store reads the new one,
 * as the listings of the next refresh do.
 */
START_TEST(test_store_file_follows_its_directory_when_replaced)
{
	char v1[200], v2[200], current[200], path[240], buf[32];
	struct store *flipped = NULL;
	struct error err;
	size_t got = 0;

	snprintf(v1, sizeof(v1), "%s/v1", base);
	snprintf(v2, sizeof(v2), "%s/v2", base);
	snprintf(current, sizeof(current), "%s/current", base);
	ck_assert_int_eq(mkdir(v1, 0755), 0);
	ck_assert_int_eq(mkdir(v2, 0755), 0);
	snprintf(path, sizeof(path), "%s/x", v1);
	ck_assert_int_eq(fileio_replace(path, "one", 3, 0644, &err), ERR_OK);
	snprintf(path, sizeof(path), "%s/x", v2);
	ck_assert_int_eq(fileio_replace(path, "two", 3, 0644, &err), ERR_OK);
	ck_assert_int_eq(symlink("v1", current), 0);
	ck_assert_int_eq(store_file_open(current, NULL, &flipped, &err), ERR_OK);
	ck_assert_int_eq(store_get(flipped, "x", 0, sizeof(buf), buf, &got, NULL, &err), ERR_OK);
	ck_assert_int_eq(memcmp(buf, "one", 3), 0);
	ck_assert_int_eq(unlink(current), 0);
	ck_assert_int_eq(symlink("v2", current), 0);
	ck_assert_int_eq(store_get(flipped, "x", 0, sizeof(buf), buf, &got, NULL, &err), ERR_OK);
	ck_assert_int_eq(memcmp(buf, "two", 3), 0);
	store_free(flipped);
	unlink(current);
	rm_tree(v1);
	rm_tree(v2);
}
END_TEST

START_TEST(test_store_file_directories_and_special_files_are_not_objects)
{
	static const char *not_objects[] = {
		"train", "train/", "emptydir", "b.granary-tmp", "onlytmp/x.granary-tmp", "fifo",
	};
	char buf[16];
	struct error err;
	struct store_object info;
	size_t got = 0;

	for (size_t i = 0; i < sizeof(not_objects) / sizeof(not_objects[0]); i++) {
		ck_assert_msg(store_head(st, not_objects[i], &info, &err) == ERR_NOT_FOUND,
			      "head found '%s'", not_objects[i]);
		ck_assert_msg(store_get(st, not_objects[i], 0, sizeof(buf), buf, &got, NULL,
					&err) == ERR_NOT_FOUND, "get found '%s'", not_objects[i]);
	}
}
END_TEST

START_TEST(test_store_file_head_reports_size_mtime_and_stable_etag)
{
	struct store_object a;
	struct store_object b;
	struct error err;
	struct stat sb;
	char path[128];

	ck_assert_int_eq(store_head(st, "big.bin", &a, &err), ERR_OK);
	ck_assert_str_eq(a.key, "big.bin");
	ck_assert_uint_eq(a.size, BIG_SIZE);
	snprintf(path, sizeof(path), "%s/big.bin", root);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq(a.mtime, sb.st_mtim.tv_sec);
	ck_assert_uint_eq(strlen(a.etag), 16);
	ck_assert_uint_eq(strspn(a.etag, "0123456789abcdef"), 16);

	ck_assert_int_eq(store_head(st, "big.bin", &b, &err), ERR_OK);
	ck_assert_str_eq(a.etag, b.etag);
	store_object_release(&b);
	ck_assert_int_eq(store_head(st, "empty", &b, &err), ERR_OK);
	ck_assert_uint_eq(b.size, 0);
	ck_assert_str_ne(a.etag, b.etag);
	store_object_release(&a);
	store_object_release(&b);
}
END_TEST

START_TEST(test_store_file_head_etag_changes_after_rewrite)
{
	struct store_object before;
	struct store_object after;
	struct error err;
	struct timespec times[2];
	struct stat sb;
	char path[128];

	ck_assert_int_eq(store_head(st, "a.txt", &before, &err), ERR_OK);
	/* Same size, same mtime: only the new inode tells. */
	replace("a.txt", "HELLO WORLD");
	ck_assert_int_eq(store_head(st, "a.txt", &after, &err), ERR_OK);
	ck_assert_uint_eq(after.size, before.size);
	ck_assert_int_eq(after.mtime, before.mtime);
	ck_assert_str_ne(after.etag, before.etag);
	store_object_release(&before);

	/* In place, same inode and mtime, new size. */
	snprintf(path, sizeof(path), "%s/a.txt", root);
	ck_assert_int_eq(stat(path, &sb), 0);
	put_str("a.txt", "hello, world");
	times[0] = sb.st_atim;
	times[1] = sb.st_mtim;
	ck_assert_int_eq(utimensat(AT_FDCWD, path, times, 0), 0);
	ck_assert_int_eq(store_head(st, "a.txt", &before, &err), ERR_OK);
	ck_assert_uint_eq(before.size, 12);
	ck_assert_int_eq(before.mtime, after.mtime);
	ck_assert_str_ne(after.etag, before.etag);
	store_object_release(&before);
	store_object_release(&after);
}
END_TEST

START_TEST(test_store_file_get_with_stale_etag_says_object_changed)
{
	struct store_object info;
	struct error err;
	char buf[32];
	size_t got = 0;

	ck_assert_int_eq(store_head(st, "a.txt", &info, &err), ERR_OK);
	ck_assert_int_eq(store_get(st, "a.txt", 0, sizeof(buf), buf, &got, info.etag, &err),
			 ERR_OK);
	ck_assert_uint_eq(got, 11);

	replace("a.txt", "HELLO WORLD");
	got = 99;
	ck_assert_int_eq(store_get(st, "a.txt", 0, sizeof(buf), buf, &got, info.etag, &err),
			 ERR_NOT_FOUND);
	ck_assert_uint_eq(got, 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "changed"));
	ck_assert_ptr_nonnull(strstr(err.msg, "'a.txt'"));
	ck_assert_int_eq(store_get(st, "a.txt", 0, sizeof(buf), buf, &got, "0000000000000000",
				   &err), ERR_NOT_FOUND);
	store_object_release(&info);
}
END_TEST

START_TEST(test_store_file_list_without_delimiter_returns_all_keys_sorted)
{
	const char *want[NKEYS];
	size_t n = expected_keys("", want);
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(store_list(st, "", NULL, NULL, 0, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, n);
	ck_assert_uint_eq(page.nprefixes, 0);
	ck_assert_ptr_null(page.next_token);
	for (size_t i = 0; i < n; i++)
		ck_assert_str_eq(page.objects[i].key, want[i]);
	store_list_page_release(&page);

	/* Bytewise: "train-b.txt" ('-' 0x2d) sorts before "train/" ('/' 0x2f). */
	ck_assert_int_lt(strcmp("train-b.txt", "train/index.json"), 0);
}
END_TEST

START_TEST(test_store_file_list_reports_object_metadata)
{
	struct store_list_page page;
	struct store_object info;
	struct error err;
	size_t found = 0;

	ck_assert_int_eq(store_list(st, "", NULL, NULL, 0, &page, &err), ERR_OK);
	for (size_t i = 0; i < page.nobjects; i++) {
		ck_assert_int_eq(store_head(st, page.objects[i].key, &info, &err), ERR_OK);
		ck_assert_uint_eq(page.objects[i].size, info.size);
		ck_assert_str_eq(page.objects[i].etag, info.etag);
		ck_assert_int_eq(page.objects[i].mtime, info.mtime);
		found += strcmp(info.key, "big.bin") == 0 && info.size == BIG_SIZE;
		store_object_release(&info);
	}
	ck_assert_uint_eq(found, 1);
	store_list_page_release(&page);
}
END_TEST

START_TEST(test_store_file_list_with_delimiter_folds_non_empty_directories)
{
	static const char *objects[] = { ".hidden", "a+b", "a.txt", "big.bin", "empty",
					 "tr.txt", "train-b.txt" };
	static const char *prefixes[] = { "deep/", "train/", "unicod\xc3\xa9/", "with space/" };
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(store_list(st, "", "/", NULL, 0, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, sizeof(objects) / sizeof(objects[0]));
	for (size_t i = 0; i < page.nobjects; i++)
		ck_assert_str_eq(page.objects[i].key, objects[i]);
	ck_assert_uint_eq(page.nprefixes, sizeof(prefixes) / sizeof(prefixes[0]));
	for (size_t i = 0; i < page.nprefixes; i++)
		ck_assert_str_eq(page.prefixes[i], prefixes[i]);
	ck_assert_ptr_null(page.next_token);
	store_list_page_release(&page);

	ck_assert_int_eq(store_list(st, "train/", "/", NULL, 0, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, 1);
	ck_assert_str_eq(page.objects[0].key, "train/index.json");
	ck_assert_uint_eq(page.nprefixes, 2);
	ck_assert_str_eq(page.prefixes[0], "train/shard-0/");
	ck_assert_str_eq(page.prefixes[1], "train/shard-1/");
	store_list_page_release(&page);
}
END_TEST

START_TEST(test_store_file_list_prefix_may_end_mid_name)
{
	const char *want[NKEYS];
	size_t n = expected_keys("tr", want);
	struct store_list_page page;
	struct error err;

	ck_assert_uint_eq(n, 6);
	ck_assert_int_eq(store_list(st, "tr", NULL, NULL, 0, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, n);
	for (size_t i = 0; i < n; i++)
		ck_assert_str_eq(page.objects[i].key, want[i]);
	store_list_page_release(&page);

	ck_assert_int_eq(store_list(st, "tr", "/", NULL, 0, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, 2);
	ck_assert_str_eq(page.objects[0].key, "tr.txt");
	ck_assert_str_eq(page.objects[1].key, "train-b.txt");
	ck_assert_uint_eq(page.nprefixes, 1);
	ck_assert_str_eq(page.prefixes[0], "train/");
	store_list_page_release(&page);

	ck_assert_int_eq(store_list(st, "train/shard", "/", NULL, 0, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, 0);
	ck_assert_uint_eq(page.nprefixes, 2);
	ck_assert_str_eq(page.prefixes[0], "train/shard-0/");
	store_list_page_release(&page);

	ck_assert_int_eq(store_list(st, "train/shard-0/part-0001", NULL, NULL, 0, &page, &err),
			 ERR_OK);
	ck_assert_uint_eq(page.nobjects, 1);
	ck_assert_str_eq(page.objects[0].key, "train/shard-0/part-0001.rec");
	store_list_page_release(&page);
}
END_TEST

START_TEST(test_store_file_list_prefix_matching_nothing_is_empty)
{
	static const char *prefixes[] = { "nope/", "zzz", "a.txt/", "../", "/", "train//",
					  "train/../", "emptydir/", "onlytmp/" };
	struct store_list_page page;
	struct error err;

	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		ck_assert_int_eq(store_list(st, prefixes[i], NULL, NULL, 0, &page, &err), ERR_OK);
		ck_assert_msg(page.nobjects == 0 && page.nprefixes == 0,
			      "prefix '%s' listed something", prefixes[i]);
		ck_assert_ptr_null(page.next_token);
		store_list_page_release(&page);
	}
}
END_TEST

START_TEST(test_store_file_list_refuses_other_delimiters)
{
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(store_list(st, "", "-", NULL, 0, &page, &err), ERR_UNSUPPORTED);
	ck_assert_ptr_nonnull(strstr(err.msg, "delimiter"));
	ck_assert_uint_eq(page.nobjects, 0);
}
END_TEST

/* Lists all pages of size max_keys; returns the results in order. */
static size_t collect(const char *prefix, const char *delim, unsigned max_keys,
		      char **out, size_t cap)
{
	struct store_list_page page;
	struct error err;
	char *token = NULL;
	size_t n = 0;
	int pages = 0;

	do {
		size_t oi = 0;
		size_t pi = 0;

		ck_assert_int_eq(store_list(st, prefix, delim, token, max_keys, &page, &err),
				 ERR_OK);
		ck_assert_uint_le(page.nobjects + page.nprefixes, max_keys ? max_keys : 1000);
		/* A page that says there is more is full. */
		if (page.next_token)
			ck_assert_uint_eq(page.nobjects + page.nprefixes, max_keys ? max_keys : 1000);
		/* Merge objects and prefixes back into one sorted sequence. */
		while (oi < page.nobjects || pi < page.nprefixes) {
			const char *k = NULL;

			if (pi == page.nprefixes ||
			    (oi < page.nobjects && strcmp(page.objects[oi].key, page.prefixes[pi]) < 0))
				k = page.objects[oi++].key;
			else
				k = page.prefixes[pi++];
			ck_assert_uint_lt(n, cap);
			out[n++] = strdup(k);
		}
		free(token);
		token = page.next_token ? strdup(page.next_token) : NULL;
		store_list_page_release(&page);
		ck_assert_int_lt(++pages, 10000);
	} while (token);
	return n;
}

static void free_all(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
}

START_TEST(test_store_file_list_paginates_without_loss_or_repeat)
{
	static const unsigned sizes[] = { 1, 2, 3, 5, 7, NKEYS - 1, NKEYS, NKEYS + 1 };
	const char *want[NKEYS];
	size_t n = expected_keys("", want);
	char *got[NKEYS + 1];

	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		size_t m = collect("", NULL, sizes[s], got, NKEYS + 1);

		ck_assert_msg(m == n, "max_keys %u: %zu keys, want %zu", sizes[s], m, n);
		for (size_t i = 0; i < n; i++)
			ck_assert_str_eq(got[i], want[i]);
		free_all(got, m);
	}
}
END_TEST

START_TEST(test_store_file_list_paginates_with_delimiter_and_prefix)
{
	static const char *want[] = { ".hidden", "a+b", "a.txt", "big.bin", "deep/", "empty",
				      "tr.txt", "train-b.txt", "train/", "unicod\xc3\xa9/",
				      "with space/" };
	static const char *want_tr[] = { "train/shard-0/part-0000.rec",
					 "train/shard-0/part-0001.rec",
					 "train/shard-1/part-0000.rec" };
	char *got[16];

	for (unsigned max = 1; max <= 4; max++) {
		size_t m = collect("", "/", max, got, 16);

		ck_assert_uint_eq(m, sizeof(want) / sizeof(want[0]));
		for (size_t i = 0; i < m; i++)
			ck_assert_str_eq(got[i], want[i]);
		free_all(got, m);

		m = collect("train/sh", NULL, max, got, 16);
		ck_assert_uint_eq(m, 3);
		for (size_t i = 0; i < m; i++)
			ck_assert_str_eq(got[i], want_tr[i]);
		free_all(got, m);
	}
}
END_TEST

START_TEST(test_store_file_list_defaults_and_caps_page_at_1000)
{
	enum { MANY = 2345 };
	char **got = calloc(MANY + NKEYS, sizeof(*got));
	struct store_list_page page;
	struct error err;
	char key[64];
	size_t m = 0;

	ck_assert_ptr_nonnull(got);
	for (int i = 0; i < MANY; i++) {
		snprintf(key, sizeof(key), "many/%04d", i);
		put_str(key, "x");
	}
	ck_assert_int_eq(store_list(st, "many/", NULL, NULL, 0, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, 1000);
	ck_assert_str_eq(page.objects[999].key, "many/0999");
	ck_assert_str_eq(page.next_token, "many/0999");
	store_list_page_release(&page);
	ck_assert_int_eq(store_list(st, "many/", NULL, NULL, 5000, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, 1000);
	store_list_page_release(&page);

	m = collect("many/", NULL, 0, got, MANY + NKEYS);
	ck_assert_uint_eq(m, MANY);
	ck_assert_str_eq(got[MANY - 1], "many/2344");
	free_all(got, m);
	free(got);
}
END_TEST

START_TEST(test_store_file_reads_deep_and_unicode_keys)
{
	static const char *keys[] = { "deep/a/b/c/d/e/f.bin", "with space/file name.txt",
				      "unicod\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac.txt", "a+b" };
	char buf[64];
	struct error err;
	size_t got = 0;

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		ck_assert_int_eq(store_get(st, keys[i], 0, sizeof(buf), buf, &got, NULL, &err),
				 ERR_OK);
		ck_assert_uint_eq(got, strlen(keys[i]));
		ck_assert_mem_eq(buf, keys[i], got);
	}
}
END_TEST

START_TEST(test_store_file_counts_requests_and_bytes)
{
	struct store_stats stats;
	struct store_list_page page;
	struct store_object info;
	struct error err;
	char buf[64];
	size_t got = 0;

	store_get_stats(st, &stats);
	ck_assert_uint_eq(stats.requests, 0);
	ck_assert_uint_eq(stats.bytes_read, 0);
	ck_assert_int_eq(store_get(st, "big.bin", 100, sizeof(buf), buf, &got, NULL, &err), ERR_OK);
	ck_assert_int_eq(store_get(st, "a.txt", 6, sizeof(buf), buf, &got, NULL, &err), ERR_OK);
	ck_assert_int_eq(store_head(st, "a.txt", &info, &err), ERR_OK);
	store_object_release(&info);
	ck_assert_int_eq(store_list(st, "", NULL, NULL, 0, &page, &err), ERR_OK);
	store_list_page_release(&page);
	ck_assert_int_eq(store_get(st, "nope", 0, sizeof(buf), buf, &got, NULL, &err),
			 ERR_NOT_FOUND);
	store_get_stats(st, &stats);
	ck_assert_uint_eq(stats.requests, 5);
	ck_assert_uint_eq(stats.bytes_read, sizeof(buf) + 5);
}
END_TEST

/* Number of entries of root/rel other than "." and "..". */
static int count_entries(const char *rel)
{
	char path[256];
	DIR *d = NULL;
	struct dirent *de = NULL;
	int n = 0;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	d = opendir(path);
	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)))
		n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
	closedir(d);
	return n;
}

START_TEST(test_store_file_put_creates_object_and_parent_directories)
{
	static const char data[] = "fresh object";
	struct store_list_page page;
	struct store_object info;
	struct error err;
	struct stat sb;
	char path[256];
	char buf[64];
	size_t got = 0;

	ck_assert_int_eq(store_put(st, "new/deep/obj.bin", data, sizeof(data) - 1, &err), ERR_OK);
	ck_assert_int_eq(store_get(st, "new/deep/obj.bin", 0, sizeof(buf), buf, &got, NULL, &err),
			 ERR_OK);
	ck_assert_uint_eq(got, sizeof(data) - 1);
	ck_assert_mem_eq(buf, data, got);
	ck_assert_int_eq(store_head(st, "new/deep/obj.bin", &info, &err), ERR_OK);
	ck_assert_uint_eq(info.size, sizeof(data) - 1);
	store_object_release(&info);
	snprintf(path, sizeof(path), "%s/new/deep/obj.bin", root);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq(sb.st_mode & 0777, 0644);
	/* Nothing but the object is left behind: no temporary file. */
	ck_assert_int_eq(count_entries("new/deep"), 1);

	ck_assert_int_eq(store_list(st, "new/", NULL, NULL, 0, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, 1);
	ck_assert_str_eq(page.objects[0].key, "new/deep/obj.bin");
	store_list_page_release(&page);
}
END_TEST

START_TEST(test_store_file_put_replaces_object_and_changes_etag)
{
	struct store_object before;
	struct store_object after;
	struct error err;
	char buf[64];
	size_t got = 0;

	ck_assert_int_eq(store_head(st, "a.txt", &before, &err), ERR_OK);
	ck_assert_int_eq(store_put(st, "a.txt", "HELLO WORLD", 11, &err), ERR_OK);
	ck_assert_int_eq(store_head(st, "a.txt", &after, &err), ERR_OK);
	ck_assert_str_ne(before.etag, after.etag);
	ck_assert_int_eq(store_get(st, "a.txt", 0, sizeof(buf), buf, &got, NULL, &err), ERR_OK);
	ck_assert_uint_eq(got, 11);
	ck_assert_mem_eq(buf, "HELLO WORLD", 11);
	ck_assert_int_eq(store_get(st, "a.txt", 0, sizeof(buf), buf, &got, before.etag, &err),
			 ERR_NOT_FOUND);
	store_object_release(&before);
	store_object_release(&after);

	ck_assert_int_eq(store_put(st, "a.txt", "", 0, &err), ERR_OK);
	ck_assert_int_eq(store_head(st, "a.txt", &after, &err), ERR_OK);
	ck_assert_uint_eq(after.size, 0);
	store_object_release(&after);
	ck_assert_int_eq(count_entries(""), 16);
}
END_TEST

START_TEST(test_store_file_put_rejects_bad_and_conflicting_keys)
{
	static const char *invalid[] = { "../x", "a/../../x", "/abs", "dir/", "x.granary-tmp",
					 "a.txt/child", "train" };
	struct error err;

	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
		error_clear(&err);
		ck_assert_msg(store_put(st, invalid[i], "x", 1, &err) == ERR_INVALID,
			      "put accepted '%s': %s", invalid[i], err.msg);
		ck_assert_ptr_nonnull(strstr(err.msg, invalid[i]));
	}
	/* Nothing was created next to the root or left in it. */
	ck_assert_int_eq(count_entries(""), 16);
	ck_assert_int_eq(count_entries("train"), 3);
}
END_TEST

/* A put goes through the tree's links as a read does: one that stays
 * inside is followed, one that leads out is refused and writes nothing
 * there, whether it is the key's directory or one above it. */
START_TEST(test_store_file_put_refuses_links_leading_out)
{
	char away[512], link[512], target[512], path[512];
	struct error err;
	struct stat sb;

	snprintf(away, sizeof(away), "%s/away.XXXXXX", base);
	ck_assert_ptr_nonnull(mkdtemp(away));
	snprintf(link, sizeof(link), "%s/out", root);
	ck_assert_int_eq(symlink(away, link), 0);
	snprintf(link, sizeof(link), "%s/up", root);
	ck_assert_int_eq(symlink("..", link), 0);
	snprintf(link, sizeof(link), "%s/in", root);
	ck_assert_int_eq(symlink("train", link), 0);

	static const char *refused[] = { "out/x", "out/new/x", "up/x" };
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		error_clear(&err);
		ck_assert_msg(store_put(st, refused[i], "x", 1, &err) == ERR_PERMISSION,
			      "put '%s': %s", refused[i], err.msg);
		ck_assert_ptr_nonnull(strstr(err.msg, "leads out"));
	}
	/* nothing written outside, nor next to the root */
	ck_assert_int_eq(rmdir(away), 0);
	snprintf(path, sizeof(path), "%s/x", base);
	ck_assert_int_ne(stat(path, &sb), 0);

	ck_assert_int_eq(store_put(st, "in/y", "yes", 3, &err), ERR_OK);
	snprintf(target, sizeof(target), "%s/train/y", root);
	ck_assert_int_eq(stat(target, &sb), 0);
	ck_assert_int_eq(sb.st_size, 3);
	ck_assert_int_eq(store_put(st, "in/sub/z", "z", 1, &err), ERR_OK);
	snprintf(target, sizeof(target), "%s/train/sub/z", root);
	ck_assert_int_eq(stat(target, &sb), 0);
}
END_TEST

static Suite *store_file_suite(void)
{
	Suite *s = suite_create("store_file");
	TCase *tc = tcase_create("core");

	tcase_add_unchecked_fixture(tc, setup_base, teardown_base);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_store_file_open_rejects_relative_missing_and_non_directory);
	tcase_add_test(tc, test_store_file_open_describes_store_without_trailing_slash);
	tcase_add_test(tc, test_store_file_get_reads_exact_ranges);
	tcase_add_test(tc, test_store_file_links_leading_out_of_the_root_are_no_objects);
	tcase_add_test(tc, test_store_file_follows_its_directory_when_replaced);
	tcase_add_test(tc, test_store_file_get_is_short_only_at_end_of_object);
	tcase_add_test(tc, test_store_file_get_past_end_is_range_error);
	tcase_add_test(tc, test_store_file_get_zero_byte_object_reads_nothing);
	tcase_add_test(tc, test_store_file_get_missing_key_is_not_found);
	tcase_add_test(tc, test_store_file_rejects_keys_escaping_the_root);
	tcase_add_test(tc, test_store_file_directories_and_special_files_are_not_objects);
	tcase_add_test(tc, test_store_file_head_reports_size_mtime_and_stable_etag);
	tcase_add_test(tc, test_store_file_head_etag_changes_after_rewrite);
	tcase_add_test(tc, test_store_file_get_with_stale_etag_says_object_changed);
	tcase_add_test(tc, test_store_file_list_without_delimiter_returns_all_keys_sorted);
	tcase_add_test(tc, test_store_file_list_reports_object_metadata);
	tcase_add_test(tc, test_store_file_list_with_delimiter_folds_non_empty_directories);
	tcase_add_test(tc, test_store_file_list_prefix_may_end_mid_name);
	tcase_add_test(tc, test_store_file_list_prefix_matching_nothing_is_empty);
	tcase_add_test(tc, test_store_file_list_refuses_other_delimiters);
	tcase_add_test(tc, test_store_file_list_paginates_without_loss_or_repeat);
	tcase_add_test(tc, test_store_file_list_paginates_with_delimiter_and_prefix);
	tcase_add_test(tc, test_store_file_list_defaults_and_caps_page_at_1000);
	tcase_add_test(tc, test_store_file_reads_deep_and_unicode_keys);
	tcase_add_test(tc, test_store_file_counts_requests_and_bytes);
	tcase_add_test(tc, test_store_file_put_creates_object_and_parent_directories);
	tcase_add_test(tc, test_store_file_put_replaces_object_and_changes_etag);
	tcase_add_test(tc, test_store_file_put_rejects_bad_and_conflicting_keys);
	tcase_add_test(tc, test_store_file_put_refuses_links_leading_out);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(store_file_suite());
	int failed = 0;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
