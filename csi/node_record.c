/*
 * node_record.c - the node plugin's record of a staged volume
 * (STATE/node/ID.json): its format, load, save and targets.
 */
#include "csi/node_impl.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fileio.h"

/* ---- records ------------------------------------------------------------- */

void node_record_release(struct node_record *r)
{
	free(r->volume_id);
	free(r->dataset);
	free(r->staging_path);
	free(r->credentials_file);
	free(r->init_state);
	for (size_t i = 0; i < r->ntargets; i++)
		free(r->targets[i]);
	free(r->targets);
	memset(r, 0, sizeof(*r));
}

enum error_code node_record_add_target(struct node_record *r, const char *target,
				       struct error *err)
{
	char **grown;

	for (size_t i = 0; i < r->ntargets; i++)
		if (strcmp(r->targets[i], target) == 0)
			return ERR_OK;
	grown = realloc(r->targets, (r->ntargets + 1) * sizeof(*grown));
	if (!grown)
		return error_set(err, ERR_NOMEM, "out of memory");
	r->targets = grown;
	r->targets[r->ntargets] = strdup(target);
	if (!r->targets[r->ntargets])
		return error_set(err, ERR_NOMEM, "out of memory");
	r->ntargets++;
	return ERR_OK;
}

void node_record_remove_target(struct node_record *r, const char *target)
{
	for (size_t i = 0; i < r->ntargets; i++) {
		if (strcmp(r->targets[i], target) != 0)
			continue;
		free(r->targets[i]);
		memmove(&r->targets[i], &r->targets[i + 1], (r->ntargets - i - 1) * sizeof(char *));
		r->ntargets--;
		return;
	}
}

enum error_code node_record_save(const char *path, const struct node_record *r, struct error *err)
{
	json_t *root, *targets;
	char *text;
	enum error_code rc;

	targets = json_array();
	for (size_t i = 0; targets && i < r->ntargets; i++)
		if (json_array_append_new(targets, json_string(r->targets[i])) != 0) {
			json_decref(targets);
			targets = NULL;
		}
	if (!targets)
		return error_set(err, ERR_NOMEM, "out of memory");
	root = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:i, s:o}", "version", 1,
			 "volume_id", r->volume_id ? r->volume_id : "", "dataset",
			 r->dataset ? r->dataset : "", "staging_path",
			 r->staging_path ? r->staging_path : "", "credentials_file",
			 r->credentials_file ? r->credentials_file : "", "init_state",
			 r->init_state ? r->init_state : "", "pid", (json_int_t)r->pid, "start_time",
			 (json_int_t)r->start_time, "daemon_fd", r->daemon_fd, "targets", targets);
	if (root && r->conn &&
	    json_object_set_new(root, "conn", json_integer((json_int_t)r->conn)) != 0) {
		json_decref(root);
		root = NULL;
	}
	text = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
	json_decref(root);
	if (!text)
		return error_set(err, ERR_NOMEM, "out of memory");
	rc = fileio_replace(path, text, strlen(text), 0600, err);
	free(text);
	return rc;
}

static enum error_code dup_field(json_t *root, const char *key, char **out, const char *path,
				 struct error *err)
{
	json_t *v = json_object_get(root, key);

	if (!json_is_string(v))
		return error_set(err, ERR_INVALID, "record '%s': field '%s' missing or not a string",
				 path, key);
	*out = strdup(json_string_value(v));
	return *out ? ERR_OK : error_set(err, ERR_NOMEM, "out of memory");
}

static enum error_code int_field(json_t *root, const char *key, json_int_t *out, const char *path,
				 struct error *err)
{
	json_t *v = json_object_get(root, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return error_set(err, ERR_INVALID, "record '%s': field '%s' missing or not a count",
				 path, key);
	*out = json_integer_value(v);
	return ERR_OK;
}

enum error_code node_record_load(const char *path, struct node_record *r, struct error *err)
{
	json_error_t jerr;
	json_t *root, *targets;
	json_int_t pid = 0, start = 0, fd = 0;
	enum error_code rc = ERR_OK;

	memset(r, 0, sizeof(*r));
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (access(path, F_OK) != 0)
			return error_set(err, ERR_NOT_FOUND, "record '%s': %s", path, strerror(errno));
		return error_set(err, ERR_INVALID, "record '%s': line %d: %s", path, jerr.line,
				 jerr.text);
	}
	if (!json_is_object(root))
		rc = error_set(err, ERR_INVALID, "record '%s': not a JSON object", path);
	if (rc == ERR_OK)
		rc = dup_field(root, "volume_id", &r->volume_id, path, err);
	if (rc == ERR_OK)
		rc = dup_field(root, "dataset", &r->dataset, path, err);
	if (rc == ERR_OK)
		rc = dup_field(root, "staging_path", &r->staging_path, path, err);
	if (rc == ERR_OK)
		rc = dup_field(root, "credentials_file", &r->credentials_file, path, err);
	if (rc == ERR_OK)
		rc = dup_field(root, "init_state", &r->init_state, path, err);
	if (rc == ERR_OK)
		rc = int_field(root, "pid", &pid, path, err);
	if (rc == ERR_OK)
		rc = int_field(root, "start_time", &start, path, err);
	if (rc == ERR_OK)
		rc = int_field(root, "daemon_fd", &fd, path, err);
	if (rc == ERR_OK && fd > 1 << 20)
		rc = error_set(err, ERR_INVALID, "record '%s': field 'daemon_fd' out of range", path);
	targets = json_object_get(root, "targets");
	if (rc == ERR_OK && !json_is_array(targets))
		rc = error_set(err, ERR_INVALID, "record '%s': field 'targets' missing or not a list",
			       path);
	for (size_t i = 0; rc == ERR_OK && i < json_array_size(targets); i++) {
		json_t *t = json_array_get(targets, i);

		if (!json_is_string(t))
			rc = error_set(err, ERR_INVALID, "record '%s': field 'targets[%zu]' not a string",
				       path, i);
		else
			rc = node_record_add_target(r, json_string_value(t), err);
	}
	/* The mount pods' connection id; absent in the process mode. */
	if (json_integer_value(json_object_get(root, "conn")) > 0)
		r->conn = (uint64_t)json_integer_value(json_object_get(root, "conn"));
	json_decref(root);
	if (rc == ERR_OK && (!*r->volume_id || !*r->staging_path))
		rc = error_set(err, ERR_INVALID, "record '%s': empty volume_id or staging_path", path);
	r->pid = pid;
	r->start_time = (uint64_t)start;
	r->daemon_fd = (int)fd;
	return rc;
}

/* The volume's record STATE/node/ID.json into out (dir is STATE/node). */
void record_path(const char *dir, const char *id, char *out, size_t size)
{
	snprintf(out, size, "%s/%s.json", dir, id);
}

/* The volume's directory STATE/node/ID, or the file name in it. */
void volume_path(const char *dir, const char *id, const char *name, char *out, size_t size)
{
	snprintf(out, size, "%s/%s%s%s", dir, id, name ? "/" : "", name ? name : "");
}

/*
 * A record's fields drive unmounts, bind mounts and unlinks with the
 * plugin's privileges, and a record is read back from the disk, where
 * anything with the node's root may have changed it. Only what the plugin
 * itself writes passes: an id (check_id), staging path and targets under
 * roots (node_path_allowed), the volume's own init-state and credentials
 * files in its directory of dir (STATE/node). ERR_INVALID naming the
 * record and the field.
 */
enum error_code record_check(const char *path, const struct node_record *r, const char *dir,
			     char *const *roots, size_t nroots, struct error *err)
{
	char want[PATH_MAX_LEN];
	const char *field = NULL, *value = NULL;

	if (check_id(r->volume_id, err) != ERR_OK)
		return error_wrap(err, "record '%s'", path);
	if (!node_path_allowed(r->staging_path, roots, nroots)) {
		field = "staging_path";
		value = r->staging_path;
	}
	for (size_t i = 0; !field && i < r->ntargets; i++)
		if (!node_path_allowed(r->targets[i], roots, nroots)) {
			field = "targets";
			value = r->targets[i];
		}
	if (field)
		return error_set(err, ERR_INVALID,
				 "record '%s': field '%s': '%s' is not a clean absolute path under the allowed roots",
				 path, field, value);
	volume_path(dir, r->volume_id, NODE_INIT_STATE, want, sizeof(want));
	if (strcmp(r->init_state, want) != 0)
		return error_set(err, ERR_INVALID,
				 "record '%s': field 'init_state': '%s' is not the volume's '%s'", path,
				 r->init_state, want);
	volume_path(dir, r->volume_id, NODE_CREDENTIALS, want, sizeof(want));
	if (*r->credentials_file && strcmp(r->credentials_file, want) != 0)
		return error_set(err, ERR_INVALID,
				 "record '%s': field 'credentials_file': '%s' is not the volume's '%s'",
				 path, r->credentials_file, want);
	return ERR_OK;
}
