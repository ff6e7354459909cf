/*
 * placement.h - which worker owns a block: rendezvous (highest random
 * weight) hashing of the block's key hash over the live workers.
 *
 * Every client computes the owner itself from the membership list, so no
 * RPC asks where a block lives; when a worker joins or leaves only the
 * blocks it wins or held move. The membership is replaced as a whole
 * (placement_update) by a refresher thread; lookups take a read lock.
 */
#ifndef GRANARY_BLOCK_PLACEMENT_H
#define GRANARY_BLOCK_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/key.h"
#include "common/error.h"

#define PLACEMENT_ADDRESS_MAX 256

struct placement_worker {
	const char *id;
	const char *address;  /* "host:port" or "unix:///path" */
};

struct placement;

enum error_code placement_new(struct placement **out, struct error *err);
void placement_free(struct placement *p);

/* Replaces the membership (copied); version is the meta membership version. */
enum error_code placement_update(struct placement *p, const struct placement_worker *workers,
				 size_t n, uint64_t version, struct error *err);

/* The owner's address copied into addr (PLACEMENT_ADDRESS_MAX bytes) and its
 * id into id (may be NULL); ERR_NOT_FOUND when no worker is known. */
enum error_code placement_owner(struct placement *p, const uint8_t hash[BLOCK_HASH_LEN],
				char *addr, char *id, size_t id_size);

/* Whether the membership lists a worker with this id. */
bool placement_has(struct placement *p, const char *id);

/*
 * Whether every member is among these n workers, by id (in any order, at
 * any address, others listed too). Ids alone decide every block's owner,
 * and a block moves only to a worker that joins or away from one that
 * leaves: when this holds, replacing the membership by workers gives no
 * member a block it does not own now.
 */
bool placement_all_among(struct placement *p, const struct placement_worker *workers, size_t n);

uint64_t placement_version(struct placement *p);
size_t placement_count(struct placement *p);

#endif
