/*
 * resident.c - how much of a tree the page cache holds now: every regular
 * file under DIR (symbolic links not followed), its size and its bytes in
 * the page cache (fileio_resident_tree: mmap + mincore, whole pages):
 *   files=N bytes=B resident_bytes=R
 * bench/compare.sh runs it over a mount and over the cache directory
 * behind it after an epoch, to tell which copy of the bytes stayed. Only
 * the files' owner or root is told (common/fileio.h).
 */
#include <inttypes.h>
#include <stdio.h>

#include "bench/bench_tool.h"
#include "common/fileio.h"

int bench_resident(const struct bench_settings *s, const char *dir)
{
	struct fileio_residency r;
	struct error err;

	(void)s;
	if (fileio_resident_tree(dir, &r, &err) != ERR_OK) {
		fprintf(stderr, "granary-bench: resident: %s\n", err.msg);
		return 1;
	}
	printf("files=%" PRIu64 " bytes=%" PRIu64 " resident_bytes=%" PRIu64 "\n", r.files,
	       r.bytes, r.resident);
	return 0;
}
