/*
 * methods.h - the wire names of granary.v1.Meta's methods, shared by the
 * service (meta/service.c), its client (meta/meta_client.c) and the table
 * of which role may call which (meta/meta_auth.c), so that a client links
 * none of the server.
 */
#ifndef GRANARY_META_METHODS_H
#define GRANARY_META_METHODS_H

#define META_METHOD_REGISTER "/granary.v1.Meta/RegisterDataset"
#define META_METHOD_GET "/granary.v1.Meta/GetDataset"
#define META_METHOD_LIST "/granary.v1.Meta/ListDatasets"
#define META_METHOD_DELETE "/granary.v1.Meta/DeleteDataset"
#define META_METHOD_REFRESH "/granary.v1.Meta/RefreshDataset"
#define META_METHOD_SNAPSHOT "/granary.v1.Meta/GetSnapshot"
#define META_METHOD_HEARTBEAT "/granary.v1.Meta/Heartbeat"
#define META_METHOD_WORKERS "/granary.v1.Meta/ListWorkers"

#endif
