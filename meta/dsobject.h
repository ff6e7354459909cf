/*
 * dsobject.h - the Dataset custom resource (granary.io/v1alpha1, see
 * helm/granary/templates/crd-dataset.yaml) read into C and the registry's
 * spec made from it, and its status written back: the pure part of the
 * Dataset controller (meta/datasets.c), tested without an apiserver.
 *
 * A Dataset D in namespace N is the registry's dataset "N.D" (a namespace
 * has no '.', so the split is unique; the schema keeps D short enough for
 * the 253-byte dataset name), mounted through the PersistentVolumeClaim D
 * in N that the controller binds to the PersistentVolume "granary-N.D".
 */
#ifndef GRANARY_META_DSOBJECT_H
#define GRANARY_META_DSOBJECT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/name.h"
#include "common/error.h"
#include "granary.pb-c.h"

#define DSOBJECT_GROUP "granary.io"
#define DSOBJECT_VERSION "v1alpha1"
#define DSOBJECT_FINALIZER "granary.io/dataset"
/* The registry name: namespace (63) '.' name. */
#define DSOBJECT_NAME_MAX 253

enum dsobject_phase {
	DSOBJECT_PENDING,
	DSOBJECT_LISTING,
	DSOBJECT_READY,
	DSOBJECT_REFRESHING,
	DSOBJECT_FAILED,
};

const char *dsobject_phase_name(enum dsobject_phase p);

/* What the controller reads of one object; strings point into the JSON
 * object it was parsed from. */
struct dsobject {
	const char *ns, *name, *uid, *resource_version;
	const char *volume;          /* label granary.io/volume: a claim's mirror ("" = none) */
	int64_t generation;          /* metadata.generation */
	bool deleting;               /* metadata.deletionTimestamp set */
	bool has_finalizer;
	const char *source, *endpoint, *region, *secret;
	uint64_t block_size;         /* 0 = the cluster's */
	int cache_policy;            /* Granary__V1__CachePolicy */
	bool pin, preload;
	/* spec.preloadPrefixes (checked by the registry, block/name.h) */
	const char *preload_prefixes[BLOCK_PRELOAD_PREFIXES_MAX];
	size_t n_preload_prefixes;
	const char *refresh;         /* spec.refresh: "" = none asked */
	const char *refreshed;       /* status.refreshed: the last handled */
	const char *phase;           /* status.phase, "" when none */
	int64_t observed;            /* status.observedGeneration */
	uint64_t snapshot;           /* status.snapshotGeneration */
};

/*
 * Reads obj. ERR_INVALID naming the field for what the apiserver's schema
 * should have refused (the controller then marks the object Failed).
 */
enum error_code dsobject_parse(json_t *obj, struct dsobject *out, struct error *err);

/* "N.D" into out (size > DSOBJECT_NAME_MAX), or, for the mirror of a
 * StorageClass claim's volume (label granary.io/volume equal to its name,
 * in the release namespace mirror_ns), the volume id itself. ERR_INVALID
 * when too long. */
enum error_code dsobject_dataset_name(const struct dsobject *d, const char *mirror_ns, char *out,
				      size_t size, struct error *err);

/* Whether d mirrors a claim's volume (see dsobject_dataset_name). */
bool dsobject_is_mirror(const struct dsobject *d, const char *mirror_ns);

/* The registry's spec of d: name, source, endpoint, region, options;
 * credentials_ref as given (the file the controller wrote from the
 * Secret, or ""). opts is filled and linked into spec; strings borrowed. */
void dsobject_spec(const struct dsobject *d, const char *name, const char *credentials_ref,
		   Granary__V1__DatasetSpec *spec, Granary__V1__DatasetOptions *opts);

/*
 * The AWS shared-credentials text of a Secret object (its data
 * accessKeyID, secretAccessKey, optional sessionToken, base64 as the API
 * gives them). *out: malloc'd, to be wiped and freed by the caller.
 * ERR_INVALID naming the missing or malformed key (never a value).
 */
enum error_code dsobject_credentials(json_t *secret, char **out, size_t *len, struct error *err);

/* "1.5GiB", "300MiB", "12KiB", "7B" into buf. */
void dsobject_size(uint64_t bytes, char *buf, size_t size);

#endif
