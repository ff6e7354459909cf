/*
 * granary-tfrecord - makes and reads TFRecord datasets for the demo and the
 * benchmarks.
 *
 *   granary-tfrecord gen DIR  [--shards 16] [--shard_size 64MiB] [--record_size 110KiB]
 *   granary-tfrecord read DIR [--threads 4] [--read_size 256KiB] [--epochs 1]
 *
 * read behaves like tf.data's parallel interleave over shards: --threads
 * readers each take the next unread shard, read(2) it in --read_size pieces
 * and check every record's framing and CRCs. One line per epoch:
 *   epoch=1 files=16 records=9532 bytes=1073741824 seconds=0.812 mb_per_s=1322.4 records_per_s=11739
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/tfrecord.h"
#include "common/array.h"
#include "common/daemon.h"
#include "common/fileio.h"
#include "common/retry.h"

struct tf_settings {
	int64_t shards;
	uint64_t shard_size;
	uint64_t record_size;
	int64_t threads;
	uint64_t read_size;
	int64_t epochs;
	int64_t seed;
	char *log_level;
};

static const struct config_field tf_fields[] = {
	{ "shards", CONFIG_INT, offsetof(struct tf_settings, shards), "16",
	  "gen: number of shard files", 1, 100000, NULL },
	{ "shard_size", CONFIG_SIZE, offsetof(struct tf_settings, shard_size), "64MiB",
	  "gen: approximate bytes per shard", 1024, 1e12, NULL },
	{ "record_size", CONFIG_SIZE, offsetof(struct tf_settings, record_size), "110KiB",
	  "gen: mean record size (sizes vary +-50%)", 16, 64 << 20, NULL },
	{ "threads", CONFIG_INT, offsetof(struct tf_settings, threads), "4",
	  "read: parallel shard readers", 1, 1024, NULL },
	{ "read_size", CONFIG_SIZE, offsetof(struct tf_settings, read_size), "256KiB",
	  "read: bytes per read(2)", 4096, 64 << 20, NULL },
	{ "epochs", CONFIG_INT, offsetof(struct tf_settings, epochs), "1",
	  "read: passes over the dataset", 1, 1000, NULL },
	{ "seed", CONFIG_INT, offsetof(struct tf_settings, seed), "1",
	  "gen: seed of the record contents", 0, 1e15, NULL },
	{ "log.level", CONFIG_STRING, offsetof(struct tf_settings, log_level), "warn",
	  "debug, info, warn or error", 0, 0, NULL },
};

static const struct config_schema tf_schema = {
	.program = "granary-tfrecord",
	.summary = "make (gen DIR) or read and verify (read DIR) TFRecord shards",
	.fields = tf_fields,
	.nfields = sizeof(tf_fields) / sizeof(tf_fields[0]),
};

static uint64_t next_rand(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

static int cmd_gen(const struct tf_settings *set, const char *dir)
{
	size_t max = (size_t)(set->record_size + set->record_size / 2);
	uint64_t state = (uint64_t)set->seed * 0x9e3779b97f4a7c15ull + 1;
	uint8_t *rec = malloc(max + 8);
	uint64_t total_records = 0;
	struct error err;

	if (!rec)
		return 1;
	if (fileio_mkdirs(dir, 0755, &err) != ERR_OK) {
		fprintf(stderr, "granary-tfrecord: %s\n", err.msg);
		free(rec);
		return 1;
	}
	for (int64_t s = 0; s < set->shards; s++) {
		char path[PATH_MAX];
		uint64_t written = 0;
		int fd;

		snprintf(path, sizeof(path), "%s/train-%05lld-of-%05lld.tfrecord", dir,
			 (long long)s, (long long)set->shards);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0) {
			fprintf(stderr, "granary-tfrecord: create '%s': %s\n", path, strerror(errno));
			free(rec);
			return 1;
		}
		while (written < set->shard_size) {
			size_t len = (size_t)(set->record_size / 2 + next_rand(&state) % (set->record_size + 1));
			uint8_t hdr[12], foot[4];

			if (len > set->shard_size - written)
				len = (size_t)(set->shard_size - written) > 16 ? (size_t)(set->shard_size - written) - 16 : 1;
			for (size_t i = 0; i < len; i += 8) {
				uint64_t v = next_rand(&state);

				memcpy(rec + i, &v, 8);
			}
			tfrecord_header(len, hdr);
			tfrecord_footer(rec, len, foot);
			if (fileio_write_all(fd, hdr, 12) || fileio_write_all(fd, rec, len) ||
			    fileio_write_all(fd, foot, 4)) {
				fprintf(stderr, "granary-tfrecord: write '%s': %s\n", path, strerror(errno));
				close(fd);
				free(rec);
				return 1;
			}
			written += 16 + len;
			total_records++;
		}
		close(fd);
	}
	printf("shards=%lld records=%llu\n", (long long)set->shards, (unsigned long long)total_records);
	free(rec);
	return 0;
}

struct reader_job {
	char **files;
	size_t nfiles;
	size_t next;         /* protected by mu */
	pthread_mutex_t mu;
	size_t read_size;
	_Atomic uint64_t records, bytes;
	_Atomic int failed;
};

static void *read_shards(void *arg)
{
	struct reader_job *job = arg;
	char *buf = aligned_alloc(4096, (job->read_size + 4095) & ~(size_t)4095);

	if (!buf) {
		job->failed = 1;
		return NULL;
	}
	for (;;) {
		struct tfrecord_parser p;
		struct error err;
		size_t i;
		int fd;

		pthread_mutex_lock(&job->mu);
		i = job->next++;
		pthread_mutex_unlock(&job->mu);
		if (i >= job->nfiles || job->failed)
			break;
		fd = open(job->files[i], O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "granary-tfrecord: open '%s': %s\n", job->files[i], strerror(errno));
			job->failed = 1;
			break;
		}
		tfrecord_parser_init(&p);
		for (;;) {
			ssize_t n = read(fd, buf, job->read_size);

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				fprintf(stderr, "granary-tfrecord: read '%s': %s\n", job->files[i], strerror(errno));
				job->failed = 1;
				break;
			}
			if (n == 0) {
				if (tfrecord_parser_finish(&p, &err) != ERR_OK) {
					fprintf(stderr, "granary-tfrecord: '%s': %s\n", job->files[i], err.msg);
					job->failed = 1;
				}
				break;
			}
			if (tfrecord_parser_feed(&p, buf, (size_t)n, &err) != ERR_OK) {
				fprintf(stderr, "granary-tfrecord: '%s': %s\n", job->files[i], err.msg);
				job->failed = 1;
				break;
			}
		}
		close(fd);
		job->records += p.records;
		job->bytes += p.bytes;
	}
	free(buf);
	return NULL;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_shards(const char *dir, struct reader_job *job)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t cap = 0;

	if (!d) {
		fprintf(stderr, "granary-tfrecord: open directory '%s': %s\n", dir, strerror(errno));
		return -1;
	}
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);

		if (n < 9 || strcmp(e->d_name + n - 9, ".tfrecord") != 0)
			continue;
		if (array_grow((void **)&job->files, &cap, job->nfiles + 1, sizeof(*job->files)) < 0)
			break;
		if (asprintf(&job->files[job->nfiles], "%s/%s", dir, e->d_name) < 0)
			break;
		job->nfiles++;
	}
	closedir(d);
	qsort(job->files, job->nfiles, sizeof(*job->files), cmp_str);
	if (job->nfiles == 0) {
		fprintf(stderr, "granary-tfrecord: no .tfrecord files in '%s'\n", dir);
		return -1;
	}
	return 0;
}

static int cmd_read(const struct tf_settings *set, const char *dir)
{
	struct reader_job job = { .mu = PTHREAD_MUTEX_INITIALIZER, .read_size = (size_t)set->read_size };
	pthread_t *t = calloc((size_t)set->threads, sizeof(*t));
	int rc = 1;

	if (!t || list_shards(dir, &job) != 0)
		goto out;
	for (int64_t e = 1; e <= set->epochs && !job.failed; e++) {
		uint64_t t0 = retry_now_ms(), ms;
		int started = 0;

		job.next = 0;
		job.records = 0;
		job.bytes = 0;
		for (; started < set->threads; started++)
			if (pthread_create(&t[started], NULL, read_shards, &job) != 0)
				break;
		for (int i = 0; i < started; i++)
			pthread_join(t[i], NULL);
		ms = retry_now_ms() - t0;
		if (ms == 0)
			ms = 1;
		if (job.failed)
			break;
		printf("epoch=%lld files=%zu records=%llu bytes=%llu seconds=%.3f mb_per_s=%.1f records_per_s=%.0f\n",
		       (long long)e, job.nfiles, (unsigned long long)job.records,
		       (unsigned long long)job.bytes, ms / 1000.0, job.bytes / 1e6 / (ms / 1000.0),
		       job.records / (ms / 1000.0));
		fflush(stdout);
	}
	rc = job.failed ? 1 : 0;
out:
	for (size_t i = 0; i < job.nfiles; i++)
		free(job.files[i]);
	free(job.files);
	free(t);
	return rc;
}

int main(int argc, char **argv)
{
	struct tf_settings set;
	int first = argc, rc;

	rc = daemon_start(&tf_schema, &set, argc, argv, &first);
	if (rc >= 0)
		return rc;
	rc = 2;
	if (argc - first != 2)
		fprintf(stderr, "granary-tfrecord: usage: gen DIR | read DIR (see --help)\n");
	else if (strcmp(argv[first], "gen") == 0)
		rc = cmd_gen(&set, argv[first + 1]);
	else if (strcmp(argv[first], "read") == 0)
		rc = cmd_read(&set, argv[first + 1]);
	else
		fprintf(stderr, "granary-tfrecord: unknown command '%s'\n", argv[first]);
	config_release(&tf_schema, &set);
	return rc;
}
