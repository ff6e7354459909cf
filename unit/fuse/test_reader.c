/*
 * test_reader.c - the mount's read path (fuse/reader.c) without FUSE or
 * root: fake block sources that serve, say "not here", fail, stall past
 * the deadline, answer short or find their copy corrupt, and what the
 * reader makes of each (which source serves, what is counted, what the
 * read returns and how long it takes).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/retry.h"
#include "fuse/reader.h"
#include "unit/check_main.h"

#define BS 4096u

enum behaviour {
	SERVE,    /* the object's bytes */
	ABSENT,   /* ERR_NOT_FOUND */
	FAIL,     /* ERR_UNAVAILABLE */
	STALL,    /* waits until the block's deadline, then ERR_TIMEOUT */
	SHORT,    /* ERR_OK with one byte less */
	CORRUPT,  /* finds its copy bad: blk->corrupt + 1, ERR_IO */
	GARBAGE,  /* ERR_OK with wrong bytes: only a checking source can tell */
	LEND,     /* lends the object's bytes where the read allows, else SERVE */
	LEND_SHORT, /* lends one byte less than asked */
};

struct fake {
	enum behaviour how;
	atomic_uint calls;
	unsigned last_readahead;
	uint64_t last_index, last_off;
	size_t last_len;
	unsigned saw_corrupt; /* blk->corrupt at the last call */
};

static char byte_at(uint64_t off)
{
	return (char)('a' + (off * 7 + off / 251) % 26);
}

/* The object's bytes, for LEND, filled by the tests that lend. */
static char whole[3 * BS + 100];
static atomic_uint loans_ended;

static void fake_loan_end(void *arg, void *held)
{
	(void)arg;
	(void)held;
	loans_ended++;
}

static enum error_code fake_read(void *ctx, struct reader_block *blk, uint64_t off, size_t len,
				 char *dst, size_t *got, unsigned readahead, struct error *err)
{
	struct fake *f = ctx;
	uint64_t base = blk->index * blk->block_size + off;

	f->calls++;
	f->last_readahead = readahead;
	f->last_index = blk->index;
	f->last_off = off;
	f->last_len = len;
	f->saw_corrupt = blk->corrupt;
	switch (f->how) {
	case ABSENT:
		return ERR_NOT_FOUND;
	case FAIL:
		return error_set(err, ERR_UNAVAILABLE, "fake worker down");
	case STALL:
		while (blk->until_ms && retry_now_ms() < blk->until_ms)
			retry_sleep_ms(5);
		return error_set(err, ERR_TIMEOUT, "fake stalled");
	case CORRUPT:
		blk->corrupt++;
		snprintf(blk->corrupt_cause, sizeof(blk->corrupt_cause), "fake checksum mismatch");
		return error_set(err, ERR_IO, "fake checksum mismatch");
	case GARBAGE:
		memset(dst, '#', len);
		*got = len;
		return ERR_OK;
	case LEND:
	case LEND_SHORT:
		if (blk->loan) {
			*blk->loan = (struct reader_loan){ .data = whole + base,
							   .end = fake_loan_end, .arg = f };
			*got = f->how == LEND_SHORT ? len - 1 : len;
			return ERR_OK;
		}
		/* fall through */
	case SHORT:
		if (f->how == SHORT)
			len--;
		/* fall through */
	case SERVE:
		for (size_t i = 0; i < len; i++)
			dst[i] = byte_at(base + i);
		*got = len;
		return ERR_OK;
	}
	return ERR_INTERNAL;
}

static struct fake fakes[3];

static struct reader *make_reader(unsigned n, uint64_t deadline_ms, enum behaviour a,
				  enum behaviour b, enum behaviour c)
{
	static const char *const names[] = { "first", "second", "third" };
	enum behaviour how[3] = { a, b, c };
	struct reader_config cfg = { .block_size = BS, .deadline_ms = deadline_ms,
				     .prefetch_blocks = 5, .nsources = n };
	struct reader *r = NULL;
	struct error err;

	for (unsigned i = 0; i < 3; i++) {
		memset(&fakes[i], 0, sizeof(fakes[i]));
		fakes[i].how = how[i];
		cfg.sources[i] = (struct reader_source){ .name = names[i], .read = fake_read,
							 .ctx = &fakes[i] };
	}
	ck_assert_int_eq(reader_new(&cfg, &r, &err), ERR_OK);
	return r;
}

static const struct reader_object obj = { .key = "train/shard-7.rec", .etag = "\"e\"",
					  .size = 3 * BS + 100 };

static void check_bytes(const char *buf, uint64_t off, size_t len)
{
	for (size_t i = 0; i < len; i++)
		ck_assert_msg(buf[i] == byte_at(off + i), "byte %llu wrong",
			      (unsigned long long)(off + i));
}

START_TEST(test_reader_splits_reads_at_block_boundaries)
{
	struct reader *r = make_reader(1, 0, SERVE, SERVE, SERVE);
	struct reader_stats st;
	char buf[3 * BS + 100];
	struct error err;
	size_t got = 0;

	/* from the middle of block 0 to past the end: 4 pieces, clipped */
	ck_assert_int_eq(reader_read(r, &obj, NULL, 100, sizeof(buf), buf, &got, &err), ERR_OK);
	ck_assert_uint_eq(got, obj.size - 100);
	check_bytes(buf, 100, got);
	ck_assert_uint_eq(fakes[0].calls, 4);
	ck_assert_uint_eq(fakes[0].last_index, 3);
	ck_assert_uint_eq(fakes[0].last_off, 0);
	ck_assert_uint_eq(fakes[0].last_len, 100); /* the short last block */
	/* at and past the end: nothing, no source asked */
	ck_assert_int_eq(reader_read(r, &obj, NULL, obj.size, 10, buf, &got, &err), ERR_OK);
	ck_assert_uint_eq(got, 0);
	ck_assert_uint_eq(fakes[0].calls, 4);
	reader_get_stats(r, &st);
	ck_assert_uint_eq(st.by_source[0], 4);
	ck_assert_uint_eq(st.bytes, obj.size - 100);
	reader_free(r);
}
END_TEST

START_TEST(test_reader_absent_passes_quietly_failure_counts_a_fallback)
{
	struct reader *r = make_reader(3, 0, ABSENT, FAIL, SERVE);
	struct reader_stats st;
	char buf[BS];
	struct error err;
	size_t got = 0;

	ck_assert_int_eq(reader_read(r, &obj, NULL, BS, BS, buf, &got, &err), ERR_OK);
	check_bytes(buf, BS, BS);
	reader_get_stats(r, &st);
	ck_assert_uint_eq(st.by_source[0], 0);
	ck_assert_uint_eq(st.by_source[1], 0);
	ck_assert_uint_eq(st.by_source[2], 1);
	ck_assert_uint_eq(st.fallbacks, 1); /* the failure, not the absence */
	ck_assert_uint_eq(st.failed, 0);
	reader_free(r);
}
END_TEST

START_TEST(test_reader_short_answer_goes_to_the_next_source)
{
	struct reader *r = make_reader(2, 0, SHORT, SERVE, SERVE);
	struct reader_stats st;
	char buf[2 * BS];
	struct error err;
	size_t got = 0;

	ck_assert_int_eq(reader_read(r, &obj, NULL, 0, sizeof(buf), buf, &got, &err), ERR_OK);
	ck_assert_uint_eq(got, sizeof(buf));
	check_bytes(buf, 0, got);
	reader_get_stats(r, &st);
	ck_assert_uint_eq(st.by_source[1], 2);
	ck_assert_uint_eq(st.fallbacks, 2);
	reader_free(r);

	/* short and nothing after it: the read fails, naming the source */
	r = make_reader(1, 0, SHORT, SERVE, SERVE);
	ck_assert_int_eq(reader_read(r, &obj, NULL, 0, 10, buf, &got, &err), ERR_IO);
	ck_assert_msg(strstr(err.msg, "source 'first' answered 9 bytes of 10"), "%s", err.msg);
	reader_free(r);
}
END_TEST

START_TEST(test_reader_corrupt_copy_is_read_again_from_the_next)
{
	struct reader *r = make_reader(3, 0, CORRUPT, SERVE, SERVE);
	struct reader_stats st;
	char buf[100];
	struct error err;
	size_t got = 0;

	ck_assert_int_eq(reader_read(r, &obj, NULL, 10, sizeof(buf), buf, &got, &err), ERR_OK);
	check_bytes(buf, 10, sizeof(buf));
	/* the next source knows a copy was bad (the peer source then asks
	 * the owner to check its own) */
	ck_assert_uint_eq(fakes[1].saw_corrupt, 1);
	ck_assert_uint_eq(fakes[2].calls, 0);
	reader_get_stats(r, &st);
	ck_assert_uint_eq(st.corrupt, 1);
	ck_assert_uint_eq(st.fallbacks, 0); /* counted as corrupt, not twice */
	reader_free(r);
}
END_TEST

START_TEST(test_reader_every_source_failing_fails_the_read_with_eio)
{
	struct reader *r = make_reader(2, 0, FAIL, FAIL, SERVE);
	struct reader_stream stream = { .caller = 1 };
	struct reader_stats st;
	char buf[BS];
	struct error err;
	size_t got = 0;

	ck_assert_int_eq(reader_read(r, &obj, &stream, 2 * BS, 10, buf, &got, &err), ERR_IO);
	ck_assert_msg(strstr(err.msg, "read 'train/shard-7.rec' block 2: fake worker down"), "%s",
		      err.msg);
	ck_assert_uint_eq(fakes[0].calls, 1);
	ck_assert_uint_eq(fakes[1].calls, 1);
	/* the kernel's immediate second ask fails at once, sources untouched */
	ck_assert_int_eq(reader_read(r, &obj, &stream, 2 * BS + 10, 10, buf, &got, &err), ERR_IO);
	ck_assert_ptr_nonnull(strstr(err.msg, "fake worker down"));
	ck_assert_uint_eq(fakes[0].calls, 1);
	reader_get_stats(r, &st);
	ck_assert_uint_eq(st.failed, 2);
	/* once: the same caller's next read of it (the application trying
	 * again, the file perhaps opened anew) asks the sources again */
	ck_assert_int_eq(reader_read(r, &obj, &stream, 2 * BS + 10, 10, buf, &got, &err), ERR_IO);
	ck_assert_uint_eq(fakes[0].calls, 2);
	/* an O_DIRECT read (caller 0), which the kernel never re-asks, and
	 * another caller's read of that block start afresh */
	stream.caller = 0;
	ck_assert_int_eq(reader_read(r, &obj, &stream, 2 * BS + 10, 10, buf, &got, &err), ERR_IO);
	ck_assert_uint_eq(fakes[0].calls, 3);
	stream.caller = 2;
	fakes[1].how = SERVE;
	ck_assert_int_eq(reader_read(r, &obj, &stream, 2 * BS + 10, 10, buf, &got, &err), ERR_OK);
	ck_assert_uint_eq(fakes[0].calls, 4);
	check_bytes(buf, 2 * BS + 10, 10);
	/* another block is read afresh */
	ck_assert_int_eq(reader_read(r, &obj, &stream, 0, 10, buf, &got, &err), ERR_OK);
	check_bytes(buf, 0, 10);
	reader_free(r);
}
END_TEST

START_TEST(test_reader_object_gone_everywhere_is_eio_counted_once_per_stream)
{
	struct reader *r = make_reader(2, 0, ABSENT, ABSENT, SERVE);
	struct reader_stream stream = { 0 };
	struct reader_stats st;
	char buf[10];
	struct error err;
	size_t got = 0;

	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(reader_read(r, &obj, &stream, (uint64_t)i * BS, 10, buf, &got, &err),
				 ERR_IO);
		ck_assert_ptr_nonnull(strstr(err.msg, "changed since the snapshot"));
	}
	reader_get_stats(r, &st);
	ck_assert_uint_eq(st.changed_objects, 1);
	ck_assert_uint_eq(st.fallbacks, 0);
	reader_free(r);
}
END_TEST

START_TEST(test_reader_stalled_source_ends_at_the_deadline_and_the_next_is_not_asked)
{
	struct reader *r = make_reader(2, 200, STALL, SERVE, SERVE);
	struct reader_stats st;
	char buf[10];
	struct error err;
	size_t got = 0;
	uint64_t t0 = retry_now_ms(), ms;

	ck_assert_int_eq(reader_read(r, &obj, NULL, 0, sizeof(buf), buf, &got, &err), ERR_IO);
	ms = retry_now_ms() - t0;
	ck_assert_msg(ms >= 200 && ms < 2000, "took %llu ms", (unsigned long long)ms);
	ck_assert_msg(strstr(err.msg, "deadline of 200 ms passed"), "%s", err.msg);
	ck_assert_uint_eq(fakes[1].calls, 0);
	reader_get_stats(r, &st);
	ck_assert_uint_eq(st.failed, 1);
	reader_free(r);
}
END_TEST

START_TEST(test_reader_serves_what_its_sources_serve)
{
	/* The reader does not check bytes itself: a source that serves
	 * garbage as good is believed. This is why every cache source
	 * checks its bytes against the block checksums (test_sources). */
	struct reader *r = make_reader(2, 0, GARBAGE, SERVE, SERVE);
	char buf[10];
	struct error err;
	size_t got = 0;

	ck_assert_int_eq(reader_read(r, &obj, NULL, 0, sizeof(buf), buf, &got, &err), ERR_OK);
	ck_assert_int_eq(buf[0], '#');
	ck_assert_uint_eq(fakes[1].calls, 0);
	reader_free(r);
}
END_TEST

START_TEST(test_reader_hints_read_ahead_once_reads_are_sequential)
{
	struct reader *r = make_reader(1, 0, SERVE, SERVE, SERVE);
	struct reader_stream stream = { 0 };
	char buf[BS];
	struct error err;
	size_t got = 0;

	/* the third read in a row that continues the last one hints */
	ck_assert_int_eq(reader_read(r, &obj, &stream, 5000, 1000, buf, &got, &err), ERR_OK);
	ck_assert_uint_eq(fakes[0].last_readahead, 0);
	ck_assert_int_eq(reader_read(r, &obj, &stream, 6000, 1000, buf, &got, &err), ERR_OK);
	ck_assert_uint_eq(fakes[0].last_readahead, 0);
	ck_assert_int_eq(reader_read(r, &obj, &stream, 7000, 1000, buf, &got, &err), ERR_OK);
	ck_assert_uint_eq(fakes[0].last_readahead, 2); /* 5, cut at the object's end (4 blocks) */
	/* a jump starts over */
	ck_assert_int_eq(reader_read(r, &obj, &stream, 3 * BS, 10, buf, &got, &err), ERR_OK);
	ck_assert_uint_eq(fakes[0].last_readahead, 0);
	/* in the last block, sequential reads hint nothing */
	ck_assert_int_eq(reader_read(r, &obj, &stream, 3 * BS + 10, 10, buf, &got, &err), ERR_OK);
	ck_assert_int_eq(reader_read(r, &obj, &stream, 3 * BS + 20, 10, buf, &got, &err), ERR_OK);
	ck_assert_uint_eq(fakes[0].last_readahead, 0);
	ck_assert_uint_eq(stream.sequential, 2);
	/* without a stream there are no hints */
	ck_assert_int_eq(reader_read(r, &obj, NULL, 0, 10, buf, &got, &err), ERR_OK);
	ck_assert_uint_eq(fakes[0].last_readahead, 0);
	/* requests of the kernel's read-ahead served out of order are still
	 * a sequential stream, and a late one does not move its end back */
	stream = (struct reader_stream){ 0 };
	ck_assert_int_eq(reader_read(r, &obj, &stream, 1000, 100, buf, &got, &err), ERR_OK);
	ck_assert_uint_eq(stream.sequential, 0);
	ck_assert_int_eq(reader_read(r, &obj, &stream, 1100, 100, buf, &got, &err), ERR_OK);
	ck_assert_int_eq(reader_read(r, &obj, &stream, 1300, 100, buf, &got, &err), ERR_OK);
	ck_assert_uint_eq(stream.sequential, 2);
	ck_assert_uint_eq(fakes[0].last_readahead, 3);
	ck_assert_int_eq(reader_read(r, &obj, &stream, 1200, 100, buf, &got, &err), ERR_OK);
	ck_assert_uint_eq(stream.sequential, 3);
	ck_assert_uint_eq(stream.next_off, 1400);
	/* six lengths on is a jump */
	ck_assert_int_eq(reader_read(r, &obj, &stream, 2000, 100, buf, &got, &err), ERR_OK);
	ck_assert_uint_eq(stream.sequential, 0);
	ck_assert_uint_eq(stream.next_off, 2100);
	/* and a fresh stream starts only where the last read ended */
	ck_assert_int_eq(reader_read(r, &obj, &stream, 2200, 100, buf, &got, &err), ERR_OK);
	ck_assert_uint_eq(stream.sequential, 0);
	reader_free(r);
}
END_TEST

START_TEST(test_reader_config_is_checked)
{
	struct reader_config cfg = { .block_size = BS, .nsources = 0 };
	struct reader *r = NULL;
	struct error err;

	ck_assert_int_eq(reader_new(&cfg, &r, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "needs 1 to 4 sources"));
	cfg.nsources = 1;
	cfg.sources[0] = (struct reader_source){ .name = "x", .read = fake_read, .ctx = &fakes[0] };
	cfg.block_size = 0;
	ck_assert_int_eq(reader_new(&cfg, &r, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "block size 0"));
}
END_TEST

START_TEST(test_reader_counts_into_the_mounts_counters_by_source_and_cause)
{
	static const char *const names[] = { "first", "second" };
	struct reader_config cfg = { .block_size = BS, .deadline_ms = 50, .nsources = 2 };
	struct mountstats *ms = NULL;
	struct mountstats_values v;
	struct reader_stream stream = { 0 };
	struct reader *r = NULL;
	char buf[2 * BS];
	struct error err;
	size_t got = 0;
	bool continued;

	ck_assert_int_eq(mountstats_open(NULL, names, 2, &ms, &continued, &err), ERR_OK);
	for (unsigned i = 0; i < 2; i++) {
		memset(&fakes[i], 0, sizeof(fakes[i]));
		cfg.sources[i] = (struct reader_source){ .name = names[i], .read = fake_read,
							 .ctx = &fakes[i] };
	}
	cfg.counters = &ms->c;
	ck_assert_int_eq(reader_new(&cfg, &r, &err), ERR_OK);
	/* Two blocks from the first source, then one from the second after
	 * the first fails. */
	fakes[0].how = SERVE;
	ck_assert_int_eq(reader_read(r, &obj, NULL, 0, 2 * BS, buf, &got, &err), ERR_OK);
	fakes[0].how = FAIL;
	fakes[1].how = SERVE;
	ck_assert_int_eq(reader_read(r, &obj, NULL, 0, 1000, buf, &got, &err), ERR_OK);
	/* Failures by cause: the last source failing, the deadline, a
	 * changed object (every source "not here"). */
	fakes[1].how = FAIL;
	ck_assert_int_eq(reader_read(r, &obj, NULL, 0, 10, buf, &got, &err), ERR_IO);
	fakes[1].how = STALL;
	ck_assert_int_eq(reader_read(r, &obj, NULL, 0, 10, buf, &got, &err), ERR_IO);
	fakes[0].how = ABSENT;
	fakes[1].how = ABSENT;
	ck_assert_int_eq(reader_read(r, &obj, &stream, 0, 10, buf, &got, &err), ERR_IO);
	mountstats_get(ms, &v);
	ck_assert_uint_eq(v.reads, 5);
	ck_assert_uint_eq(v.bytes, 2 * BS + 1000);
	ck_assert_uint_eq(v.source_blocks[0], 2);
	ck_assert_uint_eq(v.source_bytes[0], 2 * BS);
	ck_assert_uint_eq(v.source_blocks[1], 1);
	ck_assert_uint_eq(v.source_bytes[1], 1000);
	ck_assert_uint_eq(v.fallbacks[0], 3);
	ck_assert_uint_eq(v.errors[MOUNTSTATS_CAUSE_SOURCE], 1);
	ck_assert_uint_eq(v.errors[MOUNTSTATS_CAUSE_DEADLINE], 1);
	ck_assert_uint_eq(v.errors[MOUNTSTATS_CAUSE_CHANGED], 1);
	/* Every read in the histogram; the stalled one took the deadline. */
	{
		uint64_t n = 0;

		for (unsigned i = 0; i <= MOUNTSTATS_LATENCY_BOUNDS; i++)
			n += v.latency[i];
		ck_assert_uint_eq(n, 5);
		/* The stalled read waited out its 50 ms deadline (measured on
		 * the reader's clock, which starts a little after the
		 * deadline's). */
		ck_assert_uint_ge(v.latency_sum_ns, 45000000ull);
	}
	reader_free(r);
	mountstats_close(ms);
}
END_TEST


START_TEST(test_reader_lends_a_read_within_one_block_and_copies_one_across_two)
{
	struct reader *r = make_reader(2, 0, LEND, SERVE, SERVE);
	struct reader_loan loan = { 0 };
	struct error err;
	char buf[2 * BS];
	size_t got = 0;

	for (uint64_t i = 0; i < sizeof(whole); i++)
		whole[i] = byte_at(i);
	loans_ended = 0;
	/* within block 1: lent, buf untouched */
	memset(buf, '#', sizeof(buf));
	ck_assert_int_eq(reader_read_lend(r, &obj, NULL, BS + 100, 1000, buf, &loan, &got, &err),
			 ERR_OK);
	ck_assert_uint_eq(got, 1000);
	ck_assert_ptr_eq(loan.data, whole + BS + 100);
	ck_assert_int_eq(buf[0], '#');
	ck_assert_uint_eq(loans_ended, 0);
	reader_loan_end(&loan);
	ck_assert_uint_eq(loans_ended, 1);
	ck_assert_ptr_null(loan.data);
	reader_loan_end(&loan); /* nothing left to end */
	ck_assert_uint_eq(loans_ended, 1);
	/* across blocks 0 and 1: copied, nothing lent */
	ck_assert_int_eq(reader_read_lend(r, &obj, NULL, BS - 10, 20, buf, &loan, &got, &err),
			 ERR_OK);
	ck_assert_uint_eq(got, 20);
	ck_assert_ptr_null(loan.data);
	check_bytes(buf, BS - 10, 20);
	/* without a loan the same source copies */
	ck_assert_int_eq(reader_read(r, &obj, NULL, 2 * BS, 50, buf, &got, &err), ERR_OK);
	check_bytes(buf, 2 * BS, 50);
	ck_assert_uint_eq(loans_ended, 1);
	reader_free(r);

	/* A source that lends short has not served: its loan is ended and
	 * the next source copies. */
	r = make_reader(2, 0, LEND_SHORT, SERVE, SERVE);
	memset(buf, '#', sizeof(buf));
	ck_assert_int_eq(reader_read_lend(r, &obj, NULL, 10, 100, buf, &loan, &got, &err), ERR_OK);
	ck_assert_uint_eq(got, 100);
	ck_assert_ptr_null(loan.data);
	ck_assert_uint_eq(loans_ended, 2);
	check_bytes(buf, 10, 100);
	ck_assert_uint_eq(fakes[1].calls, 1);
	reader_free(r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("reader");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_reader_splits_reads_at_block_boundaries);
	tcase_add_test(tc, test_reader_absent_passes_quietly_failure_counts_a_fallback);
	tcase_add_test(tc, test_reader_short_answer_goes_to_the_next_source);
	tcase_add_test(tc, test_reader_corrupt_copy_is_read_again_from_the_next);
	tcase_add_test(tc, test_reader_every_source_failing_fails_the_read_with_eio);
	tcase_add_test(tc, test_reader_object_gone_everywhere_is_eio_counted_once_per_stream);
	tcase_add_test(tc, test_reader_stalled_source_ends_at_the_deadline_and_the_next_is_not_asked);
	tcase_add_test(tc, test_reader_serves_what_its_sources_serve);
	tcase_add_test(tc, test_reader_hints_read_ahead_once_reads_are_sequential);
	tcase_add_test(tc, test_reader_config_is_checked);
	tcase_add_test(tc, test_reader_counts_into_the_mounts_counters_by_source_and_cause);
	tcase_add_test(tc, test_reader_lends_a_read_within_one_block_and_copies_one_across_two);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
