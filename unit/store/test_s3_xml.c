/*
 * test_s3_xml.c - ListObjectsV2 and <Error> parsing, and S3 timestamps.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/s3_xml.h"

#define NS "http://s3.amazonaws.com/doc/2006-03-01/"

static enum error_code parse(const char *xml, struct store_list_page *page,
			     struct error *err)
{
	error_clear(err);
	return s3_xml_parse_list(xml, strlen(xml), page, err);
}

static void assert_page_empty(const struct store_list_page *page)
{
	ck_assert_ptr_null(page->objects);
	ck_assert_uint_eq(page->nobjects, 0);
	ck_assert_ptr_null(page->prefixes);
	ck_assert_uint_eq(page->nprefixes, 0);
	ck_assert_ptr_null(page->next_token);
}

START_TEST(test_s3_xml_list_parses_aws_page_with_namespace)
{
	static const char xml[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<ListBucketResult xmlns=\"" NS "\">\n"
		"  <Name>data</Name>\n"
		"  <Prefix>train/</Prefix>\n"
		"  <KeyCount>3</KeyCount>\n"
		"  <MaxKeys>3</MaxKeys>\n"
		"  <Delimiter>/</Delimiter>\n"
		"  <IsTruncated>true</IsTruncated>\n"
		"  <Contents>\n"
		"    <Key>train/a.rec</Key>\n"
		"    <LastModified>2026-11-25T12:00:00.000Z</LastModified>\n"
		"    <ETag>&quot;0123456789abcdef0123456789abcdef&quot;</ETag>\n"
		"    <ChecksumAlgorithm>CRC32</ChecksumAlgorithm>\n"
		"    <Size>1048576</Size>\n"
		"    <Owner><ID>abc</ID><DisplayName>me</DisplayName></Owner>\n"
		"    <StorageClass>STANDARD</StorageClass>\n"
		"  </Contents>\n"
		"  <Contents>\n"
		"    <Key>train/b.rec</Key>\n"
		"    <LastModified>2026-11-25T12:00:01Z</LastModified>\n"
		"    <ETag>\"fedcba98765432100123456789abcdef-3\"</ETag>\n"
		"    <Size>18446744073709551615</Size>\n"
		"    <StorageClass>STANDARD</StorageClass>\n"
		"  </Contents>\n"
		"  <CommonPrefixes><Prefix>train/shard-0/</Prefix></CommonPrefixes>\n"
		"  <CommonPrefixes><Prefix>train/shard-1/</Prefix></CommonPrefixes>\n"
		"  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>\n"
		"  <StartAfter>train/</StartAfter>\n"
		"</ListBucketResult>\n";
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(parse(xml, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, 2);
	ck_assert_str_eq(page.objects[0].key, "train/a.rec");
	ck_assert_uint_eq(page.objects[0].size, 1048576);
	ck_assert_str_eq(page.objects[0].etag, "0123456789abcdef0123456789abcdef");
	ck_assert_int_eq(page.objects[0].mtime, 1795608000);
	ck_assert_str_eq(page.objects[1].key, "train/b.rec");
	ck_assert_uint_eq(page.objects[1].size, UINT64_MAX);
	ck_assert_str_eq(page.objects[1].etag, "fedcba98765432100123456789abcdef-3");
	ck_assert_int_eq(page.objects[1].mtime, 1795608001);
	ck_assert_uint_eq(page.nprefixes, 2);
	ck_assert_str_eq(page.prefixes[0], "train/shard-0/");
	ck_assert_str_eq(page.prefixes[1], "train/shard-1/");
	ck_assert_ptr_nonnull(page.next_token);
	ck_assert_str_eq(page.next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
	store_list_page_release(&page);
}
END_TEST

START_TEST(test_s3_xml_list_parses_page_without_namespace)
{
	static const char xml[] =
		"<ListBucketResult><IsTruncated>false</IsTruncated>"
		"<Contents><Key>k</Key><Size>7</Size><ETag>e</ETag></Contents>"
		"</ListBucketResult>";
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(parse(xml, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, 1);
	ck_assert_str_eq(page.objects[0].key, "k");
	ck_assert_uint_eq(page.objects[0].size, 7);
	ck_assert_str_eq(page.objects[0].etag, "e");
	ck_assert_int_eq(page.objects[0].mtime, 0);
	ck_assert_ptr_null(page.next_token);
	store_list_page_release(&page);
}
END_TEST

START_TEST(test_s3_xml_list_ignores_token_when_not_truncated)
{
	static const char xml[] =
		"<ListBucketResult xmlns=\"" NS "\">"
		"<NextContinuationToken>stale</NextContinuationToken>"
		"<IsTruncated>false</IsTruncated>"
		"</ListBucketResult>";
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(parse(xml, &page, &err), ERR_OK);
	ck_assert_ptr_null(page.next_token);
	store_list_page_release(&page);
}
END_TEST

START_TEST(test_s3_xml_list_rejects_truncated_page_without_token)
{
	static const char xml[] =
		"<ListBucketResult><IsTruncated>true</IsTruncated>"
		"<Contents><Key>k</Key><Size>1</Size></Contents></ListBucketResult>";
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(parse(xml, &page, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "NextContinuationToken"));
	assert_page_empty(&page);
}
END_TEST

START_TEST(test_s3_xml_list_ignores_request_prefix_outside_common_prefixes)
{
	static const char xml[] =
		"<ListBucketResult><Prefix>req/</Prefix><IsTruncated>false</IsTruncated>"
		"<Contents><Key>req/x</Key><Size>1</Size></Contents></ListBucketResult>";
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(parse(xml, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nprefixes, 0);
	ck_assert_uint_eq(page.nobjects, 1);
	store_list_page_release(&page);
}
END_TEST

START_TEST(test_s3_xml_list_decodes_url_encoded_keys_after_the_fact)
{
	/* EncodingType after Contents, as some services send it. */
	static const char xml[] =
		"<ListBucketResult xmlns=\"" NS "\">"
		"<Contents><Key>dir/with+space%2Bplus%25pct</Key><Size>1</Size></Contents>"
		"<Contents><Key>caf%C3%A9/%E6%97%A5%E6%9C%AC.txt</Key><Size>2</Size></Contents>"
		"<CommonPrefixes><Prefix>a%20b/</Prefix></CommonPrefixes>"
		"<EncodingType>url</EncodingType>"
		"<IsTruncated>false</IsTruncated>"
		"</ListBucketResult>";
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(parse(xml, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, 2);
	ck_assert_str_eq(page.objects[0].key, "dir/with space+plus%pct");
	ck_assert_str_eq(page.objects[1].key, "caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac.txt");
	ck_assert_uint_eq(page.nprefixes, 1);
	ck_assert_str_eq(page.prefixes[0], "a b/");
	store_list_page_release(&page);
}
END_TEST

START_TEST(test_s3_xml_list_keeps_keys_verbatim_without_encoding_type)
{
	static const char xml[] =
		"<ListBucketResult><IsTruncated>false</IsTruncated>"
		"<Contents><Key> a+b%20c </Key><Size>1</Size></Contents>"
		"</ListBucketResult>";
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(parse(xml, &page, &err), ERR_OK);
	ck_assert_str_eq(page.objects[0].key, " a+b%20c ");
	store_list_page_release(&page);
}
END_TEST

START_TEST(test_s3_xml_list_rejects_malformed_percent_escape)
{
	static const char *bad[] = { "x%zz", "x%2", "x%00y" };
	struct store_list_page page;
	struct error err;
	char xml[512];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(xml, sizeof(xml),
			 "<ListBucketResult><EncodingType>url</EncodingType>"
			 "<Contents><Key>%s</Key><Size>1</Size></Contents>"
			 "</ListBucketResult>", bad[i]);
		ck_assert_int_eq(parse(xml, &page, &err), ERR_INVALID);
		ck_assert_ptr_nonnull(strstr(err.msg, "url-encoded"));
		assert_page_empty(&page);
	}
}
END_TEST

START_TEST(test_s3_xml_list_decodes_entities_in_keys)
{
	static const char xml[] =
		"<ListBucketResult><Contents><Key>a&amp;b&lt;c&gt;&apos;&#233;</Key>"
		"<Size>1</Size><ETag>&quot;&quot;</ETag></Contents></ListBucketResult>";
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(parse(xml, &page, &err), ERR_OK);
	ck_assert_str_eq(page.objects[0].key, "a&b<c>'\xc3\xa9");
	ck_assert_str_eq(page.objects[0].etag, "");
	store_list_page_release(&page);
}
END_TEST

START_TEST(test_s3_xml_list_accumulates_text_split_across_chunks)
{
	/* Character references and CDATA make expat deliver text in pieces. */
	static const char xml[] =
		"<ListBucketResult><Contents><Key>part1&amp;<![CDATA[part2]]>&#x41;part3</Key>"
		"<Size>1<!-- comment -->2</Size></Contents></ListBucketResult>";
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(parse(xml, &page, &err), ERR_OK);
	ck_assert_str_eq(page.objects[0].key, "part1&part2Apart3");
	ck_assert_uint_eq(page.objects[0].size, 12);
	store_list_page_release(&page);
}
END_TEST

START_TEST(test_s3_xml_list_grows_arrays_past_many_entries)
{
	size_t n = 2500;
	size_t cap = n * 160 + 128;
	char *xml = malloc(cap);
	size_t len = 0;
	struct store_list_page page;
	struct error err;

	ck_assert_ptr_nonnull(xml);
	len += (size_t)snprintf(xml + len, cap - len, "<ListBucketResult>");
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(xml + len, cap - len,
					"<Contents><Key>k%05zu</Key><Size>%zu</Size></Contents>"
					"<CommonPrefixes><Prefix>p%05zu/</Prefix></CommonPrefixes>",
					i, i, i);
	len += (size_t)snprintf(xml + len, cap - len, "</ListBucketResult>");
	ck_assert_uint_lt(len, cap);

	ck_assert_int_eq(s3_xml_parse_list(xml, len, &page, &err), ERR_OK);
	ck_assert_uint_eq(page.nobjects, n);
	ck_assert_uint_eq(page.nprefixes, n);
	ck_assert_str_eq(page.objects[n - 1].key, "k02499");
	ck_assert_uint_eq(page.objects[1234].size, 1234);
	ck_assert_str_eq(page.prefixes[0], "p00000/");
	ck_assert_str_eq(page.prefixes[n - 1], "p02499/");
	store_list_page_release(&page);
	free(xml);
}
END_TEST

START_TEST(test_s3_xml_list_parses_empty_result)
{
	static const char xml[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<ListBucketResult xmlns=\"" NS "\"><Name>data</Name><Prefix>none/</Prefix>"
		"<KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>"
		"</ListBucketResult>";
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(parse(xml, &page, &err), ERR_OK);
	assert_page_empty(&page);
	store_list_page_release(&page);
}
END_TEST

START_TEST(test_s3_xml_list_reports_malformed_xml_with_line)
{
	static const char xml[] =
		"<ListBucketResult>\n"
		"<Contents><Key>a</Key><Size>1</Size></Contents>\n"
		"<Contents><Key>b</Size></Contents>\n"
		"</ListBucketResult>\n";
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(parse(xml, &page, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "line 3"));
	ck_assert_ptr_nonnull(strstr(err.msg, "mismatched tag"));
	assert_page_empty(&page);
}
END_TEST

START_TEST(test_s3_xml_list_rejects_empty_and_truncated_bodies)
{
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(s3_xml_parse_list("", 0, &page, &err), ERR_INVALID);
	assert_page_empty(&page);
	ck_assert_int_eq(parse("<ListBucketResult><Contents><Key>a</Key>", &page, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "line 1"));
	assert_page_empty(&page);
}
END_TEST

START_TEST(test_s3_xml_list_rejects_other_root_element)
{
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(parse("<Error><Code>NoSuchBucket</Code></Error>", &page, &err),
			 ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "ListBucketResult"));
	assert_page_empty(&page);
}
END_TEST

START_TEST(test_s3_xml_list_rejects_non_numeric_size)
{
	static const char *bad[] = { "12a", "", "-1", "+5", "0x10", "18446744073709551616" };
	struct store_list_page page;
	struct error err;
	char xml[512];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(xml, sizeof(xml),
			 "<ListBucketResult><Contents><Key>ok</Key><Size>1</Size></Contents>\n"
			 "<Contents><Key>bad</Key><Size>%s</Size></Contents></ListBucketResult>",
			 bad[i]);
		ck_assert_int_eq(parse(xml, &page, &err), ERR_INVALID);
		ck_assert_ptr_nonnull(strstr(err.msg, "Size"));
		ck_assert_ptr_nonnull(strstr(err.msg, "line 2"));
		assert_page_empty(&page);
	}
}
END_TEST

START_TEST(test_s3_xml_list_rejects_contents_without_key_or_size)
{
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(parse("<ListBucketResult><Contents><Size>1</Size></Contents>"
			       "</ListBucketResult>", &page, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "without Key"));
	assert_page_empty(&page);
	ck_assert_int_eq(parse("<ListBucketResult><Contents><Key>a</Key></Contents>"
			       "</ListBucketResult>", &page, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "without Size"));
	assert_page_empty(&page);
}
END_TEST

START_TEST(test_s3_xml_list_rejects_bad_truncation_flag_and_time)
{
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(parse("<ListBucketResult><IsTruncated>maybe</IsTruncated>"
			       "</ListBucketResult>", &page, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "IsTruncated"));
	assert_page_empty(&page);
	ck_assert_int_eq(parse("<ListBucketResult><Contents><Key>a</Key><Size>1</Size>"
			       "<LastModified>yesterday</LastModified></Contents>"
			       "</ListBucketResult>", &page, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "LastModified"));
	assert_page_empty(&page);
}
END_TEST

START_TEST(test_s3_xml_list_rejects_overlong_etag)
{
	char etag[120];
	char xml[512];
	struct store_list_page page;
	struct error err;

	memset(etag, 'e', sizeof(etag) - 1);
	etag[sizeof(etag) - 1] = '\0';
	snprintf(xml, sizeof(xml), "<ListBucketResult><Contents><Key>a</Key><Size>1</Size>"
		 "<ETag>%s</ETag></Contents></ListBucketResult>", etag);
	ck_assert_int_eq(parse(xml, &page, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "ETag"));
	assert_page_empty(&page);
}
END_TEST

START_TEST(test_s3_xml_list_refuses_doctype)
{
	static const char xml[] =
		"<?xml version=\"1.0\"?>\n"
		"<!DOCTYPE ListBucketResult [<!ENTITY x \"boom\">]>\n"
		"<ListBucketResult><Contents><Key>&x;</Key><Size>1</Size></Contents>"
		"</ListBucketResult>";
	struct store_list_page page;
	struct error err;

	ck_assert_int_eq(parse(xml, &page, &err), ERR_INVALID);
	ck_assert_ptr_nonnull(strstr(err.msg, "document type"));
	assert_page_empty(&page);
}
END_TEST

START_TEST(test_s3_xml_error_copies_code_and_message)
{
	static const char xml[] =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>"
		"<Key>train/a.rec</Key><RequestId>4442587FB7D0A2F9</RequestId></Error>";
	char code[32];
	char message[128];

	ck_assert_int_eq(s3_xml_parse_error(xml, strlen(xml), code, sizeof(code), message,
					    sizeof(message)), ERR_OK);
	ck_assert_str_eq(code, "NoSuchKey");
	ck_assert_str_eq(message, "The specified key does not exist.");
}
END_TEST

START_TEST(test_s3_xml_error_truncates_on_character_boundary)
{
	/* "é" is two bytes; a 4-byte buffer holds "ab" + NUL, not half of it. */
	static const char xml[] =
		"<Error><Code>SlowDown</Code><Message>ab\xc3\xa9z</Message></Error>";
	char code[5];
	char message[4];

	ck_assert_int_eq(s3_xml_parse_error(xml, strlen(xml), code, sizeof(code), message,
					    sizeof(message)), ERR_OK);
	ck_assert_str_eq(code, "Slow");
	ck_assert_str_eq(message, "ab");
}
END_TEST

START_TEST(test_s3_xml_error_leaves_absent_fields_empty)
{
	static const char xml[] = "<Error xmlns=\"" NS "\"><Code>AccessDenied</Code></Error>";
	char code[32];
	char message[32] = "garbage";

	ck_assert_int_eq(s3_xml_parse_error(xml, strlen(xml), code, sizeof(code), message,
					    sizeof(message)), ERR_OK);
	ck_assert_str_eq(code, "AccessDenied");
	ck_assert_str_eq(message, "");
}
END_TEST

START_TEST(test_s3_xml_error_rejects_non_error_documents)
{
	static const char *bad[] = {
		"<ListBucketResult></ListBucketResult>",
		"<Error><Code>x</Code>",
		"<html><body>502 Bad Gateway</body></html>",
		"",
	};
	char code[32];
	char message[32];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		strcpy(code, "junk");
		ck_assert_int_eq(s3_xml_parse_error(bad[i], strlen(bad[i]), code, sizeof(code),
						    message, sizeof(message)), ERR_INVALID);
		ck_assert_str_eq(code, "");
		ck_assert_str_eq(message, "");
	}
}
END_TEST

START_TEST(test_s3_xml_time_parses_s3_formats)
{
	ck_assert_int_eq(s3_xml_parse_time("1970-01-01T00:00:00Z"), 0);
	ck_assert_int_eq(s3_xml_parse_time("2026-11-25T12:00:00.000Z"), 1795608000);
	ck_assert_int_eq(s3_xml_parse_time("2026-11-25T12:00:00Z"), 1795608000);
	ck_assert_int_eq(s3_xml_parse_time("2026-11-25T12:00:00"), 1795608000);
	ck_assert_int_eq(s3_xml_parse_time("2026-11-25T12:00:59.999999Z"), 1795608059);
	ck_assert_int_eq(s3_xml_parse_time("2024-02-29T23:59:59Z"), 1709251199);
	ck_assert_int_eq(s3_xml_parse_time("2000-03-01T00:00:00Z"), 951868800);
}
END_TEST

START_TEST(test_s3_xml_time_rejects_malformed)
{
	static const char *bad[] = {
		"", "2026-11-25", "2026-11-25 12:00:00Z", "2026-13-01T00:00:00Z",
		"2026-00-01T00:00:00Z", "2026-02-29T00:00:00Z", "2026-04-31T00:00:00Z",
		"2026-11-25T24:00:00Z", "2026-11-25T12:60:00Z", "2026-11-25T12:00:00.Z",
		"2026-11-25T12:00:00ZZ", "2026-11-25T12:00:00+01:00", "26-11-25T12:00:00Z",
		"2026-11-25T12:0:00Z", "2026-1a-25T12:00:00Z",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(s3_xml_parse_time(bad[i]) == -1, "accepted '%s'", bad[i]);
	ck_assert_int_eq(s3_xml_parse_time(NULL), -1);
}
END_TEST

static Suite *s3_xml_suite(void)
{
	Suite *s = suite_create("s3_xml");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_s3_xml_list_parses_aws_page_with_namespace);
	tcase_add_test(tc, test_s3_xml_list_parses_page_without_namespace);
	tcase_add_test(tc, test_s3_xml_list_ignores_token_when_not_truncated);
	tcase_add_test(tc, test_s3_xml_list_rejects_truncated_page_without_token);
	tcase_add_test(tc, test_s3_xml_list_ignores_request_prefix_outside_common_prefixes);
	tcase_add_test(tc, test_s3_xml_list_decodes_url_encoded_keys_after_the_fact);
	tcase_add_test(tc, test_s3_xml_list_keeps_keys_verbatim_without_encoding_type);
	tcase_add_test(tc, test_s3_xml_list_rejects_malformed_percent_escape);
	tcase_add_test(tc, test_s3_xml_list_decodes_entities_in_keys);
	tcase_add_test(tc, test_s3_xml_list_accumulates_text_split_across_chunks);
	tcase_add_test(tc, test_s3_xml_list_grows_arrays_past_many_entries);
	tcase_add_test(tc, test_s3_xml_list_parses_empty_result);
	tcase_add_test(tc, test_s3_xml_list_reports_malformed_xml_with_line);
	tcase_add_test(tc, test_s3_xml_list_rejects_empty_and_truncated_bodies);
	tcase_add_test(tc, test_s3_xml_list_rejects_other_root_element);
	tcase_add_test(tc, test_s3_xml_list_rejects_non_numeric_size);
	tcase_add_test(tc, test_s3_xml_list_rejects_contents_without_key_or_size);
	tcase_add_test(tc, test_s3_xml_list_rejects_bad_truncation_flag_and_time);
	tcase_add_test(tc, test_s3_xml_list_rejects_overlong_etag);
	tcase_add_test(tc, test_s3_xml_list_refuses_doctype);
	tcase_add_test(tc, test_s3_xml_error_copies_code_and_message);
	tcase_add_test(tc, test_s3_xml_error_truncates_on_character_boundary);
	tcase_add_test(tc, test_s3_xml_error_leaves_absent_fields_empty);
	tcase_add_test(tc, test_s3_xml_error_rejects_non_error_documents);
	tcase_add_test(tc, test_s3_xml_time_parses_s3_formats);
	tcase_add_test(tc, test_s3_xml_time_rejects_malformed);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(s3_xml_suite());
	int failed = 0;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
