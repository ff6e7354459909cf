/*
 * replay.c - runs a fuzz target's LLVMFuzzerTestOneInput once over every
 * file named on the command line, or in the directories named there, for
 * builds without libFuzzer (ctest label fuzz). A crash or sanitizer report
 * fails the test; the file is printed before it runs.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz/fuzz.h"

/* Targets that need no set-up leave it out. */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	long len;

	if (!f) {
		fprintf(stderr, "replay: open '%s': %s\n", path, strerror(errno));
		return -1;
	}
	if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
	    !(buf = malloc((size_t)len + 1)) || fread(buf, 1, (size_t)len, f) != (size_t)len) {
		fprintf(stderr, "replay: read '%s': %s\n", path, strerror(errno ? errno : EIO));
		free(buf);
		fclose(f);
		return -1;
	}
	fclose(f);
	printf("replay: %s (%ld bytes)\n", path, len);
	fflush(stdout);
	LLVMFuzzerTestOneInput(buf, (size_t)len);
	free(buf);
	return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

/* Returns the number of inputs run, -1 when one cannot be read. */
static long replay_path(const char *path)
{
	struct dirent **names = NULL;
	struct stat st;
	long runs = 0;
	int n, i;

	if (stat(path, &st) != 0) {
		if (errno == ENOENT)
			return 0; /* no regressions yet */
		fprintf(stderr, "replay: stat '%s': %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode))
		return replay_file(path) == 0 ? 1 : -1;
	n = scandir(path, &names, NULL, by_name);
	if (n < 0) {
		fprintf(stderr, "replay: list '%s': %s\n", path, strerror(errno));
		return -1;
	}
	for (i = 0; i < n; i++) {
		char child[4096];

		if (names[i]->d_name[0] != '.' && runs >= 0) {
			snprintf(child, sizeof(child), "%s/%s", path, names[i]->d_name);
			if (stat(child, &st) == 0 && S_ISREG(st.st_mode))
				runs = replay_file(child) == 0 ? runs + 1 : -1;
		}
		free(names[i]);
	}
	free(names);
	return runs;
}

int main(int argc, char **argv)
{
	long total = 0;
	int i;

	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	for (i = 1; i < argc; i++) {
		long runs = replay_path(argv[i]);

		if (runs < 0)
			return 1;
		total += runs;
	}
	if (total == 0) {
		fprintf(stderr, "replay: no inputs in the paths given\n");
		return 1;
	}
	printf("replay: %ld inputs, no crash\n", total);
	return 0;
}
