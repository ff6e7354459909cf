/*
 * meta_walk.c - metadata rates over a tree: a listing pass (readdir of every
 * directory, recursing by d_type; lstat only where a file system gives
 * DT_UNKNOWN), then one stat(2) of every file (the first stat after the
 * listing), then --passes timed stat passes (attributes cached):
 *   entries=N dirs=D list_seconds=S list_per_s=R stat_first_per_s=R1 stat_per_s=R2
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench/bench_tool.h"
#include "common/array.h"

struct tree {
	char **files;
	size_t nfiles, cap, entries, dirs;
};

static int list_dir(struct tree *t, const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int rc = 0;

	if (!d) {
		fprintf(stderr, "granary-bench: open directory '%s': %s\n", dir, strerror(errno));
		return -1;
	}
	t->dirs++;
	while (rc == 0 && (e = readdir(d))) {
		char path[PATH_MAX];
		int isdir;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		t->entries++;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (e->d_type == DT_UNKNOWN) {
			struct stat st;

			if (lstat(path, &st) != 0)
				continue;
			isdir = S_ISDIR(st.st_mode);
		} else {
			isdir = e->d_type == DT_DIR;
		}
		if (isdir) {
			rc = list_dir(t, path);
			continue;
		}
		if (array_grow((void **)&t->files, &t->cap, t->nfiles + 1, sizeof(*t->files)) < 0)
			return -1;
		if (!(t->files[t->nfiles] = strdup(path)))
			rc = -1;
		else
			t->nfiles++;
	}
	closedir(d);
	return rc;
}

static int stat_all(const struct tree *t)
{
	struct stat st;

	for (size_t i = 0; i < t->nfiles; i++)
		if (stat(t->files[i], &st) != 0) {
			fprintf(stderr, "granary-bench: stat '%s': %s\n", t->files[i], strerror(errno));
			return -1;
		}
	return 0;
}

int bench_metawalk(const struct bench_settings *s, const char *dir)
{
	struct tree t = { 0 };
	double t0, list_s, first_s, warm_s;
	int rc = 1;

	t0 = bench_now();
	if (list_dir(&t, dir) != 0 || t.nfiles == 0) {
		fprintf(stderr, "granary-bench: no files under '%s'\n", dir);
		goto out;
	}
	list_s = bench_now() - t0;
	t0 = bench_now();
	if (stat_all(&t) != 0)
		goto out;
	first_s = bench_now() - t0;
	t0 = bench_now();
	for (int64_t k = 0; k < s->passes; k++)
		if (stat_all(&t) != 0)
			goto out;
	warm_s = bench_now() - t0;
	printf("entries=%zu dirs=%zu list_seconds=%.3f list_per_s=%.0f stat_first_per_s=%.0f "
	       "stat_per_s=%.0f\n",
	       t.entries, t.dirs, list_s, t.entries / list_s, t.nfiles / first_s,
	       (double)t.nfiles * (double)s->passes / warm_s);
	rc = 0;
out:
	for (size_t i = 0; i < t.nfiles; i++)
		free(t.files[i]);
	free(t.files);
	return rc;
}
