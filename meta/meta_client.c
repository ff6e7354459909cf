/*
 * meta_client.c - granary-meta's client over rpc_client.
 */
#include "meta/meta_client.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fileio.h"
#include "common/log.h"
#include "common/retry.h"
#include "meta/methods.h"
#include "rpc/rpc_client.h"

/* A snapshot larger than this is refused before it is received: 64 bytes
 * an object for 100 million objects. */
#define FETCH_MAX ((uint64_t)8 << 30)
/* A GetSnapshot that meta refuses as busy (ERR_BUSY: it serves
 * rpc.max_streams streams already, e.g. to a burst of mounts starting at
 * once) is sent again after a backoff from this to that, with jitter so
 * that the burst spreads out, within the build timeout. */
#define FETCH_BUSY_FIRST_MS 100
#define FETCH_BUSY_MAX_MS 2000

struct meta_client {
	struct rpc_client *rpc;
	uint64_t timeout_ms, build_timeout_ms;
	struct token *key; /* NULL: unsigned calls */
	enum meta_role role;
	char *identity_file; /* NULL: heartbeats carry no identity token */
};

/* rpc_client_auth_fn: every call signed with the role's key, now. */
static enum error_code sign_call(const char *method, const void *body, size_t len, char *value,
				 size_t size, void *arg, struct error *err)
{
	struct meta_client *c = arg;

	if (meta_auth_sign(c->key, c->role, method, body, len, (int64_t)time(NULL), value, size) !=
	    ERR_OK)
		return error_set(err, ERR_INTERNAL, "cannot sign the call as role '%s'",
				 meta_role_name(c->role));
	return ERR_OK;
}

enum error_code meta_client_new(const char *address, const struct meta_client_options *opt,
				struct meta_client **out, struct error *err)
{
	struct rpc_client_options ropt = { .wait_for_ready = opt && opt->wait_for_ready,
					   .tls = opt ? opt->tls : NULL };
	struct meta_client *c;
	enum error_code rc;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return error_set(err, ERR_NOMEM, "meta client: out of memory");
	c->timeout_ms = opt && opt->timeout_ms ? opt->timeout_ms : 30000;
	c->build_timeout_ms = opt && opt->build_timeout_ms ? opt->build_timeout_ms : 600000;
	if (opt && opt->identity_token_file && *opt->identity_token_file &&
	    !(c->identity_file = strdup(opt->identity_token_file))) {
		free(c);
		return error_set(err, ERR_NOMEM, "meta client: out of memory");
	}
	if (opt && opt->key_file && *opt->key_file) {
		rc = token_load_file(opt->key_file, &c->key, err);
		if (rc != ERR_OK) {
			free(c->identity_file);
			free(c);
			if (err)
				error_wrap(err, "meta.key_file");
			return rc;
		}
		c->role = opt->role;
		ropt.auth_key = META_AUTH_METADATA;
		ropt.auth = sign_call;
		ropt.auth_arg = c;
	}
	rc = rpc_client_new(address, &ropt, &c->rpc, err);
	if (rc != ERR_OK) {
		token_free(c->key);
		free(c->identity_file);
		free(c);
		return rc;
	}
	*out = c;
	return ERR_OK;
}

void meta_client_free(struct meta_client *c)
{
	if (!c)
		return;
	rpc_client_free(c->rpc);
	token_free(c->key);
	free(c->identity_file);
	free(c);
}

static enum error_code call(struct meta_client *c, const char *method, const void *request,
			    const ProtobufCMessageDescriptor *reply_desc, uint64_t timeout_ms,
			    void **out, struct error *err)
{
	ProtobufCMessage *reply = NULL;
	enum error_code rc;

	rc = rpc_client_call(c->rpc, method, request, reply_desc, timeout_ms, &reply, err);
	if (out)
		*out = reply;
	else if (reply)
		protobuf_c_message_free_unpacked(reply, NULL);
	return rc;
}

enum error_code meta_client_register(struct meta_client *c, const Granary__V1__DatasetSpec *spec,
				     Granary__V1__Dataset **out, struct error *err)
{
	return meta_client_register_within(c, spec, 0, out, err);
}

enum error_code meta_client_register_within(struct meta_client *c,
					    const Granary__V1__DatasetSpec *spec,
					    uint64_t timeout_ms, Granary__V1__Dataset **out,
					    struct error *err)
{
	return call(c, META_METHOD_REGISTER, spec, &granary__v1__dataset__descriptor,
		    timeout_ms ? timeout_ms : c->build_timeout_ms, (void **)out, err);
}

enum error_code meta_client_get(struct meta_client *c, const char *name,
				Granary__V1__Dataset **out, struct error *err)
{
	Granary__V1__GetDatasetRequest req = GRANARY__V1__GET_DATASET_REQUEST__INIT;

	req.name = (char *)name;
	return call(c, META_METHOD_GET, &req, &granary__v1__dataset__descriptor, c->timeout_ms,
		    (void **)out, err);
}

enum error_code meta_client_list(struct meta_client *c, Granary__V1__ListDatasetsReply **out,
				 struct error *err)
{
	Granary__V1__ListDatasetsRequest req = GRANARY__V1__LIST_DATASETS_REQUEST__INIT;

	return call(c, META_METHOD_LIST, &req, &granary__v1__list_datasets_reply__descriptor,
		    c->timeout_ms, (void **)out, err);
}

enum error_code meta_client_delete(struct meta_client *c, const char *name, struct error *err)
{
	Granary__V1__DeleteDatasetRequest req = GRANARY__V1__DELETE_DATASET_REQUEST__INIT;

	req.name = (char *)name;
	return call(c, META_METHOD_DELETE, &req, &granary__v1__delete_dataset_reply__descriptor,
		    c->timeout_ms, NULL, err);
}

enum error_code meta_client_refresh(struct meta_client *c, const char *name,
				    Granary__V1__Dataset **out, struct error *err)
{
	Granary__V1__RefreshDatasetRequest req = GRANARY__V1__REFRESH_DATASET_REQUEST__INIT;

	req.name = (char *)name;
	return call(c, META_METHOD_REFRESH, &req, &granary__v1__dataset__descriptor,
		    c->build_timeout_ms, (void **)out, err);
}

struct assembly {
	const char *name;
	uint8_t *buf;
	uint64_t total, have, generation, chunks;
};

static enum error_code take_chunk(const ProtobufCMessage *msg, void *arg, struct error *err)
{
	const Granary__V1__SnapshotChunk *chunk = (const void *)msg;
	struct assembly *a = arg;

	if (a->chunks == 0) {
		if (chunk->total_size > FETCH_MAX)
			return error_set(err, ERR_IO,
					 "snapshot of '%s': %llu bytes is more than the %llu this client takes",
					 a->name, (unsigned long long)chunk->total_size,
					 (unsigned long long)FETCH_MAX);
		a->total = chunk->total_size;
		a->generation = chunk->generation;
		a->buf = malloc(a->total ? a->total : 1);
		if (!a->buf)
			return error_set(err, ERR_NOMEM, "snapshot of '%s': out of memory (%llu bytes)",
					 a->name, (unsigned long long)a->total);
	}
	if (chunk->generation != a->generation || chunk->total_size != a->total ||
	    chunk->offset != a->have || chunk->data.len > a->total - a->have)
		return error_set(err, ERR_IO,
				 "snapshot of '%s': chunk %llu out of order (generation %llu offset %llu size %zu; expected generation %llu offset %llu of %llu)",
				 a->name, (unsigned long long)a->chunks,
				 (unsigned long long)chunk->generation,
				 (unsigned long long)chunk->offset, chunk->data.len,
				 (unsigned long long)a->generation, (unsigned long long)a->have,
				 (unsigned long long)a->total);
	memcpy(a->buf + a->have, chunk->data.data, chunk->data.len);
	a->have += chunk->data.len;
	a->chunks++;
	return ERR_OK;
}

/* One GetSnapshot call within timeout_ms, with an assembly of its own. */
static enum error_code fetch_once(struct meta_client *c, const char *name, uint64_t generation,
				  uint64_t timeout_ms, struct snapshot **out,
				  struct meta_client_fetch_stats *stats, struct error *err)
{
	Granary__V1__GetSnapshotRequest req = GRANARY__V1__GET_SNAPSHOT_REQUEST__INIT;
	struct assembly a = { .name = name };
	enum error_code rc;

	req.name = (char *)name;
	req.generation = generation;
	rc = rpc_client_stream(c->rpc, META_METHOD_SNAPSHOT, &req.base,
			       &granary__v1__snapshot_chunk__descriptor, timeout_ms, take_chunk, &a,
			       err);
	if (rc == ERR_OK && (a.chunks == 0 || a.have != a.total))
		rc = error_set(err, ERR_IO, "snapshot of '%s': received %llu of %llu bytes", name,
			       (unsigned long long)a.have, (unsigned long long)a.total);
	if (rc == ERR_OK) {
		rc = snapshot_decode(a.buf, a.have, out, err);
		if (rc != ERR_OK)
			error_wrap(err, "snapshot of '%s' generation %llu", name,
				   (unsigned long long)a.generation);
	}
	if (stats) {
		stats->generation = a.generation;
		stats->bytes = a.have;
		stats->chunks = a.chunks;
	}
	free(a.buf);
	return rc;
}

enum error_code meta_client_fetch_snapshot(struct meta_client *c, const char *name,
					   uint64_t generation, struct snapshot **out,
					   struct meta_client_fetch_stats *stats,
					   struct error *err)
{
	const struct retry_policy busy = { .max_attempts = UINT_MAX,
					   .base_ms = FETCH_BUSY_FIRST_MS,
					   .max_ms = FETCH_BUSY_MAX_MS,
					   .deadline_ms = c->build_timeout_ms };
	struct error local;
	struct retry r;
	uint64_t delay_ms, left;
	enum error_code rc;

	*out = NULL;
	if (!err)
		err = &local;
	retry_init(&r, &busy);
	for (;;) {
		left = retry_remaining_ms(&r, retry_now_ms());
		rc = fetch_once(c, name, generation, left ? left : 1, out, stats, err);
		if (rc != ERR_BUSY)
			return rc;
		if (!retry_next(&r, retry_now_ms(), &delay_ms))
			return error_wrap(err, "snapshot of '%s': granary-meta still busy after %llu ms (the build timeout is %llu ms)",
					  name, (unsigned long long)(retry_now_ms() - r.start_ms),
					  (unsigned long long)c->build_timeout_ms);
		if (r.attempt == 2) /* the first retry: say once why this waits */
			log_warn("granary-meta is busy serving other snapshots; retrying until it has room",
				 LOG_S("dataset", name), LOG_S("meta", rpc_client_address(c->rpc)),
				 LOG_U("timeout_ms", c->build_timeout_ms), LOG_S("cause", err->msg));
		retry_sleep_ms(delay_ms);
	}
}

enum error_code meta_client_heartbeat(struct meta_client *c, const char *worker_id,
				      const char *address, uint64_t capacity_bytes,
				      uint64_t used_bytes, Granary__V1__HeartbeatReply **out,
				      struct error *err)
{
	Granary__V1__HeartbeatRequest req = GRANARY__V1__HEARTBEAT_REQUEST__INIT;

	req.worker_id = (char *)worker_id;
	req.address = (char *)address;
	req.capacity_bytes = capacity_bytes;
	req.used_bytes = used_bytes;
	return meta_client_heartbeat_send(c, &req, out, err);
}

enum error_code meta_client_heartbeat_send(struct meta_client *c,
					   const Granary__V1__HeartbeatRequest *req,
					   Granary__V1__HeartbeatReply **out, struct error *err)
{
	ProtobufCMessage *reply = NULL;
	char *token = NULL;
	size_t len = 0;
	enum error_code rc;

	*out = NULL;
	if (!c->identity_file)
		return call(c, META_METHOD_HEARTBEAT, req,
			    &granary__v1__heartbeat_reply__descriptor, c->timeout_ms, (void **)out,
			    err);
	/* Read again for every heartbeat: the kubelet rotates the token. */
	rc = fileio_read_small(c->identity_file, META_IDENTITY_TOKEN_MAX, &token, &len, err);
	if (rc != ERR_OK)
		return error_wrap(err, "Heartbeat: meta.identity_token_file");
	while (len && (token[len - 1] == '\n' || token[len - 1] == '\r' || token[len - 1] == ' '))
		token[--len] = '\0';
	if (!len || memchr(token, '\0', len)) {
		rc = error_set(err, ERR_INVALID, "Heartbeat: meta.identity_token_file '%s' is empty or not text",
			       c->identity_file);
	} else {
		struct rpc_client_metadata md = { META_IDENTITY_METADATA, token };

		rc = rpc_client_call_with(c->rpc, META_METHOD_HEARTBEAT, &req->base,
					  &granary__v1__heartbeat_reply__descriptor, c->timeout_ms,
					  &md, &reply, err);
		*out = (Granary__V1__HeartbeatReply *)reply;
	}
	explicit_bzero(token, len);
	free(token);
	return rc;
}

enum error_code meta_client_list_workers(struct meta_client *c,
					 Granary__V1__ListWorkersReply **out, struct error *err)
{
	Granary__V1__ListWorkersRequest req = GRANARY__V1__LIST_WORKERS_REQUEST__INIT;

	return call(c, META_METHOD_WORKERS, &req, &granary__v1__list_workers_reply__descriptor,
		    c->timeout_ms, (void **)out, err);
}
