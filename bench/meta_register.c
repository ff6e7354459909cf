/*
 * meta_register.c - registers a dataset in granary-meta for the cluster
 * runs of bench/compare.sh (what granary-csi's CreateVolume does), with the
 * endpoint and credentials left empty so that meta, the workers and the
 * mounts each use their own store settings. Waits for meta to answer (it
 * may still be starting) and for the first generation:
 *   dataset=NAME generation=1 files=N dirs=D bytes=B seconds=S
 */
#include <stdio.h>
#include <string.h>

#include "bench/bench_tool.h"
#include "common/retry.h"
#include "meta/meta_client.h"

int bench_register(const struct bench_settings *s, const char *name)
{
	struct meta_client_options opt = { .timeout_ms = 10000, .build_timeout_ms = 600000,
					   .wait_for_ready = true, .key_file = s->meta_key_file,
					   .role = META_ROLE_CSI };
	Granary__V1__DatasetSpec spec;
	Granary__V1__DatasetOptions o;
	Granary__V1__Dataset *d = NULL;
	struct meta_client *c = NULL;
	struct tls_material tls = { 0 };
	struct error err;
	double t0 = bench_now();
	enum error_code rc;

	if (!*s->source) {
		fprintf(stderr, "granary-bench: register needs --source\n");
		return 2;
	}
	granary__v1__dataset_spec__init(&spec);
	granary__v1__dataset_options__init(&o);
	spec.name = (char *)name;
	spec.source_uri = s->source;
	spec.options = &o;
	o.block_size = s->block_size;
	rc = tls_client_load("meta.tls.", &s->meta_tls, &tls, &err);
	opt.tls = &tls;
	if (rc == ERR_OK)
		rc = meta_client_new(s->meta_address, &opt, &c, &err);
	tls_material_release(&tls);
	for (int attempt = 0; rc == ERR_OK; attempt++) {
		rc = meta_client_register(c, &spec, &d, &err);
		if (rc != ERR_UNAVAILABLE || attempt >= 100)
			break;
		retry_sleep_ms(100);
	}
	if (rc != ERR_OK) {
		fprintf(stderr, "granary-bench: register '%s': %s\n", name, err.msg);
		meta_client_free(c);
		return 1;
	}
	printf("dataset=%s generation=%llu files=%llu dirs=%llu bytes=%llu seconds=%.1f\n", name,
	       (unsigned long long)d->generation, (unsigned long long)d->files,
	       (unsigned long long)d->dirs, (unsigned long long)d->bytes, bench_now() - t0);
	granary__v1__dataset__free_unpacked(d, NULL);
	meta_client_free(c);
	return 0;
}
