/*
 * blockstore.c - block files under DIR/blocks, an in-memory index (uthash
 * keyed by the 16-byte block hash), two LRU lists and TinyLFU admission.
 *
 * An entry moves through three states, always under bs->mu:
 *   WRITING  reserved by write_begin. It is in the index only so that a
 *            second writer of the same block gets ERR_EXISTS; get misses.
 *   LIVE     committed: in the index and in bs->lru or bs->pinned.
 *   DYING    chosen for removal (eviction, drop, failed verify). It stays
 *            in the index until its file is unlinked, outside the mutex:
 *            were it gone from the index first, a new writer of the same
 *            block could rename its file into place just before that unlink
 *            and lose it.
 * An entry that refs still hold outlives the index and is freed at the last
 * put. Pinned blocks live on their own list, so that looking for victims
 * never walks over them.
 *
 * Space: used counts the files of LIVE entries, reserved the reservations
 * of writers; victims leave used when they turn DYING, and write_begin
 * unlinks them before it returns, so the bytes on disk stay within
 * used + reserved <= capacity.
 */
#include "cache/blockstore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* Out of memory while adding leaves the element's hh.tbl NULL instead of
 * exiting the process. */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#include "cache/sketch.h"
#include "common/crc32c.h"
#include "common/fileio.h"
#include "common/cpu.h"
#include "common/log.h"

#define DISK_UNIT 4096
/* A writer starts the writeback of its data every this many bytes, so
 * that little is left to wait for at its commit (see there). */
#define WRITEBACK_STEP (1u << 20)
#define DEFAULT_BLOCK_SIZE (4u << 20)
/* One warning per interval for blocks that fail their checksums. */
#define CORRUPT_LOG_MS 10000
/*
 * Header reads wait on the disk, not the CPU: with a cold cache the number
 * of reads in flight sets the pace. On a 2-vCPU VM, 100,000 blocks took
 * about 3 s with 4 threads, 1.6 s with 16 and 1.2-1.6 s with 32; warm, the
 * count hardly matters (0.25 s). So: 4 per CPU, at least 32, at most 64.
 */
#define REBUILD_THREADS_PER_CPU 4
#define REBUILD_MIN_THREADS 32
#define REBUILD_MAX_THREADS 64

enum entry_state { ENTRY_WRITING, ENTRY_LIVE, ENTRY_DYING };

struct dataset {
	char *name;                    /* immutable; the key in bs->datasets */
	enum blockstore_policy policy; /* protected by bs->mu */
	bool pin;                      /* protected by bs->mu */
	uint64_t bytes;                /* data of its LIVE blocks; protected by bs->mu */
	UT_hash_handle hh;             /* protected by bs->mu */
};

struct entry;

struct blockstore_ref {
	struct entry *e; /* immutable: the entry this is embedded in */
};

struct entry {
	uint8_t hash[BLOCK_HASH_LEN]; /* immutable; the index key */
	UT_hash_handle hh;                 /* protected by bs->mu */
	/* LRU neighbours while LIVE (head = most recent); while DYING, next
	 * chains the victims one caller is removing. Protected by bs->mu. */
	struct entry *prev, *next;
	struct dataset *ds;        /* immutable; datasets live as long as bs */
	enum entry_state state;    /* protected by bs->mu */
	bool in_index;             /* protected by bs->mu */
	uint32_t refs;             /* protected by bs->mu */
	int fd;                    /* protected by bs->mu; open while refs > 0 */
	uint64_t data_len;         /* set before LIVE, then immutable */
	uint64_t disk;             /* file bytes rounded up to DISK_UNIT; as data_len */
	int64_t mtime_ns;          /* only while rebuilding */
	struct blockstore_ref ref; /* what get hands out; counted by refs */
};

struct lru {
	struct entry *head, *tail;
};

struct blockstore {
	char *dir;                  /* immutable */
	int lock_fd;                /* immutable: DIR/.lock, flock'd while open */
	char dir_id[BLOCK_DIR_ID_LEN + 1]; /* immutable: the id in DIR/.lock, or "" */
	int blocks_fd;              /* immutable: DIR/blocks */
	int tmp_fd;                 /* immutable: DIR/tmp */
	uint64_t capacity;          /* lowered by blockstore_disk_full; protected by mu */
	uint64_t block_file;        /* immutable: disk bytes of a usual block */
	pthread_mutex_t mu;
	struct entry *index;        /* protected by mu */
	struct dataset *datasets;   /* protected by mu */
	struct lru lru;             /* unpinned LIVE entries; protected by mu */
	struct lru pinned;          /* pinned LIVE entries; protected by mu */
	struct sketch *sketch;      /* protected by mu */
	uint64_t used, reserved;    /* bytes; protected by mu */
	struct blockstore_stats st; /* counters only; protected by mu */
	atomic_uint_fast64_t tmp_seq; /* makes temp names unique */
	struct log_limiter corrupt_log;
};

struct blockstore_writer {
	struct blockstore *bs;
	struct entry *e; /* WRITING, in the index */
	int fd;
	bool failed;     /* an append failed: commit must not publish */
	uint64_t max_len, written, reserved;
	uint64_t flushing; /* data bytes whose writeback has been started */
	uint32_t chunk_size;
	uint32_t crc;    /* CRC32C state of the chunk being written */
	uint32_t crcs[BLOCK_CHUNKS_MAX];
	char tmp_name[BLOCK_HASH_HEX + 48];
	/* Filled at write_begin but for data length, checksums and time. */
	uint8_t header[BLOCK_HEADER_SIZE];
};

/* --- sizes --- */

static uint64_t disk_size(uint64_t data_len)
{
	return (BLOCK_HEADER_SIZE + data_len + DISK_UNIT - 1) / DISK_UNIT * DISK_UNIT;
}

/* --- lists, index and datasets; all *_locked under bs->mu --- */

static struct lru *dataset_list_locked(struct blockstore *bs, const struct dataset *ds)
{
	return ds->pin ? &bs->pinned : &bs->lru;
}

static struct lru *entry_list_locked(struct blockstore *bs, const struct entry *e)
{
	return dataset_list_locked(bs, e->ds);
}

static void lru_remove(struct lru *l, struct entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		l->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		l->tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_push_head(struct lru *l, struct entry *e)
{
	e->prev = NULL;
	e->next = l->head;
	if (l->head)
		l->head->prev = e;
	else
		l->tail = e;
	l->head = e;
}

static struct entry *entry_new(void)
{
	struct entry *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	e->fd = -1;
	e->ref.e = e;
	return e;
}

/* Adds e to the index; -1 if out of memory. */
static int index_add_locked(struct blockstore *bs, struct entry *e)
{
	HASH_ADD(hh, bs->index, hash, BLOCK_HASH_LEN, e);
	if (!e->hh.tbl)
		return -1;
	e->in_index = true;
	return 0;
}

/* Takes e out of the index; true if nothing holds it and it can be freed. */
static bool index_remove_locked(struct blockstore *bs, struct entry *e)
{
	HASH_DEL(bs->index, e);
	e->in_index = false;
	return e->refs == 0;
}

/* A LIVE entry turns DYING: off its list and out of the space count. */
static void entry_kill_locked(struct blockstore *bs, struct entry *e)
{
	lru_remove(entry_list_locked(bs, e), e);
	e->state = ENTRY_DYING;
	bs->used -= e->disk;
	e->ds->bytes -= e->data_len;
	bs->st.blocks--;
}

static struct dataset *dataset_find_locked(struct blockstore *bs, const char *name, size_t len)
{
	struct dataset *ds = NULL;

	HASH_FIND(hh, bs->datasets, name, len, ds);
	return ds;
}

/* Finds or creates (LRU, unpinned) the record of a dataset; NULL if out of
 * memory. */
static struct dataset *dataset_get_locked(struct blockstore *bs, const char *name, size_t len)
{
	struct dataset *ds = dataset_find_locked(bs, name, len);

	if (ds)
		return ds;
	ds = calloc(1, sizeof(*ds));
	if (!ds)
		return NULL;
	ds->name = strndup(name, len);
	if (!ds->name)
		goto fail;
	ds->policy = BLOCKSTORE_LRU;
	HASH_ADD_KEYPTR(hh, bs->datasets, ds->name, len, ds);
	if (!ds->hh.tbl)
		goto fail;
	return ds;
fail:
	free(ds->name);
	free(ds);
	return NULL;
}

/*
 * Unlinks the files of a chain of DYING entries (linked by next), then
 * takes them out of the index and frees those nothing holds.
 */
static void remove_dying(struct blockstore *bs, struct entry *chain)
{
	char rel[BLOCK_REL_PATH_LEN];

	for (struct entry *e = chain; e; e = e->next) {
		block_file_rel_path(e->hash, rel);
		if (unlinkat(bs->blocks_fd, rel, 0) < 0 && errno != ENOENT) {
			int saved = errno;

			log_warn("remove cached block failed", LOG_S("dir", bs->dir),
				 LOG_S("block", rel), LOG_S("cause", strerror(saved)));
		}
	}
	pthread_mutex_lock(&bs->mu);
	while (chain) {
		struct entry *e = chain;

		chain = e->next;
		e->next = NULL;
		if (index_remove_locked(bs, e))
			free(e);
	}
	pthread_mutex_unlock(&bs->mu);
}

/* --- open and rebuild --- */

struct rebuild {
	struct blockstore *bs;
	char (*dirs)[3];       /* HH directory names found */
	size_t ndirs;
	atomic_size_t next;    /* next dirs[] to take */
};

struct rebuild_worker {
	struct rebuild *rb;
	pthread_t thread;
	struct entry **found;  /* valid blocks, owned until merged */
	size_t nfound, cap;
	uint64_t corrupt;
	int oom;               /* an allocation failed: open fails */
	int dir_errno;         /* a directory could not be read: open fails */
	char dir_failed[3];
	struct dataset *last_ds; /* headers of one dataset come in runs */
};

static void remove_bad(struct blockstore *bs, int dfd, const char *hh, const char *name,
		       const char *why, uint64_t *corrupt)
{
	if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT) {
		int saved = errno;

		log_warn("remove bad block file failed", LOG_S("dir", bs->dir), LOG_S("sub", hh),
			 LOG_S("file", name), LOG_S("cause", strerror(saved)));
		return;
	}
	log_debug("removed bad block file", LOG_S("dir", bs->dir), LOG_S("sub", hh),
		  LOG_S("file", name), LOG_S("why", why));
	(*corrupt)++;
}

static int worker_keep(struct rebuild_worker *w, struct entry *e)
{
	if (w->nfound == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 1024;
		struct entry **grown = realloc(w->found, cap * sizeof(*grown));

		if (!grown)
			return -1;
		w->found = grown;
		w->cap = cap;
	}
	w->found[w->nfound++] = e;
	return 0;
}

static struct dataset *worker_dataset(struct rebuild_worker *w, struct block_header_string name)
{
	struct blockstore *bs = w->rb->bs;
	struct dataset *ds = w->last_ds;

	/* ds->name is immutable, so the comparison needs no lock. */
	if (ds && strlen(ds->name) == name.n && memcmp(ds->name, name.p, name.n) == 0)
		return ds;
	pthread_mutex_lock(&bs->mu);
	ds = dataset_get_locked(bs, name.p, name.n);
	pthread_mutex_unlock(&bs->mu);
	if (ds)
		w->last_ds = ds;
	return ds;
}

/* Checks one block file; keeps it, or removes it as bad. */
static void rebuild_file(struct rebuild_worker *w, int dfd, const char *hh, const char *name)
{
	struct blockstore *bs = w->rb->bs;
	uint8_t h[BLOCK_HEADER_SIZE];
	uint8_t name_hash[BLOCK_HASH_LEN];
	uint8_t key_hash[BLOCK_HASH_LEN];
	struct block_header info;
	struct stat sb;
	struct entry *e = NULL;
	struct dataset *ds = NULL;
	const char *why = NULL;
	ssize_t n = 0;
	int fd = -1;

	if (block_hash_parse(name, name_hash) < 0 || name[0] != hh[0] || name[1] != hh[1]) {
		why = "unknown name";
		goto bad;
	}
	fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		why = "cannot open";
		goto bad;
	}
	if (fstat(fd, &sb) < 0) {
		why = "cannot stat";
		goto bad;
	}
	if (S_ISDIR(sb.st_mode)) {
		/* Only on file systems whose readdir gives no type. */
		log_warn("unexpected directory in block store left alone", LOG_S("dir", bs->dir),
			 LOG_S("sub", hh), LOG_S("name", name));
		close(fd);
		return;
	}
	if (!S_ISREG(sb.st_mode)) {
		why = "not a regular file";
		goto bad;
	}
	/* Only the header is wanted: without this, readahead pulls in data
	 * too (a cold rebuild of 1 MiB blocks took 1.35x as long). */
	posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
	n = fileio_pread_all(fd, h, sizeof(h), 0);
	if (n != (ssize_t)sizeof(h)) {
		why = "short header";
		goto bad;
	}
	why = block_header_parse(h, &info);
	if (why)
		goto bad;
	if ((uint64_t)sb.st_size != BLOCK_HEADER_SIZE + info.data_len) {
		why = "file size does not match the header";
		goto bad;
	}
	block_header_key_hash(&info, key_hash);
	if (memcmp(key_hash, name_hash, BLOCK_HASH_LEN) != 0) {
		why = "name does not match the key in the header";
		goto bad;
	}
	close(fd);
	fd = -1;
	ds = worker_dataset(w, info.dataset);
	e = entry_new();
	if (!ds || !e)
		goto oom;
	memcpy(e->hash, name_hash, BLOCK_HASH_LEN);
	e->ds = ds;
	e->state = ENTRY_LIVE;
	e->data_len = info.data_len;
	e->disk = disk_size(info.data_len);
	e->mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
	if (worker_keep(w, e) < 0)
		goto oom;
	return;
oom:
	free(e);
	w->oom = 1;
	return;
bad:
	if (fd >= 0)
		close(fd);
	remove_bad(bs, dfd, hh, name, why, &w->corrupt);
}

struct dir_item {
	ino_t ino;
	char name[2 * BLOCK_HASH_LEN + 1];
};

static int cmp_inode(const void *a, const void *b)
{
	ino_t x = ((const struct dir_item *)a)->ino;
	ino_t y = ((const struct dir_item *)b)->ino;

	return x < y ? -1 : x > y;
}

/*
 * Lists one HH directory, then checks its files in inode order: readdir
 * gives hash order, and with a cold cache visiting inodes (and the data
 * allocated near them) in order turns scattered reads into nearly
 * sequential ones.
 */
static void rebuild_dir(struct rebuild_worker *w, const char *hh)
{
	struct blockstore *bs = w->rb->bs;
	struct dir_item *items = NULL;
	struct dirent *de = NULL;
	size_t nitems = 0, cap = 0;
	DIR *d = NULL;
	int dfd = -1;
	int lfd = -1;

	dfd = openat(bs->blocks_fd, hh, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		goto fail;
	/* closedir closes the descriptor it was given; keep our own. */
	lfd = dup(dfd);
	if (lfd < 0)
		goto fail;
	d = fdopendir(lfd);
	if (!d)
		goto fail;
	lfd = -1;
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (de->d_type == DT_DIR) {
			log_warn("unexpected directory in block store left alone",
				 LOG_S("dir", bs->dir), LOG_S("sub", hh), LOG_S("name", de->d_name));
		} else if (strlen(de->d_name) != 2 * BLOCK_HASH_LEN) {
			remove_bad(bs, dfd, hh, de->d_name, "unknown name", &w->corrupt);
		} else {
			if (nitems == cap) {
				size_t ncap = cap ? 2 * cap : 512;
				struct dir_item *grown = realloc(items, ncap * sizeof(*grown));

				if (!grown) {
					w->oom = 1;
					break;
				}
				items = grown;
				cap = ncap;
			}
			items[nitems].ino = de->d_ino;
			memcpy(items[nitems].name, de->d_name, sizeof(items[nitems].name));
			nitems++;
		}
		errno = 0;
	}
	if (errno)
		goto fail;
	closedir(d);
	d = NULL;
	if (nitems > 1)
		qsort(items, nitems, sizeof(*items), cmp_inode);
	for (size_t i = 0; i < nitems && !w->oom; i++)
		rebuild_file(w, dfd, hh, items[i].name);
	free(items);
	close(dfd);
	return;
fail:
	if (!w->dir_errno) {
		w->dir_errno = errno ? errno : EIO;
		memcpy(w->dir_failed, hh, 3);
	}
	free(items);
	if (d)
		closedir(d);
	if (lfd >= 0)
		close(lfd);
	if (dfd >= 0)
		close(dfd);
}

static void *rebuild_thread(void *arg)
{
	struct rebuild_worker *w = arg;
	struct rebuild *rb = w->rb;

	for (;;) {
		size_t i = atomic_fetch_add(&rb->next, 1);

		if (i >= rb->ndirs || w->oom)
			break;
		rebuild_dir(w, rb->dirs[i]);
	}
	return NULL;
}

static bool is_hh(const char *name)
{
	/* lower case only: block_file_rel_path writes names so */
	return strspn(name, "0123456789abcdef") == 2 && name[2] == '\0';
}

/* Lists DIR/blocks: HH directories into rb, anything else removed. */
static enum error_code list_block_dirs(struct blockstore *bs, struct rebuild *rb,
				       struct error *err)
{
	struct dirent *de = NULL;
	DIR *d = NULL;
	int fd = -1;
	size_t cap = 0;
	uint64_t removed = 0;

	fd = openat(bs->blocks_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd)))
		goto fail;
	fd = -1;
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (is_hh(de->d_name) && (de->d_type == DT_DIR || de->d_type == DT_UNKNOWN)) {
			if (rb->ndirs == cap) {
				size_t ncap = cap ? 2 * cap : 256;
				char (*grown)[3] = realloc(rb->dirs, ncap * sizeof(*grown));

				if (!grown) {
					closedir(d);
					return error_set(err, ERR_NOMEM,
							 "open block store '%s': out of memory",
							 bs->dir);
				}
				rb->dirs = grown;
				cap = ncap;
			}
			memcpy(rb->dirs[rb->ndirs++], de->d_name, 3);
		} else if (de->d_type == DT_DIR) {
			log_warn("unexpected directory in block store left alone",
				 LOG_S("dir", bs->dir), LOG_S("name", de->d_name));
		} else {
			remove_bad(bs, bs->blocks_fd, ".", de->d_name, "unknown name", &removed);
		}
		errno = 0;
	}
	if (errno)
		goto fail;
	closedir(d);
	bs->st.corrupt += removed;
	return ERR_OK;
fail:;
	int saved = errno;

	if (d)
		closedir(d);
	if (fd >= 0)
		close(fd);
	return error_set(err, error_from_errno(saved), "open block store '%s': read '%s/blocks': %s",
			 bs->dir, bs->dir, strerror(saved));
}

static int cmp_oldest_first(const void *a, const void *b)
{
	const struct entry *x = *(const struct entry *const *)a;
	const struct entry *y = *(const struct entry *const *)b;

	if (x->mtime_ns != y->mtime_ns)
		return x->mtime_ns < y->mtime_ns ? -1 : 1;
	return memcmp(x->hash, y->hash, BLOCK_HASH_LEN); /* stable across runs */
}

static int rebuild_threads(size_t ndirs)
{
	int n = REBUILD_THREADS_PER_CPU * cpu_available();

	if (n < REBUILD_MIN_THREADS)
		n = REBUILD_MIN_THREADS;
	if (n > REBUILD_MAX_THREADS)
		n = REBUILD_MAX_THREADS;
	if ((size_t)n > ndirs)
		n = (int)(ndirs ? ndirs : 1);
	return n;
}

/*
 * Reads every block header with threads taking one HH directory at a time
 * (see REBUILD_MIN_THREADS), then, single-threaded, orders the blocks by
 * mtime (the only age that survives a restart: no access times are kept)
 * and indexes them.
 */
static enum error_code rebuild_index(struct blockstore *bs, struct error *err)
{
	struct rebuild rb = { .bs = bs };
	struct rebuild_worker *workers = NULL;
	struct entry **all = NULL;
	size_t total = 0;
	int nthreads = 0;
	int started = 0;
	enum error_code rc = ERR_OK;

	atomic_init(&rb.next, 0);
	rc = list_block_dirs(bs, &rb, err);
	if (rc != ERR_OK)
		goto out;
	nthreads = rebuild_threads(rb.ndirs);
	workers = calloc((size_t)nthreads, sizeof(*workers));
	if (!workers) {
		rc = error_set(err, ERR_NOMEM, "open block store '%s': out of memory", bs->dir);
		goto out;
	}
	for (int i = 0; i < nthreads; i++)
		workers[i].rb = &rb;
	for (started = 0; started < nthreads; started++)
		if (pthread_create(&workers[started].thread, NULL, rebuild_thread,
				   &workers[started]) != 0)
			break;
	if (started == 0) /* no thread to spare: do it here */
		rebuild_thread(&workers[0]);
	for (int i = 0; i < started; i++)
		pthread_join(workers[i].thread, NULL);

	for (int i = 0; i < nthreads; i++) {
		bs->st.corrupt += workers[i].corrupt;
		total += workers[i].nfound;
		if (workers[i].oom && rc == ERR_OK)
			rc = error_set(err, ERR_NOMEM, "open block store '%s': out of memory",
				       bs->dir);
		if (workers[i].dir_errno && rc == ERR_OK)
			rc = error_set(err, error_from_errno(workers[i].dir_errno),
				       "open block store '%s': read '%s/blocks/%s': %s", bs->dir,
				       bs->dir, workers[i].dir_failed,
				       strerror(workers[i].dir_errno));
	}
	if (rc != ERR_OK)
		goto out;
	all = malloc((total ? total : 1) * sizeof(*all));
	if (!all) {
		rc = error_set(err, ERR_NOMEM, "open block store '%s': out of memory", bs->dir);
		goto out;
	}
	total = 0;
	for (int i = 0; i < nthreads; i++) {
		if (workers[i].nfound)
			memcpy(all + total, workers[i].found, workers[i].nfound * sizeof(*all));
		total += workers[i].nfound;
		workers[i].nfound = 0; /* owned by all[] now */
	}
	qsort(all, total, sizeof(*all), cmp_oldest_first);
	pthread_mutex_lock(&bs->mu);
	for (size_t i = 0; i < total; i++) {
		struct entry *e = all[i];

		if (index_add_locked(bs, e) < 0) {
			pthread_mutex_unlock(&bs->mu);
			rc = error_set(err, ERR_NOMEM, "open block store '%s': out of memory",
				       bs->dir);
			for (size_t j = i; j < total; j++)
				free(all[j]);
			goto out;
		}
		lru_push_head(&bs->lru, e); /* all unpinned: nothing is declared yet */
		bs->used += e->disk;
		e->ds->bytes += e->data_len;
		bs->st.blocks++;
	}
	/* The files found may not fit a capacity that was lowered. */
	while (bs->used > bs->capacity && bs->lru.tail) {
		struct entry *e = bs->lru.tail;

		entry_kill_locked(bs, e);
		e->next = NULL;
		bs->st.evictions++;
		pthread_mutex_unlock(&bs->mu);
		remove_dying(bs, e);
		pthread_mutex_lock(&bs->mu);
	}
	pthread_mutex_unlock(&bs->mu);
out:
	if (workers) {
		for (int i = 0; i < nthreads; i++) {
			for (size_t j = 0; j < workers[i].nfound; j++)
				free(workers[i].found[j]);
			free(workers[i].found);
		}
	}
	free(workers);
	free(all);
	free(rb.dirs);
	return rc;
}

/* Removes what writers left in DIR/tmp: never published, never valid. */
static enum error_code clear_tmp(struct blockstore *bs, struct error *err)
{
	struct dirent *de = NULL;
	DIR *d = NULL;
	int fd = -1;

	fd = openat(bs->tmp_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd)))
		goto fail;
	fd = -1;
	errno = 0;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (unlinkat(bs->tmp_fd, de->d_name, 0) < 0) {
			int saved = errno;

			log_warn("remove leftover temp file failed", LOG_S("dir", bs->dir),
				 LOG_S("file", de->d_name), LOG_S("cause", strerror(saved)));
		}
		errno = 0;
	}
	if (errno)
		goto fail;
	closedir(d);
	return ERR_OK;
fail:;
	int saved = errno;

	if (d)
		closedir(d);
	if (fd >= 0)
		close(fd);
	return error_set(err, error_from_errno(saved), "open block store '%s': clear '%s/tmp': %s",
			 bs->dir, bs->dir, strerror(saved));
}

/*
 * One process owns a cache directory: the start-up cleanup of tmp/ would
 * remove another owner's blocks in flight, and two owners would each fill
 * the same disk up to their capacity. A flock on DIR/.lock, held until
 * blockstore_free, marks the owner; the kernel drops it when the process
 * dies, so a crash leaves no stale lock. flock locks belong to the open
 * file description: a second open in the same process is refused too.
 */
static enum error_code lock_dir(struct blockstore *bs, int dir_fd, struct error *err)
{
	int saved;

	bs->lock_fd = openat(dir_fd, BLOCKSTORE_LOCK_FILE,
			     O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0644);
	if (bs->lock_fd < 0) {
		saved = errno;
		return error_set(err, error_from_errno(saved), "open block store '%s': '%s/%s': %s",
				 bs->dir, bs->dir, BLOCKSTORE_LOCK_FILE, strerror(saved));
	}
	if (flock(bs->lock_fd, LOCK_EX | LOCK_NB) == 0) {
		struct error id_err;

		/* Without an id the store works; mounts just get the bytes. */
		if (block_dir_id_ensure(bs->lock_fd, bs->dir_id, &id_err) != ERR_OK) {
			bs->dir_id[0] = '\0';
			log_warn("cache directory has no id; the node's mounts get blocks over HTTP",
				 LOG_S("dir", bs->dir), LOG_S("cause", id_err.msg));
		}
		return ERR_OK;
	}
	saved = errno;
	if (saved == EWOULDBLOCK)
		return error_set(err, ERR_UNAVAILABLE,
				 "open block store '%s': another process owns this cache directory "
				 "(a granary-worker or a standalone granary-fuse): give this one its "
				 "own cache.dir, or stop the other",
				 bs->dir);
	return error_set(err, error_from_errno(saved), "open block store '%s': lock '%s/%s': %s",
			 bs->dir, bs->dir, BLOCKSTORE_LOCK_FILE, strerror(saved));
}

const char *blockstore_dir_id(const struct blockstore *bs)
{
	return bs->dir_id;
}

static enum error_code open_subdir(struct blockstore *bs, int dir_fd, const char *name, int *out,
				   struct error *err)
{
	int saved = 0;

	if (mkdirat(dir_fd, name, 0755) < 0 && errno != EEXIST)
		goto fail;
	*out = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (*out < 0)
		goto fail;
	return ERR_OK;
fail:
	saved = errno;
	return error_set(err, error_from_errno(saved), "open block store '%s': '%s/%s': %s",
			 bs->dir, bs->dir, name, strerror(saved));
}

enum error_code blockstore_open(const struct blockstore_config *cfg, struct blockstore **out,
				struct error *err)
{
	struct blockstore *bs = NULL;
	struct timespec t0, t1;
	uint32_t block_size = 0;
	int dir_fd = -1;
	int saved = 0;
	enum error_code rc = ERR_OK;

	*out = NULL;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!cfg || !cfg->dir || !*cfg->dir)
		return error_set(err, ERR_INVALID, "open block store: no directory given");
	if (cfg->capacity < disk_size(0))
		return error_set(err, ERR_INVALID,
				 "open block store '%s': capacity %llu is below one block file (%llu bytes)",
				 cfg->dir, (unsigned long long)cfg->capacity,
				 (unsigned long long)disk_size(0));
	bs = calloc(1, sizeof(*bs));
	if (!bs)
		return error_set(err, ERR_NOMEM, "open block store '%s': out of memory", cfg->dir);
	bs->lock_fd = -1;
	bs->blocks_fd = -1;
	bs->tmp_fd = -1;
	bs->capacity = cfg->capacity;
	bs->st.capacity = cfg->capacity;
	atomic_init(&bs->tmp_seq, 0);
	pthread_mutex_init(&bs->mu, NULL);
	log_limiter_init(&bs->corrupt_log, CORRUPT_LOG_MS, NULL, NULL);
	bs->dir = strdup(cfg->dir);
	block_size = cfg->block_size ? cfg->block_size : DEFAULT_BLOCK_SIZE;
	bs->block_file = disk_size(block_size);
	bs->sketch = sketch_new(cfg->capacity / disk_size(block_size));
	if (!bs->dir || !bs->sketch) {
		rc = error_set(err, ERR_NOMEM, "open block store '%s': out of memory", cfg->dir);
		goto fail;
	}
	rc = fileio_mkdirs(bs->dir, 0755, err);
	if (rc != ERR_OK) {
		error_wrap(err, "open block store '%s'", bs->dir);
		goto fail;
	}
	dir_fd = open(bs->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0) {
		saved = errno;
		rc = error_set(err, error_from_errno(saved), "open block store '%s': %s", bs->dir,
			       strerror(saved));
		goto fail;
	}
	rc = lock_dir(bs, dir_fd, err);
	if (rc != ERR_OK)
		goto fail;
	rc = open_subdir(bs, dir_fd, "blocks", &bs->blocks_fd, err);
	if (rc != ERR_OK)
		goto fail;
	rc = open_subdir(bs, dir_fd, "tmp", &bs->tmp_fd, err);
	if (rc != ERR_OK)
		goto fail;
	close(dir_fd);
	dir_fd = -1;
	rc = clear_tmp(bs, err);
	if (rc != ERR_OK)
		goto fail;
	rc = rebuild_index(bs, err);
	if (rc != ERR_OK)
		goto fail;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	log_info("block store opened", LOG_S("dir", bs->dir), LOG_U("blocks", bs->st.blocks),
		 LOG_U("used", bs->used), LOG_U("capacity", bs->capacity),
		 LOG_U("removed_bad", bs->st.corrupt), LOG_U("evicted", bs->st.evictions),
		 LOG_F("seconds", (double)(t1.tv_sec - t0.tv_sec) +
					  (double)(t1.tv_nsec - t0.tv_nsec) / 1e9));
	*out = bs;
	return ERR_OK;
fail:
	if (dir_fd >= 0)
		close(dir_fd);
	blockstore_free(bs);
	return rc;
}

void blockstore_free(struct blockstore *bs)
{
	struct entry *e = NULL, *etmp = NULL;
	struct dataset *ds = NULL, *dtmp = NULL;

	if (!bs)
		return;
	HASH_ITER(hh, bs->index, e, etmp) {
		HASH_DEL(bs->index, e);
		if (e->fd >= 0)
			close(e->fd);
		free(e);
	}
	HASH_ITER(hh, bs->datasets, ds, dtmp) {
		HASH_DEL(bs->datasets, ds);
		free(ds->name);
		free(ds);
	}
	sketch_free(bs->sketch);
	if (bs->blocks_fd >= 0)
		close(bs->blocks_fd);
	if (bs->tmp_fd >= 0)
		close(bs->tmp_fd);
	if (bs->lock_fd >= 0)
		close(bs->lock_fd); /* releases the directory */
	log_limiter_release(&bs->corrupt_log);
	pthread_mutex_destroy(&bs->mu);
	free(bs->dir);
	free(bs);
}

/* --- datasets --- */

static enum error_code check_dataset_name(const char *dataset, const char *what,
					  struct error *err)
{
	if (block_dataset_name_check(dataset, err) != ERR_OK)
		return error_wrap(err, "%s", what);
	return ERR_OK;
}

enum error_code blockstore_set_dataset(struct blockstore *bs, const char *dataset,
				       enum blockstore_policy policy, bool pin, struct error *err)
{
	struct dataset *ds = NULL;
	enum error_code rc = check_dataset_name(dataset, "set dataset", err);

	if (rc != ERR_OK)
		return rc;
	if (policy != BLOCKSTORE_LRU && policy != BLOCKSTORE_SCAN_RESISTANT)
		return error_set(err, ERR_INVALID, "set dataset '%s': unknown policy %d", dataset,
				 (int)policy);
	pthread_mutex_lock(&bs->mu);
	ds = dataset_get_locked(bs, dataset, strlen(dataset));
	if (!ds) {
		pthread_mutex_unlock(&bs->mu);
		return error_set(err, ERR_NOMEM, "set dataset '%s': out of memory", dataset);
	}
	ds->policy = policy;
	if (ds->pin != pin) {
		struct lru *from = pin ? &bs->lru : &bs->pinned;
		struct lru *to = pin ? &bs->pinned : &bs->lru;

		/* Tail to head, pushing at the head: the moved blocks keep their
		 * order among themselves and count as recently used. */
		for (struct entry *e = from->tail, *prev = NULL; e; e = prev) {
			prev = e->prev;
			if (e->ds != ds)
				continue;
			lru_remove(from, e);
			lru_push_head(to, e);
		}
		ds->pin = pin;
	}
	pthread_mutex_unlock(&bs->mu);
	return ERR_OK;
}

/*
 * Kills the entries of list l that nothing holds and for which drop(e, arg)
 * is true, then removes their files; returns how many. Called with bs->mu
 * held, returns with it released.
 */
static uint64_t drop_matching_locked(struct blockstore *bs, struct lru *l,
				     bool (*drop)(const struct entry *e, void *arg), void *arg)
{
	struct entry *chain = NULL;
	uint64_t count = 0;

	for (struct entry *e = l->tail, *prev = NULL; e; e = prev) {
		prev = e->prev;
		if (e->refs > 0 || !drop(e, arg))
			continue;
		entry_kill_locked(bs, e);
		e->next = chain;
		chain = e;
		count++;
	}
	pthread_mutex_unlock(&bs->mu);
	if (chain)
		remove_dying(bs, chain);
	return count;
}

static bool of_dataset(const struct entry *e, void *ds)
{
	return e->ds == ds;
}

uint64_t blockstore_drop_dataset(struct blockstore *bs, const char *dataset)
{
	struct dataset *ds;

	if (!dataset)
		return 0;
	pthread_mutex_lock(&bs->mu);
	ds = dataset_find_locked(bs, dataset, strlen(dataset));
	if (!ds) {
		pthread_mutex_unlock(&bs->mu);
		return 0;
	}
	return drop_matching_locked(bs, dataset_list_locked(bs, ds), of_dataset, ds);
}

struct unless {
	blockstore_keep_fn keep;
	void *arg;
};

static bool not_kept(const struct entry *e, void *arg)
{
	struct unless *u = arg;

	return !u->keep(e->ds->name, e->hash, u->arg);
}

uint64_t blockstore_drop_unless(struct blockstore *bs, blockstore_keep_fn keep, void *arg)
{
	struct unless u = { .keep = keep, .arg = arg };
	uint64_t count;

	pthread_mutex_lock(&bs->mu);
	count = drop_matching_locked(bs, &bs->lru, not_kept, &u);
	pthread_mutex_lock(&bs->mu);
	bs->st.unowned += count;
	pthread_mutex_unlock(&bs->mu);
	return count;
}

/* --- lookups and refs --- */

enum error_code blockstore_get(struct blockstore *bs, const uint8_t hash[BLOCK_HASH_LEN],
			       struct blockstore_ref **ref)
{
	return blockstore_lookup(bs, hash, true, ref);
}

enum error_code blockstore_lookup(struct blockstore *bs, const uint8_t hash[BLOCK_HASH_LEN],
				  bool access, struct blockstore_ref **ref)
{
	char rel[BLOCK_REL_PATH_LEN];
	struct entry *e = NULL;
	int fd = -1;
	int saved = 0;
	bool free_it = false;

	*ref = NULL;
	pthread_mutex_lock(&bs->mu);
	if (access)
		sketch_increment(bs->sketch, hash);
	HASH_FIND(hh, bs->index, hash, BLOCK_HASH_LEN, e);
	if (!e || e->state != ENTRY_LIVE) {
		if (access)
			bs->st.misses++;
		pthread_mutex_unlock(&bs->mu);
		return ERR_NOT_FOUND;
	}
	if (access) {
		lru_remove(entry_list_locked(bs, e), e);
		lru_push_head(entry_list_locked(bs, e), e);
	}
	e->refs++; /* from here on it cannot be evicted */
	if (e->fd >= 0) {
		if (access)
			bs->st.hits++;
		pthread_mutex_unlock(&bs->mu);
		*ref = &e->ref;
		return ERR_OK;
	}
	pthread_mutex_unlock(&bs->mu);

	block_file_rel_path(e->hash, rel);
	fd = openat(bs->blocks_fd, rel, O_RDONLY | O_CLOEXEC);
	saved = errno;
	if (fd >= 0)
		block_file_read_advice(fd);

	pthread_mutex_lock(&bs->mu);
	if (fd < 0) {
		e->refs--;
		bs->st.misses++;
		/* Gone behind our back (an operator cleaning up): forget it. No
		 * unlink is needed, so it can leave the index at once. */
		if (saved == ENOENT && e->state == ENTRY_LIVE && e->refs == 0) {
			entry_kill_locked(bs, e);
			free_it = index_remove_locked(bs, e);
		}
		pthread_mutex_unlock(&bs->mu);
		if (free_it)
			free(e);
		log_warn("open cached block failed", LOG_S("dir", bs->dir), LOG_S("block", rel),
			 LOG_S("cause", strerror(saved)));
		return saved == ENOENT ? ERR_NOT_FOUND : ERR_IO;
	}
	/* Another reader may have opened it meanwhile: keep one descriptor. */
	if (e->fd < 0) {
		e->fd = fd;
		fd = -1;
	}
	bs->st.hits++;
	pthread_mutex_unlock(&bs->mu);
	if (fd >= 0)
		close(fd);
	*ref = &e->ref;
	return ERR_OK;
}

bool blockstore_has(struct blockstore *bs, const uint8_t hash[BLOCK_HASH_LEN])
{
	struct entry *e = NULL;
	bool live;

	pthread_mutex_lock(&bs->mu);
	HASH_FIND(hh, bs->index, hash, BLOCK_HASH_LEN, e);
	live = e && e->state == ENTRY_LIVE;
	pthread_mutex_unlock(&bs->mu);
	return live;
}

int blockstore_ref_fd(const struct blockstore_ref *ref)
{
	/* Set before get returned the ref and unchanged until the last put. */
	return ref->e->fd;
}

const uint8_t *blockstore_ref_hash(const struct blockstore_ref *ref)
{
	return ref->e->hash;
}

void blockstore_drop_pages(struct blockstore *bs, const uint8_t hash[BLOCK_HASH_LEN], uint64_t off,
			   uint64_t len)
{
	char rel[BLOCK_REL_PATH_LEN];
	struct stat st;
	int fd;

	block_file_rel_path(hash, rel);
	fd = openat(bs->blocks_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0 && (uint64_t)st.st_size >= BLOCK_HEADER_SIZE)
		block_file_drop(fd, off, len, (uint64_t)st.st_size - BLOCK_HEADER_SIZE);
	close(fd);
}

uint64_t blockstore_ref_offset(const struct blockstore_ref *ref)
{
	return BLOCK_HEADER_SIZE;
}

uint64_t blockstore_ref_length(const struct blockstore_ref *ref)
{
	return ref->e->data_len;
}

void blockstore_ref_put(struct blockstore *bs, struct blockstore_ref *ref)
{
	struct entry *e = NULL;
	int fd = -1;
	bool free_it = false;

	if (!ref)
		return;
	e = ref->e;
	pthread_mutex_lock(&bs->mu);
	if (--e->refs == 0) {
		fd = e->fd;
		e->fd = -1;
		free_it = !e->in_index;
	}
	pthread_mutex_unlock(&bs->mu);
	if (fd >= 0)
		close(fd);
	if (free_it)
		free(e);
}

/*
 * The header of ref's file, read now and checked: its checksum, and that
 * it still describes the entry. NULL, or why not.
 */
static const char *ref_header(const struct entry *e, uint8_t *h, struct block_sums *out,
			      int *read_errno)
{
	struct block_header info;
	const char *why = NULL;
	ssize_t n = fileio_pread_all(e->fd, h, BLOCK_HEADER_SIZE, 0);

	*read_errno = 0;
	if (n < 0) {
		*read_errno = errno;
		return strerror(errno);
	}
	if (n != BLOCK_HEADER_SIZE)
		return "short header";
	why = block_header_parse(h, &info);
	if (!why && info.data_len != e->data_len)
		why = "data length changed";
	if (!why)
		block_header_sums(&info, out);
	return why;
}

/* Drops a block that failed a check: counted, logged (rate limited), its
 * file unlinked; the caller's ref keeps the entry until put. */
static void drop_corrupt(struct blockstore *bs, struct entry *e, const char *why)
{
	char hex[BLOCK_HASH_HEX];
	bool live;

	pthread_mutex_lock(&bs->mu);
	live = e->state == ENTRY_LIVE;
	if (live) {
		entry_kill_locked(bs, e);
		e->next = NULL;
		bs->st.corrupt++;
	}
	pthread_mutex_unlock(&bs->mu);
	if (!live)
		return;
	block_hash_hex(e->hash, hex);
	log_limited_warn(&bs->corrupt_log, "cached block failed its checksum, removed",
			 LOG_S("dir", bs->dir), LOG_S("block", hex), LOG_S("cause", why));
	remove_dying(bs, e);
}

enum error_code blockstore_ref_sums(struct blockstore *bs, struct blockstore_ref *ref,
				    struct block_sums *out, struct error *err)
{
	uint8_t *h = malloc(BLOCK_HEADER_SIZE);
	char hex[BLOCK_HASH_HEX];
	const char *why;
	int read_errno = 0;

	if (!h)
		return error_set(err, ERR_NOMEM, "read block header: out of memory");
	block_hash_hex(ref->e->hash, hex);
	why = ref_header(ref->e, h, out, &read_errno);
	free(h);
	if (!why)
		return ERR_OK;
	if (read_errno)
		return error_set(err, error_from_errno(read_errno), "block '%s' in '%s': %s", hex,
				 bs->dir, why);
	drop_corrupt(bs, ref->e, why);
	return error_set(err, ERR_IO, "block '%s' in '%s': header %s, removed", hex, bs->dir, why);
}

enum error_code blockstore_ref_verify(struct blockstore *bs, struct blockstore_ref *ref,
				      struct error *err)
{
	struct entry *e = ref->e;
	struct block_sums sums;
	char hex[BLOCK_HASH_HEX], why[ERROR_MSG_MAX];
	enum error_code rc;
	bool live, corrupt = false;
	char *buf = NULL;

	pthread_mutex_lock(&bs->mu);
	live = e->state == ENTRY_LIVE;
	pthread_mutex_unlock(&bs->mu);
	block_hash_hex(e->hash, hex);
	if (!live)
		return error_set(err, ERR_IO, "verify block '%s' in '%s': removed as corrupt", hex,
				 bs->dir);
	rc = blockstore_ref_sums(bs, ref, &sums, err);
	if (rc != ERR_OK)
		return rc;
	buf = malloc(e->data_len ? (size_t)e->data_len : 1);
	if (!buf)
		return error_set(err, ERR_NOMEM, "verify block '%s' in '%s': out of memory", hex,
				 bs->dir);
	rc = block_read_checked(e->fd, &sums, 0, (size_t)e->data_len, buf, &corrupt, err);
	free(buf);
	if (rc == ERR_OK)
		return ERR_OK;
	/* A failed read says nothing about the bytes: keep the block. */
	if (!corrupt)
		return error_wrap(err, "verify block '%s' in '%s'", hex, bs->dir);
	snprintf(why, sizeof(why), "%s", err->msg);
	drop_corrupt(bs, e, why);
	return error_set(err, ERR_IO, "verify block '%s' in '%s': %s, removed", hex, bs->dir, why);
}

/* --- writers --- */

static enum error_code check_key(const struct block_key *key, const char *dataset,
				 uint64_t max_len, struct error *err)
{
	const char *fields[4] = { key->bucket, key->object, key->etag, dataset };
	const char *names[4] = { "bucket", "object", "etag", "dataset" };
	enum error_code rc = ERR_OK;

	for (int i = 0; i < 4; i++)
		if (!fields[i] || !*fields[i])
			return error_set(err, ERR_INVALID, "cache block: empty %s", names[i]);
	if (!key->endpoint)
		return error_set(err, ERR_INVALID, "cache block of '%s': no endpoint", key->object);
	rc = check_dataset_name(dataset, "cache block", err);
	if (rc != ERR_OK)
		return rc;
	if (key->block_size == 0)
		return error_set(err, ERR_INVALID, "cache block of '%s': block size 0", key->object);
	if (max_len > key->block_size)
		return error_set(err, ERR_INVALID,
				 "cache block %llu of '%s': length %llu exceeds the block size %u",
				 (unsigned long long)key->index, key->object,
				 (unsigned long long)max_len, key->block_size);
	return block_header_fits(key, dataset, err);
}

/*
 * Finds LRU-tail victims that free need bytes, marks them DYING and chains
 * them into *victims. For a scan-resistant candidate every victim must be
 * less frequent than the candidate, or nothing is evicted.
 *
 * The candidate's estimate includes the miss that led to this write
 * (blockstore_get counts it), while an incumbent not yet reached in the
 * current pass of a scan lacks its turn's access: compared as they are, in
 * a cyclic scan every candidate would beat such incumbents by exactly that
 * one access and the cache would churn like plain LRU. So the candidate is
 * compared without the current access.
 */
static enum error_code make_room_locked(struct blockstore *bs, const struct entry *cand,
					uint64_t need, struct entry **victims, const char **why)
{
	uint64_t room = bs->capacity - bs->used - bs->reserved;
	struct entry *last = NULL;
	unsigned freq = 0;
	bool tinylfu = cand->ds->policy == BLOCKSTORE_SCAN_RESISTANT;

	if (tinylfu) {
		freq = sketch_estimate(bs->sketch, cand->hash);
		freq = freq ? freq - 1 : 0;
	}
	for (struct entry *v = bs->lru.tail; v && room < need; v = v->prev) {
		if (v->refs > 0)
			continue;
		if (tinylfu && freq <= sketch_estimate(bs->sketch, v->hash)) {
			*why = "admission refused: not more frequent than the blocks it would evict";
			return ERR_NO_SPACE;
		}
		room += v->disk;
		last = v;
	}
	if (room < need) {
		*why = "the rest is pinned, held by readers or reserved";
		return ERR_NO_SPACE;
	}
	for (struct entry *v = bs->lru.tail, *prev = NULL; last; v = prev) {
		prev = v->prev;
		if (v->refs > 0)
			continue;
		entry_kill_locked(bs, v);
		v->next = *victims;
		*victims = v;
		bs->st.evictions++;
		if (v == last)
			break;
	}
	return ERR_OK;
}

enum error_code blockstore_write_begin(struct blockstore *bs, const struct block_key *key,
				       const char *dataset, uint64_t max_len,
				       struct blockstore_writer **out, struct error *err)
{
	struct blockstore_writer *w = NULL;
	struct entry *victims = NULL;
	struct entry *e = NULL;
	char hex[BLOCK_HASH_HEX];
	const char *why = NULL;
	uint64_t need = disk_size(max_len);
	bool indexed = false;
	bool free_it = false;
	int saved = 0;
	enum error_code rc = ERR_OK;

	*out = NULL;
	rc = check_key(key, dataset, max_len, err);
	if (rc != ERR_OK)
		return rc;
	w = calloc(1, sizeof(*w));
	e = entry_new();
	if (!w || !e)
		goto oom;
	w->fd = -1;
	w->bs = bs;
	w->e = e;
	w->max_len = max_len;
	w->chunk_size = block_chunk_size(key->block_size);
	w->crc = CRC32C_INIT;
	e->state = ENTRY_WRITING;
	block_key_hash(key, e->hash);
	block_hash_hex(e->hash, hex);
	block_header_prepare(w->header, key, dataset);
	snprintf(w->tmp_name, sizeof(w->tmp_name), "%s.%ld.%llu", hex, (long)getpid(),
		 (unsigned long long)atomic_fetch_add(&bs->tmp_seq, 1));

	pthread_mutex_lock(&bs->mu);
	{
		struct entry *found = NULL;

		HASH_FIND(hh, bs->index, e->hash, BLOCK_HASH_LEN, found);
		if (found) {
			enum entry_state state = found->state;

			pthread_mutex_unlock(&bs->mu);
			rc = error_set(err, ERR_EXISTS, "cache block '%s' in '%s': %s", hex,
				       bs->dir,
				       state == ENTRY_WRITING ? "being written"
				       : state == ENTRY_LIVE  ? "already cached"
							      : "being removed");
			goto fail;
		}
	}
	e->ds = dataset_get_locked(bs, dataset, strlen(dataset));
	if (!e->ds || index_add_locked(bs, e) < 0) {
		pthread_mutex_unlock(&bs->mu);
		goto oom;
	}
	indexed = true;
	if (need > bs->capacity) {
		why = "larger than the whole cache";
		rc = ERR_NO_SPACE;
	} else if (bs->capacity - bs->used - bs->reserved < need) {
		rc = make_room_locked(bs, e, need, &victims, &why);
	}
	if (rc != ERR_OK) {
		bs->st.rejected++;
		index_remove_locked(bs, e);
		indexed = false;
		pthread_mutex_unlock(&bs->mu);
		rc = error_set(err, rc, "cache block '%s' (%llu bytes) in '%s': %s", hex,
			       (unsigned long long)need, bs->dir, why);
		goto fail;
	}
	bs->reserved += need;
	w->reserved = need;
	bs->st.admitted++;
	pthread_mutex_unlock(&bs->mu);

	if (victims)
		remove_dying(bs, victims);
	w->fd = openat(bs->tmp_fd, w->tmp_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (w->fd < 0) {
		saved = errno;
		rc = error_set(err, saved == ENOSPC || saved == EDQUOT ? ERR_NO_SPACE : ERR_IO,
			       "cache block '%s': create '%s/tmp/%s': %s", hex, bs->dir,
			       w->tmp_name, strerror(saved));
		goto fail;
	}
	*out = w;
	return ERR_OK;
oom:
	rc = error_set(err, ERR_NOMEM, "cache block of '%s' in '%s': out of memory", key->object,
		       bs->dir);
fail:
	if (indexed) {
		pthread_mutex_lock(&bs->mu);
		bs->reserved -= w->reserved;
		free_it = index_remove_locked(bs, e);
		pthread_mutex_unlock(&bs->mu);
	} else {
		free_it = true;
	}
	if (free_it)
		free(e);
	free(w);
	return rc;
}

/* Advances the writer's chunk checksums over data appended at w->written. */
static void writer_crc(struct blockstore_writer *w, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		uint64_t in_chunk = w->written % w->chunk_size;
		size_t n = len < w->chunk_size - in_chunk ? len : (size_t)(w->chunk_size - in_chunk);

		w->crc = crc32c_update(w->crc, p, n);
		w->written += n;
		p += n;
		len -= n;
		if (w->written % w->chunk_size == 0) {
			w->crcs[w->written / w->chunk_size - 1] = w->crc ^ CRC32C_INIT;
			w->crc = CRC32C_INIT;
		}
	}
}

enum error_code blockstore_write_append(struct blockstore_writer *w, const void *data, size_t len,
					struct error *err)
{
	char hex[BLOCK_HASH_HEX];

	if (w->failed || len > w->max_len - w->written) {
		block_hash_hex(w->e->hash, hex);
		if (w->failed)
			return error_set(err, ERR_IO, "cache block '%s': an earlier write failed", hex);
		w->failed = true;
		return error_set(err, ERR_INVALID,
				 "cache block '%s': %llu more bytes pass the reserved %llu", hex,
				 (unsigned long long)len, (unsigned long long)w->max_len);
	}
	if (fileio_pwrite_all(w->fd, data, len, BLOCK_HEADER_SIZE + w->written) < 0) {
		int saved = errno;

		w->failed = true;
		block_hash_hex(w->e->hash, hex);
		return error_set(err, saved == ENOSPC || saved == EDQUOT ? ERR_NO_SPACE : ERR_IO,
				 "cache block '%s': write '%s/tmp/%s': %s", hex, w->bs->dir,
				 w->tmp_name, strerror(saved));
	}
	writer_crc(w, data, len);
	if (w->written - w->flushing >= WRITEBACK_STEP) {
		uint64_t to = w->written / WRITEBACK_STEP * WRITEBACK_STEP;

		/* Starts the writes and returns; an error here shows at commit. */
		sync_file_range(w->fd, (off_t)(BLOCK_HEADER_SIZE + w->flushing),
				(off_t)(to - w->flushing), SYNC_FILE_RANGE_WRITE);
		w->flushing = to;
	}
	return ERR_OK;
}

enum error_code blockstore_write_read_back(struct blockstore_writer *w, void *buf, uint64_t *len,
					   struct error *err)
{
	ssize_t n = fileio_pread_all(w->fd, buf, (size_t)w->written, BLOCK_HEADER_SIZE);

	*len = w->written;
	if (n != (ssize_t)w->written)
		return error_set(err, ERR_IO, "cache block: read back '%s/tmp/%s': %s", w->bs->dir,
				 w->tmp_name, n < 0 ? strerror(errno) : "short file");
	return ERR_OK;
}

bool blockstore_disk_full(struct blockstore *bs, uint64_t *capacity)
{
	struct entry *victims = NULL;
	struct statvfs sv;
	uint64_t fs_free, cap;
	bool lowered = false;

	if (fstatvfs(bs->tmp_fd, &sv) != 0)
		return false;
	fs_free = (uint64_t)(geteuid() == 0 ? sv.f_bfree : sv.f_bavail) * sv.f_frsize;
	pthread_mutex_lock(&bs->mu);
	/* What the disk holds: our blocks and what is still free. */
	cap = bs->used + bs->reserved + fs_free;
	if (cap < bs->block_file)
		cap = bs->block_file;
	if (fs_free < bs->block_file && cap < bs->capacity) {
		bs->capacity = cap;
		lowered = true;
	}
	/* Room for the next block, from the least recently used. */
	for (struct entry *v = bs->lru.tail, *prev = NULL;
	     v && bs->used + bs->reserved + bs->block_file > bs->capacity; v = prev) {
		prev = v->prev;
		if (v->refs > 0)
			continue;
		entry_kill_locked(bs, v);
		v->next = victims;
		victims = v;
		bs->st.evictions++;
	}
	if (lowered)
		bs->st.disk_full++;
	*capacity = bs->capacity;
	pthread_mutex_unlock(&bs->mu);
	if (victims)
		remove_dying(bs, victims);
	return lowered;
}

static void writer_free(struct blockstore_writer *w)
{
	if (w->fd >= 0)
		close(w->fd);
	free(w);
}

void blockstore_write_abort(struct blockstore *bs, struct blockstore_writer *w)
{
	struct entry *e = NULL;

	if (!w)
		return;
	e = w->e;
	if (w->fd >= 0) {
		close(w->fd);
		w->fd = -1;
	}
	unlinkat(bs->tmp_fd, w->tmp_name, 0);
	pthread_mutex_lock(&bs->mu);
	bs->reserved -= w->reserved;
	index_remove_locked(bs, e); /* a WRITING entry is never held */
	pthread_mutex_unlock(&bs->mu);
	free(e);
	writer_free(w);
}

enum error_code blockstore_write_commit(struct blockstore *bs, struct blockstore_writer *w,
					struct blockstore_ref **ref, struct error *err)
{
	struct entry *e = w->e;
	struct timespec now;
	char rel[BLOCK_REL_PATH_LEN];
	char hex[BLOCK_HASH_HEX];
	const char *what = NULL;
	int rfd = -1;
	int fd = -1;
	int saved = 0;

	if (ref)
		*ref = NULL;
	block_hash_hex(e->hash, hex);
	block_file_rel_path(e->hash, rel);
	if (w->failed) {
		blockstore_write_abort(bs, w);
		return error_set(err, ERR_IO, "cache block '%s': an earlier write failed", hex);
	}
	clock_gettime(CLOCK_REALTIME, &now);
	if (w->written % w->chunk_size != 0)
		w->crcs[w->written / w->chunk_size] = w->crc ^ CRC32C_INIT;
	block_header_seal(w->header, w->written, w->crcs, (int64_t)now.tv_sec);
	/* The header goes last: a file cut short before this has none and
	 * would fail the checks at start even had it been renamed. */
	if (fileio_pwrite_all(w->fd, w->header, sizeof(w->header), 0) < 0) {
		what = "write header";
		goto fail;
	}
	/*
	 * Written back before it is published, though not fsync'd (nothing
	 * asks the disk to make it durable): the reader that drops the pages
	 * it read (block_file_drop) can drop only clean ones, and every byte
	 * of a block is meant to leave the page cache once read. Most of the
	 * data is on its way already (WRITEBACK_STEP).
	 */
	if (sync_file_range(w->fd, 0, 0,
			    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
				    SYNC_FILE_RANGE_WAIT_AFTER) < 0) {
		what = "write back";
		goto fail;
	}
	fd = w->fd;
	w->fd = -1;
	if (close(fd) < 0) {
		what = "close";
		goto fail;
	}
	if (ref) {
		/* Same inode as the published file; opened before the rename
		 * so that a failure here still leaves nothing published. */
		rfd = openat(bs->tmp_fd, w->tmp_name, O_RDONLY | O_CLOEXEC);
		if (rfd < 0) {
			what = "reopen";
			goto fail;
		}
		block_file_read_advice(rfd);
	}
	rel[2] = '\0';
	if (mkdirat(bs->blocks_fd, rel, 0755) < 0 && errno != EEXIST) {
		rel[2] = '/';
		what = "mkdir";
		goto fail;
	}
	rel[2] = '/';
	if (renameat(bs->tmp_fd, w->tmp_name, bs->blocks_fd, rel) < 0) {
		what = "rename";
		goto fail;
	}

	pthread_mutex_lock(&bs->mu);
	e->state = ENTRY_LIVE;
	e->data_len = w->written;
	e->disk = disk_size(w->written);
	bs->reserved -= w->reserved;
	bs->used += e->disk;
	e->ds->bytes += e->data_len;
	bs->st.blocks++;
	lru_push_head(entry_list_locked(bs, e), e);
	if (ref) {
		e->refs = 1;
		e->fd = rfd;
		rfd = -1;
		*ref = &e->ref;
	}
	pthread_mutex_unlock(&bs->mu);
	writer_free(w);
	return ERR_OK;
fail:
	saved = errno;
	if (rfd >= 0)
		close(rfd);
	blockstore_write_abort(bs, w);
	return error_set(err, ERR_IO, "cache block '%s' in '%s': %s: %s", hex, bs->dir, what,
			 strerror(saved));
}

size_t blockstore_dataset_bytes(struct blockstore *bs, struct blockstore_usage *out, size_t max)
{
	struct dataset *ds, *tmp;
	size_t n = 0;

	pthread_mutex_lock(&bs->mu);
	HASH_ITER(hh, bs->datasets, ds, tmp) {
		size_t at;

		if (!ds->bytes)
			continue;
		/* Kept sorted by bytes, largest first; past max, the smallest go. */
		for (at = n; at > 0 && out[at - 1].bytes < ds->bytes; at--)
			;
		if (at >= max)
			continue;
		if (n == max)
			n--;
		memmove(&out[at + 1], &out[at], (n - at) * sizeof(*out));
		snprintf(out[at].name, sizeof(out[at].name), "%s", ds->name);
		out[at].bytes = ds->bytes;
		n++;
	}
	pthread_mutex_unlock(&bs->mu);
	return n;
}

void blockstore_get_stats(struct blockstore *bs, struct blockstore_stats *out)
{
	pthread_mutex_lock(&bs->mu);
	*out = bs->st;
	out->used = bs->used;
	out->reserved = bs->reserved;
	out->capacity = bs->capacity;
	pthread_mutex_unlock(&bs->mu);
}

enum error_code blockstore_room_check(const char *dir, uint64_t fs_free, uint64_t capacity,
				      uint64_t used, uint64_t reserved, uint64_t need,
				      struct error *err)
{
	uint64_t held = used + reserved;

	if (fs_free >= need || held > capacity || capacity - held < need)
		return ERR_OK;
	return error_set(err, ERR_NO_SPACE,
			 "cache directory '%s' is full: %llu bytes free on its filesystem, a block needs %llu, and the cache evicts only at its capacity (%llu of %llu bytes used): free space there or lower cache.capacity",
			 dir, (unsigned long long)fs_free, (unsigned long long)need,
			 (unsigned long long)held, (unsigned long long)capacity);
}

enum error_code blockstore_check_usable(struct blockstore *bs, struct error *err)
{
	char name[64];
	struct statvfs sv;
	uint64_t used, reserved, fs_free;
	int fd, saved;

	snprintf(name, sizeof(name), ".usable.%ld.%llu", (long)getpid(),
		 (unsigned long long)atomic_fetch_add(&bs->tmp_seq, 1));
	fd = openat(bs->tmp_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		saved = errno;
		return error_set(err, error_from_errno(saved),
				 "cache directory '%s' is not writable: create '%s/tmp/%s': %s",
				 bs->dir, bs->dir, name, strerror(saved));
	}
	close(fd);
	unlinkat(bs->tmp_fd, name, 0);
	if (fstatvfs(bs->tmp_fd, &sv) != 0) {
		saved = errno;
		return error_set(err, error_from_errno(saved), "cache directory '%s': statvfs: %s",
				 bs->dir, strerror(saved));
	}
	/* Root may use the blocks the filesystem reserves for it. */
	fs_free = (uint64_t)(geteuid() == 0 ? sv.f_bfree : sv.f_bavail) * sv.f_frsize;
	pthread_mutex_lock(&bs->mu);
	used = bs->used;
	reserved = bs->reserved;
	pthread_mutex_unlock(&bs->mu);
	return blockstore_room_check(bs->dir, fs_free, bs->capacity, used, reserved,
				     bs->block_file, err);
}
