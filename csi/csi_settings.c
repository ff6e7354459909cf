/*
 * csi_settings.c - the settings table of granary-csi and its checks.
 */
#include "csi/csi_settings.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/fusemount.h"
#include "common/log.h"
#include "common/netaddr.h"
#include "csi/identity.h"
#include "csi/registration.h"
#include "store/store.h"

const char *const csi_mode_names[] = { "controller", "node", "all", NULL };

static const struct config_field csi_fields[] = {
	{ "endpoint", CONFIG_STRING, offsetof(struct csi_settings, endpoint),
	  "unix:///csi/csi.sock", "CSI gRPC address: unix:///path or host:port", 0, 0, NULL },
	{ "mode", CONFIG_ENUM, offsetof(struct csi_settings, mode), "all",
	  "roles served: controller, node or all", 0, 0, csi_mode_names },
	{ "node_id", CONFIG_STRING, offsetof(struct csi_settings, node_id), "",
	  "this node's name, as Kubernetes knows it (empty: the hostname)", 0, 0, NULL },
	{ "meta.address", CONFIG_STRING, offsetof(struct csi_settings, meta_address),
	  "unix:///run/granary/meta.sock", "granary-meta address: unix:///path or host:port",
	  0, 0, NULL },
	{ "meta.key_file", CONFIG_STRING, offsetof(struct csi_settings, meta_key_file), "",
	  "key of granary-meta's csi role: every call to meta is signed with it (absolute; "
	  "empty: unsigned calls, served only by a meta with auth.insecure)", 0, 0, NULL },
	{ "state_dir", CONFIG_STRING, offsetof(struct csi_settings, state_dir),
	  "/var/lib/granary/csi",
	  "directory for the driver's files: credentials and volume records (absolute; meta must see the controller's at the same path)", 0, 0, NULL },
	{ "fuse_binary", CONFIG_STRING, offsetof(struct csi_settings, fuse_binary),
	  "/usr/bin/granary-fuse", "granary-fuse executable the node plugin launches (absolute)",
	  0, 0, NULL },
	{ "fuse_config", CONFIG_STRING, offsetof(struct csi_settings, fuse_config), "",
	  "YAML settings file given to every granary-fuse as --config (empty: none)", 0, 0, NULL },
	{ "fuse_max_read", CONFIG_SIZE, offsetof(struct csi_settings, fuse_max_read), "1MiB",
	  "node role: max_read of the FUSE mounts the plugin makes, given to each granary-fuse as --max_read too (a multiple of 4KiB up to 1MiB)",
	  0, 0, NULL },
	{ "fuse_read_ahead", CONFIG_SIZE, offsetof(struct csi_settings, fuse_read_ahead), "1MiB",
	  "node role: kernel read-ahead of each FUSE mount (its bdi's read_ahead_kb), set by the plugin once it has mounted (a multiple of 4KiB; 0: the kernel's)",
	  0, 0, NULL },
	{ "reattach_mounts", CONFIG_BOOL, offsetof(struct csi_settings, reattach_mounts), "false",
	  "node role: when a volume is mounted anew after its FUSE connection ended, put the new mount in place of the ended one inside every container that kept it (needs the host's PID namespace: hostPID)",
	  0, 0, NULL },
	{ "mount_pod_template", CONFIG_STRING, offsetof(struct csi_settings, mount_pod_template), "",
	  "node role: JSON pod template of the mount pods, one per staged volume, in which granary-mount runs its granary-fuse (absolute path; empty: granary-fuse runs as the plugin's child); needs node_id",
	  0, 0, NULL },
	{ "allowed_roots", CONFIG_STRING, offsetof(struct csi_settings, allowed_roots),
	  "/var/lib/kubelet",
	  "comma-separated directories that staging and target paths must lie under", 0, 0, NULL },
	{ "allowed_file_roots", CONFIG_STRING, offsetof(struct csi_settings, allowed_file_roots), "",
	  "comma-separated directories a file:// source may lie in, resolved, for CreateVolume and for the node's registration from a volume context (empty: file:// sources are refused)",
	  0, 0, NULL },
	{ "store.endpoint", CONFIG_STRING, offsetof(struct csi_settings, store_endpoint), "",
	  "controller: the cluster's S3 endpoint, granary-meta's store.endpoint (empty: AWS); a "
	  "StorageClass may name it", 0, 0, NULL },
	{ "store.allowed_endpoints", CONFIG_STRING,
	  offsetof(struct csi_settings, store_allowed_endpoints), "",
	  "controller: S3 endpoints a StorageClass may name besides store.endpoint, "
	  "comma-separated, as granary-meta's (CreateVolume refuses any other)", 0, 0, NULL },
	{ "stage_timeout", CONFIG_DURATION, offsetof(struct csi_settings, stage_timeout_ms), "120s",
	  "longest NodeStageVolume waits for a new granary-fuse to serve", 100, 3600000, NULL },
	{ "registration_socket", CONFIG_STRING,
	  offsetof(struct csi_settings, registration_socket), "",
	  "node role: serve the kubelet's plugin registration on this unix socket, in the kubelet's plugins_registry directory (absolute path; empty: off)",
	  0, 0, NULL },
	{ "kubelet_endpoint", CONFIG_STRING, offsetof(struct csi_settings, kubelet_endpoint), "",
	  "the CSI socket's path as the kubelet sees it on the host, given to the kubelet at registration (required with registration_socket)",
	  0, 0, NULL },
	{ "ready_needs_meta", CONFIG_BOOL, offsetof(struct csi_settings, ready_needs_meta), "true",
	  "controller: Probe and /readyz answer ready only while granary-meta answers (false "
	  "beside granary-meta replicas that wait for their Lease: the pod's readiness is "
	  "then meta's own, and the controller must not wait for it)", 0, 0, NULL },
	{ "datasets_namespace", CONFIG_STRING,
	  offsetof(struct csi_settings, datasets_namespace), "",
	  "controller, in Kubernetes: each volume created is also a Dataset object of this "
	  "namespace (the release's), so that kubectl get datasets lists it (empty: off)", 0, 0,
	  NULL },
	{ "health_address", CONFIG_STRING, offsetof(struct csi_settings, health_address), "",
	  "HTTP address of /healthz, /readyz and /metrics: :PORT, host:port or unix:///path (empty: off)",
	  0, 0, NULL },
	TLS_CLIENT_FIELDS(struct csi_settings, meta_tls, "meta.tls.", "granary-meta"),
	{ "log.level", CONFIG_STRING, offsetof(struct csi_settings, log_level), "info",
	  "debug, info, warn or error", 0, 0, NULL },
};

const struct config_schema csi_settings_schema = {
	.program = "granary-csi",
	.summary = "Granary CSI driver: controller and node plugin for dataset volumes",
	.fields = csi_fields,
	.nfields = sizeof(csi_fields) / sizeof(csi_fields[0]),
};

bool csi_settings_is_controller(const struct csi_settings *s)
{
	return s->mode == CSI_MODE_CONTROLLER || s->mode == CSI_MODE_ALL;
}

bool csi_settings_is_node(const struct csi_settings *s)
{
	return s->mode == CSI_MODE_NODE || s->mode == CSI_MODE_ALL;
}

bool csi_settings_registers(const struct csi_settings *s)
{
	return s->registration_socket && *s->registration_socket;
}

/* registration_socket and kubelet_endpoint are plain paths, as the kubelet
 * writes and dials them (no unix:// scheme). */
static enum error_code check_socket_path(const char *key, const char *path, size_t max,
					 struct error *err)
{
	if (config_check_abs_path(key, path, err) != ERR_OK)
		return ERR_INVALID;
	if (strlen(path) > max)
		return error_set(err, ERR_INVALID, "key '%s': a socket path is at most %zu bytes",
				 key, max);
	return ERR_OK;
}

static enum error_code check_registration(const struct csi_settings *s, struct error *err)
{
	struct netaddr csi;
	const size_t max = sizeof(csi.path) - 1;

	if (s->kubelet_endpoint && *s->kubelet_endpoint &&
	    check_socket_path("kubelet_endpoint", s->kubelet_endpoint, max, err) != ERR_OK)
		return ERR_INVALID;
	if (!csi_settings_registers(s))
		return ERR_OK;
	if (!csi_settings_is_node(s))
		return error_set(err, ERR_INVALID,
				 "key 'registration_socket': only the node plugin registers with the kubelet (mode node or all)");
	/* Shorter: the socket is bound first at a longer, hidden name. */
	if (check_socket_path("registration_socket", s->registration_socket,
			      REGISTRATION_SOCKET_MAX, err) != ERR_OK)
		return ERR_INVALID;
	if (netaddr_parse(s->endpoint, "endpoint", &csi, NULL) == ERR_OK && csi.is_unix &&
	    strcmp(csi.path, s->registration_socket) == 0)
		return error_set(err, ERR_INVALID,
				 "key 'registration_socket': must not be the endpoint's socket '%s'",
				 csi.path);
	if (!s->kubelet_endpoint || !*s->kubelet_endpoint)
		return error_set(err, ERR_INVALID,
				 "key 'kubelet_endpoint': required with registration_socket (the CSI socket's path on the host, e.g. /var/lib/kubelet/plugins/%s/csi.sock)",
				 IDENTITY_PLUGIN_NAME);
	return ERR_OK;
}

typedef enum error_code (*split_fn)(const struct csi_settings *s, char **roots, size_t max,
				    size_t *n, struct error *err);

/* A directory list splits (its entries are then dropped). */
static enum error_code check_dirs(split_fn split, const struct csi_settings *s, struct error *err)
{
	char *roots[CSI_SETTINGS_MAX_ROOTS];
	size_t n = 0;

	if (split(s, roots, CSI_SETTINGS_MAX_ROOTS, &n, err) != ERR_OK)
		return err->code;
	csi_settings_roots_free(roots, n);
	return ERR_OK;
}

enum error_code csi_settings_check(const struct csi_settings *s, struct error *err)
{
	if (netaddr_check_setting("endpoint", s->endpoint, err) != ERR_OK)
		return ERR_INVALID;
	if (s->mode < CSI_MODE_CONTROLLER || s->mode > CSI_MODE_ALL)
		return error_set(err, ERR_INVALID, "key 'mode': must be controller, node or all");
	if (s->node_id && config_check_node_name("node_id", s->node_id, err) != ERR_OK)
		return ERR_INVALID;
	if (netaddr_check_setting("meta.address", s->meta_address, err) != ERR_OK)
		return ERR_INVALID;
	if (s->meta_key_file && *s->meta_key_file &&
	    config_check_abs_path("meta.key_file", s->meta_key_file, err) != ERR_OK)
		return ERR_INVALID;
	if (config_check_abs_path("state_dir", s->state_dir, err) != ERR_OK)
		return ERR_INVALID;
	if (csi_settings_is_node(s) && config_check_abs_path("fuse_binary", s->fuse_binary, err) != ERR_OK)
		return ERR_INVALID;
	if (fusemount_check_max_read("key 'fuse_max_read'", s->fuse_max_read, err) != ERR_OK ||
	    fusemount_check_read_ahead("key 'fuse_read_ahead'", s->fuse_read_ahead, err) != ERR_OK)
		return ERR_INVALID;
	if (s->fuse_config && *s->fuse_config &&
	    config_check_abs_path("fuse_config", s->fuse_config, err) != ERR_OK)
		return ERR_INVALID;
	if (s->mount_pod_template && *s->mount_pod_template) {
		if (config_check_abs_path("mount_pod_template", s->mount_pod_template, err) != ERR_OK)
			return ERR_INVALID;
		if (!csi_settings_is_node(s))
			return error_set(err, ERR_INVALID,
					 "key 'mount_pod_template': only the node role runs mount pods");
		if (!s->node_id || !*s->node_id)
			return error_set(err, ERR_INVALID,
					 "key 'mount_pod_template': needs node_id, the node's name as Kubernetes knows it (mount pods are bound to it)");
	}
	if (csi_settings_is_node(s) && check_dirs(csi_settings_roots, s, err) != ERR_OK)
		return err->code;
	if (check_dirs(csi_settings_file_roots, s, err) != ERR_OK)
		return err->code;
	if (s->store_endpoint && *s->store_endpoint &&
	    store_check_endpoint(s->store_endpoint, err) != ERR_OK)
		return error_wrap(err, "key 'store.endpoint'");
	if (store_check_endpoint_list("store.allowed_endpoints", s->store_allowed_endpoints,
				      err) != ERR_OK)
		return ERR_INVALID;
	if (check_registration(s, err) != ERR_OK)
		return ERR_INVALID;
	if (s->health_address && *s->health_address &&
	    netaddr_check_listen_setting("health_address", s->health_address, err) != ERR_OK)
		return ERR_INVALID;
	if (tls_client_check("meta.tls.", &s->meta_tls, err) != ERR_OK)
		return ERR_INVALID;
	if (config_check_log_level("log.level", s->log_level, err) != ERR_OK)
		return ERR_INVALID;
	return ERR_OK;
}

void csi_settings_roots_free(char **roots, size_t n)
{
	config_dirs_free(roots, n);
}

enum error_code csi_settings_roots(const struct csi_settings *s, char **roots, size_t max,
				   size_t *n, struct error *err)
{
	if (config_split_dirs("allowed_roots", s->allowed_roots, roots, max, n, err) != ERR_OK)
		return err->code;
	if (*n == 0)
		return error_set(err, ERR_INVALID, "key 'allowed_roots': required (absolute directories)");
	return ERR_OK;
}

enum error_code csi_settings_file_roots(const struct csi_settings *s, char **roots, size_t max,
					size_t *n, struct error *err)
{
	return config_split_dirs("allowed_file_roots", s->allowed_file_roots, roots, max, n, err);
}
