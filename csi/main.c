/*
 * granary-csi - the CSI driver (csi.granary.io): controller (datasets
 * registered in granary-meta) and node plugin (a granary-fuse per staged
 * volume, read-only bind mounts into pods) in one binary, chosen by --mode.
 * docs/csi.md describes parameters, secrets, access modes and restarts.
 *
 * Start-up: settings, the meta clients, the controller and/or node cores
 * (the node re-adopts the FUSE daemons its records name), then the gRPC
 * server on `endpoint`. SIGTERM or SIGINT: stop admitting calls, let those
 * in flight finish, exit 0. FUSE daemons are left running: they serve the
 * pods, and the next plugin re-adopts them.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/daemon.h"
#include "common/log.h"
#include "common/netaddr.h"
#include "common/retry.h"
#include "csi/controller.h"
#include "csi/csi_settings.h"
#include "csi/identity.h"
#include "csi/node.h"
#include "csi/service.h"
#include "meta/meta_client.h"
#include "rpc/rpc_server.h"

/* Probe answers within this: the liveness sidecar's timeout is seconds. */
#define PROBE_TIMEOUT_MS 2000

/* gRPC binds a unix socket only in an existing directory: make it. */
static void make_socket_dir(const char *endpoint)
{
	struct netaddr na;
	char dir[sizeof(na.path)];
	char *slash;

	if (netaddr_parse(endpoint, "endpoint", &na, NULL) != ERR_OK || !na.is_unix)
		return;
	snprintf(dir, sizeof(dir), "%s", na.path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return;
	*slash = '\0';
	for (char *p = dir + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			mkdir(dir, 0755);
			*p = '/';
		}
	}
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		log_warn("cannot create the socket directory", LOG_S("path", dir),
			 LOG_S("cause", strerror(errno)));
}

int main(int argc, char **argv)
{
	const struct config_schema *schema = &csi_settings_schema;
	struct csi_settings s;
	struct meta_client_options mopt = { .timeout_ms = 30000, .build_timeout_ms = 600000 };
	struct meta_client_options popt = { .timeout_ms = PROBE_TIMEOUT_MS };
	struct meta_client *meta = NULL, *probe = NULL;
	struct controller *ctl = NULL;
	struct node *node = NULL;
	struct rpc_server *srv = NULL;
	struct rpc_server_options sopt = { 0 };
	struct csi_service svc = { 0 };
	char *roots[CSI_SETTINGS_MAX_ROOTS];
	size_t nroots = 0;
	char hostname[256] = "";
	struct error err;
	int first = argc, rc;

	rc = daemon_start(schema, &s, argc, argv, &first);
	if (rc >= 0)
		return rc;
	rc = 2;
	if (first < argc) {
		fprintf(stderr, "%s: unexpected argument '%s' (settings are flags, see --help)\n",
			schema->program, argv[first]);
		goto out;
	}
	if (csi_settings_check(&s, &err) != ERR_OK) {
		fprintf(stderr, "%s: %s\n", schema->program, err.msg);
		goto out;
	}
	daemon_handle_signals();
	rc = 1;

	if (meta_client_new(s.meta_address, &mopt, &meta, &err) != ERR_OK) {
		log_error("cannot reach granary-meta", LOG_S("meta.address", s.meta_address),
			  LOG_S("cause", err.msg));
		goto out;
	}
	if (csi_settings_is_controller(&s)) {
		struct controller_config cc = { .state_dir = s.state_dir, .meta = meta };

		/* Only the controller needs meta to do anything at all; a node
		 * plugin keeps serving its mounts while meta is away, so its
		 * liveness must not hang on meta. */
		if (meta_client_new(s.meta_address, &popt, &probe, &err) != ERR_OK ||
		    controller_new(&cc, &ctl, &err) != ERR_OK) {
			log_error("cannot start the controller", LOG_S("cause", err.msg));
			goto out;
		}
	}
	if (csi_settings_is_node(&s)) {
		struct node_config nc = {
			.state_dir = s.state_dir,
			.fuse_binary = s.fuse_binary,
			.fuse_config = s.fuse_config,
			.meta_address = s.meta_address,
			.stage_timeout_ms = s.stage_timeout_ms,
			.meta = meta,
		};

		if (csi_settings_roots(&s, roots, CSI_SETTINGS_MAX_ROOTS, &nroots, &err) != ERR_OK) {
			log_error("bad allowed_roots", LOG_S("cause", err.msg));
			goto out;
		}
		nc.roots = roots;
		nc.nroots = nroots;
		if (node_new(&nc, &node, &err) != ERR_OK) {
			log_error("cannot start the node plugin", LOG_S("cause", err.msg));
			goto out;
		}
	}
	if (s.node_id && *s.node_id)
		snprintf(hostname, sizeof(hostname), "%s", s.node_id);
	else if (gethostname(hostname, sizeof(hostname) - 1) != 0)
		snprintf(hostname, sizeof(hostname), "localhost");

	svc.controller = ctl;
	svc.node = node;
	svc.probe = probe;
	svc.node_id = hostname;
	make_socket_dir(s.endpoint);
	if (rpc_server_new(&sopt, &srv, &err) != ERR_OK ||
	    csi_service_add(srv, &svc, &err) != ERR_OK ||
	    rpc_server_listen(srv, s.endpoint, NULL, &err) != ERR_OK ||
	    rpc_server_start(srv, &err) != ERR_OK) {
		log_error("cannot serve", LOG_S("endpoint", s.endpoint), LOG_S("cause", err.msg));
		goto out;
	}
	log_info("granary-csi serving", LOG_S("driver", IDENTITY_PLUGIN_NAME),
		 LOG_S("version", identity_vendor_version()), LOG_S("endpoint", s.endpoint),
		 LOG_S("mode", csi_mode_names[s.mode]), LOG_S("node_id", hostname),
		 LOG_S("meta.address", s.meta_address), LOG_S("state_dir", s.state_dir));

	while (!daemon_stopping())
		retry_sleep_ms(100);
	log_info("granary-csi stopping");
	if (!rpc_server_shutdown(srv)) {
		/* A stage is still waiting on a daemon: exit without freeing
		 * what its handler uses. The daemon and its record stay. */
		log_warn("granary-csi exiting with a call unfinished");
		_exit(0);
	}
	rc = 0;
out:
	rpc_server_free(srv);
	node_free(node);
	controller_free(ctl);
	meta_client_free(probe);
	meta_client_free(meta);
	csi_settings_roots_free(roots, nroots);
	config_release(schema, &s);
	return rc;
}
