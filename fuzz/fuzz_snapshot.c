/*
 * fuzz_snapshot.c - a snapshot as granary-fuse reads it from meta or from
 * disk (snapshot_decode). The input is decoded as it is, then again with
 * its XXH3-64 trailer recomputed so that mutations reach the decoder past
 * the checksum. A snapshot that decodes is walked (stat, path, lookup,
 * readdir of every directory) and must encode back to bytes that decode to
 * the same encoding.
 */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/log.h"
#include "fuzz/fuzz.h"
#include "meta/snapshot.h"

#define TRAILER 8
#define WALK_MAX 4096 /* entries walked per input: keeps every run short */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_set_level(LOG_LEVEL_ERROR);
	return 0;
}

static int count_child(const char *name, uint64_t ino, bool is_dir, uint64_t next_off,
		       void *arg)
{
	const struct snapshot *snap = arg;

	if (ino == 0 || ino > snapshot_count(snap) || !name)
		abort();
	return 0;
}

static void walk(const struct snapshot *snap)
{
	uint64_t n = snapshot_count(snap), ino;
	char path[4096], key[4096];

	(void)snapshot_resolve_path(snap, "a/b");
	for (ino = 1; ino <= n && ino <= WALK_MAX; ino++) {
		struct snapshot_entry_info info;

		if (snapshot_stat(snap, ino, &info) != ERR_OK)
			abort();
		if (info.is_dir && snapshot_readdir(snap, ino, 0, count_child, (void *)snap) != ERR_OK)
			abort();
		if (ino != SNAPSHOT_ROOT_INO && snapshot_lookup(snap, info.parent, info.name) != ino)
			abort();
		if (snapshot_path(snap, ino, path, sizeof(path)) == ERR_OK &&
		    snapshot_resolve_path(snap, path) != ino)
			abort();
		(void)snapshot_object_key(snap, ino, key, sizeof(key));
	}
}

static void decode(const uint8_t *buf, size_t len)
{
	struct snapshot *snap = NULL, *again = NULL;
	void *enc = NULL, *enc2 = NULL;
	size_t enc_len = 0, enc2_len = 0;
	struct error err;

	if (snapshot_decode(buf, len, &snap, &err) != ERR_OK)
		return;
	walk(snap);
	if (snapshot_encode_to_buffer(snap, &enc, &enc_len, &err) == ERR_OK) {
		if (snapshot_decode(enc, enc_len, &again, &err) != ERR_OK ||
		    snapshot_encode_to_buffer(again, &enc2, &enc2_len, &err) != ERR_OK ||
		    enc_len != enc2_len || memcmp(enc, enc2, enc_len) != 0)
			abort();
	}
	free(enc2);
	free(enc);
	snapshot_free(again);
	snapshot_free(snap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy;
	uint64_t h;

	decode(data, size);
	if (size < TRAILER || !(copy = malloc(size)))
		return 0;
	memcpy(copy, data, size);
	h = XXH3_64bits(copy, size - TRAILER);
	for (int i = 0; i < TRAILER; i++)
		copy[size - TRAILER + i] = (uint8_t)(h >> (8 * i));
	decode(copy, size);
	free(copy);
	return 0;
}
