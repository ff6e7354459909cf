/*
 * service.h - the granary.v1.Meta gRPC service: thin adapters from
 * rpc_server calls to the registry and the membership. Each handler parses
 * its request, calls the core, and replies; the error code the core returns
 * becomes the gRPC status once, in rpc_server (error_to_grpc).
 *
 * The method names are in meta/methods.h, which meta_client uses too.
 */
#ifndef GRANARY_META_SERVICE_H
#define GRANARY_META_SERVICE_H

#include "common/error.h"
#include "meta/membership.h"
#include "meta/methods.h"
#include "meta/registry.h"
#include "meta/worker_identity.h"
#include "rpc/rpc_server.h"

/* Bytes of snapshot data in one SnapshotChunk: a quarter of the default
 * 4 MiB message limit, so a chunk always fits with room to spare. */
#define META_SNAPSHOT_CHUNK (1u << 20)

struct meta_service {
	struct registry *registry;
	struct membership *membership;
	/* NULL: any caller the worker role admits may heartbeat under any
	 * worker id. Else each Heartbeat must carry its worker pod's token
	 * (META_IDENTITY_METADATA) for the worker id it claims. */
	struct worker_identity *identity;
};

/*
 * Registers the eight handlers of granary.v1.Meta on srv (before
 * rpc_server_start). svc must outlive the server. Errors of
 * rpc_server_add_*.
 */
enum error_code meta_service_add(struct rpc_server *srv, struct meta_service *svc,
				 struct error *err);

#endif
