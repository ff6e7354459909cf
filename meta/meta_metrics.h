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
 */
#ifndef GRANARY_META_META_METRICS_H
#define GRANARY_META_META_METRICS_H

#include "common/error.h"
#include "common/metrics.h"
#include "meta/membership.h"
#include "meta/registry.h"

/* Appends the families to out. ERR_NOMEM (out->failed set too). */
enum error_code meta_metrics_render(struct registry *reg, struct membership *mem,
				    struct metrics_buf *out, struct error *err);

#endif
