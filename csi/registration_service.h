/*
 * registration_service.h - the kubelet's pluginregistration.Registration
 * service (api/pluginregistration.proto) over the core in
 * csi/registration.h, on a gRPC server of its own listening on the
 * registration socket: the kubelet must find only that service there, and
 * the socket can be made anew without touching the CSI server.
 *
 * The handlers only translate: GetInfo answers registration_info(),
 * NotifyRegistrationStatus calls registration_notify().
 *
 * The socket: a stale one at the path (a previous run's) is removed before
 * binding. The server binds a hidden name next to it (".NAME.XXXXXXXX",
 * which the kubelet ignores) and renames it to the path once it serves, so the
 * kubelet never finds a socket that does not answer yet, and gRPC's own
 * clean-up at shutdown never touches the path. The file's identity
 * (device, inode, change time) is kept: stopping removes the socket only
 * when it is still this server's, never one a newer plugin made there.
 */
#ifndef GRANARY_CSI_REGISTRATION_SERVICE_H
#define GRANARY_CSI_REGISTRATION_SERVICE_H

#include <stdbool.h>

#include "common/error.h"
#include "csi/registration.h"

struct registration_server;

/*
 * Serves reg on the unix socket at path (absolute, at most
 * REGISTRATION_SOCKET_MAX bytes; its directory made if missing). reg must
 * outlive the server. ERR_EXISTS when something other
 * than a socket is at path, ERR_UNAVAILABLE when it cannot be bound, both
 * naming the path; ERR_NOMEM, ERR_INTERNAL. Stop with
 * registration_server_stop.
 */
enum error_code registration_server_start(struct registration *reg, const char *path,
					  struct registration_server **out, struct error *err);

enum registration_socket {
	REGISTRATION_SOCKET_OURS = 0, /* the file this server bound */
	REGISTRATION_SOCKET_MISSING,  /* removed (the kubelet's directory was
				       * cleaned): the kubelet dropped the plugin */
	REGISTRATION_SOCKET_REPLACED, /* another file is there now, e.g. a newer
				       * plugin's during a rolling update: leave it */
};

/* What is at the server's socket path now. */
enum registration_socket registration_server_socket(const struct registration_server *rs);

/* Stops serving, removes the socket if it is still this server's, frees.
 * NULL is fine. */
void registration_server_stop(struct registration_server *rs);

#endif
