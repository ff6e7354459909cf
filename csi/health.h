/*
 * health.h - what granary-csi's /healthz, /readyz and /metrics answer, in
 * place of the livenessprobe sidecar and node-driver-registrar's health
 * endpoint: the core, without HTTP (csi/health_http.c serves it with
 * libmicrohttpd).
 *
 * Live (/healthz): for a unix endpoint, the CSI socket file is still
 * there: without it the kubelet and the sidecars have nothing to dial, and
 * only a restart makes it anew. Nothing else: liveness never asks meta,
 * in any role. Meta is another container (of the controller's pod, with
 * its own probes) or another pod; restarting granary-csi for a meta outage
 * mends nothing, and on a node it would kill the FUSE daemons.
 *
 * Ready (/readyz): live, and what the CSI Probe answers (identity_probe):
 * in the controller role, granary-meta answers a cheap call within the
 * probe client's deadline (the node role alone never asks meta); and, when
 * registration is on, the kubelet's last word on the plugin was
 * "registered" (csi/registration.h).
 *
 * Metrics (/metrics): with the node role, how many volumes are staged
 * and, per volume, whether its condition is abnormal (csi/node.h), so an
 * alert can fire on a mount that cannot serve.
 *
 * Every check runs per request, from the HTTP server's threads; the meta
 * call may take up to the probe client's deadline (2 s), the volume
 * probes up to theirs (2 s, all at once).
 */
#ifndef GRANARY_CSI_HEALTH_H
#define GRANARY_CSI_HEALTH_H

#include <stdbool.h>

#include "common/error.h"
#include "common/metrics.h"
#include "csi/node.h"
#include "csi/registration.h"
#include "meta/meta_client.h"

struct health {
	const char *csi_socket;      /* the CSI endpoint's socket path; NULL or "" for TCP */
	struct meta_client *probe;   /* Probe's client, for /readyz; NULL when the controller role is off */
	struct registration *reg;    /* NULL when registration is off */
	struct node *node;           /* the node plugin, for /metrics; NULL when the node role is off */
};

enum health_route_kind {
	HEALTH_LIVE = 1,  /* GET /healthz */
	HEALTH_READY,     /* GET /readyz */
	HEALTH_METRICS,   /* GET /metrics */
};

struct health_route {
	enum health_route_kind kind;
	bool method_allowed;  /* false: answer 405 with Allow: allow */
	const char *allow;    /* "GET" (HEAD is GET without the body) */
};

/*
 * Routes a request by method and path (without the query). ERR_NOT_FOUND
 * "no such route 'PATH' (known: /healthz, /readyz, /metrics)" for any
 * other path; a known path with another method than GET or HEAD is ERR_OK
 * with method_allowed false.
 */
enum error_code health_route_parse(const char *method, const char *path,
				   struct health_route *out, struct error *err);

/*
 * Runs the checks of a route. ERR_OK when they pass; ERR_UNAVAILABLE with
 * the first failed check's reason otherwise ("granary-meta does not answer:
 * ...", "the CSI socket '/csi/csi.sock' is gone", "not registered with the
 * kubelet yet ...").
 */
enum error_code health_check(const struct health *h, enum health_route_kind kind,
			     struct error *err);

/*
 * The /metrics text (Prometheus 0.0.4), with the node role:
 *
 *   granary_csi_volumes_staged 2
 *   granary_csi_volume_abnormal{volume="pvc-1"} 0
 *   granary_csi_volume_abnormal{volume="pvc-2"} 1
 *
 * each volume's condition found as node_volumes_health finds it (at most
 * one probe timeout for all). Without the node role the text is empty.
 * ERR_NOMEM (out->failed is set too).
 */
enum error_code health_metrics(const struct health *h, struct metrics_buf *out,
			       struct error *err);

#endif
