/*
 * identity.h - the CSI Identity service's core: who the plugin is and
 * whether it can serve. No gRPC here (csi/service.c adapts it).
 */
#ifndef GRANARY_CSI_IDENTITY_H
#define GRANARY_CSI_IDENTITY_H

#include <stdbool.h>

#include "common/error.h"
#include "meta/meta_client.h"

/* The driver name kubelet and StorageClasses use (provisioner:). */
#define IDENTITY_PLUGIN_NAME "csi.granary.io"

/* The plugin's version (the project's), for GetPluginInfo. */
const char *identity_vendor_version(void);

/*
 * Probe: true when granary-meta answers within its client's deadline (the
 * caller gives a client with a short timeout, a few seconds). A plugin
 * whose meta is unreachable is alive but not ready: it cannot register a
 * dataset (controller) or start a new mount (node). err (may be NULL) gets
 * the reason when not ready; nothing secret is in it.
 */
bool identity_probe(struct meta_client *meta, struct error *err);

#endif
