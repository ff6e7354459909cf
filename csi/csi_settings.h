/*
 * csi_settings.h - the settings of granary-csi, the CSI driver: the gRPC
 * endpoint the kubelet and sidecars dial, which roles this process plays
 * (controller, node or both), the node's name, where meta is, where the
 * node plugin keeps the state that lets it re-adopt its FUSE daemons after
 * a restart, the granary-fuse binary it launches and how, and the
 * directories under which kubelet may ask it to mount; and what replaces
 * the node-driver-registrar and livenessprobe sidecars: the kubelet
 * registration socket and the health endpoint.
 *
 * The table (csi_settings_schema) gives types, defaults and help;
 * csi_settings_check() adds the rules a table cannot state. Strings are
 * owned by the struct: release them with config_release().
 */
#ifndef GRANARY_CSI_CSI_SETTINGS_H
#define GRANARY_CSI_CSI_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/tls.h"
#include "common/error.h"

enum csi_mode {
	CSI_MODE_CONTROLLER = 0, /* CreateVolume / DeleteVolume */
	CSI_MODE_NODE,           /* stage / publish on this node */
	CSI_MODE_ALL,            /* both, in one process */
};

extern const char *const csi_mode_names[]; /* "controller", "node", "all" */

struct csi_settings {
	char *endpoint;     /* unix:///csi/csi.sock or host:port */
	int mode;           /* enum csi_mode */
	char *node_id;      /* "" = the hostname, resolved at run time */
	char *meta_address;
	char *meta_key_file;       /* csi role key; "" = unsigned calls */
	char *state_dir;    /* STATE/controller: credentials files given to meta;
			     * STATE/node: records of running FUSE daemons */
	char *fuse_binary;  /* node role: the granary-fuse to launch */
	char *fuse_config;  /* node role: --config for granary-fuse ("" = none) */
	uint64_t fuse_max_read;   /* node role: the mounts' max_read, and granary-fuse's */
	uint64_t fuse_read_ahead; /* node role: the mounts' read-ahead; 0 = the kernel's */
	bool reattach_mounts;     /* node role: ended mounts in containers replaced (csi/reattach.h) */
	char *mount_pod_template; /* node role: mount pods' template ("" = daemons
				   * run as the plugin's children) */
	char *allowed_roots; /* node role: comma-separated absolute directories
			      * staging and target paths must lie under */
	char *allowed_file_roots; /* both roles: comma-separated absolute
				   * directories file:// sources may lie in ("" = none);
				   * see store_file_root_check */
	char *store_endpoint;     /* controller role: the cluster's S3 endpoint, as
				   * granary-meta's store.endpoint ("" = AWS) */
	char *store_allowed_endpoints; /* controller role: comma-separated endpoints a
					* StorageClass may name besides it; see
					* store_endpoint_check */
	uint64_t stage_timeout_ms; /* node role: wait for a new daemon to serve */
	char *registration_socket; /* node role: the kubelet's registration socket
				    * (absolute path; "" = off) */
	char *kubelet_endpoint; /* the CSI socket's path on the host, for GetInfo */
	char *health_address;   /* /healthz, /readyz and /metrics over HTTP ("" = off) */
	bool ready_needs_meta;  /* controller: Probe and /readyz ask meta */
	char *datasets_namespace; /* controller: volumes shown as Datasets there ("" = off) */
	struct tls_client_settings meta_tls; /* TLS to granary-meta */
	char *log_level;
};

/* At most this many allowed roots. */
#define CSI_SETTINGS_MAX_ROOTS 16

extern const struct config_schema csi_settings_schema;

/*
 * Checks what the table cannot: endpoint and meta.address are valid
 * addresses, node_id a plausible node name, state_dir an absolute path,
 * fuse_binary an absolute path when the node role is on, fuse_config
 * empty or absolute, fuse_max_read and fuse_read_ahead as
 * common/fusemount.h says, allowed_roots and allowed_file_roots lists of
 * absolute directories, store.endpoint and store.allowed_endpoints valid
 * endpoint URLs,
 * registration_socket only with the node role, an absolute socket path
 * other than the endpoint's and with kubelet_endpoint (an absolute path)
 * given, health_address empty or a listen address (":9808" too), and
 * log.level a known level. Returns ERR_OK, or ERR_INVALID with a message naming the
 * key: "key 'state_dir': must be an absolute path, got 'csi'".
 */
enum error_code csi_settings_check(const struct csi_settings *s, struct error *err);

/* True when the mode includes the controller, or the node, role. */
bool csi_settings_is_controller(const struct csi_settings *s);
bool csi_settings_is_node(const struct csi_settings *s);

/* True when registration_socket is set (the node plugin registers itself
 * with the kubelet). */
bool csi_settings_registers(const struct csi_settings *s);

/*
 * Splits allowed_roots at commas into roots[0..*n) (at most max), each a
 * heap copy without trailing '/' ("/" stays "/"); free them with
 * csi_settings_roots_free. ERR_INVALID naming the key for an empty list, a
 * relative entry or more than max; ERR_NOMEM.
 */
enum error_code csi_settings_roots(const struct csi_settings *s, char **roots, size_t max,
				   size_t *n, struct error *err);
void csi_settings_roots_free(char **roots, size_t n);

/* The same for allowed_file_roots, where an empty list (*n 0) is fine: it
 * turns file:// sources off. */
enum error_code csi_settings_file_roots(const struct csi_settings *s, char **roots, size_t max,
					size_t *n, struct error *err);

#endif
