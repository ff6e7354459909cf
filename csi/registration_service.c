/*
 * registration_service.c - pluginregistration.Registration handlers and
 * their server: parse, call the core, reply.
 */
#include "csi/registration_service.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "common/fileio.h"
#include "common/log.h"
#include "common/netaddr.h"
#include "common/retry.h"
#include "pluginregistration.pb-c.h"
#include "rpc/rpc_server.h"

/*
 * gRPC binds the socket at a hidden name (bound_path) and removes that
 * name again at shutdown; the server renames it to path once it serves.
 * So the path itself is only ever removed here, and only while it is
 * still this server's socket.
 */
struct registration_server {
	struct rpc_server *srv;
	char path[108];
	char bound_path[108];
	struct stat bound; /* the socket file at path (st_ino 0: unknown) */
};

static enum error_code on_get_info(struct rpc_server_call *call, const ProtobufCMessage *request,
				   void *arg, struct error *err)
{
	Pluginregistration__PluginInfo reply = PLUGINREGISTRATION__PLUGIN_INFO__INIT;
	struct registration_info info;

	registration_info(arg, &info);
	reply.type = (char *)info.type;
	reply.name = (char *)info.name;
	reply.endpoint = (char *)info.endpoint;
	reply.n_supported_versions = info.nversions;
	reply.supported_versions = (char **)info.versions;
	log_debug("kubelet asked for the plugin's info", LOG_S("peer", rpc_server_peer(call)));
	return rpc_server_reply(call, &reply.base, err);
}

static enum error_code on_notify(struct rpc_server_call *call, const ProtobufCMessage *request,
				 void *arg, struct error *err)
{
	const Pluginregistration__RegistrationStatus *req = (const void *)request;
	Pluginregistration__RegistrationStatusResponse reply =
		PLUGINREGISTRATION__REGISTRATION_STATUS_RESPONSE__INIT;

	registration_notify(arg, req->plugin_registered, req->error);
	return rpc_server_reply(call, &reply.base, err);
}

/*
 * dir/.base.XXXXXXXX for dir/base: a name the kubelet ignores (it skips dot
 * files), unique, so that an old plugin's shutdown (gRPC removes the name
 * it bound) never removes a newer plugin's socket still being set up.
 */
static enum error_code hidden_name(const char *path, char *out, size_t size, struct error *err)
{
	const char *slash = strrchr(path, '/');
	uint32_t r;
	int n;

	if (!slash)
		return error_set(err, ERR_INVALID, "'%s' is not an absolute path", path);
	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
		r = (uint32_t)getpid() ^ (uint32_t)retry_now_ms();
	n = snprintf(out, size, "%.*s/.%s.%08x", (int)(slash - path), path, slash + 1, r);
	if (n < 0 || (size_t)n >= size)
		return error_set(err, ERR_INVALID, "'%s': socket path too long", path);
	return ERR_OK;
}

enum error_code registration_server_start(struct registration *reg, const char *path,
					  struct registration_server **out, struct error *err)
{
	/* The kubelet calls rarely and briefly: one worker is plenty. */
	struct rpc_server_options opt = { .threads = 1, .shutdown_grace_ms = 2000 };
	struct registration_server *rs;
	char address[128];
	enum error_code rc;

	*out = NULL;
	rs = calloc(1, sizeof(*rs));
	if (!rs)
		return error_set(err, ERR_NOMEM, "out of memory");
	snprintf(rs->path, sizeof(rs->path), "%s", path);
	rc = hidden_name(path, rs->bound_path, sizeof(rs->bound_path), err);
	if (rc == ERR_OK)
		rc = fileio_mkdirs_parent(path, err);
	/* A previous run's socket goes first; anything else there is refused. */
	if (rc == ERR_OK)
		rc = netaddr_remove_stale_socket(path, err);
	if (rc == ERR_OK)
		rc = netaddr_remove_stale_socket(rs->bound_path, err);
	if (rc == ERR_OK)
		rc = rpc_server_new(&opt, &rs->srv, err);
	if (rc == ERR_OK)
		rc = rpc_server_add_unary(rs->srv, "/pluginregistration.Registration/GetInfo",
					  &pluginregistration__info_request__descriptor,
					  &pluginregistration__plugin_info__descriptor, on_get_info,
					  reg, err);
	if (rc == ERR_OK)
		rc = rpc_server_add_unary(rs->srv,
					  "/pluginregistration.Registration/NotifyRegistrationStatus",
					  &pluginregistration__registration_status__descriptor,
					  &pluginregistration__registration_status_response__descriptor,
					  on_notify, reg, err);
	snprintf(address, sizeof(address), "unix://%s", rs->bound_path);
	if (rc == ERR_OK)
		rc = rpc_server_listen(rs->srv, address, NULL, err);
	if (rc == ERR_OK)
		rc = rpc_server_start(rs->srv, err);
	/* Only now, serving, does the socket appear where the kubelet looks. */
	if (rc == ERR_OK && rename(rs->bound_path, path) != 0)
		rc = error_set(err, error_from_errno(errno), "rename '%s' to '%s': %s",
			       rs->bound_path, path, strerror(errno));
	if (rc == ERR_OK && lstat(path, &rs->bound) != 0)
		rs->bound.st_ino = 0;
	if (rc != ERR_OK) {
		registration_server_stop(rs);
		return error_wrap(err, "registration socket '%s'", path);
	}
	*out = rs;
	return ERR_OK;
}

enum registration_socket registration_server_socket(const struct registration_server *rs)
{
	struct stat sb;

	if (lstat(rs->path, &sb) != 0)
		return errno == ENOENT ? REGISTRATION_SOCKET_MISSING : REGISTRATION_SOCKET_OURS;
	/* An inode number is soon reused: the change time tells a socket
	 * made later at the same path apart. */
	if (rs->bound.st_ino && S_ISSOCK(sb.st_mode) && sb.st_dev == rs->bound.st_dev &&
	    sb.st_ino == rs->bound.st_ino && sb.st_ctim.tv_sec == rs->bound.st_ctim.tv_sec &&
	    sb.st_ctim.tv_nsec == rs->bound.st_ctim.tv_nsec)
		return REGISTRATION_SOCKET_OURS;
	return REGISTRATION_SOCKET_REPLACED;
}

void registration_server_stop(struct registration_server *rs)
{
	if (!rs)
		return;
	rpc_server_free(rs->srv);
	unlink(rs->bound_path); /* there only when start failed before renaming */
	/* Removing the socket tells the kubelet the plugin is gone. */
	if (rs->bound.st_ino && registration_server_socket(rs) == REGISTRATION_SOCKET_OURS &&
	    unlink(rs->path) < 0 && errno != ENOENT)
		log_warn("cannot remove the registration socket", LOG_S("path", rs->path),
			 LOG_S("cause", strerror(errno)));
	free(rs);
}
