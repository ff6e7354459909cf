/*
 * fileio.c - whole reads and writes, and atomic file replacement.
 */
#include "common/fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int fileio_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int fileio_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

#define DIRECT_UNIT ((uint64_t)4096)

/* The buffers the calling thread keeps (fileio_thread_buf). */
struct thread_bufs {
	char *data[FILEIO_BUF_USES];
	size_t size[FILEIO_BUF_USES];
};

static pthread_key_t thread_bufs_key;
static pthread_once_t thread_bufs_once = PTHREAD_ONCE_INIT;

static void thread_bufs_free(void *p)
{
	struct thread_bufs *b = p;

	for (int i = 0; i < FILEIO_BUF_USES; i++)
		free(b->data[i]);
	free(b);
}

static void thread_bufs_key_init(void)
{
	pthread_key_create(&thread_bufs_key, thread_bufs_free);
}

char *fileio_thread_buf(enum fileio_thread_use use, size_t size)
{
	struct thread_bufs *b;

	pthread_once(&thread_bufs_once, thread_bufs_key_init);
	b = pthread_getspecific(thread_bufs_key);
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b || pthread_setspecific(thread_bufs_key, b) != 0) {
			free(b);
			return NULL;
		}
	}
	if (size > b->size[use]) {
		size_t want = (size + 4095) & ~(size_t)4095;
		char *p = fileio_buf_alloc(want);

		if (!p)
			return NULL;
		free(b->data[use]);
		b->data[use] = p;
		b->size[use] = want;
	}
	return b->data[use];
}

/* fileio_pread_all on an O_DIRECT descriptor of a range the kernel
 * refuses as it is: the aligned range around it, then the bytes asked. */
static ssize_t pread_bounced(int fd, char *buf, size_t len, uint64_t off)
{
	uint64_t a0 = off / DIRECT_UNIT * DIRECT_UNIT;
	uint64_t a1 = (off + len + DIRECT_UNIT - 1) / DIRECT_UNIT * DIRECT_UNIT;
	char *b = fileio_thread_buf(FILEIO_BUF_BOUNCE, (size_t)(a1 - a0));
	ssize_t got;

	if (!b) {
		errno = ENOMEM;
		return -1;
	}
	got = fileio_pread_all(fd, b, (size_t)(a1 - a0), a0);
	if (got < 0)
		return -1;
	if ((uint64_t)got <= off - a0)
		return 0;
	got -= (ssize_t)(off - a0);
	if ((size_t)got > len)
		got = (ssize_t)len;
	memcpy(buf, b + (off - a0), (size_t)got);
	return got;
}

ssize_t fileio_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EINVAL &&
		    (((uintptr_t)buf + done) | (off + done) | (len - done)) % DIRECT_UNIT != 0 &&
		    fcntl(fd, F_GETFL) & O_DIRECT) {
			n = pread_bounced(fd, (char *)buf + done, len - done, off + done);
			if (n < 0)
				return -1;
			return (ssize_t)(done + (size_t)n);
		}
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

ssize_t fileio_read_text(const char *path, char *buf, size_t size)
{
	int fd, saved;
	ssize_t n;

	if (size == 0) {
		errno = EINVAL;
		return -1;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = fileio_pread_all(fd, buf, size - 1, 0);
	saved = errno;
	close(fd);
	if (n < 0) {
		errno = saved;
		return -1;
	}
	buf[n] = '\0';
	return n;
}

/* Writes the whole buffer of fileio_replace. */
struct span_arg {
	const void *data;
	size_t len;
};

static int write_span(int fd, void *arg)
{
	const struct span_arg *a = arg;

	return fileio_write_all(fd, a->data, a->len);
}

enum error_code fileio_replace(const char *path, const void *data, size_t len, mode_t mode,
			       struct error *err)
{
	struct span_arg a = { data, len };

	return fileio_replace_with(path, mode, write_span, &a, err);
}

/* errno's code, or ERR_IO when a call failed without one (a zero write). */
static enum error_code code_of(int saved)
{
	enum error_code rc = error_from_errno(saved);

	return rc == ERR_OK ? ERR_IO : rc;
}

enum error_code fileio_replace_with(const char *path, mode_t mode, fileio_write_fn write_fn,
				    void *arg, struct error *err)
{
	char *tmp = NULL, *dir = NULL, *base_copy = NULL;
	enum error_code rc = ERR_OK;
	int fd = -1, saved;

	/* The temporary name is hidden (".NAME.XXXXXX"), so that a reader
	 * listing the directory never takes a leftover for a file. */
	dir = strdup(path);
	base_copy = strdup(path);
	if (!dir || !base_copy ||
	    asprintf(&tmp, "%s/.%s.XXXXXX", dirname(dir), basename(base_copy)) < 0) {
		tmp = NULL;
		rc = error_set(err, ERR_NOMEM, "write '%s': out of memory", path);
		goto out;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		saved = errno;
		free(tmp);
		tmp = NULL;
		rc = error_set(err, error_from_errno(saved), "write '%s': create a file in '%s': %s",
			       path, dir, strerror(saved));
		goto out;
	}
	errno = 0;
	if (fchmod(fd, mode) != 0 || write_fn(fd, arg) != 0 || fsync(fd) != 0) {
		saved = errno;
		rc = error_set(err, code_of(saved), "write '%s': %s", tmp,
			       saved ? strerror(saved) : "write failed");
		goto out;
	}
	saved = close(fd) != 0 ? errno : 0;
	fd = -1;
	if (saved) {
		rc = error_set(err, code_of(saved), "write '%s': close: %s", tmp, strerror(saved));
		goto out;
	}
	if (rename(tmp, path) != 0) {
		saved = errno;
		rc = error_set(err, error_from_errno(saved), "rename '%s' to '%s': %s", tmp, path,
			       strerror(saved));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	/* The rename is durable once the directory is: a failure here is
	 * one too, the file may be gone after a crash. */
	rc = fileio_sync_dir(dir, err);
	if (rc != ERR_OK)
		error_wrap(err, "write '%s'", path);
out:
	if (fd >= 0)
		close(fd);
	if (tmp)
		unlink(tmp);
	free(tmp);
	free(dir);
	free(base_copy);
	return rc;
}

enum error_code fileio_sync_dir(const char *path, struct error *err)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), saved;

	if (fd < 0 || fsync(fd) != 0) {
		saved = errno;
		if (fd >= 0)
			close(fd);
		return error_set(err, code_of(saved), "fsync directory '%s': %s", path,
				 strerror(saved));
	}
	close(fd);
	return ERR_OK;
}

enum error_code fileio_mkdirs(const char *path, mode_t mode, struct error *err)
{
	char buf[4096];

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return error_set(err, ERR_INVALID, "path too long: '%s'", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) != 0 && errno != EEXIST)
			return error_set(err, error_from_errno(errno), "mkdir '%s': %s", buf,
					 strerror(errno));
		*p = '/';
	}
	if (mkdir(buf, mode) != 0 && errno != EEXIST)
		return error_set(err, error_from_errno(errno), "mkdir '%s': %s", buf, strerror(errno));
	return ERR_OK;
}

enum error_code fileio_mkdirs_parent(const char *path, struct error *err)
{
	char buf[4096];
	char *slash;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return error_set(err, ERR_INVALID, "path too long: '%s'", path);
	slash = strrchr(buf, '/');
	if (!slash || slash == buf)
		return ERR_OK;
	*slash = '\0';
	return fileio_mkdirs(buf, 0755, err);
}

int fileio_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Deepest directory fileio_remove_tree goes into. */
#define REMOVE_DEPTH_MAX 64

/*
 * Removes name in the directory dirfd and everything under it. Every step
 * is relative to a directory already open, and no link is followed: a
 * directory renamed and replaced by a symbolic link meanwhile (a tree
 * someone else can write) removes the link, never what it points at.
 * shown: the path for messages.
 */
static enum error_code remove_at(int at, const char *name, dev_t dev, int depth,
				 const char *shown, struct error *err)
{
	enum error_code rc = ERR_OK;
	struct dirent *e;
	struct stat st;
	DIR *d;
	int fd;

	fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return ERR_OK;
		if (errno != ENOTDIR && errno != ELOOP)
			return error_set(err, error_from_errno(errno), "remove '%s/%s': %s", shown,
					 name, strerror(errno));
		/* Not a directory (a link to one included): the name goes. */
		if (unlinkat(at, name, 0) != 0 && errno != ENOENT)
			return error_set(err, error_from_errno(errno), "remove '%s/%s': %s", shown,
					 name, strerror(errno));
		return ERR_OK;
	}
	if (fstat(fd, &st) != 0 || st.st_dev != dev || depth >= REMOVE_DEPTH_MAX) {
		close(fd);
		return error_set(err, ERR_INVALID, "remove '%s/%s': %s", shown, name,
				 depth >= REMOVE_DEPTH_MAX ? "nested too deep"
							   : "on another file system");
	}
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return error_set(err, ERR_NOMEM, "remove '%s/%s': out of memory", shown, name);
	}
	while (rc == ERR_OK && (e = readdir(d))) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		rc = remove_at(dirfd(d), e->d_name, dev, depth + 1, shown, err);
	}
	closedir(d);
	if (rc == ERR_OK && unlinkat(at, name, AT_REMOVEDIR) != 0 && errno != ENOENT)
		rc = error_set(err, error_from_errno(errno), "remove '%s/%s': %s", shown, name,
			       strerror(errno));
	return rc;
}

enum error_code fileio_remove_tree(const char *path, struct error *err)
{
	char parent[PATH_MAX];
	const char *slash = strrchr(path, '/');
	const char *name = slash ? slash + 1 : path;
	enum error_code rc;
	struct stat st;
	int pfd;

	if (slash == path)
		snprintf(parent, sizeof(parent), "/");
	else if (slash)
		snprintf(parent, sizeof(parent), "%.*s", (int)(slash - path), path);
	else
		snprintf(parent, sizeof(parent), ".");
	if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return error_set(err, ERR_INVALID, "remove '%s': not a name to remove", path);
	pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pfd < 0)
		return errno == ENOENT ? ERR_OK
				       : error_set(err, error_from_errno(errno), "remove '%s': %s",
						   path, strerror(errno));
	if (fstat(pfd, &st) != 0) {
		close(pfd);
		return error_set(err, error_from_errno(errno), "remove '%s': %s", path,
				 strerror(errno));
	}
	rc = remove_at(pfd, name, st.st_dev, 0, parent, err);
	close(pfd);
	return rc;
}

enum error_code fileio_read_small(const char *path, size_t max, char **out, size_t *len,
				  struct error *err)
{
	char *buf = NULL, *grown;
	size_t have = 0, cap = 0;
	struct stat sb;
	int fd = open(path, O_RDONLY | O_CLOEXEC), saved;
	ssize_t n;

	*out = NULL;
	*len = 0;
	if (fd < 0) {
		saved = errno;
		return error_set(err, error_from_errno(saved), "open '%s': %s", path, strerror(saved));
	}
	/* A regular file's size is known: one allocation, one pass (the
	 * extra byte is for the read that finds the end). */
	cap = 4096;
	if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size <= max)
		cap = (size_t)sb.st_size + 1;
	buf = malloc(cap + 1);
	if (!buf) {
		close(fd);
		return error_set(err, ERR_NOMEM, "read '%s': out of memory", path);
	}
	for (;;) {
		if (have == cap) {
			if (cap > max) {
				close(fd);
				free(buf);
				return error_set(err, ERR_INVALID, "read '%s': larger than %zu bytes", path,
						 max);
			}
			cap *= 2;
			grown = realloc(buf, cap + 1);
			if (!grown) {
				close(fd);
				free(buf);
				return error_set(err, ERR_NOMEM, "read '%s': out of memory", path);
			}
			buf = grown;
		}
		n = read(fd, buf + have, cap - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			saved = errno;
			close(fd);
			free(buf);
			return error_set(err, error_from_errno(saved), "read '%s': %s", path,
					 strerror(saved));
		}
		if (n == 0)
			break;
		have += (size_t)n;
	}
	close(fd);
	if (have > max) {
		free(buf);
		return error_set(err, ERR_INVALID, "read '%s': larger than %zu bytes", path, max);
	}
	buf[have] = '\0';
	*out = buf;
	*len = have;
	return ERR_OK;
}

void fileio_drop_cached(int fd, uint64_t off, uint64_t len)
{
	const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t start = off / page * page, end = len ? (off + len + page - 1) / page * page : 0;
	int saved = errno; /* advice: a caller's errno survives it */

	/* The kernel keeps the partial pages at either end of a range; the
	 * caller read them whole, so the range grows to cover them. */
	posix_fadvise(fd, (off_t)start, len ? (off_t)(end - start) : 0, POSIX_FADV_DONTNEED);
	errno = saved;
}

int fileio_resident(int fd, uint64_t off, uint64_t len, uint64_t *bytes)
{
	const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	unsigned char *vec = NULL;
	uint64_t start, end, n, count = 0;
	struct stat st;
	void *map = MAP_FAILED;
	int saved;

	*bytes = 0;
	if (fstat(fd, &st) != 0)
		return -1;
	if (off >= (uint64_t)st.st_size)
		return 0;
	end = len == 0 || len > (uint64_t)st.st_size - off ? (uint64_t)st.st_size : off + len;
	start = off / page * page;
	n = (end - start + page - 1) / page;
	map = mmap(NULL, (size_t)(end - start), PROT_READ, MAP_SHARED, fd, (off_t)start);
	if (map == MAP_FAILED)
		return -1;
	vec = malloc((size_t)n);
	if (!vec) {
		munmap(map, (size_t)(end - start));
		errno = ENOMEM;
		return -1;
	}
	if (mincore(map, (size_t)(end - start), vec) != 0) {
		saved = errno;
		free(vec);
		munmap(map, (size_t)(end - start));
		errno = saved;
		return -1;
	}
	for (uint64_t i = 0; i < n; i++)
		count += vec[i] & 1;
	free(vec);
	munmap(map, (size_t)(end - start));
	*bytes = count * page;
	return 0;
}

/* Sums the regular files under the directory open as dfd (taken). */
static enum error_code resident_walk(int dfd, const char *path, struct fileio_residency *out,
				     struct error *err)
{
	DIR *d = fdopendir(dfd);
	enum error_code rc = ERR_OK;
	struct dirent *e;

	if (!d) {
		int saved = errno;

		close(dfd);
		return error_set(err, error_from_errno(saved), "open directory '%s': %s", path,
				 strerror(saved));
	}
	while (rc == ERR_OK && (e = readdir(d))) {
		char sub[PATH_MAX];
		struct stat st;
		uint64_t r = 0;
		int fd;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
		fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
		if (fd < 0) {
			/* gone meanwhile (an evicted block), or a link */
			if (errno != ENOENT && errno != ELOOP)
				rc = error_set(err, error_from_errno(errno), "open '%s': %s", sub,
					       strerror(errno));
			continue;
		}
		if (fstat(fd, &st) != 0) {
			rc = error_set(err, error_from_errno(errno), "stat '%s': %s", sub,
				       strerror(errno));
		} else if (S_ISDIR(st.st_mode)) {
			rc = resident_walk(fd, sub, out, err);
			continue; /* fd taken */
		} else if (S_ISREG(st.st_mode)) {
			if (fileio_resident(fd, 0, 0, &r) != 0) {
				rc = error_set(err, error_from_errno(errno), "page cache of '%s': %s",
					       sub, strerror(errno));
			} else {
				out->files++;
				out->bytes += (uint64_t)st.st_size;
				out->resident += r;
			}
		}
		close(fd);
	}
	closedir(d);
	return rc;
}

enum error_code fileio_resident_tree(const char *dir, struct fileio_residency *out,
				     struct error *err)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	*out = (struct fileio_residency){ 0 };
	if (dfd < 0)
		return error_set(err, error_from_errno(errno), "open directory '%s': %s", dir,
				 strerror(errno));
	return resident_walk(dfd, dir, out, err);
}

#define HUGE_SPAN ((size_t)2 << 20)

void *fileio_buf_alloc(size_t size)
{
	size_t align = size >= HUGE_SPAN ? HUGE_SPAN : 4096;
	void *p = NULL;

	if (posix_memalign(&p, align, size) != 0)
		return NULL;
	if (align == HUGE_SPAN)
		(void)madvise(p, size / HUGE_SPAN * HUGE_SPAN, MADV_HUGEPAGE);
	return p;
}
