/*
 * smallfile_read.c - a small-file dataset like ImageNet's JPEGs, and the
 * shuffled reader of one epoch over it.
 *
 * smallgen writes DIR/nNNNNN/img_NNNNNNNN.jpg: --files files spread over
 * --dirs class directories, sizes uniform in [size/2, 3*size/2] (mean
 * --file_size, ImageNet's mean JPEG is about 110 KB). Each file ends in the
 * CRC32C (little-endian) of the bytes before it, so the reader checks every
 * byte it got. With --list FILE the relative paths are written there too
 * (a training job reads its file list from a manifest, not by listing).
 *
 * smallread shuffles the list (--seed), and --threads threads each take the
 * next path, open it, read it whole, close it and check the CRC:
 *   files=N bytes=B seconds=S files_per_s=F mb_per_s=M partial=0 errors=0
 * partial=1 when --limit stopped the epoch early.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include "bench/bench_tool.h"
#include "bench/tfrecord.h"
#include "common/array.h"
#include "common/fileio.h"

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

int bench_smallgen(const struct bench_settings *s, const char *dir)
{
	size_t max = (size_t)(s->file_size + s->file_size / 2) + 16;
	uint64_t state = (uint64_t)s->seed * 0x9e3779b97f4a7c15ull + 7, total = 0;
	uint8_t *buf = malloc(max + 8);
	FILE *list = NULL;
	struct error err;
	int rc = 1;

	if (!buf)
		return 1;
	if (fileio_mkdirs(dir, 0755, &err) != ERR_OK) {
		fprintf(stderr, "granary-bench: %s\n", err.msg);
		goto out;
	}
	if (*s->list && !(list = fopen(s->list, "w"))) {
		fprintf(stderr, "granary-bench: create '%s': %s\n", s->list, strerror(errno));
		goto out;
	}
	for (int64_t d = 0; d < s->dirs; d++) {
		char path[PATH_MAX];

		snprintf(path, sizeof(path), "%s/n%06lld", dir, (long long)d);
		if (mkdir(path, 0755) != 0 && errno != EEXIST) {
			fprintf(stderr, "granary-bench: mkdir '%s': %s\n", path, strerror(errno));
			goto out;
		}
	}
	for (int64_t i = 0; i < s->files; i++) {
		char rel[64], path[PATH_MAX];
		size_t len = 0;
		int fd;

		if (s->file_size > 0) {
			len = (size_t)(s->file_size / 2 + xorshift(&state) % (s->file_size + 1));
			if (len < 8)
				len = 8;
			for (size_t k = 0; k < len - 4; k += 8) {
				uint64_t v = xorshift(&state);

				memcpy(buf + k, &v, 8);
			}
			uint32_t crc = tfrecord_crc32c(buf, len - 4);

			memcpy(buf + len - 4, &crc, 4); /* little-endian hosts only */
		}
		snprintf(rel, sizeof(rel), "n%06lld/img_%08lld.jpg", (long long)(i % s->dirs),
			 (long long)i);
		snprintf(path, sizeof(path), "%s/%s", dir, rel);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || fileio_write_all(fd, buf, len) != 0) {
			fprintf(stderr, "granary-bench: write '%s': %s\n", path, strerror(errno));
			if (fd >= 0)
				close(fd);
			goto out;
		}
		close(fd);
		if (list)
			fprintf(list, "%s\n", rel);
		total += len;
	}
	printf("files=%lld dirs=%lld bytes=%llu\n", (long long)s->files, (long long)s->dirs,
	       (unsigned long long)total);
	rc = 0;
out:
	if (list && fclose(list) != 0)
		rc = 1;
	free(buf);
	return rc;
}

/* --- the reader ------------------------------------------------------------ */

struct paths {
	char **v;
	size_t n, cap;
};

static int paths_add(struct paths *p, const char *path)
{
	if (array_grow((void **)&p->v, &p->cap, p->n + 1, sizeof(*p->v)) < 0)
		return -1;
	if (!(p->v[p->n] = strdup(path)))
		return -1;
	p->n++;
	return 0;
}

static int walk(struct paths *p, const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int rc = 0;

	if (!d) {
		fprintf(stderr, "granary-bench: open directory '%s': %s\n", dir, strerror(errno));
		return -1;
	}
	while (rc == 0 && (e = readdir(d))) {
		char path[PATH_MAX];
		struct stat st;
		int isdir;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (e->d_type == DT_UNKNOWN) {
			if (lstat(path, &st) != 0)
				continue;
			isdir = S_ISDIR(st.st_mode);
		} else {
			isdir = e->d_type == DT_DIR;
		}
		rc = isdir ? walk(p, path) : paths_add(p, path);
	}
	closedir(d);
	return rc;
}

static int load_list(struct paths *p, const char *dir, const char *list)
{
	FILE *f = fopen(list, "r");
	char line[PATH_MAX], path[PATH_MAX];

	if (!f) {
		fprintf(stderr, "granary-bench: open '%s': %s\n", list, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (!*line)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, line);
		if (paths_add(p, path) != 0) {
			fclose(f);
			return -1;
		}
	}
	fclose(f);
	return 0;
}

struct small_job {
	struct paths p;
	atomic_size_t next;
	double deadline; /* 0: none */
	size_t read_size;
	atomic_uint_fast64_t files, bytes, errors;
	atomic_int partial;
};

static void *small_reader(void *arg)
{
	struct small_job *job = arg;
	size_t cap = job->read_size > (1u << 20) ? job->read_size : (1u << 20);
	uint8_t *buf = malloc(cap);

	if (!buf) {
		job->errors++;
		return NULL;
	}
	for (;;) {
		size_t i = atomic_fetch_add(&job->next, 1), have = 0;
		int fd;

		if (i >= job->p.n)
			break;
		if (job->deadline > 0 && bench_now() > job->deadline) {
			job->partial = 1;
			break;
		}
		fd = open(job->p.v[i], O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "granary-bench: open '%s': %s\n", job->p.v[i], strerror(errno));
			job->errors++;
			continue;
		}
		for (;;) {
			ssize_t n;

			if (cap - have < job->read_size) {
				uint8_t *grown = realloc(buf, cap * 2);

				if (!grown)
					break;
				buf = grown;
				cap *= 2;
			}
			n = read(fd, buf + have, job->read_size);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				fprintf(stderr, "granary-bench: read '%s': %s\n", job->p.v[i],
					strerror(errno));
				job->errors++;
				break;
			}
			if (n == 0)
				break;
			have += (size_t)n;
		}
		close(fd);
		if (have >= 8) {
			uint32_t want;

			memcpy(&want, buf + have - 4, 4);
			if (tfrecord_crc32c(buf, have - 4) != want) {
				fprintf(stderr, "granary-bench: '%s': CRC mismatch (%zu bytes)\n",
					job->p.v[i], have);
				job->errors++;
			}
		}
		job->files++;
		job->bytes += have;
	}
	free(buf);
	return NULL;
}

int bench_smallread(const struct bench_settings *s, const char *dir)
{
	struct small_job job = { .read_size = (size_t)s->read_size };
	uint64_t state = (uint64_t)s->seed * 0x9e3779b97f4a7c15ull + 3;
	pthread_t *t = calloc((size_t)s->threads, sizeof(*t));
	int started = 0, rc = 1;
	double t0, secs;

	if (!t)
		return 1;
	if ((*s->list ? load_list(&job.p, dir, s->list) : walk(&job.p, dir)) != 0 || job.p.n == 0) {
		fprintf(stderr, "granary-bench: no files to read under '%s'\n", dir);
		goto out;
	}
	for (size_t i = job.p.n - 1; i > 0; i--) {
		size_t j = (size_t)(xorshift(&state) % (i + 1));
		char *tmp = job.p.v[i];

		job.p.v[i] = job.p.v[j];
		job.p.v[j] = tmp;
	}
	t0 = bench_now();
	if (s->limit_ms)
		job.deadline = t0 + s->limit_ms / 1000.0;
	for (; started < s->threads; started++)
		if (pthread_create(&t[started], NULL, small_reader, &job) != 0)
			break;
	for (int i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	secs = bench_now() - t0;
	printf("files=%llu bytes=%llu seconds=%.3f files_per_s=%.1f mb_per_s=%.1f partial=%d errors=%llu\n",
	       (unsigned long long)job.files, (unsigned long long)job.bytes, secs,
	       job.files / secs, job.bytes / 1e6 / secs, (int)job.partial,
	       (unsigned long long)job.errors);
	rc = job.errors ? 1 : 0;
out:
	for (size_t i = 0; i < job.p.n; i++)
		free(job.p.v[i]);
	free(job.p.v);
	free(t);
	return rc;
}
