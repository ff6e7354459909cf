/*
 * mountfs.c - the read-only dataset filesystem core.
 */
#include "fuse/mountfs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uthash.h>

struct mountfs_file {
	uint64_t ino;
	struct reader_object obj;  /* etag points into the snapshot */
	char *key;
	/* Open handles of the inode this daemon knows of, and reads in
	 * progress: the state goes when both are 0. Kept apart because a
	 * successor daemon only guesses the opens (handles of the previous
	 * daemon show up as reads), so releases may outnumber them; a read
	 * in progress must never lose its state to such a release.
	 * Protected by the lock of the inode's stripe. */
	int opens;
	int reading;
	struct reader_stream stream; /* protected by the stripe's lock */
	UT_hash_handle hh;
};

/*
 * The open files, cut into stripes by inode number, each with its own
 * lock and table: a read takes its stripe's lock twice (to find the state
 * and copy the stream, to store the stream and count down), and reads of
 * files in other stripes never wait for it. No global lock on the read
 * path.
 */
#define MOUNTFS_STRIPES 64

struct mountfs_stripe {
	pthread_mutex_t mu;
	struct mountfs_file *files; /* by ino; protected by mu */
} __attribute__((aligned(64)));

/* Without opens (mountfs_set_no_open), the states that reads made and
 * that no read holds are kept up to this many per stripe, the oldest
 * dropped first. */
#define MOUNTFS_IDLE_MAX 64

struct mountfs {
	struct snapshot *snap;
	struct mountfs_stripe stripes[MOUNTFS_STRIPES];
	bool no_open;
	struct reader *reader;
	uid_t uid;
	gid_t gid;
	mountfs_stats_fn stats_fn;
	void *stats_arg;
};

void mountfs_set_no_open(struct mountfs *fs)
{
	fs->no_open = true;
}

void mountfs_set_stats(struct mountfs *fs, mountfs_stats_fn fn, void *arg)
{
	fs->stats_fn = fn;
	fs->stats_arg = arg;
}

enum error_code mountfs_new(struct snapshot *snap, struct reader *reader,
			    uid_t uid, gid_t gid, struct mountfs **out,
			    struct error *err)
{
	struct mountfs *fs = calloc(1, sizeof(*fs));

	*out = NULL;
	if (!fs)
		return error_set(err, ERR_NOMEM, "mount: out of memory");
	fs->snap = snap;
	for (unsigned i = 0; i < MOUNTFS_STRIPES; i++)
		pthread_mutex_init(&fs->stripes[i].mu, NULL);
	fs->reader = reader;
	fs->uid = uid;
	fs->gid = gid;
	*out = fs;
	return ERR_OK;
}

static struct mountfs_stripe *stripe_of(struct mountfs *fs, uint64_t ino)
{
	return &fs->stripes[ino % MOUNTFS_STRIPES];
}

static void file_free(struct mountfs_file *f)
{
	free(f->key);
	free(f);
}

void mountfs_free(struct mountfs *fs)
{
	struct mountfs_file *f, *tmp;

	if (!fs)
		return;
	for (unsigned i = 0; i < MOUNTFS_STRIPES; i++) {
		struct mountfs_stripe *st = &fs->stripes[i];

		HASH_ITER(hh, st->files, f, tmp) {
			HASH_DEL(st->files, f);
			file_free(f);
		}
		pthread_mutex_destroy(&st->mu);
	}
	snapshot_free(fs->snap);
	free(fs);
}

const struct snapshot *mountfs_snapshot(const struct mountfs *fs)
{
	return fs->snap;
}

static void fill_attr(const struct mountfs *fs, const struct snapshot_entry_info *e,
		      struct mountfs_attr *out)
{
	memset(out, 0, sizeof(*out));
	out->ino = e->ino;
	out->is_dir = e->is_dir;
	out->size = e->size;
	out->mtime = e->mtime;
	out->uid = fs->uid;
	out->gid = fs->gid;
	if (e->is_dir) {
		out->mode = S_IFDIR | 0555;
		/* "." and the parent's entry; subdirectories' ".." are not
		 * counted: find(1) and du do not need exact link counts. */
		out->nlink = 2;
	} else {
		out->mode = S_IFREG | 0444;
		out->nlink = 1;
	}
}

enum error_code mountfs_getattr(struct mountfs *fs, uint64_t ino, struct mountfs_attr *out)
{
	struct snapshot_entry_info e;
	enum error_code rc = snapshot_stat(fs->snap, ino, &e);

	if (rc == ERR_OK)
		fill_attr(fs, &e, out);
	return rc;
}

enum error_code mountfs_lookup(struct mountfs *fs, uint64_t parent, const char *name,
			       struct mountfs_attr *out)
{
	uint64_t ino = snapshot_lookup(fs->snap, parent, name);

	if (ino == 0)
		return ERR_NOT_FOUND;
	return mountfs_getattr(fs, ino, out);
}

enum error_code mountfs_readdir(struct mountfs *fs, uint64_t dir, uint64_t offset,
				snapshot_readdir_fn fn, void *arg)
{
	return snapshot_readdir(fs->snap, dir, offset, fn, arg);
}

/* Object keys are at most 1024 bytes in S3; the prefix adds to that. */
#define KEY_MAX 4096

/* A new open-file state for a regular file. */
static enum error_code file_new(struct mountfs *fs, uint64_t ino, bool for_write,
				struct mountfs_file **out, struct error *err)
{
	struct snapshot_entry_info e;
	struct mountfs_file *f = NULL;
	char key[KEY_MAX];
	enum error_code rc;

	rc = snapshot_stat(fs->snap, ino, &e);
	if (rc != ERR_OK)
		return error_set(err, rc, "open inode %llu: not in the dataset",
				 (unsigned long long)ino);
	if (for_write)
		return error_set(err, ERR_READ_ONLY, "open '%s' for writing: the dataset is read-only",
				 e.name);
	if (e.is_dir)
		return error_set(err, ERR_INVALID, "open '%s': is a directory", e.name);
	rc = snapshot_object_key(fs->snap, ino, key, sizeof(key));
	if (rc != ERR_OK)
		return error_set(err, rc, "open '%s': object key too long", e.name);
	f = calloc(1, sizeof(*f));
	if (!f || !(f->key = strdup(key))) {
		free(f);
		return error_set(err, ERR_NOMEM, "open '%s': out of memory", e.name);
	}
	f->ino = ino;
	f->obj.key = f->key;
	f->obj.etag = e.etag;
	f->obj.size = e.size;
	f->obj.ino = ino;
	*out = f;
	return ERR_OK;
}

/*
 * Without opens nothing releases a state that a read made and left before
 * the file's end: at MOUNTFS_IDLE_MAX, the oldest that no read holds are
 * taken out of st (its lock held) and chained on *gone (through hh.next)
 * for the caller to free outside the lock.
 */
static void idle_trim(struct mountfs_stripe *st, struct mountfs_file **gone)
{
	struct mountfs_file *f, *tmp;
	unsigned n = HASH_COUNT(st->files);

	HASH_ITER(hh, st->files, f, tmp) {
		if (n < MOUNTFS_IDLE_MAX)
			break;
		if (f->reading > 0)
			continue;
		HASH_DEL(st->files, f);
		f->hh.next = *gone;
		*gone = f;
		n--;
	}
}

/* Finds ino's open state, creating it when missing; adds opens and
 * reading to its counts. */
static enum error_code file_get(struct mountfs *fs, uint64_t ino, bool for_write, int opens,
				int reading, struct mountfs_file **out, struct error *err)
{
	struct mountfs_stripe *st = stripe_of(fs, ino);
	struct mountfs_file *f = NULL, *made = NULL;
	enum error_code rc;

	pthread_mutex_lock(&st->mu);
	HASH_FIND(hh, st->files, &ino, sizeof(ino), f);
	if (f && !for_write) {
		f->opens += opens;
		f->reading += reading;
		pthread_mutex_unlock(&st->mu);
		*out = f;
		return ERR_OK;
	}
	pthread_mutex_unlock(&st->mu);
	rc = file_new(fs, ino, for_write, &made, err);
	if (rc != ERR_OK)
		return rc;
	pthread_mutex_lock(&st->mu);
	HASH_FIND(hh, st->files, &ino, sizeof(ino), f);
	if (!f) {
		f = made;
		made = NULL;
		if (fs->no_open)
			idle_trim(st, &made);
		HASH_ADD(hh, st->files, ino, sizeof(f->ino), f);
	}
	f->opens += opens;
	f->reading += reading;
	pthread_mutex_unlock(&st->mu);
	while (made) {
		struct mountfs_file *next = made->hh.next;

		file_free(made);
		made = next;
	}
	*out = f;
	return ERR_OK;
}

/* Takes f out of its stripe's table when nothing holds it (the stripe's
 * lock held); true when the caller must free it. */
static bool file_unused(struct mountfs_stripe *st, struct mountfs_file *f)
{
	if (f->opens > 0 || f->reading > 0)
		return false;
	HASH_DEL(st->files, f);
	return true;
}

enum error_code mountfs_open(struct mountfs *fs, uint64_t ino, bool for_write,
			     struct error *err)
{
	struct mountfs_file *f;

	return file_get(fs, ino, for_write, 1, 0, &f, err);
}

void mountfs_release(struct mountfs *fs, uint64_t ino)
{
	struct mountfs_stripe *st = stripe_of(fs, ino);
	struct mountfs_file *f = NULL;
	bool unused = false;

	/* Found and counted down under one lock: two releases of an inode
	 * must not both see the state, since the first may free it. */
	pthread_mutex_lock(&st->mu);
	HASH_FIND(hh, st->files, &ino, sizeof(ino), f);
	if (f) {
		if (f->opens > 0)
			f->opens--;
		unused = file_unused(st, f);
	}
	pthread_mutex_unlock(&st->mu);
	if (unused)
		file_free(f);
}

size_t mountfs_open_files(struct mountfs *fs)
{
	size_t n = 0;

	for (unsigned i = 0; i < MOUNTFS_STRIPES; i++) {
		pthread_mutex_lock(&fs->stripes[i].mu);
		n += HASH_COUNT(fs->stripes[i].files);
		pthread_mutex_unlock(&fs->stripes[i].mu);
	}
	return n;
}

static bool failed_differs(const struct reader_stream *a, const struct reader_stream *b)
{
	return a->failed_block1 != b->failed_block1 || a->failed_at_ms != b->failed_at_ms ||
	       a->failed_caller != b->failed_caller;
}

/*
 * Stores into f's stream (its stripe's lock held) what a read that began
 * from the copy start left in done: where it ended, as before, but the
 * failed read's state (reader.h) only when this read changed it. A read
 * that ends after a concurrent one failed must not undo that failure with
 * its stale copy, or the kernel's re-read of the failed block waits a
 * second deadline. When both failed, the lower block stays: requests that
 * the kernel's read-ahead sent together fail as one read would, at its
 * first block, the one the kernel asks again first. A re-read that used
 * up the state leaves alone a failure stored since.
 */
static void stream_store(struct reader_stream *into, const struct reader_stream *start,
			 const struct reader_stream *done)
{
	into->next_off = done->next_off;
	into->sequential = done->sequential;
	into->hinted1 = done->hinted1;
	into->changed_seen |= done->changed_seen; /* logged once per stream */
	if (!failed_differs(done, start))
		return;
	if (failed_differs(into, start) &&
	    (!done->failed_block1 ||
	     (into->failed_block1 && into->failed_block1 < done->failed_block1)))
		return;
	into->failed_block1 = done->failed_block1;
	into->failed_at_ms = done->failed_at_ms;
	into->failed_caller = done->failed_caller;
	into->failed_kind = done->failed_kind;
	memcpy(into->failed_cause, done->failed_cause, sizeof(into->failed_cause));
}

enum error_code mountfs_read(struct mountfs *fs, uint64_t ino, uint32_t caller, uint64_t off,
			     size_t len, char *dst, struct reader_loan *loan, size_t *got,
			     struct error *err)
{
	struct mountfs_stripe *st = stripe_of(fs, ino);
	struct mountfs_file *f = NULL;
	struct reader_stream start, stream;
	enum error_code rc;
	bool unused;

	*got = 0;
	/* The stream state is a hint: take a copy with the count, read
	 * without the lock, and store what this read changed with the count
	 * down (stream_store). Concurrent reads of one file then look
	 * non-sequential, which only costs a prefetch. */
	pthread_mutex_lock(&st->mu);
	HASH_FIND(hh, st->files, &ino, sizeof(ino), f);
	if (f) {
		f->reading++;
		stream = f->stream;
	}
	pthread_mutex_unlock(&st->mu);
	/* No open state: the handle was opened by a previous daemon. Count
	 * that open too, so its release balances it. */
	if (!f) {
		rc = file_get(fs, ino, false, 1, 1, &f, err);
		if (rc != ERR_OK)
			return rc;
		pthread_mutex_lock(&st->mu);
		stream = f->stream;
		pthread_mutex_unlock(&st->mu);
	}
	start = stream;
	stream.caller = caller;
	rc = reader_read_lend(fs->reader, &f->obj, &stream, off, len, dst, loan, got, err);
	if (rc != ERR_OK)
		error_wrap(err, "read '%s' at %llu", f->obj.key, (unsigned long long)off);
	pthread_mutex_lock(&st->mu);
	stream_store(&f->stream, &start, &stream);
	f->reading--;
	/* Without opens, a read to the file's end is as good as its release:
	 * no state stays for a file read whole. */
	if (fs->no_open && rc == ERR_OK && off + *got >= f->obj.size)
		f->opens = 0;
	unused = file_unused(st, f);
	pthread_mutex_unlock(&st->mu);
	if (unused)
		file_free(f);
	return rc;
}

static enum error_code put_value(const char *value, char *buf, size_t size, size_t *len)
{
	*len = strlen(value);
	if (size == 0)
		return ERR_OK;
	if (size < *len)
		return ERR_RANGE;
	memcpy(buf, value, *len);
	return ERR_OK;
}

enum error_code mountfs_getxattr(struct mountfs *fs, uint64_t ino, const char *name,
				 char *buf, size_t size, size_t *len)
{
	struct snapshot_entry_info e;
	char key[KEY_MAX];
	enum error_code rc = snapshot_stat(fs->snap, ino, &e);

	*len = 0;
	if (rc != ERR_OK)
		return rc;
	if (strcmp(name, MOUNTFS_XATTR_DATASET) == 0)
		return put_value(snapshot_name(fs->snap), buf, size, len);
	if (strcmp(name, MOUNTFS_XATTR_STATS) == 0 && ino == SNAPSHOT_ROOT_INO && fs->stats_fn) {
		char stats[1024];

		fs->stats_fn(stats, sizeof(stats), fs->stats_arg);
		return put_value(stats, buf, size, len);
	}
	if (e.is_dir)
		return ERR_NOT_FOUND;
	if (strcmp(name, MOUNTFS_XATTR_ETAG) == 0 && *e.etag)
		return put_value(e.etag, buf, size, len);
	if (strcmp(name, MOUNTFS_XATTR_KEY) == 0) {
		rc = snapshot_object_key(fs->snap, ino, key, sizeof(key));
		return rc == ERR_OK ? put_value(key, buf, size, len) : rc;
	}
	return ERR_NOT_FOUND;
}

enum error_code mountfs_listxattr(struct mountfs *fs, uint64_t ino, char *buf,
				  size_t size, size_t *len)
{
	struct snapshot_entry_info e;
	const char *names[4];
	size_t n = 0, total = 0;
	enum error_code rc = snapshot_stat(fs->snap, ino, &e);

	*len = 0;
	if (rc != ERR_OK)
		return rc;
	names[n++] = MOUNTFS_XATTR_DATASET;
	if (ino == SNAPSHOT_ROOT_INO && fs->stats_fn)
		names[n++] = MOUNTFS_XATTR_STATS;
	if (!e.is_dir) {
		if (*e.etag)
			names[n++] = MOUNTFS_XATTR_ETAG;
		names[n++] = MOUNTFS_XATTR_KEY;
	}
	for (size_t i = 0; i < n; i++)
		total += strlen(names[i]) + 1;
	*len = total;
	if (size == 0)
		return ERR_OK;
	if (size < total)
		return ERR_RANGE;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(names[i]) + 1;

		memcpy(buf, names[i], l);
		buf += l;
	}
	return ERR_OK;
}

void mountfs_statfs(struct mountfs *fs, struct mountfs_statfs *out)
{
	struct snapshot_totals t;

	snapshot_totals(fs->snap, &t);
	memset(out, 0, sizeof(*out));
	out->bsize = 4096;
	out->blocks = (t.bytes + 4095) / 4096;
	out->files = snapshot_count(fs->snap);
	out->namemax = SNAPSHOT_NAME_MAX;
}
