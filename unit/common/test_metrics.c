/*
 * test_metrics.c - Prometheus text rendering: the exact lines of counters,
 * gauges and histograms, number formatting, and concurrent observations.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/metrics.h"
#include "unit/check_main.h"

START_TEST(test_metrics_counter_and_gauge_exact_text)
{
	struct metrics_buf b = { 0 };

	metrics_render_counter(&b, "granary_worker_hits_total", "blocks served from the cache", 42);
	metrics_render_gauge(&b, "granary_worker_used_bytes", "bytes held",
			     10737418240ull);
	ck_assert_int_eq(b.failed, 0);
	ck_assert_str_eq(b.data, "# HELP granary_worker_hits_total blocks served from the cache\n"
				 "# TYPE granary_worker_hits_total counter\n"
				 "granary_worker_hits_total 42\n"
				 "# HELP granary_worker_used_bytes bytes held\n"
				 "# TYPE granary_worker_used_bytes gauge\n"
				 "granary_worker_used_bytes 10737418240\n");
	ck_assert_uint_eq(b.len, strlen(b.data));
	metrics_buf_release(&b);
}
END_TEST

START_TEST(test_metrics_histogram_exact_text_is_cumulative)
{
	static const double bounds[] = { 0.001, 0.01, 0.1, 1, 10 };
	struct metrics_histogram h;
	struct metrics_buf b = { 0 };

	ck_assert_int_eq(metrics_histogram_init(&h, bounds, 5), ERR_OK);
	metrics_histogram_observe(&h, 0.0005);
	metrics_histogram_observe(&h, 0.001); /* on a bound: le is <= */
	metrics_histogram_observe(&h, 0.05);
	metrics_histogram_observe(&h, 0.25);
	metrics_histogram_observe(&h, 42);
	metrics_render_histogram(&b, "granary_worker_fetch_seconds", "fetch time", &h);
	ck_assert_str_eq(b.data, "# HELP granary_worker_fetch_seconds fetch time\n"
				 "# TYPE granary_worker_fetch_seconds histogram\n"
				 "granary_worker_fetch_seconds_bucket{le=\"0.001\"} 2\n"
				 "granary_worker_fetch_seconds_bucket{le=\"0.01\"} 2\n"
				 "granary_worker_fetch_seconds_bucket{le=\"0.1\"} 3\n"
				 "granary_worker_fetch_seconds_bucket{le=\"1\"} 4\n"
				 "granary_worker_fetch_seconds_bucket{le=\"10\"} 4\n"
				 "granary_worker_fetch_seconds_bucket{le=\"+Inf\"} 5\n"
				 "granary_worker_fetch_seconds_sum 42.3015\n"
				 "granary_worker_fetch_seconds_count 5\n");
	metrics_buf_release(&b);
	metrics_histogram_release(&h);
}
END_TEST

START_TEST(test_metrics_empty_histogram_renders_zeros)
{
	static const double bounds[] = { 0.0025 };
	struct metrics_histogram h;
	struct metrics_buf b = { 0 };

	ck_assert_int_eq(metrics_histogram_init(&h, bounds, 1), ERR_OK);
	metrics_render_histogram(&b, "x_seconds", "h", &h);
	ck_assert_str_eq(b.data, "# HELP x_seconds h\n# TYPE x_seconds histogram\n"
				 "x_seconds_bucket{le=\"0.0025\"} 0\n"
				 "x_seconds_bucket{le=\"+Inf\"} 0\n"
				 "x_seconds_sum 0\nx_seconds_count 0\n");
	metrics_buf_release(&b);
	metrics_histogram_release(&h);
}
END_TEST

START_TEST(test_metrics_histogram_refuses_bad_bounds)
{
	static const double unsorted[] = { 1, 0.5 };
	static const double equal[] = { 1, 1 };
	double many[METRICS_BUCKETS_MAX + 1];
	struct metrics_histogram h;

	for (int i = 0; i <= METRICS_BUCKETS_MAX; i++)
		many[i] = i;
	ck_assert_int_eq(metrics_histogram_init(&h, unsorted, 2), ERR_INVALID);
	ck_assert_int_eq(metrics_histogram_init(&h, equal, 2), ERR_INVALID);
	ck_assert_int_eq(metrics_histogram_init(&h, many, METRICS_BUCKETS_MAX + 1), ERR_INVALID);
}
END_TEST

START_TEST(test_metrics_labeled_samples_escape_their_values)
{
	struct metrics_buf b = { 0 };

	metrics_render_family(&b, "granary_csi_volume_abnormal", "1 while the volume cannot serve",
			      "gauge");
	metrics_render_labeled(&b, "granary_csi_volume_abnormal", "volume", "pvc-1", 0);
	metrics_render_labeled(&b, "granary_csi_volume_abnormal", "volume", "a\\b\"c\nd", 1);
	metrics_render_labeled_double(&b, "granary_csi_fuse_restart_backoff_seconds", "volume",
				      "a\"b", 0.1);
	metrics_render_labeled_double(&b, "granary_csi_fuse_restart_backoff_seconds", "volume",
				      "pvc-1", 10);
	ck_assert_int_eq(b.failed, 0);
	ck_assert_str_eq(b.data,
			 "# HELP granary_csi_volume_abnormal 1 while the volume cannot serve\n"
			 "# TYPE granary_csi_volume_abnormal gauge\n"
			 "granary_csi_volume_abnormal{volume=\"pvc-1\"} 0\n"
			 "granary_csi_volume_abnormal{volume=\"a\\\\b\\\"c\\nd\"} 1\n"
			 "granary_csi_fuse_restart_backoff_seconds{volume=\"a\\\"b\"} 0.1\n"
			 "granary_csi_fuse_restart_backoff_seconds{volume=\"pvc-1\"} 10\n");
	metrics_buf_release(&b);
}
END_TEST

START_TEST(test_metrics_format_double_is_shortest_exact)
{
	static const struct {
		double v;
		const char *text;
	} cases[] = {
		{ 0.001, "0.001" }, { 0.0025, "0.0025" }, { 0.1, "0.1" }, { 2.5, "2.5" },
		{ 10, "10" },       { 0, "0" },           { 1e20, "1e+20" }, { 1.0 / 3, "0.3333333333333333" },
		{ -0.5, "-0.5" },   { 1234567, "1234567" },
	};
	char out[40];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		metrics_format_double(cases[i].v, out, sizeof(out));
		ck_assert_str_eq(out, cases[i].text);
	}
	metrics_format_double(INFINITY, out, sizeof(out));
	ck_assert_str_eq(out, "+Inf");
	metrics_format_double(-INFINITY, out, sizeof(out));
	ck_assert_str_eq(out, "-Inf");
	metrics_format_double(NAN, out, sizeof(out));
	ck_assert_str_eq(out, "NaN");
}
END_TEST

START_TEST(test_metrics_buffer_grows_past_its_first_allocation)
{
	struct metrics_buf b = { 0 };
	char name[64];

	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof(name), "m%04d_total", i);
		metrics_render_counter(&b, name, "a counter with a reasonably long help text", i);
	}
	ck_assert_int_eq(b.failed, 0);
	ck_assert_uint_eq(b.len, strlen(b.data));
	ck_assert_ptr_nonnull(strstr(b.data, "\nm0999_total 999\n"));
	metrics_buf_release(&b);
	ck_assert_ptr_null(b.data);
}
END_TEST

static void *observe_many(void *arg)
{
	struct metrics_histogram *h = arg;

	for (int i = 0; i < 10000; i++)
		metrics_histogram_observe(h, (i % 2) ? 0.5 : 0.002);
	return NULL;
}

START_TEST(test_metrics_histogram_counts_every_concurrent_observation)
{
	static const double bounds[] = { 0.001, 0.01, 1 };
	struct metrics_histogram h;
	struct metrics_buf b = { 0 };
	pthread_t t[4];

	ck_assert_int_eq(metrics_histogram_init(&h, bounds, 3), ERR_OK);
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, observe_many, &h);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	metrics_render_histogram(&b, "c", "h", &h);
	ck_assert_ptr_nonnull(strstr(b.data, "c_bucket{le=\"0.001\"} 0\n"));
	ck_assert_ptr_nonnull(strstr(b.data, "c_bucket{le=\"0.01\"} 20000\n"));
	ck_assert_ptr_nonnull(strstr(b.data, "c_bucket{le=\"1\"} 40000\n"));
	ck_assert_ptr_nonnull(strstr(b.data, "c_count 40000\n"));
	metrics_buf_release(&b);
	metrics_histogram_release(&h);
}
END_TEST

START_TEST(test_metrics_samples_with_several_labels_exact_text)
{
	struct metrics_buf b = { 0 }, l = { 0 }, none = { 0 };

	metrics_label_add(&l, "volume", "pvc-\"1\"");
	metrics_label_add(&l, "source", "local");
	metrics_render_family(&b, "granary_fuse_source_bytes_total", "bytes", "counter");
	metrics_render_sample(&b, "granary_fuse_source_bytes_total", &l, 4194304);
	metrics_render_sample(&b, "granary_fuse_source_bytes_total", &none, 1);
	metrics_render_sample_double(&b, "granary_x_seconds", NULL, 0.25);
	ck_assert_int_eq(b.failed, 0);
	ck_assert_str_eq(b.data,
			 "# HELP granary_fuse_source_bytes_total bytes\n"
			 "# TYPE granary_fuse_source_bytes_total counter\n"
			 "granary_fuse_source_bytes_total{volume=\"pvc-\\\"1\\\"\",source=\"local\"} 4194304\n"
			 "granary_fuse_source_bytes_total 1\n"
			 "granary_x_seconds 0.25\n");
	metrics_buf_release(&b);
	metrics_buf_release(&l);
}
END_TEST

START_TEST(test_metrics_histogram_sample_from_counts_with_labels)
{
	static const double bounds[] = { 0.001, 0.01, 0.1 };
	const uint64_t counts[] = { 2, 0, 1, 3 }; /* per bucket, the last +Inf */
	struct metrics_buf b = { 0 }, l = { 0 };

	/* The bucket rule is the locked histogram's: a value on a bound is in it. */
	ck_assert_uint_eq(metrics_bucket_index(bounds, 3, 0.001), 0);
	ck_assert_uint_eq(metrics_bucket_index(bounds, 3, 0.0011), 1);
	ck_assert_uint_eq(metrics_bucket_index(bounds, 3, 7), 3);
	metrics_label_add(&l, "volume", "v");
	metrics_render_histogram_sample(&b, "granary_fuse_read_seconds", &l, bounds, 3, counts, 12.5);
	metrics_render_histogram_sample(&b, "granary_fuse_read_seconds", NULL, bounds, 3, counts, 1);
	ck_assert_str_eq(b.data,
			 "granary_fuse_read_seconds_bucket{volume=\"v\",le=\"0.001\"} 2\n"
			 "granary_fuse_read_seconds_bucket{volume=\"v\",le=\"0.01\"} 2\n"
			 "granary_fuse_read_seconds_bucket{volume=\"v\",le=\"0.1\"} 3\n"
			 "granary_fuse_read_seconds_bucket{volume=\"v\",le=\"+Inf\"} 6\n"
			 "granary_fuse_read_seconds_sum{volume=\"v\"} 12.5\n"
			 "granary_fuse_read_seconds_count{volume=\"v\"} 6\n"
			 "granary_fuse_read_seconds_bucket{le=\"0.001\"} 2\n"
			 "granary_fuse_read_seconds_bucket{le=\"0.01\"} 2\n"
			 "granary_fuse_read_seconds_bucket{le=\"0.1\"} 3\n"
			 "granary_fuse_read_seconds_bucket{le=\"+Inf\"} 6\n"
			 "granary_fuse_read_seconds_sum 1\n"
			 "granary_fuse_read_seconds_count 6\n");
	metrics_buf_release(&b);
	metrics_buf_release(&l);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("metrics");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_metrics_counter_and_gauge_exact_text);
	tcase_add_test(tc, test_metrics_histogram_exact_text_is_cumulative);
	tcase_add_test(tc, test_metrics_labeled_samples_escape_their_values);
	tcase_add_test(tc, test_metrics_empty_histogram_renders_zeros);
	tcase_add_test(tc, test_metrics_histogram_refuses_bad_bounds);
	tcase_add_test(tc, test_metrics_format_double_is_shortest_exact);
	tcase_add_test(tc, test_metrics_buffer_grows_past_its_first_allocation);
	tcase_add_test(tc, test_metrics_histogram_counts_every_concurrent_observation);
	tcase_add_test(tc, test_metrics_samples_with_several_labels_exact_text);
	tcase_add_test(tc, test_metrics_histogram_sample_from_counts_with_labels);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
