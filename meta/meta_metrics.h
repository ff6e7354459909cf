/*
 * meta_metrics.h - what granary-meta's /metrics answers (Prometheus text,
 * served by common/metrics_http.h on metrics.address): the datasets by
 * state, each dataset's size and generation, the live workers and their
 * caches as their heartbeats last reported them, the membership version.
 *
 * Pure: reads a copy of the registry and the membership (each under its
 * own lock, for the time of a copy) and renders it; no RPC.
 *
 *   granary_meta_datasets{state="ready"} 3
 *   granary_meta_dataset_bytes{dataset="imagenet"} 144000000000
 *   granary_meta_workers 4
 *   granary_meta_worker_used_bytes{worker="node-a"} 52428800
 *
 * In Kubernetes, also how the workers' identity tokens were judged:
 *
 *   granary_meta_worker_token_checks_total{by="review"} 12
 *   granary_meta_worker_token_checks_total{by="kept"} 340
 *   granary_meta_worker_token_checks_total{by="kept_stale"} 0
 *
 * kept_stale counts heartbeats answered from a review older than its trust
 * for want of an answer from the Kubernetes API (meta/worker_identity.h,
 * Outages): non-zero while the apiserver is away, slow or refusing meta.
 */
#ifndef GRANARY_META_META_METRICS_H
#define GRANARY_META_META_METRICS_H

#include "common/error.h"
#include "common/metrics.h"
#include "meta/membership.h"
#include "meta/registry.h"
#include "meta/worker_identity.h"

/* Appends the families to out; identity NULL (no Kubernetes): no token
 * checks family. ERR_NOMEM (out->failed set too). */
enum error_code meta_metrics_render(struct registry *reg, struct membership *mem,
				    struct worker_identity *identity, struct metrics_buf *out,
				    struct error *err);

#endif
