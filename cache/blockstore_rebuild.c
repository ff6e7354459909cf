/*
 * blockstore_rebuild.c - the block store's index, rebuilt at open from the
 * block files: their headers read in parallel, bad files removed, the
 * blocks ordered by age; and the writers' leftovers cleared.
 */
#include "cache/blockstore_impl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/array.h"
#include "common/cpu.h"
#include "common/fileio.h"

/*
 * Header reads wait on the disk, not the CPU: with a cold cache the number
 * of reads in flight sets the pace. On a 2-vCPU VM, 100,000 blocks took
 * about 3 s with 4 threads, 1.6 s with 16 and 1.2-1.6 s with 32; warm, the
 * count hardly matters (0.25 s). So: 4 per CPU, at least 32, at most 64.
 */
#define REBUILD_THREADS_PER_CPU 4
#define REBUILD_MIN_THREADS 32
#define REBUILD_MAX_THREADS 64

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

/*
 * Calls each(de, arg) for the entries of directory dir_fd but "." and
 * "..", read through a descriptor of its own, until each returns -1.
 * Returns 0, ENOMEM when each stopped the walk, or the errno of the open
 * or the read that failed.
 */
static int each_entry(int dir_fd, int (*each)(const struct dirent *de, void *arg), void *arg)
{
	struct dirent *de = NULL;
	DIR *d = NULL;
	int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int saved = 0;

	if (fd < 0 || !(d = fdopendir(fd))) {
		saved = errno;
		if (fd >= 0)
			close(fd);
		return saved;
	}
	for (errno = 0; (de = readdir(d)) != NULL; errno = 0) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (each(de, arg) < 0)
			break;
	}
	saved = de ? ENOMEM : errno;
	closedir(d);
	return saved;
}

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
	if (array_grow((void **)&w->found, &w->cap, w->nfound + 1, sizeof(*w->found)) < 0)
		return -1;
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
	ds = blockstore_dataset_get_locked(bs, name.p, name.n);
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

/* What rebuild_dir lists of one HH directory. */
struct dir_listing {
	struct rebuild_worker *w;
	const char *hh;
	int dfd;
	struct dir_item *items;
	size_t nitems, cap;
};

static int list_block_file(const struct dirent *de, void *arg)
{
	struct dir_listing *l = arg;
	struct blockstore *bs = l->w->rb->bs;

	if (de->d_type == DT_DIR) {
		log_warn("unexpected directory in block store left alone", LOG_S("dir", bs->dir),
			 LOG_S("sub", l->hh), LOG_S("name", de->d_name));
	} else if (strlen(de->d_name) != 2 * BLOCK_HASH_LEN) {
		remove_bad(bs, l->dfd, l->hh, de->d_name, "unknown name", &l->w->corrupt);
	} else {
		if (array_grow((void **)&l->items, &l->cap, l->nitems + 1, sizeof(*l->items)) < 0) {
			l->w->oom = 1;
			return -1;
		}
		l->items[l->nitems].ino = de->d_ino;
		memcpy(l->items[l->nitems].name, de->d_name, sizeof(l->items[l->nitems].name));
		l->nitems++;
	}
	return 0;
}

/*
 * Lists one HH directory, then checks its files in inode order: readdir
 * gives hash order, and with a cold cache visiting inodes (and the data
 * allocated near them) in order turns scattered reads into nearly
 * sequential ones.
 */
static void rebuild_dir(struct rebuild_worker *w, const char *hh)
{
	struct dir_listing l = { .w = w, .hh = hh };
	int saved = 0;

	l.dfd = openat(w->rb->bs->blocks_fd, hh, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	saved = l.dfd < 0 ? errno : each_entry(l.dfd, list_block_file, &l);
	if (saved && !w->oom) {
		if (!w->dir_errno) {
			w->dir_errno = saved;
			memcpy(w->dir_failed, hh, 3);
		}
	} else if (!saved) {
		if (l.nitems > 1)
			qsort(l.items, l.nitems, sizeof(*l.items), cmp_inode);
		for (size_t i = 0; i < l.nitems && !w->oom; i++)
			rebuild_file(w, l.dfd, hh, l.items[i].name);
	}
	free(l.items);
	if (l.dfd >= 0)
		close(l.dfd);
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

/* What list_block_dirs gathers. */
struct top_listing {
	struct blockstore *bs;
	struct rebuild *rb;
	size_t cap;
	uint64_t removed;
};

static int list_block_dir(const struct dirent *de, void *arg)
{
	struct top_listing *l = arg;
	struct rebuild *rb = l->rb;

	if (is_hh(de->d_name) && (de->d_type == DT_DIR || de->d_type == DT_UNKNOWN)) {
		if (array_grow((void **)&rb->dirs, &l->cap, rb->ndirs + 1, sizeof(*rb->dirs)) < 0)
			return -1;
		memcpy(rb->dirs[rb->ndirs++], de->d_name, 3);
	} else if (de->d_type == DT_DIR) {
		log_warn("unexpected directory in block store left alone", LOG_S("dir", l->bs->dir),
			 LOG_S("name", de->d_name));
	} else {
		remove_bad(l->bs, l->bs->blocks_fd, ".", de->d_name, "unknown name", &l->removed);
	}
	return 0;
}

/* Lists DIR/blocks: HH directories into rb, anything else removed. */
static enum error_code list_block_dirs(struct blockstore *bs, struct rebuild *rb,
				       struct error *err)
{
	struct top_listing l = { .bs = bs, .rb = rb };
	int saved = each_entry(bs->blocks_fd, list_block_dir, &l);

	bs->st.corrupt += l.removed;
	if (saved == ENOMEM)
		return error_set(err, ERR_NOMEM, "open block store '%s': out of memory", bs->dir);
	if (saved)
		return error_set(err, error_from_errno(saved),
				 "open block store '%s': read '%s/blocks': %s", bs->dir, bs->dir,
				 strerror(saved));
	return ERR_OK;
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
enum error_code blockstore_rebuild_index(struct blockstore *bs, struct error *err)
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
		blockstore_remove_dying(bs, e);
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

static int remove_leftover(const struct dirent *de, void *arg)
{
	struct blockstore *bs = arg;

	if (unlinkat(bs->tmp_fd, de->d_name, 0) < 0) {
		int saved = errno;

		log_warn("remove leftover temp file failed", LOG_S("dir", bs->dir),
			 LOG_S("file", de->d_name), LOG_S("cause", strerror(saved)));
	}
	return 0;
}

/* Removes what writers left in DIR/tmp: never published, never valid. */
enum error_code blockstore_clear_tmp(struct blockstore *bs, struct error *err)
{
	int saved = each_entry(bs->tmp_fd, remove_leftover, bs);

	if (saved)
		return error_set(err, error_from_errno(saved),
				 "open block store '%s': clear '%s/tmp': %s", bs->dir, bs->dir,
				 strerror(saved));
	return ERR_OK;
}
