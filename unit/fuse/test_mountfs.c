/*
 * test_mountfs.c - fuse/mountfs.c without FUSE: opens, reads through a
 * fake source, and the open-file state across a takeover:
 * a successor daemon meets handles it never opened (their first read makes
 * the state) and releases it cannot match, while reads run in other
 * threads. The state must never be freed twice or under a read.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "fuse/mountfs.h"
#include "unit/check_main.h"

#define FILE_SIZE 8192

/* A source that serves a fixed pattern; with gate set, each read waits
 * until the test opens it. */
struct gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool closed;    /* protected by mu */
	int entered;    /* reads waiting at the gate; protected by mu */
	/* What the last read asked; protected by mu. */
	unsigned last_readahead;
	char last_key[64];
	bool fail;      /* answer ERR_UNAVAILABLE; protected by mu */
	/* A block that passes the closed gate (index + 1; 0 = none) and
	 * the reads asked of the source; protected by mu. */
	uint64_t open_block1;
	unsigned calls;
};

static struct gate gate = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static char pattern(uint64_t off)
{
	return (char)('a' + off % 23);
}

static enum error_code gated_read(void *ctx, struct reader_block *blk, uint64_t off,
				  size_t len, char *dst, size_t *got, unsigned readahead,
				  struct error *err)
{
	struct gate *g = ctx;
	uint64_t base = blk->index * blk->block_size + off;

	pthread_mutex_lock(&g->mu);
	g->calls++;
	g->last_readahead = readahead;
	snprintf(g->last_key, sizeof(g->last_key), "%s", blk->obj->key);
	if (!g->fail) {
		g->entered++;
		pthread_cond_broadcast(&g->cv);
		while (g->closed && g->open_block1 != blk->index + 1)
			pthread_cond_wait(&g->cv, &g->mu);
		g->entered--;
	}
	/* fail, set before the read or while it waited at the gate */
	if (g->fail) {
		pthread_mutex_unlock(&g->mu);
		return error_set(err, ERR_UNAVAILABLE, "worker gone");
	}
	pthread_mutex_unlock(&g->mu);
	for (size_t i = 0; i < len; i++)
		dst[i] = pattern(base + i);
	*got = len;
	return ERR_OK;
}

static struct mountfs *fs;
static struct reader *rd;
static uint64_t ino;

static void setup(void)
{
	struct reader_config cfg = { .block_size = 4096, .prefetch_blocks = 3, .nsources = 1 };
	struct snapshot_builder *b = NULL;
	struct snapshot *snap = NULL;
	struct error err;

	cfg.sources[0] = (struct reader_source){ .name = "gate", .read = gated_read, .ctx = &gate };
	ck_assert_int_eq(snapshot_builder_new("ds", "s3://bucket/p/", 1, &b, &err), ERR_OK);
	ck_assert_int_eq(snapshot_builder_add(b, "f.bin", FILE_SIZE, "etag", 1, &err), ERR_OK);
	ck_assert_int_eq(snapshot_builder_finish(b, &snap, &err), ERR_OK);
	ck_assert_int_eq(reader_new(&cfg, &rd, &err), ERR_OK);
	ck_assert_int_eq(mountfs_new(snap, rd, 0, 0, &fs, &err), ERR_OK);
	ino = snapshot_lookup(mountfs_snapshot(fs), 1, "f.bin");
	ck_assert_uint_ne(ino, 0);
	gate.closed = false;
	gate.fail = false;
	gate.open_block1 = 0;
	gate.calls = 0;
}

static void teardown(void)
{
	mountfs_free(fs);
	reader_free(rd);
	fs = NULL;
	rd = NULL;
}

struct read_call {
	pthread_t t;
	enum error_code rc;
	size_t got;
	char buf[FILE_SIZE];
};

static void *read_main(void *arg)
{
	struct read_call *c = arg;
	struct error err;

	c->rc = mountfs_read(fs, ino, 1, 0, FILE_SIZE, c->buf, NULL, &c->got, &err);
	return NULL;
}

static void check_bytes(const struct read_call *c)
{
	ck_assert_int_eq(c->rc, ERR_OK);
	ck_assert_uint_eq(c->got, FILE_SIZE);
	for (size_t i = 0; i < FILE_SIZE; i++)
		ck_assert_int_eq(c->buf[i], pattern(i));
}

/* A successor: two handles of the previous daemon on one inode. The first
 * read makes the state and counts one open; both releases arrive while that
 * read still runs. The state must stay until the read is done. */
START_TEST(test_mountfs_state_outlives_releases_during_a_read)
{
	struct read_call c = { 0 };

	pthread_mutex_lock(&gate.mu);
	gate.closed = true;
	pthread_mutex_unlock(&gate.mu);
	pthread_create(&c.t, NULL, read_main, &c);
	pthread_mutex_lock(&gate.mu);
	while (gate.entered == 0)
		pthread_cond_wait(&gate.cv, &gate.mu);
	pthread_mutex_unlock(&gate.mu);

	mountfs_release(fs, ino);
	mountfs_release(fs, ino);
	ck_assert_uint_eq(mountfs_open_files(fs), 1);

	pthread_mutex_lock(&gate.mu);
	gate.closed = false;
	pthread_cond_broadcast(&gate.cv);
	pthread_mutex_unlock(&gate.mu);
	pthread_join(c.t, NULL);
	check_bytes(&c);
	/* Nothing holds it any more: gone, and a later release is ignored. */
	ck_assert_uint_eq(mountfs_open_files(fs), 0);
	mountfs_release(fs, ino);
	ck_assert_uint_eq(mountfs_open_files(fs), 0);
}
END_TEST

/* Opens, reads and releases balance: the state goes with the last release. */
START_TEST(test_mountfs_state_goes_with_the_last_release)
{
	struct read_call c = { 0 };
	struct error err;

	ck_assert_int_eq(mountfs_open(fs, ino, false, &err), ERR_OK);
	ck_assert_int_eq(mountfs_open(fs, ino, false, &err), ERR_OK);
	read_main(&c);
	check_bytes(&c);
	mountfs_release(fs, ino);
	ck_assert_uint_eq(mountfs_open_files(fs), 1);
	mountfs_release(fs, ino);
	ck_assert_uint_eq(mountfs_open_files(fs), 0);
}
END_TEST

#define HAMMER_THREADS 4
#define HAMMER_ROUNDS 20000

static atomic_int hammer_errors;

/* Successor-like traffic: reads of handles never opened here, opens, and
 * more releases than opens, all on one inode from several threads. */
static void *hammer(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;
	struct error err;
	char buf[64];
	size_t got;

	for (int i = 0; i < HAMMER_ROUNDS; i++) {
		switch (rand_r(&seed) % 3) {
		case 0:
			if (mountfs_open(fs, ino, false, &err) != ERR_OK)
				atomic_fetch_add(&hammer_errors, 1);
			break;
		case 1:
			if (mountfs_read(fs, ino, 1, (uint64_t)(rand_r(&seed) % 4096), sizeof(buf), buf,
					 NULL, &got, &err) != ERR_OK ||
			    got != sizeof(buf))
				atomic_fetch_add(&hammer_errors, 1);
			break;
		default:
			mountfs_release(fs, ino);
		}
	}
	return NULL;
}

START_TEST(test_mountfs_racing_releases_and_reads_stay_sound)
{
	pthread_t t[HAMMER_THREADS];

	atomic_store(&hammer_errors, 0);
	for (uintptr_t i = 0; i < HAMMER_THREADS; i++)
		pthread_create(&t[i], NULL, hammer, (void *)(i + 1));
	for (int i = 0; i < HAMMER_THREADS; i++)
		pthread_join(t[i], NULL);
	ck_assert_int_eq(atomic_load(&hammer_errors), 0);
	/* Whatever opens are left, releasing them all empties the table. */
	for (int i = 0; i < HAMMER_THREADS * HAMMER_ROUNDS && mountfs_open_files(fs); i++)
		mountfs_release(fs, ino);
	ck_assert_uint_eq(mountfs_open_files(fs), 0);
}
END_TEST

START_TEST(test_mountfs_open_refuses_writes_directories_and_strangers)
{
	char buf[16];
	struct error err;
	size_t got = 0;

	ck_assert_int_eq(mountfs_open(fs, ino, true, &err), ERR_READ_ONLY);
	ck_assert_ptr_nonnull(strstr(err.msg, "read-only"));
	ck_assert_int_eq(mountfs_open(fs, SNAPSHOT_ROOT_INO, false, &err), ERR_INVALID);
	ck_assert_int_eq(mountfs_open(fs, 9999, false, &err), ERR_NOT_FOUND);
	ck_assert_int_eq(mountfs_read(fs, 9999, 1, 0, sizeof(buf), buf, NULL, &got, &err), ERR_NOT_FOUND);
	ck_assert_uint_eq(mountfs_open_files(fs), 0);
}
END_TEST

/* The reader gets the object's key in the bucket (the dataset prefix in
 * front of the path) and the handle's stream, kept between reads: the
 * third read in a row carries the read-ahead hint. */
START_TEST(test_mountfs_reads_keep_the_stream_of_the_handle)
{
	char buf[1000];
	struct error err;
	size_t got = 0;

	ck_assert_int_eq(mountfs_open(fs, ino, false, &err), ERR_OK);
	for (int i = 1; i <= 3; i++) {
		ck_assert_int_eq(mountfs_read(fs, ino, 1, (uint64_t)i * 1000, sizeof(buf), buf, NULL, &got,
					      &err), ERR_OK);
		ck_assert_uint_eq(got, sizeof(buf));
		ck_assert_int_eq(buf[0], pattern((uint64_t)i * 1000));
	}
	ck_assert_str_eq(gate.last_key, "p/f.bin");
	ck_assert_uint_eq(gate.last_readahead, 1); /* 3, cut at the file's end: one block after this one */
	ck_assert_int_eq(mountfs_read(fs, ino, 1, FILE_SIZE, sizeof(buf), buf, NULL, &got, &err), ERR_OK);
	ck_assert_uint_eq(got, 0);
	mountfs_release(fs, ino);
	ck_assert_uint_eq(mountfs_open_files(fs), 0);
}
END_TEST

START_TEST(test_mountfs_failed_read_names_the_object_and_offset)
{
	char buf[100];
	struct error err;
	size_t got = 0;

	gate.fail = true;
	ck_assert_int_eq(mountfs_open(fs, ino, false, &err), ERR_OK);
	ck_assert_int_eq(mountfs_read(fs, ino, 1, 4096, sizeof(buf), buf, NULL, &got, &err), ERR_IO);
	ck_assert_msg(strstr(err.msg, "read 'p/f.bin' at 4096") && strstr(err.msg, "worker gone"),
		      "%s", err.msg);
	mountfs_release(fs, ino);
}
END_TEST

struct block_call {
	pthread_t t;
	uint64_t index;
	enum error_code rc;
	char buf[4096];
};

static void *read_block_main(void *arg)
{
	struct block_call *c = arg;
	struct error err;
	size_t got;

	c->rc = mountfs_read(fs, ino, 1, c->index * 4096, sizeof(c->buf), c->buf, NULL, &got, &err);
	return NULL;
}

/*
 * The kernel's read-ahead has blocks 0 and 1 of a file in flight as two
 * requests of one caller, both begun before either ended. Block 0's read
 * fails first; block 1's ends after it, failed too when second_fails,
 * else served. The kernel then asks again for block 0: that read fails
 * at once, without asking the source (which would cost it a second
 * deadline), however block 1's read ended.
 */
static void reread_after_overlapping_reads(bool second_fails)
{
	struct block_call c0 = { .index = 0 }, c1 = { .index = 1 };
	char buf[100];
	struct error err;
	size_t got = 0;
	unsigned calls;

	ck_assert_int_eq(mountfs_open(fs, ino, false, &err), ERR_OK);
	pthread_mutex_lock(&gate.mu);
	gate.closed = true;
	pthread_mutex_unlock(&gate.mu);
	pthread_create(&c0.t, NULL, read_block_main, &c0);
	pthread_create(&c1.t, NULL, read_block_main, &c1);
	pthread_mutex_lock(&gate.mu);
	while (gate.entered < 2)
		pthread_cond_wait(&gate.cv, &gate.mu);
	gate.fail = true;
	gate.open_block1 = 1;
	pthread_cond_broadcast(&gate.cv);
	pthread_mutex_unlock(&gate.mu);
	pthread_join(c0.t, NULL);
	ck_assert_int_eq(c0.rc, ERR_IO);

	pthread_mutex_lock(&gate.mu);
	gate.fail = second_fails;
	gate.closed = false;
	pthread_cond_broadcast(&gate.cv);
	pthread_mutex_unlock(&gate.mu);
	pthread_join(c1.t, NULL);
	ck_assert_int_eq(c1.rc, second_fails ? ERR_IO : ERR_OK);

	pthread_mutex_lock(&gate.mu);
	gate.fail = true;
	calls = gate.calls;
	pthread_mutex_unlock(&gate.mu);
	ck_assert_int_eq(mountfs_read(fs, ino, 1, 0, sizeof(buf), buf, NULL, &got, &err), ERR_IO);
	ck_assert_msg(strstr(err.msg, "block 0") && strstr(err.msg, "worker gone"), "%s", err.msg);
	ck_assert_uint_eq(gate.calls, calls);
	mountfs_release(fs, ino);
}

START_TEST(test_mountfs_reread_fails_at_once_after_a_later_read_served)
{
	reread_after_overlapping_reads(false);
}
END_TEST

START_TEST(test_mountfs_reread_fails_at_once_after_a_later_read_failed)
{
	reread_after_overlapping_reads(true);
}
END_TEST

/* Without opens (FUSE no_open): reads make the state and keep the stream
 * between them, and a read to the file's end ends it. */
START_TEST(test_mountfs_without_opens_a_read_to_the_end_ends_the_state)
{
	char buf[1000];
	struct error err;
	size_t got = 0;

	mountfs_set_no_open(fs);
	for (int i = 1; i <= 3; i++) {
		ck_assert_int_eq(mountfs_read(fs, ino, 1, (uint64_t)i * 1000, sizeof(buf), buf, NULL, &got,
					      &err), ERR_OK);
		ck_assert_int_eq(buf[0], pattern((uint64_t)i * 1000));
		ck_assert_uint_eq(mountfs_open_files(fs), 1);
	}
	ck_assert_uint_eq(gate.last_readahead, 1); /* the stream stayed between reads */
	ck_assert_int_eq(mountfs_read(fs, ino, 1, FILE_SIZE - 100, sizeof(buf), buf, NULL, &got, &err),
			 ERR_OK);
	ck_assert_uint_eq(got, 100);
	ck_assert_uint_eq(mountfs_open_files(fs), 0);
	/* a release that never had an open changes nothing */
	mountfs_release(fs, ino);
	ck_assert_uint_eq(mountfs_open_files(fs), 0);
}
END_TEST

/* Files read only in part leave their states: they are bounded (64 in
 * each of the 64 stripes), the oldest dropped, and every read still
 * serves the right bytes. */
START_TEST(test_mountfs_without_opens_the_states_left_are_bounded)
{
	enum { FILES = 64 * 64 + 200 };
	struct snapshot_builder *b = NULL;
	struct snapshot *snap = NULL;
	struct mountfs *many = NULL;
	struct error err;
	char name[32], buf[100];
	size_t got = 0;

	ck_assert_int_eq(snapshot_builder_new("ds", "s3://bucket/p/", 1, &b, &err), ERR_OK);
	for (int i = 0; i < FILES; i++) {
		snprintf(name, sizeof(name), "f%05d.bin", i);
		ck_assert_int_eq(snapshot_builder_add(b, name, FILE_SIZE, "etag", 1, &err), ERR_OK);
	}
	ck_assert_int_eq(snapshot_builder_finish(b, &snap, &err), ERR_OK);
	ck_assert_int_eq(mountfs_new(snap, rd, 0, 0, &many, &err), ERR_OK);
	mountfs_set_no_open(many);
	for (int i = 0; i < FILES; i++) {
		uint64_t f;

		snprintf(name, sizeof(name), "f%05d.bin", i);
		f = snapshot_lookup(mountfs_snapshot(many), 1, name);
		ck_assert_uint_ne(f, 0);
		ck_assert_int_eq(mountfs_read(many, f, 1, 10, sizeof(buf), buf, NULL, &got, &err), ERR_OK);
		ck_assert_uint_eq(got, sizeof(buf));
		ck_assert_int_eq(buf[0], pattern(10));
		if (i == 100)
			ck_assert_uint_eq(mountfs_open_files(many), 101);
	}
	ck_assert_uint_eq(mountfs_open_files(many), 64 * 64);
	mountfs_free(many);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("mountfs");
	TCase *tc = tcase_create("open_state");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_mountfs_state_outlives_releases_during_a_read);
	tcase_add_test(tc, test_mountfs_state_goes_with_the_last_release);
	tcase_add_test(tc, test_mountfs_racing_releases_and_reads_stay_sound);
	tcase_add_test(tc, test_mountfs_open_refuses_writes_directories_and_strangers);
	tcase_add_test(tc, test_mountfs_reads_keep_the_stream_of_the_handle);
	tcase_add_test(tc, test_mountfs_failed_read_names_the_object_and_offset);
	tcase_add_test(tc, test_mountfs_reread_fails_at_once_after_a_later_read_served);
	tcase_add_test(tc, test_mountfs_reread_fails_at_once_after_a_later_read_failed);
	tcase_add_test(tc, test_mountfs_without_opens_a_read_to_the_end_ends_the_state);
	tcase_add_test(tc, test_mountfs_without_opens_the_states_left_are_bounded);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
