/*
 * mountpod.c - mount pods from the chart's template (see mountpod.h).
 */
#include "csi/mountpod.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "csi/keeper.h"

#define PREFIX_MAX 40

struct mountpods {
	struct kubeapi *api;
	json_t *tmpl;
	char *node, *volumes_dir, *ns, *prefix;
	size_t state_volume, state_mount; /* indexes in spec.volumes and the volumeMounts */
	char hash[17];
};

/* Whether dir is path or a directory above it. */
static bool dir_covers(const char *dir, const char *path)
{
	size_t n = strlen(dir);

	while (n > 1 && dir[n - 1] == '/')
		n--;
	return strncmp(dir, path, n) == 0 && (path[n] == '\0' || path[n] == '/' || n == 1);
}

/*
 * Finds the template's hostPath volume of mp->volumes_dir and its mount at
 * the same path in the first container; refuses a hostPath above it.
 */
static enum error_code find_state_volume(struct mountpods *mp, const char *file,
					 struct error *err)
{
	json_t *spec = json_object_get(mp->tmpl, "spec"), *vols = json_object_get(spec, "volumes");
	json_t *mounts = json_object_get(json_array_get(json_object_get(spec, "containers"), 0),
					 "volumeMounts");
	const char *name = NULL;
	size_t i;
	json_t *v;

	json_array_foreach(vols, i, v) {
		const char *path = json_string_value(
			json_object_get(json_object_get(v, "hostPath"), "path"));

		if (!path || !dir_covers(path, mp->volumes_dir))
			continue;
		if (strcmp(path, mp->volumes_dir) != 0 || name)
			return error_set(err, ERR_INVALID,
					 "mount pod template '%s': hostPath '%s' would show every volume's directory to each mount pod; mount '%s' once (each pod gets its volume's directory in it)",
					 file, path, mp->volumes_dir);
		name = json_string_value(json_object_get(v, "name"));
		mp->state_volume = i;
	}
	json_array_foreach(mounts, i, v) {
		const char *vn = json_string_value(json_object_get(v, "name"));
		const char *at = json_string_value(json_object_get(v, "mountPath"));

		if (name && vn && strcmp(vn, name) == 0 && at && strcmp(at, mp->volumes_dir) == 0 &&
		    !json_object_get(v, "subPath")) {
			mp->state_mount = i;
			return ERR_OK;
		}
	}
	return error_set(err, ERR_INVALID,
			 "mount pod template '%s': needs a hostPath volume of '%s' mounted at the same path in its first container",
			 file, mp->volumes_dir);
}

enum error_code mountpods_new(const struct mountpods_config *cfg, struct kubeapi *api,
			      struct mountpods **out, struct error *err)
{
	struct mountpods *mp = calloc(1, sizeof(*mp));
	json_error_t jerr;
	const char *prefix, *ns;
	json_t *containers;
	char *canon;

	if (!mp)
		return error_set(err, ERR_NOMEM, "out of memory");
	mp->api = api;
	mp->tmpl = json_load_file(cfg->template_file, 0, &jerr);
	if (!mp->tmpl) {
		mountpods_free(mp);
		return error_set(err, ERR_INVALID, "mount pod template '%s': %s (line %d)",
				 cfg->template_file, jerr.text, jerr.line);
	}
	prefix = json_string_value(json_object_get(json_object_get(mp->tmpl, "metadata"), "name"));
	ns = json_string_value(json_object_get(json_object_get(mp->tmpl, "metadata"), "namespace"));
	containers = json_object_get(json_object_get(mp->tmpl, "spec"), "containers");
	if (!prefix || !*prefix || strlen(prefix) > PREFIX_MAX || !ns || !*ns ||
	    json_array_size(containers) < 1) {
		mountpods_free(mp);
		return error_set(err, ERR_INVALID,
				 "mount pod template '%s': needs metadata.name (the pods' name prefix, at most %d characters), metadata.namespace and spec.containers",
				 cfg->template_file, PREFIX_MAX);
	}
	canon = json_dumps(mp->tmpl, JSON_COMPACT | JSON_SORT_KEYS);
	mp->node = strdup(cfg->node);
	mp->volumes_dir = strdup(cfg->volumes_dir);
	mp->ns = strdup(ns);
	mp->prefix = strdup(prefix);
	if (!canon || !mp->node || !mp->volumes_dir || !mp->ns || !mp->prefix) {
		free(canon);
		mountpods_free(mp);
		return error_set(err, ERR_NOMEM, "out of memory");
	}
	if (find_state_volume(mp, cfg->template_file, err) != ERR_OK) {
		free(canon);
		mountpods_free(mp);
		return err->code;
	}
	snprintf(mp->hash, sizeof(mp->hash), "%016llx",
		 (unsigned long long)XXH64(canon, strlen(canon), 0));
	free(canon);
	*out = mp;
	return ERR_OK;
}

void mountpods_free(struct mountpods *mp)
{
	if (!mp)
		return;
	json_decref(mp->tmpl);
	free(mp->node);
	free(mp->volumes_dir);
	free(mp->ns);
	free(mp->prefix);
	free(mp);
}

const char *mountpods_template_hash(const struct mountpods *mp)
{
	return mp->hash;
}

static unsigned long long volume_hash(const struct mountpods *mp, const char *volume)
{
	XXH64_state_t *s = XXH64_createState();
	unsigned long long h;

	if (!s)
		return XXH64(volume, strlen(volume), 0);
	XXH64_reset(s, 0);
	XXH64_update(s, mp->node, strlen(mp->node) + 1);
	XXH64_update(s, volume, strlen(volume));
	h = XXH64_digest(s);
	XXH64_freeState(s);
	return h;
}

/* A pod's name is PREFIX-H-T: H the hex digits of the node's and the
 * volume's hash, T those of the template's. */
#define NAME_VOLUME_HEX 12
#define NAME_TEMPLATE_HEX 6

void mountpods_name(const struct mountpods *mp, const char *volume, char out[MOUNTPOD_NAME_MAX])
{
	snprintf(out, MOUNTPOD_NAME_MAX, "%s-%0*llx-%.*s", mp->prefix, NAME_VOLUME_HEX,
		 volume_hash(mp, volume) & ((1ULL << (4 * NAME_VOLUME_HEX)) - 1), NAME_TEMPLATE_HEX,
		 mp->hash);
}

static bool hex_run(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* Whether name has the form of a mount pod's, as mountpods_name writes
 * it. */
static bool pod_name_form(const struct mountpods *mp, const char *name)
{
	const size_t p = strlen(mp->prefix), t = p + 1 + NAME_VOLUME_HEX + 1;

	return strlen(name) == t + NAME_TEMPLATE_HEX && strncmp(name, mp->prefix, p) == 0 &&
	       name[p] == '-' && hex_run(name + p + 1, NAME_VOLUME_HEX) && name[t - 1] == '-' &&
	       hex_run(name + t, NAME_TEMPLATE_HEX);
}

bool mountpods_owns(const struct mountpods *mp, const char *volume, const char *name)
{
	char want[MOUNTPOD_NAME_MAX];

	mountpods_name(mp, volume, want);
	/* All but T, the template's hash. */
	return pod_name_form(mp, name) && strncmp(name, want, strlen(want) - NAME_TEMPLATE_HEX) == 0;
}

/* The pod name, read from the API into *pod (NULL when there is none, a
 * 404). */
static enum error_code get_pod(struct mountpods *mp, const char *name, json_t **pod,
			       struct error *err)
{
	char path[256];
	json_t *reply = NULL;
	enum error_code rc;
	long status;

	*pod = NULL;
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s", mp->ns, name);
	rc = kubeapi_call(mp->api, "GET", path, NULL, &status, &reply, err);
	if (rc != ERR_OK)
		return rc;
	if (status == 200)
		*pod = reply;
	else if (status != 404)
		rc = error_set(err, status == 403 ? ERR_PERMISSION : ERR_UNAVAILABLE,
			       "read mount pod %s/%s: HTTP %ld: %s", mp->ns, name, status,
			       kubeapi_message(reply));
	if (!*pod)
		json_decref(reply);
	return rc;
}

static int add_arg(json_t *args, const char *key, const char *value)
{
	char *a;
	int rc;

	if (asprintf(&a, "--%s=%s", key, value) < 0)
		return -1;
	rc = json_array_append_new(args, json_string(a));
	free(a);
	return rc;
}

/* The template filled in for the volume; NULL when out of memory. */
static json_t *pod_for(const struct mountpods *mp, const char *volume, const char *name)
{
	json_t *pod = json_deep_copy(mp->tmpl), *meta, *labels, *notes, *spec, *c, *args;
	char vh[16], dir[4096], sock[4200];

	if (!pod)
		return NULL;
	snprintf(vh, sizeof(vh), "%012llx", volume_hash(mp, volume) & 0xffffffffffffULL);
	snprintf(dir, sizeof(dir), "%s/%s", mp->volumes_dir, volume);
	snprintf(sock, sizeof(sock), "%s/%s", dir, KEEPER_SOCKET);
	meta = json_object_get(pod, "metadata");
	spec = json_object_get(pod, "spec");
	c = json_array_get(json_object_get(spec, "containers"), 0);
	/* The volume's directory in place of STATE/node, at its own path. */
	if (json_object_set_new(json_object_get(json_array_get(json_object_get(spec, "volumes"),
								mp->state_volume),
						"hostPath"),
				"path", json_string(dir)) != 0 ||
	    json_object_set_new(json_array_get(json_object_get(c, "volumeMounts"), mp->state_mount),
				"mountPath", json_string(dir)) != 0) {
		json_decref(pod);
		return NULL;
	}
	labels = json_object_get(meta, "labels");
	if (!json_is_object(labels))
		json_object_set_new(meta, "labels", labels = json_object());
	notes = json_object_get(meta, "annotations");
	if (!json_is_object(notes))
		json_object_set_new(meta, "annotations", notes = json_object());
	args = json_object_get(c, "args");
	if (!json_is_array(args))
		json_object_set_new(c, "args", args = json_array());
	if (!labels || !notes || !args || json_object_set_new(meta, "name", json_string(name)) != 0 ||
	    json_object_set_new(labels, "granary.io/volume-hash", json_string(vh)) != 0 ||
	    json_object_set_new(labels, "granary.io/template", json_string(mp->hash)) != 0 ||
	    json_object_set_new(notes, "granary.io/volume", json_string(volume)) != 0 ||
	    json_object_set_new(notes, "granary.io/node", json_string(mp->node)) != 0 ||
	    json_object_set_new(spec, "nodeName", json_string(mp->node)) != 0 ||
	    add_arg(args, "socket", sock) != 0 || add_arg(args, "volume", volume) != 0 ||
	    add_arg(args, "pod", name) != 0 || add_arg(args, "template", mp->hash) != 0) {
		json_decref(pod);
		return NULL;
	}
	return pod;
}

enum error_code mountpods_create(struct mountpods *mp, const char *volume, struct error *err)
{
	char name[MOUNTPOD_NAME_MAX], path[256];
	json_t *pod, *reply = NULL;
	enum error_code rc;
	long status;

	mountpods_name(mp, volume, name);
	pod = pod_for(mp, volume, name);
	if (!pod)
		return error_set(err, ERR_NOMEM, "out of memory");
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods", mp->ns);
	rc = kubeapi_call(mp->api, "POST", path, pod, &status, &reply, err);
	json_decref(pod);
	if (rc == ERR_OK && status != 201 && status != 200 && status != 409)
		rc = error_set(err, status == 403 ? ERR_PERMISSION : ERR_UNAVAILABLE,
			       "create mount pod %s/%s: HTTP %ld: %s", mp->ns, name, status,
			       kubeapi_message(reply));
	json_decref(reply);
	return rc;
}

enum error_code mountpods_delete(struct mountpods *mp, const char *volume, const char *name,
				 struct error *err)
{
	char path[256];
	json_t *reply = NULL;
	enum error_code rc;
	long status;

	/* With the plugin's right to delete any pod of the namespace, a
	 * forged name would delete granary-meta or another node's mount pod. */
	if (!mountpods_owns(mp, volume, name))
		return error_set(err, ERR_PERMISSION,
				 "delete mount pod %s/%s: refused, it is not the mount pod of volume '%s' on node '%s'",
				 mp->ns, name, volume, mp->node);
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s", mp->ns, name);
	rc = kubeapi_call(mp->api, "DELETE", path, NULL, &status, &reply, err);
	if (rc == ERR_OK && status != 200 && status != 202 && status != 404)
		rc = error_set(err, status == 403 ? ERR_PERMISSION : ERR_UNAVAILABLE,
			       "delete mount pod %s/%s: HTTP %ld: %s", mp->ns, name, status,
			       kubeapi_message(reply));
	json_decref(reply);
	return rc;
}

enum error_code mountpods_volume_of(struct mountpods *mp, const char *name, char *volume,
				    size_t size, struct error *err)
{
	json_t *pod;
	const char *v;
	enum error_code rc;

	volume[0] = '\0';
	/* The name goes into the request's path: only a mount pod's. */
	if (!pod_name_form(mp, name))
		return error_set(err, ERR_PERMISSION, "read mount pod %s/%s: refused, not a mount pod's name",
				 mp->ns, name);
	rc = get_pod(mp, name, &pod, err);
	if (rc != ERR_OK)
		return rc;
	if (!pod)
		return error_set(err, ERR_NOT_FOUND, "read mount pod %s/%s: not found", mp->ns, name);
	v = json_string_value(json_object_get(
		json_object_get(json_object_get(pod, "metadata"), "annotations"), "granary.io/volume"));
	if (v)
		snprintf(volume, size, "%s", v);
	json_decref(pod);
	return ERR_OK;
}

/* A container's state that is not running, as "reason: message". */
static bool not_running(json_t *cs, char *why, size_t size)
{
	json_t *state = json_object_get(cs, "state");
	const char *kinds[] = { "waiting", "terminated" };

	for (size_t i = 0; i < 2; i++) {
		json_t *s = json_object_get(state, kinds[i]);
		const char *reason, *msg;

		if (!s)
			continue;
		reason = json_string_value(json_object_get(s, "reason"));
		msg = json_string_value(json_object_get(s, "message"));
		snprintf(why, size, "container %s %s%s%s", kinds[i], reason ? reason : "",
			 msg ? ": " : "", msg ? msg : "");
		return true;
	}
	return false;
}

enum error_code mountpods_describe(struct mountpods *mp, const char *name, bool *exists,
				   bool *ended, char *why, size_t size, struct error *err)
{
	json_t *reply, *st, *cs;
	const char *phase;
	enum error_code rc;
	bool final;

	*exists = false;
	if (ended)
		*ended = false;
	why[0] = '\0';
	rc = get_pod(mp, name, &reply, err);
	if (rc != ERR_OK || !reply)
		return rc;
	*exists = true;
	st = json_object_get(reply, "status");
	phase = json_string_value(json_object_get(st, "phase"));
	cs = json_array_get(json_object_get(st, "containerStatuses"), 0);
	final = phase && (strcmp(phase, "Failed") == 0 || strcmp(phase, "Succeeded") == 0);
	if (ended)
		*ended = final && !json_object_get(json_object_get(reply, "metadata"),
						   "deletionTimestamp");
	if (final || !cs || !not_running(cs, why, size)) {
		if (phase && strcmp(phase, "Running") != 0)
			snprintf(why, size, "pod %s%s%s", phase,
				 json_object_get(st, "message") ? ": " : "",
				 json_string_value(json_object_get(st, "message"))
					 ? json_string_value(json_object_get(st, "message"))
					 : "");
	}
	json_decref(reply);
	return ERR_OK;
}
