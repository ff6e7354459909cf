/*
 * accel_emul.c - accelerator emulation over a TFRecord record stream.
 *
 * --readers threads read the .tfrecord shards of DIR round and round (a
 * repeated dataset, shards interleaved as tf.data does), parse the framing
 * and check every CRC (bench/tfrecord.h), and add each complete record to a
 * shared stream. The stream holds at most ACCEL_PREFETCH batches per
 * accelerator (tf.data's prefetch): readers wait when it is full.
 *
 * Each emulated accelerator is a thread that takes one batch of records
 * from the stream (waiting while there are fewer) and then sleeps the
 * compute time of one batch on that accelerator (the models below). Its
 * first 1 + ACCEL_PREFETCH batches are the pipeline's warm-up, not counted:
 * the records the readers buffered ahead while the first batch computed
 * would otherwise hide a shortfall (by arithmetic, up to one batch ahead
 * per accelerator over 10 counted batches lifts a true 0.9 to 0.99); after
 * these the stream is in its steady state. Then it computes
 * --batches more; its utilisation is compute time / wall time over those,
 * on the accelerator's own timeline (see accel_main).
 *
 * For each model of --accel (a100, h100, b200, or all) the sweep
 * (bench/accel_sweep.h) measures 1, 2, 4, ... accelerators until the mean
 * utilisation falls below --stop_below, then bisects to the largest count
 * that holds it, up to --max_accelerators:
 *   accel=a100 batch=400 batch_seconds=0.4350 records_per_s_per_accelerator=920
 *   accel=a100 accelerators=4 utilisation=0.991 min_utilisation=0.985 records_per_s=3650 mb_per_s=411.2 record_bytes=112650 seconds=4.8
 *   ...
 *   accel=a100 sustained_at_stop_below=11 bound_reached=0 measurements=8
 * bound_reached=1: the bar still held at --max_accelerators, a floor.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/accel_sweep.h"
#include "bench/bench_tool.h"
#include "bench/tfrecord.h"
#include "common/array.h"

/*
 * The accelerators, from MLPerf Storage's ResNet-50 training workloads
 * (mlcommons/storage, configs/dlio/workload/resnet50_a100.yaml and
 * resnet50_h100.yaml): reader.batch_size 400 and train.computation_time
 * 0.435 s per batch on an A100, 0.224 s on an H100, records of 114,660.07
 * bytes on average (dataset.record_length_bytes), utilisation bar
 * metric.au 0.90. It has no ResNet-50 B200 workload; for UNet3D it sets
 * 0.162 s per batch on a B200 (unet3d_b200.yaml) against 0.323 s on an
 * H100 (unet3d_h100.yaml), and the B200 here takes that ratio to
 * ResNet-50's H100 time: 0.224 x 0.162 / 0.323 = 0.1123 s.
 */
struct accel_model {
	const char *name;
	int64_t batch;
	double batch_seconds;
};

static const struct accel_model accel_models[] = {
	{ "a100", 400, 0.435 },
	{ "h100", 400, 0.224 },
	{ "b200", 400, 0.1123 },
};
#define ACCEL_NMODELS (sizeof(accel_models) / sizeof(accel_models[0]))

#define ACCEL_PREFETCH 2 /* batches buffered per accelerator */

struct stream {
	pthread_mutex_t mu;
	pthread_cond_t more, room;
	uint64_t avail;     /* records parsed and not yet taken */
	uint64_t cap;       /* most records buffered */
	bool stop;
	bool failed;
	/* readers */
	char **files;
	size_t nfiles;
	size_t next_file;   /* under mu */
	size_t read_size;
	atomic_uint_fast64_t bytes, records;
	/* accelerators */
	uint64_t batch;
	double batch_seconds;
	int64_t batches;
};

struct accel {
	struct stream *s;
	double util;
};

static void sleep_until(double t)
{
	struct timespec ts = { .tv_sec = (time_t)t, .tv_nsec = (long)((t - (time_t)t) * 1e9) };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* Adds n records to the stream, waiting for room. false once stopped. */
static bool stream_put(struct stream *s, uint64_t n)
{
	bool go;

	pthread_mutex_lock(&s->mu);
	while (!s->stop && s->avail >= s->cap)
		pthread_cond_wait(&s->room, &s->mu);
	s->avail += n;
	go = !s->stop;
	pthread_cond_broadcast(&s->more);
	pthread_mutex_unlock(&s->mu);
	return go;
}

/* Takes n records, waiting while there are fewer. *waited: whether it had
 * to wait. false once stopped. */
static bool stream_take(struct stream *s, uint64_t n, bool *waited)
{
	bool ok;

	pthread_mutex_lock(&s->mu);
	*waited = !s->stop && s->avail < n;
	while (!s->stop && s->avail < n)
		pthread_cond_wait(&s->more, &s->mu);
	ok = s->avail >= n;
	if (ok)
		s->avail -= n;
	pthread_cond_broadcast(&s->room);
	pthread_mutex_unlock(&s->mu);
	return ok;
}

static void stream_fail(struct stream *s)
{
	pthread_mutex_lock(&s->mu);
	s->failed = s->stop = true;
	pthread_cond_broadcast(&s->more);
	pthread_cond_broadcast(&s->room);
	pthread_mutex_unlock(&s->mu);
}

static void *reader_main(void *arg)
{
	struct stream *s = arg;
	char *buf = aligned_alloc(4096, (s->read_size + 4095) & ~(size_t)4095);
	bool go = buf != NULL;

	if (!buf)
		stream_fail(s);
	while (go) {
		struct tfrecord_parser p;
		struct error err;
		uint64_t seen = 0;
		size_t i;
		int fd;

		pthread_mutex_lock(&s->mu);
		i = s->next_file++ % s->nfiles;
		go = !s->stop;
		pthread_mutex_unlock(&s->mu);
		if (!go)
			break;
		fd = open(s->files[i], O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "granary-bench: open '%s': %s\n", s->files[i], strerror(errno));
			stream_fail(s);
			break;
		}
		tfrecord_parser_init(&p);
		while (go) {
			ssize_t n = read(fd, buf, s->read_size);

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				fprintf(stderr, "granary-bench: read '%s': %s\n", s->files[i], strerror(errno));
				stream_fail(s);
				go = false;
				break;
			}
			if (n == 0) {
				if (tfrecord_parser_finish(&p, &err) != ERR_OK) {
					fprintf(stderr, "granary-bench: '%s': %s\n", s->files[i], err.msg);
					stream_fail(s);
					go = false;
				}
				break;
			}
			s->bytes += (uint64_t)n;
			if (tfrecord_parser_feed(&p, buf, (size_t)n, &err) != ERR_OK) {
				fprintf(stderr, "granary-bench: '%s': %s\n", s->files[i], err.msg);
				stream_fail(s);
				go = false;
				break;
			}
			if (p.records > seen) {
				s->records += p.records - seen;
				go = stream_put(s, p.records - seen);
				seen = p.records;
			}
		}
		close(fd);
	}
	free(buf);
	return NULL;
}

/*
 * The accelerator keeps its own timeline, as a real one executes queued
 * work back to back: a batch whose records were already in the stream
 * starts when the previous one ends; one that had to be waited for starts
 * when it arrived. Sleeping until each batch's end (absolute time) keeps
 * the thread's wake-up latency out of the figure; data stalls stay in.
 */
static void *accel_main(void *arg)
{
	struct accel *a = arg;
	struct stream *s = a->s;
	double t0, end;
	bool waited;

	a->util = 0;
	end = bench_now();
	for (int w = 0; w < 1 + ACCEL_PREFETCH; w++) { /* warm-up: not counted */
		if (!stream_take(s, s->batch, &waited))
			return NULL;
		if (waited && bench_now() > end)
			end = bench_now();
		end += s->batch_seconds;
		sleep_until(end);
	}
	t0 = end;
	for (int64_t b = 0; b < s->batches; b++) {
		double start;

		if (!stream_take(s, s->batch, &waited))
			return NULL;
		start = end;
		if (waited) {
			double now = bench_now();

			if (now > start)
				start = now;
		}
		end = start + s->batch_seconds;
		sleep_until(end);
	}
	a->util = s->batches * s->batch_seconds / (end - t0);
	return NULL;
}

static int cmp_str(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

static int list_shards(const char *dir, struct stream *s)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t cap = 0;

	if (!d) {
		fprintf(stderr, "granary-bench: open directory '%s': %s\n", dir, strerror(errno));
		return -1;
	}
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);

		if (n < 9 || strcmp(e->d_name + n - 9, ".tfrecord") != 0)
			continue;
		if (array_grow((void **)&s->files, &cap, s->nfiles + 1, sizeof(*s->files)) < 0)
			break;
		if (asprintf(&s->files[s->nfiles], "%s/%s", dir, e->d_name) < 0)
			break;
		s->nfiles++;
	}
	closedir(d);
	qsort(s->files, s->nfiles, sizeof(*s->files), cmp_str);
	if (s->nfiles == 0) {
		fprintf(stderr, "granary-bench: no .tfrecord files in '%s'\n", dir);
		return -1;
	}
	return 0;
}

/* One measurement with n accelerators: mean utilisation, or -1 on failure. */
static double run_once(struct stream *s, const struct bench_settings *set, int n, double *min_util,
		       double *secs)
{
	pthread_t *rt = calloc((size_t)set->readers, sizeof(*rt)), *at = calloc((size_t)n, sizeof(*at));
	struct accel *acc = calloc((size_t)n, sizeof(*acc));
	int nr = 0, na = 0;
	double sum = 0, t0 = bench_now();

	if (!rt || !at || !acc) {
		free(rt);
		free(at);
		free(acc);
		return -1;
	}
	s->avail = 0;
	s->stop = false;
	s->cap = ACCEL_PREFETCH * s->batch * (uint64_t)n;
	s->bytes = 0;
	s->records = 0;
	for (; nr < set->readers; nr++)
		if (pthread_create(&rt[nr], NULL, reader_main, s) != 0)
			break;
	for (; na < n; na++) {
		acc[na].s = s;
		if (pthread_create(&at[na], NULL, accel_main, &acc[na]) != 0)
			break;
	}
	for (int i = 0; i < na; i++)
		pthread_join(at[i], NULL);
	*secs = bench_now() - t0;
	pthread_mutex_lock(&s->mu);
	s->stop = true;
	pthread_cond_broadcast(&s->more);
	pthread_cond_broadcast(&s->room);
	pthread_mutex_unlock(&s->mu);
	for (int i = 0; i < nr; i++)
		pthread_join(rt[i], NULL);
	*min_util = 1;
	for (int i = 0; i < na; i++) {
		sum += acc[i].util;
		if (acc[i].util < *min_util)
			*min_util = acc[i].util;
	}
	free(rt);
	free(at);
	free(acc);
	if (s->failed || na < n)
		return -1;
	return sum / n;
}

/* One model's sweep; 0, or 1 when the record stream failed. */
static int sweep_model(struct stream *s, const struct bench_settings *set, const struct accel_model *m)
{
	struct accel_sweep sw;
	int measurements = 0;
	int64_t n;

	s->batch = (uint64_t)(set->batch > 0 ? set->batch : m->batch);
	s->batch_seconds = set->batch_seconds > 0 ? set->batch_seconds : m->batch_seconds;
	printf("accel=%s batch=%llu batch_seconds=%.4f records_per_s_per_accelerator=%.0f\n", m->name,
	       (unsigned long long)s->batch, s->batch_seconds, s->batch / s->batch_seconds);
	accel_sweep_init(&sw, set->max_accelerators);
	while ((n = accel_sweep_next(&sw)) != 0) {
		double min_util, secs, util = run_once(s, set, (int)n, &min_util, &secs);

		if (util < 0) {
			fprintf(stderr, "granary-bench: accel: the record stream failed at %lld %s accelerators\n",
				(long long)n, m->name);
			return 1;
		}
		measurements++;
		printf("accel=%s accelerators=%lld utilisation=%.3f min_utilisation=%.3f records_per_s=%.0f "
		       "mb_per_s=%.1f record_bytes=%.0f seconds=%.1f\n",
		       m->name, (long long)n, util, min_util, s->records / secs, s->bytes / 1e6 / secs,
		       s->records ? (double)s->bytes / (double)s->records : 0.0, secs);
		fflush(stdout);
		accel_sweep_record(&sw, n, util >= set->stop_below);
	}
	printf("accel=%s sustained_at_stop_below=%lld bound_reached=%d measurements=%d\n", m->name,
	       (long long)sw.sustained, accel_sweep_bound_reached(&sw) ? 1 : 0, measurements);
	fflush(stdout);
	return 0;
}

int bench_accel(const struct bench_settings *set, const char *dir)
{
	struct stream s = {
		.mu = PTHREAD_MUTEX_INITIALIZER,
		.more = PTHREAD_COND_INITIALIZER,
		.room = PTHREAD_COND_INITIALIZER,
		.read_size = (size_t)set->read_size,
		.batches = set->batches,
	};
	bool all = strcmp(set->accel, "all") == 0, found = false;
	int rc = 1;

	for (size_t i = 0; i < ACCEL_NMODELS; i++)
		found = found || all || strcmp(set->accel, accel_models[i].name) == 0;
	if (!found) {
		fprintf(stderr, "granary-bench: accel: unknown accelerator '%s' (a100, h100, b200 or all)\n",
			set->accel);
		return 2;
	}
	if (list_shards(dir, &s) != 0)
		goto out;
	for (size_t i = 0; i < ACCEL_NMODELS; i++)
		if ((all || strcmp(set->accel, accel_models[i].name) == 0) &&
		    sweep_model(&s, set, &accel_models[i]) != 0)
			goto out;
	rc = 0;
out:
	for (size_t i = 0; i < s.nfiles; i++)
		free(s.files[i]);
	free(s.files);
	return rc;
}
