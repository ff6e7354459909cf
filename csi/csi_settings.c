/*
 * csi_settings.c - the settings table of granary-csi and its checks.
 */
#include "csi/csi_settings.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/netaddr.h"

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
	{ "state_dir", CONFIG_STRING, offsetof(struct csi_settings, state_dir),
	  "/var/lib/granary/csi",
	  "directory for the driver's files: credentials and volume records (absolute; meta must see the controller's at the same path)", 0, 0, NULL },
	{ "fuse_binary", CONFIG_STRING, offsetof(struct csi_settings, fuse_binary),
	  "/usr/bin/granary-fuse", "granary-fuse executable the node plugin launches (absolute)",
	  0, 0, NULL },
	{ "fuse_config", CONFIG_STRING, offsetof(struct csi_settings, fuse_config), "",
	  "YAML settings file given to every granary-fuse as --config (empty: none)", 0, 0, NULL },
	{ "allowed_roots", CONFIG_STRING, offsetof(struct csi_settings, allowed_roots),
	  "/var/lib/kubelet",
	  "comma-separated directories that staging and target paths must lie under", 0, 0, NULL },
	{ "stage_timeout", CONFIG_DURATION, offsetof(struct csi_settings, stage_timeout_ms), "120s",
	  "longest NodeStageVolume waits for a new granary-fuse to serve", 100, 3600000, NULL },
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
	if (config_check_abs_path("state_dir", s->state_dir, err) != ERR_OK)
		return ERR_INVALID;
	if (csi_settings_is_node(s) && config_check_abs_path("fuse_binary", s->fuse_binary, err) != ERR_OK)
		return ERR_INVALID;
	if (s->fuse_config && *s->fuse_config &&
	    config_check_abs_path("fuse_config", s->fuse_config, err) != ERR_OK)
		return ERR_INVALID;
	if (csi_settings_is_node(s)) {
		char *roots[CSI_SETTINGS_MAX_ROOTS];
		size_t n = 0;

		if (csi_settings_roots(s, roots, CSI_SETTINGS_MAX_ROOTS, &n, err) != ERR_OK)
			return err->code;
		csi_settings_roots_free(roots, n);
	}
	if (config_check_log_level("log.level", s->log_level, err) != ERR_OK)
		return ERR_INVALID;
	return ERR_OK;
}

void csi_settings_roots_free(char **roots, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(roots[i]);
}

enum error_code csi_settings_roots(const struct csi_settings *s, char **roots, size_t max,
				   size_t *n, struct error *err)
{
	const char *p = s->allowed_roots ? s->allowed_roots : "";

	*n = 0;
	while (*p) {
		size_t len = strcspn(p, ",");
		const char *next = p[len] ? p + len + 1 : p + len;

		while (len && (*p == ' ' || *p == '\t'))
			p++, len--;
		while (len > 1 && (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == '/'))
			len--;
		if (len == 0) {
			p = next;
			continue;
		}
		if (*p != '/') {
			csi_settings_roots_free(roots, *n);
			return error_set(err, ERR_INVALID,
					 "key 'allowed_roots': '%.*s' is not an absolute path", (int)len, p);
		}
		if (*n == max) {
			csi_settings_roots_free(roots, *n);
			return error_set(err, ERR_INVALID, "key 'allowed_roots': more than %zu directories",
					 max);
		}
		roots[*n] = strndup(p, len);
		if (!roots[*n]) {
			csi_settings_roots_free(roots, *n);
			return error_set(err, ERR_NOMEM, "out of memory");
		}
		(*n)++;
		p = next;
	}
	if (*n == 0)
		return error_set(err, ERR_INVALID, "key 'allowed_roots': required (absolute directories)");
	return ERR_OK;
}
