/*
 * meta_client.h - the client of granary-meta that granary-csi, granary-fuse
 * and granary-worker link (library granary_meta).
 *
 * One struct meta_client is one gRPC channel to meta; every call is
 * thread-safe. Replies are the protobuf-c messages of api/granary.proto,
 * owned by the caller: free them with their *_free_unpacked(msg, NULL)
 * (e.g. granary__v1__dataset__free_unpacked). Errors are ours, mapped back
 * from the gRPC status (error_from_grpc): ERR_NOT_FOUND, ERR_EXISTS,
 * ERR_INVALID naming the field, ERR_PERMISSION, ERR_UNAVAILABLE (meta or the
 * store unreachable; retrying may help), ERR_BUSY (meta refused the call for
 * load: meta_client_fetch_snapshot), ERR_TIMEOUT; the message is meta's
 * with the method and address in front. See docs/meta.md.
 */
#ifndef GRANARY_META_META_CLIENT_H
#define GRANARY_META_META_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error.h"
#include "common/tls.h"
#include "granary.pb-c.h"
#include "meta/meta_auth.h"
#include "meta/snapshot.h"

struct meta_client;

struct meta_client_options {
	uint64_t timeout_ms;          /* Get, List, Delete, Heartbeat ...; 0 = 30 s */
	uint64_t build_timeout_ms;    /* Register, Refresh, GetSnapshot; 0 = 10 min */
	bool wait_for_ready;          /* wait for meta to be reachable up to the deadline */
	/*
	 * The role's key file: every call is signed with it as role
	 * (meta/meta_auth.h). NULL or "": calls go unsigned, which only a meta
	 * with auth.insecure serves.
	 */
	const char *key_file;
	enum meta_role role;
	/*
	 * A file holding the worker pod's service account token, read again
	 * for every Heartbeat, which carries it as META_IDENTITY_METADATA
	 * (meta/worker_identity.h). NULL or "": heartbeats carry none.
	 */
	const char *identity_token_file;
	/* TLS to meta (rpc_client_options.tls); NULL: plaintext. */
	const struct tls_material *tls;
};

/* Channel to address ("unix:///run/granary/meta.sock" or host:port); no
 * connection yet. ERR_INVALID for a malformed address; the errors of
 * token_load_file for the key file, naming it. */
enum error_code meta_client_new(const char *address, const struct meta_client_options *opt,
				struct meta_client **out, struct error *err);
void meta_client_free(struct meta_client *c);

/* RegisterDataset: *out is the dataset (generation 1 when new; the
 * existing one when the same spec was registered before). */
enum error_code meta_client_register(struct meta_client *c, const Granary__V1__DatasetSpec *spec,
				     Granary__V1__Dataset **out, struct error *err);
/* The same with a deadline of timeout_ms (0 = the client's build timeout).
 * ERR_TIMEOUT when it passes: meta goes on building, and registering again
 * waits for that build. */
enum error_code meta_client_register_within(struct meta_client *c,
					    const Granary__V1__DatasetSpec *spec,
					    uint64_t timeout_ms, Granary__V1__Dataset **out,
					    struct error *err);
enum error_code meta_client_get(struct meta_client *c, const char *name,
				Granary__V1__Dataset **out, struct error *err);
enum error_code meta_client_list(struct meta_client *c, Granary__V1__ListDatasetsReply **out,
				 struct error *err);
enum error_code meta_client_delete(struct meta_client *c, const char *name, struct error *err);
enum error_code meta_client_refresh(struct meta_client *c, const char *name,
				    Granary__V1__Dataset **out, struct error *err);

/* What a snapshot transfer took. */
struct meta_client_fetch_stats {
	uint64_t generation;
	uint64_t bytes;   /* encoded size */
	uint64_t chunks;  /* SnapshotChunk messages */
};

/*
 * GetSnapshot: receives the chunks of generation (0 = current), checks that
 * they are in order, of one generation and add up to total_size, and
 * decodes them (snapshot_decode, checksum included) into *out (free with
 * snapshot_free). stats may be NULL (else it describes the last try).
 * While meta refuses the call as busy (ERR_BUSY: it serves its
 * rpc.max_streams streams already) the call is sent again, after a
 * jittered backoff from 100 ms to 2 s, within the build timeout for all
 * tries; the first refusal is logged as a warning. ERR_BUSY when meta is
 * still busy then; ERR_IO for a broken transfer or encoding; the call's
 * other errors at once.
 */
enum error_code meta_client_fetch_snapshot(struct meta_client *c, const char *name,
					   uint64_t generation, struct snapshot **out,
					   struct meta_client_fetch_stats *stats,
					   struct error *err);

/* Heartbeat: *out has the membership version and the interval and expiry
 * meta expects. With options.identity_token_file, the errors of reading it
 * (naming meta.identity_token_file) fail the call before it is sent. */
enum error_code meta_client_heartbeat(struct meta_client *c, const char *worker_id,
				      const char *address, uint64_t capacity_bytes,
				      uint64_t used_bytes, Granary__V1__HeartbeatReply **out,
				      struct error *err);
/* The same with a request the caller filled in (granary-worker: its
 * instance, the bytes each dataset holds in its cache, leaving). */
enum error_code meta_client_heartbeat_send(struct meta_client *c,
					   const Granary__V1__HeartbeatRequest *req,
					   Granary__V1__HeartbeatReply **out, struct error *err);
enum error_code meta_client_list_workers(struct meta_client *c,
					 Granary__V1__ListWorkersReply **out, struct error *err);

#endif
