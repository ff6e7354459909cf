/*
 * health.h - what granary-csi's /healthz, /readyz and /metrics answer, in
 * place of the livenessprobe sidecar and node-driver-registrar's health
 * endpoint: the core, without HTTP (common/metrics_http.h serves it, with
 * the ops health_ops gives).
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
 * alert can fire on a mount that cannot serve, and every staged volume's
 * granary-fuse counters (read from the file each daemon keeps them in,
 * fuse/mountstats.h) with its volume as a label.
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
#include "common/metrics_http.h"
#include "csi/node.h"
#include "csi/registration.h"
#include "meta/meta_client.h"

struct health {
	const char *csi_socket;      /* the CSI endpoint's socket path; NULL or "" for TCP */
	struct meta_client *probe;   /* Probe's client, for /readyz; NULL when the controller role is off */
	struct registration *reg;    /* NULL when registration is off */
	struct node *node;           /* the node plugin, for /metrics; NULL when the node role is off */
};

enum health_check_kind {
	HEALTH_LIVE = 1,  /* GET /healthz */
	HEALTH_READY,     /* GET /readyz */
};

/*
 * Runs the checks of a route. ERR_OK when they pass; ERR_UNAVAILABLE with
 * the first failed check's reason otherwise ("granary-meta does not answer:
 * ...", "the CSI socket '/csi/csi.sock' is gone", "not registered with the
 * kubelet yet ...").
 */
enum error_code health_check(const struct health *h, enum health_check_kind kind,
			     struct error *err);

/*
 * The /metrics text (Prometheus 0.0.4), with the node role:
 *
 *   granary_csi_volumes_staged 2
 *   granary_csi_volume_abnormal{volume="pvc-1"} 0
 *   granary_csi_volume_abnormal{volume="pvc-2"} 1
 *   granary_fuse_reads_total{volume="pvc-1"} 1234
 *   ...
 *
 * each volume's condition found as node_volumes_health finds it (at most
 * one probe timeout for all), then the granary_fuse_* families of the
 * volumes whose daemon keeps counters (node_volumes_stats). Without the
 * node role the text is empty.
 * ERR_NOMEM (out->failed is set too).
 */
enum error_code health_metrics(const struct health *h, struct metrics_buf *out,
			       struct error *err);

/* The ops common/metrics_http.h serves: /healthz, /readyz and /metrics
 * of h, which must outlive the server. */
void health_ops(const struct health *h, struct metrics_http_ops *out);

#endif
