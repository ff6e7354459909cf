/*
 * mountpod.h - the node plugin's mount pods: one pod per staged volume on
 * this node, made from the pod template the Helm chart renders (image,
 * resources, volumes, security context: all the operator's), in which
 * granary-mount (csi/mount_main.c) runs the volume's granary-fuse.
 *
 * The plugin fills in what is per volume: the name (PREFIX-H-T, H a hash
 * of node and volume, T of the template, so that a changed template, e.g.
 * a new image, gives a new name and the two pods can overlap during an
 * upgrade), the node, labels and an annotation with the volume id,
 * granary-mount's flags (--socket, --volume, --pod, --template), and the
 * volume's own directory: the template mounts the plugin's STATE/node as a
 * hostPath at the same path, and each pod gets STATE/node/VOLUME in its
 * place (the volume's files and keeper socket), no other volume's.
 */
#ifndef GRANARY_CSI_MOUNTPOD_H
#define GRANARY_CSI_MOUNTPOD_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"
#include "kube/kubeapi.h"

struct mountpods;

#define MOUNTPOD_NAME_MAX 64

struct mountpods_config {
	const char *template_file; /* the pod template, JSON */
	const char *node;          /* spec.nodeName */
	const char *volumes_dir;   /* STATE/node, where the volumes' directories are */
};

/* Loads the template (ERR_INVALID naming what it lacks: metadata.name as
 * the prefix, metadata.namespace, one container, a hostPath volume of
 * volumes_dir mounted at the same path in it; or what it has that would
 * show every volume: a hostPath of a directory above volumes_dir). api is
 * borrowed. */
enum error_code mountpods_new(const struct mountpods_config *cfg, struct kubeapi *api,
			      struct mountpods **out, struct error *err);
void mountpods_free(struct mountpods *mp);

/* The template's hash, as pods made from it carry it. */
const char *mountpods_template_hash(const struct mountpods *mp);

/* The name of the volume's pod made from the current template. */
void mountpods_name(const struct mountpods *mp, const char *volume, char out[MOUNTPOD_NAME_MAX]);

/* Creates the volume's pod; one that exists is fine. */
enum error_code mountpods_create(struct mountpods *mp, const char *volume, struct error *err);

/*
 * Whether name is a pod this plugin makes for volume on this node:
 * PREFIX-H-T with H of this node and volume and T of any template (an
 * upgrade deletes the pods of the template before).
 */
bool mountpods_owns(const struct mountpods *mp, const char *volume, const char *name);

/*
 * Deletes the volume's pod name; one that is gone is fine. Pod names reach
 * the plugin from granary-mount's hello, which a mount pod could forge:
 * a name that is not the volume's pod on this node (mountpods_owns) is
 * ERR_PERMISSION naming pod and volume, and nothing is asked of the API.
 */
enum error_code mountpods_delete(struct mountpods *mp, const char *volume, const char *name,
				 struct error *err);

/*
 * The volume whose pod name is, from its granary.io/volume annotation
 * (which the plugin set when it made the pod), into volume ("" when it has
 * none). ERR_NOT_FOUND for a pod that is gone; a name that is no mount
 * pod's (PREFIX-H-T) is ERR_PERMISSION without asking the API.
 */
enum error_code mountpods_volume_of(struct mountpods *mp, const char *name, char *volume,
				    size_t size, struct error *err);

/* Whether the pod exists, and if so why it does not run when it does not
 * (its phase, a container's waiting or terminated reason and message)
 * into why ("" when it runs); *ended (when not NULL) whether it is in a
 * phase it never leaves, Succeeded or Failed (a graceful node shutdown
 * leaves a pod Failed, and its name taken), and not being deleted. */
enum error_code mountpods_describe(struct mountpods *mp, const char *name, bool *exists,
				   bool *ended, char *why, size_t size, struct error *err);

#endif
