/*
 * stat_bench - stat(2) rate over every file below a directory: one pass to
 * collect the paths (and warm any cache), then --passes timed passes.
 * Prints: stat_files=N passes=P seconds=S stats_per_s=R
 */
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/array.h"
#include "common/retry.h"

struct paths {
	char **v;
	size_t n, cap;
};

static int collect(struct paths *p, const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d) {
		perror(dir);
		return -1;
	}
	while ((e = readdir(d))) {
		char path[PATH_MAX];
		struct stat st;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (stat(path, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (collect(p, path) != 0)
				break;
			continue;
		}
		if (array_grow((void **)&p->v, &p->cap, p->n + 1, sizeof(*p->v)) < 0)
			break;
		p->v[p->n++] = strdup(path);
	}
	closedir(d);
	return 0;
}

int main(int argc, char **argv)
{
	struct paths p = { 0 };
	int passes = argc > 2 ? atoi(argv[2]) : 3;
	uint64_t t0, ms;
	struct stat st;

	if (argc < 2 || passes < 1) {
		fprintf(stderr, "usage: stat_bench DIR [PASSES]\n");
		return 2;
	}
	if (collect(&p, argv[1]) != 0 || p.n == 0) {
		fprintf(stderr, "stat_bench: no files under '%s'\n", argv[1]);
		return 1;
	}
	t0 = retry_now_ms();
	for (int k = 0; k < passes; k++)
		for (size_t i = 0; i < p.n; i++)
			if (stat(p.v[i], &st) != 0) {
				perror(p.v[i]);
				return 1;
			}
	ms = retry_now_ms() - t0;
	printf("stat_files=%zu passes=%d seconds=%.3f stats_per_s=%.0f\n", p.n, passes, ms / 1000.0,
	       (double)p.n * passes / (ms ? ms / 1000.0 : 0.001));
	for (size_t i = 0; i < p.n; i++)
		free(p.v[i]);
	free(p.v);
	return 0;
}
