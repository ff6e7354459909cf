/*
 * granary-store - a command-line client for Granary's object-store layer:
 * the same code, settings and credentials the daemons use, for checking a
 * source before registering it and for loading datasets in tests.
 *
 *   granary-store ls   s3://bucket/prefix/ [--recursive true]
 *   granary-store head s3://bucket/key
 *   granary-store get  s3://bucket/key [OFFSET [LENGTH]]   > file
 *   granary-store put  s3://bucket/key FILE
 *   granary-store sync DIR s3://bucket/prefix/              (upload a tree)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileio.h"
#include "common/config.h"
#include "common/cpu.h"
#include "common/daemon.h"
#include "store/store.h"
#include "store/store_settings.h"

struct cli_settings {
	struct store_settings store;
	bool recursive;
	int64_t parallel;
	char *log_level;
};

static const struct config_field cli_fields[] = {
	STORE_SETTINGS_FIELDS(struct cli_settings, store),
	{ "recursive", CONFIG_BOOL, offsetof(struct cli_settings, recursive), "false",
	  "ls: list every key below the prefix instead of one level", 0, 0, NULL },
	{ "parallel", CONFIG_INT, offsetof(struct cli_settings, parallel), "0",
	  "sync: concurrent uploads (0: two per available CPU)", 0, 1024, NULL },
	{ "log.level", CONFIG_STRING, offsetof(struct cli_settings, log_level), "warn",
	  "debug, info, warn or error", 0, 0, NULL },
};

static const struct config_schema cli_schema = {
	.program = "granary-store",
	.summary = "object-store client: ls|head|get|put|sync, e.g. granary-store ls s3://bucket/prefix/",
	.fields = cli_fields,
	.nfields = sizeof(cli_fields) / sizeof(cli_fields[0]),
};

/* Opens the store of an object URI and splits off the key. */
static int open_uri(const struct cli_settings *set, const char *uri,
		    struct store **st, char **key)
{
	char *scheme = NULL, *bucket = NULL, *root = NULL;
	struct store_config cfg;
	struct error err;
	int rc = -1;

	if (store_uri_parse(uri, &scheme, &bucket, key, &err) != ERR_OK) {
		fprintf(stderr, "granary-store: %s\n", err.msg);
		return -1;
	}
	if (asprintf(&root, "%s://%s", scheme, bucket) < 0)
		root = NULL;
	store_settings_to_config(&set->store, &cfg);
	if (!root || store_open(root, &cfg, st, &err) != ERR_OK) {
		fprintf(stderr, "granary-store: %s\n", root ? err.msg : "out of memory");
		free(*key);
		*key = NULL;
		goto out;
	}
	rc = 0;
out:
	free(scheme);
	free(bucket);
	free(root);
	return rc;
}

static int cmd_ls(const struct cli_settings *set, struct store *st, const char *prefix)
{
	struct store_list_page page;
	char *token = NULL;
	struct error err;

	do {
		if (store_list(st, prefix, set->recursive ? NULL : "/", token, 0, &page,
			       &err) != ERR_OK) {
			fprintf(stderr, "granary-store: %s\n", err.msg);
			free(token);
			return 1;
		}
		free(token);
		for (size_t i = 0; i < page.nprefixes; i++)
			printf("%12s  %-20s  %s\n", "DIR", "", page.prefixes[i]);
		for (size_t i = 0; i < page.nobjects; i++)
			printf("%12" PRIu64 "  %-20s  %s\n", page.objects[i].size,
			       page.objects[i].etag, page.objects[i].key);
		token = page.next_token;
		page.next_token = NULL;
		store_list_page_release(&page);
	} while (token);
	return 0;
}

static int cmd_head(struct store *st, const char *key)
{
	struct store_object obj;
	struct error err;

	if (store_head(st, key, &obj, &err) != ERR_OK) {
		fprintf(stderr, "granary-store: %s\n", err.msg);
		return 1;
	}
	printf("key: %s\nsize: %" PRIu64 "\netag: %s\nmtime: %lld\n", obj.key, obj.size,
	       obj.etag, (long long)obj.mtime);
	store_object_release(&obj);
	return 0;
}

static int to_stdout(const void *data, size_t len, void *arg)
{
	(void)arg;
	return fileio_write_all(STDOUT_FILENO, data, len);
}

static int cmd_get(struct store *st, const char *key, uint64_t off, uint64_t len)
{
	struct store_object obj;
	uint64_t done = 0;
	struct error err;
	int rc = 1;

	/* HEAD first: the length to ask for, and an ETag that pins the
	 * version so a concurrent rewrite cannot splice two objects. */
	if (store_head(st, key, &obj, &err) != ERR_OK) {
		fprintf(stderr, "granary-store: %s\n", err.msg);
		return 1;
	}
	if (off > obj.size) {
		fprintf(stderr, "granary-store: get '%s': offset %" PRIu64 " is past the end (%" PRIu64 " bytes)\n",
			key, off, obj.size);
		goto out;
	}
	if (len > obj.size - off)
		len = obj.size - off;
	if (store_get_stream(st, key, off, len, to_stdout, NULL, obj.etag, &done, &err) != ERR_OK) {
		fprintf(stderr, "granary-store: %s\n", err.msg);
		goto out;
	}
	rc = 0;
out:
	store_object_release(&obj);
	return rc;
}

static int put_file(struct store *st, const char *key, const char *path)
{
	struct stat sb;
	void *map = NULL;
	struct error err;
	int fd, rc = 1;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) != 0) {
		fprintf(stderr, "granary-store: open '%s': %s\n", path, strerror(errno));
		goto out;
	}
	if (sb.st_size > 0) {
		map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (map == MAP_FAILED) {
			map = NULL;
			fprintf(stderr, "granary-store: map '%s': %s\n", path, strerror(errno));
			goto out;
		}
	}
	if (store_put(st, key, map ? map : "", (size_t)sb.st_size, &err) != ERR_OK) {
		fprintf(stderr, "granary-store: %s\n", err.msg);
		goto out;
	}
	rc = 0;
out:
	if (map)
		munmap(map, (size_t)sb.st_size);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* sync: a shared list of (path, key) pairs drained by a few threads. */
struct sync_job {
	struct store *st;
	char **paths, **keys;
	size_t n, next;      /* next protected by mu */
	int failed;          /* protected by mu */
	pthread_mutex_t mu;
};

static void *sync_worker(void *arg)
{
	struct sync_job *job = arg;

	for (;;) {
		size_t i;
		int rc;

		pthread_mutex_lock(&job->mu);
		i = job->next < job->n && !job->failed ? job->next++ : job->n;
		pthread_mutex_unlock(&job->mu);
		if (i >= job->n)
			return NULL;
		rc = put_file(job->st, job->keys[i], job->paths[i]);
		if (rc != 0) {
			pthread_mutex_lock(&job->mu);
			job->failed = 1;
			pthread_mutex_unlock(&job->mu);
		}
	}
}

static int collect(struct sync_job *job, size_t *cap, const char *dir,
		   const char *rel, const char *prefix)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int rc = 0;

	if (!d) {
		fprintf(stderr, "granary-store: open directory '%s': %s\n", dir, strerror(errno));
		return -1;
	}
	while (rc == 0 && (e = readdir(d))) {
		char path[PATH_MAX], sub[PATH_MAX];
		struct stat sb;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "", e->d_name);
		if (stat(path, &sb) != 0)
			continue;
		if (S_ISDIR(sb.st_mode)) {
			rc = collect(job, cap, path, sub, prefix);
			continue;
		}
		if (!S_ISREG(sb.st_mode))
			continue;
		if (job->n == *cap) {
			*cap = *cap ? *cap * 2 : 256;
			char **p = realloc(job->paths, *cap * sizeof(*p));
			char **k = p ? realloc(job->keys, *cap * sizeof(*k)) : NULL;

			if (p)
				job->paths = p;
			if (k)
				job->keys = k;
			if (!p || !k) {
				rc = -1;
				break;
			}
		}
		job->paths[job->n] = strdup(path);
		if (asprintf(&job->keys[job->n], "%s%s", prefix, sub) < 0)
			job->keys[job->n] = NULL;
		job->n++;
		if (!job->paths[job->n - 1] || !job->keys[job->n - 1])
			rc = -1;
	}
	closedir(d);
	return rc;
}

static int cmd_sync(const struct cli_settings *set, struct store *st,
		    const char *dir, const char *prefix)
{
	struct sync_job job = { .st = st, .mu = PTHREAD_MUTEX_INITIALIZER };
	size_t cap = 0;
	int nthreads = set->parallel > 0 ? (int)set->parallel : 2 * cpu_available();
	pthread_t *threads = NULL;
	int started = 0, rc = 1;

	if (collect(&job, &cap, dir, "", prefix) != 0)
		goto out;
	threads = calloc((size_t)nthreads, sizeof(*threads));
	if (!threads)
		goto out;
	for (started = 0; started < nthreads; started++)
		if (pthread_create(&threads[started], NULL, sync_worker, &job) != 0)
			break;
	for (int i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	if (started == 0 || job.failed)
		goto out;
	fprintf(stderr, "granary-store: uploaded %zu files\n", job.n);
	rc = 0;
out:
	for (size_t i = 0; i < job.n; i++) {
		free(job.paths[i]);
		free(job.keys[i]);
	}
	free(job.paths);
	free(job.keys);
	free(threads);
	return rc;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end = NULL;

	errno = 0;
	*out = strtoull(s, &end, 10);
	return (errno || !*s || *end || *s == '-') ? -1 : 0;
}

int main(int argc, char **argv)
{
	struct cli_settings set;
	struct store *st = NULL;
	char *key = NULL;
	int first = argc, rc;
	const char *cmd;

	rc = daemon_start(&cli_schema, &set, argc, argv, &first);
	if (rc >= 0)
		return rc;
	rc = 2;
	if (argc - first < 2) {
		fprintf(stderr, "granary-store: need a command and a URI (see --help)\n");
		goto out;
	}
	cmd = argv[first];
	if (strcmp(cmd, "sync") == 0) {
		if (argc - first != 3) {
			fprintf(stderr, "granary-store: usage: sync DIR s3://bucket/prefix/\n");
			goto out;
		}
		if (open_uri(&set, argv[first + 2], &st, &key) == 0)
			rc = cmd_sync(&set, st, argv[first + 1], key);
		goto out;
	}
	if (open_uri(&set, argv[first + 1], &st, &key) != 0) {
		rc = 1;
		goto out;
	}
	if (strcmp(cmd, "ls") == 0) {
		rc = cmd_ls(&set, st, key);
	} else if (strcmp(cmd, "head") == 0) {
		rc = cmd_head(st, key);
	} else if (strcmp(cmd, "get") == 0) {
		uint64_t off = 0, len = UINT64_MAX;

		if ((argc - first > 2 && parse_u64(argv[first + 2], &off) != 0) ||
		    (argc - first > 3 && parse_u64(argv[first + 3], &len) != 0)) {
			fprintf(stderr, "granary-store: get: OFFSET and LENGTH must be byte counts\n");
			goto out;
		}
		rc = cmd_get(st, key, off, len);
	} else if (strcmp(cmd, "put") == 0 && argc - first == 3) {
		rc = put_file(st, key, argv[first + 2]);
	} else {
		fprintf(stderr, "granary-store: unknown command or arguments '%s' (see --help)\n", cmd);
	}
out:
	free(key);
	store_free(st);
	config_release(&cli_schema, &set);
	return rc;
}
