/*
 * test_granary_proto.c - the generated protobuf-c code packs and unpacks
 * a dataset spec with the field numbers of api/granary.proto.
 */
#include <string.h>

#include "granary.pb-c.h"
#include "unit/check_main.h"

START_TEST(test_granary_proto_round_trips_dataset_spec)
{
	Granary__V1__DatasetOptions opts = GRANARY__V1__DATASET_OPTIONS__INIT;
	Granary__V1__DatasetSpec spec = GRANARY__V1__DATASET_SPEC__INIT;
	Granary__V1__DatasetSpec *back;
	uint8_t buf[256];
	size_t n;

	opts.block_size = 4u << 20;
	opts.cache_policy = GRANARY__V1__CACHE_POLICY__CACHE_POLICY_SCAN_RESISTANT;
	opts.pin = 1;
	spec.name = "imagenet";
	spec.source_uri = "s3://data/imagenet/";
	spec.options = &opts;
	n = granary__v1__dataset_spec__pack(&spec, buf);
	ck_assert_uint_eq(n, granary__v1__dataset_spec__get_packed_size(&spec));
	/* Field 1 (name), wire type 2: tag byte 0x0a, then the length. */
	ck_assert_uint_eq(buf[0], 0x0a);
	ck_assert_uint_eq(buf[1], strlen("imagenet"));
	back = granary__v1__dataset_spec__unpack(NULL, n, buf);
	ck_assert_ptr_nonnull(back);
	ck_assert_str_eq(back->name, "imagenet");
	ck_assert_str_eq(back->source_uri, "s3://data/imagenet/");
	ck_assert_uint_eq(back->options->block_size, 4u << 20);
	ck_assert_int_eq(back->options->cache_policy,
			 GRANARY__V1__CACHE_POLICY__CACHE_POLICY_SCAN_RESISTANT);
	ck_assert(back->options->pin);
	granary__v1__dataset_spec__free_unpacked(back, NULL);
	/* Garbage does not unpack. */
	memset(buf, 0xff, 8);
	ck_assert_ptr_null(granary__v1__dataset_spec__unpack(NULL, 8, buf));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("granary_proto");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_granary_proto_round_trips_dataset_spec);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
