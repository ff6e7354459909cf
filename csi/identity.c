/*
 * identity.c - plugin name, version and readiness.
 */
#include "csi/identity.h"

#include "common/version.h"

const char *identity_vendor_version(void)
{
	return GRANARY_VERSION;
}

/* ListWorkers is meta's cheapest call: no registry lock, no dataset. */
bool identity_probe(struct meta_client *meta, struct error *err)
{
	Granary__V1__ListWorkersReply *reply = NULL;
	struct error local;

	if (!meta)
		return true;
	if (meta_client_list_workers(meta, &reply, err ? err : &local) != ERR_OK)
		return false;
	granary__v1__list_workers_reply__free_unpacked(reply, NULL);
	return true;
}
