/*
 * granary-readcheck - makes the dataset of bench/readcheck.h, and reads it
 * continuously, checking every byte, while mounts are restarted under it.
 *
 *   granary-readcheck --generate DIR [--files 16] [--size 4MiB]
 *   granary-readcheck --dir DIR [--seconds 0] [--direct] [--read_size 1MiB]
 *                     [--threads 1] [--rate 0] [--out FILE]
 *
 * A reader never stops at an error: a failed open or read is counted by its
 * errno (ENOTCONN on its own too), the file is closed, and after a short
 * sleep it is opened again and read on from the same offset. Figures kept:
 * reads, bytes, full passes over a file, failed reads, wrong bytes, files
 * that ended early, the longest single read (a read still in progress
 * counts with its age) and the longest gap without a completed read.
 *
 * They are written as one JSON object to --out every second (atomically:
 * a temporary file renamed over it), at SIGTERM, and to stdout at exit.
 * SIGUSR1 starts a new window: every figure but the totals goes to zero and
 * "window" counts up, so that a test can measure one event at a time.
 * Exit status: 0 when no read failed and no byte was wrong since start.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench/readcheck.h"
#include "common/array.h"
#include "common/daemon.h"
#include "common/fileio.h"
#include "common/retry.h"

#define READCHECK_PREFIX "readcheck-"
#define READCHECK_SUFFIX ".bin"
#define READCHECK_ERRNO_MAX 256
#define READCHECK_RETRY_MS 50
#define READCHECK_THREADS_MAX 64

struct rc_settings {
	char *generate;
	int64_t files;
	uint64_t size;
	char *dir;
	int64_t seconds;
	bool direct;
	uint64_t read_size;
	int64_t threads;
	uint64_t rate;
	char *out;
	char *log_level;
};

static const struct config_field rc_fields[] = {
	{ "generate", CONFIG_STRING, offsetof(struct rc_settings, generate), "",
	  "write the dataset into this directory and exit", 0, 0, NULL },
	{ "files", CONFIG_INT, offsetof(struct rc_settings, files), "16",
	  "generate: number of files", 1, 100000, NULL },
	{ "size", CONFIG_SIZE, offsetof(struct rc_settings, size), "4MiB",
	  "generate: bytes per file", 1, 1e12, NULL },
	{ "dir", CONFIG_STRING, offsetof(struct rc_settings, dir), "",
	  "read and check the dataset in this directory, in a loop", 0, 0, NULL },
	{ "seconds", CONFIG_INT, offsetof(struct rc_settings, seconds), "0",
	  "read: stop after this many seconds (0: until SIGTERM)", 0, 1e9, NULL },
	{ "direct", CONFIG_BOOL, offsetof(struct rc_settings, direct), "false",
	  "read: O_DIRECT reads into an aligned buffer (else buffered, page cache dropped after each file)",
	  0, 0, NULL },
	{ "read_size", CONFIG_SIZE, offsetof(struct rc_settings, read_size), "1MiB",
	  "read: bytes per read (a multiple of 4096 with --direct)", 1, 64 << 20, NULL },
	{ "threads", CONFIG_INT, offsetof(struct rc_settings, threads), "1",
	  "read: parallel readers, each over every file", 1, READCHECK_THREADS_MAX, NULL },
	{ "rate", CONFIG_SIZE, offsetof(struct rc_settings, rate), "0",
	  "read: bytes per second per reader at most (0: no limit)", 0, 1e12, NULL },
	{ "out", CONFIG_STRING, offsetof(struct rc_settings, out), "",
	  "read: JSON figures written here every second and at exit", 0, 0, NULL },
	{ "log.level", CONFIG_STRING, offsetof(struct rc_settings, log_level), "warn",
	  "debug, info, warn or error", 0, 0, NULL },
};

static const struct config_schema rc_schema = {
	.program = "granary-readcheck",
	.summary = "make (--generate DIR) or read and check in a loop (--dir DIR) a dataset whose bytes are a function of name and offset",
	.fields = rc_fields,
	.nfields = sizeof(rc_fields) / sizeof(rc_fields[0]),
};

/* The figures of one window; readers add with atomics, the main thread
 * reads them and zeroes them at SIGUSR1. */
struct rc_figures {
	_Atomic uint64_t reads, bytes, passes, failed_reads, failed_opens, enotconn;
	_Atomic uint64_t wrong_bytes, bad_reads, short_files;
	_Atomic uint64_t longest_read_ms, longest_gap_ms;
	_Atomic uint64_t last_ok_ms;     /* when a read last completed */
	_Atomic uint64_t errors[READCHECK_ERRNO_MAX]; /* by errno, opens and reads */
};

struct rc_reader {
	struct rc_run *run;
	int index;
	pthread_t thread;
	_Atomic uint64_t busy_since_ms; /* start of the read in progress, 0 when none */
};

struct rc_run {
	const struct rc_settings *set;
	char **files;
	size_t nfiles;
	struct rc_figures win;
	_Atomic uint64_t total_reads, total_bytes, total_failed, total_wrong;
	_Atomic uint64_t window;
	uint64_t start_ms, window_start_ms;
	pthread_mutex_t last_mu;
	char last_error[256];            /* protected by last_mu */
	struct rc_reader readers[READCHECK_THREADS_MAX];
};

/* This binary's one piece of signal state: SIGUSR1 asks for a new window. */
static volatile sig_atomic_t rc_new_window;

static void on_usr1(int sig)
{
	(void)sig;
	rc_new_window = 1;
}

static void raise_max(_Atomic uint64_t *slot, uint64_t v)
{
	uint64_t cur = atomic_load(slot);

	while (v > cur && !atomic_compare_exchange_weak(slot, &cur, v))
		;
}

static int is_dataset_file(const char *name)
{
	size_t n = strlen(name), p = strlen(READCHECK_PREFIX), s = strlen(READCHECK_SUFFIX);

	return n > p + s && strncmp(name, READCHECK_PREFIX, p) == 0 &&
	       strcmp(name + n - s, READCHECK_SUFFIX) == 0;
}

static int cmd_generate(const struct rc_settings *set)
{
	size_t chunk = 1 << 20;
	uint8_t *buf = malloc(chunk);
	struct error err;
	int rc = 1;

	if (!buf)
		return 1;
	if (fileio_mkdirs(set->generate, 0755, &err) != ERR_OK) {
		fprintf(stderr, "granary-readcheck: %s\n", err.msg);
		goto out;
	}
	for (int64_t i = 0; i < set->files; i++) {
		char path[PATH_MAX];
		uint64_t seed;
		int fd;

		snprintf(path, sizeof(path), "%s/" READCHECK_PREFIX "%05lld" READCHECK_SUFFIX,
			 set->generate, (long long)i);
		seed = readcheck_seed(path);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0) {
			fprintf(stderr, "granary-readcheck: create '%s': %s\n", path, strerror(errno));
			goto out;
		}
		for (uint64_t off = 0; off < set->size; off += chunk) {
			size_t n = set->size - off < chunk ? (size_t)(set->size - off) : chunk;

			readcheck_fill(seed, off, buf, n);
			if (fileio_write_all(fd, buf, n) != 0) {
				fprintf(stderr, "granary-readcheck: write '%s': %s\n", path, strerror(errno));
				close(fd);
				goto out;
			}
		}
		if (close(fd) != 0) {
			fprintf(stderr, "granary-readcheck: close '%s': %s\n", path, strerror(errno));
			goto out;
		}
	}
	printf("files=%lld bytes=%llu\n", (long long)set->files,
	       (unsigned long long)(set->files * set->size));
	rc = 0;
out:
	free(buf);
	return rc;
}

static void note_error(struct rc_run *run, int e, const char *what, const char *path, uint64_t off)
{
	atomic_fetch_add(&run->win.errors[e > 0 && e < READCHECK_ERRNO_MAX ? e : 0], 1);
	if (e == ENOTCONN)
		atomic_fetch_add(&run->win.enotconn, 1);
	pthread_mutex_lock(&run->last_mu);
	snprintf(run->last_error, sizeof(run->last_error), "%s '%s' at %llu: %s", what, path,
		 (unsigned long long)off, strerror(e));
	pthread_mutex_unlock(&run->last_mu);
}

/* One timed read; its duration and the gap since the last completed read
 * of any reader go into the window. */
static ssize_t timed_read(struct rc_reader *r, int fd, void *buf, size_t len, uint64_t off)
{
	struct rc_run *run = r->run;
	uint64_t t0 = retry_now_ms(), t1, last;
	ssize_t n;
	int e;

	atomic_store(&r->busy_since_ms, t0 ? t0 : 1);
	do {
		n = pread(fd, buf, len, (off_t)off);
	} while (n < 0 && errno == EINTR);
	e = errno;
	t1 = retry_now_ms();
	atomic_store(&r->busy_since_ms, 0);
	raise_max(&run->win.longest_read_ms, t1 - t0);
	if (n >= 0) {
		last = atomic_exchange(&run->win.last_ok_ms, t1);
		if (t1 > last)
			raise_max(&run->win.longest_gap_ms, t1 - last);
	}
	errno = e;
	return n;
}

static void *read_loop(void *arg)
{
	struct rc_reader *r = arg;
	struct rc_run *run = r->run;
	const struct rc_settings *set = run->set;
	size_t len = (size_t)set->read_size;
	size_t alloc = (len + 4095) & ~(size_t)4095;
	uint8_t *buf = aligned_alloc(4096, alloc);
	size_t next = (size_t)r->index * run->nfiles / (size_t)set->threads;
	/* Rate limit: every read is owed len * 1000 / rate ms from the start. */
	uint64_t paced_ms = retry_now_ms();

	if (!buf) {
		fprintf(stderr, "granary-readcheck: out of memory\n");
		return NULL;
	}
	while (!daemon_stopping()) {
		const char *path = run->files[next % run->nfiles];
		uint64_t seed = readcheck_seed(path), off = 0, size = 0;
		struct stat st;
		int fd = -1;

		next++;
		for (;;) {
			ssize_t n;
			size_t bad;
			uint64_t first_bad = 0;

			if (daemon_stopping())
				break;
			if (fd < 0) {
				fd = open(path, O_RDONLY | O_CLOEXEC | (set->direct ? O_DIRECT : 0));
				if (fd >= 0 && fstat(fd, &st) != 0) {
					int e = errno;

					close(fd);
					fd = -1;
					errno = e;
				}
				if (fd < 0) {
					atomic_fetch_add(&run->win.failed_opens, 1);
					atomic_fetch_add(&run->total_failed, 1);
					note_error(run, errno, "open", path, off);
					retry_sleep_ms(READCHECK_RETRY_MS);
					continue;
				}
				size = (uint64_t)st.st_size;
			}
			if (off >= size)
				break;
			n = timed_read(r, fd, buf, len, off);
			if (n < 0) {
				/* Counted, then the file is opened anew and read on
				 * from the same offset. */
				atomic_fetch_add(&run->win.failed_reads, 1);
				atomic_fetch_add(&run->total_failed, 1);
				note_error(run, errno, "read", path, off);
				close(fd);
				fd = -1;
				retry_sleep_ms(READCHECK_RETRY_MS);
				continue;
			}
			if (n == 0) {
				atomic_fetch_add(&run->win.short_files, 1);
				note_error(run, EIO, "end of file before its size", path, off);
				break;
			}
			atomic_fetch_add(&run->win.reads, 1);
			atomic_fetch_add(&run->win.bytes, (uint64_t)n);
			atomic_fetch_add(&run->total_reads, 1);
			atomic_fetch_add(&run->total_bytes, (uint64_t)n);
			bad = readcheck_verify(seed, off, buf, (size_t)n, &first_bad);
			if (bad) {
				atomic_fetch_add(&run->win.wrong_bytes, bad);
				atomic_fetch_add(&run->win.bad_reads, 1);
				atomic_fetch_add(&run->total_wrong, bad);
				pthread_mutex_lock(&run->last_mu);
				snprintf(run->last_error, sizeof(run->last_error),
					 "'%s': %zu wrong bytes in %zd read at %llu, first at %llu", path, bad,
					 n, (unsigned long long)off, (unsigned long long)first_bad);
				pthread_mutex_unlock(&run->last_mu);
			}
			off += (uint64_t)n;
			if (set->rate) {
				uint64_t now;

				paced_ms += (uint64_t)n * 1000 / set->rate;
				now = retry_now_ms();
				if (paced_ms > now)
					retry_sleep_ms(paced_ms - now);
				else if (now - paced_ms > 1000)
					paced_ms = now - 1000; /* no burst after a stall */
			}
		}
		if (fd >= 0) {
			if (!set->direct)
				posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
			close(fd);
			if (off >= size)
				atomic_fetch_add(&run->win.passes, 1);
		}
	}
	free(buf);
	return NULL;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists the dataset's files; retried (and counted) until the directory
 * reads, so that a reader started on a broken mount still reports. */
static int list_files(struct rc_run *run)
{
	const char *dir = run->set->dir;

	while (!daemon_stopping()) {
		DIR *d = opendir(dir);
		struct dirent *e;
		size_t cap = 0;

		if (!d) {
			atomic_fetch_add(&run->win.failed_opens, 1);
			atomic_fetch_add(&run->total_failed, 1);
			note_error(run, errno, "open directory", dir, 0);
			retry_sleep_ms(500);
			continue;
		}
		while ((e = readdir(d))) {
			if (!is_dataset_file(e->d_name))
				continue;
			if (array_grow((void **)&run->files, &cap, run->nfiles + 1,
				       sizeof(*run->files)) < 0)
				break;
			if (asprintf(&run->files[run->nfiles], "%s/%s", dir, e->d_name) < 0)
				break;
			run->nfiles++;
		}
		closedir(d);
		if (run->nfiles > 0) {
			qsort(run->files, run->nfiles, sizeof(*run->files), cmp_str);
			return 0;
		}
		fprintf(stderr, "granary-readcheck: no " READCHECK_PREFIX "*" READCHECK_SUFFIX
			" files in '%s' yet\n", dir);
		retry_sleep_ms(1000);
	}
	return -1;
}

static void json_escape(char *out, size_t cap, const char *in)
{
	size_t at = 0;

	for (; *in && at + 7 < cap; in++) {
		unsigned char c = (unsigned char)*in;

		if (c == '"' || c == '\\')
			at += (size_t)snprintf(out + at, cap - at, "\\%c", c);
		else if (c < 0x20)
			at += (size_t)snprintf(out + at, cap - at, "\\u%04x", c);
		else
			out[at++] = (char)c;
	}
	out[at] = '\0';
}

/* The figures as one JSON object (a line, no newline) into out. */
static void format_figures(struct rc_run *run, char *out, size_t cap)
{
	struct rc_figures *w = &run->win;
	uint64_t now = retry_now_ms(), longest_read = atomic_load(&w->longest_read_ms);
	uint64_t gap = now - atomic_load(&w->last_ok_ms), longest_gap = atomic_load(&w->longest_gap_ms);
	char last[512], errs[2048];
	size_t at = 0;

	/* A read still in progress counts with its age: a hung mount shows
	 * before its read returns. */
	for (int i = 0; i < run->set->threads; i++) {
		uint64_t since = atomic_load(&run->readers[i].busy_since_ms);

		if (since && now > since && now - since > longest_read)
			longest_read = now - since;
	}
	if (gap > longest_gap && run->nfiles > 0)
		longest_gap = gap;
	errs[0] = '\0';
	for (int e = 0; e < READCHECK_ERRNO_MAX; e++) {
		uint64_t n = atomic_load(&w->errors[e]);
		const char *name = e ? strerrorname_np(e) : NULL;

		if (!n)
			continue;
		if (name)
			at += (size_t)snprintf(errs + at, sizeof(errs) - at, "%s\"%s\":%llu", at ? "," : "",
					       name, (unsigned long long)n);
		else
			at += (size_t)snprintf(errs + at, sizeof(errs) - at, "%s\"errno_%d\":%llu",
					       at ? "," : "", e, (unsigned long long)n);
		if (at >= sizeof(errs))
			break;
	}
	pthread_mutex_lock(&run->last_mu);
	json_escape(last, sizeof(last), run->last_error);
	pthread_mutex_unlock(&run->last_mu);
	snprintf(out, cap,
		 "{\"window\":%llu,\"window_s\":%.3f,\"uptime_s\":%.3f,\"direct\":%s,\"threads\":%lld,"
		 "\"read_size\":%llu,\"files\":%zu,\"reads\":%llu,\"bytes\":%llu,\"passes\":%llu,"
		 "\"failed_reads\":%llu,\"failed_opens\":%llu,\"enotconn\":%llu,\"errors\":{%s},"
		 "\"wrong_bytes\":%llu,\"bad_reads\":%llu,\"short_files\":%llu,"
		 "\"longest_read_ms\":%llu,\"longest_gap_ms\":%llu,\"gap_now_ms\":%llu,"
		 "\"total_reads\":%llu,\"total_bytes\":%llu,\"total_failed\":%llu,\"total_wrong_bytes\":%llu,"
		 "\"last_error\":\"%s\"}",
		 (unsigned long long)atomic_load(&run->window), (now - run->window_start_ms) / 1000.0,
		 (now - run->start_ms) / 1000.0, run->set->direct ? "true" : "false",
		 (long long)run->set->threads, (unsigned long long)run->set->read_size, run->nfiles,
		 (unsigned long long)atomic_load(&w->reads), (unsigned long long)atomic_load(&w->bytes),
		 (unsigned long long)atomic_load(&w->passes),
		 (unsigned long long)atomic_load(&w->failed_reads),
		 (unsigned long long)atomic_load(&w->failed_opens),
		 (unsigned long long)atomic_load(&w->enotconn), errs,
		 (unsigned long long)atomic_load(&w->wrong_bytes),
		 (unsigned long long)atomic_load(&w->bad_reads),
		 (unsigned long long)atomic_load(&w->short_files), (unsigned long long)longest_read,
		 (unsigned long long)longest_gap, (unsigned long long)gap,
		 (unsigned long long)atomic_load(&run->total_reads),
		 (unsigned long long)atomic_load(&run->total_bytes),
		 (unsigned long long)atomic_load(&run->total_failed),
		 (unsigned long long)atomic_load(&run->total_wrong), last);
}

static void write_figures(struct rc_run *run)
{
	char text[8192];
	struct error err;

	if (!run->set->out || !*run->set->out)
		return;
	format_figures(run, text, sizeof(text));
	strcat(text, "\n");
	if (fileio_replace(run->set->out, text, strlen(text), 0644, &err) != ERR_OK)
		fprintf(stderr, "granary-readcheck: %s\n", err.msg);
}

static void new_window(struct rc_run *run)
{
	struct rc_figures *w = &run->win;
	uint64_t now = retry_now_ms();

	atomic_store(&w->reads, 0);
	atomic_store(&w->bytes, 0);
	atomic_store(&w->passes, 0);
	atomic_store(&w->failed_reads, 0);
	atomic_store(&w->failed_opens, 0);
	atomic_store(&w->enotconn, 0);
	atomic_store(&w->wrong_bytes, 0);
	atomic_store(&w->bad_reads, 0);
	atomic_store(&w->short_files, 0);
	atomic_store(&w->longest_read_ms, 0);
	atomic_store(&w->longest_gap_ms, 0);
	atomic_store(&w->last_ok_ms, now);
	for (int e = 0; e < READCHECK_ERRNO_MAX; e++)
		atomic_store(&w->errors[e], 0);
	pthread_mutex_lock(&run->last_mu);
	run->last_error[0] = '\0';
	pthread_mutex_unlock(&run->last_mu);
	run->window_start_ms = now;
	atomic_fetch_add(&run->window, 1);
}

static int cmd_read(const struct rc_settings *set)
{
	static struct rc_run run; /* large (per-errno counters): not on the stack */
	struct sigaction sa = { .sa_handler = on_usr1 };
	sigset_t block, old;
	char text[8192];
	int started = 0;
	uint64_t next_write;

	if (set->direct && set->read_size % 4096 != 0) {
		fprintf(stderr, "granary-readcheck: --read_size must be a multiple of 4096 with --direct\n");
		return 2;
	}
	run.set = set;
	run.start_ms = run.window_start_ms = retry_now_ms();
	atomic_store(&run.win.last_ok_ms, run.start_ms);
	pthread_mutex_init(&run.last_mu, NULL);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	if (list_files(&run) != 0)
		goto report;
	atomic_store(&run.win.last_ok_ms, retry_now_ms());
	/* Readers block the signals: they reach the main thread, and no read
	 * of a FUSE file is interrupted by them. */
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	for (; started < set->threads; started++) {
		run.readers[started].run = &run;
		run.readers[started].index = started;
		if (pthread_create(&run.readers[started].thread, NULL, read_loop, &run.readers[started]) != 0)
			break;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (started == 0) {
		fprintf(stderr, "granary-readcheck: cannot start a reader thread\n");
		return 1;
	}
	next_write = retry_now_ms();
	while (!daemon_stopping()) {
		uint64_t now = retry_now_ms();

		if (rc_new_window) {
			rc_new_window = 0;
			new_window(&run);
			next_write = now;
		}
		if (set->seconds && now - run.start_ms >= (uint64_t)set->seconds * 1000)
			break;
		if (now >= next_write) {
			write_figures(&run);
			next_write = now + 1000;
		}
		retry_sleep_ms(50);
	}
report:
	/* Readers may hang in a read of a dead mount: report without joining them. */
	write_figures(&run);
	format_figures(&run, text, sizeof(text));
	printf("%s\n", text);
	fflush(stdout);
	return atomic_load(&run.total_failed) || atomic_load(&run.total_wrong) ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct rc_settings set;
	int first = argc, rc;

	rc = daemon_start(&rc_schema, &set, argc, argv, &first);
	if (rc >= 0)
		return rc;
	rc = 2;
	if (first != argc)
		fprintf(stderr, "granary-readcheck: unexpected argument '%s' (see --help)\n", argv[first]);
	else if (*set.generate && !*set.dir)
		rc = cmd_generate(&set);
	else if (*set.dir && !*set.generate) {
		daemon_handle_signals();
		rc = cmd_read(&set);
		/* Reader threads may be stuck in the kernel: leave without
		 * freeing what they use. */
		fflush(NULL);
		_exit(rc);
	} else
		fprintf(stderr, "granary-readcheck: give one of --generate DIR or --dir DIR (see --help)\n");
	config_release(&rc_schema, &set);
	return rc;
}
