/*
 * fetch_snapshot.c - one meta_client_fetch_snapshot, as granary-fuse makes
 * it at start, for e2e/meta/test_meta_python.py: the Python test holds
 * meta's streams with a client of its own and watches what the C client
 * does meanwhile.
 *
 *   e2e_fetch_snapshot ADDRESS MOUNT_KEY_FILE DATASET TIMEOUT_MS
 *
 * Signs as the mount role; TIMEOUT_MS is the client's build timeout (all
 * tries of the fetch). Prints "generation G bytes B chunks C entries N" and
 * exits 0, or prints the error on stderr and exits 1. meta_client logs to
 * stderr.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "meta/meta_client.h"

int main(int argc, char **argv)
{
	struct meta_client_options opt = { .role = META_ROLE_MOUNT };
	struct meta_client_fetch_stats stats = { 0 };
	struct meta_client *c = NULL;
	struct snapshot *snap = NULL;
	struct error err;
	char *end;

	if (argc != 5) {
		fprintf(stderr, "usage: %s ADDRESS MOUNT_KEY_FILE DATASET TIMEOUT_MS\n", argv[0]);
		return 2;
	}
	opt.key_file = argv[2];
	opt.build_timeout_ms = strtoull(argv[4], &end, 10);
	if (*end || !opt.build_timeout_ms) {
		fprintf(stderr, "TIMEOUT_MS: not a positive number of milliseconds: '%s'\n", argv[4]);
		return 2;
	}
	error_clear(&err);
	if (meta_client_new(argv[1], &opt, &c, &err) != ERR_OK ||
	    meta_client_fetch_snapshot(c, argv[3], 0, &snap, &stats, &err) != ERR_OK) {
		fprintf(stderr, "fetch_snapshot: %s (%s)\n", err.msg, error_code_name(err.code));
		meta_client_free(c);
		return 1;
	}
	printf("generation %" PRIu64 " bytes %" PRIu64 " chunks %" PRIu64 " entries %" PRIu64 "\n",
	       stats.generation, stats.bytes, stats.chunks, snapshot_count(snap));
	snapshot_free(snap);
	meta_client_free(c);
	return 0;
}
