/*
 * test_url.c - the worker block URL as the mount writes it and the
 * checksum header of the worker's answer (block/url.c). That the
 * worker's router reads these back is unit/cache/test_http.c's.
 */
#include <stdlib.h>
#include <string.h>

#include "block/url.h"
#include "unit/check_main.h"

START_TEST(test_block_url_path_and_query)
{
	char path[BLOCK_URL_PATH_MAX];
	char *q = NULL;

	ck_assert_int_eq(block_url_path("imagenet", 42, path, sizeof(path)), 22);
	ck_assert_str_eq(path, "/v1/blocks/imagenet/42");
	q = block_url_query("train/a b+c%d.rec", "\"e1\"", 4, false);
	ck_assert_str_eq(q, "key=train%2Fa%20b%2Bc%25d.rec&etag=%22e1%22&readahead=4");
	free(q);
	q = block_url_query("x~y_z-1.", "e", 0, true);
	ck_assert_str_eq(q, "key=x~y_z-1.&etag=e&readahead=0&verify=1");
	free(q);
	/* a byte above 0x7f is escaped too, as two upper-case digits */
	q = block_url_query("\xc3\xa9", "e", 0, false);
	ck_assert_str_eq(q, "key=%C3%A9&etag=e&readahead=0");
	free(q);
}
END_TEST

/* cache=ID names the client's cache directory; "" or NULL adds nothing;
 * a buffer too small says how much is needed and is left empty. */
START_TEST(test_block_url_query_names_the_cache_directory)
{
	char out[192];
	size_t need;

	need = block_url_query_into(out, sizeof(out), "a", "e", 0, 0, 2, false,
				    "0123456789abcdef0123456789abcdef");
	ck_assert_str_eq(out, "key=a&etag=e&readahead=2&cache=0123456789abcdef0123456789abcdef");
	ck_assert_uint_eq(need, strlen(out));
	block_url_query_into(out, sizeof(out), "a", "e", 0, 0, 0, true, "");
	ck_assert_str_eq(out, "key=a&etag=e&readahead=0&verify=1");
	block_url_query_into(out, sizeof(out), "a", "e", 0, 0, 0, false, NULL);
	ck_assert_str_eq(out, "key=a&etag=e&readahead=0");
	need = block_url_query_into(out, 20, "a", "e", 0, 0, 0, false,
				    "0123456789abcdef0123456789abcdef");
	ck_assert_uint_gt(need, 20);
	ck_assert_str_eq(out, "");
}
END_TEST

/* size=S and bs=B follow the etag when the object's size and the
 * client's block size are known, and the longest query still fits the
 * length asked for first. */
START_TEST(test_block_url_query_carries_the_object_and_block_sizes)
{
	char out[256];
	size_t need;

	need = block_url_query_into(out, sizeof(out), "a", "e", 112640, 0, 3, false, NULL);
	ck_assert_str_eq(out, "key=a&etag=e&size=112640&readahead=3");
	ck_assert_uint_eq(need, strlen(out));
	need = block_url_query_into(out, sizeof(out), "a", "e", 0, 4194304, 3, false, NULL);
	ck_assert_str_eq(out, "key=a&etag=e&bs=4194304&readahead=3");
	need = block_url_query_into(NULL, 0, "a", "e", UINT64_MAX, UINT64_MAX, UINT32_MAX, true,
				    "0123456789abcdef0123456789abcdef");
	ck_assert_uint_le(block_url_query_into(out, need, "a", "e", UINT64_MAX, UINT64_MAX,
					       UINT32_MAX, true, "0123456789abcdef0123456789abcdef"),
			  need - 1);
	ck_assert_str_eq(out, "key=a&etag=e&size=18446744073709551615&bs=18446744073709551615"
			      "&readahead=4294967295&verify=1&cache=0123456789abcdef0123456789abcdef");
}
END_TEST

START_TEST(test_block_crc_header_round_trips_and_refuses_bad_values)
{
	enum { BLOCK = 1u << 20, LEN = 300000 };
	static char data[LEN];
	struct block_sums sums, back;
	char value[BLOCK_CRC_HEADER_MAX];
	struct error err;

	for (size_t i = 0; i < LEN; i++)
		data[i] = (char)(i * 31 + (i >> 9));
	block_sums_of(data, LEN, BLOCK, &sums);
	/* bytes 65536..299999: chunks 1..4, the last one short */
	block_crc_header_format(&sums, 65536, LEN - 65536, value);
	ck_assert_msg(strncmp(value, "65536:", 6) == 0 && strlen(value) == 6 + 4 * 9 - 1, "%s",
		      value);
	memset(&back, 0, sizeof(back));
	ck_assert_int_eq(block_crc_header_parse(value, 65536, 65536, LEN - 65536, LEN, &back, &err),
			 ERR_OK);
	for (int i = 1; i <= 4; i++)
		ck_assert_uint_eq(back.crc[i], sums.crc[i]);
	ck_assert(block_sums_check(&back, 65536, data + 65536, LEN - 65536));
	data[70000] ^= 1;
	ck_assert(!block_sums_check(&back, 65536, data + 65536, LEN - 65536));
	/* one chunk too few or too many, another chunk size, a bad digit */
	ck_assert_int_eq(block_crc_header_parse(value, 65536, 0, LEN, LEN, &back, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "expected 5 checksums"));
	ck_assert_int_eq(block_crc_header_parse(value, 65536, 131072, LEN - 131072, LEN, &back, &err),
			 ERR_INVALID);
	ck_assert_int_eq(block_crc_header_parse(value, 131072, 65536, LEN - 65536, LEN, &back, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "chunk size 131072"));
	value[8] = 'g';
	ck_assert_int_eq(block_crc_header_parse(value, 65536, 65536, LEN - 65536, LEN, &back, &err),
			 ERR_INVALID);
	ck_assert_int_eq(block_crc_header_parse(NULL, 65536, 0, 10, LEN, &back, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, BLOCK_CRC_HEADER));
}
END_TEST

START_TEST(test_block_url_origin_names_the_workers_and_dials_the_address)
{
	char origin[BLOCK_URL_ORIGIN_MAX], connect[BLOCK_URL_ORIGIN_MAX];
	struct error err;

	ck_assert_int_eq(block_url_origin("10.0.0.7:7480", false, "w.ns.svc", origin,
					  sizeof(origin), connect, sizeof(connect), &err), ERR_OK);
	ck_assert_str_eq(origin, "http://10.0.0.7:7480");
	ck_assert_str_eq(connect, "");
	ck_assert_int_eq(block_url_origin("10.0.0.7:7480", true, "w.ns.svc", origin,
					  sizeof(origin), connect, sizeof(connect), &err), ERR_OK);
	ck_assert_str_eq(origin, "https://w.ns.svc:7480");
	ck_assert_str_eq(connect, "w.ns.svc:7480:10.0.0.7:7480");
	ck_assert_int_eq(block_url_origin("[fd00::7]:7480", true, "w.ns.svc", origin,
					  sizeof(origin), connect, sizeof(connect), &err), ERR_OK);
	ck_assert_str_eq(connect, "w.ns.svc:7480:[fd00::7]:7480");
	ck_assert_int_eq(block_url_origin("10.0.0.7:7480", true, NULL, origin, sizeof(origin),
					  connect, sizeof(connect), &err), ERR_OK);
	ck_assert_str_eq(origin, "https://10.0.0.7:7480");
	ck_assert_str_eq(connect, "");
	ck_assert_int_eq(block_url_origin("unix:///run/w.sock", true, "w.ns.svc", origin,
					  sizeof(origin), connect, sizeof(connect), &err), ERR_OK);
	ck_assert_str_eq(origin, "https://w.ns.svc");
	ck_assert_int_eq(block_url_origin("no-port", true, "w.ns.svc", origin, sizeof(origin),
					  connect, sizeof(connect), &err), ERR_INVALID);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("block_url");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_block_url_path_and_query);
	tcase_add_test(tc, test_block_url_query_names_the_cache_directory);
	tcase_add_test(tc, test_block_url_query_carries_the_object_and_block_sizes);
	tcase_add_test(tc, test_block_crc_header_round_trips_and_refuses_bad_values);
	tcase_add_test(tc, test_block_url_origin_names_the_workers_and_dials_the_address);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
