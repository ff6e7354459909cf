/*
 * meta_settings.c - the settings table of granary-meta and its checks.
 */
#include "meta/meta_settings.h"

#include <stddef.h>
#include <string.h>

#include "common/log.h"
#include "common/netaddr.h"
#include "meta/credpolicy.h"
#include "store/store.h"

/* Expiry is three missed heartbeats: one lost packet or a slow GC pause on
 * a node must not reshuffle block ownership across the cluster. */
static const struct config_field meta_fields[] = {
	{ "listen", CONFIG_STRING, offsetof(struct meta_settings, listen),
	  "unix:///run/granary/meta.sock", "gRPC address: unix:///path or host:port", 0, 0, NULL },
	{ "data_dir", CONFIG_STRING, offsetof(struct meta_settings, data_dir),
	  "/var/lib/granary/meta", "directory for namespace snapshots (absolute)", 0, 0, NULL },
	{ "heartbeat.interval", CONFIG_DURATION,
	  offsetof(struct meta_settings, heartbeat_interval_ms), "5s",
	  "how often workers report that they are alive", 100, 3600000, NULL },
	{ "heartbeat.expiry", CONFIG_DURATION,
	  offsetof(struct meta_settings, heartbeat_expiry_ms), "15s",
	  "silence after which a worker leaves the membership (> interval)", 100, 86400000, NULL },
	STORE_SETTINGS_FIELDS(struct meta_settings, store),
	{ "listing.max_objects", CONFIG_INT, offsetof(struct meta_settings, listing_max_objects),
	  "50000000", "objects one dataset may have (a listing past it fails)", 1, 4294967294.0,
	  NULL },
	{ "listing.max_pages", CONFIG_INT, offsetof(struct meta_settings, listing_max_pages),
	  "1000000", "ListObjectsV2 pages one listing may take", 1, 1e9, NULL },
	{ "listing.max_time", CONFIG_DURATION, offsetof(struct meta_settings, listing_max_time_ms),
	  "30m", "time one listing may take, all pages", 1000, 7 * 86400000.0, NULL },
	{ "rpc.stall_timeout", CONFIG_DURATION, offsetof(struct meta_settings, rpc_stall_timeout_ms),
	  "30s", "a call whose client reads nothing for this long (a GetSnapshot stream not "
	  "read) is ended with DEADLINE_EXCEEDED, freeing its thread", 100, 3600000, NULL },
	{ "rpc.max_streams", CONFIG_INT, offsetof(struct meta_settings, rpc_max_streams), "8",
	  "GetSnapshot streams served at once, each on a thread of its own; one more is refused "
	  "with UNAVAILABLE (busy), which granary-fuse retries", 1, 1024, NULL },
	{ "store.allowed_endpoints", CONFIG_STRING,
	  offsetof(struct meta_settings, store_allowed_endpoints), "",
	  "S3 endpoints a dataset may name besides store.endpoint, comma-separated; they get "
	  "meta's own credentials, every other endpoint is refused", 0, 0, NULL },
	{ "allowed_file_roots", CONFIG_STRING, offsetof(struct meta_settings, allowed_file_roots),
	  "", "comma-separated directories of this host a file:// source may lie in, resolved "
	  "(empty: file:// sources are refused)", 0, 0, NULL },
	{ "auth.csi_key_file", CONFIG_STRING, offsetof(struct meta_settings, auth_csi_key_file),
	  "", "key of the csi role (granary-csi: registers, deletes, refreshes datasets), a "
	  "file mode 0600 or 0400 of 16 to 4096 bytes", 0, 0, NULL },
	{ "auth.worker_key_file", CONFIG_STRING,
	  offsetof(struct meta_settings, auth_worker_key_file), "",
	  "key of the worker role (granary-worker: heartbeats, reads)", 0, 0, NULL },
	{ "auth.mount_key_file", CONFIG_STRING,
	  offsetof(struct meta_settings, auth_mount_key_file), "",
	  "key of the mount role (granary-fuse: reads datasets, snapshots, workers)", 0, 0,
	  NULL },
	{ "auth.insecure", CONFIG_BOOL, offsetof(struct meta_settings, auth_insecure), "false",
	  "serve unsigned calls from anyone, with no key file (local tests and demos only)", 0,
	  0, NULL },
	{ "kube.enabled", CONFIG_BOOL, offsetof(struct meta_settings, kube_enabled), "false",
	  "in a Kubernetes pod: serve only while holding the Lease kube.lease, and keep the "
	  "registry equal to the cluster's Dataset objects (docs/datasets.md)", 0, 0, NULL },
	{ "kube.namespace", CONFIG_STRING, offsetof(struct meta_settings, kube_namespace), "",
	  "namespace of the Lease (the release's)", 0, 0, NULL },
	{ "kube.identity", CONFIG_STRING, offsetof(struct meta_settings, kube_identity), "",
	  "this replica's name in the Lease (its pod name)", 0, 0, NULL },
	{ "kube.lease", CONFIG_STRING, offsetof(struct meta_settings, kube_lease), "granary-meta",
	  "name of the Lease the replicas compete for", 0, 0, NULL },
	{ "kube.lease_duration", CONFIG_DURATION,
	  offsetof(struct meta_settings, kube_lease_duration_ms), "15s",
	  "a leader that has not renewed the Lease for this long is replaced; it stops serving "
	  "after two thirds of it without a renewal", 3000, 600000, NULL },
	{ "kube.timeout", CONFIG_DURATION, offsetof(struct meta_settings, kube_timeout_ms), "10s",
	  "with kube.enabled: a Kubernetes API call (not a watch) with no answer within this "
	  "long fails, and its thread is free again; the Lease, the controllers and the "
	  "workers' token reviews try again (docs/meta.md)", 100, 300000, NULL },
	{ "kube.driver", CONFIG_STRING, offsetof(struct meta_settings, kube_driver),
	  "csi.granary.io", "CSI driver named by the Datasets' PersistentVolumes", 0, 0, NULL },
	{ "kube.credentials_dir", CONFIG_STRING,
	  offsetof(struct meta_settings, kube_credentials_dir), "",
	  "where the Datasets' Secrets become credentials files only meta reads (empty: "
	  "DATA_DIR/credentials)", 0, 0, NULL },
	{ "kube.cache_gate", CONFIG_BOOL, offsetof(struct meta_settings, kube_cache_gate), "true",
	  "with kube.enabled: remove the scheduling gate granary.io/cache of pods labelled "
	  "granary.io/wait-for-cache once their Datasets are cached that much (docs/datasets.md)",
	  0, 0, NULL },
	{ "kube.worker_service_account", CONFIG_STRING,
	  offsetof(struct meta_settings, kube_worker_service_account), "",
	  "with kube.enabled: the workers' service account in kube.namespace; a Heartbeat is "
	  "accepted only with a token of one of its pods on the node the heartbeat names "
	  "(reviewed by the Kubernetes API; required with kube.enabled)", 0, 0, NULL },
	{ "kube.token_audience", CONFIG_STRING,
	  offsetof(struct meta_settings, kube_token_audience), "granary-meta",
	  "with kube.enabled: the audience of the workers' projected service account tokens",
	  0, 0, NULL },
	{ CREDPOLICY_KEY, CONFIG_STRING,
	  offsetof(struct meta_settings, datasets_cluster_credentials), "",
	  "with kube.enabled: which namespaces' Datasets without spec.secretRef may read which "
	  "sources with the cluster's store credentials: rules separated by newlines or ';', each "
	  "a namespace (or *) and the source prefixes it may name (s3://BUCKET/PREFIX/, "
	  "file:///DIR/, or * for every source), blank-separated; empty: no namespace "
	  "(docs/datasets.md)", 0, 0, NULL },
	{ "metrics.address", CONFIG_STRING, offsetof(struct meta_settings, metrics_address), "",
	  "where /healthz and /metrics are served over HTTP: \":PORT\", host:port or "
	  "unix:///path (empty: off)", 0, 0, NULL },
	TLS_SERVER_FIELDS(struct meta_settings, tls, "tls.", "the gRPC listener"),
	TLS_CLIENT_CA_FIELD(struct meta_settings, tls_client_ca_file, "tls."),
	{ "log.level", CONFIG_STRING, offsetof(struct meta_settings, log_level), "info",
	  "debug, info, warn or error", 0, 0, NULL },
};

const struct config_schema meta_settings_schema = {
	.program = "granary-meta",
	.summary = "Granary metadata service: dataset registry, namespace snapshots,"
		   " worker membership",
	.fields = meta_fields,
	.nfields = sizeof(meta_fields) / sizeof(meta_fields[0]),
};

enum error_code meta_settings_check(const struct meta_settings *s, struct error *err)
{
	char *roots[STORE_FILE_ROOTS_MAX];
	struct credpolicy *policy = NULL;
	size_t n = 0;

	if (netaddr_check_setting("listen", s->listen, err) != ERR_OK)
		return ERR_INVALID;
	if (config_check_abs_path("data_dir", s->data_dir, err) != ERR_OK)
		return ERR_INVALID;
	if (s->heartbeat_interval_ms == 0)
		return error_set(err, ERR_INVALID, "key 'heartbeat.interval': must be more than 0");
	if (s->heartbeat_expiry_ms <= s->heartbeat_interval_ms)
		return error_set(err, ERR_INVALID,
				 "key 'heartbeat.expiry': must be longer than heartbeat.interval (%llums), got %llums",
				 (unsigned long long)s->heartbeat_interval_ms,
				 (unsigned long long)s->heartbeat_expiry_ms);
	if (s->store.endpoint && *s->store.endpoint &&
	    store_check_endpoint(s->store.endpoint, err) != ERR_OK)
		return error_wrap(err, "key 'store.endpoint'");
	if (store_check_endpoint_list("store.allowed_endpoints", s->store_allowed_endpoints, err) !=
	    ERR_OK)
		return ERR_INVALID;
	if (config_split_dirs("allowed_file_roots", s->allowed_file_roots, roots,
			      STORE_FILE_ROOTS_MAX, &n, err) != ERR_OK)
		return ERR_INVALID;
	config_dirs_free(roots, n);
	if ((*s->auth_csi_key_file &&
	     config_check_abs_path("auth.csi_key_file", s->auth_csi_key_file, err) != ERR_OK) ||
	    (*s->auth_worker_key_file &&
	     config_check_abs_path("auth.worker_key_file", s->auth_worker_key_file, err) !=
		     ERR_OK) ||
	    (*s->auth_mount_key_file &&
	     config_check_abs_path("auth.mount_key_file", s->auth_mount_key_file, err) != ERR_OK))
		return ERR_INVALID;
	if (s->kube_enabled && (!*s->kube_namespace || !*s->kube_identity || !*s->kube_lease))
		return error_set(err, ERR_INVALID,
				 "keys 'kube.namespace', 'kube.identity' and 'kube.lease': required with kube.enabled");
	if (s->kube_enabled && (!*s->kube_worker_service_account || !*s->kube_token_audience))
		return error_set(err, ERR_INVALID,
				 "keys 'kube.worker_service_account' and 'kube.token_audience': required with kube.enabled (heartbeats are accepted only from the workers' pods)");
	if (*s->kube_credentials_dir &&
	    config_check_abs_path("kube.credentials_dir", s->kube_credentials_dir, err) != ERR_OK)
		return ERR_INVALID;
	if (credpolicy_parse(s->datasets_cluster_credentials, &policy, err) != ERR_OK)
		return err->code;
	credpolicy_free(policy);
	if (*s->metrics_address &&
	    netaddr_check_listen_setting("metrics.address", s->metrics_address, err) != ERR_OK)
		return ERR_INVALID;
	if (tls_server_check("tls.", &s->tls, s->tls_client_ca_file, err) != ERR_OK)
		return ERR_INVALID;
	if (config_check_log_level("log.level", s->log_level, err) != ERR_OK)
		return ERR_INVALID;
	return ERR_OK;
}
