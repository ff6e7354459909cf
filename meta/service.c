/*
 * service.c - granary.v1.Meta handlers: parse, call the core, reply.
 */
#include "meta/service.h"

#include <stdlib.h>
#include <string.h>

#include "granary.pb-c.h"

/* The registry's view of a dataset as the wire message; d still owns the
 * spec the message points to. */
static void dataset_to_proto(const struct registry_dataset *d, Granary__V1__Dataset *out)
{
	static const Granary__V1__DatasetState states[] = {
		[REGISTRY_REGISTERING] = GRANARY__V1__DATASET_STATE__DATASET_STATE_REGISTERING,
		[REGISTRY_READY] = GRANARY__V1__DATASET_STATE__DATASET_STATE_READY,
		[REGISTRY_REFRESHING] = GRANARY__V1__DATASET_STATE__DATASET_STATE_REFRESHING,
	};

	granary__v1__dataset__init(out);
	out->spec = d->spec;
	out->generation = d->generation;
	out->state = states[d->state];
	out->files = d->totals.files;
	out->dirs = d->totals.dirs;
	out->bytes = d->totals.bytes;
	out->skipped = d->totals.skipped;
	out->created_unix_ms = d->created_unix_ms;
}

static enum error_code reply_dataset(struct rpc_server_call *call, enum error_code rc,
				     struct registry_dataset *d, struct error *err)
{
	Granary__V1__Dataset msg;

	if (rc == ERR_OK) {
		dataset_to_proto(d, &msg);
		rc = rpc_server_reply(call, &msg.base, err);
	}
	registry_dataset_release(d);
	return rc;
}

static enum error_code on_register(struct rpc_server_call *call, const ProtobufCMessage *request,
				   void *arg, struct error *err)
{
	struct meta_service *svc = arg;
	struct registry_dataset d;

	return reply_dataset(call, registry_register(svc->registry, (const void *)request, &d, err),
			     &d, err);
}

static enum error_code on_get(struct rpc_server_call *call, const ProtobufCMessage *request,
			      void *arg, struct error *err)
{
	const Granary__V1__GetDatasetRequest *req = (const void *)request;
	struct meta_service *svc = arg;
	struct registry_dataset d;

	return reply_dataset(call, registry_get(svc->registry, req->name, &d, err), &d, err);
}

static enum error_code on_refresh(struct rpc_server_call *call, const ProtobufCMessage *request,
				  void *arg, struct error *err)
{
	const Granary__V1__RefreshDatasetRequest *req = (const void *)request;
	struct meta_service *svc = arg;
	struct registry_dataset d;

	return reply_dataset(call, registry_refresh(svc->registry, req->name, &d, err), &d, err);
}

static enum error_code on_list(struct rpc_server_call *call, const ProtobufCMessage *request,
			       void *arg, struct error *err)
{
	Granary__V1__ListDatasetsReply reply = GRANARY__V1__LIST_DATASETS_REPLY__INIT;
	struct meta_service *svc = arg;
	struct registry_dataset *list = NULL;
	Granary__V1__Dataset *msgs = NULL, **ptrs = NULL;
	size_t n = 0;
	enum error_code rc;

	rc = registry_list(svc->registry, &list, &n, err);
	if (rc != ERR_OK)
		return rc;
	msgs = calloc(n ? n : 1, sizeof(*msgs));
	ptrs = calloc(n ? n : 1, sizeof(*ptrs));
	if (!msgs || !ptrs) {
		rc = error_set(err, ERR_NOMEM, "list datasets: out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		dataset_to_proto(&list[i], &msgs[i]);
		ptrs[i] = &msgs[i];
	}
	reply.n_datasets = n;
	reply.datasets = ptrs;
	rc = rpc_server_reply(call, &reply.base, err);
out:
	free(ptrs);
	free(msgs);
	registry_list_free(list, n);
	return rc;
}

static enum error_code on_delete(struct rpc_server_call *call, const ProtobufCMessage *request,
				 void *arg, struct error *err)
{
	const Granary__V1__DeleteDatasetRequest *req = (const void *)request;
	Granary__V1__DeleteDatasetReply reply = GRANARY__V1__DELETE_DATASET_REPLY__INIT;
	struct meta_service *svc = arg;
	enum error_code rc = registry_delete(svc->registry, req->name, err);

	return rc == ERR_OK ? rpc_server_reply(call, &reply.base, err) : rc;
}

static enum error_code send_chunk(uint64_t generation, uint64_t total, uint64_t offset,
				  const void *data, size_t len, void *arg, struct error *err)
{
	Granary__V1__SnapshotChunk chunk = GRANARY__V1__SNAPSHOT_CHUNK__INIT;

	chunk.generation = generation;
	chunk.total_size = total;
	chunk.offset = offset;
	chunk.data.data = (uint8_t *)data;
	chunk.data.len = len;
	return rpc_server_send(arg, &chunk.base, err);
}

static enum error_code on_snapshot(struct rpc_server_call *call, const ProtobufCMessage *request,
				   void *arg, struct error *err)
{
	const Granary__V1__GetSnapshotRequest *req = (const void *)request;
	struct meta_service *svc = arg;

	return registry_read_snapshot(svc->registry, req->name, req->generation,
				      META_SNAPSHOT_CHUNK, send_chunk, call, err);
}

/* What the worker's cache holds of each dataset, as its heartbeat says. */
static void heartbeat_usage(struct meta_service *svc, const Granary__V1__HeartbeatRequest *req)
{
	size_t n = req->n_datasets > 4096 ? 4096 : req->n_datasets;
	struct membership_usage *u;
	struct error ignored;

	if (!n) {
		membership_set_usage(svc->membership, req->worker_id, NULL, 0, NULL);
		return;
	}
	/* Out of memory: the previous figures stay. */
	u = calloc(n, sizeof(*u));
	for (size_t i = 0; u && i < n; i++) {
		const Granary__V1__DatasetCache *c = req->datasets[i];

		u[i] = (struct membership_usage){ c->name, c->bytes, c->preload_state,
						  c->preload_blocks_done, c->preload_blocks_total };
	}
	if (u)
		membership_set_usage(svc->membership, req->worker_id, u, n, &ignored);
	free(u);
}

static enum error_code on_heartbeat(struct rpc_server_call *call, const ProtobufCMessage *request,
				    void *arg, struct error *err)
{
	const Granary__V1__HeartbeatRequest *req = (const void *)request;
	Granary__V1__HeartbeatReply reply = GRANARY__V1__HEARTBEAT_REPLY__INIT;
	struct meta_service *svc = arg;
	enum error_code rc;

	/* Before the membership: a refused or unreviewable claim changes
	 * nothing, so a member stays until its normal expiry. */
	if (svc->identity) {
		char *token = rpc_server_metadata(call, META_IDENTITY_METADATA);

		rc = worker_identity_check(svc->identity, token, req->worker_id, err);
		if (token)
			explicit_bzero(token, strlen(token));
		free(token);
		if (rc != ERR_OK)
			return rc;
	}
	if (req->leaving) {
		rc = membership_leave(svc->membership, req->worker_id, req->instance,
				      &reply.membership_version, err);
	} else {
		rc = membership_heartbeat(svc->membership, req->worker_id, req->address,
					  req->instance, req->capacity_bytes, req->used_bytes,
					  &reply.membership_version, err);
		if (rc == ERR_OK)
			heartbeat_usage(svc, req);
	}
	if (rc != ERR_OK)
		return rc;
	reply.expiry_ms = membership_expiry_ms(svc->membership);
	reply.interval_ms = membership_interval_ms(svc->membership);
	return rpc_server_reply(call, &reply.base, err);
}

static enum error_code on_workers(struct rpc_server_call *call, const ProtobufCMessage *request,
				  void *arg, struct error *err)
{
	Granary__V1__ListWorkersReply reply = GRANARY__V1__LIST_WORKERS_REPLY__INIT;
	struct meta_service *svc = arg;
	struct membership_worker *list = NULL;
	Granary__V1__Worker *msgs = NULL, **ptrs = NULL;
	size_t n = 0;
	enum error_code rc;

	rc = membership_list(svc->membership, &list, &n, &reply.version, err);
	if (rc != ERR_OK)
		return rc;
	msgs = calloc(n ? n : 1, sizeof(*msgs));
	ptrs = calloc(n ? n : 1, sizeof(*ptrs));
	if (!msgs || !ptrs) {
		rc = error_set(err, ERR_NOMEM, "list workers: out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		granary__v1__worker__init(&msgs[i]);
		msgs[i].id = list[i].id;
		msgs[i].address = list[i].address;
		msgs[i].capacity_bytes = list[i].capacity_bytes;
		msgs[i].used_bytes = list[i].used_bytes;
		msgs[i].last_seen_unix_ms = list[i].last_seen_unix_ms;
		ptrs[i] = &msgs[i];
	}
	reply.n_workers = n;
	reply.workers = ptrs;
	rc = rpc_server_reply(call, &reply.base, err);
out:
	free(ptrs);
	free(msgs);
	free(list);
	return rc;
}

enum error_code meta_service_add(struct rpc_server *srv, struct meta_service *svc,
				 struct error *err)
{
	static const struct {
		const char *method;
		const ProtobufCMessageDescriptor *request, *reply;
		rpc_server_handler_fn fn;
		int streaming;
	} table[] = {
		{ META_METHOD_REGISTER, &granary__v1__dataset_spec__descriptor,
		  &granary__v1__dataset__descriptor, on_register, 0 },
		{ META_METHOD_GET, &granary__v1__get_dataset_request__descriptor,
		  &granary__v1__dataset__descriptor, on_get, 0 },
		{ META_METHOD_LIST, &granary__v1__list_datasets_request__descriptor,
		  &granary__v1__list_datasets_reply__descriptor, on_list, 0 },
		{ META_METHOD_DELETE, &granary__v1__delete_dataset_request__descriptor,
		  &granary__v1__delete_dataset_reply__descriptor, on_delete, 0 },
		{ META_METHOD_REFRESH, &granary__v1__refresh_dataset_request__descriptor,
		  &granary__v1__dataset__descriptor, on_refresh, 0 },
		{ META_METHOD_SNAPSHOT, &granary__v1__get_snapshot_request__descriptor,
		  &granary__v1__snapshot_chunk__descriptor, on_snapshot, 1 },
		{ META_METHOD_HEARTBEAT, &granary__v1__heartbeat_request__descriptor,
		  &granary__v1__heartbeat_reply__descriptor, on_heartbeat, 0 },
		{ META_METHOD_WORKERS, &granary__v1__list_workers_request__descriptor,
		  &granary__v1__list_workers_reply__descriptor, on_workers, 0 },
	};

	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		enum error_code rc =
			table[i].streaming
				? rpc_server_add_stream(srv, table[i].method, table[i].request,
							table[i].reply, table[i].fn, svc, err)
				: rpc_server_add_unary(srv, table[i].method, table[i].request,
						       table[i].reply, table[i].fn, svc, err);

		if (rc != ERR_OK)
			return rc;
	}
	return ERR_OK;
}
