/*
 * store_file.c - the file:// backend: the regular files under a directory
 * are the objects, their paths relative to it are the keys.
 *
 * Keys are checked so that no key can name a path outside the directory
 * (no absolute keys, no "." or ".." segments, no empty segments), and a
 * key is opened from the directory so that a symbolic link in the tree is
 * followed while it stays inside the directory, and one that leads out
 * (to /etc/shadow, or to another dataset's directory) is no object:
 * listings leave it out, and get and head refuse it (open_beneath).
 * Listing does not descend into linked directories, so that a link loop
 * cannot make it run forever. The directory itself is opened by its path
 * at each call, as the administrator may replace it (a link flipped to a
 * new version of a dataset).
 *
 * put, for the administrator's tools, resolves the key's directory as
 * reads do (a link that leads out is refused), writes a temporary file
 * ending in ".granary-tmp" there and renames it over the key; such files
 * are never objects. There is no get_stream: store.c builds it from get,
 * which is a pread loop.
 *
 * The store keeps no mutable state besides the atomic counters, so every
 * call is thread-safe.
 */
#include "store/store_impl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/array.h"
#include "common/fileio.h"

/* Files being written by our own tools; never objects. */
#define TMP_SUFFIX ".granary-tmp"

#define LIST_MAX_KEYS 1000

struct store_file {
	struct store base; /* first: a struct store * is a struct store_file * */
	char *root;        /* absolute, no trailing '/' (except "/" itself) */
};

/* Whether the descriptor fd lies in the directory root_fd is: its path, as
 * the kernel resolved it, is the directory's or below it. */
static bool fd_inside(int fd, int root_fd)
{
	char self[64], at[PATH_MAX], root[PATH_MAX];
	ssize_t n, r;

	snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
	n = readlink(self, at, sizeof(at) - 1);
	snprintf(self, sizeof(self), "/proc/self/fd/%d", root_fd);
	r = readlink(self, root, sizeof(root) - 1);
	if (n <= 0 || r <= 0)
		return false;
	at[n] = root[r] = '\0';
	if (strcmp(root, "/") == 0)
		return true;
	return strncmp(at, root, (size_t)r) == 0 && (at[r] == '\0' || at[r] == '/');
}

/*
 * Opens rel (a key, or a directory's key prefix; "" is the root itself)
 * from the store's directory, where the resolution must end: a symbolic
 * link that leads out fails with EXDEV. openat2 (RESOLVE_BENEATH) resolves
 * every step inside the directory, retried while a rename elsewhere makes
 * it answer EAGAIN; where it refuses an absolute link (which may land
 * inside), and where the kernel or a seccomp profile has no openat2, the
 * key is opened following its links and kept only when the kernel says
 * it landed inside. Returns the descriptor, or -1 with errno.
 */
static int open_beneath(const struct store_file *sf, const char *rel, uint64_t flags)
{
	struct open_how how = { .flags = flags | O_CLOEXEC,
				.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
	const char *name = *rel ? rel : ".";
	int root_fd = open(sf->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	int fd = -1, saved, tries = 0;

	if (root_fd < 0)
		return -1;
	do
		fd = (int)syscall(SYS_openat2, root_fd, name, &how, sizeof(how));
	while (fd < 0 && errno == EAGAIN && ++tries < 16);
	if (fd < 0 && (errno == EXDEV || errno == ENOSYS || errno == EPERM)) {
		int path = openat(root_fd, name, O_PATH | O_CLOEXEC);

		fd = -1;
		if (path >= 0 && !fd_inside(path, root_fd)) {
			errno = EXDEV;
		} else if (path >= 0 && (flags & O_PATH)) {
			fd = path;
			path = -1;
		} else if (path >= 0) {
			char self[64];

			/* The file it found, not the path again. */
			snprintf(self, sizeof(self), "/proc/self/fd/%d", path);
			fd = open(self, (int)flags | O_CLOEXEC);
		}
		saved = errno;
		if (path >= 0)
			close(path);
		errno = saved;
	}
	saved = errno;
	close(root_fd);
	errno = saved;
	return fd;
}

/* stat of rel resolved as open_beneath does; 0, or -1 with errno. */
static int stat_beneath(const struct store_file *sf, const char *rel, struct stat *sb)
{
	int fd = open_beneath(sf, rel, O_PATH);
	int rc, saved;

	if (fd < 0)
		return -1;
	rc = fstat(fd, sb);
	saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

static void count_request(struct store *st)
{
	atomic_fetch_add_explicit(&st->requests, 1, memory_order_relaxed);
}

static int has_tmp_suffix(const char *name)
{
	size_t n = strlen(name);
	size_t m = sizeof(TMP_SUFFIX) - 1;

	return n >= m && strcmp(name + n - m, TMP_SUFFIX) == 0;
}

/* 0 if every '/'-separated segment of s[0..len) is a plain name. */
static int check_segments(const char *s, size_t len)
{
	size_t i = 0;

	for (;;) {
		size_t j = i;

		while (j < len && s[j] != '/')
			j++;
		if (j == i)
			return -1; /* empty: leading, doubled or trailing '/' */
		if ((j - i == 1 && s[i] == '.') ||
		    (j - i == 2 && s[i] == '.' && s[i + 1] == '.'))
			return -1;
		if (j == len)
			return 0;
		i = j + 1;
	}
}

/* Checks key (root/key within PATH_MAX) and, unless path is NULL, writes
 * root/key into path (PATH_MAX bytes). */
static enum error_code key_path(const struct store_file *sf, const char *key,
				char *path, struct error *err)
{
	size_t n = key ? strlen(key) : 0;
	int w = 0;

	if (n == 0)
		return error_set(err, ERR_INVALID, "file store '%s': empty key", sf->root);
	/* A trailing '/' is let through: such a key is a directory, not found. */
	if (check_segments(key, key[n - 1] == '/' ? n - 1 : n) < 0)
		return error_set(err, ERR_INVALID,
				 "file store '%s': key '%s' is absolute or has an empty, '.' or '..' segment",
				 sf->root, key);
	w = snprintf(path, path ? PATH_MAX : 0, "%s/%s", strcmp(sf->root, "/") == 0 ? "" : sf->root,
		     key);
	if (w < 0 || w >= PATH_MAX)
		return error_set(err, ERR_INVALID, "file store '%s': key '%s' is too long",
				 sf->root, key);
	return ERR_OK;
}

/*
 * The ETag is a version tag, not a content hash: hashing the data would
 * read every byte on each head. Device, inode, size and mtime change when
 * a file is replaced or rewritten, which is what If-Match has to catch.
 */
static void file_etag(const struct stat *sb, char *etag, size_t size)
{
	uint64_t parts[5] = {
		(uint64_t)sb->st_dev,
		(uint64_t)sb->st_ino,
		(uint64_t)sb->st_size,
		(uint64_t)sb->st_mtim.tv_sec,
		(uint64_t)sb->st_mtim.tv_nsec,
	};
	uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a 64 */

	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		for (int b = 0; b < 8; b++) {
			h ^= (parts[i] >> (b * 8)) & 0xff;
			h *= 0x100000001b3ULL;
		}
	}
	snprintf(etag, size, "%016llx", (unsigned long long)h);
}

static enum error_code stat_error(const struct store_file *sf, const char *op,
				  const char *key, int errnum, struct error *err)
{
	if (errnum == ENOENT || errnum == ENOTDIR)
		return error_set(err, ERR_NOT_FOUND, "%s '%s' in '%s': no such object",
				 op, key, sf->root);
	if (errnum == EXDEV)
		return error_set(err, ERR_PERMISSION,
				 "%s '%s' in '%s': a symbolic link leads out of the directory",
				 op, key, sf->root);
	if (errnum == ENAMETOOLONG)
		return error_set(err, ERR_INVALID, "%s '%s' in '%s': name too long",
				 op, key, sf->root);
	return error_set(err, error_from_errno(errnum), "%s '%s' in '%s': %s",
			 op, key, sf->root, strerror(errnum));
}

static enum error_code not_object(const struct store_file *sf, const char *op,
				  const char *key, struct error *err)
{
	return error_set(err, ERR_NOT_FOUND, "%s '%s' in '%s': not a regular file",
			 op, key, sf->root);
}

static enum error_code file_get(struct store *st, const char *key, uint64_t off,
				size_t len, void *buf, size_t *got,
				const char *etag, uint64_t until_ms, struct error *err)
{
	struct store_file *sf = (struct store_file *)st;
	char cur[32];
	struct stat sb;
	size_t want = 0;
	size_t total = 0;
	int fd = -1;
	enum error_code rc = ERR_OK;

	(void)until_ms; /* a local file does not stall: no deadline to keep */
	*got = 0;
	count_request(st);
	rc = key_path(sf, key, NULL, err);
	if (rc != ERR_OK)
		return rc;
	if (has_tmp_suffix(key))
		return not_object(sf, "get", key, err);
	/* O_NONBLOCK: opening a FIFO must not wait for a writer before fstat
	 * can tell it is not an object; regular files ignore the flag. */
	fd = open_beneath(sf, key, O_RDONLY | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return stat_error(sf, "get", key, errno, err);
	if (fstat(fd, &sb) < 0) {
		rc = stat_error(sf, "get", key, errno, err);
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		rc = not_object(sf, "get", key, err);
		goto out;
	}
	file_etag(&sb, cur, sizeof(cur));
	if (etag && *etag && strcmp(etag, cur) != 0) {
		/* As S3's 412: only the ETag asked for. The object's own would
		 * let a caller read versions the listing never gave it. */
		rc = error_set(err, ERR_NOT_FOUND, "get '%s' in '%s': object changed (ETag is no longer '%s')",
			       key, sf->root, etag);
		goto out;
	}
	/* As S3: a range must start inside the object, except 0 of an empty one. */
	if (off > (uint64_t)sb.st_size ||
	    (off == (uint64_t)sb.st_size && len > 0 && sb.st_size > 0)) {
		rc = error_set(err, ERR_RANGE,
			       "get '%s' in '%s': offset %llu is past the end (size %llu)",
			       key, sf->root, (unsigned long long)off,
			       (unsigned long long)sb.st_size);
		goto out;
	}
	want = (uint64_t)sb.st_size - off < len ? (size_t)((uint64_t)sb.st_size - off) : len;
	while (total < want) {
		ssize_t n = pread(fd, (char *)buf + total, want - total, (off_t)(off + total));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int saved = errno;

			rc = error_set(err, error_from_errno(saved), "get '%s' in '%s': %s",
				       key, sf->root, strerror(saved));
			goto out;
		}
		if (n == 0)
			break; /* truncated under us: return what is there */
		total += (size_t)n;
	}
	*got = total;
	atomic_fetch_add_explicit(&st->bytes_read, total, memory_order_relaxed);
out:
	close(fd);
	return rc;
}

static enum error_code file_head(struct store *st, const char *key,
				 struct store_object *info, struct error *err)
{
	struct store_file *sf = (struct store_file *)st;
	struct stat sb;
	enum error_code rc = ERR_OK;

	memset(info, 0, sizeof(*info));
	count_request(st);
	rc = key_path(sf, key, NULL, err);
	if (rc != ERR_OK)
		return rc;
	if (has_tmp_suffix(key))
		return not_object(sf, "head", key, err);
	if (stat_beneath(sf, key, &sb) < 0)
		return stat_error(sf, "head", key, errno, err);
	if (!S_ISREG(sb.st_mode))
		return not_object(sf, "head", key, err);
	info->key = strdup(key);
	if (!info->key)
		return error_set(err, ERR_NOMEM, "head '%s' in '%s': out of memory", key, sf->root);
	info->size = (uint64_t)sb.st_size;
	info->mtime = (int64_t)sb.st_mtim.tv_sec;
	file_etag(&sb, info->etag, sizeof(info->etag));
	return ERR_OK;
}

/* A key that collides with the tree's shape is the caller's mistake. */
static enum error_code put_error(const struct store_file *sf, const char *key, int errnum,
				 struct error *err)
{
	if (errnum == EXDEV)
		return stat_error(sf, "put", key, errnum, err);
	return error_set(err,
			 errnum == EISDIR || errnum == ENOTDIR ? ERR_INVALID : error_from_errno(errnum),
			 "put '%s' in '%s': %s", key, sf->root, strerror(errnum));
}

/*
 * The directory key's object goes in, opened (O_PATH) as reads open keys
 * (open_beneath: a symbolic link that stays inside is followed, one that
 * leads out fails with EXDEV), the directories above it that are missing
 * made one at a time in the one resolved before. -1 with errno, or the
 * descriptor.
 */
static int open_put_dir(const struct store_file *sf, const char *key)
{
	const char *slash = strrchr(key, '/');
	const size_t n = slash ? (size_t)(slash - key) : 0;
	char rel[PATH_MAX];
	int fd = open_beneath(sf, "", O_PATH | O_DIRECTORY);

	memcpy(rel, key, n); /* key_path checked that it fits */
	rel[n] = '\0';
	for (size_t at = 0; fd >= 0 && at < n;) {
		char *end = strchr(rel + at, '/');
		int next, saved;

		if (end)
			*end = '\0';
		if (mkdirat(fd, rel + at, 0755) < 0 && errno != EEXIST) {
			next = -1;
		} else {
			/* rel is the prefix up to this segment now */
			next = open_beneath(sf, rel, O_PATH | O_DIRECTORY);
		}
		saved = errno;
		close(fd);
		errno = saved;
		fd = next;
		at = end ? (size_t)(end - rel) + 1 : n;
		if (end)
			*end = '/';
	}
	return fd;
}

/*
 * Writes to a unique temporary name in the target directory, then renames
 * it over the key: readers see the old object or the new one, never part
 * of one. The temporary name ends in TMP_SUFFIX so that listings skip it
 * and a crash leaves only a file that is recognisably litter. Every step
 * is taken from the key's directory as open_put_dir resolved it, so that
 * no symbolic link in the tree makes a put write outside it.
 */
static enum error_code file_put(struct store *st, const char *key, const void *data,
				size_t len, struct error *err)
{
	struct store_file *sf = (struct store_file *)st;
	const char *slash = strrchr(key, '/');
	const char *name = slash ? slash + 1 : key;
	char tmp[NAME_MAX + 1];
	enum error_code rc = ERR_OK;
	int dfd = -1, fd = -1, saved = 0, w = 0;

	count_request(st);
	rc = key_path(sf, key, NULL, err);
	if (rc != ERR_OK)
		return rc;
	if (key[strlen(key) - 1] == '/' || has_tmp_suffix(key))
		return error_set(err, ERR_INVALID,
				 "put '%s' in '%s': key ends in '/' or '%s'", key, sf->root,
				 TMP_SUFFIX);
	dfd = open_put_dir(sf, key);
	if (dfd < 0)
		return put_error(sf, key, errno, err);
	for (int tries = 0; fd < 0 && tries < 16; tries++) {
		unsigned r = 0;

		if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
			r = (unsigned)getpid() * 2654435761u + (unsigned)tries;
		w = snprintf(tmp, sizeof(tmp), "%s.%08x%s", name, r, TMP_SUFFIX);
		if (w < 0 || w >= (int)sizeof(tmp)) {
			close(dfd);
			return error_set(err, ERR_INVALID, "put '%s' in '%s': key is too long",
					 key, sf->root);
		}
		fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (fd < 0 && errno != EEXIST)
			break;
	}
	if (fd < 0) {
		saved = errno;
		close(dfd);
		return put_error(sf, key, saved, err);
	}
	/* Objects are for every reader of the tree, whatever the umask. */
	if (fchmod(fd, 0644) < 0)
		goto fail_errno;
	if (fileio_write_all(fd, data, len) < 0)
		goto fail_errno;
	/* Without it a crash after the rename can leave an empty object. */
	if (fsync(fd) < 0)
		goto fail_errno;
	if (close(fd) < 0) {
		fd = -1;
		goto fail_errno;
	}
	fd = -1;
	if (renameat(dfd, tmp, dfd, name) < 0)
		goto fail_errno;
	close(dfd);
	return ERR_OK;

fail_errno:
	saved = errno;
	rc = put_error(sf, key, saved, err);
	if (fd >= 0)
		close(fd);
	unlinkat(dfd, tmp, 0);
	close(dfd);
	return rc;
}

/* One directory entry; name has a '/' appended for directories so that
 * sorting by it gives S3's bytewise order of the full keys. */
struct entry {
	char *name;
	int is_dir;
	int is_link; /* a symbolic link to a file: resolved beneath the root */
};

/* State of one list call. */
struct lister {
	struct store_file *sf;
	const char *token;      /* results are strictly after it; NULL = none */
	int fold;               /* delimiter "/": one directory, subdirs fold */
	unsigned max_keys;
	unsigned count;         /* objects + prefixes in the page */
	int truncated;          /* found one more result past max_keys */
	char *last;             /* last result, the next token if truncated */
	struct store_list_page *page;
	size_t objects_cap;
	size_t prefixes_cap;
	char key[PATH_MAX];     /* the key (relative path) being walked */
	struct error *err;
};

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct entry *)a)->name, ((const struct entry *)b)->name);
}

static void entries_free(struct entry *e, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(e[i].name);
	free(e);
}

/*
 * Kind of a directory entry without a stat where d_type tells: 1 directory,
 * 0 regular file, -1 anything else (or gone). Links to files count as
 * files; links to directories are not followed (loops).
 */
static int entry_kind(int dfd, const struct dirent *de)
{
	struct stat sb;

	switch (de->d_type) {
	case DT_DIR:
		return 1;
	case DT_REG:
		return 0;
	case DT_LNK:
		if (fstatat(dfd, de->d_name, &sb, 0) < 0)
			return -1;
		return S_ISREG(sb.st_mode) ? 0 : -1;
	case DT_UNKNOWN:
		if (fstatat(dfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
			return -1;
		if (S_ISDIR(sb.st_mode))
			return 1;
		if (S_ISLNK(sb.st_mode) && fstatat(dfd, de->d_name, &sb, 0) < 0)
			return -1;
		return S_ISREG(sb.st_mode) ? 0 : -1;
	default:
		return -1;
	}
}

static enum error_code dir_error(struct lister *l, const char *rel, int errnum)
{
	return error_set(l->err, error_from_errno(errnum), "list '%s' in '%s': %s",
			 rel, l->sf->root, strerror(errnum));
}

/*
 * Reads the objects and subdirectories of the open directory dfd, keeping
 * names that start with match, sorted.
 */
static enum error_code read_entries(struct lister *l, int dfd, const char *match,
				    struct entry **out, size_t *nout)
{
	DIR *d = NULL;
	struct dirent *de = NULL;
	struct entry *e = NULL;
	size_t n = 0;
	size_t cap = 0;
	size_t mlen = strlen(match);
	enum error_code rc = ERR_OK;

	*out = NULL;
	*nout = 0;
	dfd = dup(dfd); /* closedir closes it; the caller keeps its own */
	if (dfd < 0)
		return dir_error(l, l->key, errno);
	d = fdopendir(dfd);
	if (!d) {
		rc = dir_error(l, l->key, errno);
		close(dfd);
		return rc;
	}
	for (;;) {
		int kind = 0;
		size_t len = 0;

		errno = 0;
		de = readdir(d);
		if (!de) {
			if (errno) {
				rc = dir_error(l, l->key, errno);
				goto fail;
			}
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (strncmp(de->d_name, match, mlen) != 0)
			continue;
		kind = entry_kind(dirfd(d), de);
		if (kind < 0 || (kind == 0 && has_tmp_suffix(de->d_name)))
			continue;
		if (array_grow((void **)&e, &cap, n + 1, sizeof(*e)) < 0)
			goto nomem;
		len = strlen(de->d_name);
		e[n].name = malloc(len + 2);
		if (!e[n].name)
			goto nomem;
		memcpy(e[n].name, de->d_name, len);
		e[n].name[len] = kind ? '/' : '\0';
		e[n].name[len + 1] = '\0';
		e[n].is_dir = kind;
		e[n].is_link = de->d_type == DT_LNK || de->d_type == DT_UNKNOWN;
		n++;
	}
	closedir(d);
	if (n > 1)
		qsort(e, n, sizeof(*e), cmp_entry);
	*out = e;
	*nout = n;
	return ERR_OK;

nomem:
	rc = error_set(l->err, ERR_NOMEM, "list '%s' in '%s': out of memory", l->key, l->sf->root);
fail:
	entries_free(e, n);
	closedir(d);
	return rc;
}

/* Whether entry e of the directory whose key prefix is l->key (klen
 * bytes, ending in '/') is an object: a file, or a link to one that stays
 * inside the root. l->key is as it was on return. */
static bool is_object(struct lister *l, size_t klen, const struct entry *e)
{
	size_t len = strlen(e->name);
	struct stat sb;
	bool yes;

	if (!e->is_link)
		return true;
	if (klen + len >= sizeof(l->key))
		return false;
	memcpy(l->key + klen, e->name, len + 1);
	yes = stat_beneath(l->sf, l->key, &sb) == 0 && S_ISREG(sb.st_mode);
	l->key[klen] = '\0';
	return yes;
}

/* Whether the subdirectory name of dfd, whose key prefix is l->key (klen
 * bytes, ending in '/'), holds an object at any depth: S3 has no empty
 * "directories", so an empty one, or one of links that lead out, is no
 * common prefix. l->key is as it was on return. */
static enum error_code has_object(struct lister *l, int dfd, const char *name, size_t klen,
				  int *yes)
{
	struct entry *e = NULL;
	size_t n = 0;
	int sub = -1;
	enum error_code rc = ERR_OK;

	*yes = 0;
	sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sub < 0)
		return errno == ENOENT || errno == ELOOP || errno == ENOTDIR
			       ? ERR_OK
			       : dir_error(l, name, errno);
	rc = read_entries(l, sub, "", &e, &n);
	/* Any file at this level answers without opening subdirectories. */
	for (size_t i = 0; i < n && rc == ERR_OK && !*yes; i++)
		*yes = !e[i].is_dir && is_object(l, klen, &e[i]);
	for (size_t i = 0; i < n && rc == ERR_OK && !*yes; i++) {
		size_t len = strlen(e[i].name);

		if (!e[i].is_dir || klen + len >= sizeof(l->key))
			continue;
		memcpy(l->key + klen, e[i].name, len + 1); /* ends in '/' */
		e[i].name[len - 1] = '\0';
		rc = has_object(l, sub, e[i].name, klen + len, yes);
		l->key[klen] = '\0';
	}
	entries_free(e, n);
	close(sub);
	return rc;
}

/* Adds the result in l->key: an object (with sb) or a common prefix. */
static enum error_code emit(struct lister *l, const struct stat *sb)
{
	struct store_list_page *pg = l->page;
	char *copy = NULL;

	if (l->count == l->max_keys) {
		l->truncated = 1;
		return ERR_OK;
	}
	copy = strdup(l->key);
	if (!copy)
		goto nomem;
	if (sb) {
		struct store_object *o = NULL;

		if (array_grow((void **)&pg->objects, &l->objects_cap, pg->nobjects + 1,
			 sizeof(*pg->objects)) < 0)
			goto nomem;
		o = &pg->objects[pg->nobjects++];
		memset(o, 0, sizeof(*o));
		o->key = copy;
		o->size = (uint64_t)sb->st_size;
		o->mtime = (int64_t)sb->st_mtim.tv_sec;
		file_etag(sb, o->etag, sizeof(o->etag));
	} else {
		if (array_grow((void **)&pg->prefixes, &l->prefixes_cap, pg->nprefixes + 1,
			 sizeof(*pg->prefixes)) < 0)
			goto nomem;
		pg->prefixes[pg->nprefixes++] = copy;
	}
	l->last = copy;
	l->count++;
	return ERR_OK;
nomem:
	free(copy);
	return error_set(l->err, ERR_NOMEM, "list '%s' in '%s': out of memory", l->key,
			 l->sf->root);
}

/*
 * Walks the open directory dfd, whose key prefix is l->key
 * (l->key has length klen), in S3 order, keeping names that start with
 * match. Stops as soon as one result past the page is seen.
 */
static enum error_code walk(struct lister *l, int dfd, size_t klen, const char *match)
{
	struct entry *e = NULL;
	size_t n = 0;
	enum error_code rc = ERR_OK;

	rc = read_entries(l, dfd, match, &e, &n);
	if (rc != ERR_OK)
		goto out;
	for (size_t i = 0; i < n && !l->truncated; i++) {
		size_t len = strlen(e[i].name);
		int after = 0;

		if (klen + len >= sizeof(l->key))
			continue; /* cannot be a key: open() would refuse it */
		memcpy(l->key + klen, e[i].name, len + 1);
		after = !l->token || strcmp(l->key, l->token) > 0;

		if (!e[i].is_dir) {
			struct stat sb;

			if (!after)
				continue;
			/* A link that leads out of the root is no object; any
			 * other entry is taken as it is, not followed (a link
			 * swapped in since readdir is then no regular file). */
			if ((e[i].is_link ? stat_beneath(l->sf, l->key, &sb)
					  : fstatat(dfd, e[i].name, &sb, AT_SYMLINK_NOFOLLOW)) < 0) {
				/* Removed since readdir, a dangling link, or one
				 * that leads out: no object. Anything else fails
				 * the listing rather than leave an object out. */
				if (errno == ENOENT || errno == ENOTDIR || errno == EXDEV ||
				    errno == ELOOP)
					continue;
				rc = dir_error(l, l->key, errno);
				goto out;
			}
			if (!S_ISREG(sb.st_mode))
				continue;
			rc = emit(l, &sb);
		} else if (l->fold) {
			int yes = 0;

			if (!after)
				continue;
			e[i].name[len - 1] = '\0';
			rc = has_object(l, dfd, e[i].name, klen + len, &yes);
			if (rc == ERR_OK && yes)
				rc = emit(l, NULL);
		} else {
			int sub = -1;

			/* Every key below starts with this prefix, so a token
			 * past the prefix that does not start with it is past
			 * the whole subtree. */
			if (!after && strncmp(l->token, l->key, klen + len) != 0)
				continue;
			e[i].name[len - 1] = '\0';
			sub = openat(dfd, e[i].name,
				     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0) {
				/* Removed, or swapped for a link, since readdir. */
				if (errno == ENOENT || errno == ELOOP || errno == ENOTDIR)
					continue;
				rc = dir_error(l, l->key, errno);
				goto out;
			}
			rc = walk(l, sub, klen + len, "");
			close(sub);
		}
		if (rc != ERR_OK)
			goto out;
	}
out:
	l->key[klen] = '\0';
	entries_free(e, n);
	return rc;
}

static enum error_code file_list(struct store *st, const char *prefix,
				 const char *delimiter, const char *token,
				 unsigned max_keys, struct store_list_page *page,
				 struct error *err)
{
	struct store_file *sf = (struct store_file *)st;
	struct lister *l = NULL;
	const char *slash = NULL;
	size_t dlen = 0;
	int dfd = -1;
	enum error_code rc = ERR_OK;

	memset(page, 0, sizeof(*page));
	count_request(st);
	if (!prefix)
		prefix = "";
	if (delimiter && *delimiter && strcmp(delimiter, "/") != 0)
		return error_set(err, ERR_UNSUPPORTED,
				 "list '%s' in '%s': only the delimiter '/' is supported",
				 prefix, sf->root);

	/* Only the directory named by the prefix up to its last '/' can match. */
	slash = strrchr(prefix, '/');
	dlen = slash ? (size_t)(slash - prefix) + 1 : 0;
	if (dlen > 0 && check_segments(prefix, dlen - 1) < 0)
		return ERR_OK; /* no key has such a prefix: empty page */
	if (dlen >= PATH_MAX)
		return ERR_OK;

	l = calloc(1, sizeof(*l));
	if (!l)
		return error_set(err, ERR_NOMEM, "list '%s' in '%s': out of memory", prefix, sf->root);
	l->sf = sf;
	l->token = token && *token ? token : NULL;
	l->fold = delimiter && *delimiter;
	l->max_keys = max_keys == 0 || max_keys > LIST_MAX_KEYS ? LIST_MAX_KEYS : max_keys;
	l->page = page;
	l->err = err;
	memcpy(l->key, prefix, dlen);
	l->key[dlen] = '\0';

	dfd = open_beneath(sf, l->key, O_RDONLY | O_DIRECTORY);
	if (dfd < 0) {
		int saved = errno;

		/* Nothing under that prefix, or a link out of the root. */
		if (saved == ENOENT || saved == ENOTDIR || saved == EXDEV)
			goto done;
		rc = dir_error(l, l->key, saved);
		goto fail;
	}
	rc = walk(l, dfd, dlen, prefix + dlen);
	if (rc != ERR_OK)
		goto fail;
	if (l->truncated) {
		page->next_token = strdup(l->last);
		if (!page->next_token) {
			rc = error_set(err, ERR_NOMEM, "list '%s' in '%s': out of memory",
				       prefix, sf->root);
			goto fail;
		}
	}
done:
	if (dfd >= 0)
		close(dfd);
	free(l);
	return ERR_OK;

fail:
	store_list_page_release(page);
	if (dfd >= 0)
		close(dfd);
	free(l);
	return rc;
}

static void file_free(struct store *st)
{
	struct store_file *sf = (struct store_file *)st;

	if (!sf)
		return;
	free(sf->root);
	free(sf->base.desc);
	free(sf);
}

static const struct store_ops file_ops = {
	.put = file_put,
	.get = file_get,
	.head = file_head,
	.list = file_list,
	.free = file_free,
};

enum error_code store_file_open(const char *dir, const struct store_config *cfg,
				struct store **out, struct error *err)
{
	struct store_file *sf = NULL;
	struct stat sb;
	size_t n = 0;
	int saved = 0;
	enum error_code rc = ERR_OK;

	*out = NULL;
	if (!dir || dir[0] != '/')
		return error_set(err, ERR_INVALID, "file store '%s': not an absolute path",
				 dir ? dir : "");
	if (stat(dir, &sb) < 0) {
		saved = errno;
		if (saved == ENOENT || saved == ENOTDIR)
			return error_set(err, ERR_NOT_FOUND, "file store '%s': no such directory", dir);
		return error_set(err, error_from_errno(saved), "file store '%s': %s", dir,
				 strerror(saved));
	}
	if (!S_ISDIR(sb.st_mode))
		return error_set(err, ERR_INVALID, "file store '%s': not a directory", dir);

	sf = calloc(1, sizeof(*sf));
	if (!sf)
		goto nomem;
	sf->base.ops = &file_ops;
	sf->root = strdup(dir);
	if (!sf->root)
		goto nomem;
	n = strlen(sf->root);
	while (n > 1 && sf->root[n - 1] == '/')
		sf->root[--n] = '\0';
	if (asprintf(&sf->base.desc, "file://%s", sf->root) < 0) {
		sf->base.desc = NULL;
		goto nomem;
	}
	*out = &sf->base;
	return ERR_OK;

nomem:
	rc = error_set(err, ERR_NOMEM, "file store '%s': out of memory", dir);
	file_free(sf ? &sf->base : NULL);
	return rc;
}
