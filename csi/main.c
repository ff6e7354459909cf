/*
 * granary-csi - the CSI driver (csi.granary.io): controller (datasets
 * registered in granary-meta) and node plugin (a granary-fuse per staged
 * volume, read-only bind mounts into pods) in one binary, chosen by --mode.
 * docs/csi.md describes parameters, secrets, access modes and restarts.
 *
 * Start-up: settings, the meta clients, the controller and/or node cores
 * (the node re-adopts the FUSE daemons its records name), then the gRPC
 * server on `endpoint`; once it serves, the kubelet registration socket
 * (registration_socket: the kubelet calls NodeGetInfo on the CSI socket
 * while registering) and the health endpoint (health_address). These two
 * replace the node-driver-registrar and livenessprobe sidecars. A
 * registration socket removed from under the plugin is made anew.
 *
 * SIGTERM or SIGINT: stop the health endpoint, remove the registration
 * socket (the kubelet takes that as the plugin leaving), stop admitting
 * CSI calls, let those in flight finish, exit 0. FUSE daemons are left
 * running: they serve the pods, and the next plugin re-adopts them.
 */
#include <stdio.h>
#include <unistd.h>

#include "common/daemon.h"
#include "common/fileio.h"
#include "common/log.h"
#include "common/netaddr.h"
#include "common/retry.h"
#include "csi/controller.h"
#include "csi/dsmirror.h"
#include "csi/csi_settings.h"
#include "csi/health.h"
#include "csi/identity.h"
#include "csi/keeper.h"
#include "kube/kubeapi.h"
#include "csi/mountpod.h"
#include "csi/node.h"
#include "csi/registration.h"
#include "csi/registration_service.h"
#include "csi/service.h"
#include "meta/meta_client.h"
#include "rpc/rpc_server.h"

/* Probe and /healthz answer within this: liveness probes time out in seconds. */
#define PROBE_TIMEOUT_MS 2000

/* How often the registration socket is looked for (made anew if gone). */
#define REGISTRATION_CHECK_MS 5000

/* gRPC binds a unix socket only in an existing directory: make it. */
static void make_socket_dir(const char *path)
{
	struct error err;

	if (fileio_mkdirs_parent(path, &err) != ERR_OK)
		log_warn("cannot create the socket directory", LOG_S("path", path),
			 LOG_S("cause", err.msg));
}

/* Serves the kubelet registration on s->registration_socket; false (logged)
 * when it cannot, *rs left NULL. */
static bool start_registration(const struct csi_settings *s, struct registration *reg,
			       struct registration_server **rs)
{
	struct error err;

	if (registration_server_start(reg, s->registration_socket, rs, &err) != ERR_OK) {
		log_error("cannot serve the kubelet registration", LOG_S("cause", err.msg));
		return false;
	}
	return true;
}

/*
 * The registration socket removed (someone cleaned the kubelet's
 * directory): the kubelet has dropped the plugin, and a new socket makes
 * it register again. Another socket in its place (a newer plugin's, in a
 * rolling update with surge) is left alone: taking it back would make the
 * two plugins take it from each other for ever. *replaced: logged once.
 */
static void check_registration(const struct csi_settings *s, struct registration *reg,
			       struct registration_server **rs, bool *replaced)
{
	enum registration_socket now =
		*rs ? registration_server_socket(*rs) : REGISTRATION_SOCKET_MISSING;

	if (now == REGISTRATION_SOCKET_REPLACED && !*replaced)
		log_warn("another process replaced the registration socket; leaving it to it",
			 LOG_S("path", s->registration_socket));
	*replaced = now == REGISTRATION_SOCKET_REPLACED;
	if (now != REGISTRATION_SOCKET_MISSING)
		return;
	log_warn("the registration socket is gone, making it anew",
		 LOG_S("path", s->registration_socket));
	registration_server_stop(*rs);
	*rs = NULL;
	registration_reset(reg);
	start_registration(s, reg, rs);
}

/* Mount pods: the Kubernetes API client, the template, and the keeper,
 * which listens in each volume's directory of STATE/node (csi/keeper.h). */
static bool start_mount_pods(const struct csi_settings *s, struct kubeapi **kube,
			     struct mountpods **pods, struct keeper **keeper)
{
	char dir[512];
	struct mountpods_config mc = { .template_file = s->mount_pod_template, .node = s->node_id,
				       .volumes_dir = dir };
	struct error err;

	snprintf(dir, sizeof(dir), "%s/node", s->state_dir);
	/* The controller's client, in mode all, serves the node too. */
	if ((!*kube && kubeapi_new("", "", "", kube, &err) != ERR_OK) ||
	    mountpods_new(&mc, *kube, pods, &err) != ERR_OK || keeper_new(keeper, &err) != ERR_OK) {
		log_error("cannot run mount pods", LOG_S("mount_pod_template", s->mount_pod_template),
			  LOG_S("cause", err.msg));
		return false;
	}
	log_info("mount pods on", LOG_S("template", mountpods_template_hash(*pods)),
		 LOG_S("volumes_dir", dir));
	return true;
}

struct mirror {
	struct kubeapi *kube;
	const char *ns;
};

/* A volume shown as a Dataset, or no longer (csi/dsmirror.h). */
static enum error_code mirror_volume(const char *id, const struct controller_params *p,
				     bool created, void *arg, struct error *err)
{
	struct mirror *m = arg;

	return created ? dsmirror_create(m->kube, m->ns, id, p, err)
		       : dsmirror_delete(m->kube, m->ns, id, err);
}

int main(int argc, char **argv)
{
	const struct config_schema *schema = &csi_settings_schema;
	struct csi_settings s;
	struct meta_client_options mopt = { .timeout_ms = 30000, .build_timeout_ms = 600000,
					     .role = META_ROLE_CSI };
	struct meta_client_options popt = { .timeout_ms = PROBE_TIMEOUT_MS,
					     .role = META_ROLE_CSI };
	struct meta_client *meta = NULL, *probe = NULL;
	struct controller *ctl = NULL;
	struct mirror mirror;
	struct node *node = NULL;
	struct kubeapi *kube = NULL;
	struct mountpods *pods = NULL;
	struct keeper *keeper = NULL;
	struct rpc_server *srv = NULL;
	struct rpc_server_options sopt = { 0 };
	struct csi_service svc = { 0 };
	struct registration reg;
	struct registration_server *rs = NULL;
	struct health health = { 0 };
	struct metrics_http *hh = NULL;
	struct metrics_http_ops hops;
	struct netaddr csi_addr;
	uint64_t next_check = 0;
	bool replaced = false;
	char *roots[CSI_SETTINGS_MAX_ROOTS], *file_roots[CSI_SETTINGS_MAX_ROOTS];
	size_t nroots = 0, nfile_roots = 0;
	char hostname[256] = "";
	struct tls_material meta_tls = { 0 };
	struct error err;
	int rc;

	rc = daemon_start(schema, &s, argc, argv, NULL);
	if (rc >= 0)
		return rc;
	if (csi_settings_check(&s, &err) != ERR_OK)
		return daemon_refuse(schema, &s, &err);
	registration_init(&reg, s.kubelet_endpoint);
	daemon_handle_signals();
	rc = 1;

	mopt.key_file = popt.key_file = s.meta_key_file;
	if (tls_client_load("meta.tls.", &s.meta_tls, &meta_tls, &err) != ERR_OK) {
		daemon_report(schema, &err);
		rc = 2;
		goto out;
	}
	mopt.tls = popt.tls = &meta_tls;
	if (meta_client_new(s.meta_address, &mopt, &meta, &err) != ERR_OK) {
		log_error("cannot reach granary-meta", LOG_S("meta.address", s.meta_address),
			  LOG_S("cause", err.msg));
		goto out;
	}
	/* Both roles: CreateVolume, and the node's registration from a
	 * volume context. */
	if (csi_settings_file_roots(&s, file_roots, CSI_SETTINGS_MAX_ROOTS, &nfile_roots, &err) !=
	    ERR_OK) {
		log_error("bad allowed_file_roots", LOG_S("cause", err.msg));
		goto out;
	}
	if (csi_settings_is_controller(&s)) {
		struct controller_config cc = { .state_dir = s.state_dir, .meta = meta };

		cc.file_roots = file_roots;
		cc.nfile_roots = nfile_roots;
		cc.default_endpoint = s.store_endpoint;
		cc.allowed_endpoints = s.store_allowed_endpoints;
		if (*s.datasets_namespace) {
			if (kubeapi_new("", "", "", &kube, &err) != ERR_OK) {
				log_error("cannot reach the Kubernetes API", LOG_S("cause", err.msg));
				goto out;
			}
			mirror = (struct mirror){ kube, s.datasets_namespace };
			cc.on_volume = mirror_volume;
			cc.on_volume_arg = &mirror;
		}

		/* Only the controller needs meta to do anything at all; a node
		 * plugin keeps serving its mounts while meta is away, so its
		 * liveness must not hang on meta. */
		if ((s.ready_needs_meta &&
		     meta_client_new(s.meta_address, &popt, &probe, &err) != ERR_OK) ||
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
			.max_read = s.fuse_max_read,
			.read_ahead = s.fuse_read_ahead,
			.reattach = s.reattach_mounts,
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
		nc.file_roots = file_roots;
		nc.nfile_roots = nfile_roots;
		if (*s.mount_pod_template && !start_mount_pods(&s, &kube, &pods, &keeper))
			goto out;
		nc.keeper = keeper;
		nc.pods = pods;
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
	if (netaddr_parse(s.endpoint, "endpoint", &csi_addr, NULL) == ERR_OK && csi_addr.is_unix)
		make_socket_dir(csi_addr.path);
	else
		csi_addr.path[0] = '\0';
	if (rpc_server_new(&sopt, &srv, &err) != ERR_OK ||
	    csi_service_add(srv, &svc, &err) != ERR_OK ||
	    rpc_server_listen(srv, s.endpoint, NULL, &err) != ERR_OK ||
	    rpc_server_start(srv, &err) != ERR_OK) {
		log_error("cannot serve", LOG_S("endpoint", s.endpoint), LOG_S("cause", err.msg));
		goto out;
	}
	if (csi_settings_registers(&s) && !start_registration(&s, &reg, &rs))
		goto out;
	health.csi_socket = csi_addr.path;
	health.probe = probe;
	health.reg = csi_settings_registers(&s) ? &reg : NULL;
	health.node = node;
	health_ops(&health, &hops);
	if (*s.health_address &&
	    metrics_http_start(s.health_address, "health_address", &hops, &hh, &err) != ERR_OK) {
		log_error("cannot serve the health endpoint", LOG_S("cause", err.msg));
		goto out;
	}
	log_info("granary-csi serving", LOG_S("driver", IDENTITY_PLUGIN_NAME),
		 LOG_S("version", identity_vendor_version()), LOG_S("endpoint", s.endpoint),
		 LOG_S("mode", csi_mode_names[s.mode]), LOG_S("node_id", hostname),
		 LOG_S("meta.address", s.meta_address), LOG_S("state_dir", s.state_dir),
		 LOG_S("registration_socket", s.registration_socket),
		 LOG_S("kubelet_endpoint", s.kubelet_endpoint),
		 LOG_S("health_address", s.health_address));

	while (!daemon_stopping()) {
		retry_sleep_ms(100);
		if (csi_settings_registers(&s) && retry_now_ms() >= next_check) {
			next_check = retry_now_ms() + REGISTRATION_CHECK_MS;
			check_registration(&s, &reg, &rs, &replaced);
		}
	}
	log_info("granary-csi stopping");
	metrics_http_stop(hh);
	hh = NULL;
	registration_server_stop(rs);
	rs = NULL;
	if (!rpc_server_shutdown(srv)) {
		/* A stage is still waiting on a daemon: exit without freeing
		 * what its handler uses. The daemon and its record stay. */
		log_warn("granary-csi exiting with a call unfinished");
		_exit(0);
	}
	rc = 0;
out:
	metrics_http_stop(hh);
	registration_server_stop(rs);
	rpc_server_free(srv);
	node_free(node);
	keeper_free(keeper);
	mountpods_free(pods);
	kubeapi_free(kube);
	controller_free(ctl);
	meta_client_free(probe);
	meta_client_free(meta);
	csi_settings_roots_free(roots, nroots);
	csi_settings_roots_free(file_roots, nfile_roots);
	registration_release(&reg);
	tls_material_release(&meta_tls);
	config_release(schema, &s);
	return rc;
}
