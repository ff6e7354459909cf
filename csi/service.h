/*
 * service.h - the CSI services (csi.v1.Identity, Controller, Node) on an
 * rpc_server: thin adapters that parse each request into the cores' plain
 * structs (csi/controller.h, csi/node.h, csi/identity.h), call them and
 * reply; an error becomes its gRPC status once, in rpc_server
 * (error_to_grpc). Every string of a request is checked at its wire length
 * first: a NUL byte in any of them (a name, an id, a path, a parameter, a
 * secret) is INVALID_ARGUMENT naming the field, never a silently shorter
 * string. Methods of a role that is off, and those Granary does not
 * serve (snapshots, expansion, ControllerPublish ...), are answered
 * UNIMPLEMENTED by the server.
 */
#ifndef GRANARY_CSI_SERVICE_H
#define GRANARY_CSI_SERVICE_H

#include "common/error.h"
#include "csi/controller.h"
#include "csi/node.h"
#include "meta/meta_client.h"
#include "rpc/rpc_server.h"

/* A registered method and the service it belongs to (csi_service_add). */
struct csi_service_method {
	struct csi_service *svc;
	const void *method;
};

#define CSI_SERVICE_METHODS 16

struct csi_service {
	struct controller *controller; /* NULL: the controller role is off */
	struct node *node;             /* NULL: the node role is off */
	struct meta_client *probe;     /* Probe's client (short deadline); NULL = always ready */
	const char *node_id;           /* NodeGetInfo */
	struct csi_service_method methods[CSI_SERVICE_METHODS]; /* csi_service_add's */
};

/* Registers the handlers of the roles that are on (before rpc_server_start).
 * svc must outlive the server. Errors of rpc_server_add_unary. */
enum error_code csi_service_add(struct rpc_server *srv, struct csi_service *svc,
				struct error *err);

#endif
