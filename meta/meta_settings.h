/*
 * meta_settings.h - the settings of granary-meta, the cluster's dataset
 * registry: where it listens, where it keeps namespace snapshots, how it
 * judges worker liveness, and the object store it lists datasets from.
 *
 * The table (meta_settings_schema) gives types, tuned defaults and help;
 * meta_settings_check() adds the rules a table cannot state. Strings are
 * owned by the struct: release them with config_release().
 */
#ifndef GRANARY_META_META_SETTINGS_H
#define GRANARY_META_META_SETTINGS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "common/tls.h"
#include "common/error.h"
#include "store/store_settings.h"

struct meta_settings {
	char *listen;                   /* "unix:///run/granary/meta.sock" or host:port */
	char *data_dir;                 /* snapshots on local disk, for fast restarts */
	uint64_t heartbeat_interval_ms; /* how often workers report */
	uint64_t heartbeat_expiry_ms;   /* silence after which a worker is dropped */
	struct store_settings store;
	int64_t listing_max_objects;    /* objects in one dataset listing */
	int64_t listing_max_pages;      /* ListObjectsV2 pages in one listing */
	uint64_t listing_max_time_ms;   /* one listing, all pages */
	uint64_t rpc_stall_timeout_ms;  /* a call's longest wait for its client */
	int64_t rpc_max_streams;        /* GetSnapshot streams at once */
	char *store_allowed_endpoints;  /* comma-separated, besides store.endpoint */
	char *allowed_file_roots;       /* comma-separated; "" = no file:// sources */
	char *auth_csi_key_file;        /* the roles' keys (meta/meta_auth.h); "" = none */
	char *auth_worker_key_file;
	char *auth_mount_key_file;
	bool auth_insecure;             /* no key file: serve unsigned calls */
	bool kube_enabled;              /* Lease + Dataset controller */
	char *kube_namespace;           /* where the Lease lives */
	char *kube_identity;            /* this candidate (its pod name) */
	char *kube_lease;               /* the Lease's name */
	uint64_t kube_lease_duration_ms;
	uint64_t kube_timeout_ms;       /* one Kubernetes API call (kubeapi_set_timeout) */
	char *kube_driver;              /* the CSI driver of the Datasets' volumes */
	char *kube_credentials_dir;     /* "" = DATA_DIR/credentials */
	bool kube_cache_gate;           /* pods held until their Datasets are cached */
	char *kube_worker_service_account; /* heartbeats only with its pods' tokens */
	char *kube_token_audience;      /* those tokens' audience */
	char *datasets_cluster_credentials; /* rules: meta/credpolicy.h; "" = no namespace */
	char *metrics_address;          /* /healthz and /metrics: ":PORT", host:port, unix:///path; "" = off */
	struct tls_server_settings tls; /* gRPC over TLS on a TCP listen */
	char *tls_client_ca_file;       /* set: client certificates required (mutual TLS) */
	char *log_level;
};

extern const struct config_schema meta_settings_schema;

/*
 * Checks what the table cannot: listen is a valid address, data_dir an
 * absolute path, heartbeat.expiry longer than heartbeat.interval, the store
 * endpoint and each of store.allowed_endpoints a valid URL (when set),
 * allowed_file_roots absolute directories, the auth.*_key_file absolute
 * paths when set, kube.namespace, kube.identity, kube.lease,
 * kube.worker_service_account and kube.token_audience given with
 * kube.enabled, the rules of datasets.cluster_credentials
 * (credpolicy_parse's errors), metrics.address a listen address when set, the tls.*
 * settings (tls_server_check), and log.level a known level (whether key files and
 * auth.insecure go together is meta_auth_load's check). Returns
 * ERR_OK, or ERR_INVALID with a message naming the key:
 * "key 'data_dir': must be an absolute path, got 'meta'".
 */
enum error_code meta_settings_check(const struct meta_settings *s, struct error *err);

#endif
