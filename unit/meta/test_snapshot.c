/*
 * test_snapshot.c - the namespace snapshot: building, queries, encoding,
 * files, and a build from a real file:// store.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "common/log.h"
#include "meta/snapshot.h"
#include "store/store.h"
#include "unit/check_main.h"

#define URI "s3://bucket/train/"

static struct snapshot *build(const char *const *keys, size_t n)
{
	struct snapshot_builder *b = NULL;
	struct snapshot *s = NULL;
	struct error err;

	ck_assert_int_eq(snapshot_builder_new("ds", URI, 7, &b, &err), ERR_OK);
	for (size_t i = 0; i < n; i++)
		ck_assert_msg(snapshot_builder_add(b, keys[i], 100 + i, "0123abcd", 1000 + (int64_t)i,
						   &err) == ERR_OK,
			      "add '%s': %s", keys[i], err.msg);
	ck_assert_msg(snapshot_builder_finish(b, &s, &err) == ERR_OK, "%s", err.msg);
	return s;
}

static void stat_ok(const struct snapshot *s, uint64_t ino, struct snapshot_entry_info *info)
{
	ck_assert_int_eq(snapshot_stat(s, ino, info), ERR_OK);
}

static void rm_tree(const char *path);

START_TEST(test_snapshot_makes_directories_from_prefixes)
{
	static const char *const keys[] = { "a/b/c.rec", "x.txt", "a/d.rec" };
	struct snapshot *s = build(keys, 3);
	struct snapshot_entry_info info;
	struct snapshot_totals t;
	uint64_t a, ab;

	snapshot_totals(s, &t);
	ck_assert_uint_eq(t.files, 3);
	ck_assert_uint_eq(t.dirs, 3); /* root, a, a/b */
	ck_assert_uint_eq(t.bytes, 100 + 101 + 102);
	ck_assert_uint_eq(t.skipped, 0);
	ck_assert_uint_eq(snapshot_count(s), 6);
	a = snapshot_lookup(s, SNAPSHOT_ROOT_INO, "a");
	ck_assert_uint_ne(a, 0);
	stat_ok(s, a, &info);
	ck_assert(info.is_dir);
	ck_assert_str_eq(info.name, "a");
	ck_assert_uint_eq(info.parent, SNAPSHOT_ROOT_INO);
	ck_assert_uint_eq(info.nchildren, 2);
	ck_assert_int_eq(info.mtime, 1002); /* latest below it */
	ck_assert_uint_eq(info.size, 0);
	ck_assert_str_eq(info.etag, "");
	ab = snapshot_lookup(s, a, "b");
	stat_ok(s, ab, &info);
	ck_assert(info.is_dir);
	ck_assert_uint_eq(info.parent, a);
	stat_ok(s, snapshot_lookup(s, ab, "c.rec"), &info);
	ck_assert(!info.is_dir);
	ck_assert_uint_eq(info.size, 100);
	ck_assert_int_eq(info.mtime, 1000);
	ck_assert_str_eq(info.etag, "0123abcd");
	ck_assert_uint_eq(info.parent, ab);
	stat_ok(s, SNAPSHOT_ROOT_INO, &info);
	ck_assert(info.is_dir);
	ck_assert_str_eq(info.name, "");
	ck_assert_uint_eq(info.parent, SNAPSHOT_ROOT_INO);
	ck_assert_uint_eq(info.nchildren, 2);
	ck_assert_str_eq(snapshot_name(s), "ds");
	ck_assert_str_eq(snapshot_uri(s), URI);
	ck_assert_str_eq(snapshot_prefix(s), "train/");
	ck_assert_uint_eq(snapshot_generation(s), 7);
	ck_assert_uint_gt(snapshot_memory_bytes(s), 6 * 40);
	snapshot_free(s);
}
END_TEST

START_TEST(test_snapshot_folder_markers_make_directories_only)
{
	struct snapshot_builder *b = NULL;
	struct snapshot *s = NULL;
	struct snapshot_entry_info info;
	struct snapshot_totals t;
	struct error err;
	uint64_t ino;

	ck_assert_int_eq(snapshot_builder_new("ds", URI, 1, &b, &err), ERR_OK);
	ck_assert_int_eq(snapshot_builder_add(b, "empty/", 0, "", 50, &err), ERR_OK);
	ck_assert_int_eq(snapshot_builder_add(b, "m/n/", 0, NULL, 0, &err), ERR_OK);
	ck_assert_int_eq(snapshot_builder_add(b, "d/", 0, "e", 5000, &err), ERR_OK);
	ck_assert_int_eq(snapshot_builder_add(b, "d/f", 3, "e", 10, &err), ERR_OK);
	ck_assert_uint_eq(snapshot_builder_count(b), 4);
	ck_assert_int_eq(snapshot_builder_finish(b, &s, &err), ERR_OK);
	snapshot_totals(s, &t);
	ck_assert_uint_eq(t.files, 1);
	ck_assert_uint_eq(t.dirs, 5); /* root, empty, m, m/n, d */
	ck_assert_uint_eq(t.bytes, 3);
	ino = snapshot_resolve_path(s, "empty");
	stat_ok(s, ino, &info);
	ck_assert(info.is_dir);
	ck_assert_uint_eq(info.nchildren, 0);
	ck_assert_int_eq(info.mtime, 50);
	stat_ok(s, snapshot_resolve_path(s, "m/n"), &info);
	ck_assert(info.is_dir);
	ck_assert_uint_eq(info.nchildren, 0);
	stat_ok(s, snapshot_resolve_path(s, "d"), &info);
	ck_assert(info.is_dir);
	ck_assert_uint_eq(info.nchildren, 1);
	ck_assert_int_eq(info.mtime, 5000); /* the marker's, later than the file */
	stat_ok(s, SNAPSHOT_ROOT_INO, &info);
	ck_assert_int_eq(info.mtime, 5000);
	snapshot_free(s);
}
END_TEST

struct listing {
	char names[64][32];
	uint64_t inos[64];
	uint64_t next[64];
	int n, stop_after;
};

static int collect(const char *name, uint64_t ino, bool is_dir, uint64_t next_off, void *arg)
{
	struct listing *l = arg;

	snprintf(l->names[l->n], sizeof(l->names[0]), "%s%s", name, is_dir ? "/" : "");
	l->inos[l->n] = ino;
	l->next[l->n] = next_off;
	l->n++;
	return l->stop_after && l->n == l->stop_after;
}

START_TEST(test_snapshot_readdir_is_sorted_complete_and_resumable)
{
	/* Deliberately out of order, with names that sort bytewise. */
	static const char *const keys[] = { "z", "b/2", "B", "a.txt", "b/1", "a", "\xc3\xa9", "aa" };
	static const char *const want[] = { "B", "a", "a.txt", "aa", "b/", "z", "\xc3\xa9/" };
	struct snapshot *s = NULL;
	struct listing l = { 0 };
	uint64_t first = 0, count = 0;
	struct snapshot_builder *bld = NULL;
	struct error err;

	ck_assert_int_eq(snapshot_builder_new("ds", URI, 1, &bld, &err), ERR_OK);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		char k[16];

		/* "\xc3\xa9" as a directory, the rest as files */
		snprintf(k, sizeof(k), "%s%s", keys[i], i == 6 ? "/x" : "");
		ck_assert_int_eq(snapshot_builder_add(bld, k, 1, "", 0, &err), ERR_OK);
	}
	ck_assert_int_eq(snapshot_builder_finish(bld, &s, &err), ERR_OK);

	ck_assert_int_eq(snapshot_readdir(s, SNAPSHOT_ROOT_INO, 0, collect, &l), ERR_OK);
	ck_assert_int_eq(l.n, 7);
	for (int i = 0; i < l.n; i++) {
		ck_assert_str_eq(l.names[i], want[i]);
		ck_assert_uint_eq(l.next[i], (uint64_t)i + 1);
		ck_assert_uint_eq(snapshot_lookup(s, SNAPSHOT_ROOT_INO,
						  i == 4 ? "b" : i == 6 ? "\xc3\xa9" : want[i]),
				  l.inos[i]);
	}
	ck_assert_int_eq(snapshot_children(s, SNAPSHOT_ROOT_INO, &first, &count), ERR_OK);
	ck_assert_uint_eq(first, l.inos[0]);
	ck_assert_uint_eq(count, 7);
	for (uint64_t k = 0; k < count; k++)
		ck_assert_uint_eq(first + k, l.inos[k]);

	/* Stop after 3, resume at the offset given with the third. */
	memset(&l, 0, sizeof(l));
	l.stop_after = 3;
	ck_assert_int_eq(snapshot_readdir(s, SNAPSHOT_ROOT_INO, 0, collect, &l), ERR_OK);
	ck_assert_int_eq(l.n, 3);
	{
		uint64_t resume = l.next[2];

		memset(&l, 0, sizeof(l));
		ck_assert_int_eq(snapshot_readdir(s, SNAPSHOT_ROOT_INO, resume, collect, &l),
				 ERR_OK);
		ck_assert_int_eq(l.n, 4);
		ck_assert_str_eq(l.names[0], "aa");
	}
	memset(&l, 0, sizeof(l));
	ck_assert_int_eq(snapshot_readdir(s, SNAPSHOT_ROOT_INO, 99, collect, &l), ERR_OK);
	ck_assert_int_eq(l.n, 0);

	/* b's children, and the errors. */
	memset(&l, 0, sizeof(l));
	ck_assert_int_eq(snapshot_readdir(s, snapshot_resolve_path(s, "b"), 0, collect, &l), ERR_OK);
	ck_assert_int_eq(l.n, 2);
	ck_assert_str_eq(l.names[0], "1");
	ck_assert_str_eq(l.names[1], "2");
	ck_assert_int_eq(snapshot_readdir(s, snapshot_resolve_path(s, "z"), 0, collect, &l),
			 ERR_INVALID);
	ck_assert_int_eq(snapshot_readdir(s, 0, 0, collect, &l), ERR_NOT_FOUND);
	ck_assert_int_eq(snapshot_readdir(s, 1000, 0, collect, &l), ERR_NOT_FOUND);

	ck_assert_uint_eq(snapshot_lookup(s, SNAPSHOT_ROOT_INO, "missing"), 0);
	ck_assert_uint_eq(snapshot_lookup(s, SNAPSHOT_ROOT_INO, "b/1"), 0);
	ck_assert_uint_eq(snapshot_lookup(s, SNAPSHOT_ROOT_INO, ""), 0);
	ck_assert_uint_eq(snapshot_lookup(s, SNAPSHOT_ROOT_INO, "a.tx"), 0);
	ck_assert_uint_eq(snapshot_lookup(s, snapshot_resolve_path(s, "z"), "x"), 0);
	ck_assert_uint_eq(snapshot_lookup(s, 0, "a"), 0);
	ck_assert_uint_eq(snapshot_lookup(s, 1000, "a"), 0);
	ck_assert_int_eq(snapshot_children(s, 1000, &first, &count), ERR_NOT_FOUND);
	snapshot_free(s);
}
END_TEST

START_TEST(test_snapshot_lookup_finds_every_entry_of_a_larger_tree)
{
	struct snapshot_builder *b = NULL;
	struct snapshot *s = NULL;
	struct snapshot_totals t;
	struct error err;
	char key[64], path[64];

	ck_assert_int_eq(snapshot_builder_new("ds", URI, 1, &b, &err), ERR_OK);
	/* Reverse order: the builder must not rely on sorted input. */
	for (int i = 2999; i >= 0; i--) {
		snprintf(key, sizeof(key), "c%02d/s%d/f%04d", i % 37, i % 3, i);
		ck_assert_int_eq(snapshot_builder_add(b, key, (uint64_t)i, "", i, &err), ERR_OK);
	}
	ck_assert_int_eq(snapshot_builder_finish(b, &s, &err), ERR_OK);
	snapshot_totals(s, &t);
	ck_assert_uint_eq(t.files, 3000);
	ck_assert_uint_eq(t.dirs, 1 + 37 + 37 * 3);
	for (int i = 0; i < 3000; i++) {
		struct snapshot_entry_info info;
		uint64_t ino;

		snprintf(key, sizeof(key), "c%02d/s%d/f%04d", i % 37, i % 3, i);
		ino = snapshot_resolve_path(s, key);
		ck_assert_uint_ne(ino, 0);
		stat_ok(s, ino, &info);
		ck_assert_uint_eq(info.size, (uint64_t)i);
		ck_assert_int_eq(snapshot_path(s, ino, path, sizeof(path)), ERR_OK);
		ck_assert_str_eq(path, key);
	}
	/* Inodes are a dense range; each parent comes before its children. */
	for (uint64_t ino = 2; ino <= snapshot_count(s); ino++) {
		struct snapshot_entry_info info;

		stat_ok(s, ino, &info);
		ck_assert_uint_lt(info.parent, ino);
	}
	snapshot_free(s);
}
END_TEST

START_TEST(test_snapshot_resolves_paths)
{
	static const char *const keys[] = { "a/b/c.rec", "a/b/d.rec", "top" };
	struct snapshot *s = build(keys, 3);
	uint64_t c = snapshot_lookup(s, snapshot_lookup(s, snapshot_lookup(s, 1, "a"), "b"), "c.rec");

	ck_assert_uint_ne(c, 0);
	ck_assert_uint_eq(snapshot_resolve_path(s, "a/b/c.rec"), c);
	ck_assert_uint_eq(snapshot_resolve_path(s, "/a//b/c.rec/"), c);
	ck_assert_uint_eq(snapshot_resolve_path(s, ""), SNAPSHOT_ROOT_INO);
	ck_assert_uint_eq(snapshot_resolve_path(s, "/"), SNAPSHOT_ROOT_INO);
	ck_assert_uint_eq(snapshot_resolve_path(s, "a"), snapshot_lookup(s, 1, "a"));
	ck_assert_uint_eq(snapshot_resolve_path(s, "a/b/missing"), 0);
	ck_assert_uint_eq(snapshot_resolve_path(s, "a/b/c.rec/x"), 0); /* through a file */
	ck_assert_uint_eq(snapshot_resolve_path(s, "top/x"), 0);
	ck_assert_uint_eq(snapshot_resolve_path(s, "a/./b/c.rec"), 0);
	ck_assert_uint_eq(snapshot_resolve_path(s, "a/b/../b/c.rec"), 0);
	ck_assert_uint_eq(snapshot_resolve_path(s, "a/b/c"), 0);
	ck_assert_uint_eq(snapshot_resolve_path(s, "a/b/c.rec2"), 0);
	ck_assert_uint_eq(snapshot_resolve_path(s, NULL), 0);
	snapshot_free(s);
}
END_TEST

START_TEST(test_snapshot_rebuilds_object_keys)
{
	static const char *const keys[] = { "a/b/c.rec", "top", "e/" };
	struct snapshot *s = build(keys, 3);
	char buf[64];
	uint64_t c = snapshot_resolve_path(s, "a/b/c.rec");

	ck_assert_int_eq(snapshot_object_key(s, c, buf, sizeof(buf)), ERR_OK);
	ck_assert_str_eq(buf, "train/a/b/c.rec");
	ck_assert_int_eq(snapshot_object_key(s, snapshot_resolve_path(s, "top"), buf, sizeof(buf)),
			 ERR_OK);
	ck_assert_str_eq(buf, "train/top");
	ck_assert_int_eq(snapshot_object_key(s, snapshot_resolve_path(s, "a/b"), buf, sizeof(buf)),
			 ERR_OK);
	ck_assert_str_eq(buf, "train/a/b/");
	ck_assert_int_eq(snapshot_object_key(s, snapshot_resolve_path(s, "e"), buf, sizeof(buf)),
			 ERR_OK);
	ck_assert_str_eq(buf, "train/e/");
	ck_assert_int_eq(snapshot_object_key(s, SNAPSHOT_ROOT_INO, buf, sizeof(buf)), ERR_OK);
	ck_assert_str_eq(buf, "train/");
	ck_assert_int_eq(snapshot_path(s, c, buf, sizeof(buf)), ERR_OK);
	ck_assert_str_eq(buf, "a/b/c.rec");
	ck_assert_int_eq(snapshot_path(s, SNAPSHOT_ROOT_INO, buf, sizeof(buf)), ERR_OK);
	ck_assert_str_eq(buf, "");
	/* Exactly big enough, one short, unknown inodes. */
	ck_assert_int_eq(snapshot_object_key(s, c, buf, strlen("train/a/b/c.rec") + 1), ERR_OK);
	ck_assert_int_eq(snapshot_object_key(s, c, buf, strlen("train/a/b/c.rec")), ERR_RANGE);
	ck_assert_str_eq(buf, "");
	ck_assert_int_eq(snapshot_path(s, c, buf, 0), ERR_RANGE);
	ck_assert_int_eq(snapshot_object_key(s, 0, buf, sizeof(buf)), ERR_NOT_FOUND);
	ck_assert_int_eq(snapshot_object_key(s, 99, buf, sizeof(buf)), ERR_NOT_FOUND);
	snapshot_free(s);

	{
		/* A bucket-wide dataset has no prefix. */
		struct snapshot_builder *b = NULL;
		struct error err;

		ck_assert_int_eq(snapshot_builder_new("ds", "s3://bucket", 1, &b, &err), ERR_OK);
		ck_assert_int_eq(snapshot_builder_add(b, "x/y", 1, "", 0, &err), ERR_OK);
		ck_assert_int_eq(snapshot_builder_finish(b, &s, &err), ERR_OK);
		ck_assert_int_eq(snapshot_object_key(s, snapshot_resolve_path(s, "x/y"), buf,
						     sizeof(buf)),
				 ERR_OK);
		ck_assert_str_eq(buf, "x/y");
		snapshot_free(s);
	}
}
END_TEST

START_TEST(test_snapshot_refuses_keys_that_cannot_be_paths)
{
	static const char *const bad[] = { "", "a//b", "/a", "//", ".", "..", "a/./b",
					   "a/../b", "a/..", "./a", "a//", "x/./" };
	struct snapshot_builder *b = NULL;
	struct snapshot *s = NULL;
	struct snapshot_totals t;
	struct error err;
	char longseg[300], ok255[300], etag[200];

	ck_assert_int_eq(snapshot_builder_new("ds", URI, 1, &b, &err), ERR_OK);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(snapshot_builder_add(b, bad[i], 1, "", 0, &err) == ERR_INVALID,
			      "'%s' accepted", bad[i]);
		if (*bad[i]) {
			char quoted[32];

			snprintf(quoted, sizeof(quoted), "'%s'", bad[i]);
			ck_assert_msg(strstr(err.msg, quoted), "'%s' not named: %s", bad[i], err.msg);
		}
	}
	memset(longseg, 'x', 256);
	longseg[256] = '\0';
	ck_assert_int_eq(snapshot_builder_add(b, longseg, 1, "", 0, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "255"));
	memset(ok255, 'y', 255);
	strcpy(ok255 + 255, "/f");
	ck_assert_int_eq(snapshot_builder_add(b, ok255, 1, "", 0, &err), ERR_OK);
	ck_assert_int_eq(snapshot_builder_add_len(b, "a\0b", 3, 1, "", 0, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "NUL"));
	memset(etag, 'e', 150);
	etag[150] = '\0';
	ck_assert_int_eq(snapshot_builder_add(b, "ok", 1, etag, 0, &err), ERR_INVALID);
	/* The builder goes on, with nothing of the refused keys in it. */
	ck_assert_int_eq(snapshot_builder_add(b, "a/b", 1, "", 0, &err), ERR_OK);
	ck_assert_uint_eq(snapshot_builder_count(b), 2);
	ck_assert_int_eq(snapshot_builder_finish(b, &s, &err), ERR_OK);
	snapshot_totals(s, &t);
	ck_assert_uint_eq(t.files, 2);
	ck_assert_uint_eq(t.dirs, 3);
	ck_assert_uint_eq(snapshot_resolve_path(s, "x"), 0);
	snapshot_free(s);
}
END_TEST

/* A hostile listing's sizes of 2^64 - 1 wrapped the dataset's total. No
 * S3 object is larger than 5 TiB: a larger size is refused, naming the key. */
START_TEST(test_snapshot_refuses_sizes_no_object_can_have)
{
	struct snapshot_builder *b = NULL;
	struct snapshot *s = NULL;
	struct snapshot_totals t;
	struct error err;

	ck_assert_int_eq(snapshot_builder_new("ds", URI, 1, &b, &err), ERR_OK);
	ck_assert_int_eq(snapshot_builder_add(b, "huge/a", UINT64_MAX, "", 0, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'huge/a'"));
	ck_assert_ptr_nonnull(strstr(err.msg, "5 TiB"));
	ck_assert_int_eq(snapshot_builder_add(b, "huge/b", (5ull << 40) + 1, "", 0, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "'huge/b'"));
	/* Exactly 5 TiB is a valid object; the refused ones left nothing. */
	ck_assert_int_eq(snapshot_builder_add(b, "big", 5ull << 40, "", 0, &err), ERR_OK);
	ck_assert_int_eq(snapshot_builder_add(b, "small", 1, "", 0, &err), ERR_OK);
	ck_assert_uint_eq(snapshot_builder_count(b), 2);
	ck_assert_int_eq(snapshot_builder_finish(b, &s, &err), ERR_OK);
	snapshot_totals(s, &t);
	ck_assert_uint_eq(t.files, 2);
	ck_assert_uint_eq(t.dirs, 1);
	ck_assert_uint_eq(t.bytes, (5ull << 40) + 1);
	snapshot_free(s);
}
END_TEST

START_TEST(test_snapshot_refuses_bad_builder_arguments)
{
	struct snapshot_builder *b = NULL;
	struct error err;

	ck_assert_int_eq(snapshot_builder_new("Bad_Name", URI, 1, &b, &err), ERR_INVALID);
	ck_assert_ptr_null(b);
	ck_assert_ptr_nonnull(strstr(err.msg, "Bad_Name"));
	ck_assert_int_eq(snapshot_builder_new("ds", "ftp://x/", 1, &b, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "ftp://x/"));
	ck_assert_int_eq(snapshot_builder_new("ds", "", 1, &b, &err), ERR_INVALID);
	snapshot_builder_free(NULL);
	snapshot_free(NULL);
}
END_TEST

START_TEST(test_snapshot_keeps_the_directory_when_a_key_is_also_a_file)
{
	static const char *const keys[] = { "a", "a/b", "c/d", "c", "e", "e/", "f/g/", "f/g" };
	struct snapshot *s = NULL;
	struct snapshot_entry_info info;
	struct snapshot_totals t;
	struct listing l = { 0 };
	char logbuf[4096];
	ssize_t got;
	int fds[2];

	ck_assert_int_eq(pipe(fds), 0);
	log_set_fd(fds[1]);
	s = build(keys, sizeof(keys) / sizeof(keys[0]));
	log_set_fd(2);
	close(fds[1]);
	got = read(fds[0], logbuf, sizeof(logbuf) - 1);
	close(fds[0]);
	ck_assert_int_gt(got, 0);
	logbuf[got] = '\0';
	ck_assert_ptr_nonnull(strstr(logbuf, "level=warn"));
	ck_assert_ptr_nonnull(strstr(logbuf, "both a file and a directory"));
	ck_assert_ptr_nonnull(strstr(logbuf, "key=train/a\n"));
	ck_assert_ptr_nonnull(strstr(logbuf, "key=train/f/g"));

	snapshot_totals(s, &t);
	ck_assert_uint_eq(t.skipped, 4);
	ck_assert_uint_eq(t.files, 2); /* a/b, c/d */
	stat_ok(s, snapshot_resolve_path(s, "a"), &info);
	ck_assert(info.is_dir);
	stat_ok(s, snapshot_resolve_path(s, "c"), &info);
	ck_assert(info.is_dir);
	stat_ok(s, snapshot_resolve_path(s, "e"), &info);
	ck_assert(info.is_dir);
	ck_assert_uint_eq(info.nchildren, 0);
	stat_ok(s, snapshot_resolve_path(s, "f/g"), &info);
	ck_assert(info.is_dir);
	ck_assert_int_eq(snapshot_readdir(s, SNAPSHOT_ROOT_INO, 0, collect, &l), ERR_OK);
	ck_assert_int_eq(l.n, 4);
	ck_assert_str_eq(l.names[0], "a/");
	ck_assert_str_eq(l.names[1], "c/");
	ck_assert_str_eq(l.names[2], "e/");
	ck_assert_str_eq(l.names[3], "f/");
	snapshot_free(s);
}
END_TEST

START_TEST(test_snapshot_refuses_a_duplicate_key)
{
	struct snapshot_builder *b = NULL;
	struct snapshot *s = NULL;
	struct error err;

	ck_assert_int_eq(snapshot_builder_new("ds", URI, 1, &b, &err), ERR_OK);
	ck_assert_int_eq(snapshot_builder_add(b, "x/y", 1, "", 0, &err), ERR_OK);
	ck_assert_int_eq(snapshot_builder_add(b, "x/z", 1, "", 0, &err), ERR_OK);
	ck_assert_int_eq(snapshot_builder_add(b, "x/y", 2, "", 0, &err), ERR_OK);
	ck_assert_int_eq(snapshot_builder_finish(b, &s, &err), ERR_INVALID);
	ck_assert_ptr_null(s);
	ck_assert_ptr_nonnull(strstr(err.msg, "'train/x/y'"));
}
END_TEST

/* Both snapshots hold the same tree, entry for entry. */
static void assert_same(const struct snapshot *a, const struct snapshot *b)
{
	struct snapshot_totals ta, tb;

	ck_assert_str_eq(snapshot_name(a), snapshot_name(b));
	ck_assert_str_eq(snapshot_uri(a), snapshot_uri(b));
	ck_assert_str_eq(snapshot_prefix(a), snapshot_prefix(b));
	ck_assert_uint_eq(snapshot_generation(a), snapshot_generation(b));
	ck_assert_uint_eq(snapshot_count(a), snapshot_count(b));
	snapshot_totals(a, &ta);
	snapshot_totals(b, &tb);
	ck_assert_mem_eq(&ta, &tb, sizeof(ta));
	for (uint64_t ino = 1; ino <= snapshot_count(a); ino++) {
		struct snapshot_entry_info x, y;

		stat_ok(a, ino, &x);
		stat_ok(b, ino, &y);
		ck_assert_uint_eq(x.parent, y.parent);
		ck_assert_int_eq(x.is_dir, y.is_dir);
		ck_assert_uint_eq(x.size, y.size);
		ck_assert_int_eq(x.mtime, y.mtime);
		ck_assert_str_eq(x.name, y.name);
		ck_assert_str_eq(x.etag, y.etag);
		ck_assert_uint_eq(x.nchildren, y.nchildren);
	}
	ck_assert_int_eq(snapshot_stat(b, snapshot_count(b) + 1, &(struct snapshot_entry_info){ 0 }),
			 ERR_NOT_FOUND);
}

static struct snapshot *sample(void)
{
	static const char *const keys[] = { "a/b/c.rec", "a/b/d.rec", "x.txt", "m/", "a", "e/f/g" };
	struct snapshot_builder *b = NULL;
	struct snapshot *s = NULL;
	struct error err;

	ck_assert_int_eq(snapshot_builder_new("ds.v1", URI, 42, &b, &err), ERR_OK);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		ck_assert_int_eq(snapshot_builder_add(b, keys[i], i * 1000003, i ? "9f86d081884c7d65" : "",
						      (int64_t)i * 1000 - 2000, &err),
				 ERR_OK);
	ck_assert_int_eq(snapshot_builder_finish(b, &s, &err), ERR_OK);
	return s;
}

START_TEST(test_snapshot_encode_decode_round_trip)
{
	struct snapshot *s = sample(), *d = NULL;
	void *buf = NULL, *buf2 = NULL;
	size_t len = 0, len2 = 0;
	struct error err;

	ck_assert_int_eq(snapshot_encode_to_buffer(s, &buf, &len, &err), ERR_OK);
	ck_assert_uint_gt(len, 56);
	ck_assert_int_eq(snapshot_decode(buf, len, &d, &err), ERR_OK);
	assert_same(s, d);
	ck_assert_uint_eq(snapshot_memory_bytes(s), snapshot_memory_bytes(d));
	/* Encoding is deterministic: the copy encodes to the same bytes. */
	ck_assert_int_eq(snapshot_encode_to_buffer(d, &buf2, &len2, &err), ERR_OK);
	ck_assert_uint_eq(len, len2);
	ck_assert_mem_eq(buf, buf2, len);
	ck_assert_uint_eq(snapshot_resolve_path(d, "a/b/d.rec"), snapshot_resolve_path(s, "a/b/d.rec"));
	free(buf);
	free(buf2);
	snapshot_free(s);
	snapshot_free(d);
}
END_TEST

static int fail_writer(const void *data, size_t len, void *arg)
{
	return 1;
}

START_TEST(test_snapshot_encode_reports_a_failed_write)
{
	struct snapshot *s = sample();
	struct error err;

	ck_assert_int_eq(snapshot_encode(s, fail_writer, NULL, &err), ERR_IO);
	ck_assert_ptr_nonnull(strstr(err.msg, "ds.v1"));
	snapshot_free(s);
}
END_TEST

START_TEST(test_snapshot_decode_refuses_every_corruption_and_truncation)
{
	struct snapshot *s = sample(), *d = NULL;
	unsigned char *buf = NULL;
	size_t len = 0;
	struct error err;

	ck_assert_int_eq(snapshot_encode_to_buffer(s, (void **)&buf, &len, &err), ERR_OK);
	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit += 7) {
			buf[i] ^= (unsigned char)(1u << bit);
			ck_assert_msg(snapshot_decode(buf, len, &d, &err) == ERR_IO,
				      "flip of bit %d of byte %zu accepted", bit, i);
			ck_assert_ptr_null(d);
			buf[i] ^= (unsigned char)(1u << bit);
		}
	}
	for (size_t cut = 0; cut < len; cut++) {
		ck_assert_msg(snapshot_decode(buf, cut, &d, &err) == ERR_IO, "%zu bytes accepted", cut);
		ck_assert_ptr_null(d);
	}
	ck_assert_int_eq(snapshot_decode(buf, len, &d, &err), ERR_OK);
	snapshot_free(d);
	free(buf);
	snapshot_free(s);
}
END_TEST

static void reseal(unsigned char *buf, size_t len)
{
	uint64_t h = XXH3_64bits(buf, len - 8);

	for (int i = 0; i < 8; i++)
		buf[len - 8 + i] = (unsigned char)(h >> (8 * i));
}

/* Visits everything a FUSE daemon could ask of a decoded snapshot. */
static void walk_all(const struct snapshot *d)
{
	char buf[4096];

	for (uint64_t ino = 1; ino <= snapshot_count(d); ino++) {
		struct snapshot_entry_info info;
		struct listing l = { 0 };

		stat_ok(d, ino, &info);
		ck_assert_uint_lt(info.parent, ino == 1 ? 2 : ino);
		ck_assert_int_eq(snapshot_object_key(d, ino, buf, sizeof(buf)), ERR_OK);
		ck_assert_int_eq(snapshot_path(d, ino, buf, sizeof(buf)), ERR_OK);
		ck_assert_uint_eq(snapshot_resolve_path(d, buf), ino);
		if (info.is_dir) {
			l.stop_after = 60;
			ck_assert_int_eq(snapshot_readdir(d, ino, 0, collect, &l), ERR_OK);
		}
	}
}

START_TEST(test_snapshot_decode_survives_malicious_input_with_a_valid_checksum)
{
	struct snapshot *s = sample(), *d = NULL;
	unsigned char *orig = NULL, *buf = NULL;
	size_t len = 0;
	struct error err;
	unsigned seed = 12345;
	int accepted = 0;

	ck_assert_int_eq(snapshot_encode_to_buffer(s, (void **)&orig, &len, &err), ERR_OK);
	buf = malloc(len);
	for (int round = 0; round < 20000; round++) {
		int flips = 1 + rand_r(&seed) % 4;
		size_t cut = len;
		enum error_code rc;

		memcpy(buf, orig, len);
		for (int f = 0; f < flips; f++) {
			/* After the magic, before the checksum. */
			size_t at = 8 + (size_t)rand_r(&seed) % (len - 16);

			buf[at] = rand_r(&seed) % 3 ? (unsigned char)rand_r(&seed)
						    : buf[at] ^ (unsigned char)(1u << (rand_r(&seed) % 8));
		}
		if (rand_r(&seed) % 8 == 0) {
			/* Drop some bytes in the middle, keep a resealed end. */
			size_t at = 48 + (size_t)rand_r(&seed) % (len - 64);
			size_t k = 1 + (size_t)rand_r(&seed) % 8;

			memmove(buf + at, buf + at + k, len - at - k);
			cut = len - k;
		}
		reseal(buf, cut);
		rc = snapshot_decode(buf, cut, &d, &err);
		ck_assert_msg(rc == ERR_OK || rc == ERR_IO || rc == ERR_UNSUPPORTED,
			      "round %d: %s", round, err.msg);
		if (rc == ERR_OK) {
			accepted++;
			walk_all(d);
			snapshot_free(d);
		} else {
			ck_assert_ptr_null(d);
		}
	}
	/* Some mutations (an mtime, a size, a letter of a name) are valid. */
	ck_assert_int_gt(accepted, 0);
	free(buf);
	free(orig);
	snapshot_free(s);
}
END_TEST

START_TEST(test_snapshot_decode_refuses_an_unknown_version)
{
	struct snapshot *s = sample(), *d = NULL;
	unsigned char *buf = NULL;
	size_t len = 0;
	struct error err;

	ck_assert_int_eq(snapshot_encode_to_buffer(s, (void **)&buf, &len, &err), ERR_OK);
	buf[8] = 2;
	reseal(buf, len);
	ck_assert_int_eq(snapshot_decode(buf, len, &d, &err), ERR_UNSUPPORTED);
	ck_assert_ptr_nonnull(strstr(err.msg, "version 2"));
	memcpy(buf, "NOTASNAP", 8);
	ck_assert_int_eq(snapshot_decode(buf, len, &d, &err), ERR_IO);
	ck_assert_ptr_nonnull(strstr(err.msg, "magic"));
	free(buf);
	snapshot_free(s);
}
END_TEST

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void rm_tree(const char *path)
{
	nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int count_entries(const char *dir)
{
	char cmd[256];
	FILE *p = NULL;
	int n = -1;

	snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", dir);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(fscanf(p, "%d", &n), 1);
	pclose(p);
	return n;
}

START_TEST(test_snapshot_save_load_round_trip)
{
	char dir[] = "/tmp/granary-snap-XXXXXX";
	struct snapshot *s = sample(), *d = NULL;
	struct error err;
	char *path = NULL, sub[128];
	struct stat sb;
	int fd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(snapshot_save(s, dir, &err), ERR_OK);
	path = snapshot_file_path(dir, "ds.v1", 42);
	snprintf(sub, sizeof(sub), "%s/ds.v1", dir);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq(count_entries(sub), 1); /* no temporary left behind */
	ck_assert_int_eq(snapshot_load(path, &d, &err), ERR_OK);
	assert_same(s, d);
	snapshot_free(d);
	/* Saving the same generation again replaces it. */
	ck_assert_int_eq(snapshot_save(s, dir, &err), ERR_OK);
	ck_assert_int_eq(count_entries(sub), 1);

	/* A truncated file is refused, naming it. */
	ck_assert_int_eq(truncate(path, sb.st_size - 3), 0);
	ck_assert_int_eq(snapshot_load(path, &d, &err), ERR_IO);
	ck_assert_ptr_null(d);
	ck_assert_ptr_nonnull(strstr(err.msg, path));
	fd = open(path, O_WRONLY | O_TRUNC);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(snapshot_load(path, &d, &err), ERR_IO);

	snprintf(sub, sizeof(sub), "%s/missing.snap", dir);
	ck_assert_int_eq(snapshot_load(sub, &d, &err), ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, sub));
	ck_assert_int_eq(snapshot_load(dir, &d, &err), ERR_INVALID);

	snprintf(sub, sizeof(sub), "%s/not-a-dir/deeper", dir);
	ck_assert_int_eq(snapshot_save(s, sub, &err), ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, sub));

	free(path);
	rm_tree(dir);
	snapshot_free(s);
}
END_TEST

START_TEST(test_snapshot_checks_dataset_names)
{
	static const char *const good[] = { "a", "imagenet", "data-set.v2", "0abc", "a.b.c",
					    "x-1-y" };
	static const char *const bad[] = { "", "Upper", "-a", "a-", "a..b", ".a", "a.", "a_b",
					   "a/b", "a.-b", "a-.b", "..", ".", "a b", "caf\xc3\xa9" };
	struct error err;
	char longname[300];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_msg(block_dataset_name_check(good[i], &err) == ERR_OK, "'%s': %s", good[i],
			      err.msg);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char quoted[32];

		ck_assert_msg(block_dataset_name_check(bad[i], &err) == ERR_INVALID, "'%s' accepted",
			      bad[i]);
		snprintf(quoted, sizeof(quoted), "'%s'", bad[i]);
		ck_assert_msg(strstr(err.msg, quoted), "'%s' not named: %s", bad[i], err.msg);
	}
	ck_assert_int_eq(block_dataset_name_check(NULL, &err), ERR_INVALID);
	memset(longname, 'a', 253);
	longname[253] = '\0';
	ck_assert_int_eq(block_dataset_name_check(longname, &err), ERR_OK);
	strcpy(longname + 253, "a");
	ck_assert_int_eq(block_dataset_name_check(longname, &err), ERR_INVALID);
}
END_TEST

static void put_file(const char *root, const char *key, size_t size)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", root, key);
	for (char *p = path + strlen(root) + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0755) < 0)
			ck_assert_int_eq(errno, EEXIST);
		*p = '/';
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
	close(fd);
}

START_TEST(test_snapshot_builds_from_a_file_store)
{
	static const char *const keys[] = { "train/c0/img-0.jpg", "train/c0/img-1.jpg",
					    "train/c1/img-2.jpg", "train/labels.txt",
					    "val/img-9.jpg", "top.txt" };
	char dir[] = "/tmp/granary-snapstore-XXXXXX";
	char uri[64], buf[256];
	struct store *st = NULL;
	struct snapshot *s = NULL;
	struct snapshot_totals t;
	struct snapshot_entry_info info;
	struct store_object head;
	struct error err;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		put_file(dir, keys[i], 10 * (i + 1));
	snprintf(uri, sizeof(uri), "file://%s", dir);
	ck_assert_int_eq(store_open(uri, NULL, &st, &err), ERR_OK);

	/* The whole directory. */
	ck_assert_msg(snapshot_build_from_store(st, "", "whole", uri, 1, &s, &err) == ERR_OK, "%s",
		      err.msg);
	snapshot_totals(s, &t);
	ck_assert_uint_eq(t.files, 6);
	ck_assert_uint_eq(t.dirs, 5); /* root, train, train/c0, train/c1, val */
	ck_assert_uint_eq(t.bytes, 10 + 20 + 30 + 40 + 50 + 60);
	snapshot_free(s);

	/* Under a prefix: keys come back without it, object keys with it. */
	ck_assert_int_eq(snapshot_build_from_store(st, "train/", "train", uri, 3, &s, &err), ERR_OK);
	snapshot_totals(s, &t);
	ck_assert_uint_eq(t.files, 4);
	ck_assert_uint_eq(t.dirs, 3);
	ck_assert_uint_eq(snapshot_resolve_path(s, "train"), 0);
	stat_ok(s, snapshot_resolve_path(s, "c1/img-2.jpg"), &info);
	ck_assert_uint_eq(info.size, 30);
	ck_assert_str_ne(info.etag, "");
	ck_assert_int_gt(info.mtime, 0);
	ck_assert_int_eq(snapshot_object_key(s, info.ino, buf, sizeof(buf)), ERR_OK);
	ck_assert_str_eq(buf, "train/c1/img-2.jpg");
	ck_assert_int_eq(store_head(st, buf, &head, &err), ERR_OK);
	ck_assert_str_eq(head.etag, info.etag);
	ck_assert_uint_eq(head.size, info.size);
	store_object_release(&head);
	snapshot_free(s);

	ck_assert_int_eq(snapshot_build_from_store(st, "train", "train", uri, 3, &s, &err),
			 ERR_INVALID);
	ck_assert_int_eq(snapshot_build_from_store(st, "", "Bad", uri, 3, &s, &err), ERR_INVALID);
	ck_assert_ptr_null(s);
	/* An empty prefix gives an empty but valid snapshot. */
	ck_assert_int_eq(snapshot_build_from_store(st, "nothing/", "none", uri, 3, &s, &err),
			 ERR_OK);
	ck_assert_uint_eq(snapshot_count(s), 1);
	snapshot_free(s);

	store_free(st);
	rm_tree(dir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("snapshot");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_snapshot_makes_directories_from_prefixes);
	tcase_add_test(tc, test_snapshot_folder_markers_make_directories_only);
	tcase_add_test(tc, test_snapshot_readdir_is_sorted_complete_and_resumable);
	tcase_add_test(tc, test_snapshot_lookup_finds_every_entry_of_a_larger_tree);
	tcase_add_test(tc, test_snapshot_resolves_paths);
	tcase_add_test(tc, test_snapshot_rebuilds_object_keys);
	tcase_add_test(tc, test_snapshot_refuses_keys_that_cannot_be_paths);
	tcase_add_test(tc, test_snapshot_refuses_sizes_no_object_can_have);
	tcase_add_test(tc, test_snapshot_refuses_bad_builder_arguments);
	tcase_add_test(tc, test_snapshot_keeps_the_directory_when_a_key_is_also_a_file);
	tcase_add_test(tc, test_snapshot_refuses_a_duplicate_key);
	tcase_add_test(tc, test_snapshot_encode_decode_round_trip);
	tcase_add_test(tc, test_snapshot_encode_reports_a_failed_write);
	tcase_add_test(tc, test_snapshot_decode_refuses_every_corruption_and_truncation);
	tcase_add_test(tc, test_snapshot_decode_survives_malicious_input_with_a_valid_checksum);
	tcase_add_test(tc, test_snapshot_decode_refuses_an_unknown_version);
	tcase_add_test(tc, test_snapshot_save_load_round_trip);
	tcase_add_test(tc, test_snapshot_checks_dataset_names);
	tcase_add_test(tc, test_snapshot_builds_from_a_file_store);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
