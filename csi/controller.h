/*
 * controller.h - the CSI controller's core: a PersistentVolumeClaim becomes
 * a dataset registered in granary-meta. No gRPC here: csi/service.c parses
 * the CSI messages into these plain structs and maps the error once.
 *
 * What it checks and decides (docs/csi.md is the user's view):
 *   - StorageClass parameters (controller_parse_params): source (required),
 *     endpoint, region, blockSize, cachePolicy, pin, preload; keys starting
 *     with "csi.storage.k8s.io/" are the sidecars' and are ignored; any
 *     other key is ERR_INVALID naming it.
 *   - the volume context (controller_context_init / _params): CreateVolume
 *     returns "dataset" and the registration it made, normalised, under
 *     the parameters' names. The PV keeps it, so a node can register the
 *     dataset again when meta lost it; the values are checked by the same
 *     rules as the parameters.
 *   - secrets (controller_parse_secret): accessKeyID + secretAccessKey and
 *     optionally sessionToken, written to a 0600 AWS shared-credentials file
 *     (controller_write_credentials). Values never reach a message or a log.
 *   - the volume id (controller_volume_id): the request name when it is
 *     already a DNS-1123 subdomain ("pvc-<uid>"), else a sanitised form with
 *     a hash of the name appended: stable, and distinct names stay distinct.
 *     The dataset in meta has the same name.
 *   - the access-mode rule (controller_check_capability): mount access only;
 *     every single-node mode and MULTI_NODE_READER_ONLY are served, always
 *     read-only (a write gives EROFS); modes promising writers on several
 *     nodes are refused.
 *
 * Files: STATE/controller/<id>.credentials (the provisioner secret, the
 * path meta is given as credentials_ref, so meta must see STATE at the same
 * path) and STATE/controller/<id>.json (the request's name and capacity
 * range, for idempotence). Thread-safe: calls for different names run at
 * once; two calls for one name race benignly (meta joins registrations,
 * files are replaced atomically).
 */
#ifndef GRANARY_CSI_CONTROLLER_H
#define GRANARY_CSI_CONTROLLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "meta/meta_client.h"

/*
 * A volume id is a dataset name (meta's rule, block_dataset_name_check: a
 * DNS-1123 subdomain) of at most 128 bytes, the CSI spec's size limit for a
 * string field; "<id>.credentials" then also fits a file name. Every call
 * that takes a volume_id checks it (controller_check_id) before it becomes
 * part of a path or reaches meta.
 */
#define CONTROLLER_ID_LEN 128
#define CONTROLLER_ID_MAX (CONTROLLER_ID_LEN + 1) /* with the NUL */

/* The longest CreateVolume name: Kubernetes' longest object name. */
#define CONTROLLER_NAME_MAX 253

/* One entry of a CSI map<string,string> (parameters, secrets, context). */
struct controller_kv {
	const char *key;
	const char *value;
};

/* The CSI access modes, numbered as in the spec (VolumeCapability.AccessMode.Mode). */
enum controller_access_mode {
	CONTROLLER_MODE_UNKNOWN = 0,
	CONTROLLER_MODE_SINGLE_NODE_WRITER = 1,
	CONTROLLER_MODE_SINGLE_NODE_READER_ONLY = 2,
	CONTROLLER_MODE_MULTI_NODE_READER_ONLY = 3,
	CONTROLLER_MODE_MULTI_NODE_SINGLE_WRITER = 4,
	CONTROLLER_MODE_MULTI_NODE_MULTI_WRITER = 5,
	CONTROLLER_MODE_SINGLE_NODE_SINGLE_WRITER = 6,
	CONTROLLER_MODE_SINGLE_NODE_MULTI_WRITER = 7,
};

enum controller_access_type {
	CONTROLLER_ACCESS_UNSET = 0,
	CONTROLLER_ACCESS_BLOCK,
	CONTROLLER_ACCESS_MOUNT,
};

struct controller_capability {
	enum controller_access_type access_type;
	int mode;               /* enum controller_access_mode; 0 when access_mode is absent */
};

/*
 * The access-mode rule above. what names the field in messages
 * ("volume_capabilities[0]"). ERR_OK, or ERR_INVALID saying what is not
 * supported and why.
 */
enum error_code controller_check_capability(const struct controller_capability *cap,
					    const char *what, struct error *err);

/* cache_policy values are granary.v1.CachePolicy's. */
struct controller_params {
	char *source;          /* s3://bucket/prefix/ (or file:///dir for demos) */
	char *endpoint;        /* "" = meta's default */
	char *region;          /* "" = meta's default */
	uint64_t block_size;   /* 0 = the worker's default */
	int cache_policy;
	bool pin;
	bool preload;
};

/*
 * Parses StorageClass parameters into out (heap strings; release with
 * controller_params_release, also after an error). ERR_INVALID names the
 * parameter: "parameter 'blockSize': ...", "unknown parameter 'foo'
 * (known: source, endpoint, ...)", "parameter 'source': required". An
 * empty blockSize or cachePolicy is the worker's default (0).
 */
enum error_code controller_parse_params(const struct controller_kv *kv, size_t n,
					struct controller_params *out, struct error *err);
void controller_params_release(struct controller_params *p);

/* ---- the volume context --------------------------------------------------- */

/* The volume_context key naming the dataset (also the volume id). */
#define CONTROLLER_CONTEXT_DATASET "dataset"
/* "NAMESPACE/NAME" of the Dataset object a volume was bound for (its
 * registration is that object's, made by granary-meta's controller). */
#define CONTROLLER_CONTEXT_OBJECT "datasetObject"

/* What CreateVolume returns as volume_context: "dataset" and the seven
 * registration keys. kv points into the dataset and params given to
 * controller_context_init and into block_size: valid while they are, and
 * not to be copied by value. */
struct controller_context {
	struct controller_kv kv[8];
	size_t n;
	char block_size[24];
};

/*
 * Fills ctx with dataset and p normalised: source, endpoint and region as
 * parsed ("" for meta's default), blockSize in bytes ("" for the worker's
 * default), cachePolicy "lru", "scan-resistant" or "", pin and preload
 * "true" / "false". controller_context_params reads it back to p.
 */
void controller_context_init(struct controller_context *ctx, const char *dataset,
			     const struct controller_params *p);

/*
 * Reads the registration from a volume_context into out (release with
 * controller_params_release, also after an error). *present is false (ERR_OK)
 * when the context has none of the registration keys: a volume made before
 * CreateVolume returned them. Other keys ("dataset", the provisioner's and
 * the kubelet's) are ignored. With any of them present, the rules of
 * controller_parse_params apply, and ERR_INVALID names the key:
 * "volume_context key 'blockSize': ...", "volume_context key 'source':
 * required ...".
 */
enum error_code controller_context_params(const struct controller_kv *kv, size_t n,
					  struct controller_params *out, bool *present,
					  struct error *err);

/*
 * Registers dataset name in meta from p (RegisterDataset; idempotent for
 * the same spec, and a call for a dataset being built waits for it), with
 * credentials_ref ("" or NULL: meta's own store credentials). timeout_ms 0
 * is the client's build timeout. *out as meta_client_register; meta's
 * errors pass through (ERR_EXISTS for another spec under the name,
 * ERR_TIMEOUT when the deadline passed: meta goes on building).
 */
enum error_code controller_register(struct meta_client *meta, const char *name,
				    const struct controller_params *p, const char *credentials_ref,
				    uint64_t timeout_ms, Granary__V1__Dataset **out,
				    struct error *err);

struct controller_secret {
	char *access_key_id;
	char *secret_access_key;
	char *session_token;   /* NULL when not given */
};

/*
 * Parses a CSI secret map. *present is false (out all NULL) for an empty
 * map: the daemons' own credential chain applies. ERR_INVALID names the key
 * (never the value): an unknown key, only one of accessKeyID and
 * secretAccessKey, a value that is empty, holds a line break or control
 * character, or has spaces around it. what ("secret") starts messages.
 * Release with controller_secret_release, which wipes the values.
 */
enum error_code controller_parse_secret(const char *what, const struct controller_kv *kv, size_t n,
					struct controller_secret *out, bool *present,
					struct error *err);
void controller_secret_release(struct controller_secret *s);

/*
 * Writes s as an AWS shared-credentials file, section [default], mode
 * 0600, atomically (temporary file, fsync, rename). ERR_IO /
 * ERR_PERMISSION naming the path; the values never appear in a message.
 */
enum error_code controller_write_credentials(const char *path, const struct controller_secret *s,
					     struct error *err);

/*
 * Derives the volume id from a CreateVolume name into out (size at least
 * CONTROLLER_ID_MAX). ERR_INVALID for an empty name ("field 'name':
 * required") or one over CONTROLLER_NAME_MAX bytes.
 */
enum error_code controller_volume_id(const char *name, char *out, size_t size, struct error *err);

/* True when id is a volume id (above): the only ids this driver hands out,
 * and safe as a file name. */
bool controller_valid_id(const char *id);

/*
 * ERR_OK when id is a volume id; else ERR_INVALID naming field and quoting
 * the id (cut to 64 bytes, control characters as '?'): "field 'volume_id':
 * required", "field 'volume_id': 'a/b' is not a volume id (lowercase
 * letters, digits, '-' and '.', at most 128 bytes)".
 */
enum error_code controller_check_id(const char *field, const char *id, struct error *err);

/* ---- the controller ----------------------------------------------------- */

struct controller;

struct controller_config {
	const char *state_dir;      /* absolute; STATE/controller is created */
	struct meta_client *meta;   /* not owned; outlives the controller */
	char *const *file_roots;    /* directories file:// sources may lie in (copied) */
	size_t nfile_roots;         /* 0: file:// sources are refused */
	/* The endpoints a StorageClass may name (store_endpoint_check):
	 * granary-meta's store.endpoint and store.allowed_endpoints (copied;
	 * NULL = "") */
	const char *default_endpoint;
	const char *allowed_endpoints;
	/* Told of each volume created (created true, with its registration)
	 * and deleted; NULL = nobody (csi/dsmirror.h shows them as Datasets).
	 * A failure when created is logged, the volume stays; one when
	 * deleted fails DeleteVolume, before anything is deleted. */
	enum error_code (*on_volume)(const char *id, const struct controller_params *p,
				     bool created, void *arg, struct error *err);
	void *on_volume_arg;
};

enum error_code controller_new(const struct controller_config *cfg, struct controller **out,
			       struct error *err);
void controller_free(struct controller *c);

struct controller_create_request {
	const char *name;
	const struct controller_kv *params;
	size_t nparams;
	const struct controller_kv *secrets;
	size_t nsecrets;
	bool has_capacity;          /* capacity_range given */
	int64_t required_bytes, limit_bytes;
	const struct controller_capability *caps;
	size_t ncaps;
	bool has_content_source;    /* from a snapshot or a volume: refused */
};

struct controller_volume {
	char id[CONTROLLER_ID_MAX];   /* also the dataset's name in meta */
	int64_t capacity_bytes;       /* max(dataset bytes, required_bytes) */
	uint64_t files;
	struct controller_params params; /* the registration, for the volume context */
};

/* Releases v->params. A zeroed volume is fine. */
void controller_volume_release(struct controller_volume *v);

/*
 * CreateVolume: checks the request (ERR_INVALID naming the field or
 * parameter), writes the secret's credentials file, registers the dataset
 * in meta (which lists the source; this can take minutes) and records the
 * capacity range. The same name with the same parameters and capacity
 * range returns the same volume, its credentials file replaced by the
 * secret only once meta took the request (a refused call leaves an
 * existing volume's file as it was); another spec or capacity range is
 * ERR_EXISTS; a limit_bytes below the dataset's size ERR_RANGE (then a
 * dataset this call registered is removed again). Meta's errors pass
 * through (ERR_UNAVAILABLE, ERR_PERMISSION for refused credentials ...).
 * On ERR_OK release out with controller_volume_release.
 */
enum error_code controller_create_volume(struct controller *c,
					 const struct controller_create_request *req,
					 struct controller_volume *out, struct error *err);

/*
 * DeleteVolume: tells on_volume first (the volume's Dataset is deleted:
 * while it is there, meta's Dataset controller registers the dataset
 * again), then deletes the dataset in meta and the volume's files. An id
 * meta does not know is success. ERR_INVALID for an id that is not a volume
 * id (controller_check_id); ERR_UNAVAILABLE while meta is building it;
 * on_volume's error, naming the volume, with nothing deleted, so that the
 * caller's retry does it all again.
 */
enum error_code controller_delete_volume(struct controller *c, const char *volume_id,
					 struct error *err);

/*
 * ValidateVolumeCapabilities: ERR_INVALID for an id that is not a volume
 * id or no capabilities; ERR_NOT_FOUND for a volume meta does not know. Otherwise
 * ERR_OK with *confirmed true when every capability is served, or false
 * with the reason in message.
 */
enum error_code controller_validate(struct controller *c, const char *volume_id,
				    const struct controller_capability *caps, size_t ncaps,
				    bool *confirmed, char *message, size_t message_size,
				    struct error *err);

#endif
