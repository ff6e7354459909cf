/*
 * health.c - the checks behind /healthz and /readyz.
 */
#include "csi/health.h"

#include <string.h>
#include <sys/stat.h>

#include "csi/identity.h"

enum error_code health_route_parse(const char *method, const char *path,
				   struct health_route *out, struct error *err)
{
	memset(out, 0, sizeof(*out));
	if (strcmp(path, "/healthz") == 0)
		out->kind = HEALTH_LIVE;
	else if (strcmp(path, "/readyz") == 0)
		out->kind = HEALTH_READY;
	else
		return error_set(err, ERR_NOT_FOUND, "no such route '%.200s' (known: /healthz, /readyz)",
				 path);
	out->allow = "GET";
	out->method_allowed = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
	return ERR_OK;
}

static enum error_code check_live(const struct health *h, struct error *err)
{
	struct stat sb;

	if (h->csi_socket && *h->csi_socket &&
	    (lstat(h->csi_socket, &sb) != 0 || !S_ISSOCK(sb.st_mode)))
		return error_set(err, ERR_UNAVAILABLE, "the CSI socket '%s' is gone", h->csi_socket);
	return ERR_OK;
}

enum error_code health_check(const struct health *h, enum health_route_kind kind,
			     struct error *err)
{
	struct error why;

	if (check_live(h, err) != ERR_OK)
		return ERR_UNAVAILABLE;
	if (kind != HEALTH_READY)
		return ERR_OK;
	/* The same check as the CSI Probe: meta only when the controller is on. */
	if (!identity_probe(h->probe, &why))
		return error_set(err, ERR_UNAVAILABLE, "granary-meta does not answer: %s", why.msg);
	if (h->reg && !registration_ok(h->reg, err))
		return ERR_UNAVAILABLE;
	return ERR_OK;
}
