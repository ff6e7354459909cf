/*
 * fusemount.c - max_read's rule, mountinfo, the mount's read-ahead, its
 * first open and close.
 */
#include "common/fusemount.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum error_code fusemount_check_max_read(const char *what, uint64_t bytes, struct error *err)
{
	if (bytes == 0 || bytes > FUSEMOUNT_MAX_READ_MAX || bytes % FUSEMOUNT_PAGE != 0)
		return error_set(err, ERR_INVALID,
				 "%s: must be a multiple of 4KiB from 4KiB to 1MiB, got %llu bytes", what,
				 (unsigned long long)bytes);
	return ERR_OK;
}

enum error_code fusemount_check_read_ahead(const char *what, uint64_t bytes, struct error *err)
{
	if (bytes % FUSEMOUNT_PAGE != 0)
		return error_set(err, ERR_INVALID, "%s: must be a multiple of 4KiB, got %llu bytes",
				 what, (unsigned long long)bytes);
	return ERR_OK;
}

/* Copies the space-separated field at s into out (size bytes), undoing
 * the kernel's octal escapes; returns the position after it, or NULL. */
static const char *field(const char *s, char *out, size_t size)
{
	size_t n = 0;

	while (*s == ' ')
		s++;
	if (!*s || *s == '\n')
		return NULL;
	for (; *s && *s != ' ' && *s != '\n'; s++) {
		char c = *s;

		if (c == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			c = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		}
		if (n + 1 >= size)
			return NULL;
		out[n++] = c;
	}
	out[n] = '\0';
	return s;
}

bool fusemount_parse_line(const char *line, const char *path, unsigned *major, unsigned *minor)
{
	char f[PATH_MAX];
	unsigned ma = 0, mi = 0;

	/* mount id, parent id, major:minor, root, mount point */
	for (int i = 0; i < 5 && line; i++) {
		line = field(line, f, sizeof(f));
		if (line && i == 2 && sscanf(f, "%u:%u", &ma, &mi) != 2)
			return false;
	}
	if (!line || strcmp(f, path) != 0)
		return false;
	*major = ma;
	*minor = mi;
	return true;
}

/* The filesystem type of a mountinfo line: the field after the "-" that
 * ends the optional fields. */
static bool line_fstype(const char *line, char *out, size_t size)
{
	char f[PATH_MAX];
	bool dash = false;

	for (int i = 0; (line = field(line, f, sizeof(f))); i++) {
		if (dash) {
			snprintf(out, size, "%s", f);
			return true;
		}
		dash = i >= 6 && strcmp(f, "-") == 0;
	}
	return false;
}

bool fusemount_parse_entry(const char *line, struct fusemount_entry *out)
{
	char f[PATH_MAX];
	bool dash = false;
	int i;

	memset(out, 0, sizeof(*out));
	/* mount id, parent id, major:minor, root, mount point, options,
	 * optional fields up to "-", fstype, source */
	for (i = 0; (line = field(line, f, sizeof(f))); i++) {
		if ((i == 0 && sscanf(f, "%d", &out->mount_id) != 1) ||
		    (i == 1 && sscanf(f, "%d", &out->parent_id) != 1) ||
		    (i == 2 && sscanf(f, "%u:%u", &out->major, &out->minor) != 2))
			return false;
		if ((i == 3 && snprintf(out->root, sizeof(out->root), "%s", f) >= (int)sizeof(out->root)) ||
		    (i == 4 && snprintf(out->point, sizeof(out->point), "%s", f) >= (int)sizeof(out->point)))
			return false;
		if (i >= 6 && !dash) {
			dash = strcmp(f, "-") == 0;
			continue;
		}
		if (dash && !out->fstype[0]) {
			if (snprintf(out->fstype, sizeof(out->fstype), "%s", f) >= (int)sizeof(out->fstype))
				return false;
		} else if (dash) {
			return snprintf(out->source, sizeof(out->source), "%s", f) <
			       (int)sizeof(out->source);
		}
	}
	return false;
}

bool fusemount_lookup(const char *path, unsigned *major, unsigned *minor, char *fstype,
		      size_t size)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	bool found = false;

	if (!f)
		return false;
	/* Later lines are mounted on top of earlier ones: the last match. */
	while (getline(&line, &cap, f) > 0) {
		unsigned ma, mi;

		if (!fusemount_parse_line(line, path, &ma, &mi))
			continue;
		*major = ma;
		*minor = mi;
		found = true;
		if (fstype && !line_fstype(line, fstype, size))
			snprintf(fstype, size, "?");
	}
	free(line);
	fclose(f);
	return found;
}

enum error_code fusemount_set_read_ahead(const char *path, uint64_t bytes, struct error *err)
{
	char real[PATH_MAX], sys[128];
	const char *want = realpath(path, real) ? real : path;
	unsigned major = 0, minor = 0;
	FILE *f;
	int saved;

	if (!fusemount_lookup(want, &major, &minor, NULL, 0))
		return error_set(err, ERR_NOT_FOUND, "no mount at '%s' in /proc/self/mountinfo", want);
	snprintf(sys, sizeof(sys), "/sys/class/bdi/%u:%u/read_ahead_kb", major, minor);
	f = fopen(sys, "we");
	if (!f || fprintf(f, "%llu\n", (unsigned long long)(bytes / 1024)) < 0 || fflush(f) != 0) {
		saved = errno;
		if (f)
			fclose(f);
		return error_set(err, error_from_errno(saved), "set the read-ahead of '%s': write '%s': %s",
				 want, sys, strerror(saved));
	}
	if (fclose(f) != 0) {
		saved = errno;
		return error_set(err, error_from_errno(saved), "set the read-ahead of '%s': write '%s': %s",
				 want, sys, strerror(saved));
	}
	return ERR_OK;
}

/* Depth first under dfd (owned) for a regular file to open and close. */
static bool prime_at(int dfd, unsigned depth, unsigned *budget)
{
	DIR *d = fdopendir(dfd);
	struct dirent *e;
	bool done = false;

	if (!d) {
		close(dfd);
		return false;
	}
	while (!done && *budget > 0 && (e = readdir(d)) != NULL) {
		int fd;

		(*budget)--;
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (e->d_type == DT_REG) {
			fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
			if (fd >= 0) {
				close(fd);
				done = true;
			}
		} else if (e->d_type == DT_DIR && depth < 16) {
			fd = openat(dirfd(d), e->d_name,
				    O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
			if (fd >= 0)
				done = prime_at(fd, depth + 1, budget);
		}
	}
	closedir(d);
	return done;
}

bool fusemount_prime(const char *dir)
{
	unsigned budget = 4096;
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	return fd >= 0 && prime_at(fd, 0, &budget);
}

static void *prime_main(void *arg)
{
	fusemount_prime(arg);
	free(arg);
	return NULL;
}

void fusemount_prime_async(const char *dir)
{
	pthread_attr_t attr;
	pthread_t t;
	char *copy = strdup(dir);

	if (!copy)
		return;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, prime_main, copy) != 0)
		free(copy);
	pthread_attr_destroy(&attr);
}
